"""The audit log: ``funnel.audit`` events as JSON lines in the funnel home.

Theory of operation. An audit event is paid for on every tool call, so it costs as
little as it can: :func:`audit` builds the event's line from a template compiled once per
*shape* (its name, outcome, field names and string values; only the time and the numbers
change from one tool call to the next), so redaction and JSON encoding run once per shape,
not per event, and hands the finished bytes to the :class:`AuditLog`'s bounded queue.
The caller's thread formats (about 1.5 µs) and never writes. One writer thread takes
whatever is queued, every ``linger`` seconds at most, and writes the batch with one
system call to a size-rotated file (``audit.log`` in the funnel home, 0600, rotated
copies 0600 too). The writer holds the GIL only to join bytes: formatting there instead
made it contend with the event loop's thread for the GIL on every system call the loop
made, which cost the proxy more than the formatting itself. Free text (a library event's
message, a reason) is redacted through :func:`funnel_auth._redact.redact_fast`, which
skips the patterns for text that cannot hold a credential.

- **Library events** (funnel-auth's OAuth events) arrive through the ``funnel.audit``
  logger; the :class:`AuditLog`'s logging handler queues them the same way.
- **stderr** gets a human-readable copy of every event when ``stream_level`` is DEBUG
  (``--log-level DEBUG``), else only of failures (WARNING: refused, denied, limited).
- **A full queue** (the disk cannot keep up with ``max_queue`` events): the new event is
  dropped and counted; the writer then writes one ``audit.dropped`` event (WARNING, on
  stderr too) saying how many were lost. :attr:`AuditLog.dropped` counts them all.
- **Shutdown**: :meth:`AuditLog.close` (or :func:`remove_audit_handlers`) writes every
  event queued before it and then stops the thread; nothing is lost on a clean stop.
  :meth:`AuditLog.flush` waits until everything queued so far is on disk.
- **Not configured** (an app embedding :func:`~funnel_server.create_app` without
  :func:`configure_audit_log`): :func:`audit` writes to the ``funnel.audit`` logger
  like any library, and that program's handlers decide.

No event carries a token, code, secret or ``Authorization`` header in the first place;
the redaction is the backstop: every string field passes through :func:`scrub` (its
fast path), and a field named like a credential (``token``, ``code``,
``client_secret``, …) is masked whole, whatever its value.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from funnel_auth import AUDIT_LOGGER, redact
from funnel_auth._redact import REDACTED, redact_fast
from funnel_transports import defer

__all__ = [
    "AUDIT_FILE_NAME",
    "AuditLog",
    "JsonLinesFormatter",
    "RedactingFormatter",
    "ToolCallLines",
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
_encoder: Final = msgspec.json.Encoder(enc_hook=str)

# The sink :func:`audit` writes to, set by :func:`configure_audit_log`.
_sink: AuditLog | None = None


def audit(event: str, *, outcome: str, **fields: str | float | None) -> None:
    """Write one audit event of this app (WARNING for failures, else INFO).

    Cheap on the caller's side: the line is built from its shape's compiled template and
    queued; the writer thread writes it.

    Args:
        event: The event name, e.g. ``inbound.auth_failed`` or ``tool.call``.
        outcome: ``success``, ``error`` (the tool reported an error), ``failure``,
            ``denied``, ``limited`` or ``cancelled``.
        **fields: Structured fields (``server``, ``tool``, ``duration_ms``, ``client``, …);
            ``None`` values are left out.
    """
    level = logging.WARNING if outcome in _FAILURES else logging.INFO
    sink = _sink
    if sink is not None:
        sink.submit(level, event, outcome, fields)
        return
    if not _logger.isEnabledFor(level):
        return
    extra = _fields(event, outcome, fields)
    _logger.log(level, "%s", _message(event, extra), extra=extra)


def _fields(event: str, outcome: str, fields: Mapping[str, object]) -> dict[str, object]:
    extra: dict[str, object] = {"event": event, "outcome": outcome}
    # _clean() inlined: this runs for every field of every tool call.
    secret_names, cache = _secret_names, _scrub_cache
    for name, value in fields.items():
        if value is None:
            continue
        secret = secret_names.get(name)
        if secret is None:
            secret = _is_secret_name(name)
        if secret:
            extra[name] = REDACTED
        elif isinstance(value, str):
            cleaned = cache.get(value)
            extra[name] = cleaned if cleaned is not None else _scrubbed(value)
        else:
            extra[name] = value
    return extra


def _clean(name: str, value: object) -> object:
    if _is_secret_name(name):
        return REDACTED
    return _scrubbed(value) if isinstance(value, str) else value


# What scrub_fast() made of short texts seen before. Audit fields repeat (server and tool
# names, outcomes, client kinds): one dict lookup instead of a regex scan each time;
# whoever formats an event uses it (dict operations are atomic); bounded (cleared when full),
# and only short texts enter.
_scrub_cache: dict[str, str] = {}
_SCRUB_CACHE_SIZE: Final = 1024
_SCRUB_CACHE_TEXT: Final = 256


def _scrubbed(text: str) -> str:
    cleaned = _scrub_cache.get(text)
    if cleaned is None:
        cleaned = scrub_fast(text)
        if len(text) <= _SCRUB_CACHE_TEXT:
            if len(_scrub_cache) >= _SCRUB_CACHE_SIZE:
                _scrub_cache.clear()
            _scrub_cache[text] = cleaned
    return cleaned


# Field names for which "name=value" is itself something scrub() masks (a field called
# "token", say): their values are masked whole. Names come from code, so the cache stays
# small; it is bounded all the same.
_secret_names: dict[str, bool] = {}


def _is_secret_name(name: str) -> bool:
    secret = _secret_names.get(name)
    if secret is None:
        if len(_secret_names) > 256:
            _secret_names.clear()
        probe = f"{name}=probe"
        secret = _secret_names[name] = scrub(probe) != probe
    return secret


def _message(event: str, extra: Mapping[str, object]) -> str:
    """``event k=v …`` from fields that are redacted already."""
    return " ".join([event] + [f"{key}={value}" for key, value in extra.items() if key != "event"])


class JsonLinesFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line (without the newline)."""
        return _json_line(
            record.created,
            record.levelname,
            record.name,
            scrub_fast(record.getMessage()),
            _record_extra(record),
        ).decode()


