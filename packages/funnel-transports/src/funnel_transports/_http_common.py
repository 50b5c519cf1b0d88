"""What the HTTP transports share: header derivation, status mapping, body and SSE reading.

The first half is sans-I/O and tested directly: which MCP headers a message needs
(``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` with the spec's Base64 sentinel),
``Retry-After`` parsing, and the JSON-RPC error a transport synthesizes for a request
whose HTTP exchange failed. The second half wraps httpx: mapping its exceptions onto
the :mod:`funnel_transports._errors` tree at the boundary, reading a body with a size
limit, and turning an SSE response into JSON-RPC messages.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Self

import anyio
import anyio.abc
import httpx
import msgspec
from msgspec import UNSET, Raw, UnsetType

from funnel_transports._errors import (
    BACKEND_UNAVAILABLE,
    INVALID_REQUEST,
    AuthRequired,
    ConnectError,
    ConnectionLost,
    DecodeError,
    HttpStatusError,
    MessageTooLarge,
    TransportClosed,
    TransportError,
)
from funnel_transports._inbox import Inbox, MessageSink
from funnel_transports._jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    decode_message,
)
from funnel_transports._sse_decoder import ServerSentEvent, SSEDecoder
from funnel_transports._tasks import BackgroundTasks, hosted_tasks

__all__ = [
    "MODERN_PROTOCOL_VERSION",
    "ClientFactory",
    "error_response",
    "header_value",
    "is_modern",
    "map_httpx_error",
    "message_headers",
    "parse_retry_after",
    "redact_url",
]

logger = logging.getLogger("funnel_transports")

#: The first protocol revision without sessions, GET streams or ``initialize``.
MODERN_PROTOCOL_VERSION: Final = "2026-07-28"
PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
#: Methods whose ``Mcp-Name`` header mirrors ``params.name`` / ``params.uri``.
NAME_BEARING_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get"})

ClientFactory = Callable[[], httpx.AsyncClient]
"""Builds the :class:`httpx.AsyncClient` a transport uses (and closes)."""

JSON_CONTENT_TYPE: Final = "application/json"
SSE_CONTENT_TYPE: Final = "text/event-stream"

# RFC 9110 field values: visible ASCII, space and tab.
_HEADER_SAFE: Final = re.compile(r"[\x20-\x7e\t]*")
_SENTINEL_PREFIX: Final = "=?base64?"
_SENTINEL_SUFFIX: Final = "?="


def is_modern(version: str | None) -> bool:
    """Whether ``version`` is a stateless-era (2026-07-28 or later) protocol version."""
    # Protocol versions are ISO dates, so string order is date order.
    return version is not None and version >= MODERN_PROTOCOL_VERSION


def header_value(value: str) -> str:
    """Encode ``value`` for an ``Mcp-Name`` / ``Mcp-Param-*`` header.

    Plain visible ASCII without surrounding whitespace goes as is; anything else
    (non-ASCII, control characters, leading or trailing blanks, or a value that itself
    looks like the sentinel) becomes ``=?base64?<Base64 of UTF-8>?=``.
    """
    plain = (
        _HEADER_SAFE.fullmatch(value) is not None
        and value == value.strip(" \t")
        and not (value.startswith(_SENTINEL_PREFIX) and value.endswith(_SENTINEL_SUFFIX))
    )
    if plain:
        return value
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    return f"{_SENTINEL_PREFIX}{encoded}{_SENTINEL_SUFFIX}"


class _Meta(msgspec.Struct):
    protocol_version: str | UnsetType = msgspec.field(name=PROTOCOL_VERSION_META, default=UNSET)


class _Peek(msgspec.Struct):
    """The few params members the HTTP layer mirrors into headers."""

    name: str | UnsetType = UNSET
    uri: str | UnsetType = UNSET
    request_id: RequestId | UnsetType = msgspec.field(name="requestId", default=UNSET)
    meta: _Meta | UnsetType = msgspec.field(name="_meta", default=UNSET)


_peek_decoder: Final = msgspec.json.Decoder(_Peek)


@dataclass(frozen=True, slots=True)
class Peek:
    """What :func:`peek` learnt from a message's params."""

    name: str | None = None
    uri: str | None = None
    request_id: RequestId | None = None
    protocol_version: str | None = None


