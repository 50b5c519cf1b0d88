"""Exposed names: ``prefix__tool``, the plain name, and short aliases where neither will do.

Every backend has a *prefix* (config ``prefix``; default: the server's name). The wanted
name of a tool or prompt is ``f"{prefix}__{tool}"``, or the backend's own name when the
prefix is ``""`` (a transparent backend). Model APIs accept tool names matching
``^[a-zA-Z0-9_-]{1,64}$``; backends do not promise that (``files/read``, ``créer``,
70-character names), so a wanted name that is not valid becomes an alias::

    <prefix>__<tool with invalid characters folded to "_", cut to fit>_<8 hex of sha256>

(without the ``<prefix>__`` head for a transparent backend). The hash is over the server
and the *original* tool name, so the alias depends on nothing but the pair itself. The
hash suffix keeps an alias apart from every plain name (two tools ``a.b`` and ``a_b``
cannot meet). In the astronomically rare case that two aliases still meet, the pair that
sorts first keeps the name and the other gets a longer hash.

**Collisions** (two servers that want the same name: two transparent backends that both
have ``echo``, or two servers given the same prefix) follow one rule: the server that
comes first in the configuration keeps the wanted name, and every later one gets
``<server name>__<tool>`` (server names are unique), or an alias when that is taken or
not valid either. No tool is ever dropped; :attr:`NameTable.collisions` lists each case so
``funnel-server check`` and the dashboard can show it. A disambiguated name is claimed
only after every wanted name, so it never takes a name another tool wants.

Server names (checked by the config loader with :func:`server_name_problem`) are 1–32
characters of letters, digits, ``-`` and ``_``, starting and ending with a letter or a
digit, without ``__``; a non-empty prefix follows the same rules.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CORE_TOOL_NAMES",
    "MAX_SERVER_NAME_LENGTH",
    "NameCollision",
    "NameTable",
    "is_valid_tool_name",
    "namespaced_name",
    "server_name_problem",
    "suggest_server_name",
]

CORE_TOOL_NAMES: Final = (
    "bridge_tool_request",
    "discover_tools_by_words",
    "get_tool_schema",
    "load_toolset",
)
"""The core tools funnel offers (bare names, matched by ``exposeCoreTools``)."""

MAX_SERVER_NAME_LENGTH: Final = 32
"""The longest server name the config accepts (leaves room for the tool part)."""

_MAX_NAME: Final = 64
_SEPARATOR: Final = "__"
_VALID_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVALID_RUN: Final = re.compile(r"[^a-zA-Z0-9_-]+")
_SERVER_CHARS: Final = re.compile(r"[A-Za-z0-9_-]+")
_HASH_LEN: Final = 8


def is_valid_tool_name(name: str) -> bool:
    """Whether ``name`` is acceptable to model APIs (``^[a-zA-Z0-9_-]{1,64}$``)."""
    return _VALID_TOOL_NAME.fullmatch(name) is not None


def namespaced_name(prefix: str, tool: str) -> str:
    """The wanted name of ``tool`` under ``prefix``: ``prefix__tool``, or ``tool`` for ``""``.

    The result may not be a valid tool name, or may be wanted by another server too; the
    :class:`NameTable` decides what is exposed.
    """
    return f"{prefix}{_SEPARATOR}{tool}" if prefix else tool


def server_name_problem(name: str) -> str | None:
    """Say what is wrong with a server name, or ``None`` if it can be used.

    Returns:
        A sentence for an error message, e.g. ``may only contain letters, digits, "-" and
        "_"``, or ``None``.
    """
    if not name:
        return "a server name must not be empty"
    if len(name) > MAX_SERVER_NAME_LENGTH:
        return f"a server name must be at most {MAX_SERVER_NAME_LENGTH} characters"
    if _SERVER_CHARS.fullmatch(name) is None:
        return 'a server name may only contain letters, digits, "-" and "_"'
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "a server name must start and end with a letter or a digit"
    if _SEPARATOR in name:
        return 'a server name must not contain "__" (it separates server and tool)'
    return None


def suggest_server_name(name: str) -> str:
    """A usable server name close to ``name`` (for error hints)."""
    cleaned = re.sub(r"_{2,}", "_", _INVALID_RUN.sub("-", name)).strip("-_")
    return cleaned[:MAX_SERVER_NAME_LENGTH].strip("-_") or "server"


def _alias(prefix: str, server: str, tool: str, hash_len: int) -> str:
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()
    suffix = "_" + digest[:hash_len]
    head = ""
    if prefix:
        head = _INVALID_RUN.sub("_", prefix).strip("_")[:MAX_SERVER_NAME_LENGTH] or "server"
        head += _SEPARATOR
    body = _INVALID_RUN.sub("_", tool).strip("_") or "tool"
    room = max(_MAX_NAME - len(head) - len(suffix), 1)
    return head + body[:room] + suffix


@dataclass(frozen=True, slots=True)
class NameCollision:
    """Two servers wanted the same exposed name; the one first in the config kept it.

    Attributes:
        name: The contested name.
        owner: The server that kept it.
        server: The server that did not.
        original: That server's own name for the tool.
        resolved: The name it is exposed under instead.
    """

    name: str
    owner: str
    server: str
    original: str
    resolved: str


class NameTable:
    """A two-way map between exposed names and ``(server, original name)``.

    Built from a set of pairs at once; the result depends only on the set, the prefixes
    and the priority, never on the order of the input. Rebuild it when a backend's list
    changes (5,000 tools take a few milliseconds).

    Args:
        tools: ``(server, tool)`` pairs; duplicates are ignored.
        prefixes: Server → prefix; a server not in it uses its name.
        priority: Servers in configuration order: who keeps a contested name (see the
            module docs). Servers not in it come after, by name.
        require_valid: Alias names that are not valid tool names (off for prompts,
            whose names no model API restricts).

    Example:
        >>> table = NameTable([("github", "create_issue"), ("fs", "files/read")])
        >>> table.name_for("github", "create_issue")
        'github__create_issue'
        >>> table.lookup(table.name_for("fs", "files/read"))
        ('fs', 'files/read')
        >>> table = NameTable([("a", "echo"), ("b", "echo")], prefixes={"a": "", "b": ""})
        >>> table.name_for("a", "echo"), table.name_for("b", "echo")
        ('echo', 'b__echo')
    """

    __slots__ = ("_by_name", "_by_pair", "collisions")

    def __init__(
        self,
        tools: Iterable[tuple[str, str]] = (),
        *,
        prefixes: Mapping[str, str] | None = None,
        priority: Sequence[str] = (),
        require_valid: bool = True,
    ) -> None:
        prefixes = prefixes or {}
        rank = {server: i for i, server in enumerate(priority)}
        pairs = sorted(set(tools), key=lambda p: (rank.get(p[0], len(rank)), p))

        def prefix_of(server: str) -> str:
            return prefixes.get(server, server)

        def usable(name: str) -> bool:
            return (is_valid_tool_name(name) if require_valid else bool(name)) and (
                name not in by_name
            )

        by_name: dict[str, tuple[str, str]] = {}
        second: list[tuple[str, str]] = []
        for pair in pairs:
            wanted = namespaced_name(prefix_of(pair[0]), pair[1])
            if usable(wanted):
                by_name[wanted] = pair
            else:
                second.append(pair)
        collisions: list[NameCollision] = []
        needs_alias: list[tuple[str, str]] = []
        for pair in second:
            server, tool = pair
            wanted = namespaced_name(prefix_of(server), tool)
            owner = by_name.get(wanted)
            if owner is None or owner[0] == server:
                needs_alias.append(pair)  # not valid (or a clash within one server)
                continue
            name = namespaced_name(server, tool)
            if not usable(name):
                name = self._alias(by_name, prefix_of(server), server, tool)
            by_name[name] = pair
            collisions.append(NameCollision(wanted, owner[0], server, tool, name))
        for server, tool in needs_alias:
            by_name[self._alias(by_name, prefix_of(server), server, tool)] = (server, tool)
        # Iteration follows the sorted pairs, not the order names were claimed in.
        self._by_pair: dict[tuple[str, str], str] = {
            pair: name for name, pair in sorted(by_name.items(), key=lambda item: item[1])
        }
        self._by_name = by_name
        self.collisions: tuple[NameCollision, ...] = tuple(collisions)
        """Every contested name, in the order it was resolved."""

    @staticmethod
    def _alias(taken: Mapping[str, object], prefix: str, server: str, tool: str) -> str:
        hash_len = _HASH_LEN
        alias = _alias(prefix, server, tool, hash_len)
        while alias in taken:
            hash_len += 4
            alias = _alias(prefix, server, tool, hash_len)
        return alias

    def name_for(self, server: str, tool: str) -> str:
        """The exposed name of ``tool`` on ``server``.

        Raises:
            KeyError: The pair is not in the table.
        """
        return self._by_pair[(server, tool)]

    def lookup(self, name: str) -> tuple[str, str] | None:
        """The ``(server, original tool name)`` behind an exposed name, or ``None``."""
        return self._by_name.get(name)

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        """Yield ``(exposed name, (server, tool))``, ordered by server, then tool."""
        for pair, name in self._by_pair.items():
            yield name, pair

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_pair.values())

    def __len__(self) -> int:
        return len(self._by_pair)

    def __repr__(self) -> str:
        return f"<NameTable {len(self)} tools>"
