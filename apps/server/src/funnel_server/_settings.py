"""The web app's settings, importable without the web framework (the CLI builds them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["AppSettings", "Readiness", "check_public_url"]


def check_public_url(url: str) -> str:
    """A ``--public-url`` value, checked and without a trailing slash.

    Raises:
        ValueError: Not an ``http(s)://host[:port][/path]`` URL (no query, no fragment).
    """
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--public-url {url!r}: use the externally visible base URL, https://HOST")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"--public-url {url!r}: no query, fragment or credentials, please")
    return url


class Readiness:
    """Whether this process should get traffic (``GET /api/health/ready``).

    Attributes:
        draining: Set when a SIGTERM starts the drain: the balancer stops sending.
    """

    def __init__(self) -> None:
        self.draining = False


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
        public_url: The externally visible base URL (a load balancer's), if not this
            server's own: OAuth redirect URI, dashboard link, Host/Origin checks.
        drain_timeout: Seconds in-flight requests get to finish after SIGTERM.
        elicitation_timeout: Seconds a person at ``/ws`` has to answer an elicitation.
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
    public_url: str | None = None
    drain_timeout: float = 10.0

    elicitation_timeout: float = 300.0

    def public_hosts(self) -> tuple[str, ...]:
        """``allowed_hosts`` and the public URL's host (``Host`` checks)."""
        if self.public_url is None:
            return self.allowed_hosts
        host = urlsplit(self.public_url).hostname or ""
        return (*self.allowed_hosts, host)

    def public_origins(self) -> tuple[str, ...]:
        """``allowed_origins`` and the public URL's origin (``Origin`` checks)."""
        if self.public_url is None:
            return self.allowed_origins
        parts = urlsplit(self.public_url)
        return (*self.allowed_origins, f"{parts.scheme}://{parts.netloc}")
