"""Inbound security, the pure parts: the API token, the dashboard cookie, Host/Origin policy.

:class:`funnel_server._middleware.SecurityMiddleware` applies them to every request (its
module documentation is the theory of operation). These parts import no web framework,
so ``funnel-server --stdio`` loads the token without loading Litestar.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

from funnel_auth import RateLimiter

if TYPE_CHECKING:
    from funnel_server._shared import SharedState

__all__ = [
    "API_TOKEN_ENV",
    "COOKIE_NAME",
    "TOKEN_FILE_NAME",
    "InboundAuth",
    "OriginPolicy",
    "is_loopback_host",
    "load_api_token",
    "safe_next_path",
]

logger = logging.getLogger("funnel_server.security")

API_TOKEN_ENV: Final = "FUNNEL_API_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE_NAME: Final = "api-token"  # noqa: S105 - a file name, not a secret
COOKIE_NAME: Final = "funnel_session"
_COOKIE_CONTEXT: Final = b"funnel-dashboard-cookie-v1"
_MIN_TOKEN_LENGTH: Final = 16

Verdict = Literal["ok", "missing", "invalid"]


def load_api_token(home: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The inbound API token and where it came from.

    ``FUNNEL_API_TOKEN`` when set; else the token stored in ``<home>/api-token``; else a
    new one (``secrets.token_urlsafe(32)``), stored there with mode 0600.

    Returns:
        The token and its source (``FUNNEL_API_TOKEN`` or the file path).

    Raises:
        ValueError: ``FUNNEL_API_TOKEN`` is set but shorter than 16 characters.
    """
    environ = os.environ if environ is None else environ
    from_env = environ.get(API_TOKEN_ENV, "").strip()
    if from_env:
        if len(from_env) < _MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{API_TOKEN_ENV} is too short: use at least {_MIN_TOKEN_LENGTH} random characters"
            )
        return from_env, API_TOKEN_ENV
    path = home / TOKEN_FILE_NAME
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if len(stored) >= _MIN_TOKEN_LENGTH:
        if path.stat().st_mode & 0o077:
            logger.warning("%s was readable by others; making it private (0600)", path)
            path.chmod(0o600)
        return stored, str(path)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE_NAME}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(tmp, path)
    logger.info("generated a new API token in %s", path)
    return token, str(path)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> str:
    """The host name of a ``Host`` header value (port removed, brackets kept off)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@functools.lru_cache(maxsize=256)
def _loopback_name(name: str) -> bool:
    # Host headers repeat (a handful of names per server): judge each once.
    return is_loopback_host(name)


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which ``Host`` and ``Origin`` values a request may carry.

    Everything that does not depend on the request is computed once, here.

    Attributes:
        bind_host: The address the server listens on.
        allowed_hosts: Further host names to accept (a server reached by a DNS name).
        allowed_origins: Further origins to accept (``https://example.com:8443``).
    """

    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    _loopback_bind: bool = field(init=False, repr=False, compare=False)
    _checks_host: bool = field(init=False, repr=False, compare=False)
    _host_names: frozenset[str] = field(init=False, repr=False, compare=False)
    _origins: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loopback_bind = is_loopback_host(self.bind_host)
        # On loopback, DNS rebinding is the threat: only loopback names reach us honestly.
        # On a public bind the token is mandatory and the Host is whatever name people use,
        # unless the operator lists the names.
        object.__setattr__(self, "_loopback_bind", loopback_bind)
        object.__setattr__(self, "_checks_host", loopback_bind or bool(self.allowed_hosts))
        names = {allowed.lower() for allowed in self.allowed_hosts} | {_split_host(self.bind_host)}
        object.__setattr__(self, "_host_names", frozenset(names))
        origins = {allowed.lower().rstrip("/") for allowed in self.allowed_origins}
        object.__setattr__(self, "_origins", frozenset(origins))

    def host_ok(self, host: str | None) -> bool:
        """Whether a request's ``Host`` header is acceptable."""
        if not self._checks_host:
            return True
        if not host:
            return False
        name = _split_host(host)
        return name in self._host_names or _loopback_name(name)

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a request's ``Origin`` header (if any) is acceptable."""
        if origin is None:
            return True  # not a browser, or a same-origin GET navigation
        origin = origin.strip().lower().rstrip("/")
        if origin in self._origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null", file://, extensions
        if _loopback_name(parts.hostname):
            return True
        # The dashboard itself, reached under a name the Host check accepted.
        return not self._loopback_bind and host is not None and parts.netloc == host.strip().lower()


class InboundAuth:
    """Checks inbound credentials against the API token, in constant time.

    Args:
        token: The API token.
        limiter: Counts failed attempts per client address.
        shared: With several replicas, where failed attempts are counted instead (once
            across replicas, with the limiter's attempts and window).
    """

    def __init__(
        self, token: str, *, limiter: RateLimiter, shared: SharedState | None = None
    ) -> None:
        self._token = token.encode()
        self.limiter = limiter
        self.shared = shared
        self.cookie_value = hmac.new(self._token, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()

    async def failed(self, client: str) -> float:
        """Count a failed attempt from ``client``; the seconds it must wait (0: not limited)."""
        if self.shared is not None:
            from funnel_server._shared import SharedStateUnavailable

            bucket = (f"auth:{client}", self.limiter.max_attempts, self.limiter.window)
            try:
                return await self.shared.acquire([bucket])
            except SharedStateUnavailable as exc:
                # Still limited while Redis is away: by this replica alone.
                logger.warning("failed-auth counter unreachable (%s): counting locally", exc)
        return self.limiter.acquire(client)

    def token_ok(self, candidate: str) -> bool:
        """Whether ``candidate`` is the API token."""
        return hmac.compare_digest(candidate.encode(), self._token)

    def verdict(self, headers: Mapping[str, str]) -> Verdict:
        """Judge a request's ``Authorization`` header and cookie."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return "invalid"
            return "ok" if self.token_ok(credential.strip()) else "invalid"
        cookie = _cookie(headers.get("cookie"))
        if cookie is None:
            return "missing"
        return (
            "ok" if hmac.compare_digest(cookie.encode(), self.cookie_value.encode()) else "invalid"
        )

    def set_cookie_header(self, *, secure: bool) -> str:
        """The ``Set-Cookie`` value that signs the dashboard in."""
        attributes = "Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        return f"{COOKIE_NAME}={self.cookie_value}; {attributes}"


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is simply no credential
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def safe_next_path(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value
