"""Which tools exist and which are shown: the original's filter precedence, as data.

Two questions, asked of a tool's wanted name (``prefix__tool``, where the prefix is the
server's name unless the config sets ``prefix``; the backend's own name under
``"prefix": ""``). When the tool is exposed under another name (an alias, or
``server__tool`` after a collision, see :mod:`funnel_proxy._names`), patterns match that
name too:

**Is it registered at all?** ``hideTools`` is a firewall: a matching tool is not
registered, unless it also matches ``alwaysVisibleTools``. An unregistered tool cannot be
listed, searched, described, bridged or enabled (reason ``hidden``).

**Is a registered tool exposed in ``tools/list``?** First match wins:

1. ``always``: it matches ``alwaysVisibleTools``;
2. ``enabled``: it was enabled at run time (``load_toolset``, discovery);
3. ``allowlist``: ``exposeTools`` is present, and the tool is exposed iff it matches
   (so ``"exposeTools": []`` exposes nothing);
4. ``default``: exposed.

Core tools (``discover_tools_by_words`` …, bare names) are governed only by
``exposeCoreTools``: absent = all, ``[]`` = none, else those matching (reason ``core``).

**Core tools mode** is ``exposeTools`` present and empty: no server tool is exposed at
start (except always-visible ones), and clients reach the rest through the core tools.
:attr:`VisibilityPolicy.core_tools_mode` says so; what the runtime does differently in
that mode (e.g. not auto-enabling bridged tools, so the list never changes) is its call.
"""

from __future__ import annotations

import enum
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

from funnel_proxy._models import FunnelConfig
from funnel_proxy._names import CORE_TOOL_NAMES
from funnel_proxy._patterns import PatternSet

__all__ = ["Reason", "Visibility", "VisibilityPolicy"]


class Reason(enum.StrEnum):
    """Why a tool is (or is not) exposed."""

    CORE = "core"
    """A core tool enabled by ``exposeCoreTools``."""
    ALWAYS = "always"
    """Matches ``alwaysVisibleTools``."""
    ENABLED = "enabled"
    """Enabled at run time."""
    ALLOWLIST = "allowlist"
    """``exposeTools`` decided (exposed iff it matches)."""
    DEFAULT = "default"
    """No filter applies: exposed."""
    HIDDEN = "hidden"
    """Not registered: ``hideTools`` (or a core tool ``exposeCoreTools`` leaves out)."""


@dataclass(frozen=True, slots=True)
class Visibility:
    """The verdict for one tool.

    Attributes:
        registered: The tool exists for funnel (listable, searchable, bridgeable).
        exposed: The tool is in ``tools/list``.
        reason: Why.
    """

    registered: bool
    exposed: bool
    reason: Reason


_HIDDEN: Final = Visibility(registered=False, exposed=False, reason=Reason.HIDDEN)
_CORE: Final = Visibility(registered=True, exposed=True, reason=Reason.CORE)


class VisibilityPolicy:
    """The filters of a :class:`FunnelConfig`, compiled once.

    Args:
        config: The configuration whose filters apply.
    """

    __slots__ = ("_allow", "_always", "_core", "_hide", "_toolsets")

    def __init__(self, config: FunnelConfig) -> None:
        self._hide = PatternSet(config.hide_tools or ())
        self._always = PatternSet(config.always_visible_tools or ())
        self._allow = None if config.expose_tools is None else PatternSet(config.expose_tools)
        core = PatternSet(config.expose_core_tools or ())
        self._core = tuple(
            name
            for name in CORE_TOOL_NAMES
            if config.expose_core_tools is None or core.matches(name)
        )
        self._toolsets = {name: PatternSet(p) for name, p in config.toolsets.items()}

    @property
    def core_tools(self) -> tuple[str, ...]:
        """The core tools to offer, sorted."""
        return self._core

    @property
    def core_tools_mode(self) -> bool:
        """``exposeTools`` is present and empty (see the module docs)."""
        return self._allow is not None and not self._allow

    def core_tool_enabled(self, name: str) -> bool:
        """Whether the core tool ``name`` is offered."""
        return name in self._core

    def _matches(self, patterns: PatternSet, name: str, alias: str | None) -> bool:
        return patterns.matches(name) or (alias is not None and patterns.matches(alias))

    def registered(self, name: str, *, alias: str | None = None) -> bool:
        """Whether a server tool passes the ``hideTools`` firewall."""
        return not self._matches(self._hide, name, alias) or self._matches(
            self._always, name, alias
        )

    def decide(
        self,
        name: str,
        *,
        enabled: Container[str] = frozenset(),
        alias: str | None = None,
    ) -> Visibility:
        """The verdict for the tool ``name`` (its wanted name, or a core tool's name).

        Args:
            name: The wanted name (``prefix__tool``, or the plain name under prefix ``""``).
            enabled: Names enabled at run time (by either name).
            alias: The exposed name when it differs from ``name``; patterns match both.
        """
        if name in CORE_TOOL_NAMES:
            return _CORE if name in self._core else _HIDDEN
        if not self.registered(name, alias=alias):
            return _HIDDEN
        if self._matches(self._always, name, alias):
            return Visibility(registered=True, exposed=True, reason=Reason.ALWAYS)
        if name in enabled or (alias is not None and alias in enabled):
            return Visibility(registered=True, exposed=True, reason=Reason.ENABLED)
        if self._allow is not None:
            exposed = self._matches(self._allow, name, alias)
            return Visibility(registered=True, exposed=exposed, reason=Reason.ALLOWLIST)
        return Visibility(registered=True, exposed=True, reason=Reason.DEFAULT)

    @property
    def toolset_names(self) -> tuple[str, ...]:
        """The configured toolsets, sorted."""
        return tuple(sorted(self._toolsets))

    def toolset(self, name: str) -> PatternSet | None:
        """The patterns of toolset ``name``, or ``None`` if there is no such toolset."""
        return self._toolsets.get(name)
