"""The dashboard's log view: recent log lines in a bounded in-memory ring buffer.

Theory of operation: :class:`LogBuffer` is a :class:`logging.Handler` that the app
installs on funnel's own loggers (``funnel_transports``, ``funnel_proxy``,
``funnel_auth``, ``funnel_tokenstore``, ``funnel_server`` and the audit logger
``funnel.audit``) while it runs. Each record at INFO or above becomes a
:class:`LogEntry` with a sequence number, its source and the backend it is about:

- ``stderr``: a line a stdio backend wrote on its stderr (the stdio transport logs them
  as ``[server] line``);
- ``audit``: an audit event (``event``, ``outcome`` and ``server`` from its fields);
- ``funnel``: anything else funnel logged; a ``[server]`` prefix names the backend.

The buffer keeps the last ``capacity`` entries (older ones fall off) and pushes each new
entry to live subscribers (``/ws`` connections) through bounded streams: a subscriber
that does not keep up loses entries rather than growing memory. Every message passes
through :func:`~funnel_server._audit.scrub` on the way in, so nothing secret is stored.
What is recorded follows the log level: below INFO nothing, and with
``--log-level WARNING`` stderr lines (INFO) are not logged at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Final, Literal, Self

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from funnel_auth import AUDIT_LOGGER
from funnel_server._audit import scrub

__all__ = ["CAPTURED_LOGGERS", "LogBuffer", "LogEntry", "LogSource"]

CAPTURED_LOGGERS: Final = (
    "funnel_transports",
    "funnel_proxy",
    "funnel_auth",
    "funnel_tokenstore",
    "funnel_server",
    AUDIT_LOGGER,
)
"""The loggers whose records the buffer keeps."""

LogSource = Literal["stderr", "audit", "funnel"]

_STDERR_FUNCTION: Final = "_log_stderr"
_MAX_MESSAGE: Final = 4000


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One log line as the dashboard shows it.

    Attributes:
        seq: Increases by one per entry (ask for entries ``after`` one you have).
        time: When it was logged (Unix seconds).
        level: ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``.
        source: ``stderr``, ``audit`` or ``funnel`` (see the module documentation).
        server: The backend it is about, when there is one.
        message: The text (credentials masked; at most 4,000 characters).
        event: The audit event name (``audit`` entries).
        outcome: The audit outcome (``audit`` entries).
    """

    seq: int
    time: float
    level: str
    source: LogSource
    server: str | None = None
    message: str
    event: str | None = None
    outcome: str | None = None


def _field(record: logging.LogRecord, name: str) -> str | None:
    value = getattr(record, name, None)
    return value if isinstance(value, str) else None


def _describe(record: logging.LogRecord) -> tuple[LogSource, str | None, str]:
    """The source, server and message of a record."""
    if record.name == AUDIT_LOGGER:
        return "audit", _field(record, "server"), record.getMessage()
    args = record.args
    server = (
        args[0]
        if isinstance(args, tuple)
        and args
        and isinstance(args[0], str)
        and isinstance(record.msg, str)
        and record.msg.startswith("[%s] ")
        else None
    )
    if server is None:
        return "funnel", None, record.getMessage()
    assert isinstance(args, tuple)  # noqa: S101 - narrowed by the test above
    try:
        text = str(record.msg)[len("[%s] ") :] % args[1:]
    except (TypeError, ValueError):  # arguments that do not fit the format: keep it whole
        return "funnel", server, record.getMessage()
    if record.funcName == _STDERR_FUNCTION and record.name.startswith("funnel_transports"):
        return "stderr", server, text
    return "funnel", server, text


class LogBuffer(logging.Handler):
    """A ring buffer of recent :class:`LogEntry` items fed by the logging system.

    Args:
        capacity: Entries kept; the oldest fall off.
        subscriber_buffer: Entries a slow subscriber may lag behind before it loses some.
    """

    def __init__(self, capacity: int = 2000, *, subscriber_buffer: int = 500) -> None:
        super().__init__(level=logging.INFO)
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._seq = 0
        self._subscriber_buffer = subscriber_buffer
        self._subscribers: list[MemoryObjectSendStream[LogEntry]] = []
        self._loop_thread: int | None = None
        self._installed: list[logging.Logger] = []

    @property
    def capacity(self) -> int:
        """How many entries are kept."""
        return self._entries.maxlen or 0

    def emit(self, record: logging.LogRecord) -> None:
        """Store a record (and push it to subscribers); never raises."""
        try:
            source, server, message = _describe(record)
            self._seq += 1
            entry = LogEntry(
                seq=self._seq,
                time=record.created,
                level=record.levelname,
                source=source,
                server=server,
                message=scrub(message)[:_MAX_MESSAGE],
                event=_field(record, "event") if source == "audit" else None,
                outcome=_field(record, "outcome") if source == "audit" else None,
            )
        except Exception:  # noqa: BLE001 - a logging handler must not raise into the caller
            self.handleError(record)
            return
        self._entries.append(entry)
        # Memory streams belong to the event loop: records logged from worker threads
        # (keyring calls, say) are kept, and reach live subscribers at their next fetch.
        if self._subscribers and threading.get_ident() == self._loop_thread:
            for stream in list(self._subscribers):
                try:
                    stream.send_nowait(entry)
                except anyio.WouldBlock:
                    pass  # a slow subscriber loses this entry; the buffer still has it
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._subscribers.remove(stream)

    def entries(
        self,
        *,
        server: str | None = None,
        source: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """Kept entries, oldest first, filtered.

        Args:
            server: Only entries about this backend.
            source: Only ``stderr``, ``audit`` or ``funnel`` entries.
            after: Only entries with a larger ``seq``.
            limit: At most this many (the newest of them).
        """
        chosen = [
            entry
            for entry in self._entries
            if entry.seq > after
            and (server is None or entry.server == server)
            and (source is None or entry.source == source)
        ]
        return chosen[-limit:] if limit is not None and limit >= 0 else chosen

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest entry ever stored (0 before the first)."""
        return self._seq

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[LogEntry]]:
        """Receive every new entry for the duration of the block (from the event loop)."""
        self._loop_thread = threading.get_ident()
        send, receive = anyio.create_memory_object_stream[LogEntry](self._subscriber_buffer)
        self._subscribers.append(send)
        try:
            with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

    def install(self) -> None:
        """Start capturing funnel's loggers (see :data:`CAPTURED_LOGGERS`)."""
        for name in CAPTURED_LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
                self._installed.append(logger)

    def uninstall(self) -> None:
        """Stop capturing (the kept entries stay)."""
        for logger in self._installed:
            logger.removeHandler(self)
        self._installed.clear()

    def __enter__(self) -> Self:
        """Capture for the duration of a ``with`` block (:meth:`install`)."""
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """:meth:`uninstall`."""
        self.uninstall()
