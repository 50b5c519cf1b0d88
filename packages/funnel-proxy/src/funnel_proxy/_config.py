"""Loading ``.mcp-funnel.json``: lookup, merge, ``${VAR}``, validation with exact paths.

Theory of operation. A config file goes through four steps, each with its own errors:

1. **Read.** JSON, with ``//`` and ``/* */`` comments and trailing commas tolerated
   (VS Code's ``mcp.json`` and the original's example file have them). Errors carry
   line and column; a key repeated in one object is an error.
2. **Shape.** Servers come as a record (``name → entry``), an array of entries with
   ``name``, or the ``mcpServers`` record of Claude/Cursor files; entries come in the
   original's legacy form (``command``/``args``/``env``), its extended form
   (``transport``), or the Claude/VS Code form (``type``/``url``/``headers``). Each is
   folded into one :class:`ServerConfig`, checking keys as it goes, so an unknown key
   is reported at its exact JSON path with a "did you mean" hint.
3. **Interpolate.** ``${VAR}`` in every string value (see :mod:`._interpolate`), before
   the value is checked. Top-level values see the process environment. A server's
   values also see its secrets (the default secret providers, then its own, winning
   over the process environment), so ``"token": "${GITHUB_TOKEN}"`` works with the
   token in a ``.env`` file. Stdio ``env`` values are only syntax-checked here and
   resolved when the process starts (:func:`build_server_env`). A disabled server's
   missing variables are left as written instead of failing the whole config.
4. **Merge.** The project file (``--config PATH`` or ``./.mcp-funnel.json``) over the
   user file (``$MCP_FUNNEL_HOME/.mcp-funnel.json``, default ``~/.mcp-funnel``).
   Unlike the original, which let a project's ``servers`` replace the user's wholesale,
   servers merge **by name**: a project entry replaces the user entry of that name
   (whole, never field by field), the user's other servers stay, and a project entry
   that is only ``{"disabled": true}`` switches a user server off. ``toolsets`` and
   ``rateLimits.tools`` merge by name the same way; every other key (lists included)
   is replaced as a whole by the project's value.

Keys the original accepts but funnel does not act on (``commands``, ``registries``, …)
load with one WARNING each, so existing configs keep working.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from funnel_auth import (
    BearerAuth,
    NoAuth,
    OAuth2AuthorizationCode,
    OAuth2ClientCredentials,
    OAuth2EnterpriseManaged,
    OAuth2JwtBearer,
)
from funnel_auth import decode_auth as _decode_auth
from funnel_proxy._errors import ConfigError, ConfigNotFound
from funnel_proxy._interpolate import interpolate, references
from funnel_proxy._models import (
    AutoReconnect,
    FunnelConfig,
    RateLimit,
    RateLimits,
    ReconnectPolicy,
    ServerConfig,
    SseTransport,
    StdioTransport,
    StreamableHttpTransport,
    Transport,
    WebSocketTransport,
)
from funnel_proxy._names import CORE_TOOL_NAMES, server_name_problem, suggest_server_name
from funnel_proxy._secrets import (
    DotenvProvider,
    InlineProvider,
    ProcessProvider,
    SecretProvider,
    resolve_secrets,
)
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

T = TypeVar("T")


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
        _Document.read(file, display=_display(file, here), base_dir=file.parent) for file in files
    ]
    parser = _Parser(env)
    config = parser.build(documents)
    for warning in parser.warnings:
        logger.warning("%s", warning)
    return LoadedConfig(
        config=config,
        sources=tuple(files),
        base_dir=base_dir.resolve(),
        warnings=tuple(parser.warnings),
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
        document = _Document.from_text(text, display=source, base_dir=base_dir)
    else:
        document = _Document.from_object(data, display=source, base_dir=base_dir)
    parser = _Parser(environ)
    config = parser.build([document])
    for warning in parser.warnings:
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


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return f'did you mean "{lowered[word.lower()]}"?'
    return None


def _one_of(word: str, choices: Iterable[str]) -> str:
    options = sorted(set(choices))
    return _did_you_mean(word, options) or "expected one of: " + ", ".join(options)


_TYPE_WORDS: Final = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _type_words(spec: str) -> str:
    return " or ".join(_TYPE_WORDS.get(part.strip(), part.strip()) for part in spec.split("|"))


_MSG_AT: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MSG_GOT: Final = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_MSG_BOUND: Final = re.compile(r"^Expected `(?P<want>[^`]+)` (?P<op>[<>]=?) (?P<num>\S+)$")
_MSG_REGEX: Final = re.compile(r"^Expected `str` matching regex '(?P<regex>[^']*)'$")
_MSG_MISSING: Final = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_MSG_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_MSG_LENGTH: Final = re.compile(r"^Expected `str` of length >= 1$")


def _rewrite_msgspec(message: str) -> tuple[str, str, str | None]:
    """Turn a msgspec message into ``(our message, relative path, hint)``."""
    match = _MSG_AT.match(message)
    text, rel = (match.group("msg"), match.group("path") or "") if match else (message, "")
    hint: str | None = None
    if m := _MSG_GOT.match(text):
        text = f"expected {_type_words(m['want'])}, got {_type_words(m['got'])}"
    elif m := _MSG_BOUND.match(text):
        number = m["num"].removesuffix(".0")
        text = f"expected {_type_words(m['want'])} {m['op']} {number}"
    elif m := _MSG_REGEX.match(text):
        text = "expected an http:// or https:// URL" if "http" in m["regex"] else text
    elif m := _MSG_MISSING.match(text):
        text = f'missing required key "{m["name"]}"'
    elif m := _MSG_UNKNOWN.match(text):
        rel = f"{rel}.{m['name']}"
        text = f'unknown key "{m["name"]}"'
    elif _MSG_LENGTH.match(text):
        text = "must not be empty"
    else:
        text = text[:1].lower() + text[1:]
    return text, rel, hint


# ----------------------------------------------------------------------------- reading


def _strip_jsonc(text: str) -> str:
    """Blank out comments and trailing commas, keeping every line and column in place."""
    if "/" not in text and "," not in text:
        return text
    out = list(text)
    i, n = 0, len(text)
    pending_comma = -1
    while i < n:
        char = text[i]
        if char == '"':
            pending_comma = -1
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if char == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        if char == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                break  # json reports the stray "/"
            for k in range(i, end + 2):
                if out[k] != "\n":
                    out[k] = " "
            i = end + 2
            continue
        if char == ",":
            pending_comma = i
        elif char in "}]":
            if pending_comma >= 0:
                out[pending_comma] = " "
            pending_comma = -1
        elif not char.isspace():
            pending_comma = -1
        i += 1
    return "".join(out)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass
class _Document:
    """One config file, decoded but not yet validated."""

    display: str
    base_dir: Path | None
    data: Mapping[str, Any]

    @classmethod
    def read(cls, path: Path, *, display: str, base_dir: Path) -> _Document:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text ({exc.reason})", file=display) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", file=display) from exc
        return cls.from_text(text, display=display, base_dir=base_dir)

    @classmethod
    def from_text(cls, text: str, *, display: str, base_dir: Path | None) -> _Document:
        text = text.removeprefix("\ufeff")
        try:
            data = json.loads(_strip_jsonc(text), object_pairs_hook=_no_duplicates)
        except _DuplicateKey as exc:
            raise ConfigError(
                f'duplicate key "{exc.key}"',
                file=display,
                hint="a key may appear only once in an object",
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                file=display,
            ) from None
        return cls.from_object(data, display=display, base_dir=base_dir)

    @classmethod
    def from_object(cls, data: object, *, display: str, base_dir: Path | None) -> _Document:
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"the config must be a JSON object, got {_describe(data)}", path="$", file=display
            )
        return cls(display=display, base_dir=base_dir, data=data)


# ----------------------------------------------------------------------------- validation

_TOP_KEYS: Final = {
    "servers": "servers",
    "mcpServers": "servers",
    "hideTools": "hide_tools",
    "exposeTools": "expose_tools",
    "alwaysVisibleTools": "always_visible_tools",
    "exposeCoreTools": "expose_core_tools",
    "toolsets": "toolsets",
    "autoReconnect": "auto_reconnect",
    "defaultPassthroughEnv": "default_passthrough_env",
    "defaultSecretProviders": "default_secret_providers",
    "rateLimits": "rate_limits",
}
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
_PATTERN_KEYS: Final = ("hideTools", "exposeTools", "alwaysVisibleTools", "exposeCoreTools")
_UNAVAILABLE_CORE_TOOLS: Final = {
    "manage_commands",
    "search_registry_tools",
    "get_server_install_info",
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
_RECONNECT_DEFAULTS: Final[dict[str, dict[str, float]]] = {
    "streamable-http": {
        "maxAttempts": 3,
        "initialDelayMs": 1000,
        "maxDelayMs": 30000,
        "backoffMultiplier": 1.5,
    },
    "sse": {"maxAttempts": 3, "initialDelayMs": 1000, "maxDelayMs": 30000, "backoffMultiplier": 2},
    "websocket": {
        "maxAttempts": 5,
        "initialDelayMs": 1000,
        "maxDelayMs": 16000,
        "backoffMultiplier": 2,
    },
}
_AUTH_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    "none": NoAuth,
    "bearer": BearerAuth,
    "oauth2-client": OAuth2ClientCredentials,
    "oauth2-code": OAuth2AuthorizationCode,
    "oauth2-enterprise": OAuth2EnterpriseManaged,
    "oauth2-jwt-bearer": OAuth2JwtBearer,
}
_AUTH_ALIASES: Final = {"tokenUrl", "authUrl", "scopes"}
_PROVIDER_TYPES: Final[dict[str, type[SecretProvider]]] = {
    "dotenv": DotenvProvider,
    "process": ProcessProvider,
    "inline": InlineProvider,
}
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.()*-]*")


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


@dataclass
class _Layer:
    """The validated top-level values of one document, with the file each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class _RawServer:
    name: str
    entry: Any
    path: str
    document: _Document


