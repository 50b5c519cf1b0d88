"""Newline-delimited framing for the stdio transport (sans-I/O).

MCP over stdio sends one JSON-RPC message per line. :class:`LineFramer` turns arbitrary
chunks of bytes into complete lines and enforces a maximum line length *while* buffering,
so a peer that writes a gigabyte without a newline costs at most ``limit`` bytes of
memory before it is refused.
"""

from __future__ import annotations

from funnel_transports._errors import MessageTooLarge

__all__ = ["LineFramer"]


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

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every line it completed.

        Raises:
            MessageTooLarge: A line grew beyond the limit. The framer is then unusable:
                the stream has no safe resynchronisation point the peer agreed to.
        """
        lines: list[bytes] = []
        start = 0
        end = data.find(b"\n")
        while end != -1:
            if self._buffer:
                self._buffer += data[start:end]
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = data[start:end]
            self._check(len(line))
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                lines.append(line)
            start = end + 1
            end = data.find(b"\n", start)
        if start < len(data):
            self._buffer += data[start:]
            self._check(len(self._buffer))
        return lines

    @property
    def pending(self) -> int:
        """Bytes buffered of a line not yet complete."""
        return len(self._buffer)

    def _check(self, size: int) -> None:
        if size > self._limit:
            self._buffer.clear()
            raise MessageTooLarge(size, self._limit, peer=self._peer)
