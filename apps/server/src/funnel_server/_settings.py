"""The web app's settings, importable without the web framework (the CLI builds them)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AppSettings"]


@dataclass(frozen=True, slots=True)
class AppSettings:
    """How the app is secured and bounded.

    Attributes:
        api_token: The inbound bearer token.
        version: funnel-server's version (health, server info).
        bind_host: The address the server listens on (Host checks).
        allowed_hosts: Further ``Host`` names accepted.
        allowed_origins: Further ``Origin`` values accepted.
        failed_auth_attempts: Failed authentications allowed per client address…
        failed_auth_window: …within this many seconds; then 429 until the window passes.
        max_ws_executions: Tool executions one ``/ws`` connection may run at once.
        mcp_max_sessions: Handshake-era ``/mcp`` sessions kept at most.
        mcp_session_idle_timeout: Seconds an unused ``/mcp`` session is kept.
        instructions: Instructions for models, sent by ``/mcp`` on initialize/discover.
        log_capacity: Log entries the dashboard's log view keeps in memory.
    """

    api_token: str
    version: str = "0"
    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    failed_auth_attempts: int = 10
    failed_auth_window: float = 60.0
    max_ws_executions: int = 8
    mcp_max_sessions: int = 256
    mcp_session_idle_timeout: float = 3600.0
    instructions: str | None = field(default=None)
    log_capacity: int = 2000
