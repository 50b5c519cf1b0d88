r"""Newline-delimited framing for the stdio transport (sans-I/O).

MCP over stdio sends one JSON-RPC message per line. :class:`LineFramer` turns arbitrary
chunks of bytes into complete lines and enforces a maximum line length *while* buffering,
so a peer that writes a gigabyte without a newline costs at most ``limit`` bytes of
memory before it is refused.

Theory of operation: a raw line feed never occurs inside a JSON text (JSON escapes it in
strings as ``\n``), so every newline is a safe point to resynchronise on. When a line
outgrows the limit the framer remembers its first bytes (:attr:`MessageTooLarge.head`, so
a caller may recover the message's id), drops everything up to the next newline, and
carries on with the line after it. :meth:`LineFramer.feed` reports the oversized line
either by raising (the default) or, with ``skip_oversized=True``, as a
:class:`MessageTooLarge` item among the lines, in stream order, so that one huge message
costs only that message.
"""

from __future__ import annotations

from typing import Final, Literal, overload

from funnel_transports._errors import MessageTooLarge

__all__ = ["LineFramer"]

_HEAD: Final = 256


class LineFramer:
    r"""Splits a byte stream into lines of at most ``limit`` bytes.

    Lines are returned without their terminator; a trailing ``\r`` (CRLF peers) is
    stripped too, and empty lines are dropped.
    """

    def __init__(self, limit: int, *, peer: str = "peer") -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._peer = peer
        self._buffer = bytearray()
        # After an oversized line was reported before its end: drop up to the newline.
        self._dropping = False

    @overload
    def feed(self, data: bytes, *, skip_oversized: Literal[False] = False) -> list[bytes]: ...
    @overload
    def feed(
        self, data: bytes, *, skip_oversized: Literal[True]
    ) -> list[bytes | MessageTooLarge]: ...
    def feed(
        self, data: bytes, *, skip_oversized: bool = False
    ) -> list[bytes] | list[bytes | MessageTooLarge]:
        """Add ``data`` and return every line it completed.

        Args:
            data: The next chunk of the stream.
            skip_oversized: Report a line over the limit as a :class:`MessageTooLarge`
                item in the returned list (in stream order) instead of raising.

        Raises:
            MessageTooLarge: A line grew beyond the limit (only without
                ``skip_oversized``). The lines completed before it in this chunk are
                lost to the caller; the framer itself stays usable: it drops the rest of
                the oversized line and resumes after its newline.
        """
        items = self._feed(data)
        if skip_oversized:
            return items
        lines: list[bytes] = []
        for item in items:
            if isinstance(item, MessageTooLarge):
                raise item
            lines.append(item)
        return lines

    @property
    def pending(self) -> int:
        """Bytes buffered of a line not yet complete."""
        return len(self._buffer)

    def _feed(self, data: bytes) -> list[bytes | MessageTooLarge]:
        buffer = self._buffer
        if not self._dropping and len(buffer) + len(data) <= self._limit:
            # No line of this chunk can be over the limit: split it in C, no loop per line.
            end = data.rfind(b"\n")
            if end == -1:
                buffer += data
                return []
            if buffer:
                buffer += data[:end]
                complete = bytes(buffer)
                buffer.clear()
            else:
                complete = data[:end]
            if end + 1 < len(data):
                buffer += data[end + 1 :]
            lines = complete.split(b"\n")
            if b"\r" in complete:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            return [line for line in lines if line.strip()]
        return self._feed_bounded(data)

    def _feed_bounded(self, data: bytes) -> list[bytes | MessageTooLarge]:
        items: list[bytes | MessageTooLarge] = []
        start = 0
        size = len(data)
        while start < size:
            end = data.find(b"\n", start)
            stop = size if end == -1 else end
            if self._dropping:
                self._dropping = end == -1
                start = stop + 1
                continue
            length = len(self._buffer) + (stop - start)
            if length > self._limit:
                # Reported once, as soon as the limit is passed (not when the line ends).
                head = bytes(self._buffer[:_HEAD]) + data[start : start + _HEAD]
                self._buffer.clear()
                self._dropping = end == -1
                items.append(
                    MessageTooLarge(length, self._limit, peer=self._peer, head=head[:_HEAD])
                )
                start = stop + 1
                continue
            if end == -1:
                self._buffer += data[start:]
                break
            if self._buffer:
                self._buffer += data[start:end]
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = data[start:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                items.append(line)
            start = end + 1
        return items
