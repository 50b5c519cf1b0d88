"""The realistic floor: a stdio relay that decodes every envelope, remaps ids, re-encodes.

Usage: ``python relay_msgspec.py COMMAND [ARG...]``

What the least a real proxy must do per message costs, written the way the hot path of
issue 12 asks for: one thread, :mod:`selectors` over both pipes, each complete line's
JSON-RPC envelope decoded by ``msgspec`` into a struct whose ``params``/``result``/
``error`` stay ``Raw`` (never decoded), a client request's id replaced by the relay's own
counter (remembered, so the response gets the client's id back), the envelope encoded
again, and every line that arrived in one read written in one ``write``. Notifications
and server requests pass through re-encoded; responses to server requests pass through.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
from typing import Final

import msgspec
from msgspec import UNSET, Raw, UnsetType


class Envelope(msgspec.Struct):
    """A JSON-RPC message with everything but the envelope kept raw."""

    jsonrpc: str = "2.0"
    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


_decode: Final = msgspec.json.Decoder(Envelope).decode
_encode: Final = msgspec.json.Encoder().encode


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Relay:
    """The two directions' state: line buffers and the id map."""

    def __init__(self) -> None:
        self.next_id = 0
        self.client_ids: dict[int, int | str | None] = {}
        self.buffers: dict[int, bytearray] = {}

    def to_child(self, line: bytes) -> bytes:
        message = _decode(line)
        if message.method is not UNSET and message.id is not UNSET:
            self.next_id += 1
            self.client_ids[self.next_id] = message.id
            message.id = self.next_id
        return _encode(message)

    def to_client(self, line: bytes) -> bytes:
        message = _decode(line)
        if message.method is UNSET and isinstance(message.id, int):
            original = self.client_ids.pop(message.id, UNSET)
            if original is not UNSET:
                message.id = original
        return _encode(message)

    def lines(self, fd: int, chunk: bytes) -> list[bytes]:
        buffer = self.buffers.setdefault(fd, bytearray())
        buffer += chunk
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(buffer[:end]).split(b"\n")
        del buffer[: end + 1]
        return [line for line in complete if line.strip()]


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None
    assert child.stdout is not None
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    child_in, child_out = child.stdin.fileno(), child.stdout.fileno()
    relay = Relay()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, (child_in, relay.to_child))
    selector.register(child_out, selectors.EVENT_READ, (stdout, relay.to_client))
    open_fds = 2
    while open_fds:
        for key, _ in selector.select():
            chunk = os.read(key.fd, 1 << 16)
            target, convert = key.data
            if chunk:
                out = [convert(line) for line in relay.lines(key.fd, chunk)]
                if out:
                    _write_all(target, b"\n".join(out) + b"\n")
                continue
            selector.unregister(key.fd)
            open_fds -= 1
            if key.fd == stdin:
                child.stdin.close()
            else:
                open_fds = 0
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
