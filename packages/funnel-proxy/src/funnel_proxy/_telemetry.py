"""OpenTelemetry spans and metrics, following the MCP semantic conventions.

Theory of operation: telemetry is off until :func:`enable` is called, and off it costs
one check of the module flag :data:`enabled` per request (the stdio hot path checks it
once and keeps its task-free route); ``opentelemetry`` is not even imported. This module
is the only one in funnel that imports it, and only from :func:`enable` and
:func:`configure_from_env` on: the ``otel`` extra (``opentelemetry-api``) is optional.

On, every MCP request a client sends becomes a SERVER span named
``{mcp.method.name} {target}`` (``tools/call github__create_issue``; the target is the
tool or prompt name, else the span is named by the method alone), whatever the path:
stdio, ``/mcp`` in both eras, funnel-server's REST and ``/ws`` calls. Each request funnel
sends a backend for it becomes a CLIENT span under it, named with the backend's own tool
name. Trace context travels as the conventions define, in ``params._meta``
(``traceparent``/``tracestate`` under the configured propagator): a client's is
continued (else an HTTP request's ``traceparent`` header, else the ambient context), and
the CLIENT span's is written into the backend request's ``_meta``.

Attributes never hold argument values, results, credentials or query strings: a
backend URL gives ``server.address``/``server.port`` only, a resource URI loses its
userinfo, query and fragment, error descriptions pass through :func:`funnel_auth.redact`.

Metrics (one meter, ``funnel``): ``mcp.server.operation.duration`` and
``mcp.client.operation.duration`` histograms in seconds (per method, tool, backend,
error type), ``funnel.backend.status`` (an observable gauge: 1 for the status each
backend is in, 0 for the others) and ``funnel.auth.token.refreshes`` (a counter fed by
funnel-auth's audit events, per backend and outcome).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import UNSET, Raw, UnsetType

from funnel_auth import add_audit_listener, redact
from funnel_proxy._errors import ConfigError
from funnel_transports import DecodeError, Request, RpcError, from_raw

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions as _CallbackOptions
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from funnel_proxy._backend import Backend

__all__ = [
    "Peer",
    "ServerCall",
    "backend_request",
    "configure_from_env",
    "disable",
    "enable",
    "enabled",
    "http_exchange",
    "serving_stdio",
    "tool_call",
    "track_backend",
]

logger = logging.getLogger("funnel_proxy.telemetry")

enabled: bool = False
"""Whether telemetry is on: the one thing every call site checks (a module attribute)."""

_SCOPE: Final = "funnel"
_META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
#: The bucket boundaries the MCP conventions recommend for operation durations (seconds).
_DURATION_BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_STATUSES: Final = (
    "connecting",
    "connected",
    "reconnecting",
    "auth_required",
    "failed",
    "disabled",
)
_REFRESH_EVENTS: Final = {"auth.token_refreshed": "success", "auth.refresh_failed": "failure"}
_TARGETED: Final = {"tools/call": "gen_ai.tool.name", "prompts/get": "gen_ai.prompt.name"}
_WITH_URI: Final = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})
_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}

#: What `configure_from_env` looks for: without one of these it does nothing at all.
TRIGGER_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER")


@dataclass(frozen=True, slots=True)
class Peer:
    """How the downstream client reaches funnel (for ``network.*`` and ``mcp.session.id``).

    Attributes:
        transport: ``network.transport``: ``pipe`` (stdio) or ``tcp`` (HTTP, WebSocket).
        protocol: ``network.protocol.name`` (``http``, ``websocket``), if any.
        session_id: The ``Mcp-Session-Id`` of a handshake-era HTTP session.
        carrier: Trace context from the HTTP request's headers (``traceparent``, …).
    """

    transport: str | None = None
    protocol: str | None = None
    session_id: str | None = None
    carrier: Mapping[str, str] | None = None


_STDIO: Final = Peer(transport="pipe")
_UNKNOWN: Final = Peer()
_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "funnel_telemetry_peer", default=None
)


class _Instruments:
    """What :func:`enable` built: the tracer, the instruments, the propagator functions."""

    def __init__(self, tracer: Tracer, server: Histogram, client: Histogram, refreshes: Counter):
        from opentelemetry import propagate, trace

        self.tracer = tracer
        self.server_duration = server
        self.client_duration = client
        self.refreshes = refreshes
        self.inject = propagate.inject
        self.extract = propagate.extract
        self.set_span_in_context = trace.set_span_in_context
        self.get_current_span = trace.get_current_span


_on: _Instruments | None = None
_backends: weakref.WeakSet[Backend] = weakref.WeakSet()
_remove_listener: Callable[[], None] | None = None


# ---------------------------------------------------------------------------- switching


def enable(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Turn telemetry on (needs ``opentelemetry-api``: the ``otel`` extra).

    Args:
        tracer_provider: Where spans go; default: the global one (a no-op until an SDK
            sets one).
        meter_provider: Where metrics go; default: the global one.

    Raises:
        ConfigError: ``opentelemetry-api`` is not installed.
    """
    global enabled, _on, _remove_listener  # noqa: PLW0603 - the module flag is the design
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise ConfigError(
            "OpenTelemetry is not installed",
            hint="pip install 'funnel-proxy[otel]' (or 'funnel-server[otel]')",
        ) from exc
    from funnel_proxy import __version__

    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE, __version__)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE, __version__)
    server = meter.create_histogram(
        "mcp.server.operation.duration",
        unit="s",
        description="MCP request duration as observed by funnel, from receipt to answer.",
        explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
    )
    client = meter.create_histogram(
        "mcp.client.operation.duration",
        unit="s",
        description="Duration of a request funnel sent a backend, until its answer came.",
        explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
    )
    refreshes = meter.create_counter(
        "funnel.auth.token.refreshes",
        unit="{refresh}",
        description="OAuth token refreshes funnel made for its backends, by outcome.",
    )
    meter.create_observable_gauge(
        "funnel.backend.status",
        callbacks=[_observe_backends],
        unit="{backend}",
        description="1 for the status each backend is in, 0 for the other statuses.",
    )
    if _remove_listener is not None:
        _remove_listener()
    _remove_listener = add_audit_listener(_on_audit)
    _on = _Instruments(tracer, server, client, refreshes)
    enabled = True


