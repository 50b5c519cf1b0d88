"""The typed configuration: what :func:`~funnel_proxy.load_config` returns.

Units: ``timeout`` is in **seconds** here (the file says milliseconds, as the original
does, and the loader divides by 1000); the reconnect settings keep the file's
millisecond fields and convert in :meth:`ReconnectPolicy.backoff` and
:meth:`AutoReconnect.backoff`, which return seconds.

The models can be built directly (tests, embedded configs); only the loader validates.
"""

from __future__ import annotations

from typing import Annotated, TypeAlias

import msgspec
from msgspec import Meta

from funnel_auth import AuthConfig
from funnel_proxy._secrets import SecretProvider
from funnel_proxy._struct import ConfigStruct, masked
from funnel_transports import Backoff

__all__ = [
    "AutoReconnect",
    "FunnelConfig",
    "RateLimit",
    "RateLimits",
    "ReconnectPolicy",
    "ServerConfig",
    "SseTransportConfig",
    "StdioTransportConfig",
    "StreamableHttpTransportConfig",
    "TransportConfig",
    "WebSocketTransportConfig",
]

_Ms = Annotated[float, Meta(ge=0)]
_Count = Annotated[int, Meta(ge=0)]


class ReconnectPolicy(ConfigStruct, frozen=True):
    """How a transport retries its own connection (SSE, WebSocket, streamable HTTP).

    Attributes:
        max_attempts: Retries before giving up.
        initial_delay_ms: Delay before the first retry, in milliseconds.
        max_delay_ms: Ceiling of the delay, in milliseconds.
        backoff_multiplier: Growth of the delay per retry (> 1).
        jitter: Relative random spread of each delay, 0–1.
    """

    max_attempts: _Count
    initial_delay_ms: _Ms
    max_delay_ms: _Ms
    backoff_multiplier: Annotated[float, Meta(gt=1)]
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.25

    def backoff(self) -> Backoff:
        """This policy as a :class:`funnel_transports.Backoff` (seconds)."""
        return Backoff(
            initial=self.initial_delay_ms / 1000,
            multiplier=self.backoff_multiplier,
            max_delay=self.max_delay_ms / 1000,
            jitter=self.jitter,
            max_attempts=self.max_attempts,
        )


class AutoReconnect(ConfigStruct, frozen=True):
    """How funnel reconnects a backend that dropped or failed to start.

    Attributes:
        enabled: Reconnect automatically at all.
        max_attempts: Retries before the backend is marked failed.
        initial_delay_ms: Delay before the first retry, in milliseconds.
        backoff_multiplier: Growth of the delay per retry (> 1).
        max_delay_ms: Ceiling of the delay, in milliseconds (>= ``initial_delay_ms``).
        jitter: Relative random spread of each delay, 0–1.
    """

    enabled: bool = True
    max_attempts: _Count = 10
    initial_delay_ms: _Ms = 1000
    backoff_multiplier: Annotated[float, Meta(gt=1)] = 2
    max_delay_ms: _Ms = 60000
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.25

    def backoff(self) -> Backoff:
        """This policy as a :class:`funnel_transports.Backoff` (seconds)."""
        return Backoff(
            initial=self.initial_delay_ms / 1000,
            multiplier=self.backoff_multiplier,
            max_delay=self.max_delay_ms / 1000,
            jitter=self.jitter,
            max_attempts=self.max_attempts,
        )


class StdioTransportConfig(ConfigStruct, frozen=True, tag="stdio", tag_field="type"):
    """A local process speaking MCP on stdin/stdout.

    Attributes:
        command: The program (looked up on the child's ``PATH``).
        args: Its arguments.
        env: Extra environment, values still holding ``${VAR}`` references: they are
            resolved when the process starts (see :func:`build_server_env`).
        cwd: Working directory (absolute after loading); ``None`` = funnel's own.
    """

    command: Annotated[str, Meta(min_length=1)]
    args: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None

    def __repr__(self) -> str:
        return (
            f"StdioTransportConfig(command={self.command!r}, args={self.args!r}, "
            f"env={masked(self.env)!r}, cwd={self.cwd!r})"
        )


