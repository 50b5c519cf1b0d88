"""DPoP proofs (RFC 9449): claims, signature, ``ath``, ``htu``, stored keys, nonces. No I/O."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from funnel_auth._dpop import (
    DPoPKey,
    NonceCache,
    access_token_hash,
    htu,
    is_nonce_challenge,
    server_wants_dpop,
)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _decode(jwt: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    header, claims, signature = jwt.split(".")
    return (
        json.loads(_unb64(header)),
        json.loads(_unb64(claims)),
        f"{header}.{claims}".encode("ascii"),
        _unb64(signature),
    )


def _verify_with_jwk(jwk: dict[str, str], signing_input: bytes, signature: bytes) -> None:
    """Verify an ES256 JWS signature with nothing but the public JWK (as a server does)."""
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_unb64(jwk["x"]), "big"),
        int.from_bytes(_unb64(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


def test_a_token_request_proof_has_the_rfc_9449_header_and_claims() -> None:
    key = DPoPKey.generate()
    proof = key.proof("post", "https://as.example/token?x=1#frag", now=1_700_000_000.7)
    header, claims, signing_input, signature = _decode(proof)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    assert "d" not in header["jwk"]
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://as.example/token"
    assert claims["iat"] == 1_700_000_000
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert "ath" not in claims and "nonce" not in claims
    _verify_with_jwk(header["jwk"], signing_input, signature)


def test_a_resource_proof_carries_ath_and_the_nonce_and_verifies() -> None:
    key = DPoPKey.generate()
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    proof = key.proof("GET", "http://127.0.0.1:9/mcp", now=5.0, access_token=token, nonce="n-1")
    header, claims, signing_input, signature = _decode(proof)
    expected_ath = (
        base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    )
    assert claims["ath"] == expected_ath == access_token_hash(token)
    assert claims["nonce"] == "n-1"
    assert claims["htm"] == "GET"
    _verify_with_jwk(header["jwk"], signing_input, signature)


def test_a_tampered_proof_does_not_verify() -> None:
    key = DPoPKey.generate()
    header, _claims, signing_input, signature = _decode(
        key.proof("POST", "https://a.example/t", now=1)
    )
    with pytest.raises(InvalidSignature):
        _verify_with_jwk(header["jwk"], signing_input.replace(b".", b".x", 1), signature)
    other = DPoPKey.generate()
    with pytest.raises(InvalidSignature):
        _verify_with_jwk(other.public_jwk, signing_input, signature)


def test_every_proof_has_a_unique_jti() -> None:
    key = DPoPKey.generate()
    jtis = {_decode(key.proof("POST", "https://a.example/t", now=1))[1]["jti"] for _ in range(200)}
    assert len(jtis) == 200


def test_the_thumbprint_is_rfc_7638_over_the_required_members() -> None:
    key = DPoPKey.generate()
    jwk = key.public_jwk
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    assert key.thumbprint == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_a_stored_key_loads_as_the_same_key_and_repr_shows_no_secret() -> None:
    key = DPoPKey.generate()
    raw = key.to_bytes()
    again = DPoPKey.from_bytes(raw)
    assert again.thumbprint == key.thumbprint
    # A proof of the loaded key verifies with the original public key: same key pair.
    _header, _c, signing_input, signature = _decode(
        again.proof("POST", "https://a.example/t", now=1)
    )
    _verify_with_jwk(key.public_jwk, signing_input, signature)
    assert "PRIVATE" not in repr(again) and key.thumbprint in repr(again)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{}", b"not json", b'{"format":"funnel-auth-dpop-1","alg":"ES256","pem":"x"}', b"[1]"],
)
def test_an_unusable_stored_key_is_a_clear_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a stored DPoP key"):
        DPoPKey.from_bytes(raw)


def test_a_stored_key_of_another_curve_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    raw = json.dumps({"format": "funnel-auth-dpop-1", "alg": "ES256", "pem": pem}).encode()
    with pytest.raises(ValueError, match="P-256") as caught:
        DPoPKey.from_bytes(raw)
    assert "BEGIN" not in str(caught.value)


# --------------------------------------------------------------------------- htu

_hosts = st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,10}(\.[a-zA-Z]{2,5}){0,2}", fullmatch=True)
_paths = st.lists(st.from_regex(r"[A-Za-z0-9._~%-]{0,8}", fullmatch=True), max_size=4).map(
    lambda segments: "".join("/" + s for s in segments)
)
_queries = st.from_regex(r"[A-Za-z0-9=&%._-]{0,12}", fullmatch=True)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=_hosts,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    path=_paths,
    query=st.one_of(st.none(), _queries),
    fragment=st.one_of(st.none(), _queries),
)
def test_htu_drops_query_and_fragment_and_normalises_the_rest(  # noqa: PLR0917 -- hypothesis
    scheme: str, host: str, port: int | None, path: str, query: str | None, fragment: str | None
) -> None:
    netloc = host if port is None else f"{host}:{port}"
    url = f"{scheme}://{netloc}{path}"
    full = (
        url
        + (f"?{query}" if query is not None else "")
        + (f"#{fragment}" if fragment is not None else "")
    )
    result = htu(full)
    assert "?" not in result and "#" not in result
    assert result == htu(url)  # the query and fragment never matter
    assert htu(result) == result  # idempotent
    lower = scheme.lower()
    default = (lower, port) in (("http", 80), ("https", 443))
    expected_netloc = host.lower() if port is None or default else f"{host.lower()}:{port}"
    assert result == f"{lower}://{expected_netloc}{path or '/'}"


def test_htu_of_the_suites_endpoints_and_refusals() -> None:
    assert htu("http://127.0.0.1:3001/mcp") == "http://127.0.0.1:3001/mcp"
    assert htu("https://user:pw@AS.Example:443/token?a=1") == "https://as.example/token"
    assert htu("http://[::1]:8080/x#y") == "http://[::1]:8080/x"
    for bad in ("/relative", "ftp://host/x", "https:///nohost"):
        with pytest.raises(ValueError, match="absolute http"):
            htu(bad)


# --------------------------------------------------------------------------- nonces, metadata


def test_nonce_challenges_are_recognised_and_other_challenges_are_not() -> None:
    assert is_nonce_challenge(['DPoP error="use_dpop_nonce", resource_metadata="http://x/y"'])
    assert is_nonce_challenge(['Bearer realm="a"', 'DPoP algs="ES256", error="use_dpop_nonce"'])
    assert not is_nonce_challenge(['DPoP error="invalid_token"'])
    assert not is_nonce_challenge(['Bearer error="use_dpop_nonce"'])
    assert not is_nonce_challenge([])


def test_nonces_are_kept_per_origin_and_the_newest_wins() -> None:
    cache = NonceCache()
    assert cache.get("http://127.0.0.1:1/token") is None
    assert cache.update("http://127.0.0.1:1/token", {"dpop-nonce": "a"})
    assert not cache.update("http://127.0.0.1:1/other", {"dpop-nonce": "a"})  # same origin, same
    assert not cache.update("http://127.0.0.1:1/token", {})
    assert cache.get("HTTP://127.0.0.1:1/anything?q") == "a"
    assert cache.get("http://127.0.0.1:2/token") is None
    assert cache.update("http://127.0.0.1:1/token", {"dpop-nonce": "b"})
    assert cache.get("http://127.0.0.1:1/token") == "b"


def test_dpop_is_used_only_where_es256_is_supported() -> None:
    assert server_wants_dpop(["ES256", "EdDSA"])
    assert not server_wants_dpop(["RS256"])
    assert not server_wants_dpop([])
    assert not server_wants_dpop(None)
