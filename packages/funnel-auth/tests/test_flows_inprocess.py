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
    AuthorizationCodeAuth,
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
