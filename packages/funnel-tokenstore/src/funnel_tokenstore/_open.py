"""Choosing a token store: ``open_token_store``.

``auto`` takes the OS keychain only when keyring found a real, secure backend, and the
file store otherwise. Not secure enough for ``auto``: ``keyring.backends.fail`` (no
keychain at all; every call raises), ``keyring.backends.null`` (forgets everything),
a chainer whose first member is one of those, backends keyring itself does not recommend
(priority below 1), and the ``keyrings.alt`` backends (plaintext or homemade
encryption). Asking for ``keyring`` explicitly accepts all but fail/null.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Literal, TypeAlias, get_args

import keyring
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null

from funnel_tokenstore._errors import TokenStoreConfigError, TokenStoreUnavailable
from funnel_tokenstore._file import FileTokenStore
from funnel_tokenstore._home import funnel_home
from funnel_tokenstore._keyring import KeyringBackendLike, KeyringTokenStore, backend_name
from funnel_tokenstore._memory import MemoryTokenStore
from funnel_tokenstore._protocol import TokenStore

__all__ = ["STORE_ENV", "TokenStoreKind", "open_token_store"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

STORE_ENV = "MCP_FUNNEL_TOKEN_STORE"

TokenStoreKind: TypeAlias = Literal["auto", "keyring", "file", "memory"]
_KINDS: tuple[str, ...] = get_args(TokenStoreKind)


def _priority(backend: object) -> float | None:
    try:
        value = getattr(backend, "priority", None)
    except Exception:  # noqa: BLE001 - keyring's priority raises to say "not viable"
        return None
    return float(value) if isinstance(value, int | float) else None


def _unusable(backend: object) -> str | None:
    """Why ``backend`` cannot store anything at all, or ``None`` when it can."""
    if isinstance(backend, keyring.backends.fail.Keyring):
        return "keyring found no OS keychain (it chose keyring.backends.fail.Keyring)"
    if isinstance(backend, keyring.backends.null.Keyring):
        return "keyring is configured with keyring.backends.null.Keyring, which stores nothing"
    if isinstance(backend, keyring.backends.chainer.ChainerBackend):
        members = list(backend.backends)
        if not members:
            return "keyring's chainer backend has no keychain to chain"
        first_problem = _unusable(members[0])
        if first_problem is not None:
            return (
                f"keyring's chainer backend writes to {backend_name(members[0])}: {first_problem}"
            )
    return None


def _insecure(backend: object) -> str | None:
    """Why ``auto`` should not pick ``backend`` although it works, or ``None``."""
    if isinstance(backend, keyring.backends.chainer.ChainerBackend):
        members = list(backend.backends)
        return _insecure(members[0]) if members else None
    name = backend_name(backend)
    if type(backend).__module__.split(".")[0] == "keyrings":
        return f"the keyring backend {name} (keyrings.alt) is not an OS keychain"
    priority = _priority(backend)
    if priority is not None and priority < 1:
        return f"keyring does not recommend its backend {name} (priority {priority:g})"
    return None


def _kind_from(kind: str, env: Mapping[str, str]) -> tuple[str, str]:
    raw = env.get(STORE_ENV, "")
    if raw.strip():
        chosen = raw.strip().lower()
        if chosen not in _KINDS:
            raise TokenStoreConfigError(
                f"{STORE_ENV}={raw.strip()!r} is not a token store; use one of: {', '.join(_KINDS)}"
            )
        return chosen, f"{STORE_ENV}={chosen}"
    if kind not in _KINDS:
        raise TokenStoreConfigError(
            f"{kind!r} is not a token store kind; use one of: {', '.join(_KINDS)}"
        )
    return kind, f"{kind!r} was asked for"


def open_token_store(
    kind: TokenStoreKind = "auto",
    *,
    env: Mapping[str, str] = os.environ,
    keyring_backend: KeyringBackendLike | None = None,
) -> TokenStore:
    """Open the token store to use, and log once, at INFO, which one and why.

    ``MCP_FUNNEL_TOKEN_STORE`` in ``env``, when set and not blank, overrides ``kind``.
    ``auto`` picks the OS keychain when keyring has a real, secure backend, else the
    file store under the funnel home. Finding keyring's backend may talk to D-Bus: call
    this once at start-up, not on every request.

    Args:
        kind: ``"auto"``, ``"keyring"``, ``"file"`` or ``"memory"``.
        env: The environment to read ``MCP_FUNNEL_TOKEN_STORE`` and ``MCP_FUNNEL_HOME``
            from.
        keyring_backend: The keyring backend to judge and use instead of
            ``keyring.get_keyring()``.

    Returns:
        A :class:`~funnel_tokenstore.KeyringTokenStore`,
        :class:`~funnel_tokenstore.FileTokenStore` or
        :class:`~funnel_tokenstore.MemoryTokenStore`.

    Raises:
        TokenStoreConfigError: ``kind`` or the environment variable names no store.
        TokenStoreUnavailable: ``keyring`` was asked for and there is no usable keychain.
    """
    chosen, because = _kind_from(kind, env)
    if chosen == "memory":
        logger.info("token store: memory (%s); tokens are lost when the process exits", because)
        return MemoryTokenStore()
    home = funnel_home(env=env)
    if chosen == "file":
        path = home / "tokens.json"
        logger.info("token store: file %s (%s)", path, because)
        return FileTokenStore(path)

    backend: KeyringBackendLike = (
        keyring.get_keyring() if keyring_backend is None else keyring_backend
    )
    name = backend_name(backend)
    problem = _unusable(backend)
    if chosen == "keyring":
        if problem is not None:
            raise TokenStoreUnavailable(
                f"the keyring token store was asked for ({because}), but {problem}. "
                "Start a keychain (on Linux a Secret Service such as gnome-keyring in a "
                f"D-Bus session), or set {STORE_ENV}=file to keep tokens in a 0600 file"
            )
        note = _insecure(backend)
        logger.info(
            "token store: keyring %s (%s)%s", name, because, f"; note: {note}" if note else ""
        )
        return KeyringTokenStore(backend=backend, lock_dir=home / "locks")

    problem = problem or _insecure(backend)
    if problem is None:
        logger.info("token store: keyring %s (auto: a secure OS keychain is available)", name)
        return KeyringTokenStore(backend=backend, lock_dir=home / "locks")
    path = home / "tokens.json"
    logger.info("token store: file %s (auto: %s)", path, problem)
    return FileTokenStore(path)
