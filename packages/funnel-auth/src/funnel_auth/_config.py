"""The ``auth`` section of a server entry, as `.mcp-funnel.json` spells it.

The field names are those of the TypeScript mcp-funnel, so configs migrate unchanged,
plus what the MCP authorization spec needs (``resource``, ``clientMetadataUrl``,
``authMethod``). Every endpoint is optional: discovery finds what is not given.

Aliases the original accepts are folded before validation by :func:`normalize_auth`:
``tokenUrl`` → ``tokenEndpoint``, ``authUrl`` → ``authorizationEndpoint`` (the canonical
name wins when both are present), and ``scopes`` (a list, or a string) → ``scope``, which
it overrides.

Secrets (bearer tokens, client secrets) decode to :class:`Secret`, whose ``repr`` and
``str`` are masked, so that a config object can be logged or shown in an error message
without leaking them. Decode with :func:`decode_auth` or pass :func:`config_dec_hook` to
``msgspec.convert``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "AuthConfig",
    "BearerAuth",
    "NoAuth",
    "OAuth2AuthorizationCode",
    "OAuth2ClientCredentials",
    "OAuth2EnterpriseManaged",
    "OAuth2JwtBearer",
    "Secret",
    "config_dec_hook",
    "config_enc_hook",
    "decode_auth",
    "normalize_auth",
]

_MASK: Final = "**********"


class Secret:
    """A string that never shows itself: ``repr``, ``str`` and JSON encoding are masked.

    Call :meth:`reveal` at the one place that must send the value (an HTTP header, a
    token request body).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value. Never log or display the result."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def config_dec_hook(type_: type, obj: Any) -> Any:
    """A msgspec ``dec_hook`` that builds :class:`Secret` from strings."""
    if type_ is Secret:
        if isinstance(obj, str):
            return Secret(obj)
        # msgspec reports a TypeError as a validation error at the field's path.
        raise TypeError(f"Expected `str`, got `{type(obj).__name__}`")
    raise NotImplementedError(f"cannot decode {type_!r}")


def config_enc_hook(obj: Any) -> Any:
    """A msgspec ``enc_hook`` that writes :class:`Secret` masked."""
    if isinstance(obj, Secret):
        return _MASK
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


_NonEmpty = Annotated[str, Meta(min_length=1)]
_Url = Annotated[str, Meta(pattern=r"^https?://", description="an http(s) URL")]


class _Base(
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    forbid_unknown_fields=True,
    rename="camel",
    tag_field="type",
):
    pass


class NoAuth(_Base, tag="none", frozen=True):
    """No credentials: requests go out as they are."""


class BearerAuth(_Base, tag="bearer", frozen=True):
    """A static bearer token, sent as ``Authorization: Bearer <token>``.

    ``${VAR}`` in the token is resolved by the config loader before this is built.
    """

    token: Secret


class OAuth2ClientCredentials(_Base, tag="oauth2-client", frozen=True):
    """OAuth 2 client credentials grant (RFC 6749 §4.4), for machine-to-machine access.

    Attributes:
        client_id: The registered client id.
        client_secret: The client secret (``client_secret_basic``/``_post``).
        token_endpoint: Token endpoint; discovered from the server when absent.
        scope: Space-separated scopes to request.
        audience: Audience parameter some authorization servers want (Auth0 style).
        resource: RFC 8707 resource indicator; defaults to the MCP server's URL.
        auth_method: How the client authenticates at the token endpoint:
            ``client_secret_basic``, ``client_secret_post``, or ``private_key_jwt``
            (RFC 7523: a JWT signed with ``privateKey``/``privateKeyFile``).
        private_key: A PEM private key for ``private_key_jwt`` (``${VAR}`` or a
            secret provider keeps it out of the file).
        private_key_file: A file holding the PEM private key, instead of ``privateKey``.
        signing_algorithm: The JWS algorithm (default: from the key: ``ES256`` for
            P-256, ``RS256`` for RSA, …).
        key_id: The ``kid`` header of the assertion, if the server wants one.
    """

    client_id: _NonEmpty
    client_secret: Secret | UnsetType = UNSET
    token_endpoint: _Url | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    audience: str | UnsetType = UNSET
    resource: _Url | UnsetType = UNSET
    auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] | UnsetType
    ) = UNSET
    private_key: Secret | UnsetType = UNSET
    private_key_file: _NonEmpty | UnsetType = UNSET
    signing_algorithm: _NonEmpty | UnsetType = UNSET
    key_id: _NonEmpty | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_client_auth(self)


