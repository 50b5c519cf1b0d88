"""The audit log as it was before the writer thread (commit 777631b), for side-by-side runs.

A copy of that commit's ``funnel_server._audit`` hot path, kept only so that
``tools/bench/audit.py`` can measure before and after in one run: every event formatted
and redacted on the caller's thread through ``logging``, by a ``RotatingFileHandler``
with a JSON formatter and a stderr ``StreamHandler`` at INFO.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from funnel_auth import redact

_logger = logging.getLogger("funnel.audit.before")
_FAILURES: Final = frozenset({"failure", "denied", "limited"})
_STANDARD: Final = frozenset(
    set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None))) | {"message", "asctime"}
)
_COOKIE = re.compile(r"(?i)(funnel_session=)[^;\s]+")


def scrub(text: str) -> str:
    """``redact`` plus the dashboard cookie."""
    return _COOKIE.sub(r"\1[REDACTED]", redact(text))


def audit(event: str, *, outcome: str, **fields: str | float | None) -> None:
    """The old ``audit``: redact every string, build the message, log it."""
    extra: dict[str, object] = {"event": event, "outcome": outcome}
    for name, value in fields.items():
        if value is not None:
            extra[name] = redact(value) if isinstance(value, str) else value
    level = logging.WARNING if outcome in _FAILURES else logging.INFO
    details = " ".join(f"{key}={value}" for key, value in extra.items() if key != "event")
    _logger.log(level, "%s %s", event, details, extra=extra)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
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


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(home: Path, stream: TextIO) -> list[logging.Handler]:
    """The old ``configure_audit_log``."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / "audit.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8"
    )
    file_handler.setFormatter(_JsonLines())
    file_handler.setLevel(logging.INFO)
    stderr_handler = logging.StreamHandler(stream)
    stderr_handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    stderr_handler.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [file_handler, stderr_handler]
    for handler in handlers:
        _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
    return handlers


def remove(handlers: list[logging.Handler]) -> None:
    """The old ``remove_audit_handlers``."""
    for handler in handlers:
        _logger.removeHandler(handler)
        handler.close()