def _record_extra(record: logging.LogRecord) -> dict[str, object]:
    extra: dict[str, object] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_") or key in _RESERVED:
            continue
        extra[key] = _clean(key, value)
    return extra


_RESERVED: Final = frozenset({"time", "level", "logger", "message"})


def _timestamp(created: float) -> str:
    # ISO 8601 in UTC with milliseconds, as datetime.isoformat(timespec="milliseconds").
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{_second(seconds, _utc_seconds, time.gmtime, '%Y-%m-%dT%H:%M:%S')}.{millis:03d}+00:00"


def _timestamp_bytes(created: float) -> bytes:
    """:func:`_timestamp` as bytes, the last one remembered (events come many a millisecond)."""
    seconds = int(created)
    millis = seconds * 1000 + int((created - seconds) * 1000)
    cached, text = _utc_millis[0]
    if cached != millis:
        text = _timestamp(created).encode()
        _utc_millis[0] = (millis, text)
    return text


_utc_millis: list[tuple[int, bytes]] = [(-1, b"")]


# The formatted second of the last event, per format: events come in bursts within the
# same second, and strftime() is most of what formatting a time costs.
_utc_seconds: list[tuple[int, str]] = [(-1, "")]
_local_seconds: list[tuple[int, str]] = [(-1, "")]


def _second(
    seconds: int,
    cache: list[tuple[int, str]],
    convert: Callable[[float], time.struct_time],
    fmt: str,
) -> str:
    cached, text = cache[0]
    if cached != seconds:
        text = time.strftime(fmt, convert(seconds))
        cache[0] = (seconds, text)
    return text


