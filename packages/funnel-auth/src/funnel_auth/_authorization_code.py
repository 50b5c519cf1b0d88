"""OAuth 2 authorization code with PKCE S256, following the MCP authorization spec.

Theory of operation: one authorization state per server. The provider remembers what
the server last demanded: the scope of its latest challenge (a 401's ``scope``, else
the protected-resource metadata's ``scopes_supported``) and, after a 403
``insufficient_scope``, the union of what was asked before and what the challenge adds.
Whoever starts a login (the 401 of a request, a 403 step-up, the dashboard's Authorize
link or a CLI, all through :meth:`AuthorizationCodeAuth.begin`) joins the one pending
flow for that scope, or starts it: never a flow that forgets the challenged scopes.

A *challenge cycle* runs from a challenge to the first request that the server accepts
with the new tokens (anything but the handshake, which servers let through). At most
``max_authorizations`` (3) authorizations complete per cycle: a server that keeps
refusing gets :class:`~funnel_auth.InsufficientScope` instead of an endless login loop.
A cycle also ends ten minutes after its last authorization, so a person is never locked
out for good.

Metadata is fetched again whenever a 401 leads to a new authorization (a server may now
name another authorization server), and a stored registration the authorization
server no longer knows (``invalid_client``) is dropped and the client registers again;
tokens already stored stay until new ones exist.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Unpack

import anyio
import httpx
import msgspec

from funnel_auth._audit import audit
from funnel_auth._challenge import BearerChallenge
from funnel_auth._config import OAuth2AuthorizationCode, Secret
from funnel_auth._core import Discovery, OAuthAuth, OAuthOptions
from funnel_auth._errors import (
    AuthConfigError,
    AuthError,
    AuthorizationFailed,
    AuthorizationRequired,
    AuthServerUnavailable,
    DiscoveryError,
    InsufficientScope,
    RegistrationError,
    TokenRequestError,
)
from funnel_auth._flows import (
    AuthorizationFlows,
    AuthorizationStart,
    FlowRegistry,
    PendingAuthorization,
)
from funnel_auth._logic import (
    check_callback,
    check_pkce_support,
    parse_registration,
    select_scope,
    union_scope,
)
from funnel_auth._models import (
    ENCODER,
    REGISTRATION_DECODER,
    AuthorizationServerMetadata,
    ClientRegistration,
    TokenSet,
)
from funnel_auth._pkce import S256, code_challenge, new_state, new_verifier
from funnel_auth._urls import build_url, is_loopback_url, is_secure_url

__all__ = ["AuthorizationCodeAuth"]

logger = logging.getLogger(__name__)

_KEY_PREFIX: Final = "funnel-auth"
# A challenge cycle ends this long after its last authorization (seconds, flow clock).
_CYCLE_TTL: Final = 600.0


class AuthorizationCodeAuth(OAuthAuth):
    """OAuth 2 authorization code with PKCE S256, following the MCP authorization spec.

    When a person must authorize, requests raise :class:`AuthorizationRequired` carrying
    the URL (or, with ``wait_timeout``, wait for the callback). The app serves the
    redirect URI and hands the callback to :meth:`complete` (or
    :meth:`AuthorizationFlows.complete`). The library never opens a browser.

    Args:
        config: The ``oauth2-code`` config.
        redirect_uri: The application's redirect URI (where it serves the callback),
            unless the config sets one; one of the two is required.
        flows: The registry of pending flows, shared with the callback handler (and,
            for an application running several processes, with them: see
            :class:`~funnel_auth.FlowRegistry`).
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
        redirect_uri: str | None = None,
        flows: FlowRegistry | None = None,
        client_name: str = "funnel",
        wait_timeout: float | None = None,
        on_authorization_required: Callable[[str], Awaitable[None] | None] | None = None,
        **options: Unpack[OAuthOptions],
    ) -> None:
        super().__init__(**options)
        self._config = config
        chosen = config.redirect_uri if isinstance(config.redirect_uri, str) else redirect_uri
        if chosen is None:
            raise AuthConfigError(
                "no redirect URI: set redirectUri in the auth config, or pass the "
                "application's callback URL as redirect_uri",
                server=self.server_name,
            )
        self.redirect_uri = chosen
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
        self.flows: FlowRegistry = flows if flows is not None else AuthorizationFlows()
        self.flows.attach(self)
        self._client_name = client_name
        self._wait_timeout = wait_timeout
        self._on_required = on_authorization_required
        self._pending: PendingAuthorization | None = None
        self._discovered_from: str | None = None
        self._done = anyio.Event()
        self._flow_error: AuthError | None = None
        # The one authorization state of this server (see the module docstring).
        self._challenge: BearerChallenge | None = None
        self._required_scope: str | None = None
        self._cycle_completed = 0
        self._cycle_last = 0.0

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

    async def _ensure_discovery(
        self, challenge: BearerChallenge | None, *, fresh: bool = False
    ) -> Discovery:
        pointer = challenge.resource_metadata if challenge is not None else None
        # Discover again when asked (a 401 on the way to a new authorization: the server
        # may have moved), or when the server points at different metadata.
        if (
            fresh
            or self._discovery is None
            or (pointer is not None and pointer != self._discovered_from)
        ):
            hint = self._config.issuer if isinstance(self._config.issuer, str) else None
            self._discovery = await self._discover(challenge, issuer_hint=hint)
            self._discovered_from = pointer
        discovery = self._discovery
        if not discovery.defaults:
            try:
                check_pkce_support(discovery.metadata)
            except DiscoveryError as exc:
                exc.server = self.server_name
                raise
        return discovery

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
            return self._note_challenges(list(response.headers.get_list("www-authenticate")))
        return None

    async def begin(
        self, *, scope: str | None = None, challenge: BearerChallenge | None = None
    ) -> AuthorizationStart:
        """Join (or start) this server's authorization flow; return the URL to open.

        Without arguments (the dashboard, a CLI) the flow asks for what the server last
        demanded: the challenged scope, or the step-up union. A pending, unexpired flow
        for the same scope is joined, never replaced. Otherwise: discovers the server,
        registers a client when needed, and records the flow's ``state``, PKCE verifier
        and issuer before returning.

        Args:
            scope: Scope to request; default: what the server demanded, else the scope
                selection strategy.
            challenge: The server's challenge, when the caller has one.

        Returns:
            The authorization URL, the flow's ``state``, and its expiry.

        Raises:
            InsufficientScope: This challenge cycle already had its authorizations
                (``max_authorizations``) and the server still refuses.
            DiscoveryError: The server's metadata is missing or unusable.
            RegistrationError: No client id could be obtained.
            RateLimited: Too many flows started recently.
            AuthServerUnavailable: A metadata or registration endpoint is unreachable.
        """
        if challenge is not None:
            self._challenge = challenge
        challenge = challenge or self._challenge
        if challenge is None and self._discovery is None:
            challenge = await self._probe_challenge()
            self._challenge = challenge
        try:
            self._check_cycle()
            discovery = await self._ensure_discovery(challenge)
            metadata = discovery.metadata
            if scope is None:
                scope = self._required_scope or select_scope(
                    challenged=challenge.scope if challenge else None,
                    scopes_supported=discovery.prm.scopes_supported if discovery.prm else None,
                    configured=self._config.scope if isinstance(self._config.scope, str) else None,
                )
            self._required_scope = scope
            # One flow per server and scope set, whichever process or task asks: the
            # registry's lock makes joining or starting it (and registering a client for
            # it) one step, here and in every process sharing the registry.
            async with self.flows.lock(self.server_name):
                pending = await self._joinable(scope, metadata.issuer)
                if pending is not None:
                    return AuthorizationStart(
                        pending.authorization_url, pending.state, pending.expires_at
                    )
                self._limit("authorization", metadata.issuer)
                registration = await self._registration(metadata)
                return await self._start_flow(discovery, registration, scope)
        except AuthError as exc:
            exc.server = self.server_name
            audit(
                "auth.flow_failed",
                server=self.server_name,
                issuer=None,
                outcome="failure",
                reason=type(exc).__name__,
            )
            raise

    async def _joinable(self, scope: str | None, issuer: str) -> PendingAuthorization | None:
        """The pending flow for ``scope`` at ``issuer`` to join, if any.

        This provider's own, else one another process sharing the registry started.
        """
        pending = self._pending
        if pending is None or pending.scope != scope or pending.expires_at <= self.flows.now():
            pending = await self.flows.find(self.server_name, scope)
        if pending is None or pending.issuer not in (issuer, None):
            return None
        if self._pending is None or self._pending.state != pending.state:
            self._pending = pending
            if self._done.is_set():
                self._done = anyio.Event()
            self._flow_error = None
        return pending

    def _check_cycle(self) -> None:
        if self._cycle_completed and self.flows.now() - self._cycle_last > _CYCLE_TTL:
            self._end_challenge_cycle()
        if self._cycle_completed >= self._max_authorizations:
            wanted = f" scope {self._required_scope!r}" if self._required_scope else ""
            raise InsufficientScope(
                f"{self.server_url} still refuses after {self._cycle_completed} authorizations"
                f"{wanted}: giving up (the server may need another configuration)",
                server=self.server_name,
            )

    def _end_challenge_cycle(self) -> None:
        self._cycle_completed = 0

    async def _start_flow(
        self, discovery: Discovery, registration: ClientRegistration, scope: str | None
    ) -> AuthorizationStart:
        metadata = discovery.metadata
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
            await self.flows.discard(self._pending.state)
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
        await self.flows.add(pending)
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
        # By state, not identity: a shared registry hands back a copy of the flow.
        if self._pending is not None and self._pending.state == pending.state:
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
            if (
                isinstance(exc, TokenRequestError)
                and exc.error in ("invalid_client", "unauthorized_client")
                and pending.registration.kind == "dynamic"
            ):
                # The server forgot this client: the next login registers again.
                await self._forget_registration(
                    pending.registration.issuer, f"token endpoint refused the client: {exc.error}"
                )
            raise
        self._cycle_completed += 1
        self._cycle_last = self.flows.now()
        audit(
            "auth.flow_completed",
            server=self.server_name,
            issuer=pending.issuer,
            outcome="success",
            scope=tokens.scope,
        )
        logger.info("[%s] authorization completed", self.server_name)
        self._flow_finished(pending, None)

    def authorized_elsewhere(self) -> None:
        """Another process sharing the token store and flows completed this server's login.

        The local copy of the pending flow is dropped (waiters wake up) and the tokens
        are read from the store again on the next request.
        """
        self._pending = None
        self._flow_error = None
        self._tokens = None
        self._loaded = False
        self._done.set()

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
                f"{self.server_name} needs a person to authorize access (open the authorization URL)",
                authorization_url=start.authorization_url,
                state=start.state,
                server=self.server_name,
            )
        await self.wait_authorized(self._wait_timeout)
        return self._tokens

    async def _on_unauthorized(self, challenge: BearerChallenge | None) -> TokenSet | None:
        self._challenge = challenge
        # A new authorization: look again at where the server sends us (it may have
        # moved to another authorization server since the tokens were issued), unless
        # a flow is already waiting for a person and nothing was rejected.
        fresh = self._pending is None or await self._load() is not None
        discovery = await self._ensure_discovery(challenge, fresh=fresh)
        scope = select_scope(
            challenged=challenge.scope if challenge else None,
            scopes_supported=discovery.prm.scopes_supported if discovery.prm else None,
            configured=self._config.scope if isinstance(self._config.scope, str) else None,
        )
        self._required_scope = scope
        start = await self.begin(scope=scope, challenge=challenge)
        return await self._require_user(start)

    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        # MCP 2026-07-28: the union of what was asked before and what the challenge adds.
        scope = union_scope(
            tokens.requested_scope or tokens.scope, self._required_scope, challenge.scope
        )
        self._required_scope = scope
        start = await self.begin(scope=scope, challenge=challenge)
        return await self._require_user(start)
