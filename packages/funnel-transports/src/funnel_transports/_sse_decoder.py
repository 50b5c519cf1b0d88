"""A sans-I/O decoder for Server-Sent Events (the WHATWG ``text/event-stream`` format).

Theory of operation: bytes go in through :meth:`SSEDecoder.feed` in whatever chunks the
network delivers; complete events come out. The decoder keeps three pieces of state
between chunks: an incremental UTF-8 decoder (a multi-byte character may straddle two
chunks), the text of the unfinished line, and whether the previous chunk ended in a
carriage return (so that a line feed opening the next chunk completes a CRLF instead of
ending a second, empty line). Lines end in CRLF, CR or LF. A line is a comment
(``:``), a field (``name:value``, one space after the colon dropped) or blank, which
dispatches the event being built. Events without any ``data`` line are not dispatched
(the ``id`` and ``retry`` they carry are still recorded). An event left unfinished when
the stream ends is discarded, as the standard says.

No sockets, clocks or anyio here: the transports feed it, the tests drive it directly.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

from funnel_transports._errors import MessageTooLarge

__all__ = ["SSEDecoder", "ServerSentEvent"]

_EOL: Final = re.compile(r"\r\n|\r|\n")
_BOM: Final = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: The event type (``"message"`` unless the server named one).
        data: The data lines joined by line feeds; may be empty.
        id: The last event id seen on the stream when this event was dispatched.
        retry: The reconnection delay in milliseconds set by this event, if any.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` s, chunk by chunk.

    Args:
        max_event_size: The most characters one event's data (or one line) may hold;
            a larger one raises :class:`~funnel_transports.MessageTooLarge`. ``None``
            means no limit.
        peer: Names the peer in error messages.
    """

    def __init__(self, *, max_event_size: int | None = None, peer: str = "peer") -> None:
        self._max = max_event_size
        self._peer = peer
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._trailing_cr = False
        self._line = ""
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self._event_retry: int | None = None
        self._last_event_id: str | None = None
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The most recent ``id`` field (what a client resumes from)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The most recent ``retry`` field in milliseconds (the reconnection delay)."""
        return self._retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk and return the events it completed (often none).

        Raises:
            MessageTooLarge: An event's data or a single line exceeds ``max_event_size``.
        """
        text = self._text.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if self._trailing_cr:
            self._trailing_cr = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._line + text
        events: list[ServerSentEvent] = []
        position = 0
        for match in _EOL.finditer(buffer):
            self._line_received(buffer[position : match.start()], events)
            position = match.end()
        self._line = buffer[position:]
        # A CR that ends the buffer may be the first half of a CRLF split across chunks.
        self._trailing_cr = position == len(buffer) and buffer.endswith("\r")
        self._check_size(len(self._line) + self._data_size)
        return events

    def _check_size(self, size: int) -> None:
        if self._max is not None and size > self._max:
            # Forget the oversized event so a caller that chooses to carry on can.
            self._line = ""
            self._data = []
            self._data_size = 0
            raise MessageTooLarge(size, self._max, peer=self._peer)

    def _line_received(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check_size(self._data_size)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = self._event_retry = int(value)
        # Any other field name is ignored, as the standard requires.

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            events.append(
                ServerSentEvent(
                    event=self._event or "message",
                    data="\n".join(self._data),
                    id=self._last_event_id,
                    retry=self._event_retry,
                )
            )
        self._event = ""
        self._data = []
        self._data_size = 0
        self._event_retry = None
