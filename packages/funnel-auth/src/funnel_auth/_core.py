"""The shared shell of the OAuth providers: token storage, refresh, discovery, the auth flow.

Theory of operation. Each OAuth provider's ``async_auth_flow`` is a short loop around the
pure decisions in ``_logic``:

1. take the current :class:`TokenSet` (memory, else the store); refresh it first when
   it is due (proportionally to its lifetime, see :func:`~funnel_auth._logic.refresh_due`;
   single-flight: an in-process lock, then ``store.lock(key)`` and a re-read of the
   stored tokens, since another process may have refreshed already);
2. send the request with ``Authorization: Bearer``;
3. on 401, look at the protected-resource metadata again (a server may have moved to a
   new authorization server), refresh once if a refresh token for the current
   authorization server exists, else obtain new tokens: each grant type its own way
   (:mod:`funnel_auth._client_credentials`, :mod:`funnel_auth._authorization_code`,
   :mod:`funnel_auth._enterprise`);
4. on 403 ``insufficient_scope``, step up with the union of scopes.

The locks are held around a refresh only, never across the resource request. Requests
to the authorization server (metadata, registration, token) go through the provider's
own client (or one passed in), not through the client this auth is attached to.

The flow is written against the parts of a request and a response that ``httpx`` and
``httpx2`` share (``method``, ``url.path``, ``headers``, ``status_code``), so one
generator serves both: :meth:`OAuthAuth.for_httpx2` wraps it for ``httpx2`` clients.
A synchronous ``httpx.Client`` cannot run it: :meth:`OAuthAuth.sync_auth_flow` raises a
clear error instead of sending the request without credentials.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, Required, TypedDict, Unpack

import anyio
import httpx
import msgspec

from funnel_auth._audit import audit
from funnel_auth._challenge import BearerChallenge, parse_www_authenticate
from funnel_auth._config import Secret
from funnel_auth._dpop import (
    DPoPKey,
    NonceCache,
    dpop_available,
    is_nonce_challenge,
    server_wants_dpop,
)
from funnel_auth._errors import (
    AuthConfigError,
    AuthError,
    AuthServerUnavailable,
    DiscoveryError,
    InvalidGrant,
    RateLimited,
    RegistrationError,
    TokenRequestError,
)
from funnel_auth._logic import (
    client_auth,
    parse_as_metadata,
    parse_prm,
    parse_token_response,
    refresh_due,
    token_set_from_response,
)
from funnel_auth._models import (
    ENCODER,
    TOKENSET_DECODER,
    AuthorizationServerMetadata,
    ClientRegistration,
    ProtectedResourceMetadata,
    TokenSet,
)
from funnel_auth._pkce import S256
from funnel_auth._ratelimit import RateLimiter
from funnel_auth._urls import (
    as_metadata_urls,
    canonical_resource,
    fallback_endpoints,
    prm_urls,
    resource_covers,
)
from funnel_tokenstore import MemoryTokenStore, TokenStore

__all__ = ["BearerTokenAuth", "NullAuth", "OAuthAuth", "OAuthOptions", "find_challenge"]

logger = logging.getLogger(__name__)

_SERVER_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KEY_PREFIX: Final = "funnel-auth"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def find_challenge(values: Any) -> BearerChallenge | None:
    """The first ``Bearer`` or ``DPoP`` challenge of ``WWW-Authenticate`` values, or ``None``.

    A DPoP resource server (RFC 9449 §7.1) challenges with the ``DPoP`` scheme and the
    same parameters (``error``, ``scope``, ``resource_metadata``) a Bearer one uses.
    """
    for challenge in parse_www_authenticate(values):
        if challenge.scheme in ("bearer", "dpop"):
            p = challenge.params
            return BearerChallenge(
                error=p.get("error") or None,
                error_description=p.get("error_description") or None,
                scope=p.get("scope") or None,
                resource_metadata=p.get("resource_metadata") or None,
            )
    return None


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
        limiter: Bounds token-grant, registration and authorization attempts per
            server (abuse protection; refreshes are never counted).
        clock: Wall clock, seconds since the epoch.
        timeout: Seconds allowed per authorization-server request.
        refresh_skew: Refresh at most this many seconds before expiry.
        refresh_fraction: ... and at most this fraction of the token's lifetime.
        refresh_jitter: Plus up to this many seconds (capped at half the margin),
            random per provider.
        max_authorizations: Authorizations per challenge cycle before giving up.
    """

    server_name: Required[str]
    server_url: Required[str]
    store: TokenStore | None
    http_client: httpx.AsyncClient | None
    limiter: RateLimiter | None
    clock: Callable[[], float]
    timeout: float
    refresh_skew: float
    refresh_fraction: float
    refresh_jitter: float
    max_authorizations: int


