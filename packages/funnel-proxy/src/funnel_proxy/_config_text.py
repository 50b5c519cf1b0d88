"""The words of config errors: JSON paths, value kinds, "did you mean", msgspec's messages.

msgspec reports a validation error as one string, ``<message> - at `$.path```; that is
the only place its path and reason exist, so :func:`translate` reads both out of it and
says them the way the rest of the config errors do.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["describe", "did_you_mean", "join", "one_of", "translate"]

_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def describe(value: object) -> str:
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


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return f'did you mean "{lowered[word.lower()]}"?'
    return None


def one_of(word: str, choices: Iterable[str]) -> str:
    options = sorted(set(choices))
    return did_you_mean(word, options) or "expected one of: " + ", ".join(options)


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


def translate(message: str) -> tuple[str, str, str | None]:
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
