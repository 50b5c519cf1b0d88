"""The auth section of a config: aliases, validation errors, masked secrets."""

from __future__ import annotations

import msgspec
import pytest

from funnel_auth import (
    BearerAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    Secret,
    decode_auth,
)


def test_the_originals_aliases_are_folded_into_canonical_keys() -> None:
    config = decode_auth(
        {
            "type": "oauth2-client",
            "clientId": "app",
            "clientSecret": "s3cret",
            "tokenUrl": "https://auth.example.com/token",
            "scopes": ["read", "write"],
        }
    )
    assert isinstance(config, OAuth2ClientCredentials)
    assert config.token_endpoint == "https://auth.example.com/token"
    assert config.scope == "read write"


def test_every_endpoint_of_the_code_flow_is_optional() -> None:
    assert decode_auth({"type": "oauth2-code"}) == OAuth2AuthorizationCode()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"type": "bearer", "token": 5}, "Expected `str`, got `int` - at `$.token`"),
        ({"type": "bearer"}, "missing required field `token`"),
        ({"type": "bearer", "token": "x", "tokne": "y"}, "unknown field `tokne`"),
        ({"type": "magic"}, "Invalid value 'magic'"),
        ({"type": "oauth2-code", "tokenEndpoint": "ftp://x"}, "$.tokenEndpoint"),
    ],
)
def test_bad_sections_are_validation_errors_naming_the_field(
    raw: dict[str, object], fragment: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_auth(raw)
    assert fragment in str(caught.value)


def test_secrets_never_show_themselves() -> None:
    config = decode_auth({"type": "bearer", "token": "ghp_very_secret"})
    assert isinstance(config, BearerAuth)
    assert config.token.reveal() == "ghp_very_secret"
    for shown in (repr(config), str(config.token), f"{config.token}"):
        assert "ghp_very_secret" not in shown
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
