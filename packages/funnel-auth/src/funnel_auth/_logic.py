"""The decisions of the MCP authorization flow, pure: no I/O, no clock, no randomness.

Each function takes what was received (bytes, headers, metadata, the current time) and
returns a value or raises a typed :class:`~funnel_auth.AuthError`. The providers are the
I/O shell around these.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import quote

import msgspec

from funnel_auth._errors import (
    AuthorizationDenied,
    AuthServerUnavailable,
    DiscoveryError,
    InvalidGrant,
    IssuerMismatch,
    RegistrationError,
    TokenRequestError,
)
from funnel_auth._models import (
    ASM_DECODER,
    PRM_DECODER,
    TOKEN_RESPONSE_DECODER,
    AuthorizationServerMetadata,
    ClientRegistration,
    ProtectedResourceMetadata,
    TokenResponse,
    TokenSet,
)
from funnel_auth._pkce import S256
from funnel_auth._urls import is_secure_url, resource_covers

__all__ = [
    "JWT_BEARER_ASSERTION",
    "check_callback",
    "check_pkce_support",
    "client_auth",
    "parse_as_metadata",
    "parse_prm",
    "parse_registration",
    "parse_retry_after",
    "parse_token_response",
    "refresh_due",
    "refresh_margin",
    "select_scope",
    "token_set_from_response",
    "union_scope",
]


def parse_prm(content: bytes, *, server_url: str) -> ProtectedResourceMetadata:
    """Decode and validate protected-resource metadata for the server at ``server_url``.

    Raises:
        DiscoveryError: Not JSON, no ``resource``, a ``resource`` that does not identify
            this server (RFC 9728 §3.3), or no authorization server.
    """
    try:
        prm = PRM_DECODER.decode(content)
    except msgspec.DecodeError as exc:
        raise DiscoveryError(f"invalid protected resource metadata: {exc}") from exc
    if not resource_covers(prm.resource, server_url):
        raise DiscoveryError(
            f"protected resource metadata names resource {prm.resource!r}, not this server {server_url!r}"
        )
    if not prm.authorization_servers:
        raise DiscoveryError("protected resource metadata lists no authorization server")
    return prm


def parse_as_metadata(
    content: bytes, *, issuer: str, strict_issuer: bool = True
) -> AuthorizationServerMetadata:
    """Decode authorization-server metadata fetched for ``issuer`` and validate it.

    Args:
        content: The metadata document.
        issuer: The issuer the well-known URL was built from.
        strict_issuer: Require ``issuer`` in the document to equal ``issuer``
            (RFC 8414 §3.3). Only the 2025-03-26 fallback path turns this off, as the
            reference SDKs do there; the caller logs a warning.

    Raises:
        DiscoveryError: Not JSON, or its ``issuer`` is not identical to ``issuer``
            (when strict), or an endpoint is neither HTTPS nor loopback.
    """
    try:
        meta = ASM_DECODER.decode(content)
    except msgspec.DecodeError as exc:
        raise DiscoveryError(f"invalid authorization server metadata: {exc}") from exc
    if strict_issuer and meta.issuer != issuer:
        raise DiscoveryError(
            f"authorization server metadata issuer {meta.issuer!r} differs from {issuer!r}: not used"
        )
    for name in ("authorization_endpoint", "token_endpoint", "registration_endpoint"):
        url = getattr(meta, name)
        if url is not None and not is_secure_url(url):
            raise DiscoveryError(f"{name} {url!r} is neither HTTPS nor loopback")
    return meta


def check_pkce_support(meta: AuthorizationServerMetadata) -> None:
    """Refuse an authorization server that does not advertise PKCE S256.

    Raises:
        DiscoveryError: ``code_challenge_methods_supported`` is absent or lacks ``S256``.
    """
    methods = meta.code_challenge_methods_supported
    if methods is None:
        raise DiscoveryError(
            f"{meta.issuer} does not advertise PKCE (code_challenge_methods_supported): refusing"
        )
    if S256 not in methods:
        raise DiscoveryError(f"{meta.issuer} does not support PKCE S256: refusing")


def select_scope(
    *,
    challenged: str | None,
    scopes_supported: Sequence[str] | None,
    configured: str | None = None,
) -> str | None:
    """Pick the scope of an authorization request (MCP "Scope Selection Strategy").

    A configured scope wins; else the challenge's scope (authoritative, no set relation
    to ``scopes_supported`` assumed); else every ``scopes_supported`` of the
    protected-resource metadata; else ``None`` (omit ``scope``).
    """
    if configured:
        return configured
    if challenged:
        return challenged
    if scopes_supported:
        return " ".join(scopes_supported)
    return None


def union_scope(*scopes: str | None) -> str | None:
    """The union of space-separated scope strings, first-seen order; ``None`` if empty."""
    seen: dict[str, None] = {}
    for scope in scopes:
        for item in (scope or "").split():
            seen.setdefault(item, None)
    return " ".join(seen) or None


def check_callback(
    *,
    recorded_issuer: str | None,
    iss_advertised: bool,
    iss: str | None,
    error: str | None,
    error_description: str | None,
    code: str | None,
) -> str:
    """Validate an authorization response (RFC 9207 §2.4 as the MCP spec applies it).

    ``iss`` is compared first, by plain string equality with no normalisation, and an
    error response is only acted on after it passes.

    Returns:
        The authorization code.

    Raises:
        IssuerMismatch: ``iss`` differs from the recorded issuer, or is missing while the
            server advertises ``authorization_response_iss_parameter_supported``.
        AuthorizationDenied: The response carries ``error``.
    """
    if iss is not None:
        if recorded_issuer is None or iss != recorded_issuer:
            raise IssuerMismatch("the authorization response comes from another issuer: discarded")
    elif iss_advertised:
        raise IssuerMismatch(
            "the authorization response lacks iss, which its server advertises: discarded"
        )
    if error:
        detail = f": {error_description[:200]}" if error_description else ""
        raise AuthorizationDenied(f"authorization failed: {error}{detail}", error=error[:64])
    if not code:
        raise AuthorizationDenied("the authorization response has no code", error="invalid_request")
    return code


JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_auth(
    registration: ClientRegistration, form: dict[str, str], *, assertion: str | None = None
) -> dict[str, str]:
    """Apply the client's token-endpoint authentication to a request.

    Adds ``client_id`` (and ``client_secret`` for ``client_secret_post``, or the signed
    ``client_assertion`` for ``private_key_jwt``, RFC 7523 §2.2) to ``form``.

    Returns:
        Extra headers: ``Authorization: Basic …`` for ``client_secret_basic``
        (RFC 6749 §2.3.1: both parts form-urlencoded first).
    """
    method = registration.auth_method
    secret = registration.client_secret
    if method == "private_key_jwt":
        if assertion is None:
            raise ValueError("private_key_jwt needs a signed client assertion")
        form["client_id"] = registration.client_id
        form["client_assertion_type"] = JWT_BEARER_ASSERTION
        form["client_assertion"] = assertion
        return {}
    if method == "client_secret_basic" and secret is not None:
        pair = f"{quote(registration.client_id, safe='')}:{quote(secret, safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
    form["client_id"] = registration.client_id
    if method == "client_secret_post" and secret is not None:
        form["client_secret"] = secret
    return {}


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _oauth_error(content: bytes) -> tuple[str | None, str | None]:
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error, description = body.get("error"), body.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description if isinstance(description, str) else None,
    )


def parse_token_response(
    status_code: int, headers: Mapping[str, str], content: bytes, *, now: float
) -> TokenResponse:
    """Classify a token endpoint response.

    Raises:
        AuthServerUnavailable: 429 or 5xx (tokens are to be kept; retry later).
        InvalidGrant: ``invalid_grant`` (the code or refresh token is dead).
        TokenRequestError: Any other OAuth error, or a malformed success response.
    """
    if status_code == 429 or status_code >= 500:
        raise AuthServerUnavailable(
            f"token endpoint answered HTTP {status_code}",
            retry_after=parse_retry_after(headers.get("retry-after"), now=now),
        )
    if status_code != 200:
        error, description = _oauth_error(content)
        detail = f": {description[:200]}" if description else ""
        if error == "invalid_grant":
            raise InvalidGrant(
                f"token request refused: invalid_grant{detail}",
                error=error,
                status_code=status_code,
            )
        raise TokenRequestError(
            f"token request refused (HTTP {status_code}): {error or 'no OAuth error'}{detail}",
            error=error,
            status_code=status_code,
        )
    try:
        response = TOKEN_RESPONSE_DECODER.decode(content)
    except msgspec.DecodeError as exc:
        # The message of a DecodeError names fields, never values.
        raise TokenRequestError(
            f"malformed token response: {exc}", status_code=status_code
        ) from exc
    if not response.access_token:
        raise TokenRequestError(
            "malformed token response: empty access_token", status_code=status_code
        )
    if response.token_type.lower() not in ("bearer", "dpop"):
        raise TokenRequestError(
            f"unsupported token_type {response.token_type[:32]!r} (only Bearer and DPoP)",
            status_code=status_code,
        )
    return response


def token_set_from_response(
    response: TokenResponse,
    *,
    now: float,
    issuer: str | None,
    token_endpoint: str,
    resource: str | None,
    client_id: str,
    requested_scope: str | None,
    previous_refresh_token: str | None = None,
) -> TokenSet:
    """Build the :class:`TokenSet` to store from a token response received at ``now``.

    A refresh response without a new refresh token keeps the previous one (RFC 6749 §6).
    ``token_type`` is ``DPoP`` for a DPoP-bound token (case-insensitive on the wire).
    """
    expires_at = (
        now + response.expires_in if response.expires_in and response.expires_in > 0 else None
    )
    return TokenSet(
        access_token=response.access_token,
        issued_at=now,
        refresh_token=response.refresh_token or previous_refresh_token,
        expires_at=expires_at,
        scope=response.scope if response.scope is not None else requested_scope,
        issuer=issuer,
        token_endpoint=token_endpoint,
        resource=resource,
        client_id=client_id,
        requested_scope=requested_scope,
        token_type="DPoP" if response.token_type.lower() == "dpop" else "Bearer",
    )


def refresh_margin(
    tokens: TokenSet, *, skew: float = 60.0, jitter: float = 0.0, fraction: float = 0.25
) -> float:
    """Seconds before expiry at which ``tokens`` become due for a refresh.

    The base margin is the smaller of ``skew`` and ``fraction`` of the token's lifetime
    (when its issue time is known), so that a token living 10 s is refreshed after
    about 7.5 s rather than on every use. ``jitter`` adds a random-per-process offset,
    capped at half the base margin, which spreads the refreshes of many processes.
    """
    base = skew
    if tokens.expires_at is not None and tokens.issued_at is not None:
        lifetime = max(tokens.expires_at - tokens.issued_at, 0.0)
        base = min(skew, lifetime * fraction)
    return base + min(max(jitter, 0.0), base / 2)


def refresh_due(
    tokens: TokenSet,
    *,
    now: float,
    skew: float = 60.0,
    jitter: float = 0.0,
    fraction: float = 0.25,
) -> bool:
    """Whether to refresh before using ``tokens`` (see :func:`refresh_margin`).

    A token without a known expiry is used until the server rejects it.
    """
    if tokens.expires_at is None:
        return False
    margin = refresh_margin(tokens, skew=skew, jitter=jitter, fraction=fraction)
    return now >= tokens.expires_at - margin


def parse_registration(
    status_code: int,
    content: bytes,
    *,
    issuer: str,
    redirect_uris: Iterable[str],
) -> ClientRegistration:
    """Classify a dynamic client registration response (RFC 7591 §3.2).

    Raises:
        RegistrationError: An error response (its OAuth error code kept), or a success
            response without a ``client_id``.
    """
    if status_code not in (200, 201):
        error, description = _oauth_error(content)
        detail = f": {description[:200]}" if description else ""
        hint = (
            " (the server may not accept this redirect URI for a native client)"
            if error == "invalid_redirect_uri"
            else ""
        )
        raise RegistrationError(
            f"client registration refused (HTTP {status_code}): {error or 'no OAuth error'}{detail}{hint}",
            error=error,
        )
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        raise RegistrationError(f"malformed registration response: {exc}") from exc
    client_id = body.get("client_id") if isinstance(body, dict) else None
    if not isinstance(client_id, str) or not client_id:
        raise RegistrationError("malformed registration response: no client_id")
    secret = body.get("client_secret")
    method = body.get("token_endpoint_auth_method")
    if method not in ("client_secret_basic", "client_secret_post", "none"):
        method = "client_secret_basic" if isinstance(secret, str) else "none"
    expires = body.get("client_secret_expires_at")
    return ClientRegistration(
        issuer=issuer,
        client_id=client_id,
        client_secret=secret if isinstance(secret, str) else None,
        client_secret_expires_at=float(expires) if isinstance(expires, int | float) else None,
        auth_method=method,
        redirect_uris=list(redirect_uris),
        kind="dynamic",
    )
