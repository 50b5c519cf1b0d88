"""The funnel: many backends behind one filtered, namespaced surface.

Theory of operation: entering a :class:`Funnel` starts one supervisor task per backend
(:class:`~funnel_proxy._backend.Backend`), all at once, and waits until each has either
connected or failed its first attempt, bounded by ``ready_timeout``: start-up costs about
the slowest backend, never the sum, and a broken backend never holds up the others.

Clients (one :class:`~funnel_proxy.McpServerSession` each) register while they are
connected, so that what backends send for clients reaches them:

* **Requests from a backend** (sampling, elicitation, roots) go to one client, chosen by
  one rule: among the clients that declared the capability the request needs, the ones
  with a call in flight to that backend; of those, the one whose call to it started
  last (the call most likely to have caused the request). With no call in flight, the
  client that was active last. With no client that can answer, the backend gets a
  JSON-RPC error at once (-32601, naming the capability), never a wait.
* **Log messages** (``notifications/message``) go to every client, ``logger`` naming the
  server, filtered by each client's ``logging/setLevel``; ``logging/setLevel`` goes to
  every connected backend that offers logging.
* **Resource updates** go only to the clients that subscribed to that URI; the owning
  backend is subscribed once, however many clients asked.

Every backend change (status, or one of its lists) rebuilds the :class:`Surface`, an
immutable snapshot of every tool, prompt and resource with its exposed name, owner and
visibility. Readers (``tools/list``, a call being routed) take the current snapshot
without locks. List changes are coalesced: a burst of backend notifications becomes one
:class:`FunnelEvent` of kind ``list_changed`` for subscribers.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import Raw

from funnel_auth import (
    AuthError,
    AuthorizationCodeAuth,
    AuthorizationFlows,
    AuthorizationRequired,
    BearerAuth,
    FlowRegistry,
    NoAuth,
    OAuth2AuthorizationCode,
)
from funnel_proxy._backend import Backend, BackendState
from funnel_proxy._core_tools import CORE_SERVER, CoreTools
from funnel_proxy._errors import BackendUnavailable, ProxyError, ToolNotFound
from funnel_proxy._limits import ToolCallLimits, ToolRateLimited
from funnel_proxy._models import FunnelConfig, ServerConfig
from funnel_proxy._mrtr import ParkedCall, ParkedCalls, input_required
from funnel_proxy._reload import ReloadReport, diff_configs
from funnel_proxy._routing import Client, InFlight, choose, client_supports, needed_capability
from funnel_proxy._surface import Surface, ToolEntry, build_surface
from funnel_proxy._tasks_routing import (
    TASK_NOTIFICATIONS,
    TASKS_EXTENSION,
    ClientTaskTable,
    TaskRoute,
    TaskTable,
    backend_offers_extension,
    backend_offers_task_calls,
    client_takes_task,
    created_task,
    merged_tasks_capability,
    related_task_id,
    task_support,
    with_related_task,
    with_task_id,
)
from funnel_proxy._visibility import VisibilityPolicy
from funnel_tokenstore import TokenStore, open_token_store
from funnel_transports import (
    ClientSession,
    DecodeError,
    ErrorResponse,
    Implementation,
    InvalidParams,
    Notification,
    Outcome,
    ProgressHandler,
    Request,
    RequestId,
    Response,
    RpcError,
    TaskHost,
    TransportError,
    from_raw,
    hosted_tasks,
    to_raw,
    validate_params,
)

__all__ = ["Funnel", "FunnelEvent"]

logger = logging.getLogger("funnel_proxy")

_COALESCE_SECONDS = 0.05
#: Events one subscriber may have unread before it loses some (list changes are kept).
MAX_QUEUED_EVENTS = 1024
#: ``tasks/list`` follows at most this many pages of one backend.
_MAX_TASK_PAGES = 20
_STOP_SECONDS = 15.0
"""Bound on stopping one backend (its transport's own shutdown is bounded well below)."""
#: Where a stateless-era request's ``_meta`` carries the calling client's capabilities.
_META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
LOGIN_WAIT = 300.0
"""How long a call whose client accepted a login (URL-mode elicitation) waits for it: the
lifetime of a pending authorization flow."""
METHOD_NOT_FOUND = -32601


@dataclass(frozen=True, slots=True)
class FunnelEvent:
    """Something subscribers may want to hear about.

    Attributes:
        kind: ``status`` (a backend's status changed), ``list_changed``,
            ``servers_changed`` (servers were added, removed or restarted by
            :meth:`Funnel.apply_config` or :meth:`Funnel.set_disabled`), or
            ``auth_required`` (a request to a connected backend needs a login now: a
            step-up ``403 insufficient_scope`` or a ``401`` during a call).
        state: The backend's new state (``status`` events).
        lists: Which lists changed (``list_changed`` events): ``tools``, ``prompts``,
            ``resources``.
        server: The backend that needs a login (``auth_required`` events).
        authorize_url: Where a person joins that login (``auth_required`` events): the
            ``authorize_link`` the embedder gave (funnel-server's
            ``/api/oauth/authorize/<server>``), no secret in it; ``None`` without one.
    """

    kind: Literal["status", "list_changed", "servers_changed", "auth_required"]
    state: BackendState | None = None
    lists: frozenset[str] = frozenset()
    server: str | None = None
    authorize_url: str | None = None


def _is_oauth(auth: object) -> bool:
    """Whether a backend's auth keeps OAuth tokens (every type but none and bearer)."""
    return auth is not None and not isinstance(auth, NoAuth | BearerAuth)


def tool_outcome(result: Raw) -> str:
    """``error`` when a tool result says ``"isError": true``, else ``success`` (no decoding)."""
    data = bytes(result)
    if b'"isError"' not in data:
        return "success"
    return "error" if b'"isError":true' in data.replace(b" ", b"") else "success"


def checked_arguments(arguments: Raw | Mapping[str, Any] | None) -> Raw | None:
    """A tool call's arguments as raw JSON, refused unless safe to pass on.

    Raises:
        InvalidParams: Not an object, not valid UTF-8, or nested too deep (-32602).
    """
    if arguments is None:
        return None
    raw = arguments if isinstance(arguments, Raw) else to_raw(arguments)
    data = bytes(raw)
    if not data.startswith(b"{"):
        raise InvalidParams("arguments must be an object")
    validate_params(data, what="arguments")
    return raw


def _ms_since(started: float) -> float:
    # Milliseconds to one decimal; round(x, 1) costs 0.3 us, this a tenth of that (the
    # two differ only for a duration within 1e-12 of a half tenth: never in practice).
    return int((time.perf_counter() - started) * 10_000 + 0.5) / 10


def _call_params(
    entry: ToolEntry,
    arguments: Raw | Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {**(extra or {}), "name": entry.original}
    if arguments is not None:
        params["arguments"] = arguments
    if meta:
        params["_meta"] = dict(meta)
    return params


class _HotToolCall:
    """One hot-path tool call, as the funnel sees it: :meth:`Funnel.record` runs around it.

    The session calls it with the backend's outcome; :meth:`cancel` withdraws it. (One
    slotted object per call instead of two closures and their cells.)
    """

    __slots__ = ("_context", "_entry", "_funnel", "_on_done", "_session", "_started", "request_id")

    def __init__(
        self,
        funnel: Funnel,
        entry: ToolEntry,
        context: Any,
        session: ClientSession,
        on_done: Callable[[Outcome], None],
    ) -> None:
        self._funnel = funnel
        self._entry = entry
        self._context = context
        self._session = session
        self._on_done = on_done
        self._started = time.perf_counter()
        self.request_id: RequestId = 0

    def __call__(self, outcome: Outcome) -> None:
        if isinstance(outcome, Response):
            verdict, reason = tool_outcome(outcome.result), None
        elif isinstance(outcome, ErrorResponse):
            verdict, reason = "failure", "RpcError"
        else:
            verdict, reason = "failure", type(outcome).__name__
        duration = _ms_since(self._started)
        try:
            self._on_done(outcome)  # the answer first: recording it never delays it
        finally:
            self._funnel.record(self._context, self._entry, verdict, duration, reason)

    def cancel(self) -> None:
        """Withdraw the call: the backend is told, ``on_done`` is not called."""
        self._session.cancel_request(self.request_id, "the client cancelled the call")
        self._funnel.record(self._context, self._entry, "cancelled", _ms_since(self._started), None)


def backend_auth_config(funnel: Funnel, server: str) -> object:
    """The ``auth`` config of ``server`` (``None`` when it has none)."""
    config = funnel.config.server(server)
    return config.auth if config is not None else None


def _differences(before: Surface, after: Surface) -> set[str]:
    """Which lists a client sees differently (``tools``, ``prompts``, ``resources``)."""
    kinds: set[str] = set()
    if before.exposed_tools != after.exposed_tools:
        kinds.add("tools")
    if before.prompts != after.prompts:
        kinds.add("prompts")
    if (before.resources, before.resource_templates) != (after.resources, after.resource_templates):
        kinds.add("resources")
    return kinds


@dataclass(slots=True)
class _Run:
    """One backend's supervisor task: its own cancel scope, and when it has finished."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


def _uses_oauth(config: FunnelConfig) -> bool:
    return any(_is_oauth(server.auth) for server in config.servers)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funnel-proxy")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "0"


class Funnel:
    """Connects to every configured backend and serves their union.

    Args:
        config: The configuration.
        environ: Environment for ``${VAR}`` resolution and stdio passthrough
            (default: this process's).
        base_dir: Directory relative config paths are resolved against.
        client_info: Name and version announced to backends.
        ready_timeout: Seconds entering waits for backends' first attempts.
        connect_timeout: Seconds one backend connect attempt may take.
        redirect_uri: The OAuth redirect URI for backends whose config sets none
            (funnel-server passes its own callback URL).
        token_store: Where OAuth tokens persist; default: the OS keychain when there is
            a real one, else a 0600 file in the funnel home (opened only when a backend
            uses OAuth).
        startup_wait: Seconds a client's first request that needs the backends' lists
            waits for backends still starting (later ones follow with ``list_changed``).
        flows: The registry of pending OAuth flows (default: this process's own; several
            replicas pass one they share).
        clock: The monotonic clock of the ``rateLimits`` windows (injectable for tests).
        authorize_link: Where a person starts a backend's login, given its name: the
            embedder's own route (funnel-server: ``/api/oauth/authorize/<name>``). States,
            events and errors carry it; without it they carry none, and a login is started
            with :meth:`begin_authorization`.

    Attributes:
        limits: The config's ``rateLimits``, enforced by :meth:`admit` on every path.
    """

    def __init__(
        self,
        config: FunnelConfig,
        *,
        environ: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        client_info: Implementation | None = None,
        ready_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        redirect_uri: str | None = None,
        token_store: TokenStore | None = None,
        startup_wait: float = 2.0,
        flows: FlowRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        authorize_link: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self._authorize_link = authorize_link
        self._limits_clock = clock
        self.limits = ToolCallLimits(config.rate_limits, clock=clock)
        self.startup_wait = startup_wait
        self._environ = dict(os.environ if environ is None else environ)
        self._base_dir = base_dir or Path.cwd()
        self._client_info = client_info or Implementation(name="funnel", version=_version())
        self._ready_timeout = ready_timeout
        self._connect_timeout = connect_timeout
        self.policy = VisibilityPolicy(config)
        self._redirect_uri = redirect_uri
        self._token_store = token_store
        self._flows: FlowRegistry = flows if flows is not None else AuthorizationFlows()
        self.core = CoreTools(self)
        self._enabled: set[str] = set()
        self._backends: dict[str, Backend] = {}
        self._runs: dict[str, _Run] = {}
        self._runtime_disabled: set[str] = set()
        self._surface = Surface()
        self._tools_raw: tuple[Surface, Raw] | None = None
        self._dirty: set[str] = set()
        self._changed = anyio.Event()
        self._settled = anyio.Event()
        self._subscribers: list[MemoryObjectSendStream[FunnelEvent]] = []
        self._missed: dict[MemoryObjectSendStream[FunnelEvent], set[str]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._clients: list[Client] = []
        self.parked = ParkedCalls()
        self._host: TaskHost | None = None
        self._cm: Any = None
        self._resource_subscribers: dict[str, set[Client]] = {}
        self._resource_listens: dict[str, anyio.CancelScope] = {}
        self.tasks = TaskTable()
        self.client_tasks = ClientTaskTable()
        self._tools_raw_no_tasks: tuple[Surface, Raw] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._cm = self._lifespan()
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        if self._token_store is None and any(
            _is_oauth(server.auth) for server in self.config.servers
        ):
            # Opening the keychain may talk to D-Bus: only when OAuth needs it.
            self._token_store = await anyio.to_thread.run_sync(open_token_store)
        async with hosted_tasks("funnel backends") as host:
            self._host = host
            self._task_group = host.tg
            for server in self.config.servers:
                self._backends[server.name] = self._make_backend(server)
            for backend in self._backends.values():
                self._start(backend)
            host.tg.start_soon(self._coalesce)
            host.tg.start_soon(self.core.maintain_index, name="search index")
            self._check_settled()
            try:
                with anyio.move_on_after(self._ready_timeout):
                    await self._settled.wait()
                    # The first discovery search then finds its index built.
                    await self.core.index_ready()
                yield
            finally:
                self._task_group = None
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()

    def _make_backend(self, server: ServerConfig) -> Backend:
        if server.name in self._runtime_disabled:
            server = msgspec.structs.replace(server, disabled=True)
        return Backend(
            server,
            self.config,
            environ=self._environ,
            base_dir=self._base_dir,
            listener=self._on_backend_change,
            client_info=self._client_info,
            connect_timeout=self._connect_timeout,
            token_store=self._token_store,
            flows=self._flows,
            redirect_uri=self._redirect_uri,
            authorize_link=self._authorize_link,
            server_requests=self._route_server_request,
            notifications=self._on_backend_notification,
        )

    def _start(self, backend: Backend) -> None:
        """Run ``backend``'s supervisor in its own cancel scope (so it can stop alone)."""
        if self._task_group is None or backend.name in self._runtime_disabled:
            # A run-time disabled backend is not run: its state stays ``disabled``.
            return
        run = _Run()
        self._runs[backend.name] = run
        self._task_group.start_soon(self._supervise, backend, run, name=f"backend {backend.name}")

    @staticmethod
    async def _supervise(backend: Backend, run: _Run) -> None:
        try:
            with run.scope:
                await backend.run()
        finally:
            run.done.set()

    async def _stop(self, name: str) -> None:
        """Cancel one backend's supervisor and wait (bounded) until its transport is closed."""
        run = self._runs.pop(name, None)
        if run is None:
            return
        run.scope.cancel()
        with anyio.move_on_after(_STOP_SECONDS, shield=True):
            await run.done.wait()

    # ------------------------------------------------------------------ reconfiguration

    async def apply_config(self, config: FunnelConfig) -> ReloadReport:
        """Switch to a new configuration, touching only what changed.

        Servers that are new start, servers that are gone stop, servers whose connection
        settings changed restart; the others keep their connection (and process). New
        tool filters apply at once. Clients hear one ``list_changed`` for what they now
        see differently (when the restarted backends have listed again, for those).
        What counts as a change: :func:`funnel_proxy.diff_configs`.

        Args:
            config: The new configuration (already validated).

        Returns:
            What was started, stopped, restarted and left alone.

        Raises:
            ProxyError: The funnel is not running.
        """
        if self._task_group is None:
            raise ProxyError("the funnel is not running")
        report = diff_configs(self.config, config)
        if self._token_store is None and _uses_oauth(config):
            self._token_store = await anyio.to_thread.run_sync(open_token_store)
        for name in (*report.removed, *report.restarted):
            await self._stop(name)
        self.config = config
        self.policy = VisibilityPolicy(config)
        if config.rate_limits != self.limits.config:  # counts start afresh
            self.limits = ToolCallLimits(config.rate_limits, clock=self._limits_clock)
        kept = self._backends
        self._backends = {}
        for server in config.servers:
            backend = kept.get(server.name)
            if backend is None or server.name not in report.unchanged:
                backend = self._make_backend(server)
                self._start(backend)
            self._backends[server.name] = backend
        self._runtime_disabled &= set(self._backends)
        if report.added or report.removed or report.restarted:
            self._publish(FunnelEvent(kind="servers_changed"))
        self._refresh()
        self._check_settled()
        return report

    async def set_disabled(self, server: str, disabled: bool) -> BackendState:
        """Disable a backend at run time (stop it), or enable it again (start it).

        A run-time disable lasts until enabled again (config reloads keep it); it is not
        written to the config file. A server disabled *in the file* is enabled by editing
        the file.

        Returns:
            The backend's state afterwards (``disabled``, or ``connecting``).

        Raises:
            KeyError: There is no backend of that name.
            ProxyError: Enabling a server the config file disables, or the funnel is not running.
        """
        config = self.config.server(server)
        if config is None:
            raise KeyError(server)
        if self._task_group is None:
            raise ProxyError("the funnel is not running")
        if not disabled and config.disabled:
            raise ProxyError(
                f'server {server!r} is disabled in the config file; set "disabled": false there'
            )
        if disabled == (server in self._runtime_disabled):
            return self._backends[server].state
        if disabled:
            self._runtime_disabled.add(server)
        else:
            self._runtime_disabled.discard(server)
        await self._stop(server)
        backend = self._make_backend(config)
        self._backends[server] = backend
        self._start(backend)
        self._publish(FunnelEvent(kind="servers_changed"))
        self._publish(FunnelEvent(kind="status", state=backend.state))
        self._refresh()
        self._check_settled()
        return backend.state

    # ------------------------------------------------------------------ shutdown

    def aclose_now(self) -> None:
        """Start disconnecting every backend, from any task; the ``async with`` block ends it."""
        self._task_group = None
        if self._host is not None:
            self._host.cancel()

    async def aclose(self) -> None:
        """Disconnect every backend (their processes are stopped, bounded)."""
        self.aclose_now()

    # ------------------------------------------------------------------ views

    @property
    def surface(self) -> Surface:
        """The current snapshot of tools, prompts and resources."""
        return self._surface

    def states(self) -> list[BackendState]:
        """Every backend's state, in configuration order."""
        return [backend.state for backend in self._backends.values()]

    def reconnect(self, server: str) -> None:
        """Reconnect one backend now.

        Raises:
            KeyError: There is no backend of that name.
        """
        self._backends[server].reconnect()

    @asynccontextmanager
    async def events(self) -> AsyncIterator[MemoryObjectReceiveStream[FunnelEvent]]:
        """Subscribe to status and list-change events for the duration of the block.

        The buffer is bounded (:data:`MAX_QUEUED_EVENTS`): a subscriber that far behind
        loses events, but never a list change: the lists it missed are announced in one
        ``list_changed`` as soon as it has room again.
        """
        send, receive = anyio.create_memory_object_stream[FunnelEvent](MAX_QUEUED_EVENTS)
        self._subscribers.append(send)
        try:
            async with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            self._missed.pop(send, None)
            send.close()

    def list_tools(self) -> list[dict[str, Any]]:
        """What ``tools/list`` answers: the enabled core tools, then the exposed tools."""
        return self.core.definitions() + self._surface.exposed_tools

    def list_tools_raw(self, *, tasks: bool = True) -> Raw:
        """:meth:`list_tools` as encoded JSON, computed once per surface snapshot.

        ``tools/list`` is the hottest read: with thousands of tools, encoding the list
        again for every client request would cost more than everything else it does.
        ``tasks=False`` (a client that did not declare tasks) leaves out the tools that
        can only run as a task (``execution.taskSupport: required``).
        """
        surface = self._surface
        if not tasks:
            kept = self._tools_raw_no_tasks
            if kept is None or kept[0] is not surface:
                tools = [tool for tool in self.list_tools() if task_support(tool) != "required"]
                kept = (surface, to_raw(tools))
                self._tools_raw_no_tasks = kept
            return kept[1]
        cached = self._tools_raw
        if cached is None or cached[0] is not surface:
            cached = (surface, to_raw(self.list_tools()))
            self._tools_raw = cached
        return cached[1]

    def enable_tools(self, names: Iterable[str]) -> list[str]:
        """Expose registered tools dynamically (discovery, toolsets); returns the newly enabled."""
        added = [
            name for name in names if name in self._surface.by_name and name not in self._enabled
        ]
        if added:
            self._enabled.update(added)
            self._refresh()
        return added

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every backend made its first attempt."""
        with anyio.move_on_after(timeout):
            await self._settled.wait()
            # The first discovery search then finds its index built.
            await self.core.index_ready()
        if not self._settled.is_set():
            starting = [b.name for b in self._backends.values() if b.state.status == "connecting"]
            logger.warning(
                "still starting after %.1f s: %s (their tools follow with list_changed)",
                timeout,
                ", ".join(starting),
            )
        return self._settled.is_set()

    def capabilities(self, *, current: bool = True) -> dict[str, Any]:
        """What the funnel offers clients.

        ``current``: the union of what the connected backends offer now (what
        ``server/discover`` answers, per request). Otherwise everything funnel can relay
        (``initialize``: a handshake-era session keeps its capabilities for its whole
        life, and backends still starting must not be lost from it); a backend that does
        not offer one answers such a request with its own error. ``tasks`` there is the
        union of the connected backends' once all have made their first attempt.
        """
        offered: dict[str, Any] = {
            "tools": {"listChanged": True},
            "prompts": {"listChanged": True},
            "resources": {"listChanged": True},
        }
        if not current:
            offered["resources"]["subscribe"] = True
            result = {**offered, "logging": {}, "completions": {}}
            # Tasks (2025-11-25): the union of the connected backends' once every backend
            # made its first attempt; before, everything funnel can route.
            tasks = (
                merged_tasks_capability(
                    b.session.server_capabilities
                    for b in self._backends.values()
                    if b.session is not None
                )
                if self._settled.is_set()
                else {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
            )
            if tasks is not None:
                result["tasks"] = tasks
            return result
        sessions = [b.session for b in self._backends.values() if b.session is not None]
        # The 2026-07-28 tasks extension, when a backend offers it (per request, current).
        if any(backend_offers_extension(session.server_capabilities) for session in sessions):
            offered["extensions"] = {TASKS_EXTENSION: {}}
        for session in sessions:
            theirs = session.server_capabilities
            if isinstance(theirs.get("logging"), dict):
                offered["logging"] = {}
            if isinstance(theirs.get("completions"), dict):
                offered["completions"] = {}
            resources = theirs.get("resources")
            if isinstance(resources, dict) and resources.get("subscribe"):
                offered["resources"]["subscribe"] = True
        return offered

    # ------------------------------------------------------------------ clients

    def add_client(self, client: Client) -> bool:
        """Register a downstream client; return whether it was not registered already."""
        if client in self._clients:
            return False
        self._clients.append(client)
        return True

    def remove_client(self, client: Client) -> None:
        """Unregister a client and end its resource subscriptions."""
        if client in self._clients:
            self._clients.remove(client)
        self.tasks.forget_owner(client)
        self.client_tasks.forget_client(client)
        for uri in [uri for uri, who in self._resource_subscribers.items() if client in who]:
            self._drop_subscriber(uri, client)

    @asynccontextmanager
    async def client(self, client: Client) -> AsyncIterator[None]:
        """Register a downstream client for the duration of the block (unless it is already)."""
        added = self.add_client(client)
        try:
            yield
        finally:
            if added:
                self.remove_client(client)

    def park(self, call: ParkedCall, run: Callable[[], Awaitable[Raw]]) -> None:
        """Run a parked call in the funnel's task group, a client of the funnel meanwhile.

        Raises:
            ProxyError: The funnel is not running.
        """
        if self._task_group is None:
            raise ProxyError("the funnel is not running")
        self._task_group.start_soon(self._run_parked, call, run, name=f"parked {call.id}")
        self._task_group.start_soon(self.parked.expire, call)

    async def _run_parked(self, call: ParkedCall, run: Callable[[], Awaitable[Raw]]) -> None:
        async with self.client(call):
            await call.run(run)

    def backend_era(self, server: str) -> str | None:
        """``modern`` or ``legacy`` for a connected backend, else ``None``."""
        backend = self._backends.get(server)
        session = backend.session if backend is not None else None
        return session.era if session is not None else None

    async def _route_server_request(self, server: str, request: Request) -> Raw:
        params = from_raw(request.params, dict[str, Any]) if isinstance(request.params, Raw) else {}
        if request.method in ("tasks/get", "tasks/result", "tasks/cancel"):
            return await self._client_task_request(server, request.method, params)
        needed = needed_capability(request.method)
        if needed is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}")
        chosen = self._chosen_for_task(server, request.method, params)
        if chosen is None:
            chosen = choose(self._clients, server, request.method, params)
        if chosen is None:
            raise RpcError(
                METHOD_NOT_FOUND,
                f"no client connected to funnel supports {needed} ({request.method})",
            )
        client, call = chosen
        raw = request.params if isinstance(request.params, Raw) else None
        as_task = "task" in params and client_takes_task(client.capabilities, request.method)
        if ("task" in params and not as_task) or related_task_id(params) is not None:
            raw = to_raw(self._for_client(server, params, keep_task=as_task))
        if call is not None:
            call.asking()
        try:
            result = await client.ask(request.method, raw, call)
        finally:
            if call is not None:
                call.answered_now()
        return self._remember_client_task(server, client, result) if as_task else result

    def _remember_client_task(self, server: str, client: Client, result: Raw) -> Raw:
        """A client's ``CreateTaskResult`` for a backend, with an id only funnel maps back."""
        try:
            decoded = from_raw(result, dict[str, Any])
        except DecodeError:
            return result
        task = created_task(decoded)
        if task is None:
            return result  # the client answered at once, as it may
        shown = self.client_tasks.add(server, client, task["taskId"], task.get("ttl"))
        return to_raw(with_task_id(decoded, shown.exposed))

    async def _client_task_request(
        self, server: str, method: str, params: Mapping[str, Any]
    ) -> Raw:
        """A backend polls a task a client runs for it: ask that client, with its own id."""
        task = self.client_tasks.find(params.get("taskId"), server)
        if task is None:
            raise RpcError(-32602, f"Invalid params: unknown task {params.get('taskId')!r}")
        client = next((c for c in self._clients if c is task.client), None)
        if client is None:
            raise RpcError(-32602, f"the client running task {task.exposed!r} is gone")
        answer = await client.ask(method, to_raw({**params, "taskId": task.task_id}), None)
        try:
            decoded = from_raw(answer, dict[str, Any])
        except DecodeError:
            return answer
        return to_raw(with_task_id(decoded, task.exposed))

    def _chosen_for_task(
        self, server: str, method: str, params: Mapping[str, Any]
    ) -> tuple[Client, InFlight | None] | None:
        """A request that names its task goes to the client that created the task."""
        found = self._task_owner(server, params)
        if found is None:
            return None
        client, _ = found
        if not client_supports(client.capabilities, method, params):
            return None
        calls = [call for call in client.in_flight(server) if not call.waiting]
        # The call that waits on the task (its tasks/result) carries the request best.
        return client, max(calls, key=lambda call: call.started) if calls else None

    def _for_client(
        self, server: str, params: Mapping[str, Any], *, keep_task: bool = False
    ) -> dict[str, Any]:
        """A backend's request as its client sees it: task ids shown, ``task`` dropped.

        funnel declares task-augmented sampling and elicitation to its backends (their
        tools that ask that way are then offered). A client that declared it too gets the
        request as it is (``keep_task``) and its task is polled through funnel; to any
        other client it is an ordinary request, and the backend gets the result itself
        instead of a task, which a requestor must accept from a receiver that did not
        create one.
        """
        out = with_related_task(
            params,
            lambda task_id: (
                route.exposed
                if (route := self.tasks.of_backend(server, task_id)) is not None
                else None
            ),
        )
        if not keep_task:
            out.pop("task", None)
        return out

    def _on_backend_notification(self, server: str, message: Notification) -> None:
        try:
            params = (
                from_raw(message.params, dict[str, Any]) if isinstance(message.params, Raw) else {}
            )
        except DecodeError:  # a malformed notice is the backend's problem, never ours
            logger.debug("[%s] ignored a malformed %s", server, message.method)
            return
        if message.method == "notifications/message":
            logger_name = params.get("logger")
            params["logger"] = f"{server}/{logger_name}" if isinstance(logger_name, str) else server
            level = params.get("level")
            forwarded = Notification(method=message.method, params=to_raw(params))
            for client in list(self._clients):
                client.deliver(
                    forwarded, level=level if isinstance(level, str) else None, server=server
                )
        elif message.method in TASK_NOTIFICATIONS:
            route = self.tasks.of_backend(server, params.get("taskId"))
            if route is not None and route.owner is not None and route.owner in self._clients:
                shown = Notification(
                    method=message.method, params=to_raw(with_task_id(params, route.exposed))
                )
                route.owner.deliver(shown, server=server)
        elif message.method == "notifications/resources/updated":
            uri = params.get("uri")
            for client in (
                list(self._resource_subscribers.get(uri, ())) if isinstance(uri, str) else ()
            ):
                client.deliver(message)

    async def set_log_level(self, level: str) -> None:
        """Forward ``logging/setLevel`` to every connected backend that offers logging."""
        async with anyio.create_task_group() as tg:
            for backend in self._backends.values():
                session = backend.session
                if session is not None and isinstance(
                    session.server_capabilities.get("logging"), dict
                ):
                    tg.start_soon(self._set_level_on, backend, level)

    async def _set_level_on(self, backend: Backend, level: str) -> None:
        try:
            await backend.request("logging/setLevel", {"level": level})
        except (ProxyError, TransportError) as exc:  # one backend's refusal fails nobody
            logger.info("[%s] logging/setLevel failed: %s", backend.name, exc)

    async def subscribe_resource(self, client: Client, uri: str) -> None:
        """Subscribe ``client`` to updates of ``uri`` (the owner is subscribed once).

        Raises:
            ToolNotFound: No backend serves ``uri``.
        """
        server = self._surface.owner_of_resource(uri)
        if server is None:
            raise ToolNotFound(uri)
        subscribers = self._resource_subscribers.get(uri)
        if not subscribers:
            await self._watch_resource(server, uri)
            subscribers = self._resource_subscribers.setdefault(uri, set())
        subscribers.add(client)

    async def _watch_resource(self, server: str, uri: str) -> None:
        """Subscribe the owner of ``uri`` once for all its clients.

        ``resources/subscribe`` in the handshake era; in 2026-07-28, which removed it, a
        ``subscriptions/listen`` stream for that URI, held until the last client leaves.
        """
        backend = self._backends.get(server)
        session = backend.session if backend is not None else None
        if session is None or session.era != "modern" or self._task_group is None:
            await self.forward(server, "resources/subscribe", {"uri": uri})
            return
        scope = anyio.CancelScope()
        self._resource_listens[uri] = scope
        self._task_group.start_soon(self._listen_for, session, uri, scope, name=f"watch {uri}")

    async def _listen_for(self, session: ClientSession, uri: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await session.request(
                    "subscriptions/listen",
                    {"notifications": {"resourceSubscriptions": [uri]}},
                    timeout=None,
                )
            except TransportError as exc:
                logger.info("[%s] watching %s ended: %s", session.name, uri, exc)
        if self._resource_listens.get(uri) is scope:
            del self._resource_listens[uri]

    async def unsubscribe_resource(self, client: Client, uri: str) -> None:
        """End ``client``'s subscription to ``uri``; the last one unsubscribes the owner."""
        if self._drop_subscriber(uri, client, notify=False):
            listen = self._resource_listens.pop(uri, None)
            server = self._surface.owner_of_resource(uri)
            if listen is not None:
                listen.cancel()  # ending the stream is the unsubscription (2026-07-28)
            elif server is not None:
                await self.forward(server, "resources/unsubscribe", {"uri": uri})

    def _drop_subscriber(self, uri: str, client: Client, *, notify: bool = True) -> bool:
        subscribers = self._resource_subscribers.get(uri)
        if subscribers is None or client not in subscribers:
            return False
        subscribers.discard(client)
        if subscribers:
            return False
        del self._resource_subscribers[uri]
        server = self._surface.owner_of_resource(uri)
        listen = self._resource_listens.pop(uri, None) if notify else None
        if listen is not None:
            listen.cancel()
        elif notify and server is not None and self._task_group is not None:
            self._task_group.start_soon(self._unsubscribe_quietly, server, uri)
        return True

    async def _unsubscribe_quietly(self, server: str, uri: str) -> None:
        try:
            await self.forward(server, "resources/unsubscribe", {"uri": uri})
        except (ProxyError, TransportError) as exc:  # the client is gone; the backend may be too
            logger.debug("[%s] resources/unsubscribe %s failed: %s", server, uri, exc)

    # ------------------------------------------------------------------ authorization

    async def begin_authorization(self, server: str) -> str:
        """Start (or reuse) the authorization code flow of ``server``; return the URL to open.

        Raises:
            KeyError: No backend of that name.
            ProxyError: The backend does not use ``oauth2-code`` auth.
            AuthError: Discovery or registration failed (the message says why).
        """
        backend = self._backends[server]
        auth = backend.auth
        if not isinstance(auth, AuthorizationCodeAuth):
            if isinstance(backend_auth_config(self, server), OAuth2AuthorizationCode):
                raise ProxyError(
                    f"server {server!r} has not tried to connect yet; try again in a moment"
                )
            raise ProxyError(f"server {server!r} does not use oauth2-code authorization")
        start = await auth.begin()
        return start.authorization_url

    async def complete_authorization(
        self,
        *,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        """Finish a flow from its callback, store the tokens, reconnect only its backend.

        Returns:
            The name of the server that is now authorized.

        Raises:
            AuthError: Unknown, reused or expired ``state``; an ``iss`` mismatch; a denial
                or a failed code exchange. Nothing is stored then.
        """
        server = await self._flows.complete(
            state, code, iss, error=error, error_description=error_description
        )
        backend = self._backends.get(server)
        if backend is not None:
            backend.reconnect()
        return server

    # ------------------------------------------------------------------ routing

    def resolve_tool(self, name: str, *, include_hidden: bool = False) -> ToolEntry:
        """The registered tool called ``name``.

        Args:
            name: The exposed name.
            include_hidden: Also find registered tools that are not exposed (the bridge).

        Raises:
            ToolNotFound: No such tool (or it is not exposed and ``include_hidden`` is off).
            BackendUnavailable: The tool's backend is known but not connected now.
        """
        if self.core.offers(name):
            return self.core.entry(name)
        entry = self._surface.by_name.get(name)
        if entry is None or not (entry.exposed or include_hidden):
            server = self._surface.unavailable.get(name)
            if server is not None:
                state = self._backends[server].state
                raise BackendUnavailable(server, state.status, state.error)
            raise ToolNotFound(name)
        return entry

    # ------------------------------------------------------------------ call hooks

    def admit(self, entry: ToolEntry) -> Any:
        """Hook run before every tool call, on every path; raise to refuse it.

        It applies the config's ``rateLimits``. An embedder may extend it (funnel-server
        audits the refusal); whatever it returns is handed to :meth:`record` for the same
        call.

        Raises:
            ToolRateLimited: A configured limit refused the call (nothing was counted).
        """
        wait = self.limits.acquire(entry.name) if self.limits else 0.0
        if wait > 0:
            raise ToolRateLimited(entry.name, wait)
        return None

    def record(
        self, context: Any, entry: ToolEntry, outcome: str, duration_ms: float, reason: str | None
    ) -> None:
        """Hook run after every admitted tool call (funnel-server writes its audit event).

        ``outcome`` is ``success``, ``error`` (the tool reported an error), ``failure``
        (the call failed; ``reason`` names the exception) or ``cancelled``.
        """

    async def call_tool(
        self,
        entry: ToolEntry,
        arguments: Raw | Mapping[str, Any] | None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_progress: ProgressHandler | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Raw:
        """Call a resolved tool on its backend and return the raw result.

        ``extra`` holds further params passed on as they are (the ``inputResponses`` and
        ``requestState`` of a multi-round-trip retry). :meth:`admit` and :meth:`record`
        run around it.

        Raises:
            BackendUnavailable: Its backend is not connected.
            RpcError: The backend answered with an error, or :meth:`admit` refused.
            TransportError: The call failed on the way.
        """
        context = self.admit(entry)
        started = time.perf_counter()
        outcome, reason = "failure", None
        try:
            result = await self._call_tool(entry, arguments, meta, on_progress, extra)
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except Exception as exc:
            reason = type(exc).__name__
            raise
        else:
            outcome = tool_outcome(result)
            return result
        finally:
            self.record(context, entry, outcome, _ms_since(started), reason)

    async def _call_tool(
        self,
        entry: ToolEntry,
        arguments: Raw | Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None,
        on_progress: ProgressHandler | None,
        extra: Mapping[str, Any] | None,
    ) -> Raw:
        checked = checked_arguments(arguments)
        if entry.server == CORE_SERVER and self.core.offers(entry.name):
            return await self.core.call(entry.name, checked, on_progress=on_progress)
        params = _call_params(entry, checked, meta, extra)
        try:
            return await self._backend(entry.server).request(
                "tools/call", params, on_progress=on_progress
            )
        except AuthorizationRequired as exc:
            caller = (meta or {}).get(_META_CAPABILITIES)

            async def resend() -> Raw:
                # The person logged in from the chat while the client waited: the call
                # runs now, once (the backend refused it before running it).
                return await self._backend(entry.server).request("tools/call", params)

            answer = await self._login_needed(
                entry.server,
                exc,
                resend,
                caller=caller if isinstance(caller, Mapping) else None,
            )
            if answer is None:
                raise
            return answer

    def start_tool_call(
        self,
        entry: ToolEntry,
        arguments: Raw | None,
        meta: Mapping[str, Any] | None,
        on_done: Callable[[Outcome], None],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Callable[[], None] | None:
        """The hot path: start a tool call without a task; ``on_done`` gets its outcome.

        Only for a backend whose session can send without waiting (stdio) and that
        speaks the handshake era (its results are never ``input_required``); otherwise
        this returns ``None`` and the caller uses :meth:`call_tool`. Returns a function
        that withdraws the call (the backend is told; ``on_done`` is not called).

        Raises:
            RpcError: :meth:`admit` refused the call.
            TransportClosed: The session ended just now.
        """
        backend = self._backends.get(entry.server)
        session = backend.hot_session if backend is not None else None
        if session is None:
            return None
        checked = checked_arguments(arguments)
        call = _HotToolCall(self, entry, self.admit(entry), session, on_done)
        call.request_id = session.start_request(
            "tools/call",
            _call_params(entry, checked, meta, None),
            call,  # within the session's deadline: the backend's request_timeout
            on_progress=on_progress,
        )
        return call.cancel

    async def forward(
        self,
        server: str,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        on_progress: ProgressHandler | None = None,
    ) -> Raw:
        """Forward any request to one backend (prompts, resources, completion)."""
        try:
            return await self._backend(server).request(method, params, on_progress=on_progress)
        except AuthorizationRequired as exc:

            async def resend() -> Raw:
                return await self._backend(server).request(method, params)

            answer = await self._login_needed(server, exc, resend)
            if answer is None:
                raise
            return answer

    async def _login_needed(
        self,
        server: str,
        exc: AuthorizationRequired,
        resend: Callable[[], Awaitable[Raw]],
        *,
        caller: Mapping[str, Any] | None = None,
    ) -> Raw | None:
        """A request to ``server`` needs a login now: say so, and ask the caller's client.

        Publishes an ``auth_required`` event at once (``/ws`` shows it). When the client
        whose call this is declared URL-mode elicitation, it is asked to open the
        authorization server's URL: a handshake-era client gets an ``elicitation/create``
        (``mode: url``) mid-call; a stateless-era one (known by ``caller``, the
        capabilities its request carried) gets an ``input_required`` result asking the
        same, and its retry waits for what follows. If the person accepts, the call
        waits (at most :data:`LOGIN_WAIT`) until the login completes through funnel's
        callback, the client gets ``notifications/elicitation/complete`` (handshake era),
        and ``resend`` sends the request again, once: its answer is returned. Otherwise
        (no such client, declined, the login failed or took too long) this returns
        ``None`` and the caller raises ``exc``, whose JSON-RPC error carries the URL.
        """
        route = self._authorize_link(server) if self._authorize_link is not None else None
        self._publish(FunnelEvent(kind="auth_required", server=server, authorize_url=route))
        logger.warning(
            "[%s] a request needs a login: %s",
            server,
            f"open {route}" if route else "start it with Funnel.begin_authorization",
        )
        backend = self._backends.get(server)
        auth = backend.auth if backend is not None else None
        if backend is None or not isinstance(auth, AuthorizationCodeAuth):
            return None
        url_mode = {"mode": "url"}
        if caller is not None and not client_supports(caller, "elicitation/create", url_mode):
            return None  # the caller said what it can do: not this
        chosen = choose(self._clients, server, "elicitation/create", url_mode)
        if chosen is not None and chosen[1] is not None:
            client, call = chosen[0], chosen[1]
            if await self._ask_login(
                server, exc, backend=backend, auth=auth, client=client, call=call
            ):
                return await resend()
            return None
        if caller is None:
            return None  # no URL-capable client with a call to this server: not ours to ask
        # A stateless-era caller: its request answers input_required, the login runs parked.
        parked = self.parked.new(server, caller)

        async def run() -> Raw:
            [mine] = parked.in_flight(server)
            if await self._ask_login(
                server, exc, backend=backend, auth=auth, client=parked, call=mine
            ):
                return await resend()
            raise exc

        self.park(parked, run)
        outcome = await parked.next()
        if isinstance(outcome, dict):
            return input_required(outcome, self.parked.sealer.seal(parked.id))
        self.parked.forget(parked)
        return outcome

    async def _ask_login(
        self,
        server: str,
        exc: AuthorizationRequired,
        *,
        backend: Backend,
        auth: AuthorizationCodeAuth,
        client: Client,
        call: InFlight,
    ) -> bool:
        """Ask ``client`` to open the login URL; wait for the login. Whether it happened."""
        elicitation_id = secrets.token_urlsafe(16)
        params = to_raw(
            {
                "mode": "url",
                "elicitationId": elicitation_id,
                "url": exc.authorization_url,
                "message": (
                    f"{server} needs you to log in (or to grant more permissions). Open the "
                    "link to authorize; the request goes on once you are done."
                ),
            }
        )
        previous = backend.session
        call.asking()
        try:
            answer = await client.ask("elicitation/create", params, call)
        except RpcError as error:
            logger.info("[%s] the client did not take the login link: %s", server, error.message)
            return False
        finally:
            call.answered_now()
        try:
            action = from_raw(answer, dict[str, Any]).get("action")
        except DecodeError:
            action = None
        if action != "accept":
            logger.info("[%s] the login link was not accepted (%s)", server, action)
            return False
        try:
            await auth.wait_authorized(LOGIN_WAIT)
        except AuthError as error:
            logger.info("[%s] no login for the waiting request: %s", server, error)
            return False
        client.deliver(
            Notification(
                method="notifications/elicitation/complete",
                params=to_raw({"elicitationId": elicitation_id}),
            )
        )
        # The callback reconnects the backend: the retry goes to the new session.
        await backend.wait_replaced(previous, self._connect_timeout)
        return True

    # ------------------------------------------------------------------ tasks

    def check_task_call(self, entry: ToolEntry) -> None:
        """Refuse a task-augmented call of a tool that cannot run as a task.

        Raises:
            RpcError: -32601, as the spec says, when the tool's backend did not declare
                task-augmented ``tools/call`` or the tool's ``taskSupport`` forbids it.
        """
        backend = self._backends.get(entry.server)
        session = backend.session if backend is not None else None
        offered = session is not None and backend_offers_task_calls(session.server_capabilities)
        if not offered or task_support(entry.definition) == "forbidden":
            raise RpcError(
                METHOD_NOT_FOUND, f"tool {entry.name!r} does not support task-augmented calls"
            )

    def remember_task(self, server: str, result: Raw, owner: object | None) -> Raw:
        """If ``result`` created a task, remember its backend and show the client its id.

        Returns ``result`` untouched when it is an ordinary result (no decoding unless the
        bytes mention a task).
        """
        if b'"task' not in bytes(result):
            return result
        try:
            decoded = from_raw(result, dict[str, Any])
        except DecodeError:
            return result
        task = created_task(decoded)
        if task is None:
            return result
        ttl = task.get("ttl", task.get("ttlMs"))
        route = self.tasks.add(server, task["taskId"], owner, ttl)
        logger.debug("[%s] task %s is %s", server, task["taskId"], route.exposed)
        return to_raw(with_task_id(decoded, route.exposed))

    def find_task(self, params: Mapping[str, Any], owner: object | None) -> TaskRoute:
        """The route of the task ``params.taskId`` names, for ``owner``.

        Raises:
            RpcError: -32602 for an id funnel does not know (expired, or another
                client's).
        """
        route = self.tasks.find(params.get("taskId"), owner)
        if route is None:
            raise RpcError(-32602, f"Invalid params: unknown task {params.get('taskId')!r}")
        return route

    async def task_request(self, method: str, params: Mapping[str, Any], route: TaskRoute) -> Raw:
        """Route ``tasks/get|result|cancel|update`` to the backend that owns the task.

        Raises:
            RpcError: The backend's own error.
        """
        forwarded = {**params, "taskId": route.task_id}
        timeout = None
        if method == "tasks/result":
            # It blocks until the task ends: bounded by the task's life, not the call deadline.
            timeout = max(1.0, route.expires - time.monotonic())
        result = await self._backend(route.server).request(method, forwarded, timeout=timeout)
        return self._show_task(result, route)

    @staticmethod
    def _show_task(result: Raw, route: TaskRoute) -> Raw:
        data = bytes(result)
        if route.task_id.encode() not in data:
            return result
        try:
            decoded = from_raw(result, dict[str, Any])
        except DecodeError:
            return result
        return to_raw(with_task_id(decoded, route.exposed))

    async def list_tasks(self, owner: object | None) -> Raw:
        """``tasks/list``: the merged list of this client's tasks, with the ids it was shown.

        Each backend that offers ``tasks/list`` is asked (every page, bounded); only the
        tasks funnel created for ``owner`` are shown. The merged list has no further page.
        """
        mine = self.tasks.owned_by(owner)
        servers = sorted({route.server for route in mine})
        found: dict[str, dict[str, Any]] = {}

        async def list_one(server: str) -> None:
            backend = self._backends.get(server)
            session = backend.session if backend is not None else None
            if session is None or not isinstance(
                session.server_capabilities.get("tasks", {}).get("list"), dict
            ):
                return
            cursor: Any = None
            for _ in range(_MAX_TASK_PAGES):
                params = {"cursor": cursor} if cursor is not None else {}
                try:
                    page = from_raw(
                        await self.forward(server, "tasks/list", params), dict[str, Any]
                    )
                except (ProxyError, TransportError, DecodeError) as exc:
                    logger.info("[%s] tasks/list failed: %s", server, exc)
                    return
                for task in page.get("tasks") or ():
                    if isinstance(task, dict):
                        route = self.tasks.of_backend(server, task.get("taskId"))
                        if route is not None:
                            found[route.exposed] = with_task_id(task, route.exposed)
                cursor = page.get("nextCursor")
                if not isinstance(cursor, str):
                    return

        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(list_one, server)
        ordered = [found[route.exposed] for route in mine if route.exposed in found]
        return to_raw({"tasks": ordered})

    def _task_owner(self, server: str, params: Mapping[str, Any]) -> tuple[Client, str] | None:
        """The client whose task a backend's message is about (by ``related-task``)."""
        route = self.tasks.of_backend(server, related_task_id(params))
        if route is None or route.owner is None or route.owner not in self._clients:
            return None
        return route.owner, route.exposed

    def _backend(self, server: str) -> Backend:
        backend = self._backends.get(server)
        if backend is None:
            raise BackendUnavailable(server, "unknown")
        return backend

    # ------------------------------------------------------------------ changes

    def _on_backend_change(self, state: BackendState, changed: frozenset[str]) -> None:
        self._publish(FunnelEvent(kind="status", state=state))
        if changed:
            self._refresh()
        self._check_settled()

    def _refresh(self) -> None:
        """Rebuild the surface; announce only the lists a client now sees differently."""
        before = self._surface
        self._rebuild()
        self.core.surface_changed()
        self._mark_dirty(_differences(before, self._surface))

    def _check_settled(self) -> None:
        if all(backend.state.status != "connecting" for backend in self._backends.values()):
            self._settled.set()

    def _mark_dirty(self, kinds: set[str]) -> None:
        self._dirty |= kinds
        self._changed.set()

    async def _coalesce(self) -> None:
        while True:
            await self._changed.wait()
            # Let a burst (several backends reconnecting, a backend re-listing three
            # kinds) settle into one notification.
            await anyio.sleep(_COALESCE_SECONDS)
            self._changed = anyio.Event()
            kinds, self._dirty = frozenset(self._dirty), set()
            if kinds:
                self._publish(FunnelEvent(kind="list_changed", lists=kinds))

    def _publish(self, event: FunnelEvent) -> None:
        for stream in list(self._subscribers):
            try:
                missed = self._missed.get(stream)
                if missed is not None:
                    if missed:
                        stream.send_nowait(
                            FunnelEvent(kind="list_changed", lists=frozenset(missed))
                        )
                    del self._missed[stream]
                stream.send_nowait(event)
            except anyio.WouldBlock:
                lost = self._missed.setdefault(stream, set())
                if event.kind == "list_changed":
                    lost |= event.lists
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._subscribers.remove(stream)
                self._missed.pop(stream, None)

    # ------------------------------------------------------------------ the surface

    def _rebuild(self) -> None:
        self._surface = build_surface(
            self.states(), self.policy, self._enabled, prefixes=self.config.prefixes
        )
