"""The errors every token store raises, one root for the package.

```
TokenStoreError                   root: catch this to handle any store failure
├── TokenStoreUnavailable         the backend cannot be used (no keychain, locked keychain,
│                                 D-Bus or disk failure, a file owned by someone else):
│                                 give up on this store or pick another one
├── TokenStoreCorrupt             stored data cannot be read; it is left exactly as it is,
│                                 never silently overwritten: a person repairs or removes it
├── TokenStoreLockTimeout         a lock was not acquired in time (also a TimeoutError):
│                                 another process holds it; retry later
├── TokenStoreConfigError         a bad store kind or environment variable (also a
│                                 ValueError): fix the configuration
└── InvalidKey                    a key the stores do not accept (also a ValueError):
                                  a programming error in the caller
```

Messages name keys, paths and backends, never a stored value. Exceptions from
third-party code (keyring, OS calls) are chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "InvalidKey",
    "TokenStoreConfigError",
    "TokenStoreCorrupt",
    "TokenStoreError",
    "TokenStoreLockTimeout",
    "TokenStoreUnavailable",
]


class TokenStoreError(Exception):
    """Root of every error a token store raises."""


class TokenStoreUnavailable(TokenStoreError):
    """The backend cannot be used: no keychain, a locked keychain, an I/O failure."""


class TokenStoreCorrupt(TokenStoreError):
    """Stored data cannot be read; it is left untouched for a person to repair or remove."""


class TokenStoreLockTimeout(TokenStoreError, TimeoutError):
    """A lock was not acquired within its timeout: another holder kept it."""


class TokenStoreConfigError(TokenStoreError, ValueError):
    """An unknown store kind, in an argument or in ``MCP_FUNNEL_TOKEN_STORE``."""


class InvalidKey(TokenStoreError, ValueError):
    """A key that is empty, too long, or not printable ASCII."""
