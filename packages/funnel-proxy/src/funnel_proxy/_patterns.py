"""Tool-name patterns as the original spells them: ``*`` is the only wildcard.

A pattern matches a whole name (anchored), case-sensitively; every character other than
``*`` stands for itself (``.``, ``?``, ``[`` are literal). A :class:`PatternSet` compiles
all of its patterns into one regular expression once, so a match is one C-level regex
call however many patterns there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["PatternSet"]


def _translate(pattern: str) -> str:
    return ".*".join(re.escape(part) for part in pattern.split("*"))


class PatternSet:
    """An immutable set of ``*`` patterns that matches names against all of them.

    Args:
        patterns: The patterns; an empty set matches nothing.

    Example:
        >>> hidden = PatternSet(["github__delete_*", "*__drop_table"])
        >>> hidden.matches("github__delete_repo"), hidden.matches("github__list_repos")
        (True, False)
    """

    __slots__ = ("_patterns", "_regex")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        # Dict keys: deduplicated, first-seen order kept for repr and iteration.
        self._patterns: tuple[str, ...] = tuple(dict.fromkeys(patterns))
        self._regex: re.Pattern[str] | None = None
        if self._patterns:
            alternatives = "|".join(_translate(p) for p in self._patterns)
            # DOTALL: a "*" must also cross newlines, which odd backend names may hold.
            self._regex = re.compile(f"(?:{alternatives})", re.DOTALL)

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches at least one pattern."""
        return self._regex is not None and self._regex.fullmatch(name) is not None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.matches(name)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns, deduplicated, in the order given."""
        return self._patterns

    def __iter__(self) -> Iterator[str]:
        return iter(self._patterns)

    def __len__(self) -> int:
        return len(self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatternSet):
            return NotImplemented
        return set(self._patterns) == set(other._patterns)

    def __hash__(self) -> int:
        return hash(frozenset(self._patterns))

    def __repr__(self) -> str:
        return f"PatternSet({list(self._patterns)!r})"
