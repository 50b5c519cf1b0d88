"""Audit events: who authorized what, when tokens changed, what was refused.

Events go to the logger ``funnel.audit`` with structured fields in ``extra`` (``event``,
``server``, ``issuer``, ``outcome``, and per event ``reason``, ``grant_type``,
``retry_after``, ``scope``). A handler can turn them into JSON lines. They never carry a
token, code, verifier, state value, secret or ``Authorization`` header: every string
field passes through :func:`~funnel_auth.redact` (its fast path, ``redact_fast``).

An embedder that wants to count events (metrics) adds a listener with
:func:`add_audit_listener` instead of parsing log records: it is called with the event
name and the same redacted fields, whatever the logger's level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from funnel_auth._redact import redact_fast

__all__ = ["AUDIT_EVENTS", "AUDIT_LOGGER", "AuditListener", "add_audit_listener", "audit"]

AUDIT_LOGGER: Final = "funnel.audit"

AUDIT_EVENTS: Final = frozenset(
    {
        "auth.flow_started",
        "auth.flow_completed",
        "auth.flow_failed",
        "auth.token_acquired",
        "auth.token_refreshed",
        "auth.refresh_failed",
        "auth.token_cleared",
        "auth.client_registered",
        "auth.rate_limited",
    }
)

_logger = logging.getLogger(AUDIT_LOGGER)
_FAILURES: Final = frozenset({"failure", "denied", "limited"})

AuditListener: TypeAlias = Callable[[str, Mapping[str, object]], None]
"""Called with an audit event's name and its fields (already redacted)."""
_listeners: list[AuditListener] = []


def add_audit_listener(listener: AuditListener) -> Callable[[], None]:
    """Call ``listener`` for every audit event from now on; returns a function removing it.

    A listener runs in the code that wrote the event: it must be quick and must not
    raise (an exception is logged and swallowed, it never breaks an authorization).
    """
    _listeners.append(listener)

    def remove() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return remove


def audit(
    event: str,
    *,
    server: str,
    outcome: str,
    issuer: str | None = None,
    **fields: str | float | None,
) -> None:
    """Write one audit event on ``funnel.audit`` (WARNING for failures, else INFO).

    Args:
        event: One of :data:`AUDIT_EVENTS`.
        server: The configured server name.
        outcome: ``"success"``, ``"failure"``, ``"denied"`` or ``"limited"``.
        issuer: The authorization server's issuer, when known.
        **fields: Further structured fields (``reason``, ``grant_type``, …).
    """
    extra: dict[str, object] = {
        "event": event,
        "server": server,
        "outcome": outcome,
        "issuer": issuer,
    }
    for name, value in fields.items():
        extra[name] = redact_fast(value) if isinstance(value, str) else value
    level = logging.WARNING if outcome in _FAILURES else logging.INFO
    reason = extra.get("reason")
    _logger.log(
        level,
        "%s server=%s issuer=%s outcome=%s%s",
        event,
        server,
        issuer or "-",
        outcome,
        f" reason={reason}" if reason else "",
        extra=extra,
    )
    for listener in _listeners:
        try:
            listener(event, extra)
        except Exception:  # a listener's bug must never break an authorization
            _logger.debug("an audit listener failed on %s", event, exc_info=True)