@dataclass(frozen=True)
class Discovery:
    """What discovery found for one server: the resource and its authorization server.

    Attributes:
        resource: The resource the metadata names (or the canonical server URL).
        prm: The protected-resource metadata, when the server has some.
        metadata: The authorization server's metadata (synthesized when ``defaults``).
        defaults: No metadata document was found at all (2025-03-26 default endpoints).
        legacy: Found on the 2025-03-26 fallback path (no protected-resource metadata).
    """

    resource: str
    prm: ProtectedResourceMetadata | None
    metadata: AuthorizationServerMetadata
    defaults: bool = False
    legacy: bool = False


# Methods whose success says nothing about the token: servers let them through
# unauthenticated (the handshake) or answer them without a body.
_UNGUARDED_PREFIXES: Final = ("initialize", "notifications/")


class OAuthAuth(httpx.Auth, abc.ABC):
    """Shared machinery of the OAuth providers: token storage, refresh, discovery.

    Not used directly: see :class:`~funnel_auth.ClientCredentialsAuth`,
    :class:`~funnel_auth.AuthorizationCodeAuth` and
    :class:`~funnel_auth.EnterpriseManagedAuth`.
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
        self._fraction = options.get("refresh_fraction", 0.25)
        # A fixed random offset per provider spreads refreshes of many processes apart.
        self._jitter = refresh_jitter * secrets.randbelow(1001) / 1000
        self._max_authorizations = options.get("max_authorizations", 3)
        self._tokens: TokenSet | None = None
        self._loaded = False
        self._refresh_lock = anyio.Lock()
        self._discovery: Discovery | None = None
        # After a refresh failed for a transient reason, no new attempt before this.
        self._refresh_retry_at = 0.0
        # DPoP (RFC 9449): the key pair (loaded from the store or made once), the newest
        # nonce of each server, and which issuers support it.
        self._dpop_key: DPoPKey | None = None
        self._dpop_key_lock = anyio.Lock()
        self._dpop_nonces = NonceCache()
        self._dpop_issuers: dict[str, bool] = {}
        self._rs_dpop = False

    # ------------------------------------------------------------------ store keys

    def _tokens_key(self, issuer: str) -> str:
        return f"{_KEY_PREFIX}:tokens:{self.server_name}:{_digest(issuer)}"

    @property
    def _active_key(self) -> str:
        return f"{_KEY_PREFIX}:active:{self.server_name}"

    @property
    def _dpop_store_key(self) -> str:
        return f"{_KEY_PREFIX}:dpop:{self.server_name}"

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

    async def _forget_registration(self, issuer: str | None, reason: str) -> None:
        """Drop a stored client registration the authorization server no longer knows."""
        if issuer is None:
            return
        await self._store.delete(self._registration_key(issuer))
        self._discovery = None
        audit(
            "auth.client_registered",
            server=self.server_name,
            issuer=issuer,
            outcome="failure",
            reason=reason,
        )
        logger.warning("[%s] %s: registering again", self.server_name, reason)

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

    def _client_assertion(self, registration: ClientRegistration, endpoint: str) -> str | None:
        """The signed client assertion for ``private_key_jwt`` clients (else ``None``)."""
        return None

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
        limited: bool = True,
        dpop: bool | None = None,
    ) -> TokenSet:
        """POST a token request and build the :class:`TokenSet` of its answer.

        ``limited`` requests count against the abuse limiter (new grants); refreshes
        do not, since their rate follows from token lifetimes, not from anyone's loop.

        ``dpop``: send a DPoP proof (RFC 9449 §5); default: when the authorization
        server's metadata lists ``ES256`` in ``dpop_signing_alg_values_supported``. A
        ``use_dpop_nonce`` answer with a ``DPoP-Nonce`` is retried once with the nonce.
        """
        if limited:
            self._limit("token", issuer)
        if dpop is None:
            dpop = await self._wants_dpop(issuer)
        key = await self._dpop() if dpop else None
        for attempt in (1, 2):
            attempt_form = dict(form)
            assertion = (
                self._client_assertion(registration, endpoint)
                if registration.auth_method == "private_key_jwt"
                else None
            )
            headers = {
                "Accept": "application/json",
                **client_auth(registration, attempt_form, assertion=assertion),
            }
            if key is not None:
                headers["DPoP"] = key.proof(
                    "POST", endpoint, now=self._clock(), nonce=self._dpop_nonces.get(endpoint)
                )
            request = httpx.Request("POST", endpoint, data=attempt_form, headers=headers)
            response = await self._send(request)
            now = self._clock()
            if key is not None:
                self._dpop_nonces.update(endpoint, response.headers)
            try:
                parsed = parse_token_response(
                    response.status_code, response.headers, response.content, now=now
                )
            except TokenRequestError as exc:
                if (
                    key is not None
                    and attempt == 1
                    and exc.error == "use_dpop_nonce"
                    and self._dpop_nonces.get(endpoint) is not None
                ):
                    logger.info(
                        "[%s] token endpoint wants a DPoP nonce: retrying", self.server_name
                    )
                    continue
                exc.server = self.server_name
                raise
            except AuthError as exc:
                exc.server = self.server_name
                raise
            break
        if key is None and parsed.token_type.lower() == "dpop":
            raise TokenRequestError(
                "the token endpoint issued a DPoP token to a request without a DPoP proof",
                server=self.server_name,
            )
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

    # ------------------------------------------------------------------ DPoP

    async def _dpop(self) -> DPoPKey:
        """This server's DPoP key pair: from memory, else the store, else a new one (stored).

        Kept in the store so that a restart (or another process) signs with the key the
        tokens are bound to; an unreadable stored key is replaced (its tokens then fail
        and are renewed).
        """
        async with self._dpop_key_lock:
            if self._dpop_key is not None:
                return self._dpop_key
            async with self._store.lock(self._dpop_store_key):
                raw = await self._store.get(self._dpop_store_key)
                key: DPoPKey | None = None
                if raw is not None:
                    try:
                        key = DPoPKey.from_bytes(raw)
                    except ValueError as exc:
                        logger.warning(
                            "[%s] stored DPoP key is unusable (%s); making a new one",
                            self.server_name,
                            exc,
                        )
                if key is None:
                    key = DPoPKey.generate()
                    await self._store.set(self._dpop_store_key, key.to_bytes())
                    logger.info("[%s] new DPoP key %s", self.server_name, key.thumbprint)
            self._dpop_key = key
            return key

    def _note_challenges(self, www_authenticate: list[str]) -> BearerChallenge | None:
        """The challenge to act on; a ``DPoP`` one says the server takes DPoP tokens."""
        if any(c.scheme == "dpop" for c in parse_www_authenticate(www_authenticate)):
            self._rs_dpop = True
        return find_challenge(www_authenticate)

    async def _wants_dpop(self, issuer: str | None) -> bool:
        """Whether to ask ``issuer`` for DPoP-bound tokens (RFC 9449).

        Both sides must take them: the resource server (it challenged with the ``DPoP``
        scheme, its metadata lists ``ES256`` in ``dpop_signing_alg_values_supported``,
        or this server's DPoP key is stored already, from a process that saw one of
        these) and the authorization server (its metadata lists ``ES256``). An
        authorization server that supports DPoP in front of a resource server that
        knows only Bearer gets Bearer requests.
        """
        if issuer is None:
            return False
        prm = self._discovery.prm if self._discovery is not None else None
        resource_side = (
            self._rs_dpop
            or (
                prm is not None
                and (
                    prm.dpop_bound_access_tokens_required
                    or server_wants_dpop(prm.dpop_signing_alg_values_supported)
                )
            )
            or await self._store.get(self._dpop_store_key) is not None
        )
        if not resource_side:
            return False
        known = self._dpop_issuers.get(issuer)
        if known is not None:
            return known
        metadata: AuthorizationServerMetadata | None = None
        if self._discovery is not None and self._discovery.metadata.issuer == issuer:
            metadata = self._discovery.metadata
        else:
            try:
                metadata = await self._as_metadata(issuer)
            except AuthError:
                return False
        wanted = metadata is not None and server_wants_dpop(
            metadata.dpop_signing_alg_values_supported
        )
        if wanted and not dpop_available():
            logger.warning(
                "[%s] both servers take DPoP, but signing proofs needs "
                "pip install 'funnel-auth[jwt]': using Bearer",
                self.server_name,
            )
            wanted = False
        elif metadata is not None and not wanted:
            logger.warning(
                "[%s] the resource server takes DPoP but %s does not with ES256 (%s): using Bearer",
                self.server_name,
                issuer,
                ", ".join((metadata.dpop_signing_alg_values_supported or ["no DPoP"])[:8]),
            )
        self._dpop_issuers[issuer] = wanted
        return wanted

    async def _present(self, request: Any, tokens: TokenSet) -> None:
        """Put ``tokens`` on a resource request: Bearer, or DPoP with a fresh proof (``ath``)."""
        if tokens.dpop_bound:
            key = await self._dpop()
            url = str(request.url)
            request.headers["Authorization"] = f"DPoP {tokens.access_token}"
            request.headers["DPoP"] = key.proof(
                str(request.method),
                url,
                now=self._clock(),
                access_token=tokens.access_token,
                nonce=self._dpop_nonces.get(url),
            )
        else:
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
            if "DPoP" in request.headers:
                del request.headers["DPoP"]

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
    ) -> Discovery:
        """Protected-resource metadata, then authorization-server metadata (MCP spec order)."""
        try:
            return await self._discover_inner(challenge, issuer_hint=issuer_hint)
        except AuthError as exc:
            exc.server = self.server_name
            raise

    async def _discover_inner(
        self, challenge: BearerChallenge | None, *, issuer_hint: str | None
    ) -> Discovery:
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
            return Discovery(resource=prm.resource, prm=prm, metadata=metadata)
        # Back-compat (2025-03-26): no protected-resource metadata; the server's origin
        # is the authorization server, with metadata or with default endpoints.
        defaults = fallback_endpoints(self.server_url)
        metadata = await self._as_metadata(defaults["issuer"], strict_issuer=False)
        if metadata is not None:
            if metadata.issuer != defaults["issuer"]:
                # The reference SDKs accept this on the legacy path; RFC 8414 would not.
                logger.warning(
                    "[%s] 2025-03-26 fallback: metadata at %s names issuer %s; using it",
                    self.server_name,
                    defaults["issuer"],
                    metadata.issuer,
                )
            return Discovery(resource=self._canonical, prm=None, metadata=metadata, legacy=True)
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
        return Discovery(
            resource=self._canonical, prm=None, metadata=synthesized, defaults=True, legacy=True
        )

    async def _as_metadata(
        self, issuer: str, *, strict_issuer: bool = True
    ) -> AuthorizationServerMetadata | None:
        rejected: DiscoveryError | None = None
        for url in as_metadata_urls(issuer):
            response = await self._get_json(url)
            if response is None:
                continue
            try:
                return parse_as_metadata(
                    response.content, issuer=issuer, strict_issuer=strict_issuer
                )
            except DiscoveryError as exc:
                # MUST NOT use it; another well-known location may still be valid.
                rejected = exc
        if rejected is not None:
            raise rejected
        return None

    async def _moved(self, challenge: BearerChallenge | None, tokens: TokenSet) -> bool:
        """Whether the server now names another authorization server than ``tokens``'.

        Fetches the protected-resource metadata again (a 401 is the moment a server
        that migrated says so). Unreachable or broken metadata is not a move.
        """
        if tokens.issuer is None:
            return False
        try:
            discovery = await self._discover(challenge, issuer_hint=None)
        except AuthError:
            return False
        self._discovery = discovery
        if discovery.prm is None:
            return False
        if tokens.issuer in discovery.prm.authorization_servers:
            return False
        logger.info(
            "[%s] the server now names %s as its authorization server (was %s)",
            self.server_name,
            discovery.metadata.issuer,
            tokens.issuer,
        )
        return True

    # ------------------------------------------------------------------ refresh

    def _due(self, tokens: TokenSet) -> bool:
        return refresh_due(
            tokens,
            now=self._clock(),
            skew=self._skew,
            jitter=self._jitter,
            fraction=self._fraction,
        )

    def _expired(self, tokens: TokenSet) -> bool:
        return tokens.expires_at is not None and tokens.expires_at <= self._clock()

    async def _renew_without_refresh_token(self, base: TokenSet | None) -> TokenSet | None:
        """New tokens without a refresh token (client credentials), or ``None`` (need a user)."""
        return None

    async def _refresh_registration(self, tokens: TokenSet) -> ClientRegistration:
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
            if not force and self._clock() < self._refresh_retry_at and not self._expired(base):
                # A refresh failed moments ago: use the token while it lasts.
                return base
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
            # Shielded: once the server has rotated the refresh token, the new one must
            # reach the store even if the caller is cancelled (a restart, a timeout
            # around the request): losing it would force a new login. Both steps are
            # bounded (the request by the provider's timeout).
            with anyio.CancelScope(shield=True):
                new = await self._token_request(
                    endpoint=base.token_endpoint,
                    registration=registration,
                    form=form,
                    issuer=base.issuer,
                    resource=base.resource,
                    requested_scope=base.requested_scope,
                    previous_refresh_token=base.refresh_token,
                    limited=False,
                    # A DPoP-bound refresh token needs a proof with the same key.
                    dpop=True if base.dpop_bound else None,
                )
                # Persist first: a rotated refresh token must survive a crash right after use.
                await self._write_tokens(new)
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
        except AuthServerUnavailable as exc:
            # Keep the tokens: the server is busy or down, not saying they are bad.
            audit(
                "auth.refresh_failed",
                server=self.server_name,
                issuer=base.issuer,
                outcome="failure",
                reason=type(exc).__name__,
            )
            self._refresh_retry_at = self._clock() + min(max(exc.retry_after or 1.0, 1.0), 60.0)
            if not force and not self._expired(base):
                logger.warning(
                    "[%s] refresh failed (%s); using the current token until it expires",
                    self.server_name,
                    exc,
                )
                self._tokens = base
                return base
            raise
        except TokenRequestError as exc:
            audit(
                "auth.refresh_failed",
                server=self.server_name,
                issuer=base.issuer,
                outcome="failure",
                reason=exc.error or type(exc).__name__,
            )
            if exc.error in ("invalid_client", "unauthorized_client"):
                # The authorization server forgot this client (or moved): register again
                # on the next authorization; the tokens stay until new ones exist.
                await self._forget_registration(base.issuer, f"refresh refused: {exc.error}")
                return None
            raise
        self._tokens = new
        self._refresh_retry_at = 0.0
        audit(
            "auth.token_refreshed",
            server=self.server_name,
            issuer=new.issuer,
            outcome="success",
            grant_type="refresh_token",
        )
        logger.info("[%s] access token refreshed", self.server_name)
        return new

    async def _usable_tokens(self) -> TokenSet | None:
        tokens = await self._load()
        if tokens is not None and self._due(tokens):
            tokens = await self._renew(tokens, force=False)
        return tokens

    # ------------------------------------------------------------------ the flow

    @staticmethod
    def _operation(request: Any) -> str:
        parts = [
            str(request.method),
            str(request.url.path),
            request.headers.get("mcp-method", ""),
            request.headers.get("mcp-name", ""),
        ]
        return " ".join(parts)

    def _authorized_success(self, request: Any, response: Any) -> None:
        """A request carrying our token succeeded: the server accepts what we hold."""
        method = request.headers.get("mcp-method", "")
        if response.status_code < 400 and not method.startswith(_UNGUARDED_PREFIXES):
            self._end_challenge_cycle()

    def _end_challenge_cycle(self) -> None:
        """Hook: the authorizations of the current challenge cycle worked."""

    @abc.abstractmethod
    async def _on_unauthorized(self, challenge: BearerChallenge | None) -> TokenSet | None:
        """Get tokens after a 401 (each grant type its own way), or ``None`` to give up."""

    @abc.abstractmethod
    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        """Step up after a 403 ``insufficient_scope``, or ``None`` to give up."""

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Refuse a synchronous client: OAuth here needs ``httpx.AsyncClient``.

        Raises:
            AuthConfigError: Always (the request is never sent without credentials).
        """
        raise AuthConfigError(
            f"{type(self).__name__} works with httpx.AsyncClient only, not httpx.Client: "
            "its token requests, refreshes and store are asynchronous",
            server=self.server_name,
        )

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        """Authorize ``request``: attach a token, renew it on 401, step up on 403.

        Works on ``httpx`` and ``httpx2`` requests alike (see the module docstring).
        """
        tokens = await self._usable_tokens()
        if tokens is not None:
            await self._present(request, tokens)
        response = yield request
        renewed = obtained = nonce_retried = False
        while True:
            www_authenticate = list(response.headers.get_list("www-authenticate"))
            if tokens is not None and tokens.dpop_bound:
                fresh_nonce = self._dpop_nonces.update(str(request.url), response.headers)
                if (
                    response.status_code == 401
                    and not nonce_retried
                    and (fresh_nonce or self._dpop_nonces.get(str(request.url)) is not None)
                    and is_nonce_challenge(www_authenticate)
                ):
                    # RFC 9449 §9: the server wants its nonce in the proof; once.
                    nonce_retried = True
                    await self._present(request, tokens)
                    response = yield request
                    continue
            challenge = self._note_challenges(www_authenticate)
            if response.status_code == 401:
                new: TokenSet | None = None
                if tokens is not None and not renewed:
                    renewed = True
                    if not await self._moved(challenge, tokens):
                        new = await self._renew(tokens, force=True)
                if new is None or new is tokens:
                    if obtained:
                        return
                    obtained = True
                    new = await self._on_unauthorized(challenge)
                if new is None:
                    return
            elif (
                response.status_code == 403
                and challenge is not None
                and challenge.error == "insufficient_scope"
                and tokens is not None
            ):
                new = await self._on_insufficient_scope(challenge, tokens)
                if new is None:
                    return
            else:
                if tokens is not None:
                    self._authorized_success(request, response)
                return
            tokens = new
            await self._present(request, tokens)
            response = yield request

    def for_httpx2(self) -> Any:
        """This provider as an ``httpx2.Auth``, for ``httpx2`` clients (the MCP SDK 2.x).

        Both wrap the same provider: tokens, pending flows and refreshes are shared.

        Raises:
            AuthConfigError: ``httpx2`` is not installed (``pip install 'funnel-auth[httpx2]'``).
        """
        from funnel_auth._httpx2 import httpx2_auth

        return httpx2_auth(self)
