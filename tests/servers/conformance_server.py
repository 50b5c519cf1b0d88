"""The conformance suite's "everything server" fixture, on the official SDK (``mcp`` 2.x).

The MCP conformance harness (``tests/conformance``) judges a server by fixtures it finds
by exact name: tools ``test_simple_text`` …, resources ``test://static-text`` …, prompts
``test_simple_prompt`` …. funnel is the server under test; this program stands behind
it as its backend (run over stdio), so the harness meets the fixtures through funnel.
The names and behaviours follow the harness's scenario descriptions (the same set the
python-sdk's ``examples/servers/everything-server`` serves); the code is ours.

Test peer only, never imported by package code.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from mcp.server import ServerRequestContext
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, JsonValue

# A 1x1 PNG and a tiny WAV: the harness only checks type, data and MIME type.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# RequestStateSecurity wants 32 bytes or more; a fixed key is fine for a test fixture.
server = MCPServer(
    "funnel-conformance-fixture",
    version="1.0.0",
    request_state_security=RequestStateSecurity(keys=[b"funnel conformance fixture state key"]),
)
subscriptions: set[str] = set()


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def sampling(prompt: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=text(prompt))], max_tokens=max_tokens
        )
    )


def form(message: str, **properties: str) -> ElicitRequest:
    schema = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
    }
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def answered(responses: dict[str, Any] | None, *keys: str) -> bool:
    return responses is not None and set(keys) <= responses.keys()


def form_value(answer: object, key: str) -> str | None:
    """A field of an accepted elicitation answer, or ``None``."""
    if isinstance(answer, ElicitResult) and answer.content:
        value = answer.content.get(key)
        return None if value is None else str(value)
    return None


def sampled_text(answer: object) -> str:
    """The text a sampling answer carries, or ``"?"``."""
    if isinstance(answer, CreateMessageResult) and isinstance(answer.content, TextContent):
        return answer.content.text
    return "?"


# ---------------------------------------------------------------------- content tools


@server.tool()
def test_simple_text() -> str:
    """Return one text block."""
    return "This is a simple text response for testing."


@server.tool()
def test_image_content() -> list[ImageContent]:
    """Return one PNG image."""
    return [ImageContent(type="image", data=PNG, mime_type="image/png")]


@server.tool()
def test_audio_content() -> list[AudioContent]:
    """Return one WAV clip."""
    return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


def _resource(uri: str, mime: str, body: str) -> EmbeddedResource:
    return EmbeddedResource(
        type="resource", resource=TextResourceContents(uri=uri, mime_type=mime, text=body)
    )


@server.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Return one embedded text resource."""
    return [
        _resource("test://embedded-resource", "text/plain", "This is an embedded resource content.")
    ]


@server.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Return text, an image and an embedded resource."""
    return [
        text("Multiple content types test:"),
        ImageContent(type="image", data=PNG, mime_type="image/png"),
        _resource(
            "test://mixed-content-resource", "application/json", '{"test": "data", "value": 123}'
        ),
    ]


@server.tool()
def test_error_handling() -> str:
    """Fail: the result has isError set."""
    raise RuntimeError("This tool intentionally returns an error for testing")


# ---------------------------------------------------------------------- notifications


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Send three log messages while running."""
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.info(message)
    return "Tool with logging executed successfully"


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Report progress 0, 50 and 100 of 100; return the progress token."""
    for done in (0, 50, 100):
        await ctx.report_progress(progress=done, total=100, message=f"Completed step {done} of 100")
    meta = ctx.request_context.meta
    return str(meta.get("progress_token", 0) if meta else 0)


@server.tool()
async def test_reconnection(ctx: Context) -> str:
    """Close the SSE stream mid-call, then log again (SEP-1699 polling)."""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()
    await ctx.info("After reconnect")
    return "Reconnection test completed"


def _dynamic() -> str:
    """Added and removed at once by the change triggers."""
    return "dynamic"


@server.tool()
async def test_trigger_tool_change(ctx: Context) -> str:
    """Change the tool list and announce it."""
    server.add_tool(_dynamic, name="test_dynamic_tool")
    server.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


@server.tool()
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Change the prompt list and announce it."""
    server.add_prompt(
        Prompt.from_function(_dynamic, name="test_dynamic_prompt", description="dynamic")
    )
    server.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


# ---------------------------------------------------------------------- server → client


def stateless(ctx: Context) -> bool:
    """Whether this request is in the 2026-07-28 era, where a server asks through input
    requests (SEP-2322) and cannot send requests of its own mid-call."""
    return (ctx.protocol_version or "") >= "2026-07-28"


