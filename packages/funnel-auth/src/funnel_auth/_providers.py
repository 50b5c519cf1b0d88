"""Auth providers as ``httpx.Auth``: none, bearer, client credentials, authorization code.

Theory of operation. Each OAuth provider's ``async_auth_flow`` is a short loop around the
pure decisions in ``_logic``:

1. take the current :class:`TokenSet` (memory, else the store); refresh it first when
   it is due (single-flight: an in-process lock, then ``store.lock(key)`` and a re-read
   of the stored tokens, since another process may have refreshed already);
2. send the request with ``Authorization: Bearer``;
3. on 401, refresh once if a refresh token exists, else obtain new tokens: client
   credentials request them; the authorization-code provider discovers the server
   (protected-resource metadata → authorization-server metadata), registers a client
   if needed, and begins a flow, then raises :class:`AuthorizationRequired` with the URL
   (or waits for the callback when configured to);
4. on 403 ``insufficient_scope``, step up with the union of scopes, at most
   ``max_step_ups`` times per operation.

The locks are held around a refresh only, never across the resource request. Requests
to the authorization server (metadata, registration, token) go through the provider's
own client (or one passed in), not through the client this auth is attached to.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Final, Required, TypedDict, Unpack

import anyio
import httpx
import msgspec

from funnel_auth._audit import audit
from funnel_auth._challenge import BearerChallenge, find_bearer
from funnel_auth._config import OAuth2AuthorizationCode, OAuth2ClientCredentials, Secret
from funnel_auth._errors import (
    AuthConfigError,
    AuthError,
    AuthorizationFailed,
    AuthorizationRequired,
    AuthServerUnavailable,
    DiscoveryError,
    InsufficientScope,
    InvalidGrant,
    RateLimited,
    RegistrationError,
)
from funnel_auth._flows import AuthorizationFlows, AuthorizationStart, PendingAuthorization
from funnel_auth._logic import (
    check_callback,
    check_pkce_support,
    client_auth,
    parse_as_metadata,
    parse_prm,
    parse_registration,
    parse_token_response,
    refresh_due,
    select_scope,
    token_set_from_response,
    union_scope,
)
from funnel_auth._models import (
    ENCODER,
    REGISTRATION_DECODER,
    TOKENSET_DECODER,
    AuthorizationServerMetadata,
    ClientRegistration,
    ProtectedResourceMetadata,
    TokenSet,
)
from funnel_auth._pkce import S256, code_challenge, new_state, new_verifier
from funnel_auth._ratelimit import RateLimiter
from funnel_auth._urls import (
    DEFAULT_REDIRECT_URI,
    as_metadata_urls,
    build_url,
    canonical_resource,
    fallback_endpoints,
    is_loopback_url,
    is_secure_url,
    prm_urls,
    resource_covers,
)
from funnel_tokenstore import MemoryTokenStore, TokenStore

__all__ = [
    "AuthorizationCodeAuth",
    "BearerTokenAuth",
    "ClientCredentialsAuth",
    "NullAuth",
    "OAuthAuth",
    "OAuthOptions",
]

logger = logging.getLogger(__name__)

_SERVER_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KEY_PREFIX: Final = "funnel-auth"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class NullAuth(httpx.Auth):
    """No credentials: requests go out unchanged."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request as it is."""
        yield request


