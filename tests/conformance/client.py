"""The conformance suite's "everything client": funnel as the client of the harness's mock server.

Usage (the harness appends the URL): ``python client.py URL``, with
``MCP_CONFORMANCE_SCENARIO`` (and for some scenarios ``MCP_CONFORMANCE_CONTEXT``) set.

It drives funnel the way a user does: it writes a ``.mcp-funnel.json`` with one backend at
``URL`` (``"prefix": ""``, so the mock's names pass unchanged), starts ``funnel-server
--stdio`` on it, and talks to that as a desktop client would, with the official SDK
client answering elicitations (each field's default, as SEP-1034 wants), sampling and
roots. funnel connects to the mock on its own (protocol era by its usual negotiation)
and forwards what the SDK client does. So a pass means the product passes, not a side
door.

Then, by scenario, it does what the scenario's source (in the harness's ``dist/``)
expects a client to do after connecting: call ``add_numbers``, the elicitation tool,
the MRTR tools, the tools named in the context, round-trip a schema, or touch every list.
Errors of single calls are printed and do not end the run: some scenarios expect them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters, types
from mcp.client.session import ClientRequestContext
from pydantic import FileUrl

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))


def log(message: str) -> None:
    print(f"[everything-client] {message}", file=sys.stderr, flush=True)


def defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """An accepted answer: each property's default, else a plausible value of its type."""
    plain: dict[str, Any] = {"string": "conformance", "integer": 1, "number": 1.0, "boolean": True}
    answer: dict[str, Any] = {}
    for name, spec in (schema.get("properties") or {}).items():
        if not isinstance(spec, dict):
            continue
        if "default" in spec:
            answer[name] = spec["default"]
        elif spec.get("enum"):
            answer[name] = spec["enum"][0]
        elif spec.get("type") in plain:
            answer[name] = plain[spec["type"]]
    return answer


async def on_elicit(
    context: ClientRequestContext, params: types.ElicitRequestParams
) -> types.ElicitResult | types.ErrorData:
    schema = getattr(params, "requested_schema", None) or {}
    log(f"elicitation: {params.message!r}")
    return types.ElicitResult(action="accept", content=defaults(dict(schema)))


async def on_sample(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
    log("sampling request")
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="This is a test response from the client"),
        model="conformance-client",
        stop_reason="endTurn",
    )


async def on_roots(context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
    return types.ListRootsResult(
        roots=[types.Root(uri=FileUrl("file:///conformance"), name="conformance")]
    )


class ListChanges:
    """Counts ``notifications/tools/list_changed`` (the SDK client's message handler)."""

    def __init__(self) -> None:
        self.changed = anyio.Event()

    async def __call__(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.changed.set()
            self.changed = anyio.Event()

    @staticmethod
    async def wait(event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await event.wait()


# funnel-server --stdio answers before its backend is connected and announces the
# backend's tools with list_changed; a mock without tools announces nothing, so the
# client waits this long at most before it takes an empty list for the answer.
TOOLS_WAIT = 10.0


class Run:
    """One scenario against one funnel."""

    def __init__(
        self, client: Client, scenario: str, context: dict[str, Any], changes: ListChanges
    ) -> None:
        self.client = client
        self.scenario = scenario
        self.context = context
        self.changes = changes

    async def call(self, name: str, arguments: dict[str, Any]) -> None:
        try:
            result = await self.client.call_tool(name, arguments)
        except Exception as exc:
            log(f"tools/call {name} failed: {exc}")
            return
        log(f"tools/call {name}: isError={result.is_error}")

    async def tools(self) -> list[types.Tool]:
        announced = self.changes.changed  # taken before listing: nothing slips between
        listed = await self.client.list_tools()
        if not listed.tools:
            await self.changes.wait(announced, TOOLS_WAIT)
            listed = await self.client.list_tools()
        log(f"tools: {[tool.name for tool in listed.tools]}")
        return list(listed.tools)

    async def everything(self) -> None:
        """Touch every list and call each tool, resource and prompt once."""
        for tool in await self.tools():
            await self.call(tool.name, {})
        for step in (self._resources, self._prompts):
            try:
                await step()
            except Exception as exc:
                log(f"{step.__name__}: {exc}")

    async def _resources(self) -> None:
        for resource in (await self.client.list_resources()).resources:
            await self.client.read_resource(str(resource.uri))

    async def _prompts(self) -> None:
        for prompt in (await self.client.list_prompts()).prompts:
            arguments = {arg.name: "conformance" for arg in prompt.arguments or ()}
            await self.client.get_prompt(prompt.name, arguments)

    async def main(self) -> None:
        tools = await self.tools()
        names = {tool.name for tool in tools}
        if self.scenario in ("initialize", "json-schema-ref-no-deref"):
            return  # connecting and listing is the whole scenario
        if self.scenario == "tools_call":
            await self.call("add_numbers", {"a": 5, "b": 3})
        elif self.scenario == "json-schema-2020-12-preservation":
            echo = next(t for t in tools if "schema" in (t.input_schema.get("required") or ()))
            focal = next(t for t in tools if t.name != echo.name)
            await self.call(echo.name, {"schema": focal.input_schema})
        elif self.context.get("toolCalls"):
            for call in self.context["toolCalls"]:
                await self.call(call["name"], call.get("arguments") or {})
        elif self.scenario == "http-standard-headers":
            await self.everything()
        else:
            # elicitation-sep1034-client-defaults, sse-retry, sep-2322-client-request-state,
            # http-invalid-tool-headers, request-metadata: call what is listed.
            for name in sorted(names):
                await self.call(name, {})


async def run(url: str) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    log(f"scenario {scenario!r} against {url}")
    with tempfile.TemporaryDirectory(prefix="funnel-conformance-") as tmp:
        config = Path(tmp) / ".mcp-funnel.json"
        config.write_text(
            json.dumps({"servers": {"backend": {"url": url, "prefix": ""}}, "exposeCoreTools": []}),
            encoding="utf-8",
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "MCP_FUNNEL_HOME": str(Path(tmp) / "home"),
            "FUNNEL_LOG_LEVEL": os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
        }
        params = StdioServerParameters(
            command=FUNNEL,
            # --port 0: the web app of this --stdio funnel takes any free port.
            args=["--stdio", "--config", str(config), "--port", "0"],
            env=env,
            cwd=tmp,
        )
        changes = ListChanges()
        async with Client(
            params,
            elicitation_callback=on_elicit,
            sampling_callback=on_sample,
            list_roots_callback=on_roots,
            message_handler=changes,
        ) as client:
            await Run(client, scenario, context, changes).main()
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: client.py URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(anyio.run(run, sys.argv[-1]))