@server.tool()
async def test_sampling(prompt: str, ctx: Context) -> str | InputRequiredResult:
    """Ask the client's model to complete ``prompt``."""
    if stateless(ctx):
        responses = ctx.input_responses or {}
        if "sample" in responses:
            return f"LLM response: {sampled_text(responses['sample'])}"
        return InputRequiredResult(input_requests={"sample": sampling(prompt, 100)})
    try:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=text(prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
    except Exception as exc:
        return f"Sampling not supported or error: {exc}"
    reply = result.content.text if result.content.type == "text" else "No response"
    return f"LLM response: {reply}"


class Answer(BaseModel):
    response: str = Field(description="User's response")


class Defaults(BaseModel):
    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


def _choices(*pairs: tuple[str, str]) -> list[JsonValue]:
    return [{"const": value, "title": title} for value, title in pairs]


class Enums(BaseModel):
    untitledSingle: str = Field(  # noqa: N815 - the harness names the fields
        description="Simple enum without titles",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    titledSingle: str = Field(  # noqa: N815
        description="Enum with titled options (oneOf)",
        json_schema_extra={
            "oneOf": _choices(
                ("low", "Low Priority"), ("medium", "Medium Priority"), ("high", "High Priority")
            )
        },
    )
    untitledMulti: list[str] = Field(  # noqa: N815
        description="Multi-select without titles",
        json_schema_extra={"items": {"type": "string", "enum": ["read", "write", "execute"]}},
    )
    titledMulti: list[str] = Field(  # noqa: N815
        description="Multi-select with titled options",
        json_schema_extra={
            "items": {
                "anyOf": _choices(
                    ("feature", "New Feature"), ("bug", "Bug Fix"), ("docs", "Documentation")
                )
            }
        },
    )
    legacyEnum: str = Field(  # noqa: N815
        description="Legacy enum with enumNames",
        json_schema_extra={
            "enum": ["small", "medium", "large"],
            "enumNames": ["Small Size", "Medium Size", "Large Size"],
        },
    )


async def _elicit(
    ctx: Context, message: str, schema: type[BaseModel], label: str
) -> str | InputRequiredResult:
    if stateless(ctx):
        responses = ctx.input_responses or {}
        answer = responses.get("answer")
        if isinstance(answer, ElicitResult):
            accepted = answer.action == "accept"
            content = (
                schema.model_validate(answer.content or {}).model_dump_json() if accepted else "{}"
            )
            return f"{label}: action={answer.action}, content={content}"
        request = ElicitRequest(
            params=ElicitRequestFormParams(
                message=message, requested_schema=render_elicitation_schema(schema)
            )
        )
        return InputRequiredResult(input_requests={"answer": request})
    try:
        result = await ctx.elicit(message=message, schema=schema)
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"{label}: action={result.action}, content={content}"


@server.tool()
async def test_elicitation(message: str, ctx: Context) -> str | InputRequiredResult:
    """Ask the user ``message`` (one string answer)."""
    return await _elicit(ctx, message, Answer, "User response")


@server.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str | InputRequiredResult:
    """Ask with a default for every primitive type (SEP-1034)."""
    return await _elicit(ctx, "Please provide user information", Defaults, "Elicitation result")


@server.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str | InputRequiredResult:
    """Ask with every enum schema form (SEP-1330)."""
    return await _elicit(
        ctx,
        "Please select values using different enum schema types",
        Enums,
        "Elicitation completed",
    )


@server.tool()
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Ask the user mid-call; in the stateless era that must come back as an input request."""
    return await _elicit(ctx, "Please answer", Answer, "User response")


@server.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Log one message (sent only when the request asked for a log level)."""
    await ctx.info("test_logging_tool ran")
    return "logged"


@server.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Refuse with a JSON-RPC error unless the client declared sampling."""
    capabilities = ctx.client_capabilities  # the session's, or this request's _meta (2026-07-28)
    if capabilities is None or capabilities.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="This tool requires the client 'sampling' capability",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "Client declared sampling capability; proceeding."


@server.tool()
def test_x_mcp_header(
    region: Annotated[
        str,
        Field(
            description="Mirrored into Mcp-Param-Region",
            json_schema_extra={"x-mcp-header": "Region"},
        ),
    ] = "<none>",  # noqa: PT028 - a fixture tool named test_*, not a pytest test
) -> str:
    """Take a parameter the client mirrors into an ``Mcp-Param-Region`` header (SEP-2243)."""
    return f"region={region}"


# ---------------------------------------------------------------------- MRTR (SEP-2322)


@server.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Ask for a name through an input request, then greet."""
    responses = ctx.input_responses or {}
    if "user_name" in responses:
        return f"Hello, {form_value(responses['user_name'], 'name') or 'stranger'}!"
    return InputRequiredResult(
        input_requests={"user_name": form("What is your name?", name="string")}
    )


@server.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Ask the client's model through an input request."""
    responses = ctx.input_responses or {}
    if "capital_question" in responses:
        return f"Model said: {sampled_text(responses['capital_question'])}"
    return InputRequiredResult(
        input_requests={"capital_question": sampling("What is the capital of France?", 100)}
    )


@server.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Ask for the client's roots through an input request."""
    responses = ctx.input_responses or {}
    if "client_roots" in responses:
        answer = responses["client_roots"]
        count = len(answer.roots) if isinstance(answer, ListRootsResult) else 0
        return f"Client exposed {count} root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


@server.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Hand out a request state and expect it back with the answer."""
    if answered(ctx.input_responses, "confirm") and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    return InputRequiredResult(
        input_requests={"confirm": form("Please confirm", ok="boolean")},
        request_state="request-state-nonce",
    )


@server.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Ask for an elicitation, a sampling and the roots at once."""
    if answered(ctx.input_responses, "user_name", "greeting", "client_roots"):
        return "All inputs received."
    return InputRequiredResult(
        input_requests={
            "user_name": form("What is your name?", name="string"),
            "greeting": sampling("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="multiple-inputs",
    )


@server.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: name, then colour, then the answer; the state says which round."""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    responses = ctx.input_responses or {}
    first = InputRequiredResult(
        input_requests={"step1": form("Step 1: What is your name?", name="string")},
        request_state=json.dumps({"round": 1}),
    )
    if state["round"] == 1 and "step1" in responses:
        name = form_value(responses["step1"], "name")
        return InputRequiredResult(
            input_requests={"step2": form("Step 2: What is your favorite color?", color="string")},
            request_state=json.dumps({"round": 2, "name": name}),
        )
    if state["round"] == 2 and "step2" in responses:
        color = form_value(responses["step2"], "color")
        return f"{state.get('name')} likes {color}."
    return first  # round 0, or an answer out of order: start over


@server.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Hand out a state; the SDK's request-state boundary rejects a tampered echo."""
    if ctx.request_state is None:
        return InputRequiredResult(
            input_requests={"confirm": form("Please confirm", ok="boolean")},
            request_state="round-1",
        )
    return f"state-ok: {ctx.request_state}"


@server.tool()
async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Ask only for what the client declared it can answer."""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        requests["sample"] = sampling("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        requests["ask"] = form("What is your name?", name="string")
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


# ---------------------------------------------------------------------- JSON Schema 2020-12

SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@server.tool(name="json_schema_2020_12_tool")
def json_schema_2020_12_tool() -> str:
    """Carry every JSON Schema 2020-12 keyword the harness looks for in tools/list."""
    return "json_schema_2020_12_tool"


# MCPServer derives the schema from the signature and has no override: set it directly.
server._tool_manager._tools["json_schema_2020_12_tool"].parameters = SCHEMA_2020_12


# ---------------------------------------------------------------------- resources


@server.resource("test://static-text")
def static_text() -> str:
    """A fixed text."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary")
def static_binary() -> bytes:
    """A fixed PNG."""
    return base64.b64decode(PNG)


@server.resource("test://template/{id}/data")
def template_data(id: str) -> str:
    """JSON naming the ``id`` of the URI."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@server.resource("test://watched-resource")
def watched() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# ---------------------------------------------------------------------- prompts


@server.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """No arguments."""
    return [UserMessage(role="user", content=text("This is a simple prompt for testing."))]


@server.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """Two required arguments."""
    return [
        UserMessage(
            role="user", content=text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")
        )
    ]


@server.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 - the harness names it
    """Embed the resource ``resourceUri``."""
    return [
        UserMessage(
            role="user",
            content=_resource(resourceUri, "text/plain", "Embedded resource content for testing."),
        ),
        UserMessage(role="user", content=text("Please process the embedded resource above.")),
    ]


@server.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """An image, then a question about it."""
    return [
        UserMessage(
            role="user", content=ImageContent(type="image", data=PNG, mime_type="image/png")
        ),
        UserMessage(role="user", content=text("Please analyze the image above.")),
    ]


@server.prompt()
async def test_input_required_result_prompt(
    ctx: Context,
) -> list[UserMessage] | InputRequiredResult:
    """Ask for context through an input request from prompts/get."""
    responses = ctx.input_responses or {}
    if "user_context" in responses:
        value = form_value(responses["user_context"], "context") or "?"
        return [UserMessage(role="user", content=text(f"Use the following context: {value}"))]
    return InputRequiredResult(
        input_requests={
            "user_context": form("What context should the prompt use?", context="string")
        }
    )


# ---------------------------------------------------------------------- other methods


async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
    subscriptions.discard(str(params.uri))
    return EmptyResult()


# MCPServer has no public hooks for these three yet.
lowlevel = server._lowlevel_server
lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


# The SDK leaves this decorator untyped.
@server.completion()  # type: ignore[untyped-decorator, no-untyped-call]
async def complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    """No suggestions: the harness checks the shape only."""
    return Completion(values=[], total=0, has_more=False)


if __name__ == "__main__":
    server.run("stdio")