class BearerTokenAuth(httpx.Auth):
    """A static bearer token on every request (``Authorization: Bearer <token>``).

    Args:
        token: The token (``${VAR}`` already resolved by the config loader).
    """

    def __init__(self, token: Secret | str) -> None:
        value = token.reveal() if isinstance(token, Secret) else token
        if not value:
            raise AuthConfigError("a bearer token must not be empty")
        self._token = Secret(value)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request with the bearer token."""
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=**********)"


class OAuthOptions(TypedDict, total=False):
    """Options every OAuth provider takes (see :func:`~funnel_auth.create_auth`).

    Attributes:
        server_name: The configured server name; keys stored tokens.
        server_url: The MCP server's URL.
        store: Token and registration storage; default: memory.
        http_client: Client for authorization-server and metadata requests.
        limiter: Bounds token, registration and authorization attempts per server.
        clock: Wall clock, seconds since the epoch.
        timeout: Seconds allowed per authorization-server request.
        refresh_skew: Refresh this many seconds before expiry.
        refresh_jitter: Plus up to this many seconds, random per provider.
        max_step_ups: Step-up attempts per operation before giving up.
    """

    server_name: Required[str]
    server_url: Required[str]
    store: TokenStore | None
    http_client: httpx.AsyncClient | None
    limiter: RateLimiter | None
    clock: Callable[[], float]
    timeout: float
    refresh_skew: float
    refresh_jitter: float
    max_step_ups: int


@dataclass(frozen=True)
class _Discovery:
    """What discovery found for one server: the resource and its authorization server."""

    resource: str
    prm: ProtectedResourceMetadata | None
    metadata: AuthorizationServerMetadata
    # True when no metadata document was found at all (2025-03-26 default endpoints).
    defaults: bool


class OAuthAuth(httpx.Auth, abc.ABC):
    """Shared machinery of the OAuth providers: token storage, refresh, discovery.

    Not used directly: see :class:`ClientCredentialsAuth` and
    :class:`AuthorizationCodeAuth`.
    """

    requires_request_body = True

    def __init__(self, **options: Unpack[OAuthOptions]) -> None:
        server_name = options["server_name"]
        server_url = options["server_url"]
        store = options.get("store")
        limiter = options.get("limiter")
        refresh_jitter = options.get("refresh_jitter", 30.0)
        if not _SERVER_NAME.match(server_name):
            raise AuthConfigError(
                f"server name {server_name!r} cannot key stored tokens: use letters, digits, '.', '_' or '-'"
            )
        try:
            self.server_url = server_url
            self._canonical = canonical_resource(server_url)
        except ValueError as exc:
            raise AuthConfigError(str(exc), server=server_name) from exc
        self.server_name = server_name
        self._store: TokenStore = store if store is not None else MemoryTokenStore()
        self._http_client = options.get("http_client")
        self._limiter = (
            limiter if limiter is not None else RateLimiter(max_attempts=10, window=60.0)
        )
        self._clock = options.get("clock", time.time)
        self._timeout = options.get("timeout", 30.0)
        self._skew = options.get("refresh_skew", 60.0)
        # A fixed random offset per provider spreads refreshes of many processes apart.
        self._jitter = refresh_jitter * secrets.randbelow(1001) / 1000
        self._max_step_ups = options.get("max_step_ups", 3)
        self._tokens: TokenSet | None = None
        self._loaded = False
        self._refresh_lock = anyio.Lock()
        self._discovery: _Discovery | None = None
        self._step_ups: dict[str, int] = {}

    # ------------------------------------------------------------------ store keys

    def _tokens_key(self, issuer: str) -> str:
        return f"{_KEY_PREFIX}:tokens:{self.server_name}:{_digest(issuer)}"

    @property
    def _active_key(self) -> str:
        return f"{_KEY_PREFIX}:active:{self.server_name}"

    @staticmethod
    def _registration_key(issuer: str) -> str:
        return f"{_KEY_PREFIX}:client:{_digest(issuer)}"

    @staticmethod
    def _identity(tokens: TokenSet) -> str:
        return tokens.issuer or tokens.token_endpoint

    async def _read_tokens(self, key: str) -> TokenSet | None:
        raw = await self._store.get(key)
        if raw is None:
            return None
        try:
            tokens = TOKENSET_DECODER.decode(raw)
        except msgspec.DecodeError:
            logger.warning("[%s] stored tokens are unreadable; ignoring them", self.server_name)
            return None
        if tokens.resource is not None and not resource_covers(tokens.resource, self.server_url):
            # Tokens for another resource must never be sent here (no passthrough).
            return None
        return tokens

    async def _write_tokens(self, tokens: TokenSet) -> None:
        identity = self._identity(tokens)
        await self._store.set(self._tokens_key(identity), ENCODER.encode(tokens))
        await self._store.set(self._active_key, identity.encode())

    async def _clear_tokens(self, tokens: TokenSet, reason: str) -> None:
        await self._store.delete(self._tokens_key(self._identity(tokens)))
        self._tokens = None
        audit(
            "auth.token_cleared",
            server=self.server_name,
            issuer=tokens.issuer,
            outcome="success",
            reason=reason,
        )

    async def _load(self) -> TokenSet | None:
        if self._tokens is None and not self._loaded:
            self._loaded = True
            active = await self._store.get(self._active_key)
            if active is not None:
                self._tokens = await self._read_tokens(self._tokens_key(active.decode()))
        return self._tokens

    async def get_tokens(self) -> TokenSet | None:
        """The current tokens (from memory or the store), without refreshing them."""
        return await self._load()

    async def clear(self) -> None:
        """Forget this server's tokens, here and in the store (a logout)."""
        tokens = await self._load()
        if tokens is not None:
            await self._clear_tokens(tokens, "cleared by the application")

    # ------------------------------------------------------------------ HTTP shell

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send one of our own requests; network failures become AuthServerUnavailable."""
        try:
            with anyio.fail_after(self._timeout):
                if self._http_client is not None:
                    response = await self._http_client.send(request)
                    await response.aread()
                    return response
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.send(request)
                    await response.aread()
                    return response
        except (httpx.TransportError, TimeoutError) as exc:
            raise AuthServerUnavailable(
                f"cannot reach {request.url.scheme}://{request.url.netloc.decode()}: {type(exc).__name__}",
                server=self.server_name,
            ) from exc

    def _limit(self, what: str, issuer: str | None) -> None:
        wait = self._limiter.acquire(f"{what}:{self.server_name}")
        if wait > 0:
            audit(
                "auth.rate_limited",
                server=self.server_name,
                issuer=issuer,
                outcome="limited",
                reason=what,
                retry_after=round(wait, 3),
            )
            raise RateLimited(
                f"too many {what} attempts for {self.server_name}; retry in {wait:.0f} s",
                retry_after=wait,
                server=self.server_name,
            )

    async def _token_request(
        self,
        *,
        endpoint: str,
        registration: ClientRegistration,
        form: dict[str, str],
        issuer: str | None,
        resource: str | None,
        requested_scope: str | None,
        previous_refresh_token: str | None = None,
    ) -> TokenSet:
        self._limit("token", issuer)
        headers = {"Accept": "application/json", **client_auth(registration, form)}
        request = httpx.Request("POST", endpoint, data=form, headers=headers)
        response = await self._send(request)
        now = self._clock()
        try:
            parsed = parse_token_response(
                response.status_code, response.headers, response.content, now=now
            )
        except AuthError as exc:
            exc.server = self.server_name
            raise
        return token_set_from_response(
            parsed,
            now=now,
            issuer=issuer,
            token_endpoint=endpoint,
            resource=resource,
            client_id=registration.client_id,
            requested_scope=requested_scope,
            previous_refresh_token=previous_refresh_token,
        )

    async def _get_json(self, url: str) -> httpx.Response | None:
        """GET a metadata document: the response when 200, ``None`` when absent (4xx)."""
        response = await self._send(
            httpx.Request("GET", url, headers={"Accept": "application/json"})
        )
        logger.debug("[%s] GET %s -> %d", self.server_name, url, response.status_code)
        if response.status_code == 200:
            return response
        if response.status_code >= 500:
            raise AuthServerUnavailable(
                f"{url} answered HTTP {response.status_code}", server=self.server_name
            )
        return None

    # ------------------------------------------------------------------ discovery

    async def _discover(
        self, challenge: BearerChallenge | None, *, issuer_hint: str | None
    ) -> _Discovery:
        """Protected-resource metadata, then authorization-server metadata (MCP spec order)."""
        try:
            return await self._discover_inner(challenge, issuer_hint=issuer_hint)
        except AuthError as exc:
            exc.server = self.server_name
            raise

    async def _discover_inner(
        self, challenge: BearerChallenge | None, *, issuer_hint: str | None
    ) -> _Discovery:
        candidates = (
            [challenge.resource_metadata]
            if challenge and challenge.resource_metadata
            else prm_urls(self.server_url)
        )
        prm: ProtectedResourceMetadata | None = None
        for url in candidates:
            response = await self._get_json(url)
            if response is not None:
                prm = parse_prm(response.content, server_url=self.server_url)
                break
        if prm is not None:
            servers = prm.authorization_servers
            # RFC 9728 §7.6: the client picks; a configured issuer must be one listed.
            if issuer_hint is not None and issuer_hint not in servers:
                raise RegistrationError(
                    f"the configured client belongs to {issuer_hint}, but {self.server_url} now names "
                    f"{', '.join(servers)}: re-register or update the configuration"
                )
            issuer = issuer_hint or servers[0]
            metadata = await self._as_metadata(issuer)
            if metadata is None:
                raise DiscoveryError(f"no authorization server metadata found for {issuer}")
            return _Discovery(resource=prm.resource, prm=prm, metadata=metadata, defaults=False)
        # Back-compat (2025-03-26): no protected-resource metadata; the server's origin
        # is the authorization server, with metadata or with default endpoints.
        defaults = fallback_endpoints(self.server_url)
        metadata = await self._as_metadata(defaults["issuer"])
        if metadata is not None:
            return _Discovery(resource=self._canonical, prm=None, metadata=metadata, defaults=False)
        logger.info(
            "[%s] no authorization metadata; using default endpoints at %s",
            self.server_name,
            defaults["issuer"],
        )
        synthesized = AuthorizationServerMetadata(
            issuer=defaults["issuer"],
            authorization_endpoint=defaults["authorization_endpoint"],
            token_endpoint=defaults["token_endpoint"],
            registration_endpoint=defaults["registration_endpoint"],
            # 2025-03-26 servers without metadata were required to support S256.
            code_challenge_methods_supported=[S256],
        )
        return _Discovery(resource=self._canonical, prm=None, metadata=synthesized, defaults=True)

    async def _as_metadata(self, issuer: str) -> AuthorizationServerMetadata | None:
        rejected: DiscoveryError | None = None
        for url in as_metadata_urls(issuer):
            response = await self._get_json(url)
            if response is None:
                continue
            try:
                return parse_as_metadata(response.content, issuer=issuer)
            except DiscoveryError as exc:
                # MUST NOT use it; another well-known location may still be valid.
                rejected = exc
        if rejected is not None:
            raise rejected
        return None

    # ------------------------------------------------------------------ refresh

    def _due(self, tokens: TokenSet) -> bool:
        return refresh_due(tokens, now=self._clock(), skew=self._skew, jitter=self._jitter)

    def _expired(self, tokens: TokenSet) -> bool:
        return tokens.expires_at is not None and tokens.expires_at <= self._clock()

    async def _renew_without_refresh_token(self, base: TokenSet | None) -> TokenSet | None:
        """New tokens without a refresh token (client credentials), or ``None`` (need a user)."""
        return None

    def _registration_for_refresh(self, tokens: TokenSet) -> ClientRegistration:
        return ClientRegistration(
            issuer=tokens.issuer or tokens.token_endpoint, client_id=tokens.client_id
        )

    async def _renew(self, stale: TokenSet | None, *, force: bool) -> TokenSet | None:
        """Single-flight renewal. Returns usable tokens, or ``None`` when a person is needed.

        ``stale`` is the token the caller found due (or rejected, with ``force``); if
        another task or process already replaced it, the replacement is returned.
        """
        async with self._refresh_lock:
            current = await self._load()
            if (
                current is not None
                and (stale is None or current != stale)
                and not self._due(current)
            ):
                return current
            base = current or stale
            if base is None:
                return await self._renew_without_refresh_token(None)
            key = self._tokens_key(self._identity(base))
            async with self._store.lock(key):
                stored = await self._read_tokens(key)
                if (
                    stored is not None
                    and (stale is None or stored != stale)
                    and not self._due(stored)
                ):
                    # Another process refreshed while we waited for the lock.
                    self._tokens = stored
                    return stored
                base = stored or base
                if base.refresh_token is None:
                    renewed = await self._renew_without_refresh_token(base)
                    if renewed is None and not force and not self._expired(base):
                        return base
                    return renewed
                return await self._refresh_locked(base, force=force)

    async def _refresh_locked(self, base: TokenSet, *, force: bool) -> TokenSet | None:
        assert base.refresh_token is not None  # noqa: S101 -- checked by the caller
        registration = await self._refresh_registration(base)
        form = {"grant_type": "refresh_token", "refresh_token": base.refresh_token}
        if base.resource:
            form["resource"] = base.resource
        if base.requested_scope:
            form["scope"] = base.requested_scope
        try:
            new = await self._token_request(
                endpoint=base.token_endpoint,
                registration=registration,
                form=form,
                issuer=base.issuer,
                resource=base.resource,
                requested_scope=base.requested_scope,
                previous_refresh_token=base.refresh_token,
            )
        except InvalidGrant:
            audit(
                "auth.refresh_failed",
                server=self.server_name,
                issuer=base.issuer,
                outcome="failure",
                reason="invalid_grant",
            )
            await self._clear_tokens(base, "refresh token rejected (invalid_grant)")
            return await self._renew_without_refresh_token(None)
        except (AuthServerUnavailable, RateLimited) as exc:
            # Keep the tokens: the server is busy or down, not saying they are bad.
            audit(
                "auth.refresh_failed",
                server=self.server_name,
                issuer=base.issuer,
                outcome="failure",
                reason=type(exc).__name__,
            )
            if not force and not self._expired(base):
                logger.warning(
                    "[%s] refresh failed (%s); using the current token until it expires",
                    self.server_name,
                    exc,
                )
                self._tokens = base
                return base
            raise
        except AuthError as exc:
            audit(
                "auth.refresh_failed",
                server=self.server_name,
                issuer=base.issuer,
                outcome="failure",
                reason=type(exc).__name__,
            )
            raise
        # Persist first: a rotated refresh token must survive a crash right after use.
        await self._write_tokens(new)
        self._tokens = new
        audit(
            "auth.token_refreshed",
            server=self.server_name,
            issuer=new.issuer,
            outcome="success",
            grant_type="refresh_token",
        )
        logger.info("[%s] access token refreshed", self.server_name)
        return new

    async def _refresh_registration(self, tokens: TokenSet) -> ClientRegistration:
        return self._registration_for_refresh(tokens)

    async def _usable_tokens(self) -> TokenSet | None:
        tokens = await self._load()
        if tokens is not None and self._due(tokens):
            tokens = await self._renew(tokens, force=False)
        return tokens

    # ------------------------------------------------------------------ the flow

    @staticmethod
    def _operation(request: httpx.Request) -> str:
        parts = [
            request.method,
            request.url.path,
            request.headers.get("mcp-method", ""),
            request.headers.get("mcp-name", ""),
        ]
        return " ".join(parts)

    @abc.abstractmethod
    async def _on_unauthorized(
        self, challenge: BearerChallenge | None, request: httpx.Request
    ) -> TokenSet | None:
        """Get tokens after a 401 (each grant type its own way), or ``None`` to give up."""

    @abc.abstractmethod
    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        """Step up after a 403 ``insufficient_scope``, or ``None`` to give up."""

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authorize ``request``: attach a token, renew it on 401, step up on 403."""
        tokens = await self._usable_tokens()
        if tokens is not None:
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        response = yield request
        renewed = obtained = False
        operation = self._operation(request)
        while True:
            challenge = find_bearer(response.headers.get_list("www-authenticate"))
            if response.status_code == 401:
                new: TokenSet | None = None
                if tokens is not None and not renewed:
                    renewed = True
                    new = await self._renew(tokens, force=True)
                if new is None or new is tokens:
                    if obtained:
                        return
                    obtained = True
                    new = await self._on_unauthorized(challenge, request)
                if new is None:
                    return
            elif (
                response.status_code == 403
                and challenge is not None
                and challenge.error == "insufficient_scope"
                and challenge.scope
                and tokens is not None
            ):
                count = self._step_ups.get(operation, 0)
                if count >= self._max_step_ups:
                    self._step_ups.pop(operation, None)
                    raise InsufficientScope(
                        f"{self.server_url} still requires scope {challenge.scope!r} after {count} step-up attempts",
                        server=self.server_name,
                    )
                self._step_ups[operation] = count + 1
                new = await self._on_insufficient_scope(challenge, tokens)
                if new is None:
                    return
            else:
                if response.status_code < 400:
                    self._step_ups.pop(operation, None)
                return
            tokens = new
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
            response = yield request


