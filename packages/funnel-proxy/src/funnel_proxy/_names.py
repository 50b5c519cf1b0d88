"""Namespaced tool names: ``server__tool``, and short aliases where that will not do.

Model APIs accept tool names matching ``^[a-zA-Z0-9_-]{1,64}$``. Backends do not promise
that (``files/read``, ``créer``, 70-character names), so the exposed name of a backend tool
is ``f"{server}__{tool}"`` when that is valid, and otherwise an alias::

    <server>__<tool with invalid characters folded to "_", cut to fit>_<8 hex of sha256>

The hash is over the server and the *original* tool name, so the alias depends on nothing
but the pair itself: the same tools give the same names on every run, in any order. The
hash suffix keeps an alias apart from every plain name (two tools ``a.b`` and ``a_b``
cannot meet). In the astronomically rare case that two names still collide, the pair that
sorts first keeps the name and the other gets a longer hash.

Server names (checked by the config loader with :func:`server_name_problem`) are 1–32
characters of letters, digits, ``-`` and ``_``, starting and ending with a letter or a
digit, without ``__``; so the first ``__`` of a plain name always ends the server part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = [
    "CORE_TOOL_NAMES",
    "MAX_SERVER_NAME_LENGTH",
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


def namespaced_name(server: str, tool: str) -> str:
    """The plain namespaced name ``server__tool`` (valid or not; see :class:`NameTable`)."""
    return f"{server}{_SEPARATOR}{tool}"


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


def _alias(server: str, tool: str, hash_len: int) -> str:
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()
    suffix = "_" + digest[:hash_len]
    head = _INVALID_RUN.sub("_", server).strip("_")[:MAX_SERVER_NAME_LENGTH] or "server"
    head += _SEPARATOR
    body = _INVALID_RUN.sub("_", tool).strip("_") or "tool"
    room = max(_MAX_NAME - len(head) - len(suffix), 1)
    return head + body[:room] + suffix


class NameTable:
    """A two-way map between exposed tool names and ``(server, original tool name)``.

    Built from a set of pairs at once; the result depends only on the set, never on the
    order of the input. Rebuild it when a backend's tool list changes (5,000 tools take
    a few milliseconds).

    Args:
        tools: ``(server, tool)`` pairs; duplicates are ignored.

    Example:
        >>> table = NameTable([("github", "create_issue"), ("fs", "files/read")])
        >>> table.name_for("github", "create_issue")
        'github__create_issue'
        >>> table.lookup(table.name_for("fs", "files/read"))
        ('fs', 'files/read')
    """

    __slots__ = ("_by_name", "_by_pair")

    def __init__(self, tools: Iterable[tuple[str, str]] = ()) -> None:
        pairs = sorted(set(tools))
        by_name: dict[str, tuple[str, str]] = {}
        needs_alias: list[tuple[str, str]] = []
        for pair in pairs:
            plain = namespaced_name(*pair)
            if is_valid_tool_name(plain) and plain not in by_name:
                by_name[plain] = pair
            else:
                needs_alias.append(pair)
        for pair in needs_alias:
            hash_len = _HASH_LEN
            alias = _alias(*pair, hash_len)
            while alias in by_name:
                hash_len += 4
                alias = _alias(*pair, hash_len)
            by_name[alias] = pair
        # Iteration follows the sorted pairs, not the order names were claimed in.
        self._by_pair: dict[tuple[str, str], str] = {
            pair: name for name, pair in sorted(by_name.items(), key=lambda item: item[1])
        }
        self._by_name = by_name

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
