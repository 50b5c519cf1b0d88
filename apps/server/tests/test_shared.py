"""SharedState against a real redis-server: pub/sub, counters, shared pending logins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from funnel_auth import AuthError, InvalidState, PendingAuthorization
from funnel_auth._models import ClientRegistration
from funnel_server._shared import (
    SharedFlows,
    SharedState,
    SharedStateError,
    SharedStateUnavailable,
    shared_state_url,
)
from funnel_tokenstore import StateKeys, generate_state_key
from funnel_tokenstore.testing import redis_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("redis-server must be installed in CI")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with redis_server() as url:
        yield url


@pytest.fixture
def keys() -> StateKeys:
    return StateKeys.parse(generate_state_key())


@pytest.fixture
async def pair(redis_url: str, keys: StateKeys) -> AsyncIterator[tuple[SharedState, SharedState]]:
    """Two replicas' shared state on one Redis, in a namespace of their own."""
    namespace = f"t{os.urandom(4).hex()}"
    async with (
        SharedState(redis_url, keys=keys, namespace=namespace) as one,
        SharedState(redis_url, keys=keys, namespace=namespace) as two,
    ):
        yield one, two


def test_the_url_must_be_redis_rediss_or_unix() -> None:
    assert shared_state_url(None, {}) is None
    assert shared_state_url("redis://127.0.0.1:6379/0", {}) == "redis://127.0.0.1:6379/0"
    assert shared_state_url(None, {"FUNNEL_SHARED_STATE": "unix:///run/r.sock"})
    with pytest.raises(SharedStateError, match="use redis://"):
        shared_state_url("http://127.0.0.1:6379", {})
    with pytest.raises(SharedStateError) as caught:
        shared_state_url("memcached://:hunter2@cache", {})
    assert "hunter2" not in str(caught.value)


def test_shared_state_without_a_state_key_is_a_clear_startup_error() -> None:
    with pytest.raises(SharedStateError, match="needs FUNNEL_STATE_KEY"):
        SharedState.from_environment("redis://127.0.0.1:1/0", {})
    with pytest.raises(SharedStateError, match="FUNNEL_STATE_KEY"):
        SharedState.from_environment("redis://127.0.0.1:1/0", {"FUNNEL_STATE_KEY": "short"})
    assert SharedState.from_environment(None, {}) is None


def test_without_the_flag_redis_is_never_imported() -> None:
    code = (
        "import sys, funnel_server._cli, funnel_server._app, funnel_server._calls; "
        "print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_an_unreachable_redis_fails_entering_with_the_password_masked(
    keys: StateKeys,
) -> None:
    shared = SharedState("redis://:hunter2@127.0.0.1:1/0", keys=keys)
    with pytest.raises(SharedStateUnavailable) as caught:
        await shared.__aenter__()
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


async def test_a_message_published_by_one_replica_reaches_the_subscribers_of_both(
    pair: tuple[SharedState, SharedState],
) -> None:
    one, two = pair
    async with one.subscribe("events") as mine, two.subscribe("events") as theirs:
        await one.publish("events", b"tokens changed")
        with anyio.fail_after(5):
            assert await mine.receive() == b"tokens changed"
            assert await theirs.receive() == b"tokens changed"
    assert await one.ping() and await two.ping()


async def test_a_limit_is_counted_once_across_replicas_and_refuses_without_counting(
    pair: tuple[SharedState, SharedState],
) -> None:
    one, two = pair
    bucket = [("tool:x", 5, 60.0)]
    waits = [await (one if n % 2 else two).acquire(bucket) for n in range(8)]
    assert waits[:5] == [0.0] * 5
    assert all(0 < wait <= 60 for wait in waits[5:])
    # A call refused by one full bucket is not counted in the others.
    other = [("tool:y", 10, 60.0)]
    assert await one.acquire([*bucket, *other]) > 0
    assert [await two.acquire(other) for _ in range(10)] == [0.0] * 10
    assert await two.acquire(other) > 0