def _json_line(
    created: float, level: str, logger: str, message: str, extra: Mapping[str, object]
) -> bytes:
    entry: dict[str, Any] = {
        "time": _timestamp(created),
        "level": level,
        "logger": logger,
        "message": message,
    }
    if _RESERVED.isdisjoint(extra):
        entry.update(extra)
    else:
        for key, value in extra.items():
            if key not in entry:
                entry[key] = value
    return _encoder.encode(entry)


# -- the writer's fast path for audit() events: a line compiled once per shape
#
# A tool.call event differs from the one before it mostly in its time and its duration:
# its server, tool, front door and outcome repeat. So an event's *shape* (its level,
# name, outcome, field names, and the value of every string field) is compiled once into
# the constant bytes of its JSON line, with a slot for each number; an event of a known
# shape costs its time, one ``str`` and one encode per number, and a join. The result is
# byte for byte what _json_line(_message(_fields(...))) writes (tested, with hypothesis).

_VARIABLE: Final = object()  # a number's place in a shape's key
_Template = tuple[tuple[bytes, ...], tuple[int, ...]]
_line_templates: dict[tuple[object, ...], _Template | None] = {}
_LINE_TEMPLATES: Final = 1024


def _event_line(
    created: float, level: int, event: str, outcome: str, fields: Mapping[str, object]
) -> bytes:
    """The JSON line (without newline) of one audit() event."""
    values = tuple(fields.values())
    # One flat tuple: the names, then the values with every number replaced by a marker.
    key = (
        level,
        event,
        outcome,
        *fields,
        *[_VARIABLE if type(value) in _NUMBERS else value for value in values],
    )
    try:
        template = _line_templates[key]
    except KeyError:
        if len(_line_templates) >= _LINE_TEMPLATES:
            _line_templates.clear()
        template = _line_templates[key] = _compile_line(level, event, outcome, fields)
    if template is None:  # a shape the template cannot hold: the general path
        extra = _fields(event, outcome, fields)
        message = _message(event, extra)
        return _json_line(created, logging.getLevelName(level), AUDIT_LOGGER, message, extra)
    return _render(template, values, created)


def _render(template: _Template, values: tuple[object, ...], created: float) -> bytes:
    """A compiled line with its time and numbers filled in."""
    constants, slots = template
    pieces = [constants[0], _timestamp_bytes(created), constants[1]]
    encode = _encoder.encode
    for index, slot in enumerate(slots):
        value = values[slot >> 1]
        pieces.append(encode(value) if slot & 1 else str(value).encode())
        pieces.append(constants[index + 2])
    return b"".join(pieces)


def _unformattable() -> None:
    # One event that cannot be formatted must not fail its call or stop the log.
    sys.stderr.write("funnel-server: an audit event could not be formatted\n")


class ToolCallLines:
    """The ``tool.call`` events of one tool from one front door, compiled once per outcome.

    A tool call's event is ``audit("tool.call", outcome=…, duration_ms=…, reason=…,
    **fields)`` with ``fields`` naming the call (server, tool, front door). This writes
    exactly that line, but from a template kept per outcome here, so a call costs its
    time, its duration and a join: no shape to look up. Anything off the common path (a
    reason, a human-readable copy, no audit log) goes through :func:`audit` itself.

    Args:
        fields: The fields naming the call; not changed afterwards.
    """

    __slots__ = ("_templates", "fields")

    def __init__(self, fields: Mapping[str, str | float | None]) -> None:
        #: The fields naming the call.
        self.fields = fields
        self._templates: dict[str, tuple[bytes, bytes, bytes, bytes] | None] = {}

    def record(self, outcome: str, duration_ms: float, reason: str | None) -> None:
        """Write the call's event."""
        sink = _sink
        level = logging.WARNING if outcome in _FAILURES else logging.INFO
        parts = None
        if reason is None and sink is not None and level < sink._stream_level:
            try:
                parts = self._templates[outcome]
            except KeyError:
                parts = self._templates[outcome] = self._compile(level, outcome)
        if parts is None or sink is None or type(duration_ms) is not float:
            audit(
                "tool.call", outcome=outcome, duration_ms=duration_ms, reason=reason, **self.fields
            )
            return
        created = time.time()
        if defer(_after_writes):
            # Inside a reader's batch: rendered once the batch's answers are written.
            _after_writes.lines.append((sink, parts, duration_ms, created))
        else:
            sink._put(_tool_call_line(parts, duration_ms, created))

    def _compile(self, level: int, outcome: str) -> tuple[bytes, bytes, bytes, bytes] | None:
        # The shape's template, when its only number is the duration (as _render fills it).
        template = _compile_line(level, "tool.call", outcome, {"duration_ms": 0.0, **self.fields})
        if template is None or template[1] != (0, 1):
            return None
        head, before_message, before_json, tail = template[0]
        return head, before_message, before_json, tail + b"\n"