def peek(params: Raw | UnsetType) -> Peek:
    """Read ``name``, ``uri``, ``requestId`` and ``_meta``'s protocol version, if present.

    Anything unexpected (an array, a non-string name) simply yields nothing.
    """
    if isinstance(params, UnsetType):
        return Peek()
    try:
        found = _peek_decoder.decode(params)
    except msgspec.DecodeError:
        return Peek()
    return Peek(
        name=found.name if isinstance(found.name, str) else None,
        uri=found.uri if isinstance(found.uri, str) else None,
        request_id=None if isinstance(found.request_id, UnsetType) else found.request_id,
        protocol_version=(
            found.meta.protocol_version
            if isinstance(found.meta, _Meta) and isinstance(found.meta.protocol_version, str)
            else None
        ),
    )


def message_headers(
    message: Message, *, protocol_version: str | None, session_id: str | None
) -> dict[str, str]:
    """The MCP headers a POST of ``message`` carries (besides Accept/Content-Type).

    ``MCP-Protocol-Version`` is the version in the body's ``_meta`` when there is one
    (the spec requires the two to agree, and the ``server/discover`` probe is sent
    before any version was negotiated), else the negotiated one. Requests carry
    ``Mcp-Method`` and, for name-bearing methods, ``Mcp-Name``; servers of earlier
    revisions ignore both.
    """
    headers: dict[str, str] = {}
    version = protocol_version
    if isinstance(message, Request | Notification):
        hints = peek(message.params)
        version = hints.protocol_version or version
        if isinstance(message, Request):
            headers["Mcp-Method"] = header_value(message.method)
            if message.method in NAME_BEARING_METHODS:
                target = hints.name if message.method != "resources/read" else hints.uri
                if target is not None:
                    headers["Mcp-Name"] = header_value(target)
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if session_id is not None and not is_modern(version):
        headers["Mcp-Session-Id"] = session_id
    return headers


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    Args:
        value: The header value, or ``None``.
        now: The current Unix time (injected by tests); defaults to the clock.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def error_response(request_id: RequestId, code: int, message: str) -> ErrorResponse:
    """A JSON-RPC error response to deliver in place of one the server never sent."""
    return ErrorResponse(id=request_id, error=ErrorObject(code=code, message=message))


def lost_response(request_id: RequestId, server: str, why: str) -> ErrorResponse:
    """The error a pending request gets when its response stream broke."""
    return error_response(
        request_id, BACKEND_UNAVAILABLE, f"connection to {server} lost before the response: {why}"
    )


def short_text(body: bytes, limit: int = 200) -> str:
    """A printable, one-line excerpt of a response body for an error message."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def server_error_response(request_id: RequestId, body: bytes) -> ErrorResponse | None:
    """The server's own JSON-RPC error in ``body``, re-addressed to ``request_id``.

    Servers often send ``"id": null`` when they reject a request before reading it, so a
    null id counts as ours; an error for another id does not.
    """
    try:
        decoded = decode_message(body)
    except DecodeError:
        return None
    if isinstance(decoded, ErrorResponse) and decoded.id in (request_id, None):
        return ErrorResponse(id=request_id, error=decoded.error)
    return None


def status_error_response(
    request_id: RequestId, status: int, body: bytes, server: str
) -> ErrorResponse:
    """The JSON-RPC answer for a request the server refused with an HTTP error status.

    The server's own JSON-RPC error wins; otherwise an Invalid Request error quoting
    the status and the start of the body.
    """
    answer = server_error_response(request_id, body)
    if answer is not None:
        return answer
    excerpt = short_text(body)
    suffix = f": {excerpt}" if excerpt else ""
    return error_response(request_id, INVALID_REQUEST, f"HTTP {status} from {server}{suffix}")


def redact_url(url: httpx.URL | str) -> str:
    """A URL fit for logs and messages: no user info, query or fragment."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Whether two absolute URLs share scheme, host and port."""
    return (a.scheme, a.host, a.port or _default_port(a)) == (
        b.scheme,
        b.host,
        b.port or _default_port(b),
    )


def _default_port(url: httpx.URL) -> int | None:
    return {"http": 80, "https": 443}.get(url.scheme)


