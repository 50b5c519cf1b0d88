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

import gc
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import anyio
import msgspec
from msgspec import Raw

from funnel_proxy._errors import ToolNotFound
from funnel_proxy._models import FunnelConfig
from funnel_proxy._patterns import PatternSet
from funnel_proxy._search import SearchEntry, SearchIndex, search_entry
from funnel_proxy._semantic import Embedder, load_embedder
from funnel_proxy._surface import Surface, ToolEntry
from funnel_proxy._visibility import Reason, VisibilityPolicy
from funnel_transports import ProgressHandler, to_raw

__all__ = ["CORE_SERVER", "CoreTools", "CoreToolsHost"]

logger = logging.getLogger(__name__)

CORE_SERVER: Final = "funnel"
"""The ``server`` of core tool entries."""

_SEARCH_LIMIT: Final = 10
_SUMMARY_CHARS: Final = 120
_REQUIRED_SHOWN: Final = 4
_SEMANTIC_WAIT_SECONDS: Final = 2.0
_WORDS_FORMAT: Final = "Invalid words format - use string, {and: [...]}, or {or: [...]}"

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
                "words": {
                    "description": (
                        "What you want to do, in a few words, e.g. 'create github issue'; "
                        "or {and: [...]} for tools matching every word, {or: [...]} for any."
                    ),
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "and": {"type": "array", "items": {"type": "string"}},
                                "or": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    ],
                },
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
    words: str | dict[str, list[str]]
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


