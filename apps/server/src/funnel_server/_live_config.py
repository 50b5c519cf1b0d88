"""Live config: reload ``.mcp-funnel.json`` when it changes on disk or on SIGHUP.

Theory of operation: :class:`ConfigWatcher` remembers a fingerprint (inode, size,
modification time) of every file the config is made of: the project file (``--config``
or ``./.mcp-funnel.json``) and the user base file (``~/.mcp-funnel/.mcp-funnel.json``),
present or not. A poll task compares them every ``poll_interval`` seconds; a SIGHUP
reloads at once. A reload loads and validates the files again, off the event loop, and
hands the result to :meth:`Funnel.apply_config <funnel_proxy.Funnel.apply_config>`,
which restarts only the servers that changed. An invalid file is rejected with one
clear ``ERROR`` line (file, JSON path, what to fix) and the running config keeps
serving; the next edit is tried again. Reloads never overlap.

Why a stat poll and not inotify (``watchfiles``): it needs no compiled dependency, it
sees editors that replace the file by renaming a new one over it, it works on network
and bind-mounted filesystems where inotify is silent, and it costs two ``stat`` calls a
second. A human edit is picked up within a second; SIGHUP is immediate.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

from funnel_proxy import (
    CONFIG_FILE_NAME,
    ConfigError,
    ConfigNotFound,
    Funnel,
    FunnelConfig,
    ReloadReport,
    load_config,
    user_config_path,
)

__all__ = ["ConfigWatcher", "watching_config"]

logger = logging.getLogger("funnel_server.config")

Fingerprint = tuple[int, int, int] | None
Loader = Callable[[], FunnelConfig]


def fingerprint(path: Path) -> Fingerprint:
    """What changes when ``path`` is written or replaced; ``None`` when it does not exist."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def config_files(path: str | os.PathLike[str] | None, *, cwd: Path | None = None) -> list[Path]:
    """The files a config loaded from ``path`` (``--config``, or none) is made of."""
    here = Path.cwd() if cwd is None else cwd
    project = here / Path(path).expanduser() if path is not None else here / CONFIG_FILE_NAME
    return [project, user_config_path()]


class ConfigWatcher:
    """Reloads a running funnel's config from its files.

    Args:
        funnel: The running funnel.
        files: The files to watch (see :func:`config_files`).
        load: Loads and validates the config again (raises :class:`ConfigError`).
        poll_interval: Seconds between two looks at the files.
    """

    def __init__(
        self, funnel: Funnel, files: list[Path], load: Loader, *, poll_interval: float = 1.0
    ) -> None:
        self._funnel = funnel
        self._files = files
        self._load = load
        self._poll_interval = poll_interval
        self._seen = self._fingerprints()
        self._lock = anyio.Lock()
        self.reloaded = anyio.Event()
        """Set when the next reload has finished (applied or rejected), then replaced."""

    def _fingerprints(self) -> list[Fingerprint]:
        return [fingerprint(path) for path in self._files]

    async def reload(self, why: str) -> ReloadReport | None:
        """Load the files again and apply them; ``None`` when the new config was rejected."""
        async with self._lock:
            try:
                return await self._reload(why)
            finally:
                self.reloaded.set()
                self.reloaded = anyio.Event()

    async def _reload(self, why: str) -> ReloadReport | None:
        self._seen = self._fingerprints()
        try:
            config = await anyio.to_thread.run_sync(self._load)
        except ConfigNotFound:
            logger.error(
                "config not reloaded (%s): no config file any more; still serving the "
                "previous config",
                why,
            )
            return None
        except ConfigError as exc:
            logger.error(
                "config not reloaded (%s): %s; still serving the previous config", why, exc
            )
            return None
        report = await self._funnel.apply_config(config)
        logger.info("config reloaded (%s): %s", why, report.summary())
        return report

    async def poll(self) -> None:
        """Reload whenever a config file changes, until cancelled."""
        while True:
            await anyio.sleep(self._poll_interval)
            if self._fingerprints() != self._seen:
                await self.reload("the config file changed")

    async def on_sighup(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Reload on every SIGHUP, until cancelled (nothing where there is no SIGHUP)."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:  # Windows
            task_status.started()
            await anyio.sleep_forever()
            return
        with anyio.open_signal_receiver(sighup) as signals:
            task_status.started()
            async for _ in signals:
                await self.reload("SIGHUP")


@asynccontextmanager
async def watching_config(
    funnel: Funnel,
    path: str | os.PathLike[str] | None,
    *,
    poll_interval: float = 1.0,
) -> AsyncIterator[ConfigWatcher]:
    """Keep ``funnel`` on the config at ``path`` (``--config``, or ``None``) for the block.

    The files' state when the block is entered is the baseline: an edit after that is
    applied. Leaving the block stops watching (a SIGHUP then gets its default action).
    """

    def load() -> FunnelConfig:
        return load_config(path).config

    watcher = ConfigWatcher(funnel, config_files(path), load, poll_interval=poll_interval)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.poll)
        await tg.start(watcher.on_sighup)
        try:
            yield watcher
        finally:
            tg.cancel_scope.cancel()
