"""``${VAR}`` references in config strings.

Syntax (a superset of the original's):

- ``${NAME}``: the value of ``NAME``; an error when it is not set.
- ``${NAME:default}`` and ``${NAME:-default}``: ``default`` when ``NAME`` is not set. The
  shell spelling ``:-`` is what Claude Code's ``.mcp.json`` uses, so both mean the same;
  the default runs to the first ``}``.
- ``${env:NAME}`` (VS Code's spelling) is ``${NAME}``; ``${input:...}`` is refused, since
  there is nobody to prompt.
- ``$${`` is a literal ``${``. A ``$`` not followed by ``{`` is literal.

``NAME`` is letters, digits and ``_``, not starting with a digit. Lower case is allowed
(``http_proxy`` exists), unlike the original, which wanted upper case only.

Resolution is not recursive: a value that contains ``${`` is used as it is (the original
expands values again, so a password containing ``${`` broke; we treat values as data).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

from funnel_proxy._errors import ConfigError

__all__ = ["interpolate", "references"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Lookup = Callable[[str], "str | None"]


def _scan(
    value: str, *, path: str, file: str | None
) -> Iterator[tuple[str, str | None, str | None, str]]:
    """Yield ``(literal, name, default, reference)`` pieces; ``name`` is None for text."""
    i = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            yield value[i:], None, None, ""
            return
        if value.startswith("$${", j):
            yield value[i:j] + "${", None, None, ""
            i = j + 3
            continue
        if not value.startswith("${", j):
            yield value[i : j + 1], None, None, ""
            i = j + 1
            continue
        end = value.find("}", j + 2)
        if end < 0:
            raise ConfigError(
                'unterminated "${" (no closing "}")',
                path=path,
                file=file,
                hint='write ${NAME}, or $${ for a literal "${"',
            )
        inner = value[j + 2 : end]
        name, sep, default = inner.partition(":")
        if sep and name == "env":
            name, sep, default = default.partition(":")
        elif sep and name == "input":
            raise ConfigError(
                "VS Code input variables (${input:...}) are not supported",
                path=path,
                file=file,
                hint="put the value in an environment variable and write ${NAME}",
            )
        if sep and default.startswith("-"):
            default = default[1:]
        if _NAME.fullmatch(name) is None:
            raise ConfigError(
                f'invalid variable name "{name}"',
                path=path,
                file=file,
                hint='names are letters, digits and "_", not starting with a digit: ${NAME} or ${NAME:default}',
            )
        yield value[i:j], name, default if sep else None, value[j : end + 1]
        i = end + 1


def references(value: str, *, path: str = "", file: str | None = None) -> list[str]:
    """The variable names ``value`` refers to; checks the syntax without resolving.

    Raises:
        ConfigError: The syntax is invalid.
    """
    if "$" not in value:
        return []
    return [name for _, name, _, _ in _scan(value, path=path, file=file) if name is not None]


def interpolate(
    value: str,
    lookup: Lookup,
    *,
    path: str = "",
    file: str | None = None,
    keep_missing: bool = False,
) -> str:
    """Resolve the ``${...}`` references in ``value``.

    Args:
        value: The string to resolve.
        lookup: Returns a variable's value, or ``None`` when it is not set.
        path: JSON path of the value, for error messages.
        file: The file the value comes from, for error messages.
        keep_missing: Leave references to unset variables (without default) as they are
            instead of failing (used for disabled servers).

    Raises:
        ConfigError: Invalid syntax, or a variable without default is not set.
    """
    if "$" not in value:
        return value
    out: list[str] = []
    for literal, name, default, reference in _scan(value, path=path, file=file):
        out.append(literal)
        if name is None:
            continue
        found = lookup(name)
        if found is None:
            if default is not None:
                found = default
            elif keep_missing:
                found = reference
            else:
                raise ConfigError(
                    f'environment variable "{name}" is not set',
                    path=path,
                    file=file,
                    hint=f"set it, or give a default: ${{{name}:default}}",
                )
        out.append(found)
    return "".join(out)