class _HttpTransportConfig(ConfigStruct, frozen=True):
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: Annotated[float, Meta(gt=0)] = 30.0

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={masked(value) if name == 'headers' else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"{type(self).__name__}({fields})"


class StreamableHttpTransportConfig(
    _HttpTransportConfig, frozen=True, tag="streamable-http", tag_field="type"
):
    """An MCP server over streamable HTTP.

    Attributes:
        url: The MCP endpoint (http or https).
        headers: Extra request headers (``repr`` masks the values).
        timeout: Per-request timeout in seconds.
        reconnect: Retry policy for the transport's own GET stream; ``None`` = none.
    """

    reconnect: ReconnectPolicy | None = None


class SseTransportConfig(_HttpTransportConfig, frozen=True, tag="sse", tag_field="type"):
    """An MCP server over the legacy HTTP+SSE transport (2024-11-05).

    Attributes:
        url: The SSE endpoint (http or https).
        headers: Extra request headers (``repr`` masks the values).
        timeout: Per-request timeout in seconds.

    A dropped event stream is a dropped backend: funnel reconnects it as
    :attr:`FunnelConfig.auto_reconnect` says (the file's ``reconnect`` is refused here).
    """


class WebSocketTransportConfig(
    _HttpTransportConfig, frozen=True, tag="websocket", tag_field="type"
):
    """An MCP server over WebSocket (subprotocol ``mcp``; not in the MCP spec).

    Attributes:
        url: ``ws://`` or ``wss://`` (the loader rewrites http → ws, https → wss).
        headers: Extra handshake headers (``repr`` masks the values).
        timeout: Handshake and per-request timeout in seconds.

    A dropped socket is a dropped backend: funnel reconnects it as
    :attr:`FunnelConfig.auto_reconnect` says (the file's ``reconnect`` is refused here).
    """


TransportConfig: TypeAlias = (
    StdioTransportConfig
    | StreamableHttpTransportConfig
    | SseTransportConfig
    | WebSocketTransportConfig
)
"""Any transport, tagged by its ``type``."""


class ServerConfig(ConfigStruct, frozen=True):
    """One backend MCP server.

    Attributes:
        name: The name (unique; status, logs and ``login`` use it).
        transport: How to reach it.
        auth: Credentials for HTTP transports; ``None`` when not configured.
        secret_providers: Where this server's secret env comes from (after the
            top-level defaults).
        disabled: Configured but not started.
        prefix: The namespace of its tools and prompts (``prefix__tool``); ``None`` =
            the name; ``""`` = the backend's own names (see :attr:`namespace`).
    """

    name: str
    transport: TransportConfig
    auth: AuthConfig | None = None
    secret_providers: tuple[SecretProvider, ...] = ()
    disabled: bool = False
    prefix: str | None = None

    @property
    def namespace(self) -> str:
        """The prefix in effect: :attr:`prefix`, or the name when it is not set."""
        return self.name if self.prefix is None else self.prefix

    @property
    def env(self) -> dict[str, str]:
        """The stdio ``env`` templates (empty for other transports)."""
        return self.transport.env if isinstance(self.transport, StdioTransportConfig) else {}


class RateLimit(ConfigStruct, frozen=True):
    """At most ``calls`` calls per ``per_seconds`` seconds.

    Attributes:
        calls: Calls allowed in the window.
        per_seconds: The window in seconds.
    """

    calls: Annotated[int, Meta(ge=1)]
    per_seconds: Annotated[float, Meta(gt=0)]


class RateLimits(ConfigStruct, frozen=True):
    """Call limits by tool pattern.

    Attributes:
        tools: Tool pattern (``*`` wildcards, matched against ``server__tool``) → limit.
            Every pattern that matches a call counts it; each is its own bucket.
    """

    tools: dict[str, RateLimit] = msgspec.field(default_factory=dict)


class FunnelConfig(ConfigStruct, frozen=True):
    """The whole configuration.

    The tool filter lists are ``None`` when absent, which differs from ``()``: an absent
    ``exposeTools`` exposes every tool, an empty one none (see :class:`VisibilityPolicy`).

    Attributes:
        servers: The backends, project file's first, then those only in the user file.
        hide_tools: Patterns of tools never registered (unless always visible).
        expose_tools: Allowlist of tools exposed at start; ``None`` = all.
        always_visible_tools: Patterns of tools always exposed, even if hidden.
        expose_core_tools: Patterns of core tools to offer; ``None`` = all.
        toolsets: Name → patterns, for ``load_toolset``.
        auto_reconnect: Backend reconnection policy.
        default_passthrough_env: Variables stdio children inherit; ``None`` = the
            built-in list (see :data:`DEFAULT_PASSTHROUGH_ENV`).
        default_secret_providers: Secret providers for every server.
        rate_limits: Per-tool call limits.
    """

    servers: tuple[ServerConfig, ...] = ()
    hide_tools: tuple[str, ...] | None = None
    expose_tools: tuple[str, ...] | None = None
    always_visible_tools: tuple[str, ...] | None = None
    expose_core_tools: tuple[str, ...] | None = None
    toolsets: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    auto_reconnect: AutoReconnect = AutoReconnect()
    default_passthrough_env: tuple[str, ...] | None = None
    default_secret_providers: tuple[SecretProvider, ...] = ()
    rate_limits: RateLimits = RateLimits()

    @property
    def prefixes(self) -> dict[str, str]:
        """Server name → the prefix of its tools and prompts, in configuration order."""
        return {server.name: server.namespace for server in self.servers}

    def server(self, name: str) -> ServerConfig | None:
        """The server called ``name``, or ``None``."""
        return next((server for server in self.servers if server.name == name), None)
