"""End to end: every part of MCP passes through ``funnel-server --stdio``, both eras.

The official SDK client (2025-11-25 handshake and 2026-07-28 stateless, "auto") sits in
front, server-everything from npm behind. What the backend asks of its client (sampling,
elicitation, roots) reaches the SDK client's callbacks; its log messages, completions and
resource updates come through; a client that cannot answer gets a clear error at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters, types
from support.peers import funnel_stdio

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.npm,
    # logging/setLevel and resources/subscribe belong to the 2025-11-25 era these tests
    # speak; the SDK warns that 2026-07-28 replaced them.
    pytest.mark.filterwarnings("ignore:.*(deprecated|removed) as of 2026-07-28"),
]

MODES = ["legacy", "auto"]


@pytest.fixture
def config(tmp_path: Path, everything_js: Path) -> Path:
    path = tmp_path / ".mcp-funnel.json"
    path.write_text(
        json.dumps(
            {"servers": {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}}
        )
    )
    return path


def server(config: Path, tmp_path: Path) -> StdioServerParameters:
    return funnel_stdio(config, tmp_path)


class Person:
    """Answers the backend's questions the way a client's user would, and remembers them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="a sampled answer"),
            model="test-model",
        )

    async def elicit(self, context: Any, params: Any) -> types.ElicitResult:
        self.asked.append(f"elicitation:{type(params).__name__}")
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.asked.append("roots")
        root = types.Root(uri="file:///projects/funnel", name="funnel")  # type: ignore[arg-type]
        return types.ListRootsResult(roots=[root])


def text(result: types.CallToolResult) -> str:
    return "\n".join(item.text for item in result.content if isinstance(item, types.TextContent))


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_can_answer_sees_every_tool_and_answers_the_backends_questions(
    config: Path, tmp_path: Path, mode: str
) -> None:
    person = Person()
    async with Client(
        server(config, tmp_path),
        mode=mode,
        sampling_callback=person.sample,
        elicitation_callback=person.elicit,
        list_roots_callback=person.roots,
    ) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        # The tools server-everything offers only to a client that can sample, elicit
        # and list roots are there: funnel told it so, and relays each.
        assert {
            "everything__trigger-sampling-request",
            "everything__trigger-elicitation-request",
            "everything__trigger-url-elicitation",
            "everything__get-roots-list",
        } <= names

        with anyio.fail_after(30):
            sampled = await client.call_tool(
                "everything__trigger-sampling-request", {"prompt": "say hi", "maxTokens": 20}
            )
            assert not sampled.is_error
            assert "a sampled answer" in text(sampled)

            elicited = await client.call_tool("everything__trigger-elicitation-request", {})
            assert not elicited.is_error
            assert "Ada Lovelace" in text(elicited)

            roots = await client.call_tool("everything__get-roots-list", {})
            assert "file:///projects/funnel" in text(roots)
    # server-everything also asks for roots on its own (after initialization).
    assert {"sampling", "elicitation:ElicitRequestFormParams", "roots"} <= set(person.asked)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_without_sampling_gets_a_clear_error_instead_of_a_hang(
    config: Path, tmp_path: Path, mode: str
) -> None:
    async with Client(server(config, tmp_path), mode=mode) as client:
        with anyio.fail_after(30):
            result = await client.call_tool(
                "everything__trigger-sampling-request", {"prompt": "say hi", "maxTokens": 20}
            )
    assert result.is_error
    assert "sampling" in text(result)


async def test_log_messages_name_the_server_and_follow_the_clients_level(
    config: Path, tmp_path: Path
) -> None:
    received: list[types.LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)
        arrived.set()

    async with Client(server(config, tmp_path), mode="legacy", logging_callback=on_log) as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.logging is not None, (
            "funnel offers what its backends offer"
        )
        await client.set_logging_level("debug")
        resources = (await client.list_resources()).resources
        with anyio.fail_after(30):
            # Subscribing makes server-everything log that it received the subscription.
            await client.subscribe_resource(str(resources[0].uri))
            await arrived.wait()
    assert received[0].logger is not None
    assert received[0].logger.startswith("everything")


async def test_completion_is_routed_to_the_prompts_owner_under_its_own_name(
    config: Path, tmp_path: Path
) -> None:
    async with Client(server(config, tmp_path), mode="legacy") as client:
        prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        assert "everything__completable-prompt" in prompts
        with anyio.fail_after(30):
            completed = await client.complete(
                types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
                {"name": "department", "value": "Eng"},
            )
    assert completed.completion.values == ["Engineering"]


async def test_resource_updates_reach_the_client_that_subscribed(
    config: Path, tmp_path: Path
) -> None:
    updated: list[str] = []
    got_one = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            got_one.set()

    async with Client(
        server(config, tmp_path), mode="legacy", message_handler=on_message
    ) as client:
        resources = (await client.list_resources()).resources
        uri = str(resources[0].uri)
        with anyio.fail_after(40):
            await client.subscribe_resource(uri)
            await client.call_tool("everything__toggle-subscriber-updates", {})
            await got_one.wait()
    assert set(updated) == {uri}