def disable() -> None:
    """Turn telemetry off again (the providers are left as they are)."""
    global enabled, _on, _remove_listener  # noqa: PLW0603 - the module flag is the design
    enabled = False
    _on = None
    if _remove_listener is not None:
        _remove_listener()
        _remove_listener = None


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Set up the OpenTelemetry SDK from the standard ``OTEL_*`` variables, then :func:`enable`.

    Does nothing (and imports nothing) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_TRACES_EXPORTER`` is set, or when ``OTEL_SDK_DISABLED=true``. When a global
    SDK tracer provider is already set (``opentelemetry-instrument``), it is used as it is.
    Otherwise traces go to ``OTEL_TRACES_EXPORTER`` (``otlp`` by default, ``console``
    writes to stderr, ``none``) through a batch processor, metrics to
    ``OTEL_METRICS_EXPORTER`` (same choices) every ``OTEL_METRIC_EXPORT_INTERVAL`` ms; the
    OTLP exporter speaks HTTP/protobuf and reads its own ``OTEL_EXPORTER_OTLP_*``
    variables; the resource comes from ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``funnel-server`` unless they set one).

    Returns:
        Whether telemetry is now on.

    Raises:
        ConfigError: An unknown exporter, or the SDK/exporter is not installed.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not any(env.get(name, "").strip() for name in TRIGGER_VARIABLES):
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    except ImportError as exc:
        raise ConfigError(
            "OpenTelemetry is not installed",
            path=" or ".join(name for name in TRIGGER_VARIABLES if env.get(name)),
            hint="pip install 'funnel-server[otel]', or unset the OTEL_* variables",
        ) from exc
    if isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        enable()  # someone (opentelemetry-instrument) set the SDK up already
        return True
    attributes: dict[str, str] = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = "funnel-server"
    resource = Resource.create(attributes)
    tracer_provider = SdkTracerProvider(resource=resource)
    for exporter in _span_exporters(env):
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = SdkMeterProvider(resource=resource, metric_readers=_metric_readers(env))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    enable(tracer_provider=tracer_provider, meter_provider=meter_provider)
    logger.info(
        "OpenTelemetry on: traces to %s, metrics to %s",
        env.get("OTEL_TRACES_EXPORTER") or "otlp",
        env.get("OTEL_METRICS_EXPORTER") or "otlp",
    )
    return True


def _exporter_names(env: Mapping[str, str], variable: str) -> list[str]:
    names = [n.strip().lower() for n in (env.get(variable) or "otlp").split(",") if n.strip()]
    for name in names:
        if name not in ("otlp", "console", "none"):
            raise ConfigError(
                f"unknown exporter {name!r}", path=variable, hint="use otlp, console or none"
            )
    return [name for name in names if name != "none"]


