"""An accelerated soak: short-lived tokens, rotating refresh tokens, faults, three processes.

A real authorization server (oauth2-mock-server behind ``tools/peers/rotating-as.mjs``)
issues access tokens that live 3 seconds and single-use refresh tokens (a reused one is
``invalid_grant``, as OAuth 2.1 requires for public clients). A person logs in once. Then
three worker processes (``soak_worker.py``) share one file token store and call a
protected resource server for ``SOAK_SECONDS``, while the test injects 503s, 429s and
hangs (timeouts) at the token endpoint and restarts one worker twice.

The soak passes when nobody would have to log in again, no refresh token was ever lost
(the AS saw no reuse), and the refreshes are single-flight across the processes: about
one per token lifetime in total, not one per process.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx
import pytest

from funnel_auth import (
    AuthorizationCodeAuth,
    AuthorizationRequired,
    OAuth2AuthorizationCode,
    create_auth,
)
from funnel_auth.testing import follow_authorization
from funnel_tokenstore import FileTokenStore

if TYPE_CHECKING:
    from conftest import NodePeer, ResourceServer

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

TTL = 3.0  # conftest.SOAK_TOKEN_TTL
SOAK_SECONDS = 30.0
WORKER = Path(__file__).with_name("soak_worker.py")


@asynccontextmanager
async def worker(rs_url: str, token_file: Path, seconds: float) -> AsyncIterator[anyio.abc.Process]:
    process = await anyio.open_process(
        [sys.executable, str(WORKER), rs_url, str(token_file), str(seconds)], stderr=None
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def finish(process: anyio.abc.Process) -> dict[str, Any]:
    """Wait for a worker to exit; return its last JSON line."""
    assert process.stdout is not None
    output = b""
    with anyio.fail_after(SOAK_SECONDS + 30):
        async for chunk in process.stdout:
            output += chunk
        await process.wait()
    lines = [json.loads(line) for line in output.decode().splitlines() if line.strip()]
    assert process.returncode == 0, lines
    result: dict[str, Any] = lines[-1]
    return result


async def wait_for_refreshes(peer: NodePeer, count: int) -> None:
    with anyio.fail_after(SOAK_SECONDS):
        while refreshes(peer) < count:
            await peer.changed.wait()


def refreshes(peer: NodePeer) -> int:
    return sum(
        1
        for e in peer.events
        if e.get("event") == "token"
        and e.get("grant_type") == "refresh_token"
        and e.get("outcome") == "ok"
    )


async def test_three_processes_keep_short_lived_rotating_tokens_alive_through_faults_and_restarts(
    tmp_path: Path, rotating_as: NodePeer, rotating_rs: ResourceServer
) -> None:
    rs = rotating_rs
    token_file = tmp_path / "tokens.json"
    # A person logs in once, with the provider the workers use (soak_worker.make_auth).
    auth = create_auth(
        OAuth2AuthorizationCode(client_id="app"),
        server_name="soak",
        server_url=rs.url,
        store=FileTokenStore(token_file),
        redirect_uri="http://localhost:3456/api/oauth/callback",
    )
    assert isinstance(auth, AuthorizationCodeAuth)
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(AuthorizationRequired) as info:
            await client.post(rs.url, json={})
        callback = await follow_authorization(info.value.authorization_url)
        await auth.complete(callback.state or "", callback.code, callback.iss)
        assert (await client.post(rs.url, json={})).status_code == 200

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    async with (
        worker(rs.url, token_file, SOAK_SECONDS) as first,
        worker(rs.url, token_file, SOAK_SECONDS) as second,
        worker(rs.url, token_file, SOAK_SECONDS) as third,
    ):
        await wait_for_refreshes(rotating_as, 2)
        await rotating_as.command({"token_status": 503, "count": 2})
        await wait_for_refreshes(rotating_as, 4)
        # A restart: SIGTERM, as a service manager sends it, then a new process.
        third.send_signal(signal.SIGTERM)
        results.append(await finish(third))
        async with worker(rs.url, token_file, SOAK_SECONDS / 2) as third_again:
            await rotating_as.command({"token_status": 429, "count": 2})
            await wait_for_refreshes(rotating_as, 6)
            await rotating_as.command({"delay_ms": 1500, "count": 1})  # a timeout
            await wait_for_refreshes(rotating_as, 7)
            third_again.send_signal(signal.SIGTERM)
            results.append(await finish(third_again))
        async with worker(rs.url, token_file, SOAK_SECONDS / 4) as third_once_more:
            results.append(await finish(third_once_more))
        results.append(await finish(first))
        results.append(await finish(second))
    elapsed = time.monotonic() - started

    events = [e for e in rotating_as.events if e.get("event") == "token"]
    grants = [e.get("grant_type") for e in events if e.get("outcome") == "ok"]
    injected = sum(1 for e in events if e.get("outcome") == "injected")
    # Zero forced re-logins: one authorization code, ever; every worker ended normally.
    assert grants.count("authorization_code") == 1
    assert all(r["event"] == "done" for r in results), results
    # Zero lost refresh tokens: the AS never saw a used refresh token again.
    assert not [e for e in events if e.get("outcome") == "reuse"]
    assert injected == 5
    # Single-flight across processes: about one refresh per lifetime in all (the margin
    # is 25 % of 3 s plus up to half that in jitter), never one per process.
    done = refreshes(rotating_as)
    assert elapsed / TTL - 1 <= done <= elapsed / (TTL * 0.625) + injected + 2, (done, elapsed)
    assert sum(r["ok"] for r in results) > 3 * SOAK_SECONDS  # the workers were busy
