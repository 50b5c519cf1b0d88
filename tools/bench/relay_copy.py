"""The first floor: a stdio relay that only copies bytes, lines intact, both ways.

Usage: ``python relay_copy.py COMMAND [ARG...]``

It starts the command and, in one thread with :mod:`selectors`, copies whatever arrives
on its own stdin to the child's stdin and whatever the child writes on stdout to its own
stdout, one ``read`` and one ``write`` per chunk. Nothing is parsed, so nothing a proxy
must do (namespacing, routing, filtering) is done: this is what merely standing between
a client and a server costs in Python. Stdin closing closes the child's stdin; the relay
exits when the child's stdout closes.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None
    assert child.stdout is not None
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    child_in, child_out = child.stdin.fileno(), child.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, child_in)
    selector.register(child_out, selectors.EVENT_READ, stdout)
    open_fds = 2
    while open_fds:
        for key, _ in selector.select():
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                _write_all(key.data, chunk)
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
