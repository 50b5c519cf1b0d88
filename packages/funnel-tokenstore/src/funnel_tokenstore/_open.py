"""Choosing a token store: ``open_token_store``.

``auto`` takes the OS keychain only when keyring found a real, secure backend, and the
file store otherwise. Not secure enough for ``auto``: ``keyring.backends.fail`` (no
keychain at all; every call raises), ``keyring.backends.null`` (forgets everything),
a chainer whose first member is one of those, backends keyring itself does not recommend
(priority below 1), and the ``keyrings.alt`` backends (plaintext or homemade
encryption). Asking for ``keyring`` explicitly accepts all but fail/null.

``redis`` (with a URL; ``MCP_FUNNEL_TOKEN_STORE`` may hold a ``redis://``, ``rediss://`` or
``unix://`` URL instead of a kind) is the store shared by several replicas. With state keys (``FUNNEL_STATE_KEY``, or the
``state_keys`` argument) the file and Redis stores are wrapped in
:class:`~funnel_tokenstore.EncryptedTokenStore`. The keychain is not: the OS already
encrypts its entries with the user's login, and a second key would only add a way to
lose them. The memory store is not either: it never leaves the process.
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

from funnel_tokenstore._crypto import STATE_KEY_ENV, StateKeys
from funnel_tokenstore._encrypted import EncryptedTokenStore
from funnel_tokenstore._errors import TokenStoreConfigError, TokenStoreUnavailable
from funnel_tokenstore._file import FileTokenStore
from funnel_tokenstore._home import funnel_home
from funnel_tokenstore._keyring import KeyringBackendLike, KeyringTokenStore, backend_name
from funnel_tokenstore._memory import MemoryTokenStore
from funnel_tokenstore._protocol import TokenStore
from funnel_tokenstore._redis import RedisTokenStore, redact_url

__all__ = ["STORE_ENV", "TokenStoreKind", "open_token_store"]

# One logger for the package: the private module names are not part of the contract.
logger = logging.getLogger("funnel_tokenstore")

STORE_ENV = "MCP_FUNNEL_TOKEN_STORE"

TokenStoreKind: TypeAlias = Literal["auto", "keyring", "file", "memory", "redis"]
_KINDS: tuple[str, ...] = get_args(TokenStoreKind)
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def _is_url(text: str) -> bool:
    return text.strip().lower().startswith(_URL_SCHEMES)


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


def _kind_from(kind: str, url: str | None, env: Mapping[str, str]) -> tuple[str, str, str | None]:
    """The kind, why it was chosen, and the Redis URL if any."""
    raw = env.get(STORE_ENV, "")
    if raw.strip():
        if _is_url(raw):
            return "redis", f"{STORE_ENV}={redact_url(raw.strip())}", raw.strip()
        chosen = raw.strip().lower()
        if chosen not in _KINDS:
            raise TokenStoreConfigError(
                f"{STORE_ENV}={raw.strip()!r} is not a token store; use one of: "
                f"{', '.join(_KINDS)}, or a redis:// URL"
            )
        return chosen, f"{STORE_ENV}={chosen}", url
    if kind not in _KINDS:
        raise TokenStoreConfigError(
            f"{kind!r} is not a token store kind; use one of: {', '.join(_KINDS)}, "
            "or a redis:// URL"
        )
    return kind, f"{kind!r} was asked for", url


def _state_keys(given: StateKeys | str | None, env: Mapping[str, str]) -> StateKeys | None:
    if isinstance(given, StateKeys):
        return given
    if given is not None:
        return StateKeys.parse(given)
    text = env.get(STATE_KEY_ENV, "")
    if not text.strip():
        return None
    try:
        return StateKeys.parse(text)
    except TokenStoreConfigError as exc:
        raise TokenStoreConfigError(f"{STATE_KEY_ENV}: {exc}") from None


def _encrypted(store: TokenStore, keys: StateKeys | None) -> tuple[TokenStore, str]:
    if keys is None:
        return store, ""
    return EncryptedTokenStore(store, keys), f", encrypted at rest ({STATE_KEY_ENV}: {keys!r})"


def _unencrypted_note(keys: StateKeys | None, why: str) -> str:
    return f"; state keys not used: {why}" if keys is not None else ""


def open_token_store(
    kind: TokenStoreKind = "auto",
    *,
    env: Mapping[str, str] = os.environ,
    keyring_backend: KeyringBackendLike | None = None,
    url: str | None = None,
    state_keys: StateKeys | str | None = None,
    namespace: str = "funnel",
) -> TokenStore:
    """Open the token store to use, and log once, at INFO, which one and why.

    ``MCP_FUNNEL_TOKEN_STORE`` in ``env``, when set and not blank, overrides ``kind``
    (a kind, or a ``redis://``, ``rediss://`` or ``unix://`` URL). ``auto`` picks the OS keychain when keyring has a real,
    secure backend, else the file store under the funnel home. Finding keyring's backend
    may talk to D-Bus: call this once at start-up, not on every request.

    With state keys (``state_keys``, else ``FUNNEL_STATE_KEY`` in ``env``) the file and
    Redis stores are encrypted at rest (:class:`~funnel_tokenstore.EncryptedTokenStore`;
    values stored before are read and re-sealed). The keychain and memory stores are
    returned unwrapped: the OS already protects the one, the other never leaves the
    process. Redis without a key logs a WARNING: its dumps and replicas hold tokens in
    the clear then.

    Args:
        kind: ``"auto"``, ``"keyring"``, ``"file"``, ``"memory"`` or ``"redis"`` (with
            ``url``).
        env: The environment to read ``MCP_FUNNEL_TOKEN_STORE``, ``MCP_FUNNEL_HOME`` and
            ``FUNNEL_STATE_KEY`` from.
        keyring_backend: The keyring backend to judge and use instead of
            ``keyring.get_keyring()``.
        url: The Redis URL when ``kind`` is ``"redis"``.
        state_keys: Encrypt with these keys (or their text form) instead of
            ``FUNNEL_STATE_KEY``.
        namespace: The Redis store's key prefix.

    Returns:
        A :class:`~funnel_tokenstore.KeyringTokenStore`,
        :class:`~funnel_tokenstore.FileTokenStore`,
        :class:`~funnel_tokenstore.RedisTokenStore` or
        :class:`~funnel_tokenstore.MemoryTokenStore`, the file and Redis ones inside an
        :class:`~funnel_tokenstore.EncryptedTokenStore` when there are state keys.

    Raises:
        TokenStoreConfigError: ``kind`` or the environment variable names no store,
            ``redis`` without a URL, or state keys that do not parse.
        TokenStoreUnavailable: ``keyring`` was asked for and there is no usable keychain.
    """
    chosen, because, redis_url = _kind_from(kind, url, env)
    keys = _state_keys(state_keys, env)
    if chosen == "memory":
        logger.info(
            "token store: memory (%s); tokens are lost when the process exits%s",
            because,
            _unencrypted_note(keys, "memory never leaves the process"),
        )
        return MemoryTokenStore()
    if chosen == "redis":
        if not redis_url:
            raise TokenStoreConfigError(
                f"the redis token store needs a URL: pass url=..., or set {STORE_ENV}=redis://host"
            )
        redis_store = RedisTokenStore(redis_url, namespace=namespace)
        store, note = _encrypted(redis_store, keys)
        logger.info(
            "token store: redis %s namespace %s (%s)%s",
            redis_store.url,
            namespace,
            because,
            note,
        )
        if keys is None:
            logger.warning(
                "tokens in Redis %s are stored unencrypted: anyone with a dump, a replica or "
                "a backup reads them; set %s (funnel_tokenstore.generate_state_key() makes one)",
                redis_store.url,
                STATE_KEY_ENV,
            )
        return store
    home = funnel_home(env=env)
    if chosen == "file":
        path = home / "tokens.json"
        store, note = _encrypted(FileTokenStore(path), keys)
        logger.info("token store: file %s (%s)%s", path, because, note)
        return store
    keychain_note = _unencrypted_note(keys, "the OS keychain encrypts its entries itself")

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
        insecure = _insecure(backend)
        logger.info(
            "token store: keyring %s (%s)%s%s",
            name,
            because,
            f"; note: {insecure}" if insecure else "",
            keychain_note,
        )
        return KeyringTokenStore(backend=backend, lock_dir=home / "locks")

    problem = problem or _insecure(backend)
    if problem is None:
        logger.info(
            "token store: keyring %s (auto: a secure OS keychain is available)%s",
            name,
            keychain_note,
        )
        return KeyringTokenStore(backend=backend, lock_dir=home / "locks")
    path = home / "tokens.json"
    store, note = _encrypted(FileTokenStore(path), keys)
    logger.info("token store: file %s (auto: %s)%s", path, problem, note)
    return store
