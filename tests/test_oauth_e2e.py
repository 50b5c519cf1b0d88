"""A complete OAuth authorization code flow end to end, with nothing mocked.

Every party is a real process on 127.0.0.1: oidc-provider (a certified authorization
server), an official-SDK MCP server behind a resource-server middleware that validates
tokens by introspection (``tests/servers/protected_server.py``), a stdio MCP server next
to it, and ``funnel-server`` itself, started as a user would start it. The test plays the
person at the browser: it opens funnel's authorize link, logs in and consents at the
authorization server (``follow_authorization``), and brings the browser back to funnel's
callback. Then it restarts ``funnel-server`` on the same home and checks that the stored
tokens are used without anyone logging in again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import anyio.abc
import httpx
import pytest
from support.peers import REPO, SERVERS, free_port

from funnel_auth.testing import follow_authorization

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
TOOLS = REPO / "tools"
API_TOKEN = "e2e-api-token-" + "Q7vX2mN9pL4kR8sT"  # long enough to search for without false hits


# --------------------------------------------------------------------------- peers


@dataclass
class Peer:
    """A process that prints a URL, then one JSON event per line, and stops when stdin closes."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def count(self, event: str, **match: Any) -> int:
        return sum(
            1
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        )

    async def drain(self, poke: Callable[[], Awaitable[object]], event: str, **match: Any) -> None:
        """Make the peer print one more ``event`` and wait until it is read.

        The peer writes its lines in order, so once this one is here every line printed
        before it is too: a test can then assert that something did *not* happen.
        """
        before = self.count(event, **match)
        await poke()
        with anyio.fail_after(10):
            while self.count(event, **match) == before:
                await self.changed.wait()


async def _lines(stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


async def _collect(peer: Peer, lines: AsyncIterator[str]) -> None:
    async for line in lines:
        try:
            peer.events.append(json.loads(line))
        except ValueError:  # a stray non-JSON line is not an event
            continue
        changed, peer.changed = peer.changed, anyio.Event()
        changed.set()


@asynccontextmanager
async def line_peer(command: list[str], cwd: Path) -> AsyncIterator[Peer]:
    process = await anyio.open_process(command, cwd=cwd, stderr=None)
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        with anyio.fail_after(20):
            url = (await lines.__anext__()).strip()
        peer = Peer(url=url)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, peer, lines)
            try:
                yield peer
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


@pytest.fixture
async def oidc() -> AsyncIterator[Peer]:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("node and the npm test peers (npm ci --prefix tools) are needed")
    async with line_peer([node, str(TOOLS / "peers" / "oidc-provider.mjs")], TOOLS) as peer:
        yield peer


@pytest.fixture
async def protected(oidc: Peer) -> AsyncIterator[Peer]:
    command = [sys.executable, str(SERVERS / "protected_server.py"), oidc.url]
    async with line_peer(command, REPO) as peer:
        yield peer


# --------------------------------------------------------------------------- funnel-server


