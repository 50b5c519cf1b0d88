"""PKCE (RFC 7636) with S256 only, and the ``state`` value.

``plain`` is never offered: the MCP spec requires S256 whenever the client can compute
it, and every Python can.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Final

__all__ = ["S256", "code_challenge", "new_state", "new_verifier"]

S256: Final = "S256"
_VERIFIER: Final = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_verifier(nbytes: int = 32) -> str:
    """Return a fresh code verifier: ``nbytes`` (32–96) random bytes, base64url (43–128 chars)."""
    if not 32 <= nbytes <= 96:
        raise ValueError("a verifier needs 32 to 96 random bytes (43 to 128 characters)")
    return _b64url(secrets.token_bytes(nbytes))


def code_challenge(verifier: str) -> str:
    """Return the S256 challenge of ``verifier``: ``base64url(sha256(ascii(verifier)))``.

    Raises:
        ValueError: ``verifier`` is not 43–128 unreserved characters (RFC 7636 §4.1).
    """
    if not _VERIFIER.match(verifier):
        raise ValueError("a code verifier is 43 to 128 characters of [A-Za-z0-9-._~]")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    """Return a fresh, unguessable ``state`` value (256 random bits, base64url)."""
    return _b64url(secrets.token_bytes(32))
