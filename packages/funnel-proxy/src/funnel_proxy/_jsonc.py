"""Reading a config file: JSON with comments and trailing commas, no repeated keys.

VS Code's ``mcp.json`` and the original's example file have ``//`` and ``/* */``
comments and trailing commas; they are blanked out with every line and column kept in
place, so JSON errors still point at the right spot. A key repeated in one object is an
error (JSON would silently keep the last one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funnel_proxy._config_text import describe
from funnel_proxy._errors import ConfigError

__all__ = ["Document"]


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
class Document:
    """One config file, decoded but not yet validated.

    Attributes:
        display: The file's name as errors show it.
        base_dir: What relative paths in it resolve against (``None``: stay relative).
        data: The decoded top-level object.
    """

    display: str
    base_dir: Path | None
    data: Mapping[str, Any]

    @classmethod
    def read(cls, path: Path, *, display: str, base_dir: Path) -> Document:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text ({exc.reason})", file=display) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", file=display) from exc
        return cls.from_text(text, display=display, base_dir=base_dir)

    @classmethod
    def from_text(cls, text: str, *, display: str, base_dir: Path | None) -> Document:
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
    def from_object(cls, data: object, *, display: str, base_dir: Path | None) -> Document:
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"the config must be a JSON object, got {describe(data)}", path="$", file=display
            )
        return cls(display=display, base_dir=base_dir, data=data)