class OAuth2EnterpriseManaged(_Base, tag="oauth2-enterprise", frozen=True):
    """Enterprise-managed authorization (SEP-990): the user's SSO identity, no consent screen.

    The client exchanges an ID token from the enterprise identity provider for an
    Identity Assertion JWT Authorization Grant (ID-JAG) at the IdP (RFC 8693 token
    exchange), then presents it at the MCP server's authorization server (RFC 7523
    ``jwt-bearer`` grant) for an access token. The ID token comes from the SSO login
    of the application embedding funnel.

    Attributes:
        client_id: The client id at the MCP server's authorization server.
        client_secret: Its secret (``client_secret_basic`` unless ``authMethod`` says).
        id_token: The user's ID token from the IdP (``${VAR}``, a secret provider).
        idp_token_endpoint: The IdP's token endpoint (the token exchange).
        idp_client_id: The client id at the IdP.
        idp_client_secret: Its secret, for a confidential IdP client.
        token_endpoint: The authorization server's token endpoint; discovered when absent.
        scope: Space-separated scopes to request.
        resource: RFC 8707 resource indicator; defaults to the MCP server's URL.
        auth_method: Client authentication at the authorization server.
        private_key: PEM key for ``private_key_jwt``.
        private_key_file: File holding that key.
        signing_algorithm: The JWS algorithm for ``private_key_jwt``.
        key_id: The ``kid`` header for ``private_key_jwt``.
    """

    client_id: _NonEmpty
    id_token: Secret
    idp_token_endpoint: _Url
    idp_client_id: _NonEmpty
    client_secret: Secret | UnsetType = UNSET
    idp_client_secret: Secret | UnsetType = UNSET
    token_endpoint: _Url | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    resource: _Url | UnsetType = UNSET
    auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] | UnsetType
    ) = UNSET
    private_key: Secret | UnsetType = UNSET
    private_key_file: _NonEmpty | UnsetType = UNSET
    signing_algorithm: _NonEmpty | UnsetType = UNSET
    key_id: _NonEmpty | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_client_auth(self)


class OAuth2AuthorizationCode(_Base, tag="oauth2-code", frozen=True):
    """OAuth 2 authorization code grant with PKCE S256, for acting as a person.

    Attributes:
        client_id: A pre-registered client id; without one, the client registers itself
            (client ID metadata document, else dynamic registration).
        client_secret: The secret of a confidential pre-registered client.
        authorization_endpoint: Authorization endpoint; discovered when absent.
        token_endpoint: Token endpoint; discovered when absent.
        redirect_uri: Where the authorization server sends the browser back; defaults to
            the redirect URI of the application (funnel-server passes its own callback,
            ``http://localhost:<port>/api/oauth/callback``).
        scope: Space-separated scopes; by default those the server challenges for, else
            those its metadata lists.
        audience: Audience parameter some authorization servers want.
        resource: RFC 8707 resource indicator; defaults to the MCP server's URL.
        client_metadata_url: An HTTPS URL of a client ID metadata document to use as
            ``client_id`` where the authorization server supports it.
        auth_method: How a confidential client authenticates at the token endpoint.
        issuer: The issuer of the authorization server a pre-registered ``clientId``
            belongs to; when the server names another, authorization fails with a
            clear error instead of sending the credentials elsewhere.
    """

    client_id: _NonEmpty | UnsetType = UNSET
    client_secret: Secret | UnsetType = UNSET
    authorization_endpoint: _Url | UnsetType = UNSET
    token_endpoint: _Url | UnsetType = UNSET
    redirect_uri: _Url | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    audience: str | UnsetType = UNSET
    resource: _Url | UnsetType = UNSET
    client_metadata_url: Annotated[str, Meta(pattern=r"^https://[^/]+/.+")] | UnsetType = UNSET
    auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | UnsetType = UNSET
    issuer: _Url | UnsetType = UNSET


