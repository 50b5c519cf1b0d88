"""``create_auth``: the one place that turns an ``auth`` config into an ``httpx.Auth``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

from funnel_auth._authorization_code import AuthorizationCodeAuth
from funnel_auth._client_credentials import ClientCredentialsAuth, JwtBearerAuth
from funnel_auth._config import (
    AuthConfig,
    BearerAuth,
    NoAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    OAuth2EnterpriseManaged,
    OAuth2JwtBearer,
)
from funnel_auth._core import BearerTokenAuth, NullAuth, OAuthOptions
from funnel_auth._enterprise import EnterpriseManagedAuth
from funnel_auth._errors import AuthConfigError
from funnel_auth._flows import FlowRegistry
from funnel_auth._ratelimit import RateLimiter
from funnel_tokenstore import TokenStore

if TYPE_CHECKING:
    from funnel_auth._httpx2 import Httpx2Auth

__all__ = ["create_auth", "httpx2_auth"]


def create_auth(
    config: AuthConfig,
    *,
    server_name: str,
    server_url: str,
    store: TokenStore | None = None,
    http_client: httpx.AsyncClient | None = None,
    flows: FlowRegistry | None = None,
    limiter: RateLimiter | None = None,
    redirect_uri: str | None = None,
    client_name: str = "funnel",
    wait_timeout: float | None = None,
    on_authorization_required: Callable[[str], Awaitable[None] | None] | None = None,
    clock: Callable[[], float] = time.time,
    timeout: float = 30.0,
    max_authorizations: int = 3,
) -> httpx.Auth:
    """Build the ``httpx.Auth`` for one server's ``auth`` config.

    Args:
        config: The decoded ``auth`` section.
        server_name: The configured server name (keys stored tokens:
            ``[A-Za-z0-9._-]``).
        server_url: The MCP server's URL (its canonical form is the ``resource``).
        store: Where tokens and client registrations persist; default: memory.
        http_client: Client for requests to authorization servers and metadata;
            default: a short-lived client per request.
        flows: The pending-flow registry the app's callback completes; default: one
            per provider.
        limiter: Bounds token-endpoint, registration and authorization attempts per
            server; default: 10 per minute each.
        redirect_uri: The application's redirect URI (where it serves the callback),
            unless the config sets one; ``oauth2-code`` needs one of the two.
        client_name: ``client_name`` for dynamic client registration.
        wait_timeout: Let requests needing a person wait this long for the callback
            instead of raising :class:`~funnel_auth.AuthorizationRequired` at once.
        on_authorization_required: Called with the URL when a flow starts.
        clock: Wall clock in seconds since the epoch (token expiry).
        timeout: Seconds allowed for each request to an authorization server.
        max_authorizations: Authorizations per challenge cycle before giving up.

    Returns:
        :class:`NullAuth`, :class:`BearerTokenAuth`, :class:`ClientCredentialsAuth`,
        :class:`AuthorizationCodeAuth`, :class:`EnterpriseManagedAuth` or
        :class:`JwtBearerAuth`. Each is an
        ``httpx.Auth``; :func:`httpx2_auth` wraps it for ``httpx2`` clients.

    Raises:
        AuthConfigError: The config cannot work (bad server name, insecure endpoint…).
    """
    if isinstance(config, NoAuth):
        return NullAuth()
    if isinstance(config, BearerAuth):
        return BearerTokenAuth(config.token)
    common: OAuthOptions = {
        "server_name": server_name,
        "server_url": server_url,
        "store": store,
        "http_client": http_client,
        "limiter": limiter,
        "clock": clock,
        "timeout": timeout,
        "max_authorizations": max_authorizations,
    }
    if isinstance(config, OAuth2ClientCredentials):
        return ClientCredentialsAuth(config, **common)
    if isinstance(config, OAuth2EnterpriseManaged):
        return EnterpriseManagedAuth(config, **common)
    if isinstance(config, OAuth2JwtBearer):
        return JwtBearerAuth(config, **common)
    if isinstance(config, OAuth2AuthorizationCode):
        return AuthorizationCodeAuth(
            config,
            redirect_uri=redirect_uri,
            flows=flows,
            client_name=client_name,
            wait_timeout=wait_timeout,
            on_authorization_required=on_authorization_required,
            **common,
        )
    raise TypeError(f"unknown auth config {type(config).__name__}")  # pragma: no cover


def httpx2_auth(auth: httpx.Auth) -> Httpx2Auth:
    """Wrap any funnel-auth provider as an ``httpx2.Auth`` (the official MCP SDK 2.x client).

    The wrapper drives the same provider: tokens, pending flows and refreshes are shared
    with any ``httpx`` client using it.

    Raises:
        AuthConfigError: ``httpx2`` is not installed (``pip install 'funnel-auth[httpx2]'``).
    """
    try:
        from funnel_auth._httpx2 import httpx2_auth as wrap
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise AuthConfigError("httpx2 is not installed: pip install 'funnel-auth[httpx2]'") from exc
    return wrap(auth)
