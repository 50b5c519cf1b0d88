"""funnel-tokenstore: bytes-level secret storage (OS keychain, locked files, memory)."""

from funnel_tokenstore._memory import MemoryTokenStore
from funnel_tokenstore._protocol import TokenStore

__version__ = "0.1.0"

__all__ = ["MemoryTokenStore", "TokenStore", "__version__"]
