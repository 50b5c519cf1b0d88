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

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

__all__ = ["BackgroundTasks", "TaskHost", "hosted_tasks"]


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


class TaskHost:
    """A task group that lives in a background task of its own; see :func:`hosted_tasks`."""

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def tg(self) -> anyio.abc.TaskGroup:
        """The group to start background tasks in (while the host runs).

        Raises:
            RuntimeError: The host has stopped.
        """
        if self._tg is None:
            raise RuntimeError("the background tasks have stopped")
        return self._tg

    @property
    def running(self) -> bool:
        """Whether tasks can still be started."""
        return self._tg is not None

    def cancel(self) -> None:
        """Stop every background task; safe from any task, any number of times."""
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    task_status.started()
                    await anyio.sleep_forever()
            finally:
                self._tg = None


@asynccontextmanager
async def hosted_tasks(name: str) -> AsyncGenerator[TaskHost, None]:
    """Own background tasks the anyio way, without putting the caller in their scope.

    The caller's block runs in an outer group whose only child is the host task; the
    background tasks run in the host's group, under the host's own cancel scope. So
    :meth:`TaskHost.cancel` may be called from any task and never cancels the caller,
    and an exception from the caller's block comes out as itself (the group would wrap
    it in an ``ExceptionGroup``): it is taken out before the group exits and raised
    again after. Leaving the block stops the tasks.
    """
    host = TaskHost()
    error: BaseException | None = None
    async with anyio.create_task_group() as outer:
        await outer.start(host._run, name=name)
        try:
            yield host
        except BaseException as exc:  # noqa: BLE001 - re-raised below, unwrapped
            error = exc
        finally:
            host.cancel()
    if error is not None:
        raise error
