"""Inbound security: the API token, the dashboard cookie, Host/Origin checks, failed-auth limits.

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

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from funnel_auth import RateLimiter
from funnel_server._audit import audit

__all__ = [
    "API_TOKEN_ENV",
    "COOKIE_NAME",
    "TOKEN_FILE_NAME",
    "InboundAuth",
    "OriginPolicy",
    "SecurityMiddleware",
    "is_loopback_host",
    "load_api_token",
    "safe_next_path",
]

logger = logging.getLogger("funnel_server.security")

API_TOKEN_ENV: Final = "FUNNEL_API_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE_NAME: Final = "api-token"  # noqa: S105 - a file name, not a secret
COOKIE_NAME: Final = "funnel_session"
_COOKIE_CONTEXT: Final = b"funnel-dashboard-cookie-v1"
_MIN_TOKEN_LENGTH: Final = 16
_MAX_LIMITED_SOURCES: Final = 10_000

Verdict = Literal["ok", "missing", "invalid"]


def load_api_token(home: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The inbound API token and where it came from.

    ``FUNNEL_API_TOKEN`` when set; else the token stored in ``<home>/api-token``; else a
    new one (``secrets.token_urlsafe(32)``), stored there with mode 0600.

    Returns:
        The token and its source (``FUNNEL_API_TOKEN`` or the file path).

    Raises:
        ValueError: ``FUNNEL_API_TOKEN`` is set but shorter than 16 characters.
    """
    environ = os.environ if environ is None else environ
    from_env = environ.get(API_TOKEN_ENV, "").strip()
    if from_env:
        if len(from_env) < _MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{API_TOKEN_ENV} is too short: use at least {_MIN_TOKEN_LENGTH} random characters"
            )
        return from_env, API_TOKEN_ENV
    path = home / TOKEN_FILE_NAME
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if len(stored) >= _MIN_TOKEN_LENGTH:
        if path.stat().st_mode & 0o077:
            logger.warning("%s was readable by others; making it private (0600)", path)
            path.chmod(0o600)
        return stored, str(path)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE_NAME}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(tmp, path)
    logger.info("generated a new API token in %s", path)
    return token, str(path)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> str:
    """The host name of a ``Host`` header value (port removed, brackets kept off)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which ``Host`` and ``Origin`` values a request may carry.

    Attributes:
        bind_host: The address the server listens on.
        allowed_hosts: Further host names to accept (a server reached by a DNS name).
        allowed_origins: Further origins to accept (``https://example.com:8443``).
    """

    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    @property
    def _checks_host(self) -> bool:
        # On loopback, DNS rebinding is the threat: only loopback names reach us honestly.
        # On a public bind the token is mandatory and the Host is whatever name people use,
        # unless the operator lists the names.
        return is_loopback_host(self.bind_host) or bool(self.allowed_hosts)

    def host_ok(self, host: str | None) -> bool:
        """Whether a request's ``Host`` header is acceptable."""
        if not self._checks_host:
            return True
        if not host:
            return False
        name = _split_host(host)
        return (
            is_loopback_host(name)
            or name == _split_host(self.bind_host)
            or name in {allowed.lower() for allowed in self.allowed_hosts}
        )

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a request's ``Origin`` header (if any) is acceptable."""
        if origin is None:
            return True  # not a browser, or a same-origin GET navigation
        origin = origin.strip().lower().rstrip("/")
        if origin in {allowed.lower().rstrip("/") for allowed in self.allowed_origins}:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null", file://, extensions
        if is_loopback_host(parts.hostname):
            return True
        # The dashboard itself, reached under a name the Host check accepted.
        return (
            not is_loopback_host(self.bind_host)
            and host is not None
            and parts.netloc == host.strip().lower()
        )


class InboundAuth:
    """Checks inbound credentials against the API token, in constant time.

    Args:
        token: The API token.
        limiter: Counts failed attempts per client address.
    """

    def __init__(self, token: str, *, limiter: RateLimiter) -> None:
        self._token = token.encode()
        self.limiter = limiter
        self.cookie_value = hmac.new(self._token, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()

    def token_ok(self, candidate: str) -> bool:
        """Whether ``candidate`` is the API token."""
        return hmac.compare_digest(candidate.encode(), self._token)

    def verdict(self, headers: Mapping[str, str]) -> Verdict:
        """Judge a request's ``Authorization`` header and cookie."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return "invalid"
            return "ok" if self.token_ok(credential.strip()) else "invalid"
        cookie = _cookie(headers.get("cookie"))
        if cookie is None:
            return "missing"
        return (
            "ok" if hmac.compare_digest(cookie.encode(), self.cookie_value.encode()) else "invalid"
        )

    def set_cookie_header(self, *, secure: bool) -> str:
        """The ``Set-Cookie`` value that signs the dashboard in."""
        attributes = "Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        return f"{COOKIE_NAME}={self.cookie_value}; {attributes}"


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is simply no credential
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def safe_next_path(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


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
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if mode == "page" and "token" in query:
            if self.auth.token_ok(query["token"][0]):
                await self._sign_in(scope, send, query)
                return
            verdict: Verdict = "invalid"
        else:
            verdict = self.auth.verdict(headers)
        if verdict == "ok":
            await next_app(scope, receive, send)
            return
        if verdict == "invalid":
            wait = self.auth.limiter.acquire(client)
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
