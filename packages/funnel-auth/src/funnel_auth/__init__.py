"""funnel-auth: MCP-spec OAuth 2 and bearer auth as ``httpx.Auth`` (and ``httpx2.Auth``).

Providers (:func:`create_auth`) attach tokens to requests of an ``httpx.AsyncClient``
(or, through :func:`httpx2_auth`, an ``httpx2.AsyncClient``), discover authorization
servers from the MCP server's 401 challenge, register, refresh, step up, and raise
:class:`AuthorizationRequired` with a URL when a person must approve.
"""

from importlib import metadata as _metadata

from funnel_auth._audit import AUDIT_EVENTS, AUDIT_LOGGER, AuditListener, add_audit_listener
from funnel_auth._authorization_code import AuthorizationCodeAuth
from funnel_auth._challenge import BearerChallenge, Challenge, find_bearer, parse_www_authenticate
from funnel_auth._client_credentials import ClientCredentialsAuth, JwtBearerAuth
from funnel_auth._config import (
    AuthConfig,
    BearerAuth,
    NoAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    OAuth2EnterpriseManaged,
    OAuth2JwtBearer,
    Secret,
    config_dec_hook,
    config_enc_hook,
    decode_auth,
    normalize_auth,
)
from funnel_auth._core import BearerTokenAuth, NullAuth, OAuthAuth, OAuthOptions
from funnel_auth._enterprise import EnterpriseManagedAuth
from funnel_auth._errors import (
    AuthConfigError,
    AuthError,
    AuthorizationDenied,
    AuthorizationFailed,
    AuthorizationRequired,
    AuthServerUnavailable,
    DiscoveryError,
    InsufficientScope,
    InvalidGrant,
    InvalidState,
    IssuerMismatch,
    RateLimited,
    RegistrationError,
    TokenRequestError,
)
from funnel_auth._factory import create_auth, httpx2_auth
from funnel_auth._flows import (
    AuthorizationFlows,
    AuthorizationStart,
    FlowRegistry,
    PendingAuthorization,
)
from funnel_auth._models import (
    AuthorizationServerMetadata,
    ClientRegistration,
    ProtectedResourceMetadata,
    TokenSet,
)
from funnel_auth._pkce import code_challenge, new_state, new_verifier
from funnel_auth._ratelimit import RateLimiter
from funnel_auth._redact import redact
from funnel_auth._urls import as_metadata_urls, canonical_resource, prm_urls

__version__ = _metadata.version("funnel-auth")  # one source: pyproject.toml

__all__ = [
    "AUDIT_EVENTS",
    "AUDIT_LOGGER",
    "AuditListener",
    "AuthConfig",
    "AuthConfigError",
    "AuthError",
    "AuthServerUnavailable",
    "AuthorizationCodeAuth",
    "AuthorizationDenied",
    "AuthorizationFailed",
    "AuthorizationFlows",
    "AuthorizationRequired",
    "AuthorizationServerMetadata",
    "AuthorizationStart",
    "BearerAuth",
    "BearerChallenge",
    "BearerTokenAuth",
    "Challenge",
    "ClientCredentialsAuth",
    "ClientRegistration",
    "DiscoveryError",
    "EnterpriseManagedAuth",
    "FlowRegistry",
    "InsufficientScope",
    "InvalidGrant",
    "InvalidState",
    "IssuerMismatch",
    "JwtBearerAuth",
    "NoAuth",
    "NullAuth",
    "OAuth2AuthorizationCode",
    "OAuth2ClientCredentials",
    "OAuth2EnterpriseManaged",
    "OAuth2JwtBearer",
    "OAuthAuth",
    "OAuthOptions",
    "PendingAuthorization",
    "ProtectedResourceMetadata",
    "RateLimited",
    "RateLimiter",
    "RegistrationError",
    "Secret",
    "TokenRequestError",
    "TokenSet",
    "__version__",
    "add_audit_listener",
    "as_metadata_urls",
    "canonical_resource",
    "code_challenge",
    "config_dec_hook",
    "config_enc_hook",
    "create_auth",
    "decode_auth",
    "find_bearer",
    "httpx2_auth",
    "new_state",
    "new_verifier",
    "normalize_auth",
    "parse_www_authenticate",
    "prm_urls",
    "redact",
]
