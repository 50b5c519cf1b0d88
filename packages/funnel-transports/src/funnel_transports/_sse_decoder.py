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

The decoder is total: any bytes decode (invalid UTF-8 becomes U+FFFD, as the standard
says), and nothing grows without bound when ``max_event_size`` is set: not a line, not an
event's data, not its ``event`` or ``id`` field. An event that outgrows the limit is
reported once, as soon as it does, and the rest of it is dropped up to the blank line that
ends it; the events after it decode normally. :meth:`SSEDecoder.feed` reports it by
raising (the default) or, with ``skip_oversized=True``, as a :class:`MessageTooLarge` item
among the events, in stream order.

No sockets, clocks or anyio here: the transports feed it, the tests drive it directly.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final, Literal, overload

from funnel_transports._errors import MessageTooLarge

__all__ = ["SSEDecoder", "ServerSentEvent"]

_EOL: Final = re.compile(r"\r\n|\r|\n")
_BOM: Final = "\ufeff"
# A longer ``retry`` (over 31 years in milliseconds) is ignored: int() of thousands of
# digits is slow, and past 4,300 digits it raises.
_MAX_RETRY_DIGITS: Final = 12


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
        max_event_size: The most characters one event's lines may hold, counting field
            names, comments and one per line ending; a larger event raises
            :class:`~funnel_transports.MessageTooLarge`. ``None`` means no limit. The
            same stream gives the same events however it is split into chunks.
        peer: Names the peer in error messages.
    """

    def __init__(self, *, max_event_size: int | None = None, peer: str = "peer") -> None:
        self._max = max_event_size
        self._peer = peer
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._trailing_cr = False
        # The unfinished line, in the pieces it arrived in, and its length.
        self._pieces: list[str] = []
        self._pending = 0
        self._event = ""
        self._data: list[str] = []
        # Characters of the current event's complete lines, one more per line ending.
        self._event_size = 0
        self._event_retry: int | None = None
        self._last_event_id: str | None = None
        self._retry: int | None = None
        # After an oversized event was reported: drop lines up to its blank line.
        self._dropping = False

    @property
    def last_event_id(self) -> str | None:
        """The most recent ``id`` field (what a client resumes from)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The most recent ``retry`` field in milliseconds (the reconnection delay)."""
        return self._retry

    @overload
    def feed(
        self, chunk: bytes, *, skip_oversized: Literal[False] = False
    ) -> list[ServerSentEvent]: ...
    @overload
    def feed(
        self, chunk: bytes, *, skip_oversized: Literal[True]
    ) -> list[ServerSentEvent | MessageTooLarge]: ...
    def feed(
        self, chunk: bytes, *, skip_oversized: bool = False
    ) -> list[ServerSentEvent] | list[ServerSentEvent | MessageTooLarge]:
        """Decode one chunk and return the events it completed (often none).

        Args:
            chunk: The next bytes of the stream.
            skip_oversized: Report an event over ``max_event_size`` as a
                :class:`MessageTooLarge` item in the returned list instead of raising.

        Raises:
            MessageTooLarge: An event's data or a single line exceeds ``max_event_size``
                (only without ``skip_oversized``). The events completed before it in
                this chunk are lost to the caller; the decoder stays usable: it drops the
                rest of that event and decodes the ones after it.
        """
        items = self._feed(chunk)
        if skip_oversized:
            return items
        events: list[ServerSentEvent] = []
        for item in items:
            if isinstance(item, MessageTooLarge):
                raise item
            events.append(item)
        return events

    def _feed(self, chunk: bytes) -> list[ServerSentEvent | MessageTooLarge]:
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
        if "\n" not in text and "\r" not in text:
            # No line ends here: keep the piece (joining now would make a line that
            # arrives a byte at a time cost quadratic time).
            self._pieces.append(text)
            self._pending += len(text)
            return self._check_pending()
        buffer = "".join(self._pieces) + text if self._pieces else text
        self._pieces = []
        items: list[ServerSentEvent | MessageTooLarge] = []
        position = 0
        for match in _EOL.finditer(buffer):
            self._line_received(buffer[position : match.start()], items)
            position = match.end()
        if position < len(buffer):
            self._pieces.append(buffer[position:])
        self._pending = len(buffer) - position
        # A CR that ends the buffer may be the first half of a CRLF split across chunks.
        self._trailing_cr = position == len(buffer) and buffer.endswith("\r")
        items.extend(self._check_pending())
        return items

    def _check_pending(self) -> list[ServerSentEvent | MessageTooLarge]:
        """Bound the unfinished line, which can only grow."""
        items: list[ServerSentEvent | MessageTooLarge] = []
        if self._max is None:
            return items
        if not self._dropping:
            self._check_size(self._event_size + self._pending, items)
        if self._dropping and self._pending > self._max:
            # A dropped event's unfinished line: keep one character, so that the line
            # ending still to come ends this line rather than looking like a blank one.
            self._pieces = [self._pieces[0][:1]]
            self._pending = 1
        return items

    def _check_size(self, size: int, items: list[ServerSentEvent | MessageTooLarge]) -> bool:
        """Whether the event is within the limit; if not, report it and start dropping it."""
        if self._max is None or size <= self._max:
            return True
        self._forget()
        self._dropping = True
        items.append(MessageTooLarge(size, self._max, peer=self._peer))
        return False

    def _forget(self) -> None:
        self._event = ""
        self._data = []
        self._event_size = 0
        self._event_retry = None

    def _line_received(self, line: str, items: list[ServerSentEvent | MessageTooLarge]) -> None:
        if not line:
            if self._dropping:
                self._dropping = False
                self._forget()
            else:
                self._dispatch(items)
            return
        if self._dropping or not self._check_size(self._event_size + len(line), items):
            return
        self._event_size += len(line) + 1
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_event_id = value
        elif (
            name == "retry"
            and value.isascii()
            and value.isdigit()
            and len(value) <= _MAX_RETRY_DIGITS
        ):
            self._retry = self._event_retry = int(value)
        # Any other field name is ignored, as the standard requires.

    def _dispatch(self, items: list[ServerSentEvent | MessageTooLarge]) -> None:
        if self._data:
            items.append(
                ServerSentEvent(
                    event=self._event or "message",
                    data="\n".join(self._data),
                    id=self._last_event_id,
                    retry=self._event_retry,
                )
            )
        self._forget()