class OAuth2JwtBearer(_Base, tag="oauth2-jwt-bearer", frozen=True):
    """Workload identity federation (SEP-1933): a platform-issued JWT as the grant (RFC 7523).

    A workload (a Kubernetes pod, a CI job, a cloud function) holds a JWT its platform
    issued; the client presents it as ``assertion`` of the ``jwt-bearer`` grant and gets
    an access token, with no secret of its own. ``assertionFile`` is read again for every
    grant, since platforms rotate these tokens on disk.

    Attributes:
        client_id: The client id at the authorization server.
        assertion: The workload JWT (``${VAR}`` or a secret provider).
        assertion_file: A file holding the workload JWT, instead of ``assertion``.
        token_endpoint: Token endpoint; discovered when absent.
        scope: Space-separated scopes to request.
        resource: RFC 8707 resource indicator; defaults to the MCP server's URL.
        client_secret: A secret, for a confidential client (usually none).
        auth_method: Client authentication (default ``none``: the assertion is the proof).
    """

    client_id: _NonEmpty
    assertion: Secret | UnsetType = UNSET
    assertion_file: _NonEmpty | UnsetType = UNSET
    token_endpoint: _Url | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    resource: _Url | UnsetType = UNSET
    client_secret: Secret | UnsetType = UNSET
    auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.assertion, Secret) == isinstance(self.assertion_file, str):
            raise ValueError('set exactly one of "assertion" and "assertionFile"')


def _check_client_auth(config: OAuth2ClientCredentials | OAuth2EnterpriseManaged) -> None:
    # msgspec reports a ValueError here as a validation error of the whole object.
    has_key = isinstance(config.private_key, Secret) or isinstance(config.private_key_file, str)
    if isinstance(config.private_key, Secret) and isinstance(config.private_key_file, str):
        raise ValueError('set "privateKey" or "privateKeyFile", not both')  # noqa: TRY004 -- msgspec reports ValueError at the object's path
    if config.auth_method == "private_key_jwt" and not has_key:
        raise ValueError('authMethod private_key_jwt needs "privateKey" or "privateKeyFile"')
    if not has_key and not isinstance(config.client_secret, Secret):
        # The wording of a missing required field: a private key is the documented alternative.
        raise ValueError('missing required key "clientSecret"')


AuthConfig: TypeAlias = (
    NoAuth
    | BearerAuth
    | OAuth2ClientCredentials
    | OAuth2AuthorizationCode
    | OAuth2EnterpriseManaged
    | OAuth2JwtBearer
)
"""Any ``auth`` section, tagged by its ``type``."""


def normalize_auth(raw: dict[str, Any]) -> dict[str, Any]:
    """Fold the original's aliases into canonical keys (returns a new dict).

    ``tokenUrl`` → ``tokenEndpoint`` and ``authUrl`` → ``authorizationEndpoint`` unless the
    canonical key is present; ``scopes`` (list or string) replaces ``scope``.
    """
    out = dict(raw)
    for alias, canonical in (("tokenUrl", "tokenEndpoint"), ("authUrl", "authorizationEndpoint")):
        if alias in out:
            value = out.pop(alias)
            out.setdefault(canonical, value)
    if "scopes" in out:
        scopes = out.pop("scopes")
        out["scope"] = " ".join(scopes) if isinstance(scopes, list) else scopes
    return out


def decode_auth(raw: dict[str, Any]) -> AuthConfig:
    """Validate an ``auth`` object (aliases folded) into its typed config.

    Raises:
        msgspec.ValidationError: The object is not a valid auth section; the message
            names the offending field (``$.clientId`` style) for the caller to prefix.
    """
    config: AuthConfig = msgspec.convert(normalize_auth(raw), AuthConfig, dec_hook=config_dec_hook)
    return config
