"""The streamable HTTP client transport (MCP 2025-03-26 through 2026-07-28).

Theory of operation: every outgoing message is its own POST. :meth:`send` returns once
the response headers arrived, having turned HTTP failures into typed errors (401/403
:class:`AuthRequired`, 404 on a session :class:`SessionExpired`, 429/5xx
:class:`HttpStatusError`, network trouble :class:`ConnectError`/:class:`ConnectionLost`).
A request's response body, JSON or an SSE stream, is read by a task in the transport's
task group that feeds the :class:`Inbox`; if that body ends or breaks before carrying
the response, the task delivers a synthesized JSON-RPC error for the request instead,
so no caller waits for an answer that cannot come. A request the server refuses with
another 4xx is answered the same way (the server's own JSON-RPC error when it sent one),
which is how a session's ``server/discover`` probe learns that a server is of the
handshake era.

The two eras differ after negotiation (:meth:`set_protocol_version`):

* handshake era (up to 2025-11-25): the ``Mcp-Session-Id`` the server assigns is sent
  back on every request, an optional GET stream carries server-initiated messages (it
  opens once ``notifications/initialized`` went out, 405 means there is none, and it
  reconnects with :class:`Backoff` when it drops, resuming from ``Last-Event-ID``), a
  response stream the server closes early is resumed the same way, and closing sends a
  DELETE for the session;
* stateless era (2026-07-28): no session, no GET stream; every POST carries
  ``MCP-Protocol-Version`` and ``Mcp-Method`` (``Mcp-Name`` for name-bearing methods),
  and cancelling a request means closing its response stream.

Streamable HTTP has no connection to lose: after a server restart the next POST works
(stateless era) or raises :class:`SessionExpired` (handshake era, which also ends the
inbox so that the owner re-initializes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, NoReturn

import anyio
import httpx
import msgspec
from msgspec import Raw

from funnel_transports._backoff import Backoff
from funnel_transports._errors import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    HttpStatusError,
    MessageTooLarge,
    SessionExpired,
    TransportError,
)
from funnel_transports._http_common import (
    DEFAULT_MAX_MESSAGE_SIZE,
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    ClientFactory,
    HttpTransportBase,
    answers,
    content_type,
    decode_messages,
    header_value,
    is_modern,
    lost_response,
    map_httpx_error,
    message_headers,
    peek,
    raise_for_auth,
    read_body,
    read_error_body,
    redact_url,
    server_error_response,
    sse_events,
    status_error,
    status_error_response,
)
from funnel_transports._jsonrpc import (
    Message,
    Notification,
    Request,
    RequestId,
    encode_message,
)
from funnel_transports._param_headers import ParamHeader, param_headers
from funnel_transports._sse_decoder import SSEDecoder

__all__ = ["StreamableHttpTransport"]

logger = logging.getLogger(__name__)

_POST_ACCEPT: Final = f"{JSON_CONTENT_TYPE}, {SSE_CONTENT_TYPE}"
#: How many times a response stream the server closed early is resumed.
_MAX_RESUMES: Final = 3


class StreamableHttpTransport(HttpTransportBase):
    """A client transport for an MCP server's streamable HTTP endpoint.

    Args:
        url: The MCP endpoint, e.g. ``https://example.com/mcp``.
        name: The server's name for logs and errors (default: the URL's host).
        headers: Static headers sent with every request (never logged).
        auth: Any :class:`httpx.Auth` (bearer, OAuth…); runs on every request.
        connect_timeout: Seconds to establish a connection (also write and pool
            timeouts).
        read_timeout: Seconds a response may stay silent before it is given up on;
            ``None`` waits forever (the session's request timeout still applies).
        max_message_size: The largest JSON body or SSE event accepted, in bytes.
        get_stream: Whether to open the GET stream for server-initiated messages in
            the handshake era.
        backoff: Reconnection policy of the GET stream.
        max_retry_wait: The longest ``Retry-After`` (429/503) waited out before a POST
            is retried; longer ones raise :class:`HttpStatusError` at once.
        client_factory: Builds the :class:`httpx.AsyncClient` to use (tests pass one
            with an ASGI or mock transport); the transport closes it.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 300.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        get_stream: bool = True,
        backoff: Backoff | None = None,
        max_retry_wait: float = 10.0,
        client_factory: ClientFactory | None = None,
    ) -> None:
        super().__init__(
            url,
            name=name,
            headers=headers,
            auth=auth,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_message_size=max_message_size,
            max_retry_wait=max_retry_wait,
            client_factory=client_factory,
        )
        self._get_stream_enabled = get_stream
        self._backoff = backoff or Backoff(initial=0.5, max_delay=30.0, max_attempts=None)
        self._protocol_version: str | None = None
        self._session_id: str | None = None
        self._initialized_sent = False
        self._get_stream_started = False
        self._streams: dict[RequestId, anyio.CancelScope] = {}
        self._tool_headers: dict[str, tuple[ParamHeader, ...]] = {}

    @property
    def session_id(self) -> str | None:
        """The ``Mcp-Session-Id`` the server assigned (handshake era), if any."""
        return self._session_id

    @property
    def protocol_version(self) -> str | None:
        """The protocol version set by :meth:`set_protocol_version`, if any."""
        return self._protocol_version

    def set_tool_headers(self, tools: Mapping[str, tuple[ParamHeader, ...]]) -> None:
        """The ``x-mcp-header`` parameters of each tool (by name) to mirror on its calls."""
        self._tool_headers = {name: specs for name, specs in tools.items() if specs}

    def set_protocol_version(self, version: str) -> None:
        """Switch to ``version``'s behaviour; sent as ``MCP-Protocol-Version`` from now on."""
        self._protocol_version = version
        if is_modern(version):
            self._session_id = None
        self._maybe_start_get_stream()

    @property
    def _modern(self) -> bool:
        return is_modern(self._protocol_version)

    async def send(self, message: Message) -> None:
        """POST one message; return once the server's response headers arrived.

        Raises:
            TransportClosed: The transport is closed.
            ConnectError: The server could not be reached.
            ConnectionLost: The exchange broke or timed out before the headers.
            SessionExpired: The server no longer knows our session (handshake era).
            AuthRequired: 401 or 403 (after the auth had its chance).
            HttpStatusError: 429 or 5xx, or any error status for a message that is
                not a request.
        """
        self._check_open()
        if isinstance(message, Notification) and message.method == "notifications/cancelled":
            cancelled = peek(message.params).request_id
            if cancelled is not None and (scope := self._streams.get(cancelled)) is not None:
                scope.cancel()
            if self._modern:
                # 2026-07-28: closing the response stream *is* the cancellation.
                return
        if isinstance(message, Request) and message.method == "initialize":
            # A handshake starts afresh: no version header until it is negotiated (a
            # session may have tried 2026-07-28 first), and a new session.
            self._protocol_version = None
            self._session_id = None
        mcp_headers = message_headers(
            message, protocol_version=self._protocol_version, session_id=self._session_id
        )
        if self._tool_headers and isinstance(message, Request) and message.method == "tools/call":
            mcp_headers.update(self._param_headers(message))
        headers = self._request_headers(
            {"Accept": _POST_ACCEPT, "Content-Type": JSON_CONTENT_TYPE}, mcp_headers
        )
        method = message.method if isinstance(message, Request | Notification) else "response"
        logger.debug("[%s] POST %s", self._name, method)
        response = await self._open("POST", self._url, headers, content=encode_message(message))
        handed_over = False
        try:
            handed_over = await self._handle_post_response(message, response)
        finally:
            if not handed_over:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async def _handle_post_response(self, message: Message, response: httpx.Response) -> bool:
        """Act on a POST's status; return whether a reader task now owns ``response``."""
        status = response.status_code
        if 200 <= status < 300:
            self._remember_session(response)
            if isinstance(message, Request):
                self._start_reader(response, message.id)
                return True
            if isinstance(message, Notification) and message.method == "notifications/initialized":
                self._initialized_sent = True
                self._maybe_start_get_stream()
            return False
        raise_for_auth(response, self._name)
        if status == 404 and self._session_id is not None and not self._modern:
            self._expire("HTTP 404")
        body = await read_error_body(response)
        # Servers built on the TypeScript SDK's example routing answer a session they do
        # not know with 400 "No valid session ID provided", not 404.
        if (
            status == 400
            and self._session_id is not None
            and not self._modern
            and b"session" in body.lower()
        ):
            self._expire("HTTP 400 naming the session")
        if isinstance(message, Request):
            if 400 <= status < 500 and status != 429:
                logger.debug("[%s] HTTP %d for request %r", self._name, status, message.id)
                self._inbox.put(status_error_response(message.id, status, body, self._name))
                return False
            if status >= 500 and (answer := server_error_response(message.id, body)):
                self._inbox.put(answer)
                return False
        raise status_error(response, self._name, body)

    def _param_headers(self, message: Request) -> dict[str, str]:
        name = peek(message.params).name
        specs = self._tool_headers.get(name) if name is not None else None
        if not specs or not isinstance(message.params, Raw):
            return {}
        try:
            arguments = msgspec.json.decode(message.params).get("arguments")
        except (msgspec.DecodeError, AttributeError):
            return {}
        return param_headers(specs, arguments, header_value)

    def _expire(self, why: str) -> NoReturn:
        expired = SessionExpired(f"{self._name} no longer knows our session ({why})")
        logger.info("[%s] session expired (%s)", self._name, why)
        self._inbox.close(expired)
        raise expired

    def _remember_session(self, response: httpx.Response) -> None:
        session_id = response.headers.get("Mcp-Session-Id")
        if session_id and not self._modern and session_id != self._session_id:
            self._session_id = session_id
            logger.info("[%s] session established", self._name)

    def _start_reader(self, response: httpx.Response, request_id: RequestId) -> None:
        assert self._tg is not None  # noqa: S101 - send() checked that we are open
        scope = anyio.CancelScope()
        self._streams[request_id] = scope
        self._tasks.start_soon(self._tg, self._read_response, response, request_id, scope)

    async def _read_response(
        self, response: httpx.Response, request_id: RequestId, scope: anyio.CancelScope
    ) -> None:
        current = response
        delivered = False
        why = "the response stream ended"
        with scope:
            try:
                kind = content_type(current)
                if kind == JSON_CONTENT_TYPE:
                    body = await read_body(current, self._max_message_size, self._name)
                    for item in decode_messages(body, self._name):
                        self._inbox.put(item)
                        delivered = delivered or answers(item, request_id)
                    why = "the JSON body held no response"
                elif kind == SSE_CONTENT_TYPE:
                    last_id: str | None = None
                    resumes = 0
                    while True:
                        decoder = SSEDecoder(max_event_size=self._max_message_size, peer=self._name)
                        delivered = await self._pump(current, decoder, request_id)
                        last_id = decoder.last_event_id or last_id
                        if delivered or self._modern or last_id is None or resumes >= _MAX_RESUMES:
                            break
                        # The server closed the connection but not the stream: resume it.
                        resumes += 1
                        await current.aclose()
                        await anyio.sleep(min((decoder.retry or 0) / 1000, self._max_retry_wait))
                        resumed = await self._open_get(last_id)
                        if resumed is None:
                            why = "the server closed the stream and cannot resume it"
                            break
                        current = resumed
                else:
                    why = f"unexpected content type {kind!r}"
            except MessageTooLarge as exc:
                why = str(exc)
            except httpx.HTTPError as exc:
                why = str(map_httpx_error(exc, self._name, connected=True))
            except TransportError as exc:
                why = str(exc)
            except Exception as exc:  # a reader must never take the task group down
                logger.exception("[%s] response reader failed", self._name)
                why = f"internal error: {exc!r}"
            finally:
                self._streams.pop(request_id, None)
                with anyio.CancelScope(shield=True):
                    await current.aclose()
        if scope.cancelled_caught:
            return  # the request was cancelled; its caller stopped waiting
        if not delivered and not self._closed:
            logger.info("[%s] no response to request %r: %s", self._name, request_id, why)
            self._inbox.put(lost_response(request_id, self._name, why))

    async def _pump(
        self, response: httpx.Response, decoder: SSEDecoder, request_id: RequestId | None
    ) -> bool:
        """Feed an SSE body into the inbox; return whether the response went by."""
        async for event in sse_events(response, decoder):
            if not event.data:
                continue  # priming events carry only an id
            if event.event != "message":
                logger.debug("[%s] skipped an SSE event of type %r", self._name, event.event)
                continue
            for item in decode_messages(event.data, self._name):
                self._inbox.put(item)
                if request_id is not None and answers(item, request_id):
                    return True
        return False

    def _get_headers(self, last_event_id: str | None) -> httpx.Headers:
        extra = {"Accept": SSE_CONTENT_TYPE}
        if self._protocol_version is not None:
            extra["MCP-Protocol-Version"] = self._protocol_version
        if self._session_id is not None:
            extra["Mcp-Session-Id"] = self._session_id
        if last_event_id is not None:
            extra["Last-Event-ID"] = last_event_id
        return self._request_headers(extra)

    async def _open_get(self, last_event_id: str | None) -> httpx.Response | None:
        """Open a GET stream; ``None`` when the server offers none (405, or 404 sessionless).

        Raises:
            SessionExpired: 404 on our session.
            AuthRequired: 401/403.
            HttpStatusError: Any other unusable answer.
        """
        timeout = httpx.Timeout(self._connect_timeout, read=None)
        response = await self._open(
            "GET", self._url, self._get_headers(last_event_id), timeout=timeout
        )
        status = response.status_code
        if status == 200 and content_type(response) == SSE_CONTENT_TYPE:
            return response
        with anyio.CancelScope(shield=True):
            await response.aclose()
        if status == 405 or (status == 404 and self._session_id is None):
            return None
        raise_for_auth(response, self._name)
        if status == 404:
            raise SessionExpired(f"{self._name} no longer knows our session (HTTP 404)")
        raise status_error(response, self._name)

    def _maybe_start_get_stream(self) -> None:
        ready = (
            self._get_stream_enabled
            and not self._get_stream_started
            and self._initialized_sent
            and self._protocol_version is not None
            and not self._modern
            and self._tg is not None
            and not self._closed
        )
        if ready:
            assert self._tg is not None  # noqa: S101 - checked just above
            self._get_stream_started = True
            self._tasks.start_soon(self._tg, self._run_get_stream)

    async def _run_get_stream(self) -> None:
        """Keep the GET stream open, reconnecting with backoff, until closed."""
        delays = iter(self._backoff.delays())
        last_id: str | None = None
        while True:
            retry_ms: int | None = None
            try:
                response = await self._open_get(last_id)
                if response is None:
                    logger.info("[%s] the server offers no GET stream", self._name)
                    return
                delays = iter(self._backoff.delays())
                logger.debug("[%s] GET stream open", self._name)
                try:
                    decoder = SSEDecoder(max_event_size=self._max_message_size, peer=self._name)
                    try:
                        await self._pump(response, decoder, None)
                    finally:
                        last_id = decoder.last_event_id or last_id
                        retry_ms = decoder.retry
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                logger.info("[%s] GET stream ended; reconnecting", self._name)
            except SessionExpired as exc:
                logger.info("[%s] session expired", self._name)
                self._inbox.close(exc)
                return
            except AuthRequired as exc:
                logger.warning("[%s] GET stream refused: %s", self._name, exc)
                return
            except (ConnectError, ConnectionLost, HttpStatusError, MessageTooLarge) as exc:
                logger.info("[%s] GET stream failed: %s", self._name, exc)
            except httpx.HTTPError as exc:
                logger.info(
                    "[%s] GET stream broke: %s",
                    self._name,
                    map_httpx_error(exc, self._name, connected=True),
                )
            except Exception:  # a reader must never take the task group down
                logger.exception("[%s] GET stream reader failed", self._name)
                return
            delay = next(delays, None)
            if delay is None:
                logger.warning("[%s] giving up on the GET stream", self._name)
                return
            if retry_ms is not None:
                delay = retry_ms / 1000
            await anyio.sleep(delay)

    async def _finish(self) -> None:
        if self._session_id is None or self._modern:
            return
        headers = self._request_headers(
            {"Mcp-Session-Id": self._session_id},
            {"MCP-Protocol-Version": self._protocol_version} if self._protocol_version else None,
        )
        try:
            response = await self._open("DELETE", self._url, headers)
        except TransportError as exc:
            logger.debug("[%s] DELETE session failed: %s", self._name, exc)
            return
        await response.aclose()
        logger.debug("[%s] DELETE session: HTTP %d", self._name, response.status_code)

    def __repr__(self) -> str:
        return f"StreamableHttpTransport({redact_url(self._url)!r}, name={self._name!r})"
