"""The audit log: ``funnel.audit`` events as JSON lines in the funnel home, and on stderr.

Libraries (funnel-auth) and this app write audit events to the logger ``funnel.audit``
with structured fields in ``extra``. :func:`configure_audit_log` gives that logger its
own two handlers, independent of ``--log-level``: a size-rotated file of JSON lines
(``audit.log`` in the funnel home, 0600) and stderr at INFO. Every string that reaches
either passes through :func:`funnel_auth.redact`, a backstop behind the rule that no
event carries a token, code, secret or ``Authorization`` header in the first place.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from funnel_auth import AUDIT_LOGGER, redact

__all__ = [
    "AUDIT_FILE_NAME",
    "JsonLinesFormatter",
    "RedactingFormatter",
    "audit",
    "configure_audit_log",
    "remove_audit_handlers",
    "scrub",
]

AUDIT_FILE_NAME: Final = "audit.log"

_logger = logging.getLogger(AUDIT_LOGGER)
_FAILURES: Final = frozenset({"failure", "denied", "limited"})
# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD: Final = frozenset(
    set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None))) | {"message", "asctime"}
)


def audit(event: str, *, outcome: str, **fields: str | float | None) -> None:
    """Write one audit event of this app (WARNING for failures, else INFO).

    Args:
        event: The event name, e.g. ``inbound.auth_failed`` or ``tool.call``.
        outcome: ``success``, ``error`` (the tool reported an error), ``failure``,
            ``denied``, ``limited`` or ``cancelled``.
        **fields: Structured fields (``server``, ``tool``, ``duration_ms``, ``client``, …);
            ``None`` values are left out.
    """
    extra: dict[str, object] = {"event": event, "outcome": outcome}
    for name, value in fields.items():
        if value is not None:
            extra[name] = redact(value) if isinstance(value, str) else value
    level = logging.WARNING if outcome in _FAILURES else logging.INFO
    details = " ".join(f"{key}={value}" for key, value in extra.items() if key != "event")
    _logger.log(level, "%s %s", event, details, extra=extra)


class JsonLinesFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line (without the newline)."""
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or key in entry:
                continue
            entry[key] = scrub(value) if isinstance(value, str) else value
        return msgspec.json.encode(entry, enc_hook=str).decode()


_COOKIE = re.compile(r"(?i)(funnel_session=)[^;\s]+")


def scrub(text: str) -> str:
    """:func:`funnel_auth.redact`, plus this app's dashboard cookie."""
    return _COOKIE.sub(r"\1[REDACTED]", redact(text))


class RedactingFormatter(logging.Formatter):
    """A formatter whose output passes through :func:`scrub` (header dumps at DEBUG, say)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``, then mask any credential in the text."""
        return scrub(super().format(record))


def configure_audit_log(
    home: Path,
    *,
    stream: TextIO | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 5,
) -> list[logging.Handler]:
    """Send ``funnel.audit`` to a rotating JSON-lines file in ``home`` and to stderr at INFO.

    Args:
        home: The funnel home; created 0700 when missing.
        stream: Where the human-readable copy goes (default: stderr).
        max_bytes: Size at which the file rotates.
        backups: Rotated files kept (``audit.log.1`` …).

    Returns:
        The handlers installed (remove them with :func:`remove_audit_handlers`).
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / AUDIT_FILE_NAME
    # Create it private before the handler opens it for appending.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    file_handler.setFormatter(JsonLinesFormatter())
    file_handler.setLevel(logging.INFO)
    stderr_handler = logging.StreamHandler(stream or sys.stderr)
    stderr_handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    stderr_handler.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [file_handler, stderr_handler]
    for handler in handlers:
        _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    # The audit log has its own handlers: the root logger's would print every event twice.
    _logger.propagate = False
    return handlers


def remove_audit_handlers(handlers: list[logging.Handler]) -> None:
    """Undo :func:`configure_audit_log` (close and detach its handlers)."""
    for handler in handlers:
        _logger.removeHandler(handler)
        handler.close()
    if not _logger.handlers:
        _logger.propagate = True
