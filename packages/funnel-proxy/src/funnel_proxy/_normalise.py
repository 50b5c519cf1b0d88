"""Normalising a config document: every accepted shape folded into the model's own shape.

The file may say the same thing several ways (see :mod:`funnel_proxy._config`): servers as
a record, an array or ``mcpServers``; a server in the original's legacy form
(``command``/``args``/``env`` at its root), its extended form (``transport``) or the
Claude/VS Code form (``type``/``url``/``headers``); transport type aliases; the secret
providers' ``{"type", "config": {...}}`` form; ``envFile``; ``timeout`` in milliseconds.
This module folds each into the one shape :class:`~funnel_proxy.FunnelConfig` decodes
from (camelCase keys, servers as a list with ``name``, a tagged ``transport``), checking
keys as it goes, so an unknown key is reported at its exact JSON path with a "did you
mean" hint.

Values are left as written: ``${VAR}`` is resolved afterwards, and types are checked by
the one ``msgspec.convert`` at the end. Every normalised location remembers where it came
from (:class:`Origin`), so an error found later still names the user's file and path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from funnel_auth import (
    BearerAuth,
    NoAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    OAuth2EnterpriseManaged,
    OAuth2JwtBearer,
)
from funnel_proxy._config_text import describe, did_you_mean, join, one_of
from funnel_proxy._errors import ConfigError
from funnel_proxy._jsonc import Document
from funnel_proxy._models import AutoReconnect, RateLimit, ReconnectPolicy
from funnel_proxy._names import server_name_problem, suggest_server_name
from funnel_proxy._secrets import DotenvProvider, InlineProvider, ProcessProvider

__all__ = [
    "AUTH_TYPES",
    "ENV_NAME_CHARS",
    "TOP_KEYS",
    "Layer",
    "Normaliser",
    "Origin",
    "ServerTree",
]

#: Top-level keys funnel acts on (``mcpServers`` folds into ``servers``).
TOP_KEYS: Final = (
    "servers",
    "hideTools",
    "exposeTools",
    "alwaysVisibleTools",
    "exposeCoreTools",
    "toolsets",
    "autoReconnect",
    "defaultPassthroughEnv",
    "defaultSecretProviders",
    "rateLimits",
)
_IGNORED_TOP_KEYS: Final = {
    "$schema": None,
    "commands": "command plugins are Node-specific",
    "developmentTools": "command plugins are Node-specific",
    "registries": "registry search is not implemented",
    "registrySettings": "registry search is not implemented",
    "allowShortToolNames": "tools are always called by their full name",
    "enableDynamicDiscovery": "the original ignored it too",
    "inputs": "VS Code inputs cannot be prompted for; ${input:...} references are errors",
}
_SERVER_KEYS: Final = {
    "name",
    "command",
    "args",
    "env",
    "cwd",
    "envFile",
    "type",
    "url",
    "headers",
    "transport",
    "auth",
    "secretProviders",
    "disabled",
    "prefix",
}
_IGNORED_SERVER_KEYS: Final = {"dev": "VS Code development mode", "gallery": "VS Code metadata"}
_TRANSPORT_TYPES: Final = ("stdio", "streamable-http", "sse", "websocket")
_TRANSPORT_ALIASES: Final = {
    "http": "streamable-http",
    "streamableHttp": "streamable-http",
    "ws": "websocket",
}
_TRANSPORT_KEYS: Final = {
    "stdio": {"type", "command", "args", "env", "cwd"},
    "streamable-http": {"type", "url", "headers", "timeout", "reconnect", "sessionId"},
    "sse": {"type", "url", "headers", "timeout", "reconnect"},
    "websocket": {"type", "url", "headers", "timeout", "reconnect"},
}
_RECONNECT_DEFAULTS: Final = {
    "maxAttempts": 3,
    "initialDelayMs": 1000,
    "maxDelayMs": 30000,
    "backoffMultiplier": 1.5,
}
#: ``auth.type`` → its model.
AUTH_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    "none": NoAuth,
    "bearer": BearerAuth,
    "oauth2-client": OAuth2ClientCredentials,
    "oauth2-code": OAuth2AuthorizationCode,
    "oauth2-enterprise": OAuth2EnterpriseManaged,
    "oauth2-jwt-bearer": OAuth2JwtBearer,
}
_AUTH_ALIASES: Final = {"tokenUrl", "authUrl", "scopes"}
_PROVIDER_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    "dotenv": DotenvProvider,
    "process": ProcessProvider,
    "inline": InlineProvider,
}
#: Characters of an environment variable name in ``env`` and ``defaultPassthroughEnv``.
ENV_NAME_CHARS: Final = r"[A-Za-z_][A-Za-z0-9_.()*-]*"


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a normalised value was written: its JSON path and file."""

    path: str
    file: str | None


