"""The WebSocket client transport (not in the MCP spec; subprotocol ``mcp``, as SEP-1288).

Theory of operation: the WebSocket protocol itself is the sans-I/O
:class:`websockets.client.ClientProtocol`; this module is the thin anyio shell around it,
so it runs on any anyio backend and never touches asyncio. Entering the transport
connects TCP (TLS for ``wss``), sends the opening handshake with the headers the async
header callback returns (fresh on every connect, so a refreshed token is used) and
returns only once the server accepted the upgrade; a 401/403 rejection raises
:class:`AuthRequired`. Each JSON-RPC message is one text frame.

Two tasks in the transport's task group run while it is open: the reader feeds bytes
from the socket to the protocol, answers pings (the protocol queues the pongs) and puts
messages in the inbox; the keepalive sends a ping every ``ping_interval`` and declares
the peer dead when no pong arrives within ``ping_timeout``. All writes go through one
lock. When the socket ends, the inbox closes: :class:`TransportClosed` for a normal
close (1000) by the server, :class:`ConnectionLost` otherwise, so pending requests fail
at once and the owner reconnects with :class:`Backoff`.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Self

import anyio
import anyio.abc
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response as HandshakeResponse
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from funnel_transports._errors import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    MessageTooLarge,
    TransportClosed,
    TransportError,
)
from funnel_transports._http_common import DEFAULT_MAX_MESSAGE_SIZE, decode_messages
from funnel_transports._inbox import Inbox, MessageSink
from funnel_transports._jsonrpc import Message, encode_message
from funnel_transports._tasks import BackgroundTasks, hosted_tasks

__all__ = ["HeaderFactory", "WebSocketTransport"]

logger = logging.getLogger(__name__)

HeaderFactory = Callable[[], Awaitable[Mapping[str, str]]]
"""Returns the headers (e.g. ``Authorization``) for the opening handshake."""

SUBPROTOCOL: Final = Subprotocol("mcp")
_CLOSE_TIMEOUT: Final = 2.0
_READ_SIZE: Final = 65536


# websockets logs every handshake header at DEBUG, Authorization included; its protocol
# gets a logger that never emits DEBUG and hands the rest to ours.
class _NoDebugAdapter(logging.LoggerAdapter[logging.Logger]):
    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - overrides logging's name
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_wire_logger = _NoDebugAdapter(logger)


def websocket_url(url: str) -> str:
    """Map an ``http(s)://`` URL to ``ws(s)://``; leave ``ws(s)://`` alone.

    Raises:
        ValueError: Any other scheme.
    """
    scheme, sep, rest = url.partition("://")
    mapped = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme.lower())
    if not sep or mapped is None:
        raise ValueError("a WebSocket URL must start with ws://, wss://, http:// or https://")
    return f"{mapped}://{rest}"


class WebSocketTransport:
    """A client transport over one WebSocket connection (subprotocol ``mcp``).

    Args:
        url: ``ws(s)://`` or ``http(s)://`` URL of the server's WebSocket endpoint.
        name: The server's name for logs and errors (default: the URL's host).
        headers: Async callback returning handshake headers (called on connect;
            its values are never logged).
        connect_timeout: Seconds for TCP, TLS and the opening handshake together.
        ping_interval: Seconds between keepalive pings; ``None`` disables them.
        ping_timeout: Seconds to wait for a pong before the peer is declared dead.
        max_message_size: The largest incoming message accepted, in bytes.
        ssl_context: TLS settings for ``wss`` (default: the system's trust store).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        headers: HeaderFactory | None = None,
        connect_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        try:
            self._uri = parse_uri(websocket_url(url))
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {exc}") from exc
        self._name = name or self._uri.host
        self._headers = headers
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_message_size = max_message_size
        self._ssl_context = ssl_context
        self._inbox = Inbox(self._name)
        self._protocol: ClientProtocol | None = None
        self._stream: anyio.abc.ByteStream | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._tasks = BackgroundTasks()
        self._write_lock = anyio.Lock()
        self._pong = anyio.Event()
        self._reader_done = anyio.Event()
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._entered = False
        self._closed = False

    @property
    def name(self) -> str:
        """The server's name, used in log lines and error messages."""
        return self._name

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected (``"mcp"``, or ``None`` if it chose none)."""
        return None if self._protocol is None else self._protocol.subprotocol

    def set_protocol_version(self, version: str) -> None:
        """WebSocket carries no per-message metadata: nothing to do."""

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"{self._name}: a transport can be entered only once")
        self._entered = True
        try:
            await self._connect()
        except BaseException:
            self._closed = True
            await self._abort()
            self._inbox.close()
            self._inbox.aclose_receiver()
            raise
        self._cm = self._lifespan()
        await self._cm.__aenter__()
        logger.info("[%s] connected (WebSocket)", self._name)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None, None]:
        async with hosted_tasks(f"{self._name} websocket") as host:
            self._tg = host.tg
            self._tasks.start_soon(host.tg, self._read_loop)
            if self._ping_interval is not None:
                self._tasks.start_soon(host.tg, self._keepalive, self._ping_interval)
            try:
                yield
            finally:
                await self.aclose()
                self._tg = None

    async def _connect(self) -> None:
        extra = dict(await self._headers()) if self._headers is not None else {}
        protocol = ClientProtocol(
            self._uri,
            subprotocols=[SUBPROTOCOL],
            max_size=self._max_message_size,
            logger=_wire_logger,
        )
        self._protocol = protocol
        request = protocol.connect()
        for key, value in extra.items():
            request.headers[key] = value
        try:
            with anyio.fail_after(self._connect_timeout):
                if self._uri.secure:
                    context = self._ssl_context or ssl.create_default_context()
                    self._stream = await anyio.connect_tcp(
                        self._uri.host, self._uri.port, ssl_context=context
                    )
                else:
                    self._stream = await anyio.connect_tcp(self._uri.host, self._uri.port)
                protocol.send_request(request)
                await self._flush()
                response = await self._await_handshake(protocol)
        except TimeoutError:
            raise ConnectError(
                f"{self._name}: WebSocket handshake not done within {self._connect_timeout} s"
            ) from None
        except OSError as exc:
            raise ConnectError(f"cannot reach {self._name}: {exc}") from exc
        except anyio.BrokenResourceError as exc:
            raise ConnectError(f"{self._name} dropped the connection during the handshake") from exc
        if protocol.subprotocol != SUBPROTOCOL:
            logger.info("[%s] the server selected no 'mcp' subprotocol; continuing", self._name)
        logger.debug("[%s] WebSocket open (HTTP %d)", self._name, response.status_code)

    async def _await_handshake(self, protocol: ClientProtocol) -> HandshakeResponse:
        assert self._stream is not None  # noqa: S101 - connected just before
        while True:
            try:
                data = await self._stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                protocol.receive_eof()
            else:
                protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, HandshakeResponse):
                    self._check_handshake(protocol, event)
                    return event
            if protocol.handshake_exc is not None or protocol.state is State.CLOSED:
                raise self._handshake_error(protocol.handshake_exc, None)

    def _check_handshake(self, protocol: ClientProtocol, response: HandshakeResponse) -> None:
        if protocol.handshake_exc is not None:
            raise self._handshake_error(protocol.handshake_exc, response)

    def _handshake_error(
        self, exc: Exception | None, response: HandshakeResponse | None
    ) -> TransportError:
        if isinstance(exc, InvalidStatus):
            response = exc.response
        if response is not None and response.status_code in (401, 403):
            return AuthRequired(
                f"{self._name} refused the WebSocket handshake: HTTP {response.status_code}",
                status=response.status_code,
                challenge=response.headers.get("WWW-Authenticate"),
            )
        if response is not None and response.status_code != 101:
            error: TransportError = ConnectError(
                f"{self._name} refused the WebSocket handshake: HTTP {response.status_code}"
            )
        else:
            error = ConnectError(f"{self._name}: WebSocket handshake failed: {exc}")
        error.__cause__ = exc
        return error

    async def _flush(self) -> None:
        """Write whatever the protocol queued; half-close on its end-of-stream marker."""
        protocol, stream = self._protocol, self._stream
        if protocol is None or stream is None:
            return
        async with self._write_lock:
            for data in protocol.data_to_send():
                if data:
                    await stream.send(data)
                elif isinstance(stream, anyio.abc.SocketStream):
                    # The protocol's end-of-stream marker; a TLS stream cannot half-close.
                    await stream.send_eof()

    async def send(self, message: Message) -> None:
        """Send one message as a text frame.

        Raises:
            TransportClosed: The transport is closed.
            ConnectionLost: The connection is gone.
        """
        protocol = self._protocol
        if self._closed or protocol is None or self._tg is None:
            raise TransportClosed(f"{self._name}: transport closed")
        if protocol.state is not State.OPEN:
            raise ConnectionLost(f"connection to {self._name} is closing")
        protocol.send_text(encode_message(message))
        try:
            await self._flush()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(f"connection to {self._name} lost: {exc!r}") from exc

    def attach(self, sink: MessageSink) -> None:
        """Deliver every inbound message by calling ``sink`` on the reader task."""
        self._inbox.attach(sink)

    async def receive(self) -> Message:
        """Wait for the next message from the server.

        Raises:
            TransportClosed: The transport was closed, or the server closed normally.
            ConnectionLost: The connection broke or the server stopped answering pings.
        """
        if self._closed:
            raise TransportClosed(f"{self._name}: transport closed")
        return await self._inbox.get()

    async def _read_loop(self) -> None:
        reason: TransportError = ConnectionLost(f"{self._name} closed the connection")
        protocol, stream = self._protocol, self._stream
        assert protocol is not None  # noqa: S101 - connected before the task started
        assert stream is not None  # noqa: S101
        try:
            while True:
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    protocol.receive_eof()
                else:
                    protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Frame):
                        self._frame_received(event)
                await self._flush()
                if protocol.state is State.CLOSED:
                    reason = self._close_reason(protocol)
                    break
        except MessageTooLarge as exc:
            reason = exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            reason = ConnectionLost(f"connection to {self._name} lost: {exc!r}")
        except Exception as exc:  # a reader must never take the task group down
            logger.exception("[%s] WebSocket reader failed", self._name)
            reason = ConnectionLost(f"{self._name}: WebSocket reader failed: {exc!r}")
        finally:
            self._reader_done.set()
        if not self._closed:
            logger.info("[%s] %s", self._name, reason)
            self._inbox.close(reason)
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    def _close_reason(self, protocol: ClientProtocol) -> TransportError:
        sent, received = protocol.close_sent, protocol.close_rcvd
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            # We failed the connection: the server sent more than max_message_size.
            return MessageTooLarge(
                self._max_message_size + 1, self._max_message_size, peer=self._name
            )
        if received is None:
            return ConnectionLost(f"{self._name} dropped the connection without a close frame")
        detail = f"code {received.code}" + (f": {received.reason}" if received.reason else "")
        if received.code == CloseCode.NORMAL_CLOSURE:
            return TransportClosed(f"{self._name} closed the connection ({detail})")
        return ConnectionLost(f"{self._name} closed the connection ({detail})")

    def _frame_received(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self._pong.set()
            return
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if frame.opcode is not Opcode.CONT:
                self._fragments = []
                self._fragments_size = 0
            self._fragments.append(bytes(frame.data))
            self._fragments_size += len(frame.data)
            if self._fragments_size > self._max_message_size:
                raise MessageTooLarge(self._fragments_size, self._max_message_size, peer=self._name)
            if frame.fin:
                payload = b"".join(self._fragments)
                self._fragments = []
                self._fragments_size = 0
                for message in decode_messages(payload, self._name):
                    self._inbox.put(message)

    async def _keepalive(self, interval: float) -> None:
        protocol = self._protocol
        assert protocol is not None  # noqa: S101 - connected before the task started
        try:
            while protocol.state is State.OPEN:
                await anyio.sleep(interval)
                self._pong = anyio.Event()
                protocol.send_ping(os.urandom(4))
                await self._flush()
                with anyio.move_on_after(self._ping_timeout):
                    await self._pong.wait()
                    continue
                lost = ConnectionLost(f"{self._name} sent no pong within {self._ping_timeout} s")
                logger.warning("[%s] %s", self._name, lost)
                self._inbox.close(lost)
                if self._stream is not None:
                    with anyio.CancelScope(shield=True):
                        await self._stream.aclose()
                return
        except Exception as exc:  # noqa: BLE001 - the reader reports the broken connection
            logger.debug("[%s] keepalive stopped: %r", self._name, exc)

    async def aclose(self) -> None:
        """Close the connection (close handshake, bounded) and stop the tasks (idempotent).

        Safe from any task and inside any cancel scope; the task group itself is left by
        ``__aexit__``.
        """
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        if self._tg is not None and protocol is not None and protocol.state is State.OPEN:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                try:
                    protocol.send_close(CloseCode.NORMAL_CLOSURE)
                    await self._flush()
                    await self._reader_done.wait()
                except Exception as exc:  # noqa: BLE001 - closing is best effort
                    logger.debug("[%s] close handshake failed: %r", self._name, exc)
        if not await self._tasks.cancel_all(_CLOSE_TIMEOUT):
            logger.warning("[%s] background tasks did not stop in time", self._name)
        await self._abort()
        self._inbox.close()
        self._inbox.aclose_receiver()
        logger.info("[%s] transport closed", self._name)

    async def _abort(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    def __repr__(self) -> str:
        scheme = "wss" if self._uri.secure else "ws"
        return f"WebSocketTransport('{scheme}://{self._uri.host}:{self._uri.port}{self._uri.path}', name={self._name!r})"
