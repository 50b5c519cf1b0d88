"""funnel-tokenstore: bytes-level secret storage (OS keychain, locked files, memory).

Every store implements :class:`TokenStore`; :func:`open_token_store` picks one.
:mod:`funnel_tokenstore.testing` holds the contract suite every store passes.
"""

from importlib import metadata as _metadata

from funnel_tokenstore._crypto import STATE_KEY_ENV, StateKeys, generate_state_key
from funnel_tokenstore._encrypted import EncryptedTokenStore, Rotation
from funnel_tokenstore._errors import (
    InvalidKey,
    TokenStoreConfigError,
    TokenStoreCorrupt,
    TokenStoreError,
    TokenStoreLockTimeout,
    TokenStoreUnavailable,
)
from funnel_tokenstore._file import FileTokenStore
from funnel_tokenstore._home import funnel_home
from funnel_tokenstore._keyring import KeyringTokenStore
from funnel_tokenstore._memory import MemoryTokenStore
from funnel_tokenstore._open import TokenStoreKind, open_token_store
from funnel_tokenstore._protocol import TokenStore
from funnel_tokenstore._redis import RedisTokenStore

__version__ = _metadata.version("funnel-tokenstore")  # one source: pyproject.toml

__all__ = [
    "STATE_KEY_ENV",
    "EncryptedTokenStore",
    "FileTokenStore",
    "InvalidKey",
    "KeyringTokenStore",
    "MemoryTokenStore",
    "RedisTokenStore",
    "Rotation",
    "StateKeys",
    "TokenStore",
    "TokenStoreConfigError",
    "TokenStoreCorrupt",
    "TokenStoreError",
    "TokenStoreKind",
    "TokenStoreLockTimeout",
    "TokenStoreUnavailable",
    "__version__",
    "funnel_home",
    "generate_state_key",
    "open_token_store",
]