def _tool_call_line(
    parts: tuple[bytes, bytes, bytes, bytes], duration_ms: float, created: float
) -> bytes:
    head, before_message, before_json, tail = parts
    return b"".join(
        (
            head,
            _timestamp_bytes(created),
            before_message,
            str(duration_ms).encode(),
            before_json,
            _encoder.encode(duration_ms),
            tail,
        )
    )


class _AfterWrites:
    """Tool-call lines waiting for the end of a reader's batch (:func:`write_batch`).

    A proxy's reader routes a chunk's messages and writes the answers when the chunk is
    done; a line registered after the answers' writer is rendered after their write, so
    formatting it never delays an answer.
    """

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: list[tuple[AuditLog, tuple[bytes, bytes, bytes, bytes], float, float]] = []

    def flush(self) -> None:
        lines, self.lines = self.lines, []
        for sink, parts, duration_ms, created in lines:
            try:
                sink._put(_tool_call_line(parts, duration_ms, created))
            except Exception:  # noqa: BLE001 - one unformattable event must not stop the rest
                _unformattable()


_after_writes: Final = _AfterWrites()

_NUMBERS: Final = frozenset({int, float})


def _compile_line(
    level: int, event: str, outcome: str, fields: Mapping[str, object]
) -> _Template | None:
    """The constant parts of a shape's line and its number slots (``None``: not a template).

    A slot is ``position << 1 | in_json``: the field's position among ``fields``, and
    whether it goes into the JSON members (encoded) or into the message (``str``).
    """
    positions = {name: index for index, name in enumerate(fields)}
    extra = _fields(event, outcome, fields)
    if not _RESERVED.isdisjoint(extra):
        return None
    variable = {
        name
        for name, value in fields.items()
        if type(value) in _NUMBERS and extra.get(name) is value  # not redacted
    }
    encode = _encoder.encode
    constants: list[bytes] = [b'{"time":"']
    slots: list[int] = []
    current = bytearray(b'","level":')
    current += encode(logging.getLevelName(level)) + b',"logger":' + encode(AUDIT_LOGGER)
    current += b',"message":"' + encode(event)[1:-1]

    def slot(name: str, *, in_json: bool) -> None:
        constants.append(bytes(current))
        current.clear()
        slots.append(positions[name] << 1 | in_json)

    for name, value in extra.items():
        if name == "event":
            continue
        current += encode(f" {name}=")[1:-1]
        if name in variable:
            slot(name, in_json=False)
        else:
            current += encode(f"{value}")[1:-1]
    current += b'"'
    for name, value in extra.items():
        current += b"," + encode(name) + b":"
        if name in variable:
            slot(name, in_json=True)
        else:
            current += encode(value)
    current += b"}"
    constants.append(bytes(current))
    return tuple(constants), tuple(slots)


_COOKIE = re.compile(r"(?i)(funnel_session=)[^;\s]+")


def scrub(text: str) -> str:
    """:func:`funnel_auth.redact`, plus this app's dashboard cookie."""
    return _COOKIE.sub(r"\1[REDACTED]", redact(text))


def scrub_fast(text: str) -> str:
    """:func:`scrub`, skipping the patterns for text that cannot hold a credential."""
    cleaned = redact_fast(text)
    # The cookie pattern needs an "=" too.
    return _COOKIE.sub(r"\1[REDACTED]", cleaned) if "=" in cleaned else cleaned


