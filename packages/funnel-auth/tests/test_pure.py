"""Pure cores: PKCE, URLs, scope and callback decisions, token responses, refresh
decisions, rate limiting, redaction. No I/O."""

from __future__ import annotations

import base64
import hashlib
import logging

import msgspec
import pytest

from funnel_auth import (
    AUDIT_LOGGER,
    AuthorizationDenied,
    AuthServerUnavailable,
    DiscoveryError,
    InvalidGrant,
    IssuerMismatch,
    RateLimiter,
    RegistrationError,
    Secret,
    TokenRequestError,
    TokenSet,
    as_metadata_urls,
    canonical_resource,
    code_challenge,
    new_state,
    new_verifier,
    prm_urls,
    redact,
)
from funnel_auth._audit import audit
from funnel_auth._logic import (
    check_callback,
    check_pkce_support,
    client_auth,
    parse_as_metadata,
    parse_prm,
    parse_registration,
    parse_retry_after,
    parse_token_response,
    refresh_due,
    select_scope,
    token_set_from_response,
    union_scope,
)
from funnel_auth._models import AuthorizationServerMetadata, ClientRegistration
from funnel_auth._urls import build_url, fallback_endpoints, is_secure_url, resource_covers

# --------------------------------------------------------------------------- PKCE


def test_the_rfc_7636_appendix_b_example_challenge() -> None:
    assert (
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_verifiers_and_states_are_fresh_and_well_formed() -> None:
    verifiers = {new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
        expected = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        assert code_challenge(verifier) == expected
    assert len(new_verifier(96)) == 128
    assert len({new_state() for _ in range(50)}) == 50


@pytest.mark.parametrize("bad", ["short", "x" * 129, "a" * 42 + "!", ""])
def test_malformed_verifiers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="verifier"):
        code_challenge(bad)


@pytest.mark.parametrize("nbytes", [31, 97])
def test_verifier_sizes_outside_the_rfc_are_refused(nbytes: int) -> None:
    with pytest.raises(ValueError, match="random bytes"):
        new_verifier(nbytes)


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://mcp.example.com", "https://mcp.example.com"),
        ("https://mcp.example.com/", "https://mcp.example.com"),
        ("HTTPS://MCP.Example.COM/mcp/", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"),
        ("http://mcp.example.com:80", "http://mcp.example.com"),
        ("https://mcp.example.com:8443", "https://mcp.example.com:8443"),
        ("https://mcp.example.com/server/mcp#frag", "https://mcp.example.com/server/mcp"),
        ("http://127.0.0.1:3000/mcp", "http://127.0.0.1:3000/mcp"),
        ("http://[::1]:3000/mcp", "http://[::1]:3000/mcp"),
        ("https://mcp.example.com/Case/Path", "https://mcp.example.com/Case/Path"),
    ],
)
def test_canonical_resource_uris(url: str, canonical: str) -> None:
    assert canonical_resource(url) == canonical


@pytest.mark.parametrize("bad", ["mcp.example.com", "ftp://x/y", "https://", "/mcp"])
def test_non_http_urls_have_no_canonical_form(bad: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        canonical_resource(bad)


def test_protected_resource_metadata_urls_in_spec_order() -> None:
    assert prm_urls("https://example.com/public/mcp") == [
        "https://example.com/.well-known/oauth-protected-resource/public/mcp",
        "https://example.com/.well-known/oauth-protected-resource",
    ]
    assert prm_urls("https://example.com/") == [
        "https://example.com/.well-known/oauth-protected-resource"
    ]


def test_authorization_server_metadata_urls_in_spec_order() -> None:
    assert as_metadata_urls("https://auth.example.com/tenant1") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]
    assert as_metadata_urls("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]
    assert as_metadata_urls("https://auth.example.com/") == as_metadata_urls(
        "https://auth.example.com"
    )
    with pytest.raises(ValueError, match="issuer"):
        as_metadata_urls("auth.example.com")


def test_back_compat_endpoints_live_at_the_server_origin() -> None:
    assert fallback_endpoints("https://mcp.example.com/v1/mcp") == {
        "issuer": "https://mcp.example.com",
        "authorization_endpoint": "https://mcp.example.com/authorize",
        "token_endpoint": "https://mcp.example.com/token",
        "registration_endpoint": "https://mcp.example.com/register",
    }


@pytest.mark.parametrize(
    ("resource", "server", "covers"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp", True),
        ("https://MCP.example.com/mcp/", "https://mcp.example.com/mcp", True),
        ("https://mcp.example.com", "https://mcp.example.com/mcp", True),
        ("https://mcp.example.com/mc", "https://mcp.example.com/mcp", False),
        ("https://other.example.com/mcp", "https://mcp.example.com/mcp", False),
        ("http://mcp.example.com/mcp", "https://mcp.example.com/mcp", False),
        ("https://mcp.example.com/mcp/deeper", "https://mcp.example.com/mcp", False),
        ("not a url", "https://mcp.example.com/mcp", False),
    ],
)
def test_which_metadata_resources_identify_a_server(
    resource: str, server: str, covers: bool
) -> None:
    assert resource_covers(resource, server) is covers


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("https://as.example.com/token", True),
        ("http://localhost:3456/cb", True),
        ("http://127.0.0.1:9/token", True),
        ("http://[::1]/token", True),
        ("http://as.example.com/token", False),
        ("http://localhost.evil.com/token", False),
        ("ftp://localhost/x", False),
    ],
)
def test_only_https_or_loopback_is_secure(url: str, secure: bool) -> None:
    assert is_secure_url(url) is secure


