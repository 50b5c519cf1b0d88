"""Wire and storage models (msgspec): metadata documents, token responses, token sets.

Metadata documents are decoded leniently (unknown fields ignored, as RFC 8414 and
RFC 9728 require of clients). What funnel-auth stores, :class:`TokenSet` and
:class:`ClientRegistration`, is encoded with module-level encoders; their ``repr``
never shows a credential.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "AuthorizationServerMetadata",
    "ClientRegistration",
    "ProtectedResourceMetadata",
    "TokenResponse",
    "TokenSet",
]


class ProtectedResourceMetadata(msgspec.Struct, frozen=True):
    """RFC 9728 protected-resource metadata (the fields the client uses)."""

    resource: str
    authorization_servers: list[str] = msgspec.field(default_factory=list)
    scopes_supported: list[str] | None = None
    bearer_methods_supported: list[str] | None = None
    resource_name: str | None = None
    dpop_signing_alg_values_supported: list[str] | None = None
    dpop_bound_access_tokens_required: bool = False


class AuthorizationServerMetadata(msgspec.Struct, frozen=True):
    """RFC 8414 / OIDC Discovery metadata (the fields the client uses)."""

    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    registration_endpoint: str | None = None
    scopes_supported: list[str] | None = None
    response_types_supported: list[str] | None = None
    grant_types_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    code_challenge_methods_supported: list[str] | None = None
    authorization_response_iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False
    revocation_endpoint: str | None = None
    dpop_signing_alg_values_supported: list[str] | None = None


class TokenResponse(msgspec.Struct, frozen=True):
    """A successful token endpoint response (RFC 6749 §5.1)."""

    access_token: str
    token_type: str
    expires_in: float | None = None
    refresh_token: str | None = None
    scope: str | None = None

    def __repr__(self) -> str:
        return f"TokenResponse(token_type={self.token_type!r}, expires_in={self.expires_in!r}, scope={self.scope!r})"


class TokenSet(msgspec.Struct, kw_only=True, frozen=True):
    """Tokens for one server from one authorization server, as stored.

    Attributes:
        access_token: The bearer access token.
        refresh_token: The refresh token, if the server issued one.
        expires_at: Absolute expiry in seconds since the epoch, if known.
        issued_at: When the token response arrived (the lifetime is
            ``expires_at - issued_at``; refreshes are timed proportionally to it).
        scope: The granted scope (as the server said, else as requested).
        issuer: The authorization server's issuer, or ``None`` for a server without
            metadata (then ``token_endpoint`` identifies it).
        token_endpoint: Where refresh requests go.
        resource: The ``resource`` the tokens were requested for.
        client_id: The client id the tokens were issued to (refresh needs it).
        requested_scope: The scope last asked for (refresh and step-up re-send it).
        token_type: ``Bearer``, or ``DPoP`` for a token bound to this client's DPoP key
            (RFC 9449: presented with ``Authorization: DPoP`` and a proof).
    """

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    scope: str | None = None
    issuer: str | None = None
    token_endpoint: str
    resource: str | None = None
    client_id: str
    requested_scope: str | None = None
    token_type: Literal["Bearer", "DPoP"] = "Bearer"  # noqa: S105 -- a scheme, not a secret

    @property
    def dpop_bound(self) -> bool:
        """Whether the token is DPoP-bound (presented with a proof of this client's key)."""
        return self.token_type == "DPoP"  # noqa: S105 -- a scheme, not a secret

    def __repr__(self) -> str:
        return (
            f"TokenSet(token_type={self.token_type!r}, issuer={self.issuer!r}, scope={self.scope!r}, expires_at={self.expires_at!r}, "
            f"refresh_token={'yes' if self.refresh_token else 'no'})"
        )


class ClientRegistration(msgspec.Struct, kw_only=True, frozen=True):
    """Client credentials for one authorization server, keyed by its issuer.

    Attributes:
        issuer: The issuer the credentials belong to (never used with another).
        client_id: The client id.
        client_secret: The secret of a confidential client, if any.
        client_secret_expires_at: When the secret expires (0 = never), per RFC 7591.
        auth_method: ``client_secret_basic``, ``client_secret_post``,
            ``private_key_jwt`` (RFC 7523; the key stays in the configuration) or ``none``.
        redirect_uris: The redirect URIs registered (re-register when ours changes).
        kind: How the client got its id: pre-registered, metadata document, or dynamic.
    """

    issuer: str
    client_id: str
    client_secret: str | None = None
    client_secret_expires_at: float | None = None
    auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] = (
        "none"
    )
    redirect_uris: list[str] = msgspec.field(default_factory=list)
    kind: Literal["pre-registered", "metadata-document", "dynamic"] = "dynamic"

    def __repr__(self) -> str:
        return f"ClientRegistration(issuer={self.issuer!r}, kind={self.kind!r}, auth_method={self.auth_method!r})"


ENCODER: Final = msgspec.json.Encoder()
TOKENSET_DECODER: Final = msgspec.json.Decoder(TokenSet)
REGISTRATION_DECODER: Final = msgspec.json.Decoder(ClientRegistration)
PRM_DECODER: Final = msgspec.json.Decoder(ProtectedResourceMetadata)
ASM_DECODER: Final = msgspec.json.Decoder(AuthorizationServerMetadata)
TOKEN_RESPONSE_DECODER: Final = msgspec.json.Decoder(TokenResponse)