class ClientCredentialsAuth(OAuthAuth):
    """OAuth 2 client credentials (RFC 6749 §4.4) for machine-to-machine access.

    The token endpoint comes from the config, else from discovery on the first 401.
    Tokens are requested with ``resource`` (the server's canonical URI unless
    configured), ``scope`` and ``audience`` when configured; the client authenticates
    with ``client_secret_basic`` or ``client_secret_post``.

    Args:
        config: The ``oauth2-client`` config.
        **options: See :class:`OAuthOptions` (``server_name``, ``server_url``, ``store``…).
    """

    def __init__(self, config: OAuth2ClientCredentials, **options: Unpack[OAuthOptions]) -> None:
        super().__init__(**options)
        self._config = config
        token_endpoint = config.token_endpoint if isinstance(config.token_endpoint, str) else None
        if token_endpoint is not None and not is_secure_url(token_endpoint):
            raise AuthConfigError(
                f"token endpoint {token_endpoint!r} is neither HTTPS nor loopback",
                server=self.server_name,
            )
        self._token_endpoint = token_endpoint
        self._issuer: str | None = None
        self._resource = config.resource if isinstance(config.resource, str) else self._canonical
        self._scope = config.scope if isinstance(config.scope, str) else None

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(server={self.server_name!r}, client_id={self._config.client_id!r})"

    def _registration(self) -> ClientRegistration:
        return ClientRegistration(
            issuer=self._issuer or self._token_endpoint or "",
            client_id=self._config.client_id,
            client_secret=self._config.client_secret.reveal(),
            auth_method=self._config.auth_method,
        )

    def _registration_for_refresh(self, tokens: TokenSet) -> ClientRegistration:
        return self._registration()

    async def _grant(self, scope: str | None) -> TokenSet:
        if self._token_endpoint is None:
            raise DiscoveryError("no token endpoint known yet", server=self.server_name)
        form = {"grant_type": "client_credentials", "resource": self._resource}
        if scope:
            form["scope"] = scope
        if isinstance(self._config.audience, str):
            form["audience"] = self._config.audience
        try:
            tokens = await self._token_request(
                endpoint=self._token_endpoint,
                registration=self._registration(),
                form=form,
                issuer=self._issuer,
                resource=self._resource,
                requested_scope=scope,
            )
        except AuthError as exc:
            audit(
                "auth.flow_failed",
                server=self.server_name,
                issuer=self._issuer,
                outcome="failure",
                grant_type="client_credentials",
                reason=type(exc).__name__,
            )
            raise
        await self._write_tokens(tokens)
        self._tokens = tokens
        audit(
            "auth.token_acquired",
            server=self.server_name,
            issuer=self._issuer,
            outcome="success",
            grant_type="client_credentials",
        )
        logger.info("[%s] access token acquired (client credentials)", self.server_name)
        return tokens

    async def _renew_without_refresh_token(self, base: TokenSet | None) -> TokenSet | None:
        if self._token_endpoint is None:
            return None
        scope = (base.requested_scope if base else None) or self._scope
        return await self._grant(scope)

    async def _usable_tokens(self) -> TokenSet | None:
        tokens = await super()._usable_tokens()
        if tokens is None and self._token_endpoint is not None:
            # The endpoint is known: get a token before the first request, saving a 401.
            tokens = await self._renew(None, force=False)
        return tokens

    async def _on_unauthorized(
        self, challenge: BearerChallenge | None, request: httpx.Request
    ) -> TokenSet | None:
        if self._discovery is None:
            discovery = await self._discover(challenge, issuer_hint=None)
            self._discovery = discovery
            self._issuer = discovery.metadata.issuer if not discovery.defaults else None
            if self._token_endpoint is None:
                self._token_endpoint = discovery.metadata.token_endpoint
            if not isinstance(self._config.resource, str):
                self._resource = discovery.resource
        scope = select_scope(
            challenged=challenge.scope if challenge else None,
            scopes_supported=self._discovery.prm.scopes_supported if self._discovery.prm else None,
            configured=self._scope,
        )
        async with self._refresh_lock:
            return await self._grant(scope)

    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        scope = union_scope(tokens.requested_scope or tokens.scope, challenge.scope)
        async with self._refresh_lock:
            return await self._grant(scope)


