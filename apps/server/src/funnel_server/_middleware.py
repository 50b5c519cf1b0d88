"""Inbound security on every route: Host/Origin checks, the API token, failed-auth limits.

Theory of operation: one ASGI middleware (:class:`SecurityMiddleware`) sits in front of
every route. In order, it

1. refuses a ``Host`` that is not this server's (DNS rebinding) and an ``Origin`` that
   is neither loopback nor configured (cross-site requests and WebSocket hijacking): 403;
2. lets through the routes marked open (``opt={"auth": "open"}``: health and the OAuth
   callback);
3. accepts ``Authorization: Bearer <token>`` or the dashboard cookie, compared in
   constant time, whatever happened before: the right credential is never refused;
4. counts a wrong credential against the client address and answers 401, or 429 with
   ``Retry-After`` once the address is over its budget of failed attempts.

The failure limit is checked *after* the credential on purpose. Every local client
connects from 127.0.0.1, so a limit that refused an address outright would let any local
process lock every other local client out by sending ten wrong tokens a minute. What the
limit does instead: a source that keeps guessing gets 429 for its wrong guesses, and the
audit log records its first refused attempt per window rather than every one (a flood of
guesses cannot flood the log). Guessing itself is made useless by the token's strength
(256 random bits when generated, at least 16 characters when given), not by the limit.

The dashboard route (``opt={"auth": "page"}``) also accepts ``?token=…`` once: it sets
an HttpOnly, SameSite=Strict cookie and redirects to the same page without the token.
The cookie holds an HMAC of the token, not the token itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Final
from urllib.parse import parse_qs, quote

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from funnel_server._audit import audit
from funnel_server._security import InboundAuth, OriginPolicy, Verdict, safe_next_path

__all__ = ["SecurityMiddleware"]

_MAX_LIMITED_SOURCES: Final = 10_000


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


class SecurityMiddleware(ASGIMiddleware):
    """Host/Origin checks, inbound auth and failed-auth limits for every route.

    Args:
        auth: The credential checker.
        policy: Which hosts and origins are accepted.
        login_page: The HTML shown by ``opt={"auth": "page"}`` routes to a visitor
            without credentials.
        clock: A monotonic clock in seconds (the limiter's, for audit suppression).
    """

    def __init__(
        self,
        auth: InboundAuth,
        policy: OriginPolicy,
        *,
        login_page: bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auth = auth
        self.policy = policy
        self.login_page = login_page
        self._clock = clock
        # Per source: until when its refused attempts are not audited again.
        self._limited_until: dict[str, float] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Check one connection and pass it on, or answer it."""
        headers = _headers(scope)
        path = str(scope.get("path", ""))
        host = headers.get("host")
        if not self.policy.host_ok(host) or not self.policy.origin_ok(headers.get("origin"), host):
            audit(
                "inbound.refused",
                outcome="denied",
                reason="host or origin not allowed",
                path=path,
                client=_client(scope),
            )
            await _deny(scope, send, 403, "Forbidden: this Host or Origin is not allowed")
            return
        mode = scope["route_handler"].opt.get("auth", "api")
        if mode == "open":
            await next_app(scope, receive, send)
            return
        client = _client(scope)
        verdict: Verdict
        query_string = scope.get("query_string", b"")
        query = parse_qs(query_string.decode("latin-1")) if mode == "page" and query_string else {}
        if "token" in query:
            if self.auth.token_ok(query["token"][0]):
                await self._sign_in(scope, send, query)
                return
            verdict = "invalid"
        else:
            verdict = self.auth.verdict(headers)
        if verdict == "ok":
            await next_app(scope, receive, send)
            return
        if verdict == "invalid":
            wait = await self.auth.failed(client)
            if wait > 0:
                await self._limited(scope, send, path, client, wait)
                return
            self._limited_until.pop(client, None)
        audit(
            "inbound.auth_failed",
            outcome="denied",
            reason=f"{verdict} credentials",
            path=path,
            client=client,
        )
        if mode == "page" and scope["type"] == ScopeType.HTTP:
            await _respond(
                send,
                401,
                self.login_page,
                [(b"content-type", b"text/html; charset=utf-8"), *_PAGE_HEADERS],
            )
            return
        await _deny(
            scope,
            send,
            401,
            "Unauthorized: send Authorization: Bearer <token>",
            extra=[(b"www-authenticate", b'Bearer realm="funnel"')],
        )

    async def _limited(self, scope: Scope, send: Send, path: str, client: str, wait: float) -> None:
        retry_after = max(1, math.ceil(wait))
        now = self._clock()
        if self._limited_until.get(client, -math.inf) <= now:
            # The first refusal of a burst is audited; the rest of the window is not, so
            # that a guesser cannot flood the audit log (its rotation would drop history).
            self._limited_until[client] = now + wait
            while len(self._limited_until) > _MAX_LIMITED_SOURCES:
                del self._limited_until[next(iter(self._limited_until))]
            audit(
                "inbound.auth_failed",
                outcome="limited",
                reason="too many failed attempts",
                path=path,
                client=client,
                retry_after=retry_after,
            )
        await _deny(
            scope,
            send,
            429,
            "Too many failed authentication attempts",
            extra=[(b"retry-after", str(retry_after).encode())],
        )

    async def _sign_in(self, scope: Scope, send: Send, query: dict[str, list[str]]) -> None:
        target = safe_next_path(query.get("next", [None])[0])
        secure = scope.get("scheme") == "https"
        await _respond(
            send,
            303,
            b"",
            [
                (b"location", quote(target, safe="/?&=%-._~").encode()),
                (b"set-cookie", self.auth.set_cookie_header(secure=secure).encode()),
                *_PAGE_HEADERS,
            ],
        )


_PAGE_HEADERS: Final = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _respond(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _deny(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    *,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = msgspec.json.encode({"status_code": status, "detail": detail})
    headers = [(b"content-type", b"application/json"), *extra]
    if scope["type"] == ScopeType.WEBSOCKET:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    await _respond(send, status, body, headers)
