"""Key validation and key-derived lock file names, shared by every store."""

from __future__ import annotations

import hashlib

from funnel_tokenstore._errors import InvalidKey

__all__ = ["MAX_KEY_LENGTH", "check_key", "digest"]

MAX_KEY_LENGTH = 1024


def check_key(key: object) -> str:
    """Return ``key`` when it is a valid store key, else raise :class:`InvalidKey`.

    Valid keys are non-empty strings of printable ASCII (space to ``~``) of at most
    :data:`MAX_KEY_LENGTH` characters: every backend can keep them unchanged, and they
    are safe to show in messages.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"a token store key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("a token store key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"a token store key is at most {MAX_KEY_LENGTH} characters long")
    if not all(" " <= ch <= "~" for ch in key):
        # The key itself may hold a control character that would garble a log line.
        raise InvalidKey(f"a token store key must be printable ASCII: {key!r}")
    return key


def digest(*parts: str) -> str:
    """Return a short, file-name-safe digest of ``parts`` (for lock file names)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]