@dataclass
class ServerTree:
    """One server, normalised but not interpolated.

    Attributes:
        name: The server's name.
        data: ``transport`` (tagged), ``auth``, ``disabled``, raw values.
        providers: The raw secret provider objects (flattened), each with its origin.
        origin: The server's own path (``$.servers.github``).
        where: Normalised relative path (``.transport.url``) → where it was written.
        document: The file it is in.
        disabled_only: The entry is only ``{"disabled": ...}``: it switches a server of
            the user file on or off instead of replacing it.
    """

    name: str
    data: dict[str, Any]
    providers: list[tuple[dict[str, Any], Origin]]
    origin: Origin
    where: dict[str, Origin]
    document: Document
    disabled_only: bool = False


@dataclass
class Layer:
    """One document, normalised: its top-level values and servers.

    Attributes:
        values: Top-level key (camelCase) → raw value; secret providers flattened.
        origins: Top-level key → where it was written.
        provider_origins: Origins of the ``defaultSecretProviders`` entries.
        servers: The servers, in the document's order.
        document: The document.
    """

    document: Document
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    provider_origins: list[Origin] = field(default_factory=list)
    servers: list[ServerTree] = field(default_factory=list)


class Normaliser:
    """Folds one document into a :class:`Layer`; collects warnings for ignored keys."""

    def __init__(self, document: Document, warnings: list[str]) -> None:
        self.document = document
        self.file = document.display
        self.warnings = warnings

    # -- helpers ---------------------------------------------------------------------

    def error(self, message: str, path: str, hint: str | None = None) -> ConfigError:
        """A :class:`ConfigError` at ``path`` of this document."""
        return ConfigError(message, path=path, file=self.file, hint=hint)

    def warn(self, message: str, path: str) -> None:
        """Record a warning at ``path`` of this document."""
        self.warnings.append(f"{self.file}: {path}: {message}")

    def origin(self, path: str) -> Origin:
        """``path`` in this document."""
        return Origin(path, self.file)

    def expect_object(self, value: object, path: str) -> Mapping[str, Any]:
        """``value`` if it is a JSON object, else an error."""
        if not isinstance(value, Mapping):
            raise self.error(f"expected an object, got {describe(value)}", path)
        return value

    def prefix(self, value: object, path: str) -> str:
        """A server's ``prefix``: ``""``, or a valid server name."""
        prefix = self.string(value, path)
        problem = server_name_problem(prefix) if prefix else None
        if problem is not None:
            raise self.error(
                f'invalid prefix "{prefix}": {problem.replace("server name", "prefix")}',
                path,
                f'try "{suggest_server_name(prefix)}", or "" for the backend\'s own names',
            )
        return prefix

    def string(self, value: object, path: str) -> str:
        """``value`` if it is a string, else an error."""
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {describe(value)}", path)
        return value

    def check_keys(
        self,
        obj: Mapping[str, Any],
        allowed: Iterable[str],
        path: str,
        *,
        ignored: Mapping[str, str | None] | None = None,
    ) -> None:
        """Refuse a key not in ``allowed`` (with a hint); warn about ``ignored`` ones."""
        allowed = set(allowed)
        for key in obj:
            if key in allowed:
                continue
            if ignored is not None and key in ignored:
                reason = ignored[key]
                if reason is not None:
                    self.warn(f'"{key}" is accepted but ignored ({reason})', join(path, key))
                continue
            hint = did_you_mean(key, [*allowed, *(ignored or ())])
            if hint is None:
                hint = "expected one of: " + ", ".join(sorted(allowed))
            raise self.error(f'unknown key "{key}"', join(path, key), hint)

    # -- the document ----------------------------------------------------------------

    def layer(self) -> Layer:
        """The whole document, normalised."""
        data = self.document.data
        self.check_keys(data, {*TOP_KEYS, "mcpServers"}, "$", ignored=_IGNORED_TOP_KEYS)
        layer = Layer(document=self.document)
        for key in TOP_KEYS:
            if key == "servers" or data.get(key) is None:
                continue
            path = join("$", key)
            value = data[key]
            if key == "autoReconnect":
                self.check_keys(self.expect_object(value, path), _fields(AutoReconnect), path)
            elif key == "rateLimits":
                value = self.rate_limits(value, path)
            elif key == "defaultSecretProviders":
                providers = self.providers(value, path)
                value = [provider for provider, _ in providers]
                layer.provider_origins = [where for _, where in providers]
            layer.values[key] = value
            layer.origins[key] = self.origin(path)
        layer.servers = [self.server(*raw) for raw in self.collect_servers()]
        return layer

    def rate_limits(self, value: object, path: str) -> dict[str, Any]:
        """``rateLimits``: only ``tools``, an object of pattern → limit objects."""
        obj = self.expect_object(value, path)
        self.check_keys(obj, {"tools"}, path)
        tools_path = join(path, "tools")
        tools = self.expect_object(obj.get("tools", {}), tools_path)
        for pattern, item in tools.items():
            item_path = join(tools_path, pattern)
            self.check_keys(self.expect_object(item, item_path), _fields(RateLimit), item_path)
        return {"tools": dict(tools)}

    def providers(self, value: object, path: str) -> list[tuple[dict[str, Any], Origin]]:
        """A list of secret providers, each flattened to ``{"type", options...}``."""
        if not isinstance(value, list):
            raise self.error(f"expected an array of secret providers, got {describe(value)}", path)
        return [self.provider(item, join(path, i)) for i, item in enumerate(value)]

    def provider(self, value: object, path: str) -> tuple[dict[str, Any], Origin]:
        """One secret provider, in either form, as ``{"type", options...}``."""
        obj = self.expect_object(value, path)
        kind = obj.get("type")
        if kind is None:
            raise self.error('missing required key "type"', path, one_of("", _PROVIDER_TYPES))
        kind = self.string(kind, join(path, "type"))
        if kind not in _PROVIDER_TYPES:
            raise self.error(
                f'unknown secret provider type "{kind}"',
                join(path, "type"),
                one_of(kind, _PROVIDER_TYPES),
            )
        if "config" in obj:
            # The original's form: {"type": ..., "config": {...}}.
            self.check_keys(obj, {"type", "config", "name"}, path)
            options_path = join(path, "config")
            options = self.expect_object(obj["config"], options_path)
        else:
            options_path = path
            options = {key: item for key, item in obj.items() if key not in ("type", "name")}
        self.check_keys(options, _fields(_PROVIDER_TYPES[kind]) - {"type"}, options_path)
        return {**options, "type": kind}, self.origin(options_path)

    # -- servers ---------------------------------------------------------------------

    def collect_servers(self) -> list[tuple[str, Any, str]]:
        """``(name, entry, path)`` of every server, from ``servers`` and ``mcpServers``."""
        found: dict[str, str] = {}
        result: list[tuple[str, Any, str]] = []
        for key in ("servers", "mcpServers"):
            value = self.document.data.get(key)
            if value is None:
                continue
            base = join("$", key)
            items: list[tuple[str, Any, str]] = []
            if isinstance(value, Mapping):
                for name, entry in value.items():
                    path = join(base, name)
                    if isinstance(entry, Mapping) and "name" in entry and entry["name"] != name:
                        raise self.error(
                            f'"name" differs from the key "{name}"',
                            join(path, "name"),
                            'in a record the key is the name; drop "name"',
                        )
                    items.append((name, entry, path))
            elif isinstance(value, list):
                for i, entry in enumerate(value):
                    path = join(base, i)
                    obj = self.expect_object(entry, path)
                    if "name" not in obj:
                        raise self.error('missing required key "name"', path)
                    items.append((self.string(obj["name"], join(path, "name")), entry, path))
            else:
                raise self.error(
                    f"expected an object (name → server) or an array of servers, got {describe(value)}",
                    base,
                )
            for name, entry, path in items:
                problem = server_name_problem(name)
                if problem is not None:
                    raise self.error(
                        f'invalid server name "{name}": {problem}',
                        path,
                        f'try "{suggest_server_name(name)}"',
                    )
                if name in found:
                    raise self.error(
                        f'duplicate server name "{name}" (also at {found[name]})', path
                    )
                found[name] = path
                result.append((name, entry, path))
        return result

    def server(self, name: str, raw: object, path: str) -> ServerTree:
        """One server entry in the model's shape (values not yet interpolated)."""
        entry = self.expect_object(raw, path)
        self.check_keys(entry, _SERVER_KEYS, path, ignored=_IGNORED_SERVER_KEYS)
        tree = ServerTree(
            name=name,
            data={},
            providers=[],
            origin=self.origin(path),
            where={},
            document=self.document,
        )
        if "disabled" in entry:
            tree.data["disabled"] = entry["disabled"]
            tree.where[".disabled"] = self.origin(join(path, "disabled"))
        if set(entry) <= {"name", "disabled"} and "disabled" in entry:
            tree.disabled_only = True
            return tree
        if "prefix" in entry:
            tree.data["prefix"] = self.prefix(entry["prefix"], join(path, "prefix"))
        if entry.get("secretProviders") is not None:
            tree.providers = self.providers(entry["secretProviders"], join(path, "secretProviders"))
        if entry.get("envFile") is not None:
            # A dotenv provider after the others (so it wins); its path is a string.
            env_file_path = join(path, "envFile")
            tree.providers.append(
                ({"type": "dotenv", "path": entry["envFile"]}, self.origin(env_file_path))
            )
        transport, where = self.transport(entry, path)
        tree.data["transport"] = transport
        tree.where.update(where)
        if entry.get("auth") is not None:
            auth_path = join(path, "auth")
            if transport["type"] == "stdio":
                raise self.error(
                    "auth applies to HTTP transports only",
                    auth_path,
                    "stdio servers get credentials through env or secretProviders",
                )
            tree.data["auth"] = self.auth(entry["auth"], auth_path)
            tree.where[".auth"] = self.origin(auth_path)
        return tree

    def transport(
        self, values: Mapping[str, Any], path: str
    ) -> tuple[dict[str, Any], dict[str, Origin]]:
        """The tagged ``transport`` of a server entry, and where each field was written."""
        shorthand = [key for key in ("type", "url", "headers") if key in values]
        raw = values.get("transport")
        if raw is not None:
            t_path = join(path, "transport")
            spec = self.expect_object(raw, t_path)
            if shorthand:
                raise self.error(
                    f'"{shorthand[0]}" next to "transport"',
                    join(path, shorthand[0]),
                    'move it into "transport"',
                )
            if "type" not in spec:
                raise self.error(
                    'missing required key "type"', t_path, one_of("", _TRANSPORT_TYPES)
                )
            kind = self.transport_type(spec["type"], join(t_path, "type"))
            self.check_keys(spec, _TRANSPORT_KEYS[kind], t_path)
            where = dict.fromkeys(spec, t_path)
            merged = {key: item for key, item in spec.items() if key != "type"}
        else:
            t_path = path
            if "type" in values:
                kind = self.transport_type(values["type"], join(path, "type"))
            elif "url" in values:
                kind = "streamable-http"
            elif "command" in values:
                kind = "stdio"
            else:
                raise self.error(
                    'a server needs "command" (a local process) or "url" / "transport"',
                    path,
                )
            merged = {}
            where = {}
        # Root-level fields fill in what the transport does not say (the original falls
        # back to root command/args for a stdio transport; env layers merge).
        root_fields = {"command", "args", "env", "cwd"} if kind == "stdio" else {"url", "headers"}
        for key in ("command", "args", "env", "cwd", "url", "headers"):
            if key not in values:
                continue
            if key not in root_fields:
                raise self.error(
                    f'"{key}" does not apply to a "{kind}" server',
                    join(path, key),
                    "remove it, or fix the transport type",
                )
            if key == "env" and "env" in merged:
                root_env = self.expect_object(values["env"], join(path, "env"))
                t_env = self.expect_object(merged["env"], join(t_path, "env"))
                merged["env"] = {**root_env, **t_env}
            elif key not in merged:
                merged[key] = values[key]
                where[key] = path
        origins = {
            f".transport.{key}": self.origin(join(where.get(key, t_path), key)) for key in merged
        }
        origins[".transport"] = self.origin(t_path)
        if kind == "stdio":
            if "command" not in merged:
                raise self.error('missing required key "command"', t_path)
            return {"type": "stdio", **merged}, origins
        if "url" not in merged:
            raise self.error('missing required key "url"', t_path)
        return self.remote(kind, merged, t_path), origins

    def remote(self, kind: str, merged: dict[str, Any], t_path: str) -> dict[str, Any]:
        """An HTTP-based transport: milliseconds to seconds, keys that would do nothing refused."""
        if "sessionId" in merged:
            raise self.error(
                '"sessionId" is not supported',
                join(t_path, "sessionId"),
                "remove it: funnel starts its own session on every connection and "
                "resumes it by itself",
            )
        timeout = merged.get("timeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            if timeout <= 0:
                raise self.error("expected a number > 0 (milliseconds)", join(t_path, "timeout"))
            merged["timeout"] = timeout / 1000  # the file says milliseconds
        if merged.get("reconnect") is not None:
            r_path = join(t_path, "reconnect")
            if kind != "streamable-http":
                raise self.error(
                    f'"reconnect" is not supported for a "{kind}" transport',
                    r_path,
                    'remove it: funnel reconnects the whole backend as the top-level "autoReconnect" says',
                )
            obj = self.expect_object(merged["reconnect"], r_path)
            self.check_keys(obj, _fields(ReconnectPolicy), r_path)
            merged["reconnect"] = {**_RECONNECT_DEFAULTS, **obj}
        elif "reconnect" in merged:
            del merged["reconnect"]
        return {"type": kind, **merged}

    def transport_type(self, value: object, path: str) -> str:
        """A transport ``type``, aliases resolved."""
        kind = self.string(value, path)
        kind = _TRANSPORT_ALIASES.get(kind, kind)
        if kind not in _TRANSPORT_TYPES:
            raise self.error(
                f'unknown transport type "{kind}"',
                path,
                one_of(kind, [*_TRANSPORT_TYPES, *_TRANSPORT_ALIASES]),
            )
        return kind

    def auth(self, value: object, path: str) -> dict[str, Any]:
        """An ``auth`` object: type known, keys checked (aliases folded later)."""
        obj = self.expect_object(value, path)
        if "type" not in obj:
            raise self.error('missing required key "type"', path, one_of("", AUTH_TYPES))
        kind = self.string(obj["type"], join(path, "type"))
        if kind not in AUTH_TYPES:
            raise self.error(
                f'unknown auth type "{kind}"', join(path, "type"), one_of(kind, AUTH_TYPES)
            )
        self.check_keys(obj, _fields(AUTH_TYPES[kind]) | {"type"} | _AUTH_ALIASES, path)
        return dict(obj)
