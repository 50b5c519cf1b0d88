"""End to end: MCP tasks through ``funnel-server --stdio``, server-everything behind.

The official SDK client (``mcp`` 2.3.0) has no tasks API, so a bare JSON-RPC driver
plays the client: it declares tasks (and sampling, elicitation, roots), creates tasks on
server-everything's ``simulate-research-query``, polls, lists, cancels, and answers the
elicitation the task sends while ``tasks/result`` waits. The ids it sees are funnel's
(``everything:<id>``); funnel maps them back to the backend's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
EVERYTHING_TOOLS = 19
ALL_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}},
    "roots": {"listChanged": True},
    "tasks": {"list": {}, "cancel": {}, "requests": {"elicitation": {"create": {}}}},
}
RELATED = "io.modelcontextprotocol/related-task"

Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Driver:
    """A bare JSON-RPC client on funnel's stdin/stdout; answers the backend's requests."""

    def __init__(self, process: anyio.abc.Process, tg: anyio.abc.TaskGroup) -> None:
        self.process = process
        self.tg = tg
        self.ids = iter(range(1, 10_000))
        self.waiting: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.answers: dict[str, Answer] = {}
        self.server_capabilities: dict[str, Any] = {}

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        done, box = anyio.Event(), list[dict[str, Any]]()
        self.waiting[request_id] = (done, box)
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        await done.wait()
        reply: dict[str, Any] = box[0]
        return reply

    async def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = bytearray()
        async for chunk in self.process.stdout:
            buffer += chunk
            while (end := buffer.find(b"\n")) != -1:
                line, buffer = bytes(buffer[:end]), buffer[end + 1 :]
                if line.strip():
                    self.dispatch(json.loads(line))

    def dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:
            self.requests.append(message)
            self.tg.start_soon(self.answer, message)
        elif "method" in message:
            self.notifications.append(message)
        else:
            done, box = self.waiting.pop(message["id"])
            box.append(message)
            done.set()

    async def answer(self, request: dict[str, Any]) -> None:
        handler = self.answers.get(request["method"])
        if handler is None:
            reply: dict[str, Any] = {"error": {"code": -32601, "message": "not here"}}
        else:
            reply = {"result": await handler(request.get("params") or {})}
        await self.send({"id": request["id"], **reply})


@pytest.fixture
def config(tmp_path: Path, everything_js: Path) -> Path:
    path = tmp_path / ".mcp-funnel.json"
    servers = {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}
    path.write_text(json.dumps({"servers": servers}))
    return path


async def _funnel(
    config: Path, tmp_path: Path, capabilities: dict[str, Any]
) -> AsyncIterator[Driver]:
    env = {
        "PATH": os.environ["PATH"],
        "MCP_FUNNEL_HOME": str(tmp_path / "home"),
        "FUNNEL_LOG_LEVEL": "WARNING",
        "FUNNEL_STARTUP_WAIT": "60",
    }
    async with (
        await anyio.open_process(
            [FUNNEL, "--stdio", "--config", str(config)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as process,
        anyio.create_task_group() as tg,
    ):
        driver = Driver(process, tg)
        tg.start_soon(driver.read)
        try:
            with anyio.fail_after(60):
                init = await driver.result(
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": capabilities,
                        "clientInfo": {"name": "tasks-driver", "version": "1"},
                    },
                )
                driver.server_capabilities = init["capabilities"]
                await driver.send({"method": "notifications/initialized"})
            yield driver
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


@pytest.fixture
async def client(config: Path, tmp_path: Path) -> AsyncIterator[Driver]:
    async for driver in _funnel(config, tmp_path, ALL_CAPABILITIES):
        yield driver


async def _tool_names(driver: Driver) -> set[str]:
    # server-everything registers its conditional tools after `initialized` and says so
    # with list_changed: wait for the full list.
    with anyio.fail_after(30):
        while True:
            tools = (await driver.result("tools/list"))["tools"]
            names = {tool["name"] for tool in tools if tool["name"].startswith("everything__")}
            if any("async" in name for name in names):
                return names
            await anyio.sleep(0.1)  # bounded polling of a list that fills asynchronously


async def test_funnel_offers_tasks_and_a_client_that_declares_everything_sees_all_tools(
    client: Driver,
) -> None:
    assert client.server_capabilities["tasks"] == {
        "list": {},
        "cancel": {},
        "requests": {"tools": {"call": {}}},
    }
    names = await _tool_names(client)
    assert len(names) == EVERYTHING_TOOLS, sorted(names)
    assert {
        "everything__simulate-research-query",
        "everything__trigger-sampling-request-async",
        "everything__trigger-elicitation-request-async",
    } <= names


async def test_a_task_runs_on_its_backend_under_a_namespaced_id_and_asks_its_client(
    client: Driver,
) -> None:
    async def clarify(params: dict[str, Any]) -> dict[str, Any]:
        return {"action": "accept", "content": {"interpretation": "snake"}}

    client.answers["elicitation/create"] = clarify
    await _tool_names(client)
    with anyio.fail_after(60):
        created = await client.result(
            "tools/call",
            {
                "name": "everything__simulate-research-query",
                "arguments": {"topic": "python", "ambiguous": True},
                "task": {"ttl": 60_000},
            },
        )
        task_id = created["task"]["taskId"]
        assert task_id.startswith("everything:"), created
        assert created["task"]["status"] == "working"

        status = await client.result("tasks/get", {"taskId": task_id})
        assert status["taskId"] == task_id
        listed = await client.result("tasks/list")
        assert task_id in [task["taskId"] for task in listed["tasks"]]

        # tasks/result blocks until the task ends; meanwhile the task's elicitation comes
        # to this client, naming the task by the id the client knows.
        final = await client.result("tasks/result", {"taskId": task_id})
    text = "".join(item.get("text", "") for item in final["content"])
    assert "snake" in text
    assert final["_meta"][RELATED]["taskId"] == task_id
    asked = [r for r in client.requests if r["method"] == "elicitation/create"]
    assert len(asked) == 1
    assert asked[0]["params"]["_meta"][RELATED]["taskId"] == task_id
    assert "task" not in asked[0]["params"]


async def test_a_task_is_cancelled_on_its_backend_and_unknown_ids_are_refused(
    client: Driver,
) -> None:
    await _tool_names(client)
    with anyio.fail_after(60):
        created = await client.result(
            "tools/call",
            {
                "name": "everything__simulate-research-query",
                "arguments": {"topic": "history"},
                "task": {"ttl": 60_000},
            },
        )
        task_id = created["task"]["taskId"]
        cancelled = await client.result("tasks/cancel", {"taskId": task_id})
        assert cancelled["taskId"] == task_id
        assert cancelled["status"] == "cancelled"
        again = await client.result("tasks/get", {"taskId": task_id})
        assert again["status"] == "cancelled"

        backend_id = task_id.removeprefix("everything:")
        unknown = await client.call("tasks/get", {"taskId": backend_id})
        assert unknown["error"]["code"] == -32602
        assert "unknown task" in unknown["error"]["message"]


async def test_task_augmentation_is_refused_for_a_tool_that_forbids_it(client: Driver) -> None:
    with anyio.fail_after(30):
        reply = await client.call(
            "tools/call",
            {"name": "everything__echo", "arguments": {"message": "hi"}, "task": {}},
        )
    assert reply["error"]["code"] == -32601
    assert "task" in reply["error"]["message"]


async def test_a_backends_task_augmented_elicitation_is_answered_with_the_result(
    config: Path, tmp_path: Path
) -> None:
    async def person(params: dict[str, Any]) -> dict[str, Any]:
        return {"action": "accept", "content": {"name": "Ada"}}

    # This client elicits but takes no task-augmented requests.
    async for driver in _funnel(config, tmp_path, {"elicitation": {"form": {}}}):
        driver.answers["elicitation/create"] = person
        await _tool_names(driver)
        with anyio.fail_after(30):
            result = await driver.result(
                "tools/call", {"name": "everything__trigger-elicitation-request-async"}
            )
        text = "".join(item.get("text", "") for item in result["content"])
        assert "[SYNC]" in text and "Ada" in text, text
        asked = [r for r in driver.requests if r["method"] == "elicitation/create"]
        assert "task" not in asked[0]["params"], "funnel answers it as an ordinary request"


async def test_a_client_without_tasks_is_not_offered_tools_that_need_them(
    config: Path, tmp_path: Path
) -> None:
    async for driver in _funnel(config, tmp_path, {"elicitation": {"form": {}}}):
        with anyio.fail_after(30):
            names = {tool["name"] for tool in (await driver.result("tools/list"))["tools"]}
            while "everything__trigger-elicitation-request" not in names:
                await anyio.sleep(0.1)  # bounded polling of a list that fills asynchronously
                names = {tool["name"] for tool in (await driver.result("tools/list"))["tools"]}
        assert "everything__simulate-research-query" not in names
        assert "everything__echo" in names


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_answers_a_backends_async_elicitation_through_funnel(
    config: Path, tmp_path: Path, mode: str
) -> None:
    from mcp import Client, types
    from support.peers import funnel_stdio

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Grace Hopper"})

    async with Client(
        funnel_stdio(config, tmp_path), mode=mode, elicitation_callback=elicit
    ) as sdk:
        with anyio.fail_after(30):
            names = {tool.name for tool in (await sdk.list_tools()).tools}
            # The SDK client declares no tasks: the tool that only runs as one is not
            # offered; the tools that ask the client with a task are, and work.
            assert "everything__simulate-research-query" not in names
            assert "everything__trigger-elicitation-request-async" in names
            result = await sdk.call_tool("everything__trigger-elicitation-request-async", {})
    assert not result.is_error
    text = "".join(item.text for item in result.content if isinstance(item, types.TextContent))
    assert "Grace Hopper" in text


async def test_a_client_that_takes_task_augmented_elicitation_runs_it_as_a_task(
    config: Path, tmp_path: Path
) -> None:
    capabilities = {
        "elicitation": {"form": {}},
        "tasks": {"requests": {"elicitation": {"create": {}}}},
    }
    answer = {"action": "accept", "content": {"name": "Ada", "favoriteColor": "Blue"}}
    task = {
        "taskId": "mine-1",
        "createdAt": "2026-12-01T00:00:00Z",
        "lastUpdatedAt": "2026-12-01T00:00:00Z",
        "ttl": 60_000,
        "pollInterval": 100,
    }

    async def create(params: dict[str, Any]) -> dict[str, Any]:
        assert "task" in params, "passed on as the backend asked"
        return {"task": {**task, "status": "working"}}

    async def get(params: dict[str, Any]) -> dict[str, Any]:
        return {**task, "status": "completed"}

    async def result(params: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "_meta": {RELATED: {"taskId": params["taskId"]}}}

    async for driver in _funnel(config, tmp_path, capabilities):
        driver.answers.update(
            {"elicitation/create": create, "tasks/get": get, "tasks/result": result}
        )
        await _tool_names(driver)
        with anyio.fail_after(30):
            called = await driver.result(
                "tools/call", {"name": "everything__trigger-elicitation-request-async"}
            )
        text = "".join(item.get("text", "") for item in called["content"])
        assert "[COMPLETED]" in text and "- Name: Ada" in text, text
        # The backend saw funnel's id for the client's task; the client was asked with its own.
        assert "Task created: client-1:mine-1" in text, text
        polls = [r for r in driver.requests if r["method"] in ("tasks/get", "tasks/result")]
        assert polls and {r["params"]["taskId"] for r in polls} == {"mine-1"}
        assert polls[-1]["method"] == "tasks/result"