def _otlp_protocol(env: Mapping[str, str], signal: str) -> None:
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() != "http/protobuf":
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported",
            path="OTEL_EXPORTER_OTLP_PROTOCOL",
            hint="funnel exports OTLP over http/protobuf (point it at the collector's port 4318)",
        )


def _span_exporters(env: Mapping[str, str]) -> list[Any]:
    exporters: list[Any] = []
    for name in _exporter_names(env, "OTEL_TRACES_EXPORTER"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            # stdout carries MCP in --stdio mode: nothing else may go there.
            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        else:
            _otlp_protocol(env, "TRACES")
            exporters.append(_import_otlp("trace_exporter", "OTLPSpanExporter")())
    return exporters


def _metric_readers(env: Mapping[str, str]) -> list[Any]:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers: list[Any] = []
    for name in _exporter_names(env, "OTEL_METRICS_EXPORTER"):
        if name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
        else:
            _otlp_protocol(env, "METRICS")
            exporter = _import_otlp("metric_exporter", "OTLPMetricExporter")()
            readers.append(PeriodicExportingMetricReader(exporter))
    return readers


def _import_otlp(module: str, name: str) -> Callable[[], Any]:
    import importlib

    try:
        found = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}")
    except ImportError as exc:
        raise ConfigError(
            "the OTLP exporter is not installed",
            path="OTEL_TRACES_EXPORTER",
            hint="pip install 'funnel-server[otel]', or choose the console exporter",
        ) from exc
    exporter: Callable[[], Any] = getattr(found, name)
    return exporter


# ---------------------------------------------------------------------------- downstream peers


def serving_stdio() -> None:
    """Mark the current context as an MCP client on stdio (``network.transport=pipe``)."""
    _peer.set(_STDIO)


def http_exchange(headers: Mapping[str, str], *, protocol: str = "http") -> None:
    """Mark the current context (one HTTP exchange's task) as a client over HTTP.

    Records its ``Mcp-Session-Id`` and the trace context of its headers, which requests
    without ``_meta.traceparent`` continue. Call it only when :data:`enabled`.

    Args:
        headers: The request's headers, names in lower case.
        protocol: ``network.protocol.name``.
    """
    carrier = {key: headers[key] for key in ("traceparent", "tracestate") if key in headers}
    _peer.set(Peer("tcp", protocol, headers.get("mcp-session-id"), carrier or None))


# ---------------------------------------------------------------------------- server spans


class _TraceMeta(msgspec.Struct):
    # Any: a client's odd value must not hide the method's target (checked when read).
    traceparent: Any = UNSET
    tracestate: Any = UNSET
    baggage: Any = UNSET
    version: Any = msgspec.field(default=UNSET, name=_META_VERSION)


class _Params(msgspec.Struct):
    name: Any = UNSET
    uri: Any = UNSET
    meta: _TraceMeta | UnsetType | None = msgspec.field(default=UNSET, name="_meta")


def _carrier(meta: _TraceMeta) -> dict[str, str]:
    return {
        key: value
        for key, value in (
            ("traceparent", meta.traceparent),
            ("tracestate", meta.tracestate),
            ("baggage", meta.baggage),
        )
        if isinstance(value, str)
    }


