"""The funnel's own tools: find, inspect, call and load backend tools on demand.

These four tools let a model work with a large tool surface while the listed tools stay
few: ``discover_tools_by_words`` searches every registered tool, ``get_tool_schema``
shows one tool's parameters, ``bridge_tool_request`` calls any registered tool (also
one that is not exposed, never one that ``hideTools`` hides), and ``load_toolset``
exposes a configured group of tools.

In core tools mode (``exposeTools: []``) the listed tools never change during a
session, so clients' prompt caches hold: discovering or loading tools only makes them
callable through the bridge. Otherwise enabling a tool exposes it and the client gets
``notifications/tools/list_changed``.

Outputs are compact text meant for a model: one line per tool, required parameters
marked with ``*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec
from msgspec import Raw

from funnel_proxy._errors import ToolNotFound
from funnel_proxy._patterns import PatternSet
from funnel_proxy._search import SearchEntry, SearchIndex
from funnel_proxy._visibility import Reason
from funnel_transports import ProgressHandler, to_raw

if TYPE_CHECKING:
    from funnel_proxy._funnel import Funnel, Surface, ToolEntry

__all__ = ["CORE_SERVER", "CoreTools"]

CORE_SERVER: Final = "funnel"
"""The ``server`` of core tool entries."""

_SEARCH_LIMIT: Final = 10
_DESCRIPTION_CHARS: Final = 160

_DEFINITIONS: Final[dict[str, dict[str, Any]]] = {
    "discover_tools_by_words": {
        "name": "discover_tools_by_words",
        "description": (
            "Search all available tools (including ones not listed) by keywords in their names, "
            "descriptions and parameters. Returns the best matches; set enable=true to make them callable."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "words": {"type": "string", "description": "Keywords, e.g. 'create github issue'."},
                "enable": {
                    "type": "boolean",
                    "description": "Expose the matches as tools.",
                    "default": False,
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": _SEARCH_LIMIT},
            },
            "required": ["words"],
        },
    },
    "get_tool_schema": {
        "name": "get_tool_schema",
        "description": "Get the description and input schema of a tool found with discover_tools_by_words.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "tool": {
                    "type": "string",
                    "description": "The full tool name, e.g. github__create_issue.",
                }
            },
            "required": ["tool"],
        },
    },
    "bridge_tool_request": {
        "name": "bridge_tool_request",
        "description": "Call any available tool by its full name, also one that is not listed.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "tool": {
                    "type": "string",
                    "description": "The full tool name, e.g. github__create_issue.",
                },
                "arguments": {"type": "object", "description": "The tool's arguments."},
            },
            "required": ["tool"],
        },
    },
    "load_toolset": {
        "name": "load_toolset",
        "description": "Make a group of tools callable: a configured toolset by name, or name patterns with * wildcards.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "A configured toolset."},
                "tools": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Patterns like github__*issue*.",
                },
            },
        },
    },
}


class _DiscoverArgs(msgspec.Struct):
    words: str
    enable: bool = False
    limit: int = _SEARCH_LIMIT


class _SchemaArgs(msgspec.Struct):
    tool: str


class _BridgeArgs(msgspec.Struct):
    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class _ToolsetArgs(msgspec.Struct):
    name: str | None = None
    tools: list[str] | None = None


class CoreToolError(Exception):
    """A core tool was called with arguments it cannot use; the message says why."""


def _text(value: str, *, error: bool = False) -> Raw:
    result: dict[str, Any] = {"content": [{"type": "text", "text": value}]}
    if error:
        result["isError"] = True
    return to_raw(result)


def _parameters(definition: Mapping[str, Any]) -> str:
    schema = definition.get("inputSchema")
    if not isinstance(schema, dict):
        return ""
    properties = schema.get("properties")
    required = set(schema.get("required") or ())
    if not isinstance(properties, dict) or not properties:
        return ""
    return ", ".join(f"{name}*" if name in required else str(name) for name in properties)


def _summary(entry: ToolEntry) -> str:
    description = " ".join(str(entry.definition.get("description") or "").split())
    if len(description) > _DESCRIPTION_CHARS:
        description = description[: _DESCRIPTION_CHARS - 1] + "…"
    params = _parameters(entry.definition)
    line = f"- {entry.name}: {description}" if description else f"- {entry.name}"
    return f"{line} ({params})" if params else line


class CoreTools:
    """The core tools of one funnel.

    Args:
        funnel: The funnel whose tools they work on.
    """

    def __init__(self, funnel: Funnel) -> None:
        self._funnel = funnel
        self._index: tuple[Surface, SearchIndex] | None = None
        self._index_lock = anyio.Lock()

    def definitions(self) -> list[dict[str, Any]]:
        """The enabled core tools' definitions, in name order."""
        return [
            _DEFINITIONS[name] for name in self._funnel.policy.core_tools if name in _DEFINITIONS
        ]

    def offers(self, name: str) -> bool:
        """Whether ``name`` is an enabled core tool."""
        return name in _DEFINITIONS and self._funnel.policy.core_tool_enabled(name)

    def entry(self, name: str) -> ToolEntry:
        """The core tool ``name`` as a routable entry (server :data:`CORE_SERVER`)."""
        from funnel_proxy._funnel import ToolEntry

        return ToolEntry(
            name=name,
            server=CORE_SERVER,
            original=name,
            definition=_DEFINITIONS[name],
            exposed=True,
            reason=Reason.CORE,
        )

    async def call(
        self, name: str, arguments: Raw | None, *, on_progress: ProgressHandler | None = None
    ) -> Raw:
        """Run a core tool; bad arguments give a tool error result, not an exception.

        Raises:
            ToolNotFound: The bridge was asked for a tool that is not registered.
            BackendUnavailable: The bridged tool's backend is not connected.
            RpcError: The bridged tool's backend answered with an error.
        """
        payload = bytes(arguments) if arguments is not None else b"{}"
        try:
            if name == "discover_tools_by_words":
                return await self._discover(msgspec.json.decode(payload, type=_DiscoverArgs))
            if name == "get_tool_schema":
                return self._schema(msgspec.json.decode(payload, type=_SchemaArgs))
            if name == "bridge_tool_request":
                return await self._bridge(
                    msgspec.json.decode(payload, type=_BridgeArgs), on_progress
                )
            if name == "load_toolset":
                return self._load_toolset(msgspec.json.decode(payload, type=_ToolsetArgs))
        except msgspec.DecodeError as exc:
            return _text(f"Invalid arguments for {name}: {exc}", error=True)
        except CoreToolError as exc:
            return _text(str(exc), error=True)
        raise ToolNotFound(name)

    # ------------------------------------------------------------------ the tools

    async def _discover(self, args: _DiscoverArgs) -> Raw:
        index = await self._search_index()
        limit = max(1, min(args.limit, 50))
        hits = index.search(args.words, limit)
        by_name = self._funnel.surface.by_name
        entries = [by_name[hit.name] for hit in hits if hit.name in by_name]
        if not entries:
            return _text(f'No tools match "{args.words}". Try other or fewer words.')
        lines = [
            f'Tools matching "{args.words}" (call with bridge_tool_request, or get_tool_schema first):'
        ]
        lines += [_summary(entry) for entry in entries]
        if args.enable:
            lines.append(self._enable([entry.name for entry in entries]))
        return _text("\n".join(lines))

    def _schema(self, args: _SchemaArgs) -> Raw:
        entry = self._registered(args.tool)
        body = {
            "name": entry.name,
            "description": entry.definition.get("description", ""),
            "inputSchema": entry.definition.get("inputSchema", {"type": "object"}),
        }
        return _text(msgspec.json.encode(body).decode())

    async def _bridge(self, args: _BridgeArgs, on_progress: ProgressHandler | None) -> Raw:
        entry = self._registered(args.tool)
        return await self._funnel.call_tool(entry, args.arguments, on_progress=on_progress)

    def _load_toolset(self, args: _ToolsetArgs) -> Raw:
        if args.name:
            patterns = self._funnel.policy.toolset(args.name)
            if patterns is None:
                known = ", ".join(self._funnel.policy.toolset_names) or "none are configured"
                raise CoreToolError(f"Unknown toolset {args.name!r} (toolsets: {known}).")
        elif args.tools:
            patterns = PatternSet(args.tools)
        else:
            raise CoreToolError("Give a toolset name or tool patterns.")
        names = [entry.name for entry in self._funnel.surface.tools if patterns.matches(entry.name)]
        if not names:
            return _text("No available tool matches.")
        return _text(
            "\n".join(
                [f"{len(names)} tools:", *(f"- {name}" for name in names), self._enable(names)]
            )
        )

    # ------------------------------------------------------------------ helpers

    def _enable(self, names: Sequence[str]) -> str:
        if self._funnel.policy.core_tools_mode:
            # The listed tools never change in core tools mode (prompt caches hold).
            return "Call them with bridge_tool_request."
        added = self._funnel.enable_tools(names)
        return (
            f"Enabled {len(added)} tools; they are now listed."
            if added
            else "They are already listed."
        )

    def _registered(self, name: str) -> ToolEntry:
        if name in _DEFINITIONS:
            raise CoreToolError(f"{name} is a core tool: call it directly, not through the bridge.")
        try:
            return self._funnel.resolve_tool(name, include_hidden=True)
        except ToolNotFound:
            raise CoreToolError(
                f"Unknown tool {name!r}. Find tools with discover_tools_by_words."
            ) from None

    async def _search_index(self) -> SearchIndex:
        async with self._index_lock:
            surface = self._funnel.surface
            if self._index is not None and self._index[0] is surface:
                return self._index[1]
            entries = [
                SearchEntry(
                    name=entry.name,
                    server=entry.server,
                    description=str(entry.definition.get("description") or ""),
                    parameters=tuple(_parameters(entry.definition).replace("*", "").split(", "))
                    if _parameters(entry.definition)
                    else (),
                )
                for entry in surface.tools
            ]
            # Building the index for thousands of tools takes a while: off the event loop.
            index = await anyio.to_thread.run_sync(SearchIndex, entries)
            self._index = (surface, index)
            return index
