"""Authenticated encryption with rotating keys, for secrets kept where others can read.

One :class:`StateKeys` holds an ordered list of 256-bit keys: the first seals, every one
opens, so a key is rotated by putting the new one first and dropping the old one once
nothing sealed with it is left. The keys come from configuration as text: base64url
(padding optional) of exactly 32 random bytes each, separated by commas, the form
:func:`generate_state_key` prints and ``FUNNEL_STATE_KEY`` holds.

A sealed value is ``b"fs1" || key id (8 bytes) || nonce (12 bytes) || AES-256-GCM
ciphertext and tag``. The key id is a hash of the key, so opening picks the right key
without trying each, and a value sealed under a key that is no longer configured says so.
Every seal binds ``aad`` (associated data: the store key a value lives under, the purpose
of a token), so a sealed value moved to another place does not open there.
:meth:`StateKeys.derive` gives independent keys for each purpose (HKDF-SHA256), so a
session id sealed by one part of funnel never opens as another part's secret.

AES-GCM comes from ``cryptography`` (the ``encryption`` extra), imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from funnel_tokenstore._errors import TokenStoreConfigError, TokenStoreCorrupt

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["STATE_KEY_ENV", "StateKeys", "generate_state_key"]

#: The environment variable :meth:`StateKeys.from_env` reads.
STATE_KEY_ENV: Final = "FUNNEL_STATE_KEY"
_MAGIC: Final = b"fs1"
_KEY_ID_BYTES: Final = 8
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_KEY_BYTES: Final = 32
_HEADER: Final = len(_MAGIC) + _KEY_ID_BYTES + _NONCE_BYTES


def _aesgcm(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise TokenStoreConfigError(
            "encryption needs the 'cryptography' package: install funnel-tokenstore[encryption]"
        ) from exc
    return AESGCM(key)


def generate_state_key() -> str:
    """A new random key in the text form :meth:`StateKeys.parse` reads."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=").decode()


def _decode_key(text: str, position: int) -> bytes:
    item = text.strip()
    try:
        raw = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenStoreConfigError(f"state key {position} is not base64url") from exc
    if len(raw) != _KEY_BYTES:
        raise TokenStoreConfigError(
            f"state key {position} is {len(raw)} bytes; a state key is {_KEY_BYTES} random bytes"
            " (generate one with: funnel-server state-key)"
        )
    return raw


class StateKeys:
    """An ordered set of AES-256-GCM keys: the first seals, any of them opens.

    Args:
        keys: Raw 32-byte keys, the current one first.

    Raises:
        TokenStoreConfigError: No key, a key of the wrong length, or the same key twice.
    """

    __slots__ = ("_ciphers", "_current", "_keys")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise TokenStoreConfigError("no state key given")
        ciphers: dict[bytes, AESGCM] = {}
        current = b""
        for position, key in enumerate(keys, 1):
            if len(key) != _KEY_BYTES:
                raise TokenStoreConfigError(f"state key {position} is not {_KEY_BYTES} bytes")
            key_id = hashlib.sha256(b"funnel state key id\x00" + key).digest()[:_KEY_ID_BYTES]
            if key_id in ciphers:
                raise TokenStoreConfigError(f"state key {position} is given twice")
            ciphers[key_id] = _aesgcm(key)
            current = current or key_id
        self._ciphers = ciphers
        self._current = current
        self._keys: tuple[bytes, ...] = tuple(keys)

    @classmethod
    def parse(cls, text: str) -> StateKeys:
        """Read keys from their text form: base64url keys separated by commas, current first.

        Raises:
            TokenStoreConfigError: Text that is not such a list (the message never
                repeats the text).
        """
        items = [item for item in text.split(",") if item.strip()]
        return cls([_decode_key(item, position) for position, item in enumerate(items, 1)])

    @classmethod
    def from_env(cls, variable: str = STATE_KEY_ENV) -> StateKeys | None:
        """The keys in the environment variable ``variable``, or ``None`` when it is unset or empty.

        Raises:
            TokenStoreConfigError: The variable is set to something that is not a key list.
        """
        text = os.environ.get(variable, "")
        return cls.parse(text) if text.strip() else None

    def derive(self, purpose: str) -> StateKeys:
        """Independent keys for one purpose, each derived from the matching configured key.

        Rotation carries over: the derived set seals with the current key's derivative and
        opens with every key's.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        info = b"funnel state key\x00" + purpose.encode()
        return StateKeys(
            [
                HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(key)
                for key in self._keys
            ]
        )

    def seal(self, plaintext: bytes, *, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate ``plaintext`` under the current key, bound to ``aad``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = self._ciphers[self._current].encrypt(nonce, plaintext, aad)
        return _MAGIC + self._current + nonce + ciphertext

    def open(self, sealed: bytes, *, aad: bytes = b"") -> bytes:
        """Check and decrypt a value :meth:`seal` made with any of the keys and the same ``aad``.

        Raises:
            TokenStoreCorrupt: Not a sealed value, sealed under a key no longer configured,
                tampered with, or sealed with other associated data.
        """
        from cryptography.exceptions import InvalidTag

        if len(sealed) < _HEADER + _TAG_BYTES or not sealed.startswith(_MAGIC):
            raise TokenStoreCorrupt("not a sealed value")
        key_id = sealed[len(_MAGIC) : len(_MAGIC) + _KEY_ID_BYTES]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise TokenStoreCorrupt("sealed under a state key that is no longer configured")
        nonce = sealed[len(_MAGIC) + _KEY_ID_BYTES : _HEADER]
        try:
            return cipher.decrypt(nonce, sealed[_HEADER:], aad)
        except InvalidTag:
            raise TokenStoreCorrupt("a sealed value failed its integrity check") from None

    def is_current(self, sealed: bytes) -> bool:
        """Whether ``sealed`` was sealed under the current key (else re-seal it to rotate)."""
        return sealed[len(_MAGIC) : len(_MAGIC) + _KEY_ID_BYTES] == self._current

    def __repr__(self) -> str:
        return f"StateKeys({len(self._ciphers)} keys)"  # never the keys