def _safe_uri(uri: str) -> str:
    """A URI without what may carry a credential: userinfo, query, fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "invalid"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class ServerCall:
    """One SERVER span and its duration measurement; end it exactly once.

    Made by :func:`start_server` (the dispatcher) and :func:`tool_call` (REST and
    ``/ws``); also a context manager that ends it, recording an escaping exception.
    """

    __slots__ = ("_attributes", "_on", "_span", "_started", "_token")

    def __init__(
        self,
        on: _Instruments,
        name: str,
        attributes: dict[str, Any],
        parent: Any,
    ) -> None:
        from opentelemetry import context
        from opentelemetry.trace import SpanKind

        self._on = on
        self._attributes = attributes
        self._span: Span = on.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self._token = context.attach(on.set_span_in_context(self._span, parent))
        self._started = time.perf_counter()

    def succeeded(self, result: Raw) -> None:
        """The request's result: a tool result with ``isError`` is a ``tool_error``."""
        if self._attributes.get("mcp.method.name") == "tools/call" and _is_error(result):
            self._set_error("tool_error", None)

    def failed(self, code: int, message: str) -> None:
        """The request was answered with a JSON-RPC error."""
        self._span.set_attribute("rpc.response.status_code", str(code))
        self._attributes["rpc.response.status_code"] = str(code)
        self._set_error(str(code), message)

    def failed_with(self, exc: BaseException) -> None:
        """The request failed with ``exc`` (REST and ``/ws``: no JSON-RPC answer)."""
        if isinstance(exc, RpcError):
            self.failed(exc.code, exc.message)
        elif isinstance(exc, DecodeError):
            self.failed(exc.code, str(exc))
        else:
            self._set_error(type(exc).__qualname__, str(exc))

    def _set_error(self, error_type: str, message: str | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._attributes["error.type"] = error_type
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(
            Status(StatusCode.ERROR, redact(message) if message is not None else None)
        )

    def end(self) -> None:
        """End the span and record the duration."""
        from opentelemetry import context

        elapsed = time.perf_counter() - self._started
        context.detach(self._token)
        self._span.end()
        self._on.server_duration.record(elapsed, _metric_attributes(self._attributes))

    def __enter__(self) -> ServerCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception):
            self.failed_with(exc)
        self.end()


class _NoCall:
    """What :func:`tool_call` returns while telemetry is off: does nothing, is shared."""

    __slots__ = ()

    def succeeded(self, result: Raw) -> None:
        """Nothing to record."""

    def __enter__(self) -> _NoCall:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_CALL: Final = _NoCall()


def _is_error(result: Raw) -> bool:
    data = bytes(result)
    return b'"isError"' in data and b'"isError":true' in data.replace(b" ", b"")


def _metric_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    # Low-cardinality ones only: no request or session ids, no URIs.
    return {
        key: value
        for key, value in attributes.items()
        if key not in ("jsonrpc.request.id", "mcp.session.id", "mcp.resource.uri")
    }


def start_server(request: Request, protocol_version: str | None) -> ServerCall:
    """Start the SERVER span of a request a client sent (call only when :data:`enabled`).

    Args:
        request: The client's request (its params are read for the target and
            ``_meta``, never for argument values).
        protocol_version: The session's negotiated version (handshake era), if any.
    """
    assert _on is not None  # noqa: S101 - only called while enabled
    method = request.method
    params = _Params()
    if isinstance(request.params, Raw):
        # Bad params: the dispatcher answers them; the span still names the method.
        with contextlib.suppress(DecodeError):
            params = from_raw(request.params, _Params)
    meta = params.meta if isinstance(params.meta, _TraceMeta) else None
    peer = _peer.get() or _UNKNOWN
    attributes: dict[str, Any] = {
        "mcp.method.name": method,
        "jsonrpc.request.id": str(request.id),
    }
    version = meta.version if meta is not None and isinstance(meta.version, str) else None
    if version is None:
        version = protocol_version
    if version is not None:
        attributes["mcp.protocol.version"] = version
    if peer.session_id is not None:
        attributes["mcp.session.id"] = peer.session_id
    if peer.transport is not None:
        attributes["network.transport"] = peer.transport
    if peer.protocol is not None:
        attributes["network.protocol.name"] = peer.protocol
    name = method
    target_key = _TARGETED.get(method)
    if target_key is not None and isinstance(params.name, str):
        attributes[target_key] = params.name
        name = f"{method} {params.name}"
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
    if method in _WITH_URI and isinstance(params.uri, str):
        attributes["mcp.resource.uri"] = _safe_uri(params.uri)
    carrier = _carrier(meta) if meta is not None else {}
    return ServerCall(_on, name, attributes, _parent(_on, carrier or peer.carrier))


def _parent(on: _Instruments, carrier: Mapping[str, str] | None) -> Any:
    """The context a SERVER span continues: the carrier's when it has a valid one."""
    if not carrier:
        return None
    try:
        found = on.extract(carrier)
    except (ValueError, TypeError):
        return None
    return found if on.get_current_span(found).get_span_context().is_valid else None


def tool_call(
    tool: str, *, protocol: str, headers: Mapping[str, str] | None = None
) -> ServerCall | _NoCall:
    """The SERVER span of a tool call from REST or ``/ws`` (a shared no-op while off).

    Args:
        tool: The exposed tool name.
        protocol: ``network.protocol.name`` (``http``, ``websocket``).
        headers: The HTTP request's headers, for a ``traceparent`` to continue.
    """
    if _on is None:
        return _NO_CALL
    carrier = (
        {key: headers[key] for key in ("traceparent", "tracestate") if key in headers}
        if headers is not None
        else None
    )
    attributes: dict[str, Any] = {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": tool,
        "gen_ai.operation.name": "execute_tool",
        "network.transport": "tcp",
        "network.protocol.name": protocol,
    }
    return ServerCall(_on, f"tools/call {tool}", attributes, _parent(_on, carrier))