def test_build_url_keeps_the_existing_query_and_drops_none() -> None:
    assert (
        build_url("https://as/authorize?tenant=a", {"x": "1 2", "y": None})
        == "https://as/authorize?tenant=a&x=1+2"
    )
    assert build_url("https://as/authorize", {}) == "https://as/authorize"


# --------------------------------------------------------------------------- metadata


def test_protected_resource_metadata_for_another_resource_is_rejected() -> None:
    good = b'{"resource": "https://mcp.example.com/mcp", "authorization_servers": ["https://as"]}'
    assert parse_prm(good, server_url="https://mcp.example.com/mcp").authorization_servers == [
        "https://as"
    ]
    with pytest.raises(DiscoveryError, match="not this server"):
        parse_prm(good, server_url="https://evil.example.com/mcp")
    with pytest.raises(DiscoveryError, match="no authorization server"):
        parse_prm(
            b'{"resource": "https://mcp.example.com/mcp"}', server_url="https://mcp.example.com/mcp"
        )
    with pytest.raises(DiscoveryError, match="invalid"):
        parse_prm(b"<html>", server_url="https://mcp.example.com/mcp")


def test_authorization_server_metadata_must_name_the_issuer_it_was_fetched_for() -> None:
    doc = b'{"issuer": "https://honest.example", "token_endpoint": "https://honest.example/token"}'
    assert (
        parse_as_metadata(doc, issuer="https://honest.example").issuer == "https://honest.example"
    )
    with pytest.raises(DiscoveryError, match="differs"):
        parse_as_metadata(doc, issuer="https://attacker.example")
    with pytest.raises(DiscoveryError, match="differs"):
        parse_as_metadata(doc, issuer="https://honest.example/")
    with pytest.raises(DiscoveryError, match="neither HTTPS"):
        parse_as_metadata(
            b'{"issuer": "https://a", "token_endpoint": "http://a.example/token"}',
            issuer="https://a",
        )


@pytest.mark.parametrize(
    ("methods", "ok"),
    [(None, False), ([], False), (["plain"], False), (["plain", "S256"], True), (["S256"], True)],
)
def test_pkce_support_must_be_advertised_with_s256(methods: list[str] | None, ok: bool) -> None:
    meta = AuthorizationServerMetadata(
        issuer="https://as", code_challenge_methods_supported=methods
    )
    if ok:
        check_pkce_support(meta)
    else:
        with pytest.raises(DiscoveryError, match="PKCE"):
            check_pkce_support(meta)


# --------------------------------------------------------------------------- scopes


def test_scope_selection_order() -> None:
    assert select_scope(challenged="a b", scopes_supported=["c"]) == "a b"
    assert select_scope(challenged=None, scopes_supported=["c", "d"]) == "c d"
    assert select_scope(challenged=None, scopes_supported=None) is None
    assert select_scope(challenged=None, scopes_supported=[]) is None
    assert select_scope(challenged="a", scopes_supported=["c"], configured="z") == "z"


def test_scope_union_keeps_order_and_drops_duplicates() -> None:
    assert union_scope("a b", "b c") == "a b c"
    assert union_scope(None, "x") == "x"
    assert union_scope(None, "", None) is None


# --------------------------------------------------------------------------- callback (RFC 9207)

ISS = "https://as.example.com"


@pytest.mark.parametrize(
    ("advertised", "iss", "outcome"),
    [
        (True, ISS, "ok"),
        (True, None, "mismatch"),
        (False, ISS, "ok"),
        (False, None, "ok"),
        (False, "https://evil.example.com", "mismatch"),
        (True, ISS + "/", "mismatch"),
        (True, "HTTPS://as.example.com", "mismatch"),
        (True, "https://as.example.com:443", "mismatch"),
    ],
)
def test_iss_validation_table(advertised: bool, iss: str | None, outcome: str) -> None:
    kwargs = {
        "recorded_issuer": ISS,
        "iss_advertised": advertised,
        "iss": iss,
        "error": None,
        "error_description": None,
    }
    if outcome == "ok":
        assert check_callback(**kwargs, code="c0de") == "c0de"  # type: ignore[arg-type]
    else:
        with pytest.raises(IssuerMismatch):
            check_callback(**kwargs, code="c0de")  # type: ignore[arg-type]


