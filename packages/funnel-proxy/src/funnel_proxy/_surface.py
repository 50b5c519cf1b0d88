"""The surface: everything funnel offers, built from the backends' lists by a pure function.

Theory of operation: :func:`build_surface` takes the backends' last-known states (in
configuration order), the visibility policy, the names enabled at run time and each
server's prefix, and returns an immutable :class:`Surface`. It does no I/O and keeps no
state, so the funnel calls it on every change and readers take the current snapshot
without locks.

Names come from a :class:`~funnel_proxy._names.NameTable` built over the lists of
*every* backend, connected or not: a backend that drops for a moment keeps its names, and
the tools of another one do not move into them meanwhile. Only connected backends'
tools are routable; the others' names are kept in :attr:`Surface.unavailable` so a call
gets "backend unavailable", not "no such tool".

**The collision rule**, one for everything: the server that comes first in the
configuration wins.

* Tools and prompts: the first keeps the wanted name (``prefix__name``, or the plain
  name under ``"prefix": ""``); each later one is exposed as ``server__name`` (or an
  alias when that is taken too). Nothing is dropped.
* Resources and resource templates: a URI (or URI template) cannot be renamed, so the
  first server owns it and serves every read of it; the later server's entry is not
  listed. URIs matched only by templates go to the longest matching template prefix,
  ties to the first server.

Every case is recorded in :attr:`Surface.conflicts` for ``funnel-server check`` and the
API.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from funnel_proxy._names import NameTable, namespaced_name
from funnel_proxy._visibility import Reason, VisibilityPolicy

__all__ = ["BackendLists", "Conflict", "ConflictKind", "Surface", "ToolEntry", "build_surface"]

ConflictKind = Literal["tool", "prompt", "resource", "resource_template"]
"""What two servers both offered."""


@dataclass(frozen=True, slots=True)
class ToolEntry:
    """One backend tool as the funnel sees it.

    Attributes:
        name: The exposed name (``prefix__tool``, the plain name, or a stable alias).
        server: The backend that owns it.
        original: The tool's name on its backend.
        definition: The backend's tool definition, with ``name`` replaced by ``name``.
        exposed: Whether ``tools/list`` shows it.
        reason: Why it is exposed or not.
    """

    name: str
    server: str
    original: str
    definition: Mapping[str, Any]
    exposed: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two servers offered the same name or URI; how it was resolved.

    Attributes:
        kind: ``tool``, ``prompt``, ``resource`` or ``resource_template``.
        name: The contested exposed name, URI or URI template.
        owner: The server that keeps it (the first in the configuration).
        server: The server that does not.
        resolved: The name the later server's tool or prompt is exposed under instead;
            ``None`` for resources, which the owner alone serves.
    """

    kind: ConflictKind
    name: str
    owner: str
    server: str
    resolved: str | None = None

    def describe(self) -> str:
        """One line for people, e.g. ``tool "echo": a keeps it, b's is "b__echo"``."""
        if self.resolved is not None:
            return (
                f'{self.kind} "{self.name}" is offered by {self.owner} and {self.server}: '
                f'{self.owner} keeps the name, {self.server}\'s is "{self.resolved}"'
            )
        return (
            f'{self.kind.replace("_", " ")} "{self.name}" is offered by {self.owner} and '
            f"{self.server}: {self.owner} serves it, {self.server}'s is not listed"
        )


@dataclass(frozen=True, slots=True)
class Surface:
    """An immutable snapshot of everything the funnel offers.

    Attributes:
        tools: Every registered tool of a connected backend, exposed or not, ordered by
            server, then the tool's own name.
        by_name: The same, by exposed name.
        prompts: The prompts as ``prompts/list`` shows them (exposed names).
        prompt_owner: Exposed prompt name → ``(server, original name)``.
        resources: The resources as ``resources/list`` shows them.
        resource_templates: The resource templates as listed.
        resource_owner: Listed URI → its server.
        template_prefixes: ``(literal prefix of a template, server)``, longest first.
        unavailable: Names of registered tools whose backend is not connected → server.
        conflicts: Every name or URI two servers both offered, and how it was resolved.
    """

    tools: tuple[ToolEntry, ...] = ()
    by_name: Mapping[str, ToolEntry] = field(default_factory=dict)
    prompts: tuple[dict[str, Any], ...] = ()
    prompt_owner: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    resources: tuple[dict[str, Any], ...] = ()
    resource_templates: tuple[dict[str, Any], ...] = ()
    resource_owner: Mapping[str, str] = field(default_factory=dict)
    template_prefixes: tuple[tuple[str, str], ...] = ()
    unavailable: Mapping[str, str] = field(default_factory=dict)
    conflicts: tuple[Conflict, ...] = ()

    @property
    def exposed_tools(self) -> list[dict[str, Any]]:
        """Definitions of the exposed tools, in a deterministic order."""
        return [dict(entry.definition) for entry in self.tools if entry.exposed]

    def owner_of_template(self, uri_template: str) -> str | None:
        """The backend that listed the resource template ``uri_template`` (or its URI)."""
        prefix = uri_template.split("{", 1)[0]
        owner = next((server for p, server in self.template_prefixes if p == prefix), None)
        return owner or self.owner_of_resource(uri_template)

    def owner_of_resource(self, uri: str) -> str | None:
        """The backend serving ``uri``: listed resources first, then templates by prefix."""
        owner = self.resource_owner.get(uri)
        if owner is not None:
            return owner
        return next(
            (server for prefix, server in self.template_prefixes if uri.startswith(prefix)), None
        )