# ---------------------------------------------------------------------------- client spans


def _backend_attributes(
    backend: Backend, url: str | None, method: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"mcp.method.name": method, "funnel.backend.name": backend.name}
    transport = backend.state.transport
    if transport == "stdio":
        attributes["network.transport"] = "pipe"
    else:
        attributes["network.transport"] = "tcp"
        attributes["network.protocol.name"] = "websocket" if transport == "websocket" else "http"
        if url is not None:
            try:
                parts = urlsplit(url)
                port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
            except ValueError:
                parts, port = None, None
            if parts is not None and parts.hostname:
                attributes["server.address"] = parts.hostname
                if port is not None:
                    attributes["server.port"] = port
    version = backend.state.protocol_version
    if version is not None:
        attributes["mcp.protocol.version"] = version
    target_key = _TARGETED.get(method)
    name = params.get("name") if params is not None else None
    if target_key is not None and isinstance(name, str):
        attributes[target_key] = name
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
    uri = params.get("uri") if params is not None else None
    if method in _WITH_URI and isinstance(uri, str):
        attributes["mcp.resource.uri"] = _safe_uri(uri)
    return attributes


async def backend_request(
    backend: Backend,
    url: str | None,
    method: str,
    params: Mapping[str, Any] | None,
    send: Callable[[Mapping[str, Any] | None], Awaitable[Raw]],
) -> Raw:
    """Send a backend request under a CLIENT span, its trace context in ``params._meta``.

    Args:
        backend: The backend (its name, transport and negotiated version are recorded).
        url: The backend's URL (HTTP, WebSocket): only its host and port are recorded.
        method: The request's method.
        params: The request's params (only its ``name``/``uri`` are read).
        send: Sends the request with the params given and returns the raw result.
    """
    on = _on
    if on is None:
        return await send(params)
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes = _backend_attributes(backend, url, method, params)
    target = attributes.get(_TARGETED.get(method, ""))
    span = on.tracer.start_span(
        f"{method} {target}" if target else method, kind=SpanKind.CLIENT, attributes=attributes
    )
    meta = dict(params.get("_meta") or {}) if params is not None else {}
    on.inject(meta, context=on.set_span_in_context(span))
    started = time.perf_counter()
    error: str | None = None
    try:
        result = await send({**(params or {}), "_meta": meta} if meta else params)
    except BaseException as exc:
        if isinstance(exc, RpcError):
            error = str(exc.code)
            span.set_attribute("rpc.response.status_code", error)
            attributes["rpc.response.status_code"] = error
            description = exc.message
        else:
            error = "cancelled" if not isinstance(exc, Exception) else type(exc).__qualname__
            description = str(exc)
        span.set_status(Status(StatusCode.ERROR, redact(description)))
        raise
    else:
        if method == "tools/call" and _is_error(result):
            error = "tool_error"
            span.set_status(Status(StatusCode.ERROR))
        return result
    finally:
        elapsed = time.perf_counter() - started
        if error is not None:
            attributes["error.type"] = error
            span.set_attribute("error.type", error)
        span.end()
        on.client_duration.record(elapsed, _metric_attributes(attributes))


# ---------------------------------------------------------------------------- metrics


def track_backend(backend: Backend) -> None:
    """Count ``backend`` in ``funnel.backend.status`` for as long as it exists."""
    _backends.add(backend)


def _observe_backends(options: _CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    return list(_observations(Observation))


def _observations(make: Callable[[int, dict[str, str]], Observation]) -> Iterator[Observation]:
    for backend in list(_backends):
        current = backend.state.status
        for status in _STATUSES:
            yield make(
                1 if status == current else 0,
                {"funnel.backend.name": backend.name, "funnel.backend.status": status},
            )


def _on_audit(event: str, fields: Mapping[str, object]) -> None:
    outcome = _REFRESH_EVENTS.get(event)
    on = _on
    if outcome is None or on is None:
        return
    server = fields.get("server")
    on.refreshes.add(
        1, {"funnel.backend.name": str(server) if server is not None else "", "outcome": outcome}
    )
