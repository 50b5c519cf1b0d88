"""Write coalescing: the messages a reader routes from one chunk leave in one write each way.

A proxy's reader takes a chunk of bytes that often holds many messages (a client with 64
calls in flight, a backend answering a burst). Routing each one writes it on: without
coalescing that is one system call per message on the other side. Inside a
:func:`write_batch` block, writers that support it (:class:`Deferrable`) only collect what
they are given and write it all once when the block ends. The block holds no ``await``,
so no other task can run in between: one module-level stack is enough, and order is kept
(everything a writer collected goes out before anything it is given later).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Deferrable", "defer", "write_batch"]


class Deferrable(Protocol):
    """A writer that can collect writes and send them in one go."""

    def flush(self) -> None:
        """Write everything collected (errors are the writer's to report)."""
        ...


_active: list[dict[Deferrable, None]] = []


@contextmanager
def write_batch() -> Iterator[None]:
    """Collect the writes of the block's deferrable writers; flush each once at its end."""
    pending: dict[Deferrable, None] = {}
    _active.append(pending)
    try:
        yield
    finally:
        _active.pop()
        for writer in pending:
            writer.flush()


def defer(writer: Deferrable) -> bool:
    """Register ``writer`` with the innermost batch; ``False`` when there is none."""
    if not _active:
        return False
    _active[-1][writer] = None
    return True