class _Parser:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.warnings: list[str] = []
        self.file: str | None = None

    # -- error helpers ---------------------------------------------------------------

    def error(self, message: str, path: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=path, file=self.file, hint=hint)

    def warn(self, message: str, path: str) -> None:
        self.warnings.append(
            f"{self.file}: {path}: {message}" if self.file else f"{path}: {message}"
        )

    def expect_object(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"expected an object, got {_describe(value)}", path)
        return value

    def check_keys(
        self,
        obj: Mapping[str, Any],
        allowed: Iterable[str],
        path: str,
        *,
        ignored: Mapping[str, str | None] | None = None,
    ) -> None:
        allowed = set(allowed)
        for key in obj:
            if key in allowed:
                continue
            if ignored is not None and key in ignored:
                reason = ignored[key]
                if reason is not None:
                    self.warn(f'"{key}" is accepted but ignored ({reason})', _join(path, key))
                continue
            hint = _did_you_mean(key, [*allowed, *(ignored or ())])
            if hint is None:
                hint = "expected one of: " + ", ".join(sorted(allowed))
            raise self.error(f'unknown key "{key}"', _join(path, key), hint)

    def convert(self, value: object, type_: type[T] | Any, path: str) -> T:
        try:
            result: T = msgspec.convert(value, type_, strict=True)
        except msgspec.ValidationError as exc:
            message, rel, hint = _rewrite_msgspec(str(exc))
            raise self.error(message, path + rel, hint) from None
        return result

    def string(self, value: object, path: str, *, non_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {_describe(value)}", path)
        if non_empty and not value.strip():
            raise self.error("must not be empty", path)
        return value

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.error(f"expected an array of strings, got {_describe(value)}", path)
        return tuple(self.string(item, _join(path, i)) for i, item in enumerate(value))

    def string_map(self, value: object, path: str) -> dict[str, str]:
        obj = self.expect_object(value, path)
        return {key: self.string(item, _join(path, key)) for key, item in obj.items()}

    def interpolate_tree(
        self, value: Any, path: str, lookup: Callable[[str], str | None], *, keep_missing: bool
    ) -> Any:
        if isinstance(value, str):
            return interpolate(value, lookup, path=path, file=self.file, keep_missing=keep_missing)
        if isinstance(value, Mapping):
            return {
                key: self.interpolate_tree(
                    item, _join(path, key), lookup, keep_missing=keep_missing
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self.interpolate_tree(item, _join(path, i), lookup, keep_missing=keep_missing)
                for i, item in enumerate(value)
            ]
        return value

    def env_lookup(self, name: str) -> str | None:
        return self.environ.get(name)

    # -- whole config ----------------------------------------------------------------

    def build(self, documents: list[_Document]) -> FunnelConfig:
        layers = []
        for document in documents:
            self.file = document.display
            layers.append(self.top_level(document))
        merged = _Layer()
        for layer in layers:
            for key, value in layer.values.items():
                previous = merged.values.get(key)
                if key == "toolsets" and previous is not None:
                    merged.values[key] = {**previous, **value}
                elif key == "rate_limits" and previous is not None:
                    merged.values[key] = RateLimits(tools={**previous.tools, **value.tools})
                else:
                    merged.values[key] = value
                merged.files[key] = layer.files[key]
        defaults: tuple[SecretProvider, ...] = merged.values.get("default_secret_providers", ())
        servers: dict[str, ServerConfig] = {}
        names_by_document: list[list[str]] = []
        for document in documents:
            self.file = document.display
            names: list[str] = []
            for raw in self.collect_servers(document):
                servers[raw.name] = self.server(raw, defaults, servers.get(raw.name))
                names.append(raw.name)
            names_by_document.append(names)
        # The project's servers first, in its order; then the user's others.
        project = names_by_document[-1]
        order = list(dict.fromkeys([*project, *(n for names in names_by_document for n in names)]))
        config = FunnelConfig(servers=tuple(servers[name] for name in order), **merged.values)
        self.lint_patterns(config, merged.files)
        return config

    # -- top level -------------------------------------------------------------------

    def top_level(self, document: _Document) -> _Layer:
        data = document.data
        self.check_keys(data, _TOP_KEYS, "$", ignored=_IGNORED_TOP_KEYS)
        layer = _Layer()

        def put(key: str, value: object) -> None:
            layer.values[key] = value
            layer.files[key] = document.display

        for key in _PATTERN_KEYS:
            if data.get(key) is not None:
                path = _join("$", key)
                value = self.interpolate_tree(data[key], path, self.env_lookup, keep_missing=False)
                patterns = self.patterns(value, path)
                if key == "exposeCoreTools":
                    self.check_core_patterns(patterns, path)
                put(_TOP_KEYS[key], patterns)
        if data.get("toolsets") is not None:
            path = "$.toolsets"
            value = self.interpolate_tree(
                data["toolsets"], path, self.env_lookup, keep_missing=False
            )
            obj = self.expect_object(value, path)
            put(
                "toolsets",
                {name: self.patterns(item, _join(path, name)) for name, item in obj.items()},
            )
        if data.get("autoReconnect") is not None:
            put("auto_reconnect", self.auto_reconnect(data["autoReconnect"], "$.autoReconnect"))
        if data.get("defaultPassthroughEnv") is not None:
            path = "$.defaultPassthroughEnv"
            value = self.interpolate_tree(
                data["defaultPassthroughEnv"], path, self.env_lookup, keep_missing=False
            )
            names = self.strings(value, path)
            for i, name in enumerate(names):
                if _ENV_NAME.fullmatch(name) is None:
                    raise self.error(
                        f'invalid environment variable name "{name}"',
                        _join(path, i),
                        'names are letters, digits and "_"; "*" is a wildcard',
                    )
            put("default_passthrough_env", names)
        if data.get("defaultSecretProviders") is not None:
            put(
                "default_secret_providers",
                self.providers(
                    data["defaultSecretProviders"], "$.defaultSecretProviders", document
                ),
            )
        if data.get("rateLimits") is not None:
            put("rate_limits", self.rate_limits(data["rateLimits"], "$.rateLimits"))
        return layer

    def patterns(self, value: object, path: str) -> tuple[str, ...]:
        patterns = self.strings(value, path)
        for i, pattern in enumerate(patterns):
            if not pattern:
                raise self.error("empty pattern", _join(path, i), 'use "*" to match every tool')
            if any(char.isspace() for char in pattern):
                raise self.error(
                    f'invalid pattern "{pattern}": tool names never contain whitespace',
                    _join(path, i),
                )
        return patterns

    def check_core_patterns(self, patterns: tuple[str, ...], path: str) -> None:
        from funnel_proxy._patterns import PatternSet

        for i, pattern in enumerate(patterns):
            if any(PatternSet([pattern]).matches(name) for name in CORE_TOOL_NAMES):
                continue
            if pattern in _UNAVAILABLE_CORE_TOOLS:
                self.warn(f'core tool "{pattern}" is not available in funnel', _join(path, i))
                continue
            raise self.error(
                f'pattern "{pattern}" matches no core tool',
                _join(path, i),
                _one_of(pattern, CORE_TOOL_NAMES),
            )

    def auto_reconnect(self, value: object, path: str) -> AutoReconnect:
        obj = self.expect_object(value, path)
        self.check_keys(obj, _fields(AutoReconnect), path)
        result: AutoReconnect = self.convert(obj, AutoReconnect, path)
        self.check_delays(result.initial_delay_ms, result.max_delay_ms, path)
        return result

    def check_delays(self, initial: float, maximum: float, path: str) -> None:
        if maximum < initial:
            raise self.error(
                f"maxDelayMs ({maximum:g}) must be >= initialDelayMs ({initial:g})",
                _join(path, "maxDelayMs"),
            )

    def rate_limits(self, value: object, path: str) -> RateLimits:
        obj = self.expect_object(value, path)
        self.check_keys(obj, {"tools"}, path)
        tools_path = _join(path, "tools")
        tools = self.expect_object(obj.get("tools", {}), tools_path)
        limits: dict[str, RateLimit] = {}
        for pattern, item in tools.items():
            item_path = _join(tools_path, pattern)
            self.patterns([pattern], item_path)
            item_obj = self.expect_object(item, item_path)
            self.check_keys(item_obj, _fields(RateLimit), item_path)
            limits[pattern] = self.convert(item_obj, RateLimit, item_path)
        return RateLimits(tools=limits)

    def providers(
        self, value: object, path: str, document: _Document
    ) -> tuple[SecretProvider, ...]:
        if not isinstance(value, list):
            raise self.error(f"expected an array of secret providers, got {_describe(value)}", path)
        items: list[Any] = self.interpolate_tree(value, path, self.env_lookup, keep_missing=False)
        return tuple(self.provider(item, _join(path, i), document) for i, item in enumerate(items))

    def provider(self, value: object, path: str, document: _Document) -> SecretProvider:
        obj = self.expect_object(value, path)
        kind = obj.get("type")
        if kind is None:
            raise self.error('missing required key "type"', path, _one_of("", _PROVIDER_TYPES))
        kind = self.string(kind, _join(path, "type"))
        if kind not in _PROVIDER_TYPES:
            raise self.error(
                f'unknown secret provider type "{kind}"',
                _join(path, "type"),
                _one_of(kind, _PROVIDER_TYPES),
            )
        struct = _PROVIDER_TYPES[kind]
        if "config" in obj:
            # The original's form: {"type": ..., "config": {...}}.
            self.check_keys(obj, {"type", "config", "name"}, path)
            options_path = _join(path, "config")
            options = self.expect_object(obj["config"], options_path)
        else:
            options_path = path
            options = {key: item for key, item in obj.items() if key not in ("type", "name")}
        self.check_keys(options, _fields(struct) - {"type"}, options_path)
        if kind == "inline" and "values" in options:
            self.string_map(options["values"], _join(options_path, "values"))
        provider: SecretProvider = self.convert({**options, "type": kind}, struct, options_path)
        if isinstance(provider, ProcessProvider) and not provider.prefix and not provider.allowlist:
            raise self.error(
                "a process provider needs a prefix or an allowlist",
                options_path,
                "without either it would pass funnel's whole environment",
            )
        if isinstance(provider, DotenvProvider):
            if not provider.path.strip():
                raise self.error("must not be empty", _join(options_path, "path"))
            if document.base_dir is not None:
                resolved = document.base_dir / Path(provider.path).expanduser()
                provider = DotenvProvider(path=str(resolved), encoding=provider.encoding)
        return provider

    # -- servers ---------------------------------------------------------------------

    def collect_servers(self, document: _Document) -> list[_RawServer]:
        found: dict[str, _RawServer] = {}
        for key in ("servers", "mcpServers"):
            value = document.data.get(key)
            if value is None:
                continue
            base = _join("$", key)
            items: list[tuple[str, Any, str]] = []
            if isinstance(value, Mapping):
                for name, entry in value.items():
                    path = _join(base, name)
                    if isinstance(entry, Mapping) and "name" in entry and entry["name"] != name:
                        raise self.error(
                            f'"name" differs from the key "{name}"',
                            _join(path, "name"),
                            'in a record the key is the name; drop "name"',
                        )
                    items.append((name, entry, path))
            elif isinstance(value, list):
                for i, entry in enumerate(value):
                    path = _join(base, i)
                    obj = self.expect_object(entry, path)
                    if "name" not in obj:
                        raise self.error('missing required key "name"', path)
                    items.append((self.string(obj["name"], _join(path, "name")), entry, path))
            else:
                raise self.error(
                    f"expected an object (name → server) or an array of servers, got {_describe(value)}",
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
                        f'duplicate server name "{name}" (also at {found[name].path})', path
                    )
                found[name] = _RawServer(name=name, entry=entry, path=path, document=document)
        return list(found.values())

    def server(
        self,
        raw: _RawServer,
        defaults: tuple[SecretProvider, ...],
        inherited: ServerConfig | None,
    ) -> ServerConfig:
        path = raw.path
        entry = self.expect_object(raw.entry, path)
        self.check_keys(entry, _SERVER_KEYS, path, ignored=_IGNORED_SERVER_KEYS)
        disabled = False
        if "disabled" in entry:
            disabled = self.convert(entry["disabled"], bool, _join(path, "disabled"))
        if inherited is not None and set(entry) <= {"name", "disabled"}:
            # {"disabled": true} in the project switches off the user's server.
            return msgspec.structs.replace(inherited, disabled=disabled)

        providers: tuple[SecretProvider, ...] = ()
        if entry.get("secretProviders") is not None:
            providers = self.providers(
                entry["secretProviders"], _join(path, "secretProviders"), raw.document
            )
        if entry.get("envFile") is not None:
            env_file_path = _join(path, "envFile")
            env_file = self.interpolate_tree(
                entry["envFile"], env_file_path, self.env_lookup, keep_missing=False
            )
            providers = (
                *providers,
                self.provider(
                    {
                        "type": "dotenv",
                        "path": self.string(env_file, env_file_path, non_empty=True),
                    },
                    env_file_path,
                    raw.document,
                ),
            )

        secrets: dict[str, str] | None = None

        def lookup(name: str) -> str | None:
            nonlocal secrets
            if secrets is None:
                base_dir = raw.document.base_dir or Path()
                secrets = resolve_secrets(
                    (*defaults, *providers), environ=self.environ, base_dir=base_dir
                )
            found = secrets.get(name)
            return found if found is not None else self.environ.get(name)

        values: dict[str, Any] = {}
        for key, item in entry.items():
            item_path = _join(path, key)
            if key in ("secretProviders", "envFile", "disabled", "name"):
                continue
            if key == "env":
                values[key] = self.env_templates(item, item_path)
            elif key == "transport" and isinstance(item, Mapping):
                values[key] = {
                    k: self.env_templates(v, _join(item_path, k))
                    if k == "env"
                    else self.interpolate_tree(
                        v, _join(item_path, k), lookup, keep_missing=disabled
                    )
                    for k, v in item.items()
                }
            else:
                values[key] = self.interpolate_tree(item, item_path, lookup, keep_missing=disabled)

        transport = self.transport(values, path, raw.document)
        auth = None
        if values.get("auth") is not None:
            if isinstance(transport, StdioTransport):
                raise self.error(
                    "auth applies to HTTP transports only",
                    _join(path, "auth"),
                    "stdio servers get credentials through env or secretProviders",
                )
            auth = self.auth(values["auth"], _join(path, "auth"))
        return ServerConfig(
            name=raw.name,
            transport=transport,
            auth=auth,
            secret_providers=providers,
            disabled=disabled,
        )

    def env_templates(self, value: object, path: str) -> dict[str, str]:
        env = self.string_map(value, path)
        for key, item in env.items():
            if _ENV_NAME.fullmatch(key) is None or "*" in key:
                raise self.error(f'invalid environment variable name "{key}"', _join(path, key))
            references(item, path=_join(path, key), file=self.file)
        return env

    def transport(self, values: Mapping[str, Any], path: str, document: _Document) -> Transport:
        shorthand = [key for key in ("type", "url", "headers") if key in values]
        raw = values.get("transport")
        if raw is not None:
            t_path = _join(path, "transport")
            spec = self.expect_object(raw, t_path)
            if shorthand:
                raise self.error(
                    f'"{shorthand[0]}" next to "transport"',
                    _join(path, shorthand[0]),
                    'move it into "transport"',
                )
            if "type" not in spec:
                raise self.error(
                    'missing required key "type"', t_path, _one_of("", _TRANSPORT_TYPES)
                )
            kind = self.transport_type(spec["type"], _join(t_path, "type"))
            self.check_keys(spec, _TRANSPORT_KEYS[kind], t_path)
            where = dict.fromkeys(spec, t_path)
            merged = dict(spec)
        else:
            t_path = path
            if "type" in values:
                kind = self.transport_type(values["type"], _join(path, "type"))
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
                    _join(path, key),
                    "remove it, or fix the transport type",
                )
            if key == "env" and "env" in merged:
                merged["env"] = {**values["env"], **merged["env"]}
            elif key not in merged:
                merged[key] = values[key]
                where[key] = path
        at = {key: _join(where.get(key, t_path), key) for key in _TRANSPORT_KEYS[kind] | {"cwd"}}
        if kind == "stdio":
            return self.stdio(merged, at, t_path, document)
        return self.remote(kind, merged, at, t_path)

    def stdio(
        self, merged: Mapping[str, Any], at: Mapping[str, str], t_path: str, document: _Document
    ) -> StdioTransport:
        if "command" not in merged:
            raise self.error('missing required key "command"', t_path)
        cwd = None
        if merged.get("cwd") is not None:
            cwd = self.string(merged["cwd"], at["cwd"], non_empty=True)
            if document.base_dir is not None:
                cwd = str(document.base_dir / Path(cwd).expanduser())
        return StdioTransport(
            command=self.string(merged["command"], at["command"], non_empty=True),
            args=self.strings(merged.get("args", []), at["args"]),
            env=self.string_map(merged.get("env", {}), at["env"]),
            cwd=cwd,
        )

    def remote(
        self, kind: str, merged: Mapping[str, Any], at: Mapping[str, str], t_path: str
    ) -> Transport:
        if "url" not in merged:
            raise self.error('missing required key "url"', t_path)
        url = self.url(merged["url"], at["url"], kind)
        headers = self.headers(merged.get("headers", {}), at["headers"])
        timeout = 30.0
        if "timeout" in merged:
            ms: float = self.convert(merged["timeout"], float, at["timeout"])
            if ms <= 0:
                raise self.error("expected a number > 0 (milliseconds)", at["timeout"])
            timeout = ms / 1000
        reconnect = None
        if merged.get("reconnect") is not None:
            reconnect = self.reconnect(merged["reconnect"], at["reconnect"], kind)
        if kind == "streamable-http":
            session_id = None
            if merged.get("sessionId") is not None:
                session_id = self.string(merged["sessionId"], at["sessionId"], non_empty=True)
            return StreamableHttpTransport(
                url=url,
                headers=headers,
                timeout=timeout,
                reconnect=reconnect,
                session_id=session_id,
            )
        if reconnect is None:
            reconnect = self.convert(_RECONNECT_DEFAULTS[kind], ReconnectPolicy, at["reconnect"])
        if kind == "sse":
            return SseTransport(url=url, headers=headers, timeout=timeout, reconnect=reconnect)
        return WebSocketTransport(url=url, headers=headers, timeout=timeout, reconnect=reconnect)

    def transport_type(self, value: object, path: str) -> str:
        kind = self.string(value, path)
        kind = _TRANSPORT_ALIASES.get(kind, kind)
        if kind not in _TRANSPORT_TYPES:
            raise self.error(
                f'unknown transport type "{kind}"',
                path,
                _one_of(kind, [*_TRANSPORT_TYPES, *_TRANSPORT_ALIASES]),
            )
        return kind

    def url(self, value: object, path: str, kind: str) -> str:
        url = self.string(value, path, non_empty=True)
        schemes = ("http", "https", "ws", "wss") if kind == "websocket" else ("http", "https")
        try:
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError:
            raise self.error("invalid URL", path) from None
        want = " or ".join(f"{scheme}://" for scheme in schemes)
        if parts.scheme.lower() not in schemes:
            shown = (
                f' (scheme "{parts.scheme}")'
                if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", parts.scheme)
                else ""
            )
            raise self.error(f"invalid URL{shown}: expected {want}", path)
        if not host:
            raise self.error("invalid URL: no host", path)
        if kind == "websocket":
            scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
            return urlunsplit(parts._replace(scheme=scheme))
        return url.strip()

    def headers(self, value: object, path: str) -> dict[str, str]:
        headers = self.string_map(value, path)
        for name, item in headers.items():
            if _HEADER_NAME.fullmatch(name) is None:
                raise self.error(f'invalid header name "{name}"', _join(path, name))
            if any(char in item for char in "\r\n\0"):
                raise self.error("a header value must not contain line breaks", _join(path, name))
        return headers

    def reconnect(self, value: object, path: str, kind: str) -> ReconnectPolicy:
        obj = self.expect_object(value, path)
        self.check_keys(obj, _fields(ReconnectPolicy), path)
        result: ReconnectPolicy = self.convert(
            {**_RECONNECT_DEFAULTS[kind], **obj}, ReconnectPolicy, path
        )
        self.check_delays(result.initial_delay_ms, result.max_delay_ms, path)
        return result

    def auth(self, value: object, path: str) -> Any:
        obj = self.expect_object(value, path)
        if "type" not in obj:
            raise self.error('missing required key "type"', path, _one_of("", _AUTH_TYPES))
        kind = self.string(obj["type"], _join(path, "type"))
        if kind not in _AUTH_TYPES:
            raise self.error(
                f'unknown auth type "{kind}"', _join(path, "type"), _one_of(kind, _AUTH_TYPES)
            )
        self.check_keys(obj, _fields(_AUTH_TYPES[kind]) | {"type"} | _AUTH_ALIASES, path)
        for key, item in obj.items():
            # Every auth field is a string (scopes may also be a list); check here, since
            # the Secret hook cannot report a wrong type as a validation error.
            if key != "scopes" and not isinstance(item, str):
                raise self.error(f"expected a string, got {_describe(item)}", _join(path, key))
        if "scopes" in obj and not isinstance(obj["scopes"], (str, list)):
            raise self.error(
                f"expected a string or an array of strings, got {_describe(obj['scopes'])}",
                _join(path, "scopes"),
            )
        if isinstance(obj.get("scopes"), list):
            self.strings(obj["scopes"], _join(path, "scopes"))
        try:
            auth = _decode_auth(dict(obj))
        except msgspec.ValidationError as exc:
            message, rel, hint = _rewrite_msgspec(str(exc))
            raise self.error(message, path + rel, hint) from None
        if isinstance(auth, BearerAuth) and not auth.token.reveal().strip():
            raise self.error("the token is empty", _join(path, "token"))
        return auth

    # -- cross checks ----------------------------------------------------------------

    def lint_patterns(self, config: FunnelConfig, files: Mapping[str, str]) -> None:
        names = [server.name for server in config.servers]
        if not names:
            return
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        for key in ("hideTools", "exposeTools", "alwaysVisibleTools"):
            patterns = getattr(config, _TOP_KEYS[key]) or ()
            path = _join("$", key)
            groups.append(
                (
                    files.get(_TOP_KEYS[key], ""),
                    [(_join(path, i), p) for i, p in enumerate(patterns)],
                )
            )
        toolsets = [
            (_join(_join("$.toolsets", name), i), p)
            for name, patterns in config.toolsets.items()
            for i, p in enumerate(patterns)
        ]
        groups.append((files.get("toolsets", ""), toolsets))
        limits = [(_join("$.rateLimits.tools", p), p) for p in config.rate_limits.tools]
        groups.append((files.get("rate_limits", ""), limits))
        for file, items in groups:
            for path, pattern in items:
                prefix, sep, _ = pattern.partition("__")
                if not sep or "*" in prefix or prefix in names:
                    continue
                self.file = file or None
                hint = _did_you_mean(prefix, names)
                self.warn(
                    f'pattern "{pattern}" names no configured server "{prefix}"'
                    + (f" ({hint})" if hint else ""),
                    path,
                )
