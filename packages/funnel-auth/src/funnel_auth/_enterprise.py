"""Enterprise-managed authorization (SEP-990): ID token → ID-JAG → access token.

Theory of operation. The enterprise identity provider (IdP) already knows the user (the
application signed them in and holds their ID token). For each MCP server:

1. discovery finds the MCP server's authorization server (its ``issuer`` is the
   audience of the grant, its token endpoint where the grant goes);
2. RFC 8693 token exchange at the IdP's token endpoint: ``subject_token`` = the ID
   token, ``requested_token_type`` = ``…:id-jag``, ``audience`` = the issuer,
   ``resource`` = the MCP server; the answer's ``access_token`` is the Identity
   Assertion JWT Authorization Grant (ID-JAG), not an access token;
3. RFC 7523 ``jwt-bearer`` grant at the authorization server with the ID-JAG as
   ``assertion``, the client authenticating as configured: the access token.

No person is involved and no refresh token is expected: a new access token is a new
exchange (the ID token's own lifetime bounds how long that works).
"""

from __future__ import annotations

from typing import Final, Unpack

import httpx
import msgspec

from funnel_auth._client_credentials import JWT_BEARER_GRANT as JWT_BEARER
from funnel_auth._client_credentials import MachineAuth
from funnel_auth._config import OAuth2EnterpriseManaged, Secret
from funnel_auth._core import OAuthOptions
from funnel_auth._errors import AuthConfigError, AuthError, AuthServerUnavailable, TokenRequestError
from funnel_auth._logic import parse_retry_after
from funnel_auth._models import TokenSet
from funnel_auth._urls import is_secure_url

__all__ = ["EnterpriseManagedAuth"]

# Grant and token type URNs (RFC 8693, RFC 7523, SEP-990), not secrets.
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ID_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105
ID_JAG_TYPE: Final = "urn:ietf:params:oauth:token-type:id-jag"


class _ExchangeResponse(msgspec.Struct, frozen=True):
    access_token: str
    issued_token_type: str | None = None


_EXCHANGE_DECODER: Final = msgspec.json.Decoder(_ExchangeResponse)


class EnterpriseManagedAuth(MachineAuth):
    """SEP-990 enterprise-managed authorization (see the module documentation).

    Args:
        config: The ``oauth2-enterprise`` config.
        **options: See :class:`~funnel_auth.OAuthOptions` (``server_name``, ``server_url``…).
    """

    _grant_type = JWT_BEARER

    def __init__(self, config: OAuth2EnterpriseManaged, **options: Unpack[OAuthOptions]) -> None:
        super().__init__(config, **options)
        if not is_secure_url(config.idp_token_endpoint):
            raise AuthConfigError(
                f"idpTokenEndpoint {config.idp_token_endpoint!r} is neither HTTPS nor loopback",
                server=self.server_name,
            )
        self._config = config

    def __repr__(self) -> str:
        return f"EnterpriseManagedAuth(server={self.server_name!r}, client_id={self._client_id!r})"

    async def _id_jag(self, scope: str | None) -> str:
        """RFC 8693 token exchange at the IdP: the ID token for an ID-JAG."""
        config = self._config
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "requested_token_type": ID_JAG_TYPE,
            "subject_token": config.id_token.reveal(),
            "subject_token_type": ID_TOKEN_TYPE,
            "audience": self._issuer or self._token_endpoint or "",
            "resource": self._resource,
            "client_id": config.idp_client_id,
        }
        if scope:
            form["scope"] = scope
        if isinstance(config.idp_client_secret, Secret):
            form["client_secret"] = config.idp_client_secret.reveal()
        self._limit("token", self._issuer)
        response = await self._send(
            httpx.Request(
                "POST",
                config.idp_token_endpoint,
                data=form,
                headers={"Accept": "application/json"},
            )
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise AuthServerUnavailable(
                f"the identity provider answered HTTP {response.status_code}",
                retry_after=parse_retry_after(
                    response.headers.get("retry-after"), now=self._clock()
                ),
                server=self.server_name,
            )
        if response.status_code != 200:
            error = _error_code(response.content)
            raise TokenRequestError(
                f"the identity provider refused the token exchange (HTTP {response.status_code}): "
                f"{error or 'no OAuth error'}",
                error=error,
                status_code=response.status_code,
                server=self.server_name,
            )
        try:
            answer = _EXCHANGE_DECODER.decode(response.content)
        except msgspec.DecodeError as exc:
            raise TokenRequestError(
                f"malformed token exchange response: {exc}", server=self.server_name
            ) from exc
        if answer.issued_token_type not in (None, ID_JAG_TYPE) or not answer.access_token:
            raise TokenRequestError(
                f"the identity provider issued {answer.issued_token_type!r}, not an ID-JAG",
                server=self.server_name,
            )
        return answer.access_token

    async def _grant(self, scope: str | None) -> TokenSet:
        assert self._token_endpoint is not None  # noqa: S101 -- checked by the caller
        try:
            assertion = await self._id_jag(scope)
        except AuthError as exc:
            exc.server = self.server_name
            raise
        # The exchange above was counted once; this is the same grant.
        return await self._present_assertion(assertion, scope, limited=False)


def _error_code(content: bytes) -> str | None:
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error[:64] if isinstance(error, str) else None