class AuthorizationCodeAuth(OAuthAuth):
    """OAuth 2 authorization code with PKCE S256, following the MCP authorization spec.

    When a person must authorize, requests raise :class:`AuthorizationRequired` carrying
    the URL (or, with ``wait_timeout``, wait for the callback). The app serves the
    redirect URI and hands the callback to :meth:`complete` (or
    :meth:`AuthorizationFlows.complete`). The library never opens a browser.

    Args:
        config: The ``oauth2-code`` config.
        redirect_uri: The redirect URI, unless the config sets one.
        flows: The registry of pending flows, shared with the callback handler.
        client_name: ``client_name`` for dynamic registration.
        wait_timeout: When set, a request that needs a person waits this many seconds
            for the callback instead of raising at once.
        on_authorization_required: Called with the URL when a flow starts (the app
            shows it); may be sync or async.
        **options: See :class:`OAuthOptions` (``server_name``, ``server_url``, ``store``…).
    """

    def __init__(
        self,
        config: OAuth2AuthorizationCode,
        *,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        flows: AuthorizationFlows | None = None,
        client_name: str = "funnel",
        wait_timeout: float | None = None,
        on_authorization_required: Callable[[str], Awaitable[None] | None] | None = None,
        **options: Unpack[OAuthOptions],
    ) -> None:
        super().__init__(**options)
        self._config = config
        self.redirect_uri = (
            config.redirect_uri if isinstance(config.redirect_uri, str) else redirect_uri
        )
        if not is_secure_url(self.redirect_uri):
            raise AuthConfigError(
                f"redirect URI {self.redirect_uri!r} must be HTTPS or localhost",
                server=self.server_name,
            )
        for name in ("authorization_endpoint", "token_endpoint"):
            url = getattr(config, name)
            if isinstance(url, str) and not is_secure_url(url):
                raise AuthConfigError(
                    f"{name} {url!r} is neither HTTPS nor loopback", server=self.server_name
                )
        self.flows = flows if flows is not None else AuthorizationFlows()
        self._client_name = client_name
        self._wait_timeout = wait_timeout
        self._on_required = on_authorization_required
        self._pending: PendingAuthorization | None = None
        self._discovered_from: str | None = None
        self._done = anyio.Event()
        self._flow_error: AuthError | None = None

    def __repr__(self) -> str:
        return f"AuthorizationCodeAuth(server={self.server_name!r})"

    # ------------------------------------------------------------------ registration

    @property
    def _binding_key(self) -> str:
        return f"{_KEY_PREFIX}:binding:{self.server_name}"

    async def _registration(self, metadata: AuthorizationServerMetadata) -> ClientRegistration:
        """Pre-registered → client ID metadata document → stored or new dynamic registration."""
        issuer = metadata.issuer
        config = self._config
        if isinstance(config.client_id, str):
            secret = (
                config.client_secret.reveal() if isinstance(config.client_secret, Secret) else None
            )
            bound = await self._store.get(self._binding_key)
            if bound is not None and bound.decode() != issuer:
                raise RegistrationError(
                    f"the pre-registered client of {self.server_name} was used with {bound.decode()}, "
                    f"but the server now names {issuer}: update the client configuration",
                    server=self.server_name,
                )
            if bound is None:
                await self._store.set(self._binding_key, issuer.encode())
            method = (
                config.auth_method
                if isinstance(config.auth_method, str)
                else ("client_secret_basic" if secret else "none")
            )
            return ClientRegistration(
                issuer=issuer,
                client_id=config.client_id,
                client_secret=secret,
                auth_method=method,
                kind="pre-registered",
            )
        if (
            isinstance(config.client_metadata_url, str)
            and metadata.client_id_metadata_document_supported
        ):
            return ClientRegistration(
                issuer=issuer,
                client_id=config.client_metadata_url,
                auth_method="none",
                kind="metadata-document",
            )
        raw = await self._store.get(self._registration_key(issuer))
        if raw is not None:
            try:
                stored = REGISTRATION_DECODER.decode(raw)
            except msgspec.DecodeError:
                stored = None
            expired = bool(
                stored
                and stored.client_secret_expires_at
                and stored.client_secret_expires_at <= self._clock()
            )
            if (
                stored is not None
                and stored.issuer == issuer
                and self.redirect_uri in stored.redirect_uris
                and not expired
            ):
                return stored
        if metadata.registration_endpoint is None:
            raise RegistrationError(
                f"{issuer} offers no way to register a client: configure clientId (or clientMetadataUrl)",
                server=self.server_name,
            )
        return await self._register(metadata, metadata.registration_endpoint)

    async def _register(
        self, metadata: AuthorizationServerMetadata, endpoint: str
    ) -> ClientRegistration:
        self._limit("registration", metadata.issuer)
        body = {
            "client_name": self._client_name,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            # OIDC servers default to "web", which rejects loopback redirect URIs.
            "application_type": "native" if is_loopback_url(self.redirect_uri) else "web",
        }
        response = await self._send(
            httpx.Request(
                "POST",
                endpoint,
                content=ENCODER.encode(body),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        )
        try:
            registration = parse_registration(
                response.status_code,
                response.content,
                issuer=metadata.issuer,
                redirect_uris=[self.redirect_uri],
            )
        except RegistrationError as exc:
            exc.server = self.server_name
            audit(
                "auth.client_registered",
                server=self.server_name,
                issuer=metadata.issuer,
                outcome="failure",
                reason=exc.error or "malformed",
            )
            raise
        await self._store.set(self._registration_key(metadata.issuer), ENCODER.encode(registration))
        audit(
            "auth.client_registered",
            server=self.server_name,
            issuer=metadata.issuer,
            outcome="success",
        )
        return registration

    async def _refresh_registration(self, tokens: TokenSet) -> ClientRegistration:
        config = self._config
        if isinstance(config.client_id, str) and config.client_id == tokens.client_id:
            secret = (
                config.client_secret.reveal() if isinstance(config.client_secret, Secret) else None
            )
            method = (
                config.auth_method
                if isinstance(config.auth_method, str)
                else ("client_secret_basic" if secret else "none")
            )
            return ClientRegistration(
                issuer=tokens.issuer or "",
                client_id=tokens.client_id,
                client_secret=secret,
                auth_method=method,
            )
        if tokens.issuer is not None:
            raw = await self._store.get(self._registration_key(tokens.issuer))
            if raw is not None:
                try:
                    stored = REGISTRATION_DECODER.decode(raw)
                except msgspec.DecodeError:
                    stored = None
                if stored is not None and stored.client_id == tokens.client_id:
                    return stored
        return ClientRegistration(issuer=tokens.issuer or "", client_id=tokens.client_id)

    # ------------------------------------------------------------------ begin / complete

    async def _ensure_discovery(self, challenge: BearerChallenge | None) -> _Discovery:
        pointer = challenge.resource_metadata if challenge is not None else None
        # Discover again only when the server points at different metadata (a new AS?).
        if self._discovery is None or (pointer is not None and pointer != self._discovered_from):
            hint = self._config.issuer if isinstance(self._config.issuer, str) else None
            discovery = await self._discover(challenge, issuer_hint=hint)
            if not discovery.defaults:
                try:
                    check_pkce_support(discovery.metadata)
                except DiscoveryError as exc:
                    exc.server = self.server_name
                    raise
            self._discovery = discovery
            self._discovered_from = pointer
        return self._discovery

    async def _probe_challenge(self) -> BearerChallenge | None:
        """An unauthenticated GET of the server, for its challenge (begin() before any request)."""
        try:
            response = await self._send(
                httpx.Request(
                    "GET",
                    self.server_url,
                    headers={"Accept": "application/json, text/event-stream"},
                )
            )
        except AuthServerUnavailable:
            return None
        if response.status_code in (401, 403):
            return find_bearer(response.headers.get_list("www-authenticate"))
        return None

    async def begin(
        self, *, scope: str | None = None, challenge: BearerChallenge | None = None
    ) -> AuthorizationStart:
        """Start (or reuse) an authorization flow and return the URL a person must open.

        Discovers the server, registers a client when needed, and records the flow's
        ``state``, PKCE verifier and issuer before returning. A pending, unexpired flow
        for the same scope is reused rather than replaced.

        Args:
            scope: Scope to request; default: the scope selection strategy.
            challenge: The server's challenge, when the caller has one.

        Returns:
            The authorization URL, the flow's ``state``, and its expiry.

        Raises:
            DiscoveryError: The server's metadata is missing or unusable.
            RegistrationError: No client id could be obtained.
            RateLimited: Too many flows started recently.
            AuthServerUnavailable: A metadata or registration endpoint is unreachable.
        """
        if challenge is None and self._discovery is None:
            challenge = await self._probe_challenge()
        try:
            discovery = await self._ensure_discovery(challenge)
            metadata = discovery.metadata
            if scope is None:
                scope = select_scope(
                    challenged=challenge.scope if challenge else None,
                    scopes_supported=discovery.prm.scopes_supported if discovery.prm else None,
                    configured=self._config.scope if isinstance(self._config.scope, str) else None,
                )
            pending = self._pending
            if (
                pending is not None
                and pending.scope == scope
                and pending.expires_at > self.flows.now()
            ):
                return AuthorizationStart(
                    pending.authorization_url, pending.state, pending.expires_at
                )
            self._limit("authorization", metadata.issuer)
            registration = await self._registration(metadata)
        except AuthError as exc:
            audit(
                "auth.flow_failed",
                server=self.server_name,
                issuer=None,
                outcome="failure",
                reason=type(exc).__name__,
            )
            raise
        authorization_endpoint = (
            self._config.authorization_endpoint
            if isinstance(self._config.authorization_endpoint, str)
            else metadata.authorization_endpoint
        )
        token_endpoint = (
            self._config.token_endpoint
            if isinstance(self._config.token_endpoint, str)
            else metadata.token_endpoint
        )
        if authorization_endpoint is None or token_endpoint is None:
            raise DiscoveryError(
                f"{metadata.issuer} advertises no authorization or token endpoint",
                server=self.server_name,
            )
        resource = (
            self._config.resource if isinstance(self._config.resource, str) else discovery.resource
        )
        request_scope = scope
        prompt = None
        if metadata.scopes_supported and "offline_access" in metadata.scopes_supported:
            # Ask for a refresh token where the server offers one; OIDC needs consent for it.
            request_scope = union_scope(scope, "offline_access")
            prompt = "consent"
        state, verifier = new_state(), new_verifier()
        url = build_url(
            authorization_endpoint,
            {
                "response_type": "code",
                "client_id": registration.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": request_scope,
                "state": state,
                "code_challenge": code_challenge(verifier),
                "code_challenge_method": S256,
                "resource": resource,
                "audience": self._config.audience
                if isinstance(self._config.audience, str)
                else None,
                "prompt": prompt,
            },
        )
        if self._pending is not None:
            self.flows.discard(self._pending.state)
        pending = PendingAuthorization(
            state=state,
            verifier=verifier,
            issuer=None if discovery.defaults else metadata.issuer,
            iss_advertised=metadata.authorization_response_iss_parameter_supported,
            authorization_url=url,
            redirect_uri=self.redirect_uri,
            scope=scope,
            resource=resource,
            token_endpoint=token_endpoint,
            registration=registration,
            expires_at=self.flows.now() + self.flows.ttl,
            provider=self,
        )
        self.flows.add(pending)
        self._pending = pending
        if self._done.is_set():
            self._done = anyio.Event()
        self._flow_error = None
        audit(
            "auth.flow_started",
            server=self.server_name,
            issuer=metadata.issuer,
            outcome="success",
            scope=scope,
        )
        logger.info("[%s] authorization required; flow started", self.server_name)
        return AuthorizationStart(url, state, pending.expires_at)

    async def complete(
        self,
        state: str,
        code: str | None,
        iss: str | None = None,
        *,
        error: str | None = None,
        error_description: str | None = None,
    ) -> None:
        """Finish a flow from its callback parameters (see :meth:`AuthorizationFlows.complete`).

        Raises:
            InvalidState: Unknown, reused, expired, or another server's ``state``.
            IssuerMismatch: ``iss`` is wrong, or missing where advertised.
            AuthorizationDenied: The server answered with an error.
            TokenRequestError: The code exchange failed (nothing stored).
            AuthServerUnavailable: The token endpoint could not be reached.
        """
        await self.flows.complete(
            state, code, iss, error=error, error_description=error_description
        )

    def _flow_finished(self, pending: PendingAuthorization, error: AuthError | None) -> None:
        if self._pending is pending:
            self._pending = None
            self._flow_error = error
            self._done.set()

    async def _exchange(
        self,
        pending: PendingAuthorization,
        *,
        code: str | None,
        iss: str | None,
        error: str | None,
        error_description: str | None,
    ) -> None:
        try:
            authorization_code = check_callback(
                recorded_issuer=pending.issuer,
                iss_advertised=pending.iss_advertised,
                iss=iss,
                error=error,
                error_description=error_description,
                code=code,
            )
            form = {
                "grant_type": "authorization_code",
                "code": authorization_code,
                "redirect_uri": pending.redirect_uri,
                "code_verifier": pending.verifier,
                "resource": pending.resource,
            }
            if isinstance(self._config.audience, str):
                form["audience"] = self._config.audience
            tokens = await self._token_request(
                endpoint=pending.token_endpoint,
                registration=pending.registration,
                form=form,
                issuer=pending.issuer,
                resource=pending.resource,
                requested_scope=pending.scope,
            )
            async with self._refresh_lock:
                await self._write_tokens(tokens)
                self._tokens = tokens
                self._loaded = True
        except AuthError as exc:
            exc.server = self.server_name
            audit(
                "auth.flow_failed",
                server=self.server_name,
                issuer=pending.issuer,
                outcome="failure",
                reason=type(exc).__name__,
            )
            self._flow_finished(pending, exc)
            raise
        audit(
            "auth.flow_completed",
            server=self.server_name,
            issuer=pending.issuer,
            outcome="success",
            scope=tokens.scope,
        )
        logger.info("[%s] authorization completed", self.server_name)
        self._flow_finished(pending, None)

    async def wait_authorized(self, timeout: float) -> None:
        """Wait until the pending flow completes (the app's callback calls :meth:`complete`).

        Returns at once when no flow is pending and tokens exist.

        Raises:
            AuthorizationFailed: The flow failed (the cause is the original error), or
                ``timeout`` seconds passed.
        """
        if self._pending is None and await self._load() is not None:
            return
        done = self._done
        try:
            with anyio.fail_after(timeout):
                await done.wait()
        except TimeoutError as exc:
            raise AuthorizationFailed(
                f"no authorization for {self.server_name} within {timeout:g} s",
                server=self.server_name,
            ) from exc
        if self._flow_error is not None:
            raise AuthorizationFailed(
                f"authorization for {self.server_name} failed: {self._flow_error}",
                server=self.server_name,
            ) from self._flow_error

    # ------------------------------------------------------------------ the flow hooks

    async def _require_user(self, start: AuthorizationStart) -> TokenSet | None:
        if self._on_required is not None:
            result = self._on_required(start.authorization_url)
            if result is not None:
                await result
        if self._wait_timeout is None:
            raise AuthorizationRequired(
                f"{self.server_name} needs authorization: open the authorization URL",
                authorization_url=start.authorization_url,
                state=start.state,
                server=self.server_name,
            )
        await self.wait_authorized(self._wait_timeout)
        return self._tokens

    async def _on_unauthorized(
        self, challenge: BearerChallenge | None, request: httpx.Request
    ) -> TokenSet | None:
        start = await self.begin(challenge=challenge)
        return await self._require_user(start)

    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        scope = union_scope(tokens.requested_scope or tokens.scope, challenge.scope)
        start = await self.begin(scope=scope, challenge=challenge)
        return await self._require_user(start)
