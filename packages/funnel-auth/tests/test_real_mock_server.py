"""Client credentials and token-endpoint failure handling against oauth2-mock-server,
scripted over stdin to answer the next token requests with errors or garbage."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from funnel_auth import (
    AuthServerUnavailable,
    ClientCredentialsAuth,
    InvalidGrant,
    OAuth2ClientCredentials,
    Secret,
    TokenRequestError,
    create_auth,
)

REDIRECT = "http://localhost:3456/api/oauth/callback"

if TYPE_CHECKING:
    from conftest import NodePeer, RecordingStore, ResourceServer

pytestmark = pytest.mark.anyio


def cc_auth(
    rs: ResourceServer, store: RecordingStore, token_endpoint: str, **config: str
) -> ClientCredentialsAuth:
    auth = create_auth(
        OAuth2ClientCredentials(
            client_id="svc",
            client_secret=Secret("s3cret"),
            token_endpoint=token_endpoint,
            **config,  # type: ignore[arg-type]
        ),
        server_name="svc",
        server_url=rs.url,
        store=store,
    )
    assert isinstance(auth, ClientCredentialsAuth)
    return auth


async def test_client_credentials_get_a_token_before_the_first_request(
    mock_as: NodePeer, mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    auth = cc_auth(mock_rs, mstore, mock_as.url + "/token", scope="mcp:read", audience="api://x")
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.post(mock_rs.url, json={})).status_code == 200
    assert mock_rs.requests == 1  # no 401 round trip
    [tokens] = await mstore.token_sets()
    assert tokens.scope == "mcp:read"
    assert tokens.resource == mock_rs.url


async def test_an_expired_client_credentials_token_is_renewed_once_for_twenty_concurrent_requests(
    mock_as: NodePeer, mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    auth = cc_auth(mock_rs, mstore, mock_as.url + "/token", auth_method="client_secret_post")
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.post(mock_rs.url, json={})).status_code == 200
    await mstore.expire_tokens(now=time.time())
    auth = cc_auth(mock_rs, mstore, mock_as.url + "/token")
    statuses: list[int] = []
    async with httpx.AsyncClient(auth=auth) as client:

        async def call() -> None:
            statuses.append((await client.post(mock_rs.url, json={})).status_code)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(call)
    assert statuses == [200] * 20
    assert mock_as.count("token", "client_credentials") == 2


async def test_a_malformed_token_response_is_a_typed_error_and_nothing_is_stored(
    mock_as: NodePeer, mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    await mock_as.command({"token_status": 200, "token_body": {"token_type": "Bearer"}})
    auth = cc_auth(mock_rs, mstore, mock_as.url + "/token")
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(TokenRequestError, match="malformed token response"):
            await client.post(mock_rs.url, json={})
    assert await mstore.token_sets() == []


async def test_an_oauth_error_keeps_its_code_and_never_the_secret(
    mock_as: NodePeer, mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    await mock_as.command(
        {
            "token_status": 401,
            "token_body": {
                "error": "invalid_client",
                "error_description": "bad client_secret=s3cret",
            },
        }
    )
    auth = cc_auth(mock_rs, mstore, mock_as.url + "/token")
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(TokenRequestError) as info:
            await client.post(mock_rs.url, json={})
    assert info.value.error == "invalid_client"
    assert "s3cret" not in str(info.value)
    assert await mstore.token_sets() == []


async def test_tokens_are_kept_when_refresh_meets_a_5xx_and_cleared_on_invalid_grant(
    mock_as: NodePeer, mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    from funnel_auth import AuthorizationCodeAuth, OAuth2AuthorizationCode
    from funnel_auth.testing import follow_authorization

    config = OAuth2AuthorizationCode(client_id="app")

    def make() -> AuthorizationCodeAuth:
        auth = create_auth(
            config, redirect_uri=REDIRECT, server_name="code", server_url=mock_rs.url, store=mstore
        )
        assert isinstance(auth, AuthorizationCodeAuth)
        return auth

    auth = make()
    start = await auth.begin()
    callback = await follow_authorization(start.authorization_url)
    assert callback.state and callback.code
    await auth.complete(callback.state, callback.code, callback.iss)
    [before] = await mstore.token_sets()
    assert before.refresh_token

    await mstore.expire_tokens(now=time.time())
    await mock_as.command({"token_status": 503, "token_body": "busy"})
    async with httpx.AsyncClient(auth=make()) as client:
        with pytest.raises(AuthServerUnavailable):
            await client.post(mock_rs.url, json={})
    [kept] = await mstore.token_sets()
    assert kept.refresh_token == before.refresh_token

    await mock_as.command({"token_status": 400, "token_body": {"error": "invalid_grant"}})
    auth = make()
    refreshed = await auth._renew(kept, force=True)
    assert refreshed is None
    assert await mstore.token_sets() == []


async def test_an_unreachable_token_endpoint_is_unavailable_not_fatal(
    mock_rs: ResourceServer, mstore: RecordingStore
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = cc_auth(mock_rs, mstore, f"http://127.0.0.1:{port}/token")
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(AuthServerUnavailable, match="cannot reach"):
            await client.post(mock_rs.url, json={})
    assert await mstore.token_sets() == []


def test_invalid_grant_is_a_token_request_error() -> None:
    assert issubclass(InvalidGrant, TokenRequestError)