class RedactingFormatter(logging.Formatter):
    """A formatter whose output passes through :func:`scrub` (header dumps at DEBUG, say)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``, then mask any credential in the text."""
        return scrub(super().format(record))


# ---------------------------------------------------------------------- the writer

# What the queue holds: an event's JSON line (newline included), alone or with its
# human-readable line, or a flush marker. (A line alone is plain bytes, which the garbage
# collector does not track: the queue holds up to ``linger`` seconds of tool calls.)
_Item = bytes | tuple[bytes, str]


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Handler(logging.Handler):
    """Queues the records of ``funnel.audit`` (library events) for the writer."""

    def __init__(self, log: AuditLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is that record's problem
            self.handleError(record)
            return
        extra = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and key not in _RESERVED
        }
        self._log.submit_record(record.created, record.levelno, message, extra)


class AuditLog:
    """The audit log's writer: a bounded queue, one thread, a rotating file, stderr.

    Args:
        path: The JSON-lines file (created 0600; rotated to ``path.1`` …).
        stream: Where the human-readable copy goes.
        stream_level: The lowest level copied to ``stream`` (DEBUG: every event).
        max_bytes: Size at which the file rotates.
        backups: Rotated files kept.
        max_queue: Events waiting at most; more are dropped and counted.
        linger: Seconds the writer waits for more events before writing a batch.
    """

    def __init__(
        self,
        path: Path,
        *,
        stream: TextIO,
        stream_level: int = logging.WARNING,
        max_bytes: int = 5 * 1024 * 1024,
        backups: int = 5,
        max_queue: int = 10_000,
        linger: float = 0.02,
    ) -> None:
        self.path = path
        self._stream = stream
        self._stream_level = stream_level
        self._max_bytes = max_bytes
        self._backups = backups
        self._max_queue = max_queue
        self._linger = linger
        self._queue: collections.deque[_Item | _Flush] = collections.deque()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._closed = False
        self._dropped = 0
        self._reported = 0
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self.handler: logging.Handler = _Handler(self)
        self._thread = threading.Thread(target=self._run, name="funnel-audit", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full (each also reported in the log)."""
        return self._dropped

    # -- the callers' side: one compiled line, no I/O

    def submit(self, level: int, event: str, outcome: str, fields: Mapping[str, object]) -> None:
        """Format one event of :func:`audit` and queue it for the writer."""
        created = time.time()
        try:
            line = _event_line(created, level, event, outcome, fields) + b"\n"
            human = (
                self._human(created, level, _message(event, _fields(event, outcome, fields)))
                if level >= self._stream_level
                else None
            )
        except Exception:  # noqa: BLE001 - one unformattable event must not fail the call
            _unformattable()
            return
        self._put(line if human is None else (line, human))

    def submit_record(
        self, created: float, level: int, message: str, extra: Mapping[str, object]
    ) -> None:
        """Redact and format one logging record's message and ``extra`` fields; queue it."""
        try:
            text = scrub_fast(message)
            cleaned = {key: _clean(key, value) for key, value in extra.items()}
            line = _json_line(created, logging.getLevelName(level), AUDIT_LOGGER, text, cleaned)
            human = self._human(created, level, text) if level >= self._stream_level else None
        except Exception:  # noqa: BLE001 - one unformattable event must not stop the log
            _unformattable()
            return
        line += b"\n"
        self._put(line if human is None else (line, human))

    @staticmethod
    def _human(created: float, level: int, message: str) -> str:
        stamp = _second(int(created), _local_seconds, time.localtime, "%Y-%m-%d %H:%M:%S")
        millis = int((created - int(created)) * 1000)
        return f"{stamp},{millis:03d} {logging.getLevelName(level)} {AUDIT_LOGGER}: {message}\n"

    def _put(self, item: _Item) -> None:
        if self._closed or len(self._queue) >= self._max_queue:
            self._dropped += 1
        else:
            self._queue.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued before this call is written.

        Returns:
            Whether that happened within ``timeout`` seconds.
        """
        marker = _Flush()
        self._queue.append(marker)
        self._hurry.set()
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the writer and close the file."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._hurry.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            os.close(self._fd)

    # -- the writer thread

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            # Let a burst gather: one write for many calls (a flush or close hurries it).
            self._hurry.wait(self._linger)
            self._wake.clear()
            self._hurry.clear()
            self._drain()
            if self._closed and not self._queue:
                return

    def _drain(self) -> None:
        lines: list[bytes] = []
        human: list[str] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Flush):
                self._write(lines, human)
                lines, human = [], []
                item.done.set()
                continue
            if isinstance(item, bytes):
                lines.append(item)
            else:
                line, copy = item
                lines.append(line)
                human.append(copy)
        dropped = self._dropped
        if dropped > self._reported:
            count = dropped - self._reported
            self._reported = dropped
            created = time.time()
            message = (
                f"audit.dropped outcome=failure count={count}: the audit writer fell behind "
                f"(queue of {self._max_queue} full)"
            )
            extra = {
                "event": "audit.dropped",
                "outcome": "failure",
                "count": count,
                "queue": self._max_queue,
            }
            line = _json_line(created, "WARNING", AUDIT_LOGGER, message, extra)
            lines.append(line + b"\n")
            if self._stream_level <= logging.WARNING:
                human.append(self._human(created, logging.WARNING, message))
        self._write(lines, human)

    def _write(self, lines: list[bytes], human: list[str]) -> None:
        try:
            batch: list[bytes] = []
            size = self._size
            for line in lines:
                if size and size + len(line) > self._max_bytes:
                    self._append(b"".join(batch))
                    batch = []
                    self._rotate()
                    size = 0
                batch.append(line)
                size += len(line)
            if batch:
                self._append(b"".join(batch))
        except OSError as exc:
            sys.stderr.write(f"funnel-server: cannot write the audit log {self.path}: {exc}\n")
        if human:
            try:
                self._stream.write("".join(human))
                self._stream.flush()
            except (OSError, ValueError):  # a closed stderr: the file has the events
                pass

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        for index in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self._backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0


def configure_audit_log(
    home: Path,
    *,
    stream: TextIO | None = None,
    stream_level: int = logging.WARNING,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 5,
    max_queue: int = 10_000,
) -> AuditLog:
    """Send ``funnel.audit`` to a rotating JSON-lines file in ``home`` (and stderr).

    Args:
        home: The funnel home; created 0700 when missing.
        stream: Where the human-readable copy goes (default: stderr).
        stream_level: The lowest level copied there: DEBUG for every event, WARNING
            (the default) for failures only.
        max_bytes: Size at which the file rotates.
        backups: Rotated files kept (``audit.log.1`` …).
        max_queue: Events waiting for the writer at most (more are dropped and counted).

    Returns:
        The audit log (stop it with :func:`remove_audit_handlers` or ``close()``).
    """
    global _sink  # noqa: PLW0603 - one audit log per process, like logging's own handlers
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = AuditLog(
        home / AUDIT_FILE_NAME,
        stream=stream or sys.stderr,
        stream_level=stream_level,
        max_bytes=max_bytes,
        backups=backups,
        max_queue=max_queue,
    )
    # A program that exits without remove_audit_handlers still writes what is queued.
    atexit.register(log.close)
    _logger.addHandler(log.handler)
    _logger.setLevel(logging.INFO)
    # The audit log has its own handlers: the root logger's would print every event twice.
    _logger.propagate = False
    _sink = log
    return log


def remove_audit_handlers(log: AuditLog) -> None:
    """Undo :func:`configure_audit_log`: write what is queued, stop the writer, detach."""
    global _sink  # noqa: PLW0603 - see configure_audit_log
    if _sink is log:
        _sink = None
    _logger.removeHandler(log.handler)
    log.close()
    atexit.unregister(log.close)
    if not _logger.handlers:
        _logger.propagate = True
