"""funnel-auth: MCP-spec OAuth 2 and bearer auth as ``httpx.Auth``."""

from funnel_auth._config import (
    AuthConfig,
    BearerAuth,
    NoAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    Secret,
    config_dec_hook,
    config_enc_hook,
    decode_auth,
    normalize_auth,
)

__version__ = "0.1.0"

__all__ = [
    "AuthConfig",
    "BearerAuth",
    "NoAuth",
    "OAuth2AuthorizationCode",
    "OAuth2ClientCredentials",
    "Secret",
    "__version__",
    "config_dec_hook",
    "config_enc_hook",
    "decode_auth",
    "normalize_auth",
]
