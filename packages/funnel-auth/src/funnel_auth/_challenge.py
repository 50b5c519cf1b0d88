r"""``WWW-Authenticate`` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1).

Theory of operation: a header value is a comma-separated list of challenges, and each
challenge's parameters are comma-separated too, so a comma alone does not say whether a
new challenge starts. After a comma, ``name =`` continues the current challenge's
parameters; any other token starts a new challenge (``scheme`` optionally followed by a
token68 or parameters). Values are tokens or quoted strings with ``\\`` escapes.

The parser is lenient where servers are sloppy (unquoted URLs, stray commas, missing
closing quote, several header lines) and never raises: garbage yields fewer challenges,
not an exception. Scheme and parameter names are case-insensitive and returned in lower
case; of a repeated parameter the first occurrence wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["BearerChallenge", "Challenge", "find_bearer", "parse_www_authenticate"]

# RFC 9110 tchar.
_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# RFC 9110 token68 (without the trailing "=" padding).
_T68: Final = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS: Final = " \t"


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge.

    Attributes:
        scheme: The auth scheme in lower case (``"bearer"``).
        params: Parameters, names in lower case, values unquoted.
        token68: The token68 form's value, for schemes that use it.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() and self.peek() in _WS:
            self.pos += 1

    def skip_ws_and_commas(self) -> None:
        while self.peek() and self.peek() in " \t,":
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        # At the opening quote; an unterminated string runs to the end.
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and not self.at_end():
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)

    def bare_value(self) -> str:
        # Lenient: a token, or anything up to a comma or whitespace (unquoted URLs).
        start = self.pos
        while self.peek() and self.peek() not in " \t,":
            self.pos += 1
        return self.text[start : self.pos]

    def looks_like_param(self) -> bool:
        """At ``name BWS "=" BWS value`` (not ``token68==`` padding)?"""
        save = self.pos
        try:
            if not self.token():
                return False
            self.skip_ws()
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip_ws()
            # "abc==" or "abc=" followed by end/comma is token68 padding, not a param.
            return self.peek() not in ("", ",", "=")
        finally:
            self.pos = save

    def token68(self) -> str | None:
        save = self.pos
        start = self.pos
        while self.peek() and self.peek() in _T68:
            self.pos += 1
        if self.pos == start:
            return None
        while self.peek() == "=":
            self.pos += 1
        end = self.pos
        self.skip_ws()
        if self.peek() in ("", ","):
            return self.text[start:end]
        self.pos = save
        return None


def _parse_one(text: str) -> list[Challenge]:
    scan = _Scanner(text)
    challenges: list[Challenge] = []
    while True:
        scan.skip_ws_and_commas()
        if scan.at_end():
            return challenges
        scheme = scan.token()
        if not scheme:
            scan.pos += 1  # skip one junk character and resynchronise
            continue
        params: dict[str, str] = {}
        token68: str | None = None
        if scan.peek() in _WS:
            scan.skip_ws()
            # Empty list elements ("Bearer , realm=x") before the first parameter.
            save = scan.pos
            scan.skip_ws_and_commas()
            if not scan.looks_like_param():
                scan.pos = save
            if not scan.looks_like_param():
                token68 = scan.token68()
            while token68 is None and scan.looks_like_param():
                name = scan.token().lower()
                scan.skip_ws()
                scan.pos += 1  # "="
                scan.skip_ws()
                value = scan.quoted() if scan.peek() == '"' else scan.bare_value()
                params.setdefault(name, value)
                scan.skip_ws()
                if scan.peek() == ",":
                    # Skip empty list elements; a following "name=" continues these params.
                    while scan.peek() in (",", " ", "\t") and scan.peek():
                        scan.pos += 1
                elif not scan.at_end():
                    # Junk between parameters: drop it up to the next comma.
                    while scan.peek() and scan.peek() != ",":
                        scan.pos += 1
        challenges.append(Challenge(scheme=scheme.lower(), params=params, token68=token68))


def parse_www_authenticate(values: str | Iterable[str]) -> list[Challenge]:
    """Parse one or several ``WWW-Authenticate`` header values into challenges.

    Args:
        values: A header value, or every value of a repeated header
            (``response.headers.get_list("www-authenticate")``).

    Returns:
        The challenges in order; an empty list for an empty or unparseable header.
    """
    if isinstance(values, str):
        values = [values]
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_one(value))
    return out


@dataclass(frozen=True)
class BearerChallenge:
    """The parts of a ``Bearer`` challenge that the MCP authorization flow acts on.

    Attributes:
        error: ``invalid_token``, ``insufficient_scope``, … (RFC 6750 §3.1), if given.
        error_description: Human-readable text from the server, if given.
        scope: Space-separated scopes the server requires, if given.
        resource_metadata: URL of the protected-resource metadata (RFC 9728), if given.
    """

    error: str | None = None
    error_description: str | None = None
    scope: str | None = None
    resource_metadata: str | None = None

    @property
    def scopes(self) -> tuple[str, ...]:
        """The challenged scopes as a tuple (empty when none were given)."""
        return tuple(self.scope.split()) if self.scope else ()


def find_bearer(values: str | Iterable[str]) -> BearerChallenge | None:
    """Return the first ``Bearer`` challenge of ``WWW-Authenticate`` values, or ``None``."""
    for challenge in parse_www_authenticate(values):
        if challenge.scheme == "bearer":
            p = challenge.params
            return BearerChallenge(
                error=p.get("error") or None,
                error_description=p.get("error_description") or None,
                scope=p.get("scope") or None,
                resource_metadata=p.get("resource_metadata") or None,
            )
    return None
