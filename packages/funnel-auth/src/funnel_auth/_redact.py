"""Scrub credentials out of text before it reaches a log, an error or a page.

Redaction is a backstop, not the plan: code never formats a secret into a message in the
first place. This catches what leaks in from elsewhere (an authorization server's error
description echoing a parameter, a URL with a code in its query, a header dump).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REDACTED", "redact", "redact_fast"]

REDACTED: Final = "[REDACTED]"

# Parameter names whose values are credentials, in query strings, forms and JSON.
_SECRET_NAMES: Final = (
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "code_verifier",
    "client_secret",
    "client_assertion",
    "assertion",
    "password",
    "state",
    "token",
    "api_key",
    "apikey",
)
_NAMES = "|".join(_SECRET_NAMES)

_PATTERNS: Final = (
    # Authorization header values and bare scheme + credential pairs. The scheme stands
    # alone (not the tail of a scope such as ``mcp:basic``) and the credential is a whole
    # token68 (not the head of ``mcp:write``).
    (
        re.compile(r"(?i)(?<![\w:/.-])(bearer|basic|dpop)\s+[A-Za-z0-9\-._~+/]+=*(?=$|[\s,;)\]'])"),
        rf"\1 {REDACTED}",
    ),
    (
        re.compile(r"(?i)(authorization\s*[:=]\s*)(?![^\s,;]*\[REDACTED\])[^\r\n,;]+"),
        rf"\1{REDACTED}",
    ),
    # name=value in query strings, forms and log lines.
    (re.compile(rf"(?i)(?<![A-Za-z0-9_])({_NAMES})=([^&\s\"',;]+)"), rf"\1={REDACTED}"),
    # "name": "value" in JSON.
    (re.compile(rf'(?i)("(?:{_NAMES})"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\1"{REDACTED}"'),
    # Anything shaped like a JWT.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def redact(text: str) -> str:
    """Return ``text`` with bearer tokens, credentials and secret parameters masked.

    Masks ``Authorization`` header values, ``Bearer``/``Basic`` credentials,
    ``access_token=``, ``refresh_token=``, ``code=``, ``code_verifier=``,
    ``client_secret=``, ``state=``, ``password=`` (in queries, forms and JSON) and
    JWT-shaped strings.

    Args:
        text: Any text that might carry a credential.

    Returns:
        The text with each credential replaced by ``[REDACTED]``.
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Every pattern above needs one of these to match: a scheme or header name, "=", ":", a
# quote, or a JWT's "eyJ". Text without any of them comes out of ``redact`` unchanged.
# Whoever adds a pattern that can match without one adds its trigger here (the tests
# compare both functions over secret-bearing and arbitrary text).
_TRIGGER: Final = re.compile(r"(?i:bearer|basic|dpop|authorization)|[=:\"']|eyJ")


def redact_fast(text: str) -> str:
    """:func:`redact`, at the cost of one scan for text that cannot hold a credential.

    Audit fields are mostly names (``demo__echo``, ``success``, ``stdio``): they skip the
    patterns after a single search for anything a pattern needs. The result is always
    the same as :func:`redact`'s.

    Args:
        text: Any text that might carry a credential.

    Returns:
        The text with each credential replaced by ``[REDACTED]``.
    """
    if _TRIGGER.search(text) is None:
        return text
    return redact(text)
