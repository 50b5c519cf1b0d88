"""Audit events: who authorized what, when tokens changed, what was refused.

Events go to the logger ``funnel.audit`` with structured fields in ``extra`` (``event``,
``server``, ``issuer``, ``outcome``, and per event ``reason``, ``grant_type``,
``retry_after``, ``scope``). A handler can turn them into JSON lines. They never carry a
token, code, verifier, state value, secret or ``Authorization`` header: every string
field passes through :func:`~funnel_auth.redact` (its fast path, ``redact_fast``).
"""

from __future__ import annotations

import logging
from typing import Final

from funnel_auth._redact import redact_fast

__all__ = ["AUDIT_EVENTS", "AUDIT_LOGGER", "audit"]

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
