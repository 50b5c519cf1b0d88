"""Every tool call, whichever way it came in: per-tool rate limits and the audit event.

Theory of operation: stdio, ``/mcp``, ``/ws`` and REST all end in
:meth:`Funnel.call_tool`. :class:`ServerFunnel` is the funnel this app runs; it overrides
that one method, so a limit or an audit line cannot be forgotten on any path. Which path
a call came from travels in a context variable (:data:`call_origin`) set by each front
door, so the audit event can say ``client=ws``.

Limits come from the config's ``rateLimits.tools`` and are funnel-proxy's
(:class:`~funnel_proxy.ToolCallLimits`, applied by :meth:`Funnel.admit`); this app audits
each refusal. With shared state (``--shared-state``) the buckets live in Valkey/Redis
and count every replica's calls once (:meth:`SharedState.acquire
<funnel_server._shared.SharedState.acquire>`, a sliding log in one Lua script); without
it they are this process's :class:`~funnel_auth.RateLimiter`.

With shared state, a login completed on this replica is announced on the ``tokens``
channel, and :meth:`ServerFunnel.follow_logins` makes every other replica's waiting
backend read the new tokens and connect.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec
from msgspec import Raw

from funnel_auth import AuthorizationCodeAuth
from funnel_proxy import (
    RATE_LIMITED,
    Funnel,
    FunnelConfig,
    ToolCallLimits,
    ToolEntry,
    ToolRateLimited,
)
from funnel_server._audit import ToolCallLines, audit
from funnel_server._shared import SharedStateUnavailable
from funnel_transports import RpcError

if TYPE_CHECKING:
    from funnel_server._shared import SharedState

__all__ = [
    "RATE_LIMITED",
    "ServerFunnel",
    "ToolCallLimits",
    "ToolRateLimited",
    "authorize_route",
    "call_origin",
]

logger = logging.getLogger("funnel_server")

TOKENS_CHANNEL: Final = "tokens"
"""The shared-state channel a replica announces a completed login on."""


class _TokensChanged(msgspec.Struct, frozen=True):
    server: str
    origin: str


call_origin: contextvars.ContextVar[str] = contextvars.ContextVar(
    "funnel_call_origin", default="stdio"
)
"""Which front door a tool call came through: ``stdio``, ``mcp``, ``ws`` or ``rest``."""


def authorize_route(server: str) -> str:
    """This app's route that starts (or joins) the login of ``server``."""
    return f"/api/oauth/authorize/{quote(server, safe='')}"


# Tools (times front doors) whose audit lines are kept; a reload that renames many starts
# the cache afresh.
_AUDIT_LINES: Final = 10_000


def _call_fields(entry: ToolEntry) -> dict[str, str | float | None]:
    """The audit fields naming a call: its server, its exposed tool and its front door."""
    return {"server": entry.server, "tool": entry.name, "client": call_origin.get()}


class ServerFunnel(Funnel):
    """The :class:`Funnel` this app runs: rate-limited, audited tool calls.

    Args:
        config: The configuration (its ``rateLimits`` apply).
        clock: A monotonic clock for the limits (injectable for tests).
        shared: The replicas' shared state: limits are counted there, logins announced.
        **options: Passed on to :class:`Funnel`.
    """

    def __init__(
        self,
        config: FunnelConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("authorize_link", authorize_route)
        super().__init__(config, clock=clock, **options)
        self.shared = shared
        self._replica = f"{os.getpid()}-{id(self):x}"
        self._audit_lines: dict[tuple[str, str], ToolCallLines] = {}

    def admit(self, entry: ToolEntry) -> ToolCallLines:
        """Refuse a call that a configured limit does not allow (audited either way).

        Returns the call's audit lines (see :meth:`record`), kept per tool and front door.

        Raises:
            ToolRateLimited: A configured limit refused the call.
        """
        key = (entry.name, call_origin.get())
        lines = self._audit_lines.get(key)
        if lines is None or lines.fields["server"] != entry.server:
            if len(self._audit_lines) >= _AUDIT_LINES:
                self._audit_lines.clear()
            lines = self._audit_lines[key] = ToolCallLines(_call_fields(entry))
        fields = lines.fields
        if self.shared is None:  # with shared state call_tool counted them in Redis already
            try:
                super().admit(entry)
            except ToolRateLimited as refused:
                audit(
                    "tool.call",
                    outcome="limited",
                    retry_after=round(refused.retry_after, 3),
                    **fields,
                )
                raise
        return lines

    async def call_tool(
        self,
        entry: ToolEntry,
        arguments: Raw | Mapping[str, Any] | None,
        **options: Any,
    ) -> Raw:
        """:meth:`Funnel.call_tool`, counted against the limits shared by all replicas first.

        Raises:
            ToolRateLimited: A configured limit refused the call (counted across replicas).
        """
        if self.shared is not None and self.limits:
            buckets = [
                (f"tool:{pattern}", calls, seconds)
                for pattern, calls, seconds in self.limits.buckets(entry.name)
            ]
            try:
                wait = await self.shared.acquire(buckets)
            except SharedStateUnavailable as exc:
                # Fail closed: a limit nobody can count is not a limit.
                audit(
                    "tool.call",
                    outcome="failure",
                    reason="shared state unreachable",
                    **_call_fields(entry),
                )
                raise RpcError(
                    -32603, f"{entry.name} is rate limited and the shared state is unreachable"
                ) from exc
            if wait > 0:
                audit(
                    "tool.call",
                    outcome="limited",
                    retry_after=round(wait, 3),
                    **_call_fields(entry),
                )
                raise ToolRateLimited(entry.name, wait)
        return await super().call_tool(entry, arguments, **options)

    async def complete_authorization(
        self,
        *,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        """:meth:`Funnel.complete_authorization`, then tell the other replicas (shared state)."""
        server = await super().complete_authorization(
            state=state, code=code, iss=iss, error=error, error_description=error_description
        )
        if self.shared is not None:
            message = _TokensChanged(server=server, origin=self._replica)
            await self.shared.publish(TOKENS_CHANNEL, msgspec.json.encode(message))
        return server

    async def follow_logins(self) -> None:
        """Until cancelled: when another replica completes a login, connect its backend here.

        Each such backend drops its copy of the pending flow, reads the tokens from the
        shared store and reconnects. Without shared state it returns at once.
        """
        if self.shared is None:
            return
        decoder = msgspec.json.Decoder(_TokensChanged)
        async with self.shared.subscribe(TOKENS_CHANNEL) as messages:
            async for payload in messages:
                try:
                    message = decoder.decode(payload)
                except msgspec.DecodeError:
                    logger.warning("ignored a malformed message on the tokens channel")
                    continue
                if message.origin != self._replica:
                    self.authorized_elsewhere(message.server)

    def authorized_elsewhere(self, server: str) -> None:
        """Another replica authorized ``server``: use its tokens here (reconnect the backend)."""
        backend = self._backends.get(server)
        if backend is None:
            return
        auth = backend.auth
        if isinstance(auth, AuthorizationCodeAuth):
            auth.authorized_elsewhere()
        if backend.state.status != "connected":
            logger.info("[%s] authorized on another replica; connecting", server)
            backend.reconnect()

    def record(
        self, context: Any, entry: ToolEntry, outcome: str, duration_ms: float, reason: str | None
    ) -> None:
        """Write the call's ``tool.call`` audit event."""
        context.record(outcome, duration_ms, reason)
