"""What a new configuration changes for a running funnel: a pure diff of two configs.

Theory of operation: :func:`diff_configs` compares the old and the new
:class:`~funnel_proxy.FunnelConfig` and sorts every server into one of four groups:

- ``added``: only in the new config: start it;
- ``removed``: only in the old config: stop it;
- ``restarted``: in both, but what its connection is made of differs: stop it, start it
  again with the new settings;
- ``unchanged``: in both, identically: leave its connection (and its process) alone.

What a connection is made of: the server's own entry (transport, ``env``, ``auth``,
``secretProviders``, ``disabled``), plus the top-level keys a backend reads when it
starts or reconnects: ``autoReconnect`` for every server, and ``defaultPassthroughEnv``
and ``defaultSecretProviders`` for stdio servers (they build the child's environment).
The tool filters (``hideTools``, ``exposeTools``, ``alwaysVisibleTools``,
``exposeCoreTools``, ``toolsets``) restart nothing: they only change which of the
already-listed tools are shown, so :attr:`ReloadReport.filters_changed` tells the funnel
to swap its visibility policy and rebuild its surface.

Nothing here does I/O: :meth:`Funnel.apply_config <funnel_proxy.Funnel.apply_config>`
carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnel_proxy._models import FunnelConfig, ServerConfig, StdioTransportConfig

__all__ = ["ReloadReport", "diff_configs"]


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a new configuration changes (every tuple in the new config's order).

    Attributes:
        added: Servers only in the new config (started).
        removed: Servers only in the old config (stopped), in the old config's order.
        restarted: Servers whose connection settings changed (stopped, then started).
        unchanged: Servers left running as they are.
        filters_changed: The tool filters differ (the surface is rebuilt, nothing restarts).
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    filters_changed: bool = False

    @property
    def changed(self) -> bool:
        """Whether applying the new config does anything at all."""
        return bool(self.added or self.removed or self.restarted or self.filters_changed)

    def summary(self) -> str:
        """One line for a log: ``added a; restarted b; removed c; filters changed``."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("restarted", self.restarted),
                ("removed", self.removed),
            )
            if names
        ]
        if self.filters_changed:
            parts.append("tool filters changed")
        return "; ".join(parts) or "nothing changed"


def _connection(server: ServerConfig, config: FunnelConfig) -> tuple[object, ...]:
    """Everything a backend's connection is made of (see the module documentation)."""
    if isinstance(server.transport, StdioTransportConfig):
        return (
            server,
            config.auto_reconnect,
            config.default_passthrough_env,
            config.default_secret_providers,
        )
    return (server, config.auto_reconnect)


def _filters(config: FunnelConfig) -> tuple[object, ...]:
    return (
        config.hide_tools,
        config.expose_tools,
        config.always_visible_tools,
        config.expose_core_tools,
        config.toolsets,
    )


def diff_configs(old: FunnelConfig, new: FunnelConfig) -> ReloadReport:
    """Compare two configurations; see the module documentation for the rules.

    Args:
        old: The configuration running now.
        new: The configuration to apply.

    Returns:
        Which servers to start, stop, restart or leave alone, and whether filters changed.
    """
    before = {server.name: server for server in old.servers}
    after = {server.name: server for server in new.servers}
    added: list[str] = []
    restarted: list[str] = []
    unchanged: list[str] = []
    for name, server in after.items():
        previous = before.get(name)
        if previous is None:
            added.append(name)
        elif _connection(previous, old) != _connection(server, new):
            restarted.append(name)
        else:
            unchanged.append(name)
    return ReloadReport(
        added=tuple(added),
        removed=tuple(name for name in before if name not in after),
        restarted=tuple(restarted),
        unchanged=tuple(unchanged),
        filters_changed=_filters(old) != _filters(new),
    )