class BackendLists(Protocol):
    """What :func:`build_surface` reads of a backend's state (``BackendState`` fits)."""

    @property
    def name(self) -> str:
        """The server's name."""

    @property
    def status(self) -> str:
        """Its status; only ``connected`` backends are served."""

    @property
    def lists(self) -> Mapping[str, tuple[dict[str, Any], ...]]:
        """Its last-known ``tools``, ``prompts``, ``resources``, ``resourceTemplates``."""


def _named(items: Iterable[dict[str, Any]], key: str) -> list[tuple[str, dict[str, Any]]]:
    return [(item[key], item) for item in items if isinstance(item.get(key), str)]


def build_surface(
    states: Sequence[BackendLists],
    policy: VisibilityPolicy,
    enabled: Container[str] = frozenset(),
    *,
    prefixes: Mapping[str, str] | None = None,
) -> Surface:
    """Build the surface from the backends' states.

    Args:
        states: Every backend's state, in configuration order (which decides
            collisions, see the module docs); only ``connected`` ones are served.
        policy: The filters.
        enabled: Exposed names enabled at run time.
        prefixes: Server → prefix (``""`` = the backend's own names); a server not in it
            uses its name.

    Returns:
        The new snapshot.
    """
    prefixes = prefixes or {}
    conflicts: list[Conflict] = []
    tools, unavailable = _tools(states, policy, enabled, prefixes, conflicts)
    prompts, prompt_owner = _prompts(states, prefixes, conflicts)
    live = [state for state in states if state.status == "connected"]
    resources, resource_owner = _resources(live, conflicts)
    templates, template_prefixes = _templates(live, conflicts)
    return Surface(
        tools=tuple(tools),
        by_name={entry.name: entry for entry in tools},
        prompts=tuple(prompts),
        prompt_owner=prompt_owner,
        resources=tuple(resources),
        resource_templates=tuple(templates),
        resource_owner=resource_owner,
        template_prefixes=template_prefixes,
        unavailable=unavailable,
        conflicts=tuple(conflicts),
    )


def _tools(
    states: Sequence[BackendLists],
    policy: VisibilityPolicy,
    enabled: Container[str],
    prefixes: Mapping[str, str],
    conflicts: list[Conflict],
) -> tuple[list[ToolEntry], dict[str, str]]:
    connected = {state.name for state in states if state.status == "connected"}
    # Names over every backend's last-known tools: a backend that is down keeps its names.
    defs = {
        (state.name, name): tool
        for state in states
        for name, tool in _named(state.lists.get("tools", ()), "name")
    }
    table = NameTable(defs, prefixes=prefixes, priority=[state.name for state in states])
    conflicts += [Conflict("tool", c.name, c.owner, c.server, c.resolved) for c in table.collisions]
    tools: list[ToolEntry] = []
    unavailable: dict[str, str] = {}
    for name, (server, original) in table.items():
        wanted = namespaced_name(prefixes.get(server, server), original)
        alias = name if name != wanted else None
        if server not in connected:
            if policy.registered(wanted, alias=alias):
                unavailable[name] = server
            continue
        verdict = policy.decide(wanted, enabled=enabled, alias=alias)
        if verdict.registered:
            definition = {**defs[(server, original)], "name": name}
            tools.append(
                ToolEntry(name, server, original, definition, verdict.exposed, verdict.reason)
            )
    return tools, unavailable


def _prompts(
    states: Sequence[BackendLists], prefixes: Mapping[str, str], conflicts: list[Conflict]
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
    # Named like tools, but any non-empty name will do: no model API restricts them.
    connected = {state.name for state in states if state.status == "connected"}
    defs = {
        (state.name, name): prompt
        for state in states
        for name, prompt in _named(state.lists.get("prompts", ()), "name")
    }
    table = NameTable(
        defs, prefixes=prefixes, priority=[state.name for state in states], require_valid=False
    )
    conflicts += [
        Conflict("prompt", c.name, c.owner, c.server, c.resolved) for c in table.collisions
    ]
    prompts: list[dict[str, Any]] = []
    owner: dict[str, tuple[str, str]] = {}
    for name, pair in table.items():
        if pair[0] in connected:
            owner[name] = pair
            prompts.append({**defs[pair], "name": name})
    return prompts, owner


def _resources(
    live: Sequence[BackendLists], conflicts: list[Conflict]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    resources: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    for state in live:
        for uri, resource in _named(state.lists.get("resources", ()), "uri"):
            owner = owners.get(uri)
            if owner is None:
                owners[uri] = state.name
                resources.append(dict(resource))
            elif owner != state.name:
                conflicts.append(Conflict("resource", uri, owner, state.name))
    return resources, owners


def _templates(
    live: Sequence[BackendLists], conflicts: list[Conflict]
) -> tuple[list[dict[str, Any]], tuple[tuple[str, str], ...]]:
    templates: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    prefixes: list[tuple[str, int, str]] = []
    for rank, state in enumerate(live):
        for uri_template, template in _named(
            state.lists.get("resourceTemplates", ()), "uriTemplate"
        ):
            owner = owners.get(uri_template)
            if owner is None:
                owners[uri_template] = state.name
                templates.append(dict(template))
                literal = uri_template.split("{", 1)[0]
                if literal:
                    prefixes.append((literal, rank, state.name))
            elif owner != state.name:
                conflicts.append(Conflict("resource_template", uri_template, owner, state.name))
    # Longest prefix first, so the most specific template wins; ties to the first server.
    prefixes.sort(key=lambda item: (-len(item[0]), item[1]))
    return templates, tuple((literal, server) for literal, _, server in prefixes)
