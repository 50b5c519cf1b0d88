"""Background tasks of one transport, stoppable without cancelling its owner.

A transport enters a task group in ``__aenter__`` and leaves it in ``__aexit__``, so the
caller's ``async with`` body runs inside that group's cancel scope. Cancelling the group
to close the transport would therefore cancel the caller too, and leaving the group
from ``aclose()`` breaks scope nesting whenever ``aclose()`` runs inside another cancel
scope (``fail_after``, ``move_on_after``) or another task. So every background task runs
in a cancel scope of its own, kept here: ``aclose()`` cancels those scopes and waits
(bounded) for the tasks to finish, and ``__aexit__`` leaves the then idle task group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

__all__ = ["BackgroundTasks"]


class BackgroundTasks:
    """The tasks a transport started in its task group, each in its own cancel scope."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._idle = anyio.Event()
        self._idle.set()

    def start_soon(
        self, tg: anyio.abc.TaskGroup, func: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        """Start ``func(*args)`` in ``tg``, cancellable through :meth:`cancel_all`."""
        tg.start_soon(self._run, self._register(), func, args)

    async def start(
        self, tg: anyio.abc.TaskGroup, func: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        """Like :meth:`start_soon`, waiting until ``func`` calls ``task_status.started()``."""
        await tg.start(self._run_with_status, self._register(), func, args)

    def _register(self) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if not self._scopes:
            self._idle = anyio.Event()
        self._scopes.add(scope)
        return scope

    def _done(self, scope: anyio.CancelScope) -> None:
        self._scopes.discard(scope)
        if not self._scopes:
            self._idle.set()

    async def _run(
        self, scope: anyio.CancelScope, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with scope:
                await func(*args)
        finally:
            self._done(scope)

    async def _run_with_status(
        self,
        scope: anyio.CancelScope,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                await func(*args, task_status=task_status)
        finally:
            self._done(scope)

    async def cancel_all(self, timeout: float) -> bool:
        """Cancel every task and wait up to ``timeout`` seconds; return whether all ended."""
        for scope in list(self._scopes):
            scope.cancel()
        with anyio.move_on_after(timeout, shield=True):
            await self._idle.wait()
        return not self._scopes