class Owner:
    """A provider stand-in: the registry only needs its server name (and its hooks)."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.finished: list[AuthError | None] = []

    async def _exchange(self, pending: PendingAuthorization, **_: object) -> None:
        return None

    def _flow_finished(self, pending: PendingAuthorization, error: AuthError | None) -> None:
        self.finished.append(error)


def pending_for(owner: Owner, flows: SharedFlows, state: str = "state-1") -> PendingAuthorization:
    return PendingAuthorization(
        state=state,
        verifier="the-pkce-verifier-" + "x" * 30,
        issuer="https://as.example",
        iss_advertised=True,
        authorization_url="https://as.example/authorize?state=" + state,
        redirect_uri="https://funnel.example/api/oauth/callback",
        scope="mcp:read",
        resource="https://mcp.example/mcp",
        token_endpoint="https://as.example/token",
        registration=ClientRegistration(issuer="https://as.example", client_id="c1"),
        expires_at=flows.now() + flows.ttl,
        provider=owner,
    )


async def test_a_login_begun_on_one_replica_is_joined_and_completed_once_on_another(
    pair: tuple[SharedState, SharedState],
) -> None:
    one, two = pair
    flows_a, flows_b = SharedFlows(one), SharedFlows(two)
    owner_a, owner_b = Owner("srv"), Owner("srv")
    flows_a.attach(owner_a)
    flows_b.attach(owner_b)
    async with flows_a.lock("srv"):
        await flows_a.add(pending_for(owner_a, flows_a))
    # Sealed at rest: neither the verifier nor the state is readable in Redis.
    for key in await one.client.keys(one.key("flow", "*")):
        raw = await one.client.get(key)
        assert raw is not None and b"pkce-verifier" not in raw and b"state-1" not in raw
    joined = await flows_b.find("srv", "mcp:read")
    assert joined is not None and joined.state == "state-1" and joined.provider is owner_b
    assert await flows_b.find("srv", "mcp:write") is None
    # The callback lands on B: B's provider completes it; the state is then used up everywhere.
    assert await flows_b.complete("state-1", "code", "https://as.example") == "srv"
    with pytest.raises(InvalidState):
        await flows_a.complete("state-1", "code", "https://as.example")
    assert await flows_a.find("srv", "mcp:read") is None


async def test_the_flow_lock_is_held_by_one_replica_at_a_time(
    pair: tuple[SharedState, SharedState],
) -> None:
    one, two = pair
    flows_a = SharedFlows(one)
    lease_key = two.key("flow", "lock", "srv")
    async with flows_a.lock("srv"):
        # Another replica cannot take the lease while A holds it…
        assert not await two.client.lock(lease_key).acquire(blocking=False)
    # …and can once A has let go.
    lease = two.client.lock(lease_key)
    assert await lease.acquire(blocking=False)
    await lease.release()


async def test_failed_inbound_auth_is_counted_once_across_replicas(
    pair: tuple[SharedState, SharedState],
) -> None:
    import httpx

    from funnel_proxy import Funnel, FunnelConfig
    from funnel_server._app import AppSettings, create_app
    from funnel_server._serve import bind, running_server

    settings = AppSettings(api_token="the-right-token-" + "x" * 16, failed_auth_attempts=4)
    async with Funnel(FunnelConfig(servers=()), ready_timeout=0) as funnel:
        apps = [create_app(funnel, settings, shared=shared) for shared in pair]
        async with (
            running_server(apps[0], bind("127.0.0.1", 0)) as one,
            running_server(apps[1], bind("127.0.0.1", 0)) as two,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{one.port}") as a,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.port}") as b,
        ):
            statuses = []
            for n in range(6):
                client = a if n % 2 else b
                response = await client.get(
                    "/api/servers", headers={"Authorization": f"Bearer guess-{n}"}
                )
                statuses.append(response.status_code)
            ready = await a.get("/api/health/ready")
    # Four failures in all (two on each replica) used up the shared budget.
    assert statuses == [401, 401, 401, 401, 429, 429]
    assert ready.status_code == 200
    assert ready.json()["sharedState"] == "ok"


def test_the_public_url_is_the_redirect_uri_and_passes_the_host_and_origin_checks() -> None:
    from funnel_server._cli import _funnel_options
    from funnel_server._security import OriginPolicy
    from funnel_server._settings import AppSettings, check_public_url

    public = check_public_url("https://funnel.example.com:8443/")
    assert public == "https://funnel.example.com:8443"
    behind = _funnel_options(3456, public)
    assert behind["redirect_uri"] == "https://funnel.example.com:8443/api/oauth/callback"
    assert behind["authorize_link"]("a b") == "/api/oauth/authorize/a%20b"
    own = _funnel_options(3456)
    assert own["redirect_uri"] == "http://localhost:3456/api/oauth/callback"
    settings = AppSettings(api_token="t" * 20, bind_host="127.0.0.1", public_url=public)
    policy = OriginPolicy(
        bind_host=settings.bind_host,
        allowed_hosts=settings.public_hosts(),
        allowed_origins=settings.public_origins(),
    )
    host = "funnel.example.com:8443"
    assert policy.host_ok(host)
    assert policy.origin_ok("https://funnel.example.com:8443", host)
    assert not policy.host_ok("evil.example")
    assert not policy.origin_ok("https://evil.example", host)
    for bad in ("funnel.example.com", "ftp://x", "https://h/?q=1", "https://u:p@h"):
        with pytest.raises(ValueError, match="--public-url"):
            check_public_url(bad)


async def test_when_redis_goes_away_limits_fail_closed_and_auth_failures_count_locally(
    redis_url: str, keys: StateKeys
) -> None:
    from funnel_auth import RateLimiter
    from funnel_server._security import InboundAuth

    with redis_server() as own_url:
        shared = SharedState(own_url, keys=keys)
        await shared.__aenter__()
    try:  # the server has stopped; the client is still "connected"
        assert not await shared.ping()
        with pytest.raises(SharedStateUnavailable):
            await shared.acquire([("tool:x", 5, 60.0)])
        auth = InboundAuth("t" * 20, limiter=RateLimiter(max_attempts=2, window=60), shared=shared)
        waits = [await auth.failed("10.0.0.1") for _ in range(3)]
        assert waits[:2] == [0.0, 0.0] and waits[2] > 0
    finally:
        await shared.__aexit__(None, None, None)


def test_check_reads_the_shared_state_and_says_when_it_cannot(
    redis_url: str, tmp_path: Path
) -> None:
    funnel = str(Path(sys.executable).with_name("funnel-server"))
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_STATE_KEY": generate_state_key(),
    }

    def check(url: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [funnel, "--shared-state", url, "check"],
            env={**env, **more},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    reached = check(redis_url)
    assert reached.returncode == 0, reached.stderr
    assert "demo" in reached.stdout and "connected" in reached.stdout
    unreachable = check("redis://127.0.0.1:1/0")
    assert unreachable.returncode == 1
    assert "cannot reach the shared state at redis://127.0.0.1:1/0" in unreachable.stderr
    keyless = check(redis_url, FUNNEL_STATE_KEY="")
    assert keyless.returncode == 2
    assert "FUNNEL_STATE_KEY" in keyless.stderr