def _one_line(description: str) -> str:
    """The first sentence or line of ``description``, at most :data:`_SUMMARY_CHARS`."""
    text = " ".join(description[: _SUMMARY_CHARS * 3].split("\n\n", 1)[0].split())
    for end in (". ", "? ", "! "):
        cut = text.find(end)
        if 0 < cut < _SUMMARY_CHARS:
            text = text[: cut + 1]
    if len(text) > _SUMMARY_CHARS:
        text = text[: _SUMMARY_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text


def _summary(entry: ToolEntry) -> str:
    """One hit in about 40 tokens: name, one line, server, required parameters.

    The line starts ``- name: `` as it always did, so clients that read names out of
    it keep working; the rest goes in brackets at the end.
    """
    summary = _one_line(str(entry.definition.get("description") or ""))
    line = f"- {entry.name}: {summary}" if summary else f"- {entry.name}:"
    details = [f"server {entry.server}"]
    schema = entry.definition.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and properties:
        listed = schema.get("required") if isinstance(schema, dict) else None
        required = [str(n) for n in listed or () if n in properties]
        shown = ", ".join(required[:_REQUIRED_SHOWN])
        if len(required) > _REQUIRED_SHOWN:
            shown += f", +{len(required) - _REQUIRED_SHOWN} more"
        if required:
            details.append(f"requires {shown}")
        if len(properties) > len(required):
            details.append(f"{len(properties) - len(required)} optional")
    return f"{line} [{'; '.join(details)}]"


def _query(words: str | dict[str, list[str]]) -> tuple[str, bool]:
    """The query text and whether every word must match (the original's forms)."""
    if isinstance(words, str):
        return words, False
    if len(words) != 1 or not ({"and", "or"} >= words.keys()):
        raise CoreToolError(_WORDS_FORMAT)
    ((mode, items),) = words.items()
    return " ".join(items), mode == "and"


class CoreToolsHost(Protocol):
    """What the core tools need of the funnel they serve (:class:`Funnel` is one)."""

    @property
    def config(self) -> FunnelConfig:
        """The configuration."""

    @property
    def policy(self) -> VisibilityPolicy:
        """The filters."""

    @property
    def surface(self) -> Surface:
        """The current snapshot."""

    def enable_tools(self, names: Iterable[str]) -> list[str]:
        """Expose registered tools; return the newly enabled."""

    def resolve_tool(self, name: str, *, include_hidden: bool = False) -> ToolEntry:
        """The registered tool ``name`` (raises ``ToolNotFound``)."""

    async def call_tool(
        self,
        entry: ToolEntry,
        arguments: Raw | Mapping[str, Any] | None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Raw:
        """Call a resolved tool."""


class CoreTools:
    """The core tools of one funnel.

    Args:
        funnel: The funnel whose tools they work on.
    """

    def __init__(self, funnel: CoreToolsHost) -> None:
        self._funnel = funnel
        self._index: SearchIndex | None = None
        self._indexed: Surface | None = None
        self._entries: list[SearchEntry] = []
        # None: not loaded yet; False: the semantic extra is not installed.
        self._embedder: Embedder | Literal[False] | None = None
        self._embedder_loaded: anyio.Event | None = None
        self._semantic_done = anyio.Event()
        self._semantic_wanted = False
        self._idle = anyio.Event()
        self._settled: SearchIndex | None = None
        self._maintained = False
        self._index_lock = anyio.Lock()
        self._wake = anyio.Event()

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
        query, match_all = _query(args.words)
        if not query.strip():
            raise CoreToolError('Missing or invalid "words" parameter')
        index = await self._search_index()
        limit = max(1, min(args.limit, 50))
        hits = index.search(query, limit, match_all=match_all)
        by_name = self._funnel.surface.by_name
        entries = [by_name[hit.name] for hit in hits if hit.name in by_name]
        if not entries:
            return _text(f'No tools match "{query}". Try other or fewer words.')
        lines = [
            f'Tools matching "{query}", best first (call with bridge_tool_request, '
            "or get_tool_schema first):"
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

    # ------------------------------------------------------------------ the index

    def surface_changed(self) -> None:
        """The funnel's surface changed: rebuild the search index in the background."""
        self._wake.set()
        if self._idle.is_set():
            self._idle = anyio.Event()

    @property
    def search_index(self) -> SearchIndex | None:
        """The current search index (``None`` before the first build)."""
        return self._index

    async def index_ready(self) -> None:
        """Wait until the index is built for the current surface (callers bound it)."""
        await self._idle.wait()

    async def maintain_index(self) -> None:
        """Keep the search index built for the current surface, until cancelled.

        The funnel runs this in its task group from its start, so the embedder loads
        while the backends connect. Each surface change rebuilds the lexical index in a
        worker thread (reusing what did not change), then embeds the new tools.
        """
        self._maintained = True
        try:
            async with anyio.create_task_group() as tg:
                loading = False
                while True:
                    # Only a funnel that offers the search pays for its index; the
                    # embedding table's memory only one that relies on the search (core
                    # tools mode, or core tools configured), or once a search was asked.
                    if self.offers("discover_tools_by_words"):
                        semantic = self._semantic_wanted or self._relies_on_search()
                        if semantic and not loading:
                            # The table loads while the lexical index is built.
                            tg.start_soon(self._load_embedder)
                            loading = True
                        await self._add_semantic(await self._rebuild(), load=semantic)
                    if not self._wake.is_set():
                        self._idle.set()
                    await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            self._maintained = False

    async def _rebuild(self) -> SearchIndex:
        """The lexical index of the current surface, built unless it already is."""
        async with self._index_lock:
            surface = self._funnel.surface
            if self._index is not None and self._indexed is surface:
                return self._index
            # Thousands of tools take a while: off the event loop, in a thread.
            started = time.perf_counter()
            index = await anyio.to_thread.run_sync(self._build, surface, self._index)
            if index is not self._index:
                if self._semantic_done.is_set() and self._embedder is not False:
                    self._semantic_done = anyio.Event()
                logger.debug(
                    "search index: %d tools in %.1f ms",
                    len(index),
                    (time.perf_counter() - started) * 1000,
                )
            self._index, self._indexed = index, surface
            return index

    def _build(self, surface: Surface, previous: SearchIndex | None) -> SearchIndex:
        """A new index when the searchable tools changed, else ``previous`` (in a thread)."""
        entries = [
            search_entry(entry.name, entry.server, entry.definition) for entry in surface.tools
        ]
        if previous is not None and entries == self._entries:
            return previous
        self._entries = entries
        return SearchIndex(entries, previous=previous)

    @staticmethod
    def _settle(index: SearchIndex) -> None:
        """Pay a new index's one-off costs now, in a thread, not in a client's query."""
        # The first search through a new matrix and the tokenizer costs a few ms more.
        index.search("find a tool", 1)
        # A build allocates hundreds of thousands of objects; the full collection they
        # make due would otherwise land on whichever query allocates next (about 10 ms
        # at 5,000 tools).
        gc.collect()

    async def _load_embedder(self) -> None:
        """Load the embedder once; concurrent callers wait for the first one."""
        if self._embedder_loaded is None:
            self._embedder_loaded = anyio.Event()
            self._embedder = await anyio.to_thread.run_sync(load_embedder) or False
            self._embedder_loaded.set()
        else:
            await self._embedder_loaded.wait()

    def _relies_on_search(self) -> bool:
        policy = self._funnel.policy
        return policy.core_tools_mode or self._funnel.config.expose_core_tools is not None

    async def _add_semantic(self, index: SearchIndex, *, load: bool = True) -> None:
        """Embed the new index's tools (with the extra, when ``load``), then settle it."""
        if load:
            await self._load_embedder()
        started = time.perf_counter()
        if self._embedder and not index.semantic:
            await anyio.to_thread.run_sync(index.add_semantic, self._embedder)
        if index is not self._settled:
            await anyio.to_thread.run_sync(self._settle, index)
            self._settled = index
            logger.debug(
                "search index: embedded and settled in %.1f ms",
                (time.perf_counter() - started) * 1000,
            )
        self._semantic_done.set()

    async def _search_index(self) -> SearchIndex:
        if self._index is not None and self._indexed is self._funnel.surface:
            index = self._index
        else:
            index = await self._rebuild()
        if not self._maintained:
            await self._add_semantic(index)
        elif not self._semantic_wanted and not self._relies_on_search():
            # The first search of a funnel that lists every tool anyway: answered
            # lexically now, while the embedding table loads for the next ones.
            self._semantic_wanted = True
            self._wake.set()
        elif not self._semantic_done.is_set():
            # The ranking should not depend on how soon a query follows a change: wait
            # (bounded) for the new tools' vectors, a few ms after a change, longer only
            # right after start-up while the embedding table loads.
            with anyio.move_on_after(_SEMANTIC_WAIT_SECONDS):
                await self._semantic_done.wait()
        return index
