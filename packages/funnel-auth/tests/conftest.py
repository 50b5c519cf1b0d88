"""Real peers for the funnel-auth tests.

- Node authorization servers from ``tools/node_modules`` (``oidc-provider`` and
  ``oauth2-mock-server``), started by ``tools/peers/*.mjs`` on 127.0.0.1: the first
  stdout line is the issuer URL, later lines are JSON events (token grants); closing
  stdin stops them.
- :class:`ResourceServer`: a small MCP resource server (plain ASGI on uvicorn, bound to
  a pre-bound 127.0.0.1:0 socket) that answers 401/403 with RFC 6750/9728 challenges,
  serves protected-resource metadata and validates tokens by introspection at the AS.
  With ``dpop=True`` it is a DPoP resource server (RFC 9449 §7): it challenges with the
  ``DPoP`` scheme and checks each proof on its own (:func:`check_dpop_proof`), against
  the ``cnf.jkt`` the AS reports; ``dpop_nonce`` makes it demand that nonce (§9).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
import pytest
import uvicorn

from funnel_auth import TokenSet
from funnel_tokenstore import MemoryTokenStore

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / "tools"
NODE = shutil.which("node")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- Node peers


@dataclass
class NodePeer:
    """A running Node authorization server and the events it printed."""

    url: str
    process: anyio.abc.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def count(self, event: str, grant_type: str | None = None) -> int:
        return sum(
            1
            for e in self.events
            if e.get("event") == event and (grant_type is None or e.get("grant_type") == grant_type)
        )

    async def command(self, payload: dict[str, Any]) -> None:
        """Send one stdin command and wait for its acknowledgement."""
        assert self.process.stdin is not None
        acks = self.count("ok")
        await self.process.stdin.send((json.dumps(payload) + "\n").encode())
        with anyio.fail_after(5):
            while self.count("ok") == acks:
                await self.changed.wait()


async def _read_events(peer: NodePeer, lines: AsyncIterator[str]) -> None:
    async for line in lines:
        try:
            peer.events.append(json.loads(line))
        except ValueError:
            continue
        changed, peer.changed = peer.changed, anyio.Event()
        changed.set()


async def _lines(stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


@asynccontextmanager
async def node_peer(script: str, *args: str) -> AsyncIterator[NodePeer]:
    if NODE is None or not (TOOLS / "node_modules").is_dir():
        pytest.skip("node and the npm test peers (npm ci --prefix tools) are needed")
    process = await anyio.open_process(
        [NODE, str(TOOLS / "peers" / script), *args], cwd=TOOLS, stderr=None
    )
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        with anyio.fail_after(20):
            url = await lines.__anext__()
        peer = NodePeer(url=url.strip().replace("localhost", "127.0.0.1"), process=process)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read_events, peer, lines)
            try:
                yield peer
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(5, shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(3):
                await process.wait()
            if process.returncode is None:
                process.terminate()
                await process.wait()


@pytest.fixture
async def oidc() -> AsyncIterator[NodePeer]:
    async with node_peer("oidc-provider.mjs") as peer:
        yield peer


@pytest.fixture
async def mock_as() -> AsyncIterator[NodePeer]:
    async with node_peer("oauth2-mock-server.mjs") as peer:
        yield peer


SOAK_TOKEN_TTL = 3


@pytest.fixture
async def rotating_as() -> AsyncIterator[NodePeer]:
    """Short-lived access tokens, single-use refresh tokens, scriptable faults."""
    async with node_peer("rotating-as.mjs", str(SOAK_TOKEN_TTL)) as peer:
        yield peer


# --------------------------------------------------------------------------- resource server


@dataclass
class ResourceServer:
    """A protected MCP resource server: ``/mcp`` needs ``mcp:read``, ``/mcp/admin`` ``mcp:admin``."""

    issuer: str
    introspection_endpoint: str
    base: str = ""
    prm_location: str = "path"  # "path", "root" or "none"
    prm_resource: str | None = None  # override to test mismatch rejection
    challenge_metadata: bool = True
    challenge_scope: str | None = "mcp:read"
    scopes_supported: list[str] | None = field(default_factory=lambda: ["mcp:read"])
    check_audience: bool = True
    dpop: bool = False
    dpop_nonce: str | None = None
    dpop_jtis: list[str] = field(default_factory=list)
    dpop_errors: list[str] = field(default_factory=list)
    seen_tokens: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    @property
    def prm_url(self) -> str:
        suffix = "/mcp" if self.prm_location == "path" else ""
        return f"{self.base}/.well-known/oauth-protected-resource{suffix}"

    def _challenge(self, error: str | None = None, scope: str | None = None) -> str:
        parts = []
        if error:
            parts.append(f'error="{error}"')
        if scope:
            parts.append(f'scope="{scope}"')
        if self.challenge_metadata and self.prm_location != "none":
            parts.append(f'resource_metadata="{self.prm_url}"')
        scheme = "DPoP" if self.dpop else "Bearer"
        return f"{scheme} " + ", ".join(parts) if parts else scheme

    async def _introspect(self, token: str) -> dict[str, Any]:
        basic = base64.b64encode(b"rs:rs-secret").decode()
        async with httpx.AsyncClient() as client:
            response = await client.post(
                self.introspection_endpoint,
                data={"token": token},
                headers={"Authorization": f"Basic {basic}"},
            )
        result: dict[str, Any] = response.json()
        return result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        while (await receive()).get("more_body"):
            pass
        if path in (
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource",
        ) and path == self.prm_url.removeprefix(self.base):
            body: dict[str, Any] = {
                "resource": self.prm_resource or self.url,
                "authorization_servers": [self.issuer],
            }
            if self.scopes_supported is not None:
                body["scopes_supported"] = self.scopes_supported
            await _respond(send, 200, body)
            return
        if not path.startswith("/mcp"):
            await _respond(send, 404, {"error": "not found"})
            return
        self.requests += 1
        auth = headers.get("authorization", "")
        scheme = "dpop " if self.dpop else "bearer "
        if not auth.lower().startswith(scheme):
            await _respond(send, 401, {}, challenge=self._challenge(scope=self.challenge_scope))
            return
        token = auth[len(scheme) :]
        self.seen_tokens.append(token)
        self.log.append(f"request:{token}")
        info = await self._introspect(token)
        if self.dpop:
            try:
                jkt, claims = check_dpop_proof(
                    headers.get("dpop", ""),
                    method=scope["method"],
                    url=self.base + path,
                    access_token=token,
                )
                if claims["jti"] in self.dpop_jtis:
                    raise ValueError("replayed jti")
                self.dpop_jtis.append(claims["jti"])
                if (info.get("cnf") or {}).get("jkt") != jkt:
                    raise ValueError("the proof's key is not the one the token is bound to")
            except ValueError as exc:
                self.dpop_errors.append(str(exc))
                await _respond(send, 401, {}, challenge=self._challenge(error="invalid_token"))
                return
            if self.dpop_nonce is not None and claims.get("nonce") != self.dpop_nonce:
                await _respond(
                    send,
                    401,
                    {"error": "use_dpop_nonce"},
                    challenge=self._challenge(error="use_dpop_nonce"),
                    extra=[(b"dpop-nonce", self.dpop_nonce.encode())],
                )
                return
        audience = info.get("aud")
        audiences = audience if isinstance(audience, list) else [audience] if audience else []
        if not info.get("active") or (self.check_audience and self.url not in audiences):
            await _respond(send, 401, {}, challenge=self._challenge(error="invalid_token"))
            return
        granted = set(str(info.get("scope", "")).split())
        needed = "mcp:admin" if path == "/mcp/admin" else "mcp:read"
        if self.check_audience and needed not in granted:
            await _respond(
                send, 403, {}, challenge=self._challenge(error="insufficient_scope", scope=needed)
            )
            return
        await _respond(send, 200, {"ok": True, "path": path})


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_dpop_proof(
    proof: str, *, method: str, url: str, access_token: str | None
) -> tuple[str, dict[str, Any]]:
    """Check an ES256 DPoP proof as a resource server does (RFC 9449 §4.3), independently
    of funnel-auth. Returns the key's RFC 7638 thumbprint and the claims.

    Raises:
        ValueError: The proof is missing or wrong (the message says how).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if not proof or "," in proof:
        raise ValueError("missing or multiple DPoP proofs")
    try:
        head, body, sig = proof.split(".")
        header = json.loads(_unb64(head))
        claims = json.loads(_unb64(body))
    except ValueError as exc:
        raise ValueError(f"not a JWT: {exc}") from None
    jwk = header.get("jwk") or {}
    if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256" or "d" in jwk:
        raise ValueError(f"bad header {sorted(header)}")
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_unb64(jwk["x"]), "big"),
        int.from_bytes(_unb64(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    raw = _unb64(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("signature does not verify") from None
    if claims.get("htm") != method or claims.get("htu") != url.split("?", maxsplit=1)[0]:
        raise ValueError(f"htm/htu {claims.get('htm')} {claims.get('htu')} != {method} {url}")
    if not isinstance(claims.get("jti"), str) or abs(time.time() - claims.get("iat", 0)) > 300:
        raise ValueError("jti or iat")
    if access_token is not None:
        ath = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest())
        if claims.get("ath") != ath.rstrip(b"=").decode():
            raise ValueError("ath does not match the token")
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    jkt = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return jkt, claims


async def _respond(
    send: Send,
    status: int,
    body: dict[str, Any],
    *,
    challenge: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(extra or []),
    ]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Run ``app`` on uvicorn on a pre-bound 127.0.0.1:0 socket; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from now on: no readiness wait needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", ws="none", http="h11", log_config=None, log_level="warning"
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def resource_server(
    issuer: str, introspection_endpoint: str, **options: Any
) -> AsyncIterator[ResourceServer]:
    rs = ResourceServer(issuer=issuer, introspection_endpoint=introspection_endpoint, **options)
    async with serve_asgi(rs) as base:
        rs.base = base
        yield rs


@pytest.fixture
async def rs(oidc: NodePeer) -> AsyncIterator[ResourceServer]:
    async with resource_server(oidc.url, oidc.url + "/token/introspection") as server:
        yield server


class RecordingStore(MemoryTokenStore):
    """A memory store that logs each write into a shared event log."""

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []
        self.written: set[str] = set()

    async def set(self, key: str, value: bytes) -> None:
        await super().set(key, value)
        self.written.add(key)
        if ":tokens:" in key:
            token = json.loads(value)["access_token"]
            self.log.append(f"stored:{token}")

    async def delete(self, key: str) -> None:
        await super().delete(key)
        self.written.discard(key)

    async def token_sets(self) -> list[TokenSet]:
        out = []
        for key in sorted(self.written):
            if ":tokens:" in key:
                raw = await self.get(key)
                assert raw is not None
                out.append(msgspec.json.decode(raw, type=TokenSet))
        return out

    async def expire_tokens(self, *, now: float) -> None:
        """Make every stored access token expired, as if time had passed."""
        for key in [k for k in self.written if ":tokens:" in k]:
            raw = await self.get(key)
            assert raw is not None
            tokens = msgspec.json.decode(raw, type=TokenSet)
            await MemoryTokenStore.set(
                self, key, msgspec.json.encode(msgspec.structs.replace(tokens, expires_at=now - 1))
            )


@pytest.fixture
def store(rs: ResourceServer) -> RecordingStore:
    return RecordingStore(rs.log)


@pytest.fixture
async def mock_rs(mock_as: NodePeer) -> AsyncIterator[ResourceServer]:
    # The mock's introspection says "active" for anything: audience is checked elsewhere.
    async with resource_server(
        mock_as.url, mock_as.url + "/introspect", check_audience=False
    ) as server:
        yield server


@pytest.fixture
async def rotating_rs(rotating_as: NodePeer) -> AsyncIterator[ResourceServer]:
    # The rotating AS says "active" only for its unexpired tokens; no audience claim.
    async with resource_server(
        rotating_as.url, rotating_as.url + "/introspect", check_audience=False
    ) as server:
        yield server


@pytest.fixture
def mstore() -> RecordingStore:
    return RecordingStore()
