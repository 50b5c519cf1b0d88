r"""Secret providers: where a server's credentials come from, besides its ``env``.

Three kinds, applied in order (a later provider wins on the same name):

- ``dotenv``: a ``.env`` file. A relative path is relative to the directory of the
  config file that names it. A missing file is logged as a WARNING and provides nothing
  (a checkout without its ``.env`` still starts; the warning says why a variable is
  missing); a file that exists but cannot be read or parsed is a :class:`ConfigError`.
- ``process``: variables of funnel's own environment, chosen by ``allowlist`` (exact
  names) or else by ``prefix``, the prefix stripped from the names, and ``blocklist``
  applied last to the original names. A ``process`` provider with neither a prefix nor
  an allowlist is refused by the config loader, since it would pass the whole
  environment (the leak the providers exist to prevent).
- ``inline``: values written in the config.

The dotenv dialect (:func:`parse_dotenv`) is the common one: ``KEY=value`` lines,
``export KEY=value``, ``#`` comments (whole lines, or after whitespace in an unquoted
value), single quotes (literal, may span lines), double quotes (escapes ``\\n \\t \\r
\\\\ \\" \\' \\$ \\uXXXX``, may span lines), a trailing ``\\`` continuing an unquoted value,
and ``$NAME`` / ``${NAME}`` / ``${NAME:-default}`` expanded in unquoted and double-quoted
values from the keys above, then the process environment (unset → empty, as in every
dotenv tool).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, TypeAlias

import msgspec

from funnel_proxy._errors import ConfigError
from funnel_proxy._struct import ConfigStruct, masked

__all__ = [
    "DotenvProvider",
    "InlineProvider",
    "ProcessProvider",
    "SecretProvider",
    "parse_dotenv",
    "resolve_secrets",
]

logger = logging.getLogger(__name__)


class DotenvProvider(ConfigStruct, frozen=True, tag="dotenv", tag_field="type"):
    """Variables from a dotenv file.

    Attributes:
        path: The file; the loader makes relative paths absolute against the directory
            of the config file that names them.
        encoding: The file's text encoding.
    """

    path: str
    encoding: str = "utf-8"


class ProcessProvider(ConfigStruct, frozen=True, tag="process", tag_field="type"):
    """Variables picked from funnel's own environment.

    Attributes:
        prefix: Take variables starting with this and strip it (``FUNNEL_GH_TOKEN`` →
            ``TOKEN`` for prefix ``FUNNEL_GH_``); with an allowlist, only strips.
        allowlist: Take exactly these variables (prefix stripped if present).
        blocklist: Never take these (original names), checked last.
    """

    prefix: str | None = None
    allowlist: tuple[str, ...] = ()
    blocklist: tuple[str, ...] = ()


class InlineProvider(ConfigStruct, frozen=True, tag="inline", tag_field="type"):
    """Values written in the config itself (``repr`` masks them).

    Attributes:
        values: Variable name → value.
    """

    values: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"InlineProvider(values={masked(self.values)!r})"


SecretProvider: TypeAlias = DotenvProvider | ProcessProvider | InlineProvider
"""Any secret provider, tagged by its ``type``."""


def resolve_secrets(
    providers: Iterable[SecretProvider],
    *,
    environ: Mapping[str, str],
    base_dir: Path,
) -> dict[str, str]:
    """The variables a list of providers yields, later providers winning.

    Args:
        providers: The providers, in order.
        environ: funnel's environment (for ``process`` and for ``$VAR`` in dotenv files).
        base_dir: What a still-relative dotenv path is relative to.

    Raises:
        ConfigError: A dotenv file exists but cannot be read or parsed.
    """
    out: dict[str, str] = {}
    for provider in providers:
        if isinstance(provider, DotenvProvider):
            out.update(_read_dotenv(provider, environ=environ, base_dir=base_dir))
        elif isinstance(provider, ProcessProvider):
            out.update(_from_process(provider, environ))
        else:
            out.update(provider.values)
    return out


def _read_dotenv(
    provider: DotenvProvider, *, environ: Mapping[str, str], base_dir: Path
) -> dict[str, str]:
    path = base_dir / Path(provider.path).expanduser()
    try:
        text = path.read_text(encoding=provider.encoding)
    except FileNotFoundError:
        logger.warning("secret file %s not found; its dotenv provider adds no variables", path)
        return {}
    except (OSError, UnicodeError, LookupError) as exc:
        raise ConfigError(f"cannot read the dotenv file: {exc}", file=str(path)) from exc
    return parse_dotenv(text, environ=environ, source=str(path))


def _from_process(provider: ProcessProvider, environ: Mapping[str, str]) -> dict[str, str]:
    prefix = provider.prefix or ""
    if provider.allowlist:
        chosen = [key for key in provider.allowlist if key in environ]
    else:
        chosen = [key for key in environ if prefix and key.startswith(prefix)]
    blocked = set(provider.blocklist)
    out: dict[str, str] = {}
    for key in chosen:
        if key in blocked:
            continue
        name = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if name:
            out[name] = environ[key]
    return out


# ----------------------------------------------------------------------------- dotenv

_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_EXPORT: Final = re.compile(r"export[ \t]+")
_VAR: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "$": "$"}


class _DotenvParser:
    def __init__(self, text: str, environ: Mapping[str, str], source: str) -> None:
        self.text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        self.environ = environ
        self.source = source
        self.pos = 0
        self.result: dict[str, str] = {}

    def line(self, pos: int | None = None) -> int:
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, message: str, pos: int | None = None, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.source, path=f"line {self.line(pos)}", hint=hint)

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> dict[str, str]:
        while self.pos < len(self.text):
            self.skip_blanks()
            char = self.peek()
            if char == "\n":
                self.pos += 1
            elif char == "#":
                self.skip_comment()
            elif char:
                self.entry()
        return self.result

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def entry(self) -> None:
        export = _EXPORT.match(self.text, self.pos)
        if export is not None:
            self.pos = export.end()
        key = _KEY.match(self.text, self.pos)
        if key is None:
            raise self.fail("expected KEY=value", hint="keys are letters, digits, _ and .")
        self.pos = key.end()
        self.skip_blanks()
        if self.peek() != "=":
            raise self.fail(f'expected "=" after "{key.group()}"')
        self.pos += 1
        self.skip_blanks()
        quote = self.peek()
        if quote == "'":
            value = self.single_quoted()
        elif quote == '"':
            value = self.double_quoted()
        else:
            value = self.unquoted()
        self.result[key.group()] = value

    def end_of_line(self) -> None:
        # After a closing quote only blanks and a comment may follow.
        self.skip_blanks()
        char = self.peek()
        if char == "#":
            self.skip_comment()
        elif char not in ("", "\n"):
            raise self.fail("unexpected text after the closing quote")

    def single_quoted(self) -> str:
        start = self.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            raise self.fail("unterminated single quote", start)
        self.pos = end + 1
        self.end_of_line()
        return self.text[start + 1 : end]

    def double_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unterminated double quote", start)
            if char == '"':
                self.pos += 1
                break
            if char == "\\":
                out.append(self.escape())
            elif char == "$":
                out.append(self.expand())
            else:
                out.append(char)
                self.pos += 1
        self.end_of_line()
        return "".join(out)

    def escape(self) -> str:
        nxt = self.text[self.pos + 1 : self.pos + 2]
        if nxt in _ESCAPES:
            self.pos += 2
            return _ESCAPES[nxt]
        if nxt == "u":
            digits = self.text[self.pos + 2 : self.pos + 6]
            if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.pos += 6
                return chr(int(digits, 16))
            raise self.fail(r"invalid \u escape (want four hex digits)")
        # Unknown escapes stay as written, as in other dotenv readers.
        self.pos += 1
        return "\\"

    def unquoted(self) -> str:
        out: list[str] = []
        while True:
            char = self.peek()
            if char in ("", "\n"):
                break
            if char == "#" and (not out or out[-1][-1:] in (" ", "\t")):
                self.skip_comment()
                break
            if char == "\\" and self.text[self.pos + 1 : self.pos + 2] == "\n":
                self.pos += 2  # line continuation
                continue
            if char == "$":
                out.append(self.expand())
            else:
                out.append(char)
                self.pos += 1
        return "".join(out).strip(" \t")

    def expand(self) -> str:
        """Expand ``$NAME`` / ``${NAME}`` / ``${NAME:-default}`` at ``self.pos``."""
        text, pos = self.text, self.pos
        if text.startswith("${", pos):
            end = text.find("}", pos + 2)
            if end < 0 or "\n" in text[pos:end]:
                raise self.fail('unterminated "${"')
            name, sep, default = text[pos + 2 : end].partition(":")
            default = default.removeprefix("-")
            if _VAR.fullmatch(name) is None:
                raise self.fail(f'invalid variable name "{name}"')
            self.pos = end + 1
            return self.lookup(name, default if sep else "")
        match = _VAR.match(text, pos + 1)
        if match is None:
            self.pos += 1
            return "$"
        self.pos = match.end()
        return self.lookup(match.group(), "")

    def lookup(self, name: str, default: str) -> str:
        value = self.result.get(name, self.environ.get(name))
        return default if value is None or (not value and default) else value


def parse_dotenv(
    text: str, *, environ: Mapping[str, str] | None = None, source: str = ".env"
) -> dict[str, str]:
    r"""Parse dotenv text (dialect in the module docs) into a dict.

    Args:
        text: The file's contents.
        environ: Where ``$NAME`` looks after the file's own keys; nothing when omitted.
        source: The file name for error messages.

    Raises:
        ConfigError: A line cannot be parsed; ``path`` is ``line N``.

    Example:
        >>> parse_dotenv('export A=1\nB="${A}\\n2" # note\n')
        {'A': '1', 'B': '1\n2'}
    """
    return _DotenvParser(text, environ or {}, source).parse()