def map_httpx_error(exc: httpx.HTTPError, server: str, *, connected: bool) -> TransportError:
    """Map an httpx failure onto the transport error tree.

    Args:
        exc: What httpx raised.
        server: The server's name for the message.
        connected: Whether an exchange had started (a failure then is a lost
            connection rather than a failed connect).
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectError(f"cannot reach {server}: {_describe(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionLost(f"{server} timed out: {_describe(exc)}")
    if isinstance(exc, httpx.TransportError) and connected:
        return ConnectionLost(f"connection to {server} lost: {_describe(exc)}")
    if isinstance(exc, httpx.TransportError):
        return ConnectError(f"cannot reach {server}: {_describe(exc)}")
    return ConnectionLost(f"HTTP error talking to {server}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def raise_for_auth(response: httpx.Response, server: str) -> None:
    """Raise :class:`AuthRequired` for a 401 or 403 answer."""
    if response.status_code in (401, 403):
        raise AuthRequired(
            f"{server} answered HTTP {response.status_code}: authorization required",
            status=response.status_code,
            challenge=response.headers.get("WWW-Authenticate"),
        )


def status_error(response: httpx.Response, server: str, body: bytes = b"") -> HttpStatusError:
    """An :class:`HttpStatusError` for ``response`` (with its ``Retry-After``)."""
    excerpt = short_text(body)
    suffix = f": {excerpt}" if excerpt else ""
    return HttpStatusError(
        f"HTTP {response.status_code} from {server}{suffix}",
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def content_type(response: httpx.Response) -> str:
    """The media type of a response, lower-cased, without parameters."""
    value: str = response.headers.get("Content-Type", "")
    return value.split(";", 1)[0].strip().lower()


async def read_body(response: httpx.Response, limit: int, server: str) -> bytes:
    """Read a whole response body, refusing more than ``limit`` bytes.

    Raises:
        MessageTooLarge: The body (or its announced length) exceeds ``limit``.
    """
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > limit:
        raise MessageTooLarge(int(announced), limit, peer=server)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MessageTooLarge(size, limit, peer=server)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_error_body(response: httpx.Response, limit: int = 64 * 1024) -> bytes:
    """Read at most ``limit`` bytes of an error response; never raises on I/O."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:limit]


def decode_messages(data: str | bytes, server: str) -> list[Message]:
    """Decode a JSON-RPC message or batch; log and drop anything malformed."""
    try:
        decoded = decode_message(data)
    except DecodeError as exc:
        logger.warning("[%s] dropped a malformed message: %s", server, exc)
        return []
    if not isinstance(decoded, list):
        return [decoded]
    messages: list[Message] = []
    for item in decoded:
        if isinstance(item, DecodeError):
            logger.warning("[%s] dropped a malformed batch element: %s", server, item)
        else:
            messages.append(item)
    return messages


async def sse_events(
    response: httpx.Response, decoder: SSEDecoder
) -> AsyncGenerator[ServerSentEvent, None]:
    """Yield the events of an SSE response body as they complete."""
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event


def answers(message: Message, request_id: RequestId) -> bool:
    """Whether ``message`` is the response to request ``request_id``."""
    return isinstance(message, Response | ErrorResponse) and message.id == request_id


def merge_headers(*parts: Mapping[str, str] | None) -> dict[str, str]:
    """Merge header mappings left to right (later ones win, case-insensitively)."""
    merged = httpx.Headers()
    for part in parts:
        if part:
            for key, value in part.items():
                merged[key] = value
    return dict(merged.items())


DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
#: How long closing may take before it is abandoned (DELETE, socket close).
CLOSE_TIMEOUT: Final = 2.0
#: Answers after which a POST is retried when the server names a short enough wait.
RETRYABLE_STATUSES: Final = frozenset({429, 503})