def test_an_error_response_from_the_wrong_issuer_is_not_acted_on() -> None:
    with pytest.raises(IssuerMismatch) as info:
        check_callback(
            recorded_issuer=ISS,
            iss_advertised=True,
            iss="https://evil",
            error="access_denied",
            error_description="click here",
            code=None,
        )
    assert "click here" not in str(info.value)
    with pytest.raises(AuthorizationDenied) as denied:
        check_callback(
            recorded_issuer=ISS,
            iss_advertised=True,
            iss=ISS,
            error="access_denied",
            error_description=None,
            code=None,
        )
    assert denied.value.error == "access_denied"
    with pytest.raises(AuthorizationDenied, match="no code"):
        check_callback(
            recorded_issuer=ISS,
            iss_advertised=False,
            iss=None,
            error=None,
            error_description=None,
            code="",
        )


# --------------------------------------------------------------------------- token endpoint


def test_client_authentication_methods() -> None:
    basic = ClientRegistration(
        issuer=ISS, client_id="id:1", client_secret="s&p", auth_method="client_secret_basic"
    )
    form: dict[str, str] = {}
    headers = client_auth(basic, form)
    assert form == {}
    assert base64.b64decode(headers["Authorization"].split()[1]) == b"id%3A1:s%26p"
    post = ClientRegistration(
        issuer=ISS, client_id="id", client_secret="s", auth_method="client_secret_post"
    )
    form = {}
    assert client_auth(post, form) == {}
    assert form == {"client_id": "id", "client_secret": "s"}
    public = ClientRegistration(issuer=ISS, client_id="id")
    form = {}
    assert client_auth(public, form) == {}
    assert form == {"client_id": "id"}


def test_token_responses_are_classified() -> None:
    ok = parse_token_response(
        200, {}, b'{"access_token":"at","token_type":"bearer","expires_in":60}', now=0
    )
    assert ok.access_token == "at"
    assert "at" not in repr(ok).replace("expires_at", "").replace("token_type", "")
    with pytest.raises(InvalidGrant):
        parse_token_response(400, {}, b'{"error":"invalid_grant"}', now=0)
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(401, {}, b'{"error":"invalid_client"}', now=0)
    assert info.value.error == "invalid_client"
    assert not isinstance(info.value, InvalidGrant)
    with pytest.raises(AuthServerUnavailable) as busy:
        parse_token_response(429, {"retry-after": "7"}, b"", now=0)
    assert busy.value.retry_after == 7.0
    with pytest.raises(AuthServerUnavailable):
        parse_token_response(502, {}, b"<html>", now=0)
    for body in (
        b"not json",
        b'{"token_type":"Bearer"}',
        b'{"access_token":"","token_type":"Bearer"}',
        b"[]",
    ):
        with pytest.raises(TokenRequestError, match="malformed"):
            parse_token_response(200, {}, body, now=0)
    with pytest.raises(TokenRequestError, match="token_type"):
        parse_token_response(200, {}, b'{"access_token":"a","token_type":"MAC"}', now=0)
    # DPoP-bound tokens (RFC 9449) are understood; the provider refuses them unless it
    # sent a proof (test_real_oidc: the DPoP tests).
    dpop = parse_token_response(200, {}, b'{"access_token":"a","token_type":"dpop"}', now=0)
    assert dpop.token_type == "dpop"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", now=0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_a_token_set_has_an_absolute_expiry_and_keeps_the_old_refresh_token() -> None:
    response = parse_token_response(
        200, {}, b'{"access_token":"a","token_type":"Bearer","expires_in":100}', now=0
    )
    tokens = token_set_from_response(
        response,
        now=1000.0,
        issuer=ISS,
        token_endpoint=ISS + "/token",
        resource="https://mcp",
        client_id="c",
        requested_scope="s",
        previous_refresh_token="r0",
    )
    assert tokens.expires_at == 1100.0
    assert tokens.refresh_token == "r0"
    assert tokens.scope == "s"
    assert "r0" not in repr(tokens)
    assert msgspec.json.decode(msgspec.json.encode(tokens), type=TokenSet) == tokens


