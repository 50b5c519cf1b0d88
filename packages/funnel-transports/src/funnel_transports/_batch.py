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

from types import TracebackType
from typing import Final, Protocol

__all__ = ["Deferrable", "defer", "write_batch"]


class Deferrable(Protocol):
    """A writer that can collect writes and send them in one go."""

    def flush(self) -> None:
        """Write everything collected (errors are the writer's to report)."""
        ...


_active: list[dict[Deferrable, None]] = []


class _Batch:
    """The context manager :func:`write_batch` returns (stateless: the state is ``_active``).

    A plain class rather than ``@contextmanager``: a reader enters one per chunk it reads,
    and a generator-based manager costs a generator, a helper object and several calls
    more each time (about 1 µs on the hot path).
    """

    __slots__ = ()

    def __enter__(self) -> None:
        _active.append({})

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for writer in _active.pop():
            writer.flush()


_BATCH: Final = _Batch()


def write_batch() -> _Batch:
    """Collect the writes of the block's deferrable writers; flush each once at its end.

    Use as ``with write_batch(): ...``; blocks may nest (each writer is flushed by the
    innermost block it was given writes in).
    """
    return _BATCH


def defer(writer: Deferrable) -> bool:
    """Register ``writer`` with the innermost batch; ``False`` when there is none."""
    if not _active:
        return False
    _active[-1][writer] = None
    return True
