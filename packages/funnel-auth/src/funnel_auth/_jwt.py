"""Signed JWTs for RFC 7523: ``private_key_jwt`` client assertions.

A compact JWS (RFC 7515) is three base64url parts; only the signature needs a crypto
library. ``cryptography`` is an optional dependency (``pip install funnel-auth[jwt]``):
it is imported when a key is loaded, and its absence is a configuration error that says
which extra to install.

Supported algorithms: ``ES256``/``ES384``/``ES512`` (EC keys; the DER signature is
converted to the fixed-size ``r || s`` form JWS requires), ``RS256``/``RS384``/``RS512``
and ``PS256``/``PS384``/``PS512`` (RSA keys), and ``EdDSA`` (Ed25519).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any, Final

from funnel_auth._errors import AuthConfigError

__all__ = ["SigningKey", "load_signing_key"]

_EC_ALGS: Final = {"ES256": ("SHA256", 32), "ES384": ("SHA384", 48), "ES512": ("SHA512", 66)}
_RSA_ALGS: Final = {
    "RS256": "SHA256",
    "RS384": "SHA384",
    "RS512": "SHA512",
    "PS256": "SHA256",
    "PS384": "SHA384",
    "PS512": "SHA512",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SigningKey:
    """A private key and its JWS algorithm; ``repr`` never shows the key.

    Build with :func:`load_signing_key`.
    """

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(self, key: Any, algorithm: str, key_id: str | None) -> None:
        self._key = key
        self.algorithm = algorithm
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm!r}, key_id={self.key_id!r})"

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT") -> str:
        """Return the compact JWS of ``claims``."""
        header: dict[str, str] = {"alg": self.algorithm, "typ": typ}
        if self.key_id:
            header["kid"] = self.key_id
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        return signing_input + "." + _b64url(self._signature(signing_input.encode("ascii")))

    def _signature(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        alg = self.algorithm
        if alg in _EC_ALGS:
            hash_name, size = _EC_ALGS[alg]
            der = self._key.sign(data, ec.ECDSA(getattr(hashes, hash_name)()))
            r, s = decode_dss_signature(der)
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if alg in _RSA_ALGS:
            digest = getattr(hashes, _RSA_ALGS[alg])()
            pad = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            signature: bytes = self._key.sign(data, pad, digest)
            return signature
        ed: bytes = self._key.sign(data)
        return ed

    def client_assertion(
        self, *, client_id: str, audience: str, now: float, lifetime: float = 300.0
    ) -> str:
        """An RFC 7523 §3 client assertion: ``iss`` = ``sub`` = client, a fresh ``jti``."""
        issued = int(now)
        return self.sign(
            {
                "iss": client_id,
                "sub": client_id,
                "aud": audience,
                "iat": issued,
                "exp": issued + int(lifetime),
                "jti": secrets.token_urlsafe(24),
            }
        )


def load_signing_key(
    pem: str, *, algorithm: str | None = None, key_id: str | None = None
) -> SigningKey:
    """Load a PEM private key (PKCS#8 or traditional) for signing JWTs.

    Args:
        pem: The PEM text (never logged).
        algorithm: The JWS algorithm; default: ``ES256``/``ES384``/``ES512`` for
            P-256/P-384/P-521 keys, ``RS256`` for RSA, ``EdDSA`` for Ed25519.
        key_id: The ``kid`` header, if the authorization server wants one.

    Raises:
        AuthConfigError: ``cryptography`` is not installed, the PEM is not a private
            key, or ``algorithm`` does not fit the key.
    """
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise AuthConfigError(
            "private_key_jwt needs the cryptography package: pip install 'funnel-auth[jwt]'"
        ) from exc
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        # The message of cryptography's error never contains the key material.
        raise AuthConfigError(f"the private key is not a usable PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        default = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name
        )
        allowed = {default} if default else set()
    elif isinstance(key, rsa.RSAPrivateKey):
        default = "RS256"
        allowed = set(_RSA_ALGS)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        default = "EdDSA"
        allowed = {"EdDSA"}
    else:
        raise AuthConfigError(f"unsupported private key type {type(key).__name__}")
    chosen = algorithm or default
    if chosen is None or chosen not in allowed:
        raise AuthConfigError(
            f"signing algorithm {chosen!r} does not fit this key (use one of {sorted(allowed)})"
        )
    return SigningKey(key, chosen, key_id)