class HttpTransportBase:
    """Lifecycle and POST plumbing shared by the streamable HTTP and legacy SSE transports.

    Owns the :class:`httpx.AsyncClient`, the task group every background reader runs
    in, and the :class:`~funnel_transports.Inbox`. Subclasses implement
    :meth:`_start` (run inside ``__aenter__``) and :meth:`_finish` (bounded cleanup).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None,
        connect_timeout: float,
        read_timeout: float | None,
        max_message_size: int,
        max_retry_wait: float,
        client_factory: ClientFactory | None,
    ) -> None:
        self._url = httpx.URL(url)
        if self._url.scheme not in ("http", "https") or not self._url.host:
            raise ValueError(f"not an http(s) URL: {redact_url(url)}")
        self._name = name or self._url.host
        self._static_headers = dict(headers or {})
        self._auth = auth
        self._connect_timeout = connect_timeout
        self._timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._max_message_size = max_message_size
        self._max_retry_wait = max_retry_wait
        self._client_factory = client_factory
        self._inbox = Inbox(self._name)
        self._client: httpx.AsyncClient | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._tasks = BackgroundTasks()
        self._entered = False
        self._closed = False

    @property
    def name(self) -> str:
        """The server's name, used in log lines and error messages."""
        return self._name

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"{self._name}: a transport can be entered only once")
        self._entered = True
        self._cm = self._lifespan()
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None, None]:
        self._client = (
            self._client_factory()
            if self._client_factory is not None
            else httpx.AsyncClient(follow_redirects=True)
        )
        async with hosted_tasks(f"{self._name} http") as host:
            self._tg = host.tg
            try:
                await self._start()
                yield
            finally:
                await self.aclose()
                self._tg = None

    async def _start(self) -> None:
        """Connect (whatever that means for the transport); runs inside ``__aenter__``."""

    async def _finish(self) -> None:
        """Last words to the server (bounded, shielded, errors ignored)."""

    def attach(self, sink: MessageSink) -> None:
        """Deliver every inbound message by calling ``sink`` on the reader task."""
        self._inbox.attach(sink)

    async def receive(self) -> Message:
        """Wait for the next message from the server.

        Raises:
            TransportClosed: The transport was closed, or the peer ended cleanly.
            ConnectionLost: The connection broke (or, streamable HTTP, the session
                expired).
        """
        if self._closed:
            raise TransportClosed(f"{self._name}: transport closed")
        return await self._inbox.get()

    def _check_open(self) -> httpx.AsyncClient:
        if self._closed or self._client is None:
            raise TransportClosed(f"{self._name}: transport closed")
        return self._client

    async def aclose(self) -> None:
        """Close the transport: stop readers, say goodbye, release the client (idempotent).

        Safe from any task and inside any cancel scope; the task group itself is left by
        ``__aexit__``.
        """
        if self._closed:
            return
        self._closed = True
        if not await self._tasks.cancel_all(CLOSE_TIMEOUT):
            logger.warning("[%s] background tasks did not stop in time", self._name)
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await self._finish()
            except Exception as exc:  # noqa: BLE001 - goodbye messages are best effort
                logger.debug("[%s] ignoring an error while closing: %r", self._name, exc)
        if self._client is not None:
            with anyio.CancelScope(shield=True):
                await self._client.aclose()
        self._inbox.close()
        self._inbox.aclose_receiver()
        logger.info("[%s] transport closed", self._name)

    def _request_headers(self, *parts: Mapping[str, str] | None) -> httpx.Headers:
        headers = httpx.Headers(self._static_headers)
        for part in parts:
            if part:
                headers.update(part)
        return headers

    async def _open(
        self,
        method: str,
        url: httpx.URL,
        headers: httpx.Headers,
        *,
        content: bytes | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send one request and return its streaming response once headers arrived.

        A 429 or 503 naming a ``Retry-After`` no longer than ``max_retry_wait`` is
        retried (once or twice): the server has not acted on the request, so retrying
        is safe for any message. The caller closes the returned response.

        Raises:
            ConnectError: The server could not be reached.
            ConnectionLost: The exchange broke or timed out before the headers.
        """
        client = self._client
        if client is None:
            raise TransportClosed(f"{self._name}: transport closed")
        attempt = 0
        while True:
            request = client.build_request(
                method, url, content=content, headers=headers, timeout=timeout or self._timeout
            )
            try:
                if self._auth is None:  # keep whatever auth a supplied client carries
                    response = await client.send(request, stream=True)
                else:
                    response = await client.send(request, stream=True, auth=self._auth)
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, self._name, connected=False) from exc
            if response.status_code in RETRYABLE_STATUSES and attempt < 2:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is not None and wait <= self._max_retry_wait:
                    await response.aclose()
                    attempt += 1
                    logger.info(
                        "[%s] HTTP %d; retrying %s in %.1f s",
                        self._name,
                        response.status_code,
                        method,
                        wait,
                    )
                    await anyio.sleep(wait)
                    continue
            return response
