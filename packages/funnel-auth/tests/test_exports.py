"""The public surface, pinned: a change here is a change to the published API."""

from __future__ import annotations

import re
from pathlib import Path

import funnel_auth
import funnel_auth.testing

EXPECTED = [
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


def test_all_is_pinned() -> None:
    assert funnel_auth.__all__ == EXPECTED
    assert funnel_auth.testing.__all__ == ["CallbackParams", "follow_authorization"]


def test_every_exported_name_exists_and_public_classes_say_they_are_public() -> None:
    for name in funnel_auth.__all__:
        value = getattr(funnel_auth, name)
        if isinstance(value, type):
            assert value.__module__.startswith("funnel_auth"), name


def test_every_error_derives_from_auth_error_and_is_drawn_in_the_tree() -> None:
    from funnel_auth import _errors

    doc = _errors.__doc__ or ""
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, funnel_auth.AuthError)
        assert re.search(rf"\b{name}\b", doc), name


def test_readme_python_examples_compile() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")
