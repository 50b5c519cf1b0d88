"""Errors raised by funnel-proxy.

One root, subclassed by what the caller does about it::

    ProxyError                  anything funnel-proxy raises on purpose
    ├── ConfigError             the configuration is wrong: fix the file (exit 2), never retry
    │   └── ConfigNotFound      no config file anywhere (funnel-server runs its demo config)
    ├── BackendUnavailable      the backend that owns a tool is not connected; its status says
    │                           why and whether waiting helps
    └── ToolNotFound            no exposed tool has that name

A :class:`ConfigError` names where the problem is: the file, a JSON path into it
(``$.servers.github.transport.url``) or a line (``line 3`` of a dotenv file), what is
wrong and, when there is one, a hint. Messages never contain secret values: they quote
keys, variable names and URL schemes, never resolved strings.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "ConfigError", "ConfigNotFound", "ProxyError", "ToolNotFound"]


class ProxyError(Exception):
    """The root of every error funnel-proxy raises on purpose."""


class ConfigError(ProxyError):
    """The configuration is invalid; the message says where and how to fix it.

    ``str()`` reads ``<file>: <path>: <message> (<hint>)``, leaving out the parts that are
    not known, e.g. ``.mcp-funnel.json: $.servers.github.trasport: unknown key "trasport"
    (did you mean "transport"?)``.

    Attributes:
        file: The file the problem is in, as shown to the user; ``None`` for in-memory
            configs without a source name.
        path: A JSON path (``$.servers.github.transport.url``) or, for dotenv files, a
            line (``line 3``); ``""`` when the problem is the whole file.
        message: What is wrong.
        hint: How to fix it, when there is a likely fix.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        file: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.message = message
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [part for part in (self.file, self.path) if part]
        text = ": ".join([*parts, self.message])
        return f"{text} ({self.hint})" if self.hint else text

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor arguments need help to survive pickling (multiprocessing).
        return (_rebuild, (type(self), self.message, self.path, self.file, self.hint))


class ConfigNotFound(ConfigError):
    """Neither a project config nor a user config exists (and none was named)."""


def _rebuild(
    cls: type[ConfigError], message: str, path: str, file: str | None, hint: str | None
) -> ConfigError:
    return cls(message, path=path, file=file, hint=hint)


class BackendUnavailable(ProxyError):
    """The backend a request is meant for is not connected.

    Attributes:
        server: The backend's name.
        status: Its status (``reconnecting``, ``auth_required``, ``failed``, …).
        reason: Its last error, if any.
    """

    def __init__(self, server: str, status: str, reason: str | None = None) -> None:
        self.server = server
        self.status = status
        self.reason = reason or status
        detail = f": {reason}" if reason else ""
        super().__init__(f"server {server!r} is {status}{detail}")


class ToolNotFound(ProxyError):
    """No tool of that name is exposed (or reachable through the bridge)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Tool not found: {name}")
