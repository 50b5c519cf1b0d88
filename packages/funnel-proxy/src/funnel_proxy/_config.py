"""Loading ``.mcp-funnel.json``: lookup, merge, ``${VAR}``, validation with exact paths.

Theory of operation. A config goes read → normalise → merge → interpolate → check →
one ``msgspec.convert`` into :class:`FunnelConfig`, each step with its own errors, every
error naming the file, the JSON path the user wrote and a fix:

1. **Read** (:mod:`._jsonc`). JSON, with ``//`` and ``/* */`` comments and trailing
   commas tolerated (VS Code's ``mcp.json`` and the original's example file have them).
   Errors carry line and column; a key repeated in one object is an error.
2. **Normalise** (:mod:`._normalise`). Servers come as a record (``name → entry``), an
   array of entries with ``name``, or the ``mcpServers`` record of Claude/Cursor files;
   entries in the original's legacy form (``command``/``args``/``env``), its extended
   form (``transport``), or the Claude/VS Code form (``type``/``url``/``headers``). All
   are folded into the model's own shape, keys checked on the way (an unknown key is
   reported at its exact path with a "did you mean" hint), each value remembering where
   it was written. Keys that are parsed but would do nothing are refused
   (``sessionId``; ``reconnect`` of an ``sse`` or ``websocket`` transport).
3. **Merge.** The project file (``--config PATH`` or ``./.mcp-funnel.json``) over the
   user file (``$MCP_FUNNEL_HOME/.mcp-funnel.json``, default ``~/.mcp-funnel``).
   Unlike the original, which let a project's ``servers`` replace the user's wholesale,
   servers merge **by name**: a project entry replaces the user entry of that name
   (whole, never field by field), the user's other servers stay, and a project entry
   that is only ``{"disabled": true}`` switches a user server off. ``toolsets`` and
   ``rateLimits.tools`` merge by name the same way; every other key (lists included)
   is replaced as a whole by the project's value.
4. **Interpolate** (:mod:`._interpolate`). ``${VAR}`` in every string value. Top-level
   values see the process environment. A server's values also see its secrets (the
   default secret providers, then its own, winning over the process environment), so
   ``"token": "${GITHUB_TOKEN}"`` works with the token in a ``.env`` file. Stdio
   ``env`` values stay templates (resolved again when the process starts, see
   :func:`build_server_env`), but a variable they need that is missing now is an
   error now. A disabled server's missing variables are left as written instead of
   failing the whole config.
5. **Check** what a type cannot say: URL schemes (WebSocket URLs rewritten to
   ``ws``/``wss``), header and variable names, tool patterns, core tool names, a
   ``process`` provider without a prefix or allowlist; relative paths resolved.
6. **Convert**: one ``msgspec.convert`` of the whole tree into :class:`FunnelConfig`.
   msgspec's error path (``$.servers[0].transport.args[1]``) is mapped back to the
   path the user wrote (``$.servers.github.args[1]``) through the origins recorded in
   step 2. Then the cross checks on the typed config (``maxDelayMs >=
   initialDelayMs``, an empty bearer token; patterns naming no server are warnings).

Keys the original accepts but funnel does not act on (``commands``, ``registries``, …)
load with one WARNING each, so existing configs keep working.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from funnel_auth import BearerAuth, config_dec_hook, normalize_auth
from funnel_proxy._config_text import describe, did_you_mean, join, one_of, translate
from funnel_proxy._errors import ConfigError, ConfigNotFound
from funnel_proxy._interpolate import interpolate, references
from funnel_proxy._jsonc import Document
from funnel_proxy._models import FunnelConfig, RateLimit, StreamableHttpTransportConfig
from funnel_proxy._names import CORE_TOOL_NAMES
from funnel_proxy._normalise import ENV_NAME_CHARS, Layer, Normaliser, Origin, ServerTree
from funnel_proxy._secrets import DotenvProvider, ProcessProvider, SecretProvider, resolve_secrets
from funnel_tokenstore import funnel_home

__all__ = [
    "CONFIG_FILE_NAME",
    "LoadedConfig",
    "load_config",
    "parse_config",
    "user_config_path",
]

logger = logging.getLogger(__name__)

CONFIG_FILE_NAME: Final = ".mcp-funnel.json"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A loaded configuration and where it came from.

    Attributes:
        config: The merged, validated configuration.
        sources: The files read, user file first (never empty: with no file at all,
            :func:`load_config` raises :class:`ConfigNotFound`).
        base_dir: The directory of the project config (the current directory when only
            the user file exists); relative paths not tied to a file resolve here.
        warnings: What was accepted but ignored, one line each (already logged).
    """

    config: FunnelConfig
    sources: tuple[Path, ...]
    base_dir: Path
    warnings: tuple[str, ...] = ()


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user base config: ``$MCP_FUNNEL_HOME/.mcp-funnel.json``.

    ``MCP_FUNNEL_HOME`` when set and not blank (``~`` expanded), else ``~/.mcp-funnel``
    (:func:`funnel_tokenstore.funnel_home`).
    """
    return funnel_home(env=environ) / CONFIG_FILE_NAME


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Find, read, merge and validate the configuration.

    Args:
        path: The project config (``--config``), relative to ``cwd``; when omitted,
            ``./.mcp-funnel.json`` if it exists.
        cwd: The directory to look in; the process's current directory when omitted.
        environ: The environment for ``${VAR}``, ``MCP_FUNNEL_HOME`` and secret
            providers; ``os.environ`` when omitted.

    Raises:
        ConfigNotFound: No ``path`` was given and neither the project nor the user
            config exists (funnel-server then runs its demo config).
        ConfigError: A file cannot be read or is invalid; ``path`` given but missing.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    user_path = user_config_path(env)
    if path is not None:
        named = here / Path(path).expanduser()
        if not named.is_file():
            raise ConfigError(
                "config file not found" if not named.exists() else "not a file",
                file=_display(named, here),
            )
        project_path: Path | None = named
    else:
        candidate = here / CONFIG_FILE_NAME
        project_path = candidate if candidate.is_file() else None
    files: list[Path] = []
    if user_path.is_file() and (
        project_path is None or _same_file(user_path, project_path) is False
    ):
        files.append(user_path)
    if project_path is not None:
        files.append(project_path)
    if not files:
        raise ConfigNotFound(
            "no config found",
            file=_display(here / CONFIG_FILE_NAME, here),
            hint=f"create it, or {user_path}, or pass --config PATH",
        )
    base_dir = project_path.parent if project_path is not None else here
    documents = [
        Document.read(file, display=_display(file, here), base_dir=file.parent) for file in files
    ]
    builder = _Builder(env)
    config = builder.build(documents)
    for warning in builder.warnings:
        logger.warning("%s", warning)
    return LoadedConfig(
        config=config,
        sources=tuple(files),
        base_dir=base_dir.resolve(),
        warnings=tuple(builder.warnings),
    )


def parse_config(
    data: bytes | str | Mapping[str, Any],
    *,
    source: str = "<config>",
    environ: Mapping[str, str],
    base_dir: Path | None = None,
) -> FunnelConfig:
    """Validate one in-memory config (no lookup, no merge).

    Args:
        data: JSON text (comments allowed) or an already decoded object.
        source: The name errors show as the file.
        environ: The environment for ``${VAR}`` and secret providers.
        base_dir: What relative dotenv paths and ``cwd`` resolve against; they stay
            relative when omitted.

    Raises:
        ConfigError: The config is invalid.
    """
    if isinstance(data, (bytes, str)):
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text ({exc.reason})", file=source) from None
        document = Document.from_text(text, display=source, base_dir=base_dir)
    else:
        document = Document.from_object(data, display=source, base_dir=base_dir)
    builder = _Builder(environ)
    config = builder.build([document])
    for warning in builder.warnings:
        logger.warning("%s", warning)
    return config


# ----------------------------------------------------------------------------- helpers


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


_PATTERN_KEYS: Final = ("hideTools", "exposeTools", "alwaysVisibleTools", "exposeCoreTools")
_UNAVAILABLE_CORE_TOOLS: Final = {
    "manage_commands",
    "search_registry_tools",
    "get_server_install_info",
}
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME: Final = re.compile(ENV_NAME_CHARS)
_SEGMENT: Final = re.compile(r"\.[^.\[]+|\[[^\]]*\]")
_FIELD_NAMES: Final = {
    "hideTools": "hide_tools",
    "exposeTools": "expose_tools",
    "alwaysVisibleTools": "always_visible_tools",
}

Lookup = Callable[[str], "str | None"]


# ----------------------------------------------------------------------------- the pipeline


class _Builder:
    """Normalise → merge → interpolate → check → one convert (see the module docs)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.warnings: list[str] = []
        # Path in the converted tree ($.servers[0].transport.url) → where it was written.
        self.origins: dict[str, Origin] = {}
        # Toolsets merge by name across files: each remembers its own file.
        self.toolset_origins: dict[str, Origin] = {}

    # -- errors ------------------------------------------------------------------------

    @staticmethod
    def error(origin: Origin, message: str, hint: str | None = None, rest: str = "") -> ConfigError:
        return ConfigError(message, path=origin.path + rest, file=origin.file, hint=hint)

    def locate(self, path: str) -> tuple[Origin, str]:
        """The origin of the longest recorded prefix of ``path``, and the rest of it."""
        segments = _SEGMENT.findall(path.removeprefix("$"))
        for n in range(len(segments), -1, -1):
            origin = self.origins.get("$" + "".join(segments[:n]))
            if origin is not None:
                return origin, "".join(segments[n:])
        return Origin("$", None), path.removeprefix("$")

    def convert(self, tree: object, type_: Any, origin: Origin | None = None) -> Any:
        """``msgspec.convert``, its error mapped to the user's file and path."""
        try:
            return msgspec.convert(tree, type_, strict=True, dec_hook=config_dec_hook)
        except msgspec.ValidationError as exc:
            message, rel, hint = translate(str(exc))
            if origin is None:
                origin, rest = self.locate("$" + rel)
            else:
                rest = rel
            raise self.error(origin, message, hint, rest) from None

    # -- small checks ------------------------------------------------------------------

    def interp(
        self, value: Any, origin: Origin, lookup: Lookup, *, keep_missing: bool = False
    ) -> Any:
        """``${VAR}`` resolved in every string of ``value`` (a JSON tree)."""
        if isinstance(value, str):
            return interpolate(
                value, lookup, path=origin.path, file=origin.file, keep_missing=keep_missing
            )
        if isinstance(value, Mapping):
            return {
                key: self.interp(
                    item,
                    Origin(join(origin.path, key), origin.file),
                    lookup,
                    keep_missing=keep_missing,
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self.interp(
                    item,
                    Origin(join(origin.path, i), origin.file),
                    lookup,
                    keep_missing=keep_missing,
                )
                for i, item in enumerate(value)
            ]
        return value

    def expect_object(self, value: object, origin: Origin) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(origin, f"expected an object, got {describe(value)}")
        return value

    def string(self, value: object, origin: Origin, *, non_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(origin, f"expected a string, got {describe(value)}")
        if non_empty and not value.strip():
            raise self.error(origin, "must not be empty")
        return value

    def strings(self, value: object, origin: Origin) -> list[str]:
        if not isinstance(value, list):
            raise self.error(origin, f"expected an array of strings, got {describe(value)}")
        return [
            self.string(item, Origin(join(origin.path, i), origin.file))
            for i, item in enumerate(value)
        ]

    def string_map(self, value: object, origin: Origin) -> dict[str, str]:
        obj = self.expect_object(value, origin)
        return {
            key: self.string(item, Origin(join(origin.path, key), origin.file))
            for key, item in obj.items()
        }

    def patterns(self, value: object, origin: Origin) -> list[str]:
        patterns = self.strings(value, origin)
        for i, pattern in enumerate(patterns):
            at = Origin(join(origin.path, i), origin.file)
            if not pattern:
                raise self.error(at, "empty pattern", 'use "*" to match every tool')
            if any(char.isspace() for char in pattern):
                raise self.error(
                    at, f'invalid pattern "{pattern}": tool names never contain whitespace'
                )
        return patterns

    def check_core_patterns(self, patterns: list[str], origin: Origin) -> None:
        from funnel_proxy._patterns import PatternSet

        for i, pattern in enumerate(patterns):
            at = Origin(join(origin.path, i), origin.file)
            if any(PatternSet([pattern]).matches(name) for name in CORE_TOOL_NAMES):
                continue
            if pattern in _UNAVAILABLE_CORE_TOOLS:
                self.warn(at, f'core tool "{pattern}" is not available in funnel')
                continue
            raise self.error(
                at, f'pattern "{pattern}" matches no core tool', one_of(pattern, CORE_TOOL_NAMES)
            )

    def warn(self, origin: Origin, message: str) -> None:
        where = f"{origin.file}: {origin.path}" if origin.file else origin.path
        self.warnings.append(f"{where}: {message}")

    def check_delays(self, initial: float, maximum: float, origin: Origin) -> None:
        if maximum < initial:
            raise self.error(
                origin,
                f"maxDelayMs ({maximum:g}) must be >= initialDelayMs ({initial:g})",
                rest=".maxDelayMs",
            )

    # -- the whole config --------------------------------------------------------------

    def build(self, documents: list[Document]) -> FunnelConfig:
        layers = [Normaliser(document, self.warnings).layer() for document in documents]
        values, origins, defaults = self.merge_top(layers)
        trees, order = self.merge_servers(layers)
        top: dict[str, Any] = {}
        for key, value in values.items():
            top[key] = self.top_value(key, value, origins[key], defaults)
        tree: dict[str, Any] = {**top, "servers": []}
        for key, origin in origins.items():
            self.origins[join("$", key)] = origin
        providers: tuple[SecretProvider, ...] = tuple(top.get("defaultSecretProviders", ()))
        for i, name in enumerate(order):
            server = trees[name]
            base = f"$.servers[{i}]"
            self.origins[base] = server.origin
            for rel, origin in server.where.items():
                self.origins[base + rel] = origin
            tree["servers"].append(self.server(server, providers))
        config: FunnelConfig = self.convert(tree, FunnelConfig)
        self.after(config, origins)
        return config

    def merge_top(
        self, layers: list[Layer]
    ) -> tuple[dict[str, Any], dict[str, Origin], tuple[Layer | None, list[Origin]]]:
        values: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        defaults: tuple[Layer | None, list[Origin]] = (None, [])
        for layer in layers:
            for key, value in layer.values.items():
                previous = values.get(key)
                merged = value
                if key == "toolsets" and isinstance(value, Mapping):
                    for name in value:
                        self.toolset_origins[name] = Origin(
                            join(layer.origins[key].path, name), layer.origins[key].file
                        )
                    if isinstance(previous, Mapping):
                        merged = {**previous, **value}
                elif key == "rateLimits" and previous is not None:
                    merged = {"tools": {**previous["tools"], **value["tools"]}}
                values[key] = merged
                origins[key] = layer.origins[key]
            if "defaultSecretProviders" in layer.values:
                defaults = (layer, layer.provider_origins)
        return values, origins, defaults

    def merge_servers(self, layers: list[Layer]) -> tuple[dict[str, ServerTree], list[str]]:
        trees: dict[str, ServerTree] = {}
        names_by_layer: list[list[str]] = []
        for layer in layers:
            names: list[str] = []
            for entry in layer.servers:
                inherited = trees.get(entry.name)
                server = entry
                if entry.disabled_only:
                    if inherited is None:
                        raise self.error(
                            entry.origin,
                            'a server needs "command" (a local process) or "url" / "transport"',
                        )
                    # {"disabled": true} in the project switches off the user's server.
                    server = ServerTree(
                        name=inherited.name,
                        data={**inherited.data, "disabled": entry.data["disabled"]},
                        providers=inherited.providers,
                        origin=inherited.origin,
                        where={**inherited.where, ".disabled": entry.where[".disabled"]},
                        document=inherited.document,
                    )
                trees[server.name] = server
                names.append(server.name)
            names_by_layer.append(names)
        # The project's servers first, in its order; then the user's others.
        project = names_by_layer[-1] if names_by_layer else []
        order = list(dict.fromkeys([*project, *(n for names in names_by_layer for n in names)]))
        return trees, order

    def top_value(
        self, key: str, value: Any, origin: Origin, defaults: tuple[Layer | None, list[Origin]]
    ) -> Any:
        lookup = self.environ.get
        if key in _PATTERN_KEYS:
            patterns = self.patterns(self.interp(value, origin, lookup), origin)
            if key == "exposeCoreTools":
                self.check_core_patterns(patterns, origin)
            return patterns
        if key == "toolsets":
            obj = self.expect_object(self.interp(value, origin, lookup), origin)
            return {
                name: self.patterns(
                    item,
                    self.toolset_origins.get(name, Origin(join(origin.path, name), origin.file)),
                )
                for name, item in obj.items()
            }
        if key == "defaultPassthroughEnv":
            names = self.strings(self.interp(value, origin, lookup), origin)
            for i, name in enumerate(names):
                if _ENV_NAME.fullmatch(name) is None:
                    raise self.error(
                        Origin(join(origin.path, i), origin.file),
                        f'invalid environment variable name "{name}"',
                        'names are letters, digits and "_"; "*" is a wildcard',
                    )
            return names
        if key == "defaultSecretProviders":
            layer, provider_origins = defaults
            if layer is None:  # pragma: no cover - a value always comes from a layer
                return []
            return self.providers(list(zip(value, provider_origins, strict=True)), layer.document)
        if key == "rateLimits":
            # Each limit is converted here: msgspec's error path cannot name a dict key.
            tools_origin = Origin(join(origin.path, "tools"), origin.file)
            limits: dict[str, RateLimit] = {}
            for pattern, item in value["tools"].items():
                at = Origin(join(tools_origin.path, pattern), origin.file)
                self.patterns([pattern], at)
                self.origins[f"$.rateLimits.tools{join('', pattern)}"] = at
                limits[pattern] = self.convert(item, RateLimit, at)
            return {"tools": limits}
        return value  # autoReconnect: its keys were checked, msgspec checks the values

    def providers(
        self, raw: list[tuple[dict[str, Any], Origin]], document: Document
    ) -> list[SecretProvider]:
        result: list[SecretProvider] = []
        for written, origin in raw:
            options = self.interp(written, origin, self.environ.get)
            if options["type"] == "inline" and "values" in options:
                self.string_map(options["values"], Origin(join(origin.path, "values"), origin.file))
            provider: SecretProvider = self.convert(options, SecretProvider, origin)
            if (
                isinstance(provider, ProcessProvider)
                and not provider.prefix
                and not provider.allowlist
            ):
                raise self.error(
                    origin,
                    "a process provider needs a prefix or an allowlist",
                    "without either it would pass funnel's whole environment",
                )
            if isinstance(provider, DotenvProvider):
                at = (
                    origin
                    if origin.path.endswith(".envFile")
                    else Origin(join(origin.path, "path"), origin.file)
                )
                if not provider.path.strip():
                    raise self.error(at, "must not be empty")
                if document.base_dir is not None:
                    resolved = document.base_dir / Path(provider.path).expanduser()
                    provider = DotenvProvider(path=str(resolved), encoding=provider.encoding)
            result.append(provider)
        return result

    # -- servers -------------------------------------------------------------------------

    def server(self, tree: ServerTree, defaults: tuple[SecretProvider, ...]) -> dict[str, Any]:
        disabled = tree.data.get("disabled") is True
        providers = self.providers(tree.providers, tree.document)
        secrets: dict[str, str] | None = None

        def lookup(name: str) -> str | None:
            nonlocal secrets
            if secrets is None:
                secrets = resolve_secrets(
                    (*defaults, *providers),
                    environ=self.environ,
                    base_dir=tree.document.base_dir or Path(),
                )
            found = secrets.get(name)
            return found if found is not None else self.environ.get(name)

        transport_origin = tree.where[".transport"]
        transport: dict[str, Any] = {}
        for key, value in tree.data["transport"].items():
            origin = tree.where.get(f".transport.{key}", transport_origin)
            if key == "type":
                transport[key] = value
            elif key == "env":
                transport[key] = self.env_templates(value, origin, None if disabled else lookup)
            else:
                transport[key] = self.interp(value, origin, lookup, keep_missing=disabled)
        self.check_transport(transport, tree)
        data: dict[str, Any] = {
            "name": tree.name,
            "transport": transport,
            "secretProviders": providers,
            "disabled": tree.data.get("disabled", False),
        }
        if "prefix" in tree.data:
            data["prefix"] = tree.data["prefix"]
        if "auth" in tree.data:
            origin = tree.where[".auth"]
            auth = self.interp(tree.data["auth"], origin, lookup, keep_missing=disabled)
            data["auth"] = self.auth(auth, origin)
        return data

    def env_templates(self, value: object, origin: Origin, lookup: Lookup | None) -> dict[str, str]:
        """A stdio ``env``: checked, and kept as templates (resolved at each start)."""
        env = self.string_map(value, origin)
        for key, item in env.items():
            at = Origin(join(origin.path, key), origin.file)
            if _ENV_NAME.fullmatch(key) is None or "*" in key:
                raise self.error(at, f'invalid environment variable name "{key}"')
            references(item, path=at.path, file=at.file)
            if lookup is not None:
                # Resolved again when the process starts (secrets may change between
                # restarts), but a variable missing now is a mistake to report now.
                interpolate(item, lookup, path=at.path, file=at.file)
        return env

    def check_transport(self, transport: dict[str, Any], tree: ServerTree) -> None:
        def at(key: str) -> Origin:
            return tree.where.get(f".transport.{key}", tree.where[".transport"])

        kind = transport["type"]
        if kind == "stdio":
            self.string(transport["command"], at("command"), non_empty=True)
            if "args" in transport:
                self.strings(transport["args"], at("args"))
            if transport.get("cwd") is not None:
                cwd = self.string(transport["cwd"], at("cwd"), non_empty=True)
                if tree.document.base_dir is not None:
                    transport["cwd"] = str(tree.document.base_dir / Path(cwd).expanduser())
            return
        transport["url"] = self.url(transport["url"], at("url"), kind)
        if "headers" in transport:
            headers = self.string_map(transport["headers"], at("headers"))
            for name, item in headers.items():
                origin = Origin(join(at("headers").path, name), at("headers").file)
                if _HEADER_NAME.fullmatch(name) is None:
                    raise self.error(origin, f'invalid header name "{name}"')
                if any(char in item for char in "\r\n\0"):
                    raise self.error(origin, "a header value must not contain line breaks")

    def url(self, value: object, origin: Origin, kind: str) -> str:
        url = self.string(value, origin, non_empty=True)
        schemes = ("http", "https", "ws", "wss") if kind == "websocket" else ("http", "https")
        try:
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError:
            raise self.error(origin, "invalid URL") from None
        want = " or ".join(f"{scheme}://" for scheme in schemes)
        if parts.scheme.lower() not in schemes:
            shown = (
                f' (scheme "{parts.scheme}")'
                if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", parts.scheme)
                else ""
            )
            raise self.error(origin, f"invalid URL{shown}: expected {want}")
        if not host:
            raise self.error(origin, "invalid URL: no host")
        if kind == "websocket":
            scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
            return urlunsplit(parts._replace(scheme=scheme))
        return url.strip()

    def auth(self, obj: Mapping[str, Any], origin: Origin) -> dict[str, Any]:
        for key, item in obj.items():
            # Every auth field is a string (scopes may also be a list of strings).
            if key != "scopes" and not isinstance(item, str):
                raise self.error(
                    origin, f"expected a string, got {describe(item)}", rest=join("", key)
                )
        if "scopes" in obj:
            scopes_at = Origin(join(origin.path, "scopes"), origin.file)
            if isinstance(obj["scopes"], list):
                self.strings(obj["scopes"], scopes_at)
            elif not isinstance(obj["scopes"], str):
                raise self.error(
                    scopes_at,
                    f"expected a string or an array of strings, got {describe(obj['scopes'])}",
                )
        return normalize_auth(dict(obj))

    # -- after the convert ---------------------------------------------------------------

    def after(self, config: FunnelConfig, origins: Mapping[str, Origin]) -> None:
        if "autoReconnect" in origins:
            policy = config.auto_reconnect
            self.check_delays(
                policy.initial_delay_ms, policy.max_delay_ms, origins["autoReconnect"]
            )
        for i, server in enumerate(config.servers):
            transport = server.transport
            if (
                isinstance(transport, StreamableHttpTransportConfig)
                and transport.reconnect is not None
            ):
                origin, _ = self.locate(f"$.servers[{i}].transport.reconnect")
                policy_r = transport.reconnect
                self.check_delays(policy_r.initial_delay_ms, policy_r.max_delay_ms, origin)
            if isinstance(server.auth, BearerAuth) and not server.auth.token.reveal().strip():
                origin, _ = self.locate(f"$.servers[{i}].auth")
                raise self.error(origin, "the token is empty", rest=".token")
        self.lint_patterns(config, origins)

    def lint_patterns(self, config: FunnelConfig, origins: Mapping[str, Origin]) -> None:
        names = list(dict.fromkeys(p for s in config.servers for p in (s.name, s.namespace) if p))
        if not names:
            return
        items: list[tuple[Origin, str]] = []
        for key, attr in _FIELD_NAMES.items():
            if key in origins:
                origin = origins[key]
                items += [
                    (Origin(join(origin.path, i), origin.file), pattern)
                    for i, pattern in enumerate(getattr(config, attr) or ())
                ]
        for name, patterns in config.toolsets.items():
            origin = self.toolset_origins.get(name, Origin(join("$.toolsets", name), None))
            items += [
                (Origin(join(origin.path, i), origin.file), p) for i, p in enumerate(patterns)
            ]
        for pattern in config.rate_limits.tools:
            origin, _ = self.locate(f"$.rateLimits.tools{join('', pattern)}")
            items.append((origin, pattern))
        for origin, pattern in items:
            prefix, sep, _ = pattern.partition("__")
            if not sep or "*" in prefix or prefix in names:
                continue
            hint = did_you_mean(prefix, names)
            self.warn(
                origin,
                f'pattern "{pattern}" names no configured server "{prefix}"'
                + (f" ({hint})" if hint else ""),
            )