def test_refresh_is_due_skew_plus_jitter_before_expiry() -> None:
    tokens = TokenSet(access_token="a", token_endpoint="t", client_id="c", expires_at=1000.0)
    assert not refresh_due(tokens, now=900.0, skew=60, jitter=30)
    assert refresh_due(tokens, now=910.0, skew=60, jitter=30)
    assert refresh_due(tokens, now=1000.0, skew=0, jitter=0)
    assert not refresh_due(msgspec.structs.replace(tokens, expires_at=None), now=1e12)


def test_registration_responses_are_classified() -> None:
    reg = parse_registration(
        201, b'{"client_id":"abc"}', issuer=ISS, redirect_uris=["http://localhost/cb"]
    )
    assert (reg.client_id, reg.auth_method, reg.kind) == ("abc", "none", "dynamic")
    reg = parse_registration(
        201, b'{"client_id":"abc","client_secret":"s3cr3t-value"}', issuer=ISS, redirect_uris=[]
    )
    assert reg.auth_method == "client_secret_basic"
    assert "s3cr3t-value" not in repr(reg)
    with pytest.raises(RegistrationError, match="native") as info:
        parse_registration(400, b'{"error":"invalid_redirect_uri"}', issuer=ISS, redirect_uris=[])
    assert info.value.error == "invalid_redirect_uri"
    with pytest.raises(RegistrationError, match="no client_id"):
        parse_registration(201, b"{}", issuer=ISS, redirect_uris=[])


# --------------------------------------------------------------------------- rate limiter


def test_the_rate_limiter_is_a_sliding_window_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(max_attempts=2, window=10.0, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0
    now[0] = 4.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == 6.0
    assert limiter.check("a") == 6.0
    assert limiter.acquire("b") == 0.0  # other keys are independent
    now[0] = 10.0  # the first attempt left the window
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == 4.0
    limiter.reset("a")
    assert limiter.acquire("a") == 0.0


def test_the_rate_limiter_forgets_the_least_recently_used_keys() -> None:
    limiter = RateLimiter(max_attempts=1, window=10.0, clock=lambda: 0.0, max_keys=3)
    for key in "abcd":
        limiter.acquire(key)
    assert len(limiter) == 3
    assert limiter.acquire("a") == 0.0  # "a" was forgotten
    assert limiter.acquire("d") == 10.0


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0, "window": 1.0}, {"max_attempts": 1, "window": 0.0}]
)
def test_the_rate_limiter_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- redaction and audit


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("header authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("https://app/cb?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz", "SplxlOBeZQQYbYS6WxSbIA"),
        ("https://app/cb?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz789", "xyz789"),
        ("grant_type=refresh_token&refresh_token=tGzv3JOkF0XG5Qx2TlKWIA", "tGzv3JOkF0XG5Qx2TlKWIA"),
        ("client_secret=hunter2&x=1", "hunter2"),
        (
            '{"access_token": "2YotnFZFEjr1zCsicMWpAA", "token_type": "Bearer"}',
            "2YotnFZFEjr1zCsicMWpAA",
        ),
        ('{"code_verifier":"dBjftJeZ4CVP"}', "dBjftJeZ4CVP"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature", "eyJhbGciOiJIUzI1NiJ9"),
        ("password=pa55", "pa55"),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "error=invalid_grant error_code=7 scope=mcp:read resource=https://x/mcp code_challenge_method=S256"
    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "mcp:basic mcp:write",
        "scope 'mcp:basic mcp:write' is required",
        'Bearer scope="mcp:basic mcp:write", error="insufficient_scope"',
        "scopes_supported: [mcp:basic, mcp:read]",
    ],
)
def test_redact_leaves_scopes_named_like_schemes_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_still_masks_a_bearer_token_next_to_such_a_scope() -> None:
    cleaned = redact("scope mcp:basic, Authorization: Bearer s3cr3t-t0ken")
    assert "s3cr3t-t0ken" not in cleaned
    assert cleaned.startswith("scope mcp:basic, ")


def test_error_messages_pass_through_redaction() -> None:
    assert "hunter2" not in str(TokenRequestError("refused: client_secret=hunter2"))


def test_audit_events_carry_structured_fields_and_no_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        audit(
            "auth.flow_failed",
            server="demo",
            issuer=ISS,
            outcome="failure",
            reason="bad code=abc123",
        )
    [record] = caplog.records
    assert record.name == AUDIT_LOGGER
    assert record.levelno == logging.WARNING
    fields = {
        name: getattr(record, name) for name in ("event", "server", "issuer", "outcome", "reason")
    }
    assert fields["event"] == "auth.flow_failed"
    assert (fields["server"], fields["issuer"], fields["outcome"]) == ("demo", ISS, "failure")
    assert "abc123" not in record.getMessage()
    assert "abc123" not in fields["reason"]


def test_secret_config_values_never_show() -> None:
    assert "hunter2" not in repr(Secret("hunter2"))