@dataclass
class FunnelServer:
    """``funnel-server`` as a process, restartable on the same port and home."""

    config: Path
    home: Path
    port: int
    logs: Path
    runs: int = 0
    process: anyio.abc.Process | None = None
    stderr: TextIO | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_paths(self) -> list[Path]:
        return [self.logs / f"funnel-server-{run}.stderr" for run in range(1, self.runs + 1)]

    async def start(self) -> None:
        self.runs += 1
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "FUNNEL_API_TOKEN": API_TOKEN,
            "MCP_FUNNEL_HOME": str(self.home),
            "MCP_FUNNEL_TOKEN_STORE": "file",
        }
        self.stderr = self.stderr_paths[-1].open("w")
        # DEBUG: the most verbose logs must not leak secrets either.
        command = [FUNNEL, "--config", str(self.config), "--port", str(self.port)]
        self.process = await anyio.open_process(
            [*command, "--log-level", "DEBUG"],
            env=env,
            cwd=self.config.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        async with httpx.AsyncClient(base_url=self.base) as http:
            with anyio.fail_after(20):
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(f"funnel-server exited with {self.process.returncode}")
                    try:
                        if (await http.get("/api/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)  # bounded readiness polling

    async def stop(self) -> int:
        """SIGTERM (what a service manager sends), wait, kill as a backstop."""
        process, self.process = self.process, None
        if process is None:
            return 0
        with anyio.CancelScope(shield=True):
            try:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            finally:
                if self.stderr is not None:
                    self.stderr.close()
                    self.stderr = None
        assert process.returncode is not None  # waited for above
        return process.returncode


@pytest.fixture
async def funnel(tmp_path: Path, protected: Peer) -> AsyncIterator[FunnelServer]:
    config = tmp_path / ".mcp-funnel.json"
    config.write_text(
        json.dumps(
            {
                "servers": {
                    "protected": {
                        "transport": {"type": "streamable-http", "url": protected.url},
                        "auth": {"type": "oauth2-code"},
                    },
                    "local": {
                        "command": sys.executable,
                        "args": [str(SERVERS / "sdk_server.py")],
                    },
                }
            }
        )
    )
    server = FunnelServer(config=config, home=tmp_path / "home", port=free_port(), logs=tmp_path)
    try:
        yield server
    finally:
        await server.stop()


# --------------------------------------------------------------------------- helpers


class Browser:
    """An HTTP client that keeps every response body it saw, to check them for secrets."""

    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=15)
        self.bodies: list[str] = []
        self.auth = {"Authorization": f"Bearer {API_TOKEN}"}

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(url, **kwargs)
        self.bodies.append(response.text)
        return response

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.post(url, **kwargs)
        self.bodies.append(response.text)
        return response

    async def servers(self) -> dict[str, dict[str, Any]]:
        response = await self.get("/api/servers", headers=self.auth)
        assert response.status_code == 200, response.text
        return {server["name"]: server for server in response.json()["servers"]}

    async def wait_for(
        self, name: str, done: Callable[[dict[str, Any]], bool], seen: list[str] | None = None
    ) -> dict[str, Any]:
        """Poll ``/api/servers`` (bounded) until ``done(server)``; record statuses in ``seen``."""
        with anyio.fail_after(20):
            while True:
                server = (await self.servers())[name]
                if seen is not None and (not seen or seen[-1] != server["status"]):
                    seen.append(server["status"])
                if done(server):
                    return server
                await anyio.sleep(0.05)  # bounded status polling

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        response = await self.post(
            f"/api/tools/{tool}/call", headers=self.auth, json={"arguments": arguments}
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert not result.get("isError"), result
        text: str = result["content"][0]["text"]
        return text

    async def aclose(self) -> None:
        await self.http.aclose()


def stored(home: Path) -> dict[str, Any]:
    """Every value in the file token store, decoded (JSON where it is JSON)."""
    path = home / "tokens.json"
    if not path.exists():
        return {}
    out: dict[str, Any] = {}
    for key, value in json.loads(path.read_text())["tokens"].items():
        raw = base64.b64decode(value)
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw.decode(errors="replace")
    return out


async def token_grant_barrier(oidc: Peer) -> None:
    """A client credentials grant at the AS: its event follows every earlier grant event."""

    async def grant() -> None:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                oidc.url + "/token",
                data={"grant_type": "client_credentials"},
                auth=("cc-client", "cc-secret"),
            )
        assert response.status_code == 200, response.text

    await oidc.drain(grant, "grant", grant_type="client_credentials")


async def challenge_barrier(protected: Peer, name: str) -> None:
    """An anonymous request to the backend: its 401 event follows every earlier event."""

    async def anonymous() -> None:
        async with httpx.AsyncClient(headers={"User-Agent": name}) as http:
            response = await http.post(protected.url, json={})
        assert response.status_code == 401

    await protected.drain(anonymous, "challenge", agent=name)


def audit(home: Path) -> list[str]:
    """The audit log's event names, in order."""
    return [json.loads(line)["event"] for line in (home / "audit.log").read_text().splitlines()]


def fingerprint(token: str) -> str:
    # The protected server reports tokens by this fingerprint (see protected_server.py).
    return hashlib.sha256(token.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the test


async def test_a_person_authorizes_a_backend_once_and_a_restart_reuses_the_tokens(
    funnel: FunnelServer, oidc: Peer, protected: Peer
) -> None:
    await funnel.start()
    browser = Browser(funnel.base)
    try:
        # 1. The protected backend was challenged (401) and now waits for a person; the
        #    stdio backend next to it is connected.
        before = await browser.wait_for("protected", lambda s: s["status"] == "auth_required")
        assert before["authRequired"] is True
        assert before["authorizeUrl"] == "/api/oauth/authorize/protected"
        local = await browser.wait_for("local", lambda s: s["status"] == "connected")
        await challenge_barrier(protected, "barrier-1")
        assert protected.count("challenge") >= 2, "funnel's first request got a 401"
        assert protected.count("request") == 0
        assert not any(":tokens:" in key for key in stored(funnel.home))

        # 2. The browser opens funnel's authorize link: a redirect to the real AS, with
        #    PKCE, the backend as resource, and funnel's own callback on its real port.
        anonymous = await browser.get(before["authorizeUrl"])
        assert anonymous.status_code == 401, "starting a flow needs the API token"
        start = await browser.get(before["authorizeUrl"], headers=browser.auth)
        assert start.status_code == 302, start.text
        location = start.headers["location"]
        assert location.startswith(oidc.url + "/")
        query = dict(parse_qsl(urlsplit(location).query))
        assert query["redirect_uri"] == f"http://localhost:{funnel.port}/api/oauth/callback"
        assert query["code_challenge_method"] == "S256"
        assert query["resource"] == protected.url
        assert "mcp:read" in query["scope"].split()
        #    A stale link (used, expired, or replaced by a wider login) leads to the
        #    login that is current for every backend still waiting.
        stale = await browser.get("/api/oauth/callback", params={"state": "stale", "code": "x"})
        assert stale.status_code == 400
        assert 'href="/api/oauth/authorize/protected"' in stale.text

        # 3. Log in and consent at the AS; it sends the browser back to funnel's callback.
        callback = await follow_authorization(location)
        assert callback.error is None, callback.error_description
        assert callback.code and callback.state and callback.iss == oidc.url
        page = await browser.get("/api/oauth/callback", params=callback.params)
        assert page.status_code == 200, page.text
        assert "protected is authorized" in page.text

        # 4. Only that backend reconnects; its tools appear and answer through funnel.
        after = await browser.wait_for("protected", lambda s: s["status"] == "connected")
        assert after["toolCount"] == 3
        assert (await browser.servers())["local"]["connectedAt"] == local["connectedAt"]
        tools = await browser.get("/api/tools", headers=browser.auth)
        names = {tool["name"] for tool in tools.json()["tools"]}
        assert {"protected__whoami", "protected__shout", "local__echo"} <= names
        assert await browser.call("protected__shout", {"message": "hello"}) == "HELLO"
        assert await browser.call("local__echo", {"message": "hi"}) == "Echo: hi"

        tokens = [v for k, v in stored(funnel.home).items() if ":tokens:" in k]
        assert len(tokens) == 1
        access, refresh = tokens[0]["access_token"], tokens[0].get("refresh_token")
        await challenge_barrier(protected, "barrier-2")
        first_run_tokens = {e["token"] for e in protected.events if e["event"] == "request"}
        assert first_run_tokens == {fingerprint(access)}, "the backend saw the stored token"

        # 5. The browser comes back again (a reload, or a replay): an escaped error page,
        #    nothing stored, nothing sent to the AS.
        snapshot = (funnel.home / "tokens.json").read_bytes()
        replay = await browser.get(
            "/api/oauth/callback",
            params={**callback.params, "error_description": "<script>alert(1)</script>"},
        )
        assert replay.status_code == 400
        assert "unknown or already used authorization state" in replay.text
        assert "<script>alert(1)</script>" not in replay.text
        assert "/api/oauth/authorize/" not in replay.text, "nothing waits for a login now"
        assert (funnel.home / "tokens.json").read_bytes() == snapshot
        await token_grant_barrier(oidc)
        grants = [e.get("grant_type") for e in oidc.events]
        assert grants == ["authorization_code", "client_credentials"], oidc.events

        # 6. Restart on the same home: connected again with the stored access token, no
        #    401 from the backend, no login, consent, code or refresh at the AS.
        assert await funnel.stop() == 0
        challenges = protected.count("challenge")
        await funnel.start()
        statuses: list[str] = []
        await browser.wait_for("protected", lambda s: s["status"] == "connected", statuses)
        assert "auth_required" not in statuses
        assert await browser.call("protected__whoami", {}) == "authorized"
        await token_grant_barrier(oidc)
        assert [e.get("grant_type") for e in oidc.events] == [*grants, "client_credentials"]
        await challenge_barrier(protected, "barrier-3")
        assert protected.count("challenge") == challenges + 1, "only the barrier got a 401"
        assert {e["token"] for e in protected.events if e["event"] == "request"} == (
            first_run_tokens
        ), "the backend saw the access token stored by the first run"
        assert await funnel.stop() == 0
        events = audit(funnel.home)
        assert events.count("auth.flow_started") == 1
        assert events.count("auth.flow_completed") == 1

        # 7. No secret in any response body or in funnel-server's logs. The API token is
        #    printed once per run, in the documented dashboard sign-in link, and nowhere else.
        client = next(v for k, v in stored(funnel.home).items() if ":client:" in k)
        secrets = {"access token": access, "authorization code": callback.code}
        if refresh:
            secrets["refresh token"] = refresh
        if isinstance(client, dict) and client.get("client_secret"):
            secrets["client secret"] = client["client_secret"]
        for body in browser.bodies:
            for name, secret in {**secrets, "API token": API_TOKEN}.items():
                assert secret not in body, f"a response body carries the {name}"
        for path in [*funnel.stderr_paths, funnel.home / "audit.log"]:
            log = path.read_text()
            for name, secret in secrets.items():
                assert secret not in log, f"{path.name} carries the {name}"
        for path in funnel.stderr_paths:
            lines = [line for line in path.read_text().splitlines() if API_TOKEN in line]
            assert len(lines) == 1, "only the sign-in link shows the API token"
            assert f"dashboard {funnel.base}/?token={API_TOKEN}" in lines[0]
        assert API_TOKEN not in (funnel.home / "audit.log").read_text()
    finally:
        await browser.aclose()


async def login(browser: Browser, authorize_url: str, oidc: Peer) -> dict[str, str]:
    """The person at the browser: funnel's authorize link, the AS, back to the callback."""
    start = await browser.get(authorize_url, headers=browser.auth)
    assert start.status_code == 302, start.text
    location = start.headers["location"]
    assert location.startswith(oidc.url + "/")
    callback = await follow_authorization(location)
    assert callback.error is None, callback.error_description
    page = await browser.get("/api/oauth/callback", params=callback.params)
    assert page.status_code == 200, page.text
    return dict(parse_qsl(urlsplit(location).query))


async def test_a_step_up_mid_session_answers_with_the_authorize_url_and_the_retry_succeeds(
    funnel: FunnelServer, oidc: Peer, protected: Peer
) -> None:
    await funnel.start()
    browser = Browser(funnel.base)
    try:
        before = await browser.wait_for("protected", lambda s: s["status"] == "auth_required")
        first = await login(browser, before["authorizeUrl"], oidc)
        assert "mcp:admin" not in first["scope"].split()
        await browser.wait_for("protected", lambda s: s["status"] == "connected")
        assert await browser.call("protected__whoami", {}) == "authorized"

        # The tool needs mcp:admin: the backend answers 403 insufficient_scope mid-session.
        refused = await browser.post(
            "/api/tools/protected__admin_report/call", headers=browser.auth, json={"arguments": {}}
        )
        assert refused.status_code == 401, refused.text
        body = refused.json()
        assert body["extra"]["authorizeUrl"] == "/api/oauth/authorize/protected"
        assert "authorization" in body["detail"]

        # Funnel's authorize link joins the step-up flow: the union of the scopes.
        connected_at = (await browser.servers())["protected"]["connectedAt"]
        second = await login(browser, body["extra"]["authorizeUrl"], oidc)
        assert {"mcp:read", "mcp:write", "mcp:admin"} <= set(second["scope"].split())
        await browser.wait_for(
            "protected",
            lambda s: s["status"] == "connected" and s["connectedAt"] != connected_at,
        )
        assert await browser.call("protected__admin_report", {}) == "admin ok"
        assert await browser.call("protected__whoami", {}) == "authorized"
        assert funnel.process is not None and funnel.process.returncode is None
        assert any(
            e.get("error") == "insufficient_scope" and e.get("scope") == "mcp:admin"
            for e in protected.events
        )
        assert await funnel.stop() == 0
        events = audit(funnel.home)
        assert events.count("auth.flow_started") == 2
        assert events.count("auth.flow_completed") == 2
    finally:
        await browser.aclose()


AUTH_README = REPO / "packages" / "funnel-auth" / "README.md"


def readme_program(heading: str) -> str:
    """The first ``python`` block after ``heading`` in funnel-auth's README, verbatim."""
    text = AUTH_README.read_text()
    section = text.split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_sdk_example_runs_verbatim_against_a_real_authorization_server(
    tmp_path: Path, oidc: Peer, protected: Peer
) -> None:
    """The official MCP SDK 2.x client, with funnel-auth as its httpx2 auth."""
    program = tmp_path / "example.py"
    program.write_text(readme_program("## With the official MCP SDK (2.x)"))
    env = {"PATH": os.environ.get("PATH", os.defpath), "MCP_SERVER_URL": protected.url}
    process = await anyio.open_process(
        [sys.executable, str(program)], env=env, cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None and process.stdin is not None
        lines = _lines(process.stderr)
        with anyio.fail_after(30):
            async for line in lines:
                if line.startswith(oidc.url + "/"):
                    url = line.strip()
                    break
        query = dict(parse_qsl(urlsplit(url).query))
        assert query["code_challenge_method"] == "S256"
        assert query["resource"] == protected.url
        callback = await follow_authorization(url)
        assert callback.error is None, callback.error_description
        landed = f"{query['redirect_uri']}?{urlencode(callback.params)}"
        await process.stdin.send((landed + "\n").encode())
        assert process.stdout is not None
        with anyio.fail_after(30):
            output = b""
            async for chunk in process.stdout:
                output += chunk
            await process.wait()
        assert process.returncode == 0
        assert output.decode().strip() == "tools: whoami, shout, admin_report"
        assert protected.count("request") == 1  # one token, used by the SDK client
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


def text(result: Any) -> str:
    """The text of a tool result's first content block."""
    from mcp.types import TextContent

    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def test_over_stdio_a_step_up_answers_with_the_url_and_the_retried_call_succeeds(
    funnel: FunnelServer, oidc: Peer, protected: Peer
) -> None:
    """``funnel-server --stdio`` as a desktop client runs it, the official SDK as that client."""
    from mcp import Client, MCPError, StdioServerParameters

    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "FUNNEL_API_TOKEN": API_TOKEN,
        "MCP_FUNNEL_HOME": str(funnel.home),
        "MCP_FUNNEL_TOKEN_STORE": "file",
    }
    args = ["--stdio", "--config", str(funnel.config), "--port", str(funnel.port)]
    params = StdioServerParameters(
        command=FUNNEL, args=args, env=env, cwd=str(funnel.config.parent)
    )
    browser = Browser(funnel.base)
    try:
        async with Client(params) as client:
            with anyio.fail_after(20):
                while True:  # the HTTP side (callbacks, dashboard) comes up beside stdio
                    try:
                        if (await browser.get("/api/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)  # bounded readiness polling
            before = await browser.wait_for("protected", lambda s: s["status"] == "auth_required")
            await login(browser, before["authorizeUrl"], oidc)
            await browser.wait_for("protected", lambda s: s["status"] == "connected")
            with anyio.fail_after(20):
                while True:  # the list_changed notification may lag the status
                    names = {t.name for t in (await client.list_tools()).tools}
                    if "protected__admin_report" in names:
                        break
                    await anyio.sleep(0.05)  # bounded polling
            assert text(await client.call_tool("protected__whoami", {})) == "authorized"

            # A step-up mid-session: a JSON-RPC error that says what to do, with the URL.
            with pytest.raises(MCPError) as info:
                await client.call_tool("protected__admin_report", {})
            assert "authoriz" in info.value.message
            assert "[REDACTED]" not in info.value.message
            assert info.value.data["action"] == "authorize"
            # The authorization server's own URL, which any client can show; and the
            # dashboard's route to the same flow.
            assert info.value.data["authorizeUrl"].startswith(oidc.url)
            url = info.value.data["dashboardPath"]
            assert url == "/api/oauth/authorize/protected"

            # The person opens it: it joins the step-up flow (the union of the scopes),
            # and the browser comes back to funnel's own callback.
            connected_at = (await browser.servers())["protected"]["connectedAt"]
            query = await login(browser, url, oidc)
            assert {"mcp:read", "mcp:write", "mcp:admin"} <= set(query["scope"].split())
            await browser.wait_for(
                "protected",
                lambda s: s["status"] == "connected" and s["connectedAt"] != connected_at,
            )
            assert text(await client.call_tool("protected__admin_report", {})) == "admin ok"
            assert text(await client.call_tool("protected__whoami", {})) == "authorized"
    finally:
        await browser.aclose()


@pytest.mark.parametrize(
    ("mode", "action"), [("legacy", "accept"), ("auto", "accept"), ("auto", "decline")]
)
async def test_over_stdio_a_step_up_is_announced_on_ws_and_the_login_happens_from_the_chat(
    funnel: FunnelServer, oidc: Peer, protected: Peer, mode: str, action: str
) -> None:
    """A client that declared URL-mode elicitation is asked to open the login itself.

    ``funnel-server --stdio`` in front of a server that demands a wider scope mid-session;
    the official SDK as the client, declaring elicitation (form and URL modes). The step-up
    is announced on ``/ws`` at once (``auth.required``, funnel's route, no secret); the
    client gets an ``elicitation/create`` in URL mode with the authorization server's URL;
    the person accepts and logs in; the call, still waiting, then succeeds by itself.

    Both eras: ``legacy`` (the handshake: funnel sends ``elicitation/create`` mid-call)
    and ``auto`` (the SDK's default, 2026-07-28 here: the call answers ``input_required``
    asking the same, and the SDK's retry gets the result once the login is done). A
    person who declines gets the JSON-RPC error with the URL, as a client without URL
    elicitation does.
    """
    from mcp import Client, MCPError, StdioServerParameters
    from mcp import types as mcp_types
    from websockets.asyncio.client import connect

    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "FUNNEL_API_TOKEN": API_TOKEN,
        "MCP_FUNNEL_HOME": str(funnel.home),
        "MCP_FUNNEL_TOKEN_STORE": "file",
    }
    args = ["--stdio", "--config", str(funnel.config), "--port", str(funnel.port)]
    server = StdioServerParameters(
        command=FUNNEL, args=args, env=env, cwd=str(funnel.config.parent)
    )
    browser = Browser(funnel.base)
    asked: list[mcp_types.ElicitRequestURLParams] = []
    scopes: list[str] = []
    announced: list[dict[str, Any]] = []
    heard = anyio.Event()
    subscribed = anyio.Event()
    watching = anyio.CancelScope()

    async with anyio.create_task_group() as tg:

        async def person_logs_in(url: str) -> None:
            # The person opens the link the chat showed: the AS, then funnel's callback.
            scopes.extend(dict(parse_qsl(urlsplit(url).query))["scope"].split())
            callback = await follow_authorization(url)
            assert callback.error is None, callback.error_description
            page = await browser.get("/api/oauth/callback", params=callback.params)
            assert page.status_code == 200, page.text

        async def elicit(
            context: Any, params: mcp_types.ElicitRequestParams
        ) -> mcp_types.ElicitResult:
            assert isinstance(params, mcp_types.ElicitRequestURLParams), params
            asked.append(params)
            if action == "decline":
                return mcp_types.ElicitResult(action="decline")
            tg.start_soon(person_logs_in, params.url)
            return mcp_types.ElicitResult(action="accept")

        async def watch_ws() -> None:
            ws_url = funnel.base.replace("http://", "ws://") + "/ws"
            with watching:
                await _watch_ws(ws_url)

        async def _watch_ws(ws_url: str) -> None:
            async with connect(ws_url, additional_headers=browser.auth, open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "subscribe", "events": ["auth.required"]}))
                # Messages are handled in order: the answer to this one means subscribed.
                await ws.send(json.dumps({"type": "cancel", "id": "none"}))
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("type") == "error":
                        subscribed.set()
                    elif message.get("type") == "auth.required":
                        announced.append(message)
                        heard.set()

        try:
            async with Client(server, elicitation_callback=elicit, mode=mode) as client:
                with anyio.fail_after(20):
                    while True:  # the HTTP side (callbacks, dashboard) comes up beside stdio
                        try:
                            if (await browser.get("/api/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await anyio.sleep(0.05)  # bounded readiness polling
                before = await browser.wait_for(
                    "protected", lambda s: s["status"] == "auth_required"
                )
                first = await login(browser, before["authorizeUrl"], oidc)
                assert "mcp:admin" not in first["scope"].split()
                await browser.wait_for("protected", lambda s: s["status"] == "connected")
                with anyio.fail_after(20):
                    while True:  # the list_changed notification may lag the status
                        names = {t.name for t in (await client.list_tools()).tools}
                        if "protected__admin_report" in names:
                            break
                        await anyio.sleep(0.05)  # bounded polling
                tg.start_soon(watch_ws)
                with anyio.fail_after(20):
                    await subscribed.wait()
                assert not announced  # nothing needed a login since the subscription

                # The step-up: announced on /ws, asked in the chat, logged in, answered.
                if action == "decline":
                    with pytest.raises(MCPError) as info, anyio.fail_after(60):
                        await client.call_tool("protected__admin_report", {})
                    assert info.value.data["authorizeUrl"].startswith(oidc.url + "/")
                    assert len(asked) == 1
                    assert not scopes  # nobody logged in
                    with anyio.fail_after(10):
                        await heard.wait()
                    watching.cancel()
                    return
                with anyio.fail_after(60):
                    result = await client.call_tool("protected__admin_report", {})
                assert text(result) == "admin ok"
                with anyio.fail_after(10):
                    await heard.wait()
                assert announced[0]["server"] == "protected"
                assert announced[0]["authorizeUrl"] == "/api/oauth/authorize/protected"
                [request] = asked
                assert request.mode == "url"
                assert request.url.startswith(oidc.url + "/")
                assert request.elicitation_id
                assert "protected" in request.message
                # The step-up flow asked for the union of the scopes.
                assert {"mcp:read", "mcp:write", "mcp:admin"} <= set(scopes)
                assert text(await client.call_tool("protected__whoami", {})) == "authorized"
                watching.cancel()  # before funnel-server goes away with its /ws
        finally:
            tg.cancel_scope.cancel()
            await browser.aclose()
