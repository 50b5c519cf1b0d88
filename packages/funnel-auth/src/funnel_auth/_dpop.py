"""DPoP as a client (RFC 9449, SEP-1932): proof JWTs bound to a key pair per server.

Theory of operation. A DPoP proof is a JWT signed with the client's private key that
carries the public key in its header (``jwk``) and says which request it is for
(``htm`` = method, ``htu`` = the URL without query and fragment, a unique ``jti``, the
time ``iat``, and, on resource requests, ``ath`` = the hash of the access token). The
authorization server binds the tokens it issues to the key's thumbprint (``cnf.jkt``),
so the same key must sign every later proof: the key pair is kept in the token store
next to the tokens (:meth:`DPoPKey.to_bytes`), and a restart keeps a DPoP-bound refresh
token usable.

Servers may demand a nonce (RFC 9449 §8, §9): they answer ``use_dpop_nonce`` with a
``DPoP-Nonce`` header, and the client signs a new proof that carries it. Nonces are kept
per server origin (:class:`NonceCache`); each server's newest one is used.

Only ``ES256`` (P-256) keys are generated. ``cryptography`` is the optional ``jwt``
extra (``pip install 'funnel-auth[jwt]'``): without it the providers keep to Bearer
tokens (and say so), and :class:`DPoPKey` raises a configuration error that says which
extra to install.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from funnel_auth._challenge import parse_www_authenticate
from funnel_auth._errors import AuthConfigError

__all__ = [
    "DPOP_ALGORITHM",
    "DPoPKey",
    "NonceCache",
    "access_token_hash",
    "dpop_available",
    "htu",
    "is_nonce_challenge",
    "server_wants_dpop",
]

DPOP_ALGORITHM: Final = "ES256"
_P256_SIZE: Final = 32
_KEY_FORMAT: Final = "funnel-auth-dpop-1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """The ``ath`` claim: base64url (no padding) of the SHA-256 of the token's ASCII."""
    return _b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def htu(url: str) -> str:
    """The ``htu`` claim for a request to ``url``: without query and fragment (RFC 9449 §4.2).

    Scheme and host are lower-cased and a default port (80 for http, 443 for https) is
    dropped, the syntax-based normalization a server applies before comparing
    (RFC 9449 §4.3, RFC 3986 §6.2.2); user information never goes into a proof.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = (
        host
        if port is None or (scheme, port) in (("http", 80), ("https", 443))
        else f"{host}:{port}"
    )
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def dpop_available() -> bool:
    """Whether this installation can sign proofs (``cryptography``, the ``jwt`` extra)."""
    try:
        import cryptography.hazmat.primitives.asymmetric.ec  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the installed extras
        return False
    return True


def server_wants_dpop(algorithms: Iterable[str] | None) -> bool:
    """Whether ``dpop_signing_alg_values_supported`` metadata lets this client use DPoP."""
    return algorithms is not None and DPOP_ALGORITHM in algorithms


def is_nonce_challenge(www_authenticate: Iterable[str]) -> bool:
    """Whether a resource server's 401 asks for a DPoP nonce (``DPoP error="use_dpop_nonce"``)."""
    return any(
        c.scheme == "dpop" and c.params.get("error") == "use_dpop_nonce"
        for c in parse_www_authenticate(list(www_authenticate))
    )


class NonceCache:
    """The newest ``DPoP-Nonce`` of each server, keyed by origin (``scheme://host:port``)."""

    def __init__(self) -> None:
        self._nonces: dict[str, str] = {}

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    def get(self, url: str) -> str | None:
        """The nonce to put in a proof for a request to ``url``, if its server gave one."""
        return self._nonces.get(self._origin(url))

    def update(self, url: str, headers: Mapping[str, str]) -> bool:
        """Remember the ``DPoP-Nonce`` header of a response from ``url``; whether one was new."""
        nonce = headers.get("dpop-nonce")
        if not nonce:
            return False
        origin = self._origin(url)
        if self._nonces.get(origin) == nonce:
            return False
        # A nonce is opaque; keep a sane bound on what a server can make us store.
        self._nonces[origin] = nonce[:1024]
        return True


class DPoPKey:
    """An ES256 key pair that signs DPoP proofs; ``repr`` never shows the private key.

    Build with :meth:`generate` or :meth:`from_bytes` (what :meth:`to_bytes` stored).
    """

    __slots__ = ("_key", "public_jwk", "thumbprint")

    def __init__(self, key: Any) -> None:
        self._key = key
        numbers = key.public_key().public_numbers()
        # Members in lexicographic order: this is also the RFC 7638 thumbprint input.
        self.public_jwk: Final[dict[str, str]] = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(_P256_SIZE, "big")),
            "y": _b64url(numbers.y.to_bytes(_P256_SIZE, "big")),
        }
        canonical = json.dumps(self.public_jwk, separators=(",", ":"), sort_keys=True)
        self.thumbprint: Final[str] = _b64url(hashlib.sha256(canonical.encode()).digest())

    def __repr__(self) -> str:
        return f"DPoPKey(alg={DPOP_ALGORITHM!r}, jkt={self.thumbprint!r})"

    @staticmethod
    def _ec() -> Any:
        try:
            from cryptography.hazmat.primitives.asymmetric import ec
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise AuthConfigError(
                "DPoP needs the cryptography package: pip install 'funnel-auth[jwt]'"
            ) from exc
        return ec

    @classmethod
    def generate(cls) -> DPoPKey:
        """A new P-256 key pair.

        Raises:
            AuthConfigError: ``cryptography`` is not installed.
        """
        ec = cls._ec()
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def to_bytes(self) -> bytes:
        """The key pair as stored (JSON with the PKCS#8 PEM): a secret, like a token."""
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return json.dumps(
            {"format": _KEY_FORMAT, "alg": DPOP_ALGORITHM, "pem": pem.decode()}
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DPoPKey:
        """Load what :meth:`to_bytes` stored.

        Raises:
            AuthConfigError: ``cryptography`` is missing.
            ValueError: ``raw`` is not a stored DPoP key (the message has no key material).
        """
        ec = cls._ec()
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            document = json.loads(raw)
            known = document.get("format") == _KEY_FORMAT and document.get("alg") == DPOP_ALGORITHM
            key = (
                load_pem_private_key(str(document["pem"]).encode(), password=None)
                if known
                else None
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a stored DPoP key ({type(exc).__name__})") from None
        if key is None:
            raise ValueError("not a stored DPoP key (unknown format)")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("not a stored DPoP key (not a P-256 key)")
        return cls(key)

    def proof(
        self,
        method: str,
        url: str,
        *,
        now: float,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A DPoP proof JWT for one request (RFC 9449 §4.2).

        Args:
            method: The request's HTTP method (``htm``).
            url: The request's URL; query and fragment are left out (``htu``).
            now: The time, seconds since the epoch (``iat``).
            access_token: On resource requests, the token presented (``ath``).
            nonce: The server's ``DPoP-Nonce``, when it gave one.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        ec = self._ec()
        header = {"typ": "dpop+jwt", "alg": DPOP_ALGORITHM, "jwk": self.public_jwk}
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(now),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P256_SIZE, "big") + s.to_bytes(_P256_SIZE, "big")
        return signing_input + "." + _b64url(signature)
