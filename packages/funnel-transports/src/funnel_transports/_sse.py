"""The legacy HTTP+SSE client transport (MCP 2024-11-05).

Theory of operation: entering the transport opens a GET stream on the server's SSE URL
and waits, bounded, for the ``endpoint`` event. Its data is the URL to POST messages to,
resolved against the stream's URL and refused unless it has the same origin (a server
must not be able to send our credentials elsewhere). Only then does ``__aenter__``
return. Every message is then POSTed to that endpoint (the server answers 202) and
every message from the server, responses included, arrives on the one stream, read by
a task in the transport's task group. The stream is the connection: when it ends or
breaks, the inbox closes with :class:`ConnectionLost`, pending requests fail at once,
and the owner builds a new transport (with :class:`Backoff`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Final, TypeAlias

import anyio
import httpx
from anyio.abc import TaskStatus

from funnel_transports._errors import (
    ConnectError,
    ConnectionLost,
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
    content_type,
    decode_messages,
    map_httpx_error,
    raise_for_auth,
    read_error_body,
    redact_url,
    same_origin,
    sse_events,
    status_error,
    status_error_response,
)
from funnel_transports._jsonrpc import Message, Request, encode_message
from funnel_transports._sse_decoder import ServerSentEvent, SSEDecoder

__all__ = ["SseTransport"]

logger = logging.getLogger(__name__)

_STREAM_LOST: Final = "the SSE stream ended"

_Events: TypeAlias = AsyncGenerator[ServerSentEvent, None]


class SseTransport(HttpTransportBase):
    """A client transport for an MCP server speaking the deprecated HTTP+SSE protocol.

    Args:
        url: The SSE URL, e.g. ``https://example.com/sse``.
        name: The server's name for logs and errors (default: the URL's host).
        headers: Static headers sent with every request (never logged).
        auth: Any :class:`httpx.Auth`; runs on the GET and on every POST.
        connect_timeout: Seconds to establish a connection.
        read_timeout: Seconds a POST's answer may take; the stream itself may stay
            silent forever.
        endpoint_timeout: Seconds to wait for the ``endpoint`` event.
        max_message_size: The largest SSE event or body accepted, in bytes.
        max_retry_wait: The longest ``Retry-After`` (429/503) waited out before a POST
            is retried.
        client_factory: Builds the :class:`httpx.AsyncClient` to use; the transport
            closes it.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 60.0,
        endpoint_timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
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
        self._endpoint_timeout = endpoint_timeout
        self._endpoint: httpx.URL | None = None
        self._protocol_version: str | None = None

    @property
    def endpoint(self) -> str | None:
        """The POST URL the server announced (``None`` before it did)."""
        return None if self._endpoint is None else str(self._endpoint)

    def set_protocol_version(self, version: str) -> None:
        """Remember the negotiated version; it is sent as ``MCP-Protocol-Version``."""
        self._protocol_version = version

    async def _start(self) -> None:
        assert self._tg is not None  # noqa: S101 - __aenter__ created it
        await self._tasks.start(self._tg, self._run_stream)
        logger.info("[%s] connected (SSE)", self._name)

    async def _run_stream(self, *, task_status: TaskStatus[None]) -> None:
        timeout = httpx.Timeout(self._connect_timeout, read=None)
        headers = self._request_headers({"Accept": SSE_CONTENT_TYPE})
        response = await self._open("GET", self._url, headers, timeout=timeout)
        try:
            self._check_stream_response(response)
            decoder = SSEDecoder(max_event_size=self._max_message_size, peer=self._name)
            async with contextlib.aclosing(sse_events(response, decoder)) as events:
                await self._await_endpoint(events)
                task_status.started()
                reason = await self._pump(events)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if not self._closed:
            logger.info("[%s] %s", self._name, reason)
            self._inbox.close(reason)

    def _check_stream_response(self, response: httpx.Response) -> None:
        raise_for_auth(response, self._name)
        if response.status_code != 200:
            raise status_error(response, self._name)
        if content_type(response) != SSE_CONTENT_TYPE:
            raise ConnectError(
                f"{self._name} answered the SSE GET with {content_type(response)!r}, "
                "not an event stream"
            )

    async def _await_endpoint(self, events: _Events) -> None:
        try:
            with anyio.fail_after(self._endpoint_timeout):
                async for event in events:
                    if event.event == "endpoint":
                        self._endpoint = self._resolve_endpoint(event.data)
                        return
                    self._deliver(event)
        except TimeoutError:
            raise ConnectError(
                f"{self._name} sent no endpoint event within {self._endpoint_timeout} s"
            ) from None
        except MessageTooLarge as exc:
            raise ConnectError(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, self._name, connected=False) from exc
        raise ConnectError(f"{self._name} ended the SSE stream before the endpoint event")

    def _resolve_endpoint(self, data: str) -> httpx.URL:
        try:
            endpoint = self._url.join(data.strip())
        except httpx.InvalidURL as exc:
            raise ConnectError(f"{self._name} announced an invalid endpoint") from exc
        if not same_origin(endpoint, self._url):
            raise ConnectError(
                f"{self._name} announced an endpoint on another origin "
                f"({redact_url(endpoint)}); refusing to send messages there"
            )
        logger.debug("[%s] endpoint %s", self._name, redact_url(endpoint))
        return endpoint

    async def _pump(self, events: _Events) -> TransportError:
        """Deliver messages until the stream ends; return why it ended."""
        try:
            async for event in events:
                if event.event == "endpoint":
                    logger.debug("[%s] ignored a repeated endpoint event", self._name)
                    continue
                self._deliver(event)
        except MessageTooLarge as exc:
            return exc
        except httpx.HTTPError as exc:
            return map_httpx_error(exc, self._name, connected=True)
        except Exception as exc:  # a reader must never take the task group down
            logger.exception("[%s] SSE reader failed", self._name)
            return ConnectionLost(f"{self._name}: SSE reader failed: {exc!r}")
        return ConnectionLost(f"{self._name}: {_STREAM_LOST}")

    def _deliver(self, event: ServerSentEvent) -> None:
        if not event.data:
            return
        if event.event != "message":
            logger.debug("[%s] skipped an SSE event of type %r", self._name, event.event)
            return
        for message in decode_messages(event.data, self._name):
            self._inbox.put(message)

    async def send(self, message: Message) -> None:
        """POST one message to the endpoint; its answer comes on the stream.

        Raises:
            TransportClosed: The transport is closed.
            ConnectError: The server could not be reached.
            ConnectionLost: The exchange broke or timed out.
            SessionExpired: The endpoint no longer exists (HTTP 404).
            AuthRequired: 401 or 403.
            HttpStatusError: 429, 5xx, or an error status for a non-request.
        """
        self._check_open()
        assert self._endpoint is not None  # noqa: S101 - set before __aenter__ returned
        extra = {"Content-Type": JSON_CONTENT_TYPE}
        if self._protocol_version is not None:
            extra["MCP-Protocol-Version"] = self._protocol_version
        response = await self._open(
            "POST", self._endpoint, self._request_headers(extra), content=encode_message(message)
        )
        try:
            status = response.status_code
            if 200 <= status < 300:
                return
            raise_for_auth(response, self._name)
            if status == 404:
                expired = SessionExpired(f"{self._name} no longer knows our endpoint (HTTP 404)")
                self._inbox.close(expired)
                raise expired
            body = await read_error_body(response)
            if isinstance(message, Request) and 400 <= status < 500 and status != 429:
                self._inbox.put(status_error_response(message.id, status, body, self._name))
                return
            raise status_error(response, self._name, body)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    def __repr__(self) -> str:
        return f"SseTransport({redact_url(self._url)!r}, name={self._name!r})"
