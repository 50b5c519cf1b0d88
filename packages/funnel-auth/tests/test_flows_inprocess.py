"""Discovery, registration and token-request properties that no real peer here can show
(servers without metadata, ASes without PKCE, lying metadata, two processes sharing a
store), with an in-process fake world behind ``httpx.MockTransport``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from funnel_auth import (
    AUDIT_LOGGER,
    AuthConfigError,
    AuthorizationCodeAuth,
    AuthorizationFlows,
    AuthorizationRequired,
    ClientCredentialsAuth,
    DiscoveryError,
    InsufficientScope,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    RateLimited,
    RateLimiter,
    Secret,
    TokenSet,
    create_auth,
)
from funnel_tokenstore import MemoryTokenStore

REDIRECT = "http://localhost:3456/api/oauth/callback"

pytestmark = pytest.mark.anyio

MCP = "https://mcp.example.com/v1/mcp"
AS = "https://as.example.com/tenant"


@dataclass
class World:
    """An MCP server and its authorization server, answering from dicts."""

    prm: dict[str, Any] | None = field(
        default_factory=lambda: {"resource": MCP, "authorization_servers": [AS]}
    )
    prm_at: str = "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp"
    as_docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    challenge: str = 'Bearer scope="read"'
    forbidden_scope: str | None = None  # answer 403 insufficient_scope for this scope
    valid_tokens: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    issued: int = 0
    expires_in: int = 3600

    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url).split("?")[0]
        if url == self.prm_at and self.prm is not None:
            return httpx.Response(200, json=self.prm)
        if url in self.as_docs:
            return httpx.Response(200, json=self.as_docs[url])
        if url.endswith("/token"):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            self.token_forms.append(form)
            self.issued += 1
            token = f"at-{self.issued}"
            self.valid_tokens.add(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "refresh_token": f"rt-{self.issued}",
                    "scope": form.get("scope", ""),
                },
            )
        if url.endswith("/register"):
            return httpx.Response(201, json={"client_id": "dyn-client"})
        if url == MCP:
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ")
            if token not in self.valid_tokens:
                return httpx.Response(401, headers={"www-authenticate": self.challenge})
            if self.forbidden_scope:
                header = f'Bearer error="insufficient_scope", scope="{self.forbidden_scope}"'
                return httpx.Response(403, headers={"www-authenticate": header})
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(404)


def as_doc(issuer: str = AS, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "registration_endpoint": issuer + "/register",
        "code_challenge_methods_supported": ["S256"],
    }
    doc.update(extra)
    return {key: value for key, value in doc.items() if value is not None}


def clients(world: World) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(world.handle))


def code_auth(
    world: World, store: MemoryTokenStore | None = None, **config: Any
) -> AuthorizationCodeAuth:
    auth = create_auth(
        OAuth2AuthorizationCode(**config),
        redirect_uri=REDIRECT,
        server_name="demo",
        server_url=MCP,
        store=store or MemoryTokenStore(),
        http_client=clients(world),
    )
    assert isinstance(auth, AuthorizationCodeAuth)
    return auth


async def required(auth: httpx.Auth, world: World) -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        with pytest.raises(AuthorizationRequired) as info:
            await client.post(MCP, json={})
    return info.value.authorization_url


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_well_known_urls_are_tried_in_spec_order_without_resource_metadata_in_the_challenge() -> (
    None
):
    world = World(prm_at="https://mcp.example.com/.well-known/oauth-protected-resource")
    world.as_docs["https://as.example.com/tenant/.well-known/openid-configuration"] = as_doc()
    url = await required(code_auth(world), world)
    assert world.urls()[1:6] == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
        "https://as.example.com/.well-known/oauth-authorization-server/tenant",
        "https://as.example.com/.well-known/openid-configuration/tenant",
        "https://as.example.com/tenant/.well-known/openid-configuration",
    ]
    params = query(url)
    assert params["scope"] == "read"
    assert params["resource"] == MCP
    assert params["client_id"] == "dyn-client"
    [register] = [r for r in world.requests if r.url.path.endswith("/register")]
    body = json.loads(register.content)
    assert body["application_type"] == "native"
    assert body["redirect_uris"] == ["http://localhost:3456/api/oauth/callback"]
    assert "refresh_token" in body["grant_types"]


async def test_the_challenges_resource_metadata_url_is_used_first() -> None:
    world = World(
        prm_at="https://meta.example.com/prm",
        challenge='Bearer resource_metadata="https://meta.example.com/prm"',
    )
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    await required(code_auth(world), world)
    assert world.urls()[1] == "https://meta.example.com/prm"


async def test_an_authorization_server_without_pkce_is_refused_before_registering() -> None:
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc(
        code_challenge_methods_supported=None
    )
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(world.handle), auth=code_auth(world)
    ) as client:
        with pytest.raises(DiscoveryError, match="PKCE"):
            await client.post(MCP, json={})
    assert not [u for u in world.urls() if u.endswith("/register")]


async def test_metadata_naming_another_issuer_is_not_used() -> None:
    world = World()
    for url in (
        "https://as.example.com/.well-known/oauth-authorization-server/tenant",
        "https://as.example.com/.well-known/openid-configuration/tenant",
    ):
        world.as_docs[url] = as_doc(issuer="https://attacker.example")
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(world.handle), auth=code_auth(world)
    ) as client:
        with pytest.raises(DiscoveryError, match="differs"):
            await client.post(MCP, json={})
    assert not [u for u in world.urls() if u.endswith(("/register", "/token"))]


async def test_a_server_without_any_metadata_falls_back_to_default_endpoints_at_its_origin() -> (
    None
):
    world = World(prm=None)
    url = await required(code_auth(world), world)
    assert url.startswith("https://mcp.example.com/authorize?")
    assert "https://mcp.example.com/register" in world.urls()
    assert "https://mcp.example.com/.well-known/oauth-authorization-server" in world.urls()


async def test_a_server_without_resource_metadata_uses_as_metadata_at_its_origin() -> None:
    world = World(prm=None)
    origin = "https://mcp.example.com"
    world.as_docs[origin + "/.well-known/oauth-authorization-server"] = as_doc(
        issuer=origin, authorization_endpoint=origin + "/oauth/authorize"
    )
    url = await required(code_auth(world), world)
    assert url.startswith(origin + "/oauth/authorize?")


async def test_without_any_registration_method_the_error_says_what_to_configure() -> None:
    from funnel_auth import RegistrationError

    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc(
        registration_endpoint=None
    )
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(world.handle), auth=code_auth(world)
    ) as client:
        with pytest.raises(RegistrationError, match="clientId"):
            await client.post(MCP, json={})


async def test_a_client_id_metadata_document_is_used_where_supported_instead_of_registering() -> (
    None
):
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc(
        client_id_metadata_document_supported=True
    )
    cimd = "https://app.example.com/oauth/client.json"
    url = await required(code_auth(world, client_metadata_url=cimd), world)
    assert query(url)["client_id"] == cimd
    assert not [u for u in world.urls() if u.endswith("/register")]


async def test_resource_and_scope_are_sent_on_authorization_token_and_refresh_requests() -> None:
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    now = [1000.0]
    store = MemoryTokenStore()
    auth = create_auth(
        OAuth2AuthorizationCode(),
        redirect_uri=REDIRECT,
        server_name="demo",
        server_url=MCP,
        store=store,
        http_client=clients(world),
        clock=lambda: now[0],
    )
    assert isinstance(auth, AuthorizationCodeAuth)
    url = await required(auth, world)
    params = query(url)
    await auth.complete(params["state"], "the-code", None)
    assert world.token_forms[0]["resource"] == MCP
    assert world.token_forms[0]["code_verifier"]
    assert world.token_forms[0]["redirect_uri"] == "http://localhost:3456/api/oauth/callback"
    now[0] += 3600
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        assert (await client.post(MCP, json={})).status_code == 200
    refresh = world.token_forms[1]
    assert refresh["grant_type"] == "refresh_token"
    assert (refresh["resource"], refresh["scope"], refresh["refresh_token"]) == (
        MCP,
        "read",
        "rt-1",
    )
    for request in world.requests:
        assert "at-" not in str(request.url)  # never a token in a query string


def cc_auth(world: World, store: MemoryTokenStore, **options: Any) -> ClientCredentialsAuth:
    auth = create_auth(
        OAuth2ClientCredentials(
            client_id="svc", client_secret=Secret("s3cret"), token_endpoint=AS + "/token"
        ),
        server_name="svc",
        server_url=MCP,
        store=store,
        http_client=clients(world),
        **options,
    )
    assert isinstance(auth, ClientCredentialsAuth)
    return auth


async def test_step_up_asks_for_the_challenged_scope_once_then_gives_up() -> None:
    world = World(forbidden_scope="admin")
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(world.handle), auth=cc_auth(world, MemoryTokenStore())
    ) as client:
        with pytest.raises(InsufficientScope):
            await client.post(MCP, json={})
    scopes = [form.get("scope") for form in world.token_forms]
    assert scopes == [None, "admin"]


async def test_step_up_keeps_previously_requested_scopes() -> None:
    world = World(forbidden_scope="admin")
    auth = create_auth(
        OAuth2ClientCredentials(
            client_id="svc", client_secret=Secret("s"), token_endpoint=AS + "/token", scope="read"
        ),
        server_name="svc",
        server_url=MCP,
        http_client=clients(world),
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        with pytest.raises(InsufficientScope):
            await client.post(MCP, json={})
    assert world.token_forms[1]["scope"] == "read admin"


async def test_new_grants_are_rate_limited_with_an_audit_event_but_refreshes_never_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    now = [0.0]
    limiter = RateLimiter(max_attempts=1, window=60, clock=lambda: now[0])
    store = MemoryTokenStore()
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    auth = cc_auth(world, store, limiter=limiter)
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        assert (await client.post(MCP, json={})).status_code == 200
        for _ in range(3):
            world.valid_tokens.clear()  # the server forgets the token: a refresh renews it
            assert (await client.post(MCP, json={})).status_code == 200
        await auth.clear()  # no refresh token left: the next token is a new grant
        world.valid_tokens.clear()
        with pytest.raises(RateLimited) as info:
            await client.post(MCP, json={})
    assert info.value.retry_after == 60.0
    assert [f["grant_type"] for f in world.token_forms] == ["client_credentials"] + [
        "refresh_token"
    ] * 3
    events = [getattr(r, "event", None) for r in caplog.records if r.name == AUDIT_LOGGER]
    assert events == [
        "auth.token_acquired",
        *["auth.token_refreshed"] * 3,
        "auth.token_cleared",
        "auth.rate_limited",
        "auth.flow_failed",
    ]


async def test_a_second_process_reuses_tokens_the_first_one_refreshed() -> None:
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    store = MemoryTokenStore()
    first = code_auth(world, store)
    params = query(await required(first, world))
    await first.complete(params["state"], "the-code", None)
    key = next(k for k in store._values if ":tokens:" in k)
    raw = await store.get(key)
    assert raw is not None
    import msgspec

    expired = msgspec.structs.replace(
        msgspec.json.decode(raw, type=TokenSet), expires_at=time.time() - 1
    )
    await store.set(key, msgspec.json.encode(expired))
    # Two "processes" load the same expired tokens, then both make a request.
    a, b = code_auth(world, store), code_auth(world, store)
    assert await a.get_tokens() == await b.get_tokens() == expired
    for auth in (a, b):
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(world.handle), auth=auth
        ) as client:
            with anyio.fail_after(5):
                assert (await client.post(MCP, json={})).status_code == 200
    assert [f["grant_type"] for f in world.token_forms] == ["authorization_code", "refresh_token"]


async def test_a_pending_flow_is_reused_instead_of_starting_another() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    auth = code_auth(world)
    first = await required(auth, world)
    second = await required(auth, world)
    assert first == second
    assert isinstance(auth.flows, AuthorizationFlows)
    assert len(auth.flows) == 1
    assert len([u for u in world.urls() if "well-known" in u]) == 2  # discovered once


async def test_bearer_and_none_providers() -> None:
    from funnel_auth import BearerAuth, NoAuth

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    for config in (BearerAuth(token=Secret("s3cr3t-tok")), NoAuth()):
        auth = create_auth(config, server_name="x", server_url=MCP)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
            await client.get(MCP)
        assert "s3cr3t" not in repr(auth)
    assert seen == ["Bearer s3cr3t-tok", None]


def test_bad_configurations_fail_early() -> None:
    from funnel_auth import AuthConfigError

    with pytest.raises(AuthConfigError, match="server name"):
        create_auth(OAuth2AuthorizationCode(), server_name="my server", server_url=MCP)
    with pytest.raises(AuthConfigError, match="redirect URI"):
        create_auth(
            OAuth2AuthorizationCode(redirect_uri="http://evil.example/cb"),
            server_name="x",
            server_url=MCP,
        )
    with pytest.raises(AuthConfigError, match="token endpoint"):
        create_auth(
            OAuth2ClientCredentials(
                client_id="c", client_secret=Secret("s"), token_endpoint="http://as.example/token"
            ),
            server_name="x",
            server_url=MCP,
        )


async def test_stored_tokens_for_another_resource_are_never_sent() -> None:
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    store = MemoryTokenStore()
    auth = code_auth(world, store)
    params = query(await required(auth, world))
    await auth.complete(params["state"], "the-code", None)
    assert await code_auth(world, store).get_tokens() is not None
    moved = create_auth(
        OAuth2AuthorizationCode(),
        redirect_uri=REDIRECT,
        server_name="demo",
        server_url="https://elsewhere.example/mcp",
        store=store,
    )
    assert isinstance(moved, AuthorizationCodeAuth)
    assert await moved.get_tokens() is None


# --------------------------------------------------------------------------- one state per server


async def test_begin_without_arguments_joins_the_flow_the_challenge_started() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    auth = code_auth(world)
    url = await required(auth, world)
    start = await auth.begin()  # the dashboard's Authorize link, a CLI
    assert start.authorization_url == url
    assert query(url)["scope"] == "read"
    assert isinstance(auth.flows, AuthorizationFlows)
    assert len(auth.flows) == 1


async def test_a_step_up_flow_carries_the_union_and_the_dashboard_joins_it() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    auth = code_auth(world)
    params = query(await required(auth, world))
    await auth.complete(params["state"], "code-1", None)
    world.forbidden_scope = "write"
    step_up = await required(auth, world)
    assert query(step_up)["scope"] == "read write"
    assert (await auth.begin()).authorization_url == step_up


async def test_at_most_three_authorizations_per_challenge_cycle() -> None:
    world = World(challenge=f'Bearer scope="admin", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    world.forbidden_scope = "admin"  # the server never accepts any token
    auth = code_auth(world)
    completed = 0
    for _ in range(5):
        try:
            url = await required(auth, world)
        except InsufficientScope:
            break
        await auth.complete(query(url)["state"], f"code-{completed}", None)
        completed += 1
    assert completed == 3
    with pytest.raises(InsufficientScope):
        await auth.begin()


async def test_a_request_the_server_accepts_ends_the_challenge_cycle() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    auth = code_auth(world)
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        for round_ in range(5):  # five logins in a row, each followed by a success
            params = query(await required(auth, world))
            await auth.complete(params["state"], f"code-{round_}", None)
            assert (await client.post(MCP, json={})).status_code == 200
            world.valid_tokens.clear()
            await auth.clear()


async def test_a_server_that_names_a_new_authorization_server_gets_a_new_registration() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    new_as = "https://as2.example.com"
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    world.as_docs[new_as + "/.well-known/oauth-authorization-server"] = as_doc(new_as)
    store = MemoryTokenStore()
    auth = code_auth(world, store)
    params = query(await required(auth, world))
    await auth.complete(params["state"], "code-1", None)
    old = await auth.get_tokens()
    assert old is not None and old.issuer == AS
    world.prm = {"resource": MCP, "authorization_servers": [new_as]}
    world.valid_tokens.clear()  # the server now only accepts tokens of the new AS
    url = await required(auth, world)
    assert url.startswith(new_as + "/authorize")
    assert [f["grant_type"] for f in world.token_forms] == [
        "authorization_code"
    ]  # no refresh at AS1
    registrations = [r for r in world.requests if str(r.url).endswith("/register")]
    assert [str(r.url) for r in registrations] == [AS + "/register", new_as + "/register"]
    assert await auth.get_tokens() == old  # kept until new ones exist
    await auth.complete(query(url)["state"], "code-2", None)
    new = await auth.get_tokens()
    assert new is not None and new.issuer == new_as


async def test_a_refresh_refused_with_invalid_client_registers_again() -> None:
    world = World(challenge=f'Bearer scope="read", resource_metadata="{World().prm_at}"')
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    store = MemoryTokenStore()
    auth = code_auth(world, store)
    params = query(await required(auth, world))
    await auth.complete(params["state"], "code-1", None)
    original = world.handle

    def forgetful(request: httpx.Request) -> httpx.Response:
        if str(request.url).endswith("/token") and b"refresh_token" in request.content:
            world.requests.append(request)
            return httpx.Response(401, json={"error": "invalid_client"})
        return original(request)

    world.valid_tokens.clear()
    transport = httpx.MockTransport(forgetful)
    auth._http_client = httpx.AsyncClient(transport=transport)
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        with pytest.raises(AuthorizationRequired):
            await client.post(MCP, json={})
    registrations = [r for r in world.requests if str(r.url).endswith("/register")]
    assert len(registrations) == 2


def test_a_synchronous_client_gets_a_clear_error_not_an_unauthenticated_request() -> None:
    world = World()
    auth = cc_auth(world, MemoryTokenStore())
    with (
        httpx.Client(transport=httpx.MockTransport(world.handle), auth=auth) as client,
        pytest.raises(AuthConfigError, match=r"httpx\.AsyncClient only"),
    ):
        client.post(MCP, json={})
    assert world.requests == []


def test_an_authorization_code_provider_needs_the_callers_redirect_uri() -> None:
    with pytest.raises(AuthConfigError, match="no redirect URI"):
        create_auth(OAuth2AuthorizationCode(), server_name="demo", server_url=MCP)


async def test_the_2025_03_26_fallback_accepts_another_issuer_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(prm=None, challenge="Bearer")
    origin = "https://mcp.example.com"
    world.as_docs[origin + "/.well-known/oauth-authorization-server"] = as_doc(
        "https://login.example.com/",
        authorization_endpoint=origin + "/authorize",
        token_endpoint=origin + "/token",
        registration_endpoint=origin + "/register",
    )
    auth = code_auth(world)
    with caplog.at_level(logging.WARNING):
        url = await required(auth, world)
    assert url.startswith(origin + "/authorize")
    assert any("2025-03-26 fallback" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- refresh timing


@pytest.mark.parametrize(
    ("lifetime", "due_after"),
    [(10.0, 7.5), (60.0, 45.0), (3600.0, 3540.0), (4.0, 3.0)],
)
def test_refresh_is_due_in_proportion_to_the_lifetime(lifetime: float, due_after: float) -> None:
    from funnel_auth._logic import refresh_due

    tokens = TokenSet(
        access_token="a", token_endpoint="t", client_id="c", issued_at=0.0, expires_at=lifetime
    )
    assert not refresh_due(tokens, now=due_after - 0.01)
    assert refresh_due(tokens, now=due_after)
    # Jitter is capped at half the margin: a 10 s token is never refreshed before 6.25 s.
    assert not refresh_due(tokens, now=lifetime * 0.625 - 0.01, jitter=1000)


async def test_ten_second_tokens_are_refreshed_once_per_lifetime_not_per_request() -> None:
    world = World(expires_in=10)
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    now = [1000.0]
    limiter = RateLimiter(max_attempts=2, window=60, clock=lambda: now[0])
    auth = create_auth(
        OAuth2ClientCredentials(
            client_id="svc", client_secret=Secret("s"), token_endpoint=AS + "/token"
        ),
        server_name="svc",
        server_url=MCP,
        http_client=clients(world),
        limiter=limiter,
        clock=lambda: now[0],
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        for _ in range(60):  # a minute of one call per second
            assert (await client.post(MCP, json={})).status_code == 200
            now[0] += 1.0
    grants = [f["grant_type"] for f in world.token_forms]
    assert grants[0] == "client_credentials"
    assert set(grants[1:]) == {"refresh_token"}
    assert 6 <= len(grants) <= 10  # about one per 7.5-10 s, never one per call


# --------------------------------------------------------------------------- machine grants


def _ec_key() -> tuple[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


def _verify_es256(jwt: str, public_key: Any) -> dict[str, Any]:
    import base64
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, payload, signature = jwt.split(".")
    raw = unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64(header)) == {"alg": "ES256", "typ": "JWT"}
    claims: dict[str, Any] = json.loads(unb64(payload))
    return claims


async def test_private_key_jwt_signs_a_fresh_assertion_for_the_issuer() -> None:
    pem, public_key = _ec_key()
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    now = [1_000_000.0]
    auth = create_auth(
        OAuth2ClientCredentials(client_id="svc", private_key=Secret(pem)),
        server_name="svc",
        server_url=MCP,
        http_client=clients(world),
        clock=lambda: now[0],
    )
    world.challenge = f'Bearer resource_metadata="{world.prm_at}"'
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        assert (await client.post(MCP, json={})).status_code == 200
    form = world.token_forms[0]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    claims = _verify_es256(form["client_assertion"], public_key)
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("svc", "svc", AS)
    assert claims["exp"] - claims["iat"] == 300 and claims["jti"]
    assert pem not in repr(auth) and "PRIVATE" not in repr(auth)


def test_a_private_key_that_is_not_one_is_a_configuration_error() -> None:
    with pytest.raises(AuthConfigError, match="not a usable PEM private key"):
        create_auth(
            OAuth2ClientCredentials(client_id="svc", private_key=Secret("-----BEGIN nonsense")),
            server_name="svc",
            server_url=MCP,
        )


async def test_enterprise_managed_authorization_exchanges_the_id_token_for_an_id_jag() -> None:
    from funnel_auth import OAuth2EnterpriseManaged

    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    world.challenge = f'Bearer resource_metadata="{world.prm_at}"'
    idp_forms: list[dict[str, str]] = []
    inner = world.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if str(request.url) == "https://idp.example.com/token":
            idp_forms.append({k: v[0] for k, v in parse_qs(request.content.decode()).items()})
            return httpx.Response(
                200,
                json={
                    "access_token": "the-id-jag",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "token_type": "N_A",
                },
            )
        return inner(request)

    transport = httpx.MockTransport(handle)
    auth = create_auth(
        OAuth2EnterpriseManaged(
            client_id="mcp-client",
            client_secret=Secret("s3cret"),
            id_token=Secret("the-id-token"),
            idp_token_endpoint="https://idp.example.com/token",
            idp_client_id="idp-client",
        ),
        server_name="svc",
        server_url=MCP,
        http_client=httpx.AsyncClient(transport=transport),
    )
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        assert (await client.post(MCP, json={})).status_code == 200
    (exchange,) = idp_forms
    assert exchange["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert exchange["subject_token"] == "the-id-token"
    assert exchange["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    assert exchange["requested_token_type"] == "urn:ietf:params:oauth:token-type:id-jag"
    assert (exchange["audience"], exchange["resource"]) == (AS, MCP)
    (grant,) = world.token_forms
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant["assertion"] == "the-id-jag"
    token_request = next(r for r in world.requests if str(r.url).endswith("/token"))
    assert token_request.headers["authorization"].startswith("Basic ")


async def test_workload_identity_presents_the_platform_jwt_read_afresh_from_its_file(
    tmp_path: Any,
) -> None:
    from funnel_auth import JwtBearerAuth, OAuth2JwtBearer

    token_file = tmp_path / "token"
    token_file.write_text("workload-jwt-1\n")
    world = World()
    world.as_docs["https://as.example.com/.well-known/oauth-authorization-server/tenant"] = as_doc()
    world.challenge = f'Bearer resource_metadata="{world.prm_at}"'
    auth = create_auth(
        OAuth2JwtBearer(client_id="wl", assertion_file=str(token_file)),
        server_name="svc",
        server_url=MCP,
        http_client=clients(world),
    )
    assert isinstance(auth, JwtBearerAuth)
    async with httpx.AsyncClient(transport=httpx.MockTransport(world.handle), auth=auth) as client:
        assert (await client.post(MCP, json={})).status_code == 200
        token_file.write_text("workload-jwt-2\n")
        await auth.clear()
        world.valid_tokens.clear()
        assert (await client.post(MCP, json={})).status_code == 200
    assert [f["assertion"] for f in world.token_forms] == ["workload-jwt-1", "workload-jwt-2"]
    assert {f["client_id"] for f in world.token_forms} == {"wl"}
