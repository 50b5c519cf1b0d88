"""The authorization-code flow against oidc-provider, a strict certified AS, and a real
resource server that validates tokens by introspection (audience and scope)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from funnel_auth import (
    AuthorizationCodeAuth,
    AuthorizationDenied,
    AuthorizationFlows,
    AuthorizationRequired,
    DiscoveryError,
    InvalidState,
    IssuerMismatch,
    OAuth2AuthorizationCode,
    RegistrationError,
    create_auth,
    httpx2_auth,
)
from funnel_auth.testing import follow_authorization

REDIRECT = "http://localhost:3456/api/oauth/callback"

if TYPE_CHECKING:
    from conftest import NodePeer, RecordingStore, ResourceServer

pytestmark = pytest.mark.anyio


def code_auth(
    rs: ResourceServer,
    store: RecordingStore,
    config: OAuth2AuthorizationCode | None = None,
    **options: object,
) -> AuthorizationCodeAuth:
    auth = create_auth(
        config or OAuth2AuthorizationCode(),
        redirect_uri=REDIRECT,
        server_name="demo",
        server_url=rs.url,
        store=store,
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(auth, AuthorizationCodeAuth)
    return auth


async def authorization_url(client: httpx.AsyncClient, url: str) -> str:
    with pytest.raises(AuthorizationRequired) as info:
        await client.post(url, json={})
    return info.value.authorization_url


async def authorize(auth: AuthorizationCodeAuth, url: str) -> None:
    callback = await follow_authorization(url)
    assert callback.code and callback.state
    await auth.complete(callback.state, callback.code, callback.iss)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_a_request_needing_a_person_raises_with_a_url_and_succeeds_after_the_callback(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        url = await authorization_url(client, rs.url)
        params = query(url)
        assert params["code_challenge_method"] == "S256"
        assert params["resource"] == rs.url
        assert params["scope"].split() == [
            "mcp:read",
            "offline_access",
        ]  # challenge scope + refresh
        assert params["redirect_uri"] == "http://localhost:3456/api/oauth/callback"
        await authorize(auth, url)
        response = await client.post(rs.url, json={})
    assert response.status_code == 200
    [tokens] = await store.token_sets()
    assert tokens.issuer == oidc.url
    # oidc-provider supports DPoP, but this resource server takes Bearer tokens only.
    assert tokens.token_type == "Bearer"
    assert tokens.refresh_token is not None
    assert tokens.resource == rs.url
    assert oidc.count("grant", "authorization_code") == 1
    # Nothing secret in any funnel log line or audit field.
    secrets = [tokens.access_token, tokens.refresh_token, params["state"]]
    events = set()
    for record in caplog.records:
        if record.name.startswith("funnel"):
            text = record.getMessage() + repr(record.__dict__)
            assert not [s for s in secrets if s in text], record.getMessage()
            events.add(getattr(record, "event", None))
    assert {"auth.client_registered", "auth.flow_started", "auth.flow_completed"} <= events


async def test_tokens_survive_a_restart_and_an_expired_token_is_refreshed_exactly_once_under_load(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        await authorize(auth, await authorization_url(client, rs.url))
    del auth, client

    # A new process: new objects, same store, no new authorization.
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.post(rs.url, json={})).status_code == 200
    assert oidc.count("grant", "authorization_code") == 1
    [before] = await store.token_sets()

    await store.expire_tokens(now=time.time())
    auth = code_auth(rs, store)
    statuses: list[int] = []
    async with httpx.AsyncClient(auth=auth) as client:

        async def call() -> None:
            statuses.append((await client.post(rs.url, json={})).status_code)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(call)
    assert statuses == [200] * 20
    assert oidc.count("grant", "refresh_token") == 1
    [after] = await store.token_sets()
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # oidc-provider rotates for public clients
    # The rotated tokens were persisted before the new access token was first used.
    assert rs.log.index(f"stored:{after.access_token}") < rs.log.index(
        f"request:{after.access_token}"
    )


async def test_a_pre_registered_client_is_used_without_registration_and_bound_to_its_issuer(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store, OAuth2AuthorizationCode(client_id="pre-client"))
    async with httpx.AsyncClient(auth=auth) as client:
        url = await authorization_url(client, rs.url)
        assert query(url)["client_id"] == "pre-client"
        await authorize(auth, url)
        assert (await client.post(rs.url, json={})).status_code == 200
    assert not [k for k in store.written if ":client:" in k]


async def test_a_pre_registered_client_for_another_issuer_is_refused(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    config = OAuth2AuthorizationCode(client_id="pre-client", issuer="https://other-as.example")
    auth = code_auth(rs, store, config)
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(RegistrationError, match=r"other-as\.example"):
            await client.post(rs.url, json={})


async def test_dynamic_registration_is_native_keyed_by_issuer_and_reused(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    first = code_auth(rs, store)
    async with httpx.AsyncClient(auth=first) as client:
        url1 = await authorization_url(client, rs.url)
    second = create_auth(
        OAuth2AuthorizationCode(),
        redirect_uri=REDIRECT,
        server_name="other",
        server_url=rs.url,
        store=store,
    )
    async with httpx.AsyncClient(auth=second) as client:
        url2 = await authorization_url(client, rs.url)
    assert query(url1)["client_id"] == query(url2)["client_id"]
    assert len([k for k in store.written if ":client:" in k]) == 1


async def test_a_wrong_iss_is_rejected_before_the_code_is_used_and_nothing_is_stored(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        callback = await follow_authorization(await authorization_url(client, rs.url))
    assert callback.iss == oidc.url
    assert callback.state and callback.code
    with pytest.raises(IssuerMismatch):
        await auth.complete(callback.state, callback.code, oidc.url + "/")  # no normalisation
    with pytest.raises(InvalidState):  # the state was spent
        await auth.complete(callback.state, callback.code, callback.iss)
    callback2 = await follow_authorization((await auth.begin()).authorization_url)
    assert callback2.state
    with pytest.raises(IssuerMismatch):  # advertised but missing is rejected too
        await auth.complete(callback2.state, callback2.code, None)
    assert await store.token_sets() == []
    assert oidc.count("grant", "authorization_code") == 0


async def test_a_denied_authorization_is_a_typed_error_and_nothing_is_stored(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store)
    start = await auth.begin()
    callback = await follow_authorization(start.authorization_url, approve=False)
    assert callback.error == "access_denied"
    assert callback.state == start.state
    with pytest.raises(AuthorizationDenied) as info:
        await auth.complete(callback.state, callback.code, callback.iss, error=callback.error)
    assert info.value.error == "access_denied"
    assert await store.token_sets() == []


async def test_unknown_reused_and_expired_states_are_rejected(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    now = [0.0]
    flows = AuthorizationFlows(ttl=300, clock=lambda: now[0])
    auth = code_auth(rs, store, flows=flows)
    with pytest.raises(InvalidState) as unknown:
        await flows.complete("not-a-state", "code", oidc.url)
    assert unknown.value.reason == "unknown"
    start = await auth.begin()
    callback = await follow_authorization(start.authorization_url)
    assert callback.state and callback.code
    now[0] = 301.0
    with pytest.raises(InvalidState) as expired:
        await flows.complete_callback(callback.params)
    assert expired.value.reason == "expired"
    with pytest.raises(InvalidState) as reused:
        await flows.complete_callback(callback.params)
    assert reused.value.reason == "unknown"
    assert await store.token_sets() == []


async def test_insufficient_scope_steps_up_with_the_union_of_scopes(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store)
    admin = rs.url + "/admin"
    async with httpx.AsyncClient(auth=auth) as client:
        await authorize(auth, await authorization_url(client, rs.url))
        url = await authorization_url(client, admin)
        assert query(url)["scope"].split() == ["mcp:read", "mcp:admin", "offline_access"]
        await authorize(auth, url)
        assert (await client.post(admin, json={})).status_code == 200
        assert (await client.post(rs.url, json={})).status_code == 200


async def test_metadata_whose_resource_names_another_server_is_rejected(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    rs.prm_resource = "http://127.0.0.1:1/elsewhere"
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(DiscoveryError, match="not this server"):
            await client.post(rs.url, json={})


async def test_without_resource_metadata_in_the_challenge_the_root_well_known_is_found_and_scopes_supported_used(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    rs.challenge_metadata = False
    rs.challenge_scope = None
    rs.prm_location = "root"
    rs.scopes_supported = ["mcp:read", "mcp:write"]
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        url = await authorization_url(client, rs.url)
        assert query(url)["scope"].split() == ["mcp:read", "mcp:write", "offline_access"]
        await authorize(auth, url)
        assert (await client.post(rs.url, json={})).status_code == 200


async def test_a_revoked_refresh_token_clears_the_tokens_and_asks_for_authorization_again(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        await authorize(auth, await authorization_url(client, rs.url))
        [tokens] = await store.token_sets()
        assert tokens.refresh_token
        revoked = await client.post(
            oidc.url + "/token/revocation",
            data={"token": tokens.refresh_token, "client_id": tokens.client_id},
            auth=httpx.Auth(),
        )
        assert revoked.status_code == 200
    await store.expire_tokens(now=time.time())
    auth = code_auth(rs, store)
    async with httpx.AsyncClient(auth=auth) as client:
        await authorization_url(client, rs.url)
    assert await store.token_sets() == []
    assert oidc.count("grant_error", "refresh_token") == 1


async def test_wait_authorized_lets_a_request_wait_for_the_callback(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    urls: list[str] = []
    shown = anyio.Event()

    def show(url: str) -> None:
        urls.append(url)
        shown.set()

    auth = code_auth(rs, store, wait_timeout=10, on_authorization_required=show)
    statuses: list[int] = []
    async with httpx.AsyncClient(auth=auth) as client, anyio.create_task_group() as tg:

        async def call() -> None:
            statuses.append((await client.post(rs.url, json={})).status_code)

        tg.start_soon(call)
        with anyio.fail_after(10):
            await shown.wait()
        await authorize(auth, urls[0])
    assert statuses == [200]


async def test_client_credentials_discover_the_token_endpoint_and_get_an_audience_bound_token(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore
) -> None:
    from funnel_auth import OAuth2ClientCredentials, Secret

    config = OAuth2ClientCredentials(client_id="cc-client", client_secret=Secret("cc-secret"))
    auth = create_auth(config, server_name="svc", server_url=rs.url, store=store)
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.post(rs.url, json={})).status_code == 200
        assert (await client.post(rs.url, json={})).status_code == 200
    [tokens] = await store.token_sets()
    assert tokens.issuer == oidc.url
    assert tokens.scope == "mcp:read"
    assert oidc.count("grant", "client_credentials") == 1


def _client(kind: str, auth: AuthorizationCodeAuth) -> Any:
    """An ``httpx`` client, or an ``httpx2`` one (the MCP SDK 2.x's) with the same provider."""
    if kind == "httpx2":
        import httpx2

        return httpx2.AsyncClient(auth=httpx2_auth(auth))
    return httpx.AsyncClient(auth=auth)


@pytest.mark.parametrize("kind", ["httpx", "httpx2"])
async def test_dpop_bound_tokens_work_survive_a_restart_and_refresh_with_the_stored_key(
    oidc: NodePeer, rs: ResourceServer, store: RecordingStore, kind: str
) -> None:
    # A DPoP resource server (challenges with the DPoP scheme, demands its nonce) in
    # front of oidc-provider, which binds access and refresh tokens to the proof's key.
    rs.dpop = True
    rs.dpop_nonce = "rs-nonce-1"
    auth = code_auth(rs, store)
    async with _client(kind, auth) as client:
        await authorize(auth, await authorization_url(client, rs.url))
        first = await client.post(rs.url, json={})
        second = await client.post(rs.url + "?page=2", json={})
    assert (first.status_code, second.status_code) == (200, 200), rs.dpop_errors
    [tokens] = await store.token_sets()
    assert tokens.token_type == "DPoP"
    assert tokens.refresh_token is not None
    assert "funnel-auth:dpop:demo" in store.written

    # A restart: new objects, the same store. The expired token is refreshed with a
    # proof of the stored key (oidc-provider checks the refresh token's binding).
    await store.expire_tokens(now=time.time())
    auth = code_auth(rs, store)
    async with _client(kind, auth) as client:
        assert (await client.post(rs.url, json={})).status_code == 200, rs.dpop_errors
    assert oidc.count("grant", "authorization_code") == 1
    assert oidc.count("grant", "refresh_token") == 1
    [after] = await store.token_sets()
    assert after.token_type == "DPoP"
    assert after.access_token != tokens.access_token
    assert rs.dpop_errors == []
    assert len(rs.dpop_jtis) == len(set(rs.dpop_jtis)) >= 3

    # Without the stored key the binding cannot be proven: the AS refuses the refresh
    # and a person must authorize again (so the stored key is what kept it alive).
    await store.expire_tokens(now=time.time())
    await store.delete("funnel-auth:dpop:demo")
    auth = code_auth(rs, store)
    async with _client(kind, auth) as client:
        with pytest.raises(AuthorizationRequired):
            await client.post(rs.url, json={})
    assert oidc.count("grant_error", "refresh_token") == 1
