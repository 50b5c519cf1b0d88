"""Machine-to-machine grants: client credentials (RFC 6749 §4.4), with secret or signed JWT.

The token endpoint comes from the config, else from discovery on the first 401. Tokens
are requested with ``resource`` (the server's canonical URI unless configured),
``scope`` and ``audience`` when configured. The client authenticates with
``client_secret_basic``, ``client_secret_post`` or ``private_key_jwt`` (RFC 7523 §2.2:
a short-lived JWT signed with the configured key, audience the authorization server's
issuer, or its token endpoint when no issuer is known).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final, Literal, Unpack

import anyio

from funnel_auth._audit import audit
from funnel_auth._challenge import BearerChallenge
from funnel_auth._config import (
    OAuth2ClientCredentials,
    OAuth2EnterpriseManaged,
    OAuth2JwtBearer,
    Secret,
)
from funnel_auth._core import Discovery, OAuthAuth, OAuthOptions
from funnel_auth._errors import AuthConfigError, AuthError, DiscoveryError, InsufficientScope
from funnel_auth._jwt import SigningKey, load_signing_key
from funnel_auth._logic import select_scope, union_scope
from funnel_auth._models import ClientRegistration, TokenSet
from funnel_auth._urls import is_secure_url

__all__ = ["JWT_BEARER_GRANT", "ClientCredentialsAuth", "JwtBearerAuth", "MachineAuth"]

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"

logger = logging.getLogger(__name__)


class MachineAuth(OAuthAuth):
    """What the grants without a person share: a configured client, its key, discovery.

    Subclasses implement :meth:`_grant`.
    """

    def __init__(
        self,
        config: OAuth2ClientCredentials | OAuth2EnterpriseManaged | OAuth2JwtBearer,
        **options: Unpack[OAuthOptions],
    ) -> None:
        super().__init__(**options)
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
        self._client_id = config.client_id
        self._secret = (
            config.client_secret.reveal() if isinstance(config.client_secret, Secret) else None
        )
        self._signing_key = (
            None if isinstance(config, OAuth2JwtBearer) else _signing_key(config, self.server_name)
        )
        self._method: Literal[
            "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
        ]
        if isinstance(config.auth_method, str):
            self._method = config.auth_method
        elif self._signing_key is not None:
            self._method = "private_key_jwt"
        elif isinstance(config, OAuth2JwtBearer) and not self._secret:
            self._method = "none"  # the assertion is the proof (SEP-1933)
        else:
            self._method = "client_secret_basic"
        if self._method == "private_key_jwt" and self._signing_key is None:
            raise AuthConfigError(
                "authMethod private_key_jwt needs privateKey or privateKeyFile",
                server=self.server_name,
            )
        if self._method in ("client_secret_basic", "client_secret_post") and not self._secret:
            raise AuthConfigError(
                f"authMethod {self._method} needs clientSecret", server=self.server_name
            )
        self._resource_configured = isinstance(config.resource, str)

    def _registration(self) -> ClientRegistration:
        return ClientRegistration(
            issuer=self._issuer or self._token_endpoint or "",
            client_id=self._client_id,
            client_secret=self._secret,
            auth_method=self._method,
            kind="pre-registered",
        )

    async def _refresh_registration(self, tokens: TokenSet) -> ClientRegistration:
        return self._registration()

    def _client_assertion(self, registration: ClientRegistration, endpoint: str) -> str | None:
        if self._signing_key is None:
            return None
        return self._signing_key.client_assertion(
            client_id=registration.client_id,
            audience=self._issuer or endpoint,
            now=self._clock(),
        )

    def _apply(self, discovery: Discovery) -> None:
        self._discovery = discovery
        self._issuer = discovery.metadata.issuer if not discovery.defaults else None
        token_endpoint = discovery.metadata.token_endpoint
        if token_endpoint is not None:
            self._token_endpoint = token_endpoint
        if not self._resource_configured:
            self._resource = discovery.resource

    async def _grant(self, scope: str | None) -> TokenSet:
        raise NotImplementedError  # pragma: no cover - every subclass grants its own way

    async def _present_assertion(
        self, assertion: str, scope: str | None, *, limited: bool = True
    ) -> TokenSet:
        """Trade a JWT assertion for tokens (RFC 7523 ``jwt-bearer`` grant)."""
        assert self._token_endpoint is not None  # noqa: S101 -- checked by the caller
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        if self._resource:
            form["resource"] = self._resource
        if scope:
            form["scope"] = scope
        return await self._token_request(
            endpoint=self._token_endpoint,
            registration=self._registration(),
            form=form,
            issuer=self._issuer,
            resource=self._resource,
            requested_scope=scope,
            limited=limited,
        )

    async def _grant_audited(self, scope: str | None, grant_type: str) -> TokenSet:
        if self._token_endpoint is None:
            raise DiscoveryError("no token endpoint known yet", server=self.server_name)
        try:
            tokens = await self._grant(scope)
        except AuthError as exc:
            exc.server = self.server_name
            audit(
                "auth.flow_failed",
                server=self.server_name,
                issuer=self._issuer,
                outcome="failure",
                grant_type=grant_type,
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
            grant_type=grant_type,
        )
        logger.info("[%s] access token acquired (%s)", self.server_name, grant_type)
        return tokens

    _grant_type = "client_credentials"

    async def _renew_without_refresh_token(self, base: TokenSet | None) -> TokenSet | None:
        if self._token_endpoint is None:
            return None
        scope = (base.requested_scope if base else None) or self._scope
        return await self._grant_audited(scope, self._grant_type)

    async def _usable_tokens(self) -> TokenSet | None:
        tokens = await super()._usable_tokens()
        if tokens is None and self._token_endpoint is not None:
            # The endpoint is known: get a token before the first request, saving a 401.
            tokens = await self._renew(None, force=False)
        return tokens

    async def _on_unauthorized(self, challenge: BearerChallenge | None) -> TokenSet | None:
        if self._discovery is None:
            self._apply(await self._discover(challenge, issuer_hint=None))
        elif self._discovery.metadata.token_endpoint is not None:
            self._apply(self._discovery)
        assert self._discovery is not None  # noqa: S101 -- set just above
        scope = select_scope(
            challenged=challenge.scope if challenge else None,
            scopes_supported=self._discovery.prm.scopes_supported if self._discovery.prm else None,
            configured=self._scope,
        )
        async with self._refresh_lock:
            return await self._grant_audited(scope, self._grant_type)

    async def _on_insufficient_scope(
        self, challenge: BearerChallenge, tokens: TokenSet
    ) -> TokenSet | None:
        before = tokens.requested_scope or tokens.scope
        scope = union_scope(before, challenge.scope)
        if scope == before:
            # Asking again for the same scope cannot help: say so instead of looping.
            raise InsufficientScope(
                f"{self.server_url} requires scope {challenge.scope!r}, which the token "
                f"already requested ({before!r}): the client may not be allowed it",
                server=self.server_name,
            )
        async with self._refresh_lock:
            return await self._grant_audited(scope, self._grant_type)


class ClientCredentialsAuth(MachineAuth):
    """OAuth 2 client credentials (RFC 6749 §4.4) for machine-to-machine access.

    See the module documentation for endpoints and client authentication.

    Args:
        config: The ``oauth2-client`` config.
        **options: See :class:`~funnel_auth.OAuthOptions` (``server_name``, ``server_url``…).
    """

    def __init__(self, config: OAuth2ClientCredentials, **options: Unpack[OAuthOptions]) -> None:
        super().__init__(config, **options)
        self._config = config

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(server={self.server_name!r}, client_id={self._client_id!r})"

    async def _grant(self, scope: str | None) -> TokenSet:
        assert self._token_endpoint is not None  # noqa: S101 -- checked by the caller
        form = {"grant_type": "client_credentials", "resource": self._resource}
        if scope:
            form["scope"] = scope
        if isinstance(self._config.audience, str):
            form["audience"] = self._config.audience
        return await self._token_request(
            endpoint=self._token_endpoint,
            registration=self._registration(),
            form=form,
            issuer=self._issuer,
            resource=self._resource,
            requested_scope=scope,
        )


def _signing_key(
    config: OAuth2ClientCredentials | OAuth2EnterpriseManaged, server: str
) -> SigningKey | None:
    pem: str | None = None
    if isinstance(config.private_key, Secret):
        pem = config.private_key.reveal()
    elif isinstance(config.private_key_file, str):
        path = Path(config.private_key_file).expanduser()
        try:
            pem = path.read_text()
        except OSError as exc:
            raise AuthConfigError(
                f"cannot read privateKeyFile {path}: {exc.strerror}", server=server
            ) from None
    if pem is None:
        return None
    try:
        return load_signing_key(
            pem,
            algorithm=config.signing_algorithm
            if isinstance(config.signing_algorithm, str)
            else None,
            key_id=config.key_id if isinstance(config.key_id, str) else None,
        )
    except AuthConfigError as exc:
        exc.server = server
        raise


class JwtBearerAuth(MachineAuth):
    """Workload identity federation (SEP-1933): the platform's JWT as an RFC 7523 grant.

    Errors (``invalid_grant``, ``invalid_scope``, ``unauthorized_client``) are raised as
    they are: never retried with another grant type.

    Args:
        config: The ``oauth2-jwt-bearer`` config.
        **options: See :class:`~funnel_auth.OAuthOptions` (``server_name``, ``server_url``…).
    """

    _grant_type = JWT_BEARER_GRANT

    def __init__(self, config: OAuth2JwtBearer, **options: Unpack[OAuthOptions]) -> None:
        super().__init__(config, **options)
        if not isinstance(config.assertion, Secret) and not isinstance(config.assertion_file, str):
            raise AuthConfigError(
                "oauth2-jwt-bearer needs assertion or assertionFile", server=self.server_name
            )
        self._config = config

    def __repr__(self) -> str:
        return f"JwtBearerAuth(server={self.server_name!r}, client_id={self._client_id!r})"

    async def _assertion(self) -> str:
        config = self._config
        if isinstance(config.assertion_file, str):
            path = await anyio.Path(config.assertion_file).expanduser()
            try:
                return (await path.read_text()).strip()
            except OSError as exc:
                raise AuthConfigError(
                    f"cannot read assertionFile {config.assertion_file}: {exc.strerror}",
                    server=self.server_name,
                ) from None
        assert isinstance(config.assertion, Secret)  # noqa: S101 -- checked in __init__
        return config.assertion.reveal()

    async def _grant(self, scope: str | None) -> TokenSet:
        return await self._present_assertion(await self._assertion(), scope)
