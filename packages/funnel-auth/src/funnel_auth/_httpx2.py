"""funnel-auth providers as ``httpx2.Auth``, for ``httpx2`` clients (the official MCP SDK 2.x).

``httpx2`` keeps httpx's auth protocol (a generator that yields requests and receives
responses) with classes of its own, and its clients refuse an ``httpx.Auth``. The
providers' flows only touch what both libraries' requests and responses share, so the
adapter here drives the very same generator: one provider, one set of tokens and
pending flows, usable from both kinds of client. ``httpx2`` is an optional extra
(``pip install 'funnel-auth[httpx2]'``); this module imports it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx
import httpx2

from funnel_auth._errors import AuthConfigError

__all__ = ["Httpx2Auth", "httpx2_auth"]


class Httpx2Auth(httpx2.Auth):
    """An ``httpx2.Auth`` that runs a funnel-auth provider's flow.

    Args:
        auth: Any funnel-auth provider (``create_auth``'s result).
    """

    def __init__(self, auth: httpx.Auth) -> None:
        self.auth = auth
        self.requires_request_body = auth.requires_request_body
        self.requires_response_body = auth.requires_response_body

    def __repr__(self) -> str:
        return f"Httpx2Auth({self.auth!r})"

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        """Refuse a synchronous ``httpx2.Client``: the providers are asynchronous.

        Raises:
            AuthConfigError: Always (the request is never sent without credentials).
        """
        raise AuthConfigError(
            f"{type(self.auth).__name__} works with httpx2.AsyncClient only, not httpx2.Client"
        )

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """Drive the provider's flow with ``httpx2`` requests and responses."""
        if self.requires_request_body:
            await request.aread()
        # The flow is duck-typed over the request/response surface both libraries share.
        flow = self.auth.async_auth_flow(request)  # type: ignore[arg-type]
        outgoing = await flow.__anext__()
        while True:
            response = yield outgoing  # type: ignore[misc]
            if self.requires_response_body:
                await response.aread()
            try:
                outgoing = await flow.asend(response)  # type: ignore[arg-type]
            except StopAsyncIteration:
                break


def httpx2_auth(auth: httpx.Auth) -> Httpx2Auth:
    """Wrap a funnel-auth provider for an ``httpx2.AsyncClient`` (``auth=...``).

    Example:
        >>> import httpx2
        >>> from funnel_auth import BearerTokenAuth, httpx2_auth
        >>> client = httpx2.AsyncClient(auth=httpx2_auth(BearerTokenAuth("t0ken")))
    """
    if not isinstance(auth, httpx.Auth):
        raise AuthConfigError(f"expected a funnel-auth provider, got {type(auth).__name__}")
    return Httpx2Auth(auth)
