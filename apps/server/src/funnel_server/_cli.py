"""The ``funnel-server`` command line.

Plain ``funnel-server`` runs the funnel and the web app (REST API, ``/mcp``, ``/ws``,
OAuth callback, dashboard) on uvicorn, on 127.0.0.1:3456 by default, and prints the
dashboard's sign-in link on stderr. ``funnel-server --stdio`` serves the funnel to one
MCP client on stdin/stdout (nothing but MCP ever reaches stdout) and keeps the web app
listening for OAuth callbacks and the dashboard. ``funnel-server login SERVER`` runs the
authorization code flow for one ``oauth2-code`` backend. ``funnel-server tools`` prints
exactly what a client's ``tools/list`` gets (core tools included) and its size in
tokens; ``funnel-server check`` tries every backend, prints a status table on stdout and
how to fix each failed backend on stderr.

Serving HTTP, funnel-server watches a stdin that is not a terminal: when a desktop client
forgot ``--stdio`` and writes MCP to it, a message says so and funnel-server exits 2
instead of leaving the client waiting.

Exit codes: 0 success; 1 a backend failed (``check``) or a login did not finish;
2 bad arguments or config, with a message naming the file, the JSON path and the fix
(also a non-loopback ``--host`` without ``FUNNEL_API_TOKEN``, and ``login`` of a server
without OAuth). With no config file anywhere, an embedded demo config with a built-in
backend runs.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import gc
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import socket
import stat
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import anyio
import anyio.abc
import msgspec

from funnel_auth import AuthError, OAuth2AuthorizationCode
from funnel_proxy import (
    BackendState,
    Funnel,
    FunnelConfig,
    ProxyError,
    ServerConfig,
    StdioTransportConfig,
    serve_stdio,
)
from funnel_proxy._config import load_config
from funnel_proxy._errors import ConfigError, ConfigNotFound
from funnel_proxy._telemetry import configure_from_env as configure_telemetry_from_env
from funnel_server._audit import RedactingFormatter, configure_audit_log, remove_audit_handlers
from funnel_server._calls import ServerFunnel, authorize_route
from funnel_server._live_config import watching_config
from funnel_server._logs import LogBuffer
from funnel_server._security import API_TOKEN_ENV, is_loopback_host, load_api_token
from funnel_server._serve import bind, display_host, running_server
from funnel_server._settings import AppSettings, Readiness, check_public_url
from funnel_server._shared import SHARED_STATE_ENV, SharedState, SharedStateError
from funnel_tokenstore import STATE_KEY_ENV, funnel_home

__all__ = ["demo_config", "main"]

logger = logging.getLogger("funnel_server")

EXIT_OK = 0
EXIT_BACKEND_FAILED = 1
EXIT_USAGE = 2

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3456
PUBLIC_URL_ENV = "FUNNEL_PUBLIC_URL"


@functools.cache
def _version() -> str:
    try:
        return version("funnel-server")
    except PackageNotFoundError:  # a source tree without metadata
        return "0"


def demo_config() -> FunnelConfig:
    """The config used when there is none: the built-in demo backend only."""
    demo = StdioTransportConfig(command=sys.executable, args=("-m", "funnel_server._demo"))
    return FunnelConfig(
        servers=(ServerConfig(name="demo", transport=demo),),
        default_passthrough_env=("PATH", "HOME"),
    )


_EXIT_CODES = """exit codes:
  0  success
  1  a backend failed (check), a login did not finish in time
  2  bad arguments or config: the message names the file, the JSON path and the fix"""

_MAIN_EPILOG = f"""commands:
  (none)          serve the web app (dashboard, REST API, /ws, MCP at /mcp)
  --stdio         serve MCP on stdin/stdout for a desktop client (Claude, Cursor, ...)
  tools           print the tools a client's tools/list gets, and their size in tokens
  check           validate the config, try every backend, tell how to fix each problem
  login SERVER    authorize an OAuth backend (prints the URL to open)

Run "funnel-server COMMAND --help" for each command. With no config file, a built-in
demo backend runs. Config: --config PATH, else ./.mcp-funnel.json, merged over
~/.mcp-funnel/.mcp-funnel.json (MCP_FUNNEL_HOME moves that folder).

{_EXIT_CODES}"""


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funnel-server",
        description="funnel: many MCP servers behind one filtered, namespaced tool surface.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="PATH", help="the config file (default: ./.mcp-funnel.json)"
    )
    parser.add_argument(
        "--stdio",
        action="store_true",
        help="serve MCP on stdin/stdout (for desktop clients); the web app keeps listening",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address of the web app (default {DEFAULT_HOST}; anything else needs {API_TOKEN_ENV})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the web app (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept requests for this Host name (repeatable)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept browser requests from this origin, e.g. https://example.com (repeatable)",
    )
    parser.add_argument(
        "--shared-state",
        metavar="URL",
        default=None,
        help=(
            "share tokens, logins and limits with other replicas through Valkey/Redis: "
            f"redis://HOST:PORT/DB, rediss://… or unix://PATH (or ${SHARED_STATE_ENV}; "
            f"needs {STATE_KEY_ENV})"
        ),
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        default=os.environ.get(PUBLIC_URL_ENV) or None,
        help=(
            "the externally visible base URL (a load balancer's): OAuth redirect URI, "
            f"dashboard link, accepted Host/Origin (or ${PUBLIC_URL_ENV})"
        ),
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, seconds in-flight requests get to finish (default 10)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
        help="log level on stderr: DEBUG, INFO, WARNING, ERROR (default INFO, or $FUNNEL_LOG_LEVEL)",
    )

    parser.add_argument("--version", action="version", version=f"funnel-server {_version()}")
    # People type options after the command too (`funnel-server check --config x.json`):
    # the commands accept the ones that matter to them, defaulting to the main parser's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the config file (default: ./.mcp-funnel.json)",
    )
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="log level on stderr (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "tools",
        parents=[common],
        help="print the tools a client's tools/list gets, and their size in tokens",
        description=_wrap(
            "Start every backend, then print the tool surface exactly as an MCP client's "
            "tools/list gets it (the core tools included), each tool marked + (listed) or - "
            "(registered but not listed: hidden, or not in exposeTools), and an estimate of "
            "the tokens that list costs in the model's context (about 4 bytes of JSON per token)."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_parser(
        "check",
        parents=[common],
        help="validate the config, try every backend, tell how to fix each problem",
        description=_wrap(
            "Validate the config, start every backend once, print a status table (stdout, one "
            "line per backend) and, for each backend that is not connected, what to do about "
            "it (stderr; for a backend that needs a login: the funnel-server login command "
            "and the URL)."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_parser(
        "state-key",
        help="print a new random FUNNEL_STATE_KEY",
        description=_wrap(
            "Print a new random state key (32 bytes, base64url) for FUNNEL_STATE_KEY, the key "
            "that encrypts tokens, pending logins and session tickets at rest. To rotate, put "
            "the new key first and keep the old one after a comma until everything sealed "
            "with it has been rewritten: FUNNEL_STATE_KEY=<new>,<old>."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login = sub.add_parser(
        "login",
        parents=[common],
        help="authorize one OAuth backend (prints the URL to open)",
        description=_wrap(
            'Authorize a backend whose "auth" is {"type": "oauth2-code"}: print the '
            "authorization URL (open it in a browser), serve the OAuth callback on the web "
            "app's port, wait for it, and store the tokens (OS keychain, else a 0600 file). "
            "Later runs refresh them by themselves."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login.add_argument("server", help="the backend's name in the config")
    login.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the browser (default 300)"
    )
    login.add_argument(
        "--port",
        type=int,
        default=argparse.SUPPRESS,
        help=f"port for the OAuth callback (default {DEFAULT_PORT})",
    )
    return parser


def _load(path: str | None) -> tuple[FunnelConfig, Path, str]:
    try:
        loaded = load_config(path)
    except ConfigNotFound:
        return demo_config(), Path.cwd(), "the built-in demo config (no .mcp-funnel.json found)"
    return loaded.config, loaded.base_dir, ", ".join(str(source) for source in loaded.sources)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``funnel-server``; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "state-key":
        from funnel_tokenstore import generate_state_key

        print(generate_state_key())
        return EXIT_OK
    handler = logging.StreamHandler(sys.stderr)
    # Libraries log request headers at DEBUG (uvicorn's WebSocket handshake): mask credentials.
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=str(args.log_level).upper(), handlers=[handler])
    serving = args.command in (None, "login")
    if (
        serving
        and not is_loopback_host(args.host)
        and not os.environ.get(API_TOKEN_ENV, "").strip()
    ):
        print(
            f"funnel-server: refusing to listen on {args.host} without {API_TOKEN_ENV}: anyone who "
            f"can reach that address could use every backend. Set {API_TOKEN_ENV} to a long random "
            "secret (python -c 'import secrets; print(secrets.token_urlsafe(32))'), or keep the "
            f"default --host {DEFAULT_HOST}.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        config, base_dir, source = _load(args.config)
    except ConfigError as exc:
        print(f"funnel-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logger.info("config: %s", source)
    try:
        if args.command in ("check", "tools"):
            try:
                shared = SharedState.from_environment(args.shared_state)
            except SharedStateError as exc:
                print(f"funnel-server: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if args.command == "check":
                return _event_loop(
                    _until_signalled, _check, config, base_dir, sys.stdout, source, shared
                )
            return _event_loop(_until_signalled, _tools, config, base_dir, sys.stdout, shared)
        if args.command == "login":
            refused = _login_refusal(config, args.server, source)
            if refused is not None:
                print(f"funnel-server: {refused}", file=sys.stderr)
                return EXIT_USAGE
        return _serve(args, config, base_dir)
    except KeyboardInterrupt:  # a signal that arrived before the event loop started
        return EXIT_OK
    except (ConfigError, ExceptionGroup) as exc:
        # A config problem found only when a backend starts (a dotenv file edited since
        # loading, say) is still a config problem: a message and exit 2, no traceback.
        found = _config_error(exc)
        if found is None:
            raise
        print(f"funnel-server: {found}", file=sys.stderr)
        return EXIT_USAGE


def _config_error(exc: BaseException) -> ConfigError | None:
    """The :class:`ConfigError` in ``exc`` (itself or inside exception groups), if any."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _config_error(inner)
            if found is not None:
                return found
    cause = exc.__cause__ or exc.__context__
    return _config_error(cause) if cause is not None and cause is not exc else None


def _auth_type(server: ServerConfig) -> str:
    """The ``auth.type`` of a server as the config file spells it (``none`` when absent)."""
    auth = server.auth
    if auth is None:
        return "none"
    tag = type(auth).__struct_config__.tag
    return str(tag) if isinstance(tag, str) else type(auth).__name__


def _login_refusal(config: FunnelConfig, name: str, source: str) -> str | None:
    """Why ``funnel-server login NAME`` cannot work for this config, or ``None``."""
    chosen = config.server(name)
    if chosen is None:
        names = ", ".join(server.name for server in config.servers) or "none"
        return f"no server named {name!r} (configured: {names})"
    if isinstance(chosen.auth, OAuth2AuthorizationCode):
        return None
    if isinstance(chosen.transport, StdioTransportConfig):
        return (
            f"{name} is a stdio server: it has no login; it gets credentials through its "
            '"env" or "secretProviders" in ' + source
        )
    return (
        f"{name} does not use OAuth authorization code (its auth type is "
        f'"{_auth_type(chosen)}"), so there is nothing to log in to; to log in, set '
        f'"auth": {{"type": "oauth2-code"}} on servers.{name} in {source}'
    )


EVENT_LOOP_ENV = "FUNNEL_EVENT_LOOP"


def _event_loop(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``anyio.run`` on asyncio, with uvloop's loop where it is installed.

    uvloop measured 5-12 % less time per HTTP request here (``tools/bench/http_stack.py``).
    ``FUNNEL_EVENT_LOOP=asyncio`` keeps the standard loop.
    """
    use_uvloop = os.environ.get(EVENT_LOOP_ENV, "").strip().lower() != "asyncio"
    if use_uvloop and importlib.util.find_spec("uvloop") is None:
        use_uvloop = False
    # What start-up made (modules, classes, the parsed config) lives as long as the
    # process: moved out of the collector's way, a full collection walks only what serving
    # made since. Before: every few thousand proxied calls, a 10-13 ms pause walking
    # 44,000 objects, 1.2-1.4 us per call on average; after: 1-5 ms over 6,000.
    gc.collect()
    gc.freeze()
    return anyio.run(main, *args, backend_options={"use_uvloop": use_uvloop})


async def _until_signalled(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """Run ``main`` until it returns, or until SIGINT/SIGTERM asks funnel-server to stop.

    A signal cancels ``main``, which unwinds through the funnel: backends are stopped and
    their children reaped, the web app shut down, tokens already persisted. Handling both
    signals here, in the event loop, works the same whether SIGINT is deliverable (a
    terminal) or ignored (a background job, a service manager that only sends SIGTERM).

    A ``main`` that drains (the HTTP server) says so through :data:`_drain`: the first
    signal then asks it to drain (stop accepting, finish the requests in flight within
    its bound, close the backends) and only a second signal, or the drain overrunning
    its bound, cancels it.
    """
    result = EXIT_OK
    drain = _Drain()
    _drain.set(drain)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            nonlocal result
            result = await main(*args)
            tg.cancel_scope.cancel()

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if drain.graceful and not drain.requested.is_set():
                        logger.info("%s received; draining (at most %g s)", name, drain.bound)
                        drain.requested.set()
                        tg.start_soon(backstop)
                        continue
                    logger.info("%s received; shutting down", name)
                    tg.cancel_scope.cancel()
                    return

        async def backstop() -> None:
            await anyio.sleep(drain.bound + 15)  # the drain's own bound, plus closing backends
            logger.warning("the drain took too long; stopping now")
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    return result


@dataclass
class _Drain:
    """A graceful stop requested by a signal (see :func:`_until_signalled`)."""

    requested: anyio.Event = field(default_factory=anyio.Event)
    graceful: bool = False
    bound: float = 10.0


_drain: contextvars.ContextVar[_Drain | None] = contextvars.ContextVar("funnel_drain", default=None)


def _serve(args: argparse.Namespace, config: FunnelConfig, base_dir: Path) -> int:
    configure_telemetry_from_env()  # the OTel SDK, only when OTEL_* variables ask for it
    home = funnel_home()
    try:
        token, token_source = load_api_token(home)
    except ValueError as exc:
        print(f"funnel-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        public_url = check_public_url(args.public_url) if args.public_url else None
        shared = SharedState.from_environment(args.shared_state)
    except (ValueError, SharedStateError) as exc:
        print(f"funnel-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if shared is not None and args.stdio:
        print("funnel-server: --shared-state is for HTTP replicas, not --stdio", file=sys.stderr)
        return EXIT_USAGE
    # The audit log's stderr copy: every event at DEBUG, else only failures.
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    audit_log = configure_audit_log(home, stream_level=logging.DEBUG if debug else logging.WARNING)
    try:
        sock: socket.socket | None
        try:
            sock = bind(args.host, args.port)
        except OSError as exc:
            if not args.stdio:
                print(
                    f"funnel-server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            # Several desktop clients may each start a --stdio funnel: the first one serves
            # the web app, the others still serve MCP.
            logger.warning(
                "the web app is not running: cannot listen on %s:%s (%s); OAuth logins need it",
                args.host,
                args.port,
                exc.strerror or exc,
            )
            sock = None
        settings = AppSettings(
            api_token=token,
            version=_version(),
            bind_host=args.host,
            allowed_hosts=tuple(args.allow_host),
            allowed_origins=tuple(args.allow_origin),
            public_url=public_url,
            drain_timeout=max(0.0, args.drain_timeout),
        )
        logger.info("API token from %s", token_source)
        if args.command == "login":
            if sock is None:  # pragma: no cover - login never runs with --stdio
                return EXIT_USAGE
            return _event_loop(
                _until_signalled,
                _login,
                config,
                base_dir,
                settings,
                sock,
                args.server,
                args.timeout,
                shared,
            )
        return _event_loop(
            _until_signalled,
            _run,
            config,
            base_dir,
            settings,
            sock,
            args.stdio,
            args.config,
            shared,
        )
    finally:
        remove_audit_handlers(audit_log)


def _startup_wait() -> float:
    """``FUNNEL_STARTUP_WAIT``: seconds a first list waits for backends still starting."""
    raw = os.environ.get("FUNNEL_STARTUP_WAIT", "2")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        logger.warning("FUNNEL_STARTUP_WAIT=%r is not a number of seconds; using 2", raw)
        return 2.0
    return seconds


def _funnel_options(port: int | None, public_url: str | None = None) -> dict[str, Any]:
    """The OAuth redirect URI and the login route of this app.

    ``<public url>/api/oauth/callback`` when there is one, else this server's own
    callback on the port it really listens on (``check`` and ``tools``, which serve
    nothing: the default port, where ``funnel-server`` completes the login later).
    """
    if "redirect_uri" not in inspect.signature(Funnel.__init__).parameters:
        return {}
    options: dict[str, Any] = {"authorize_link": authorize_route}
    if public_url is not None:
        options["redirect_uri"] = f"{public_url}/api/oauth/callback"
    else:
        options["redirect_uri"] = f"http://localhost:{port or DEFAULT_PORT}/api/oauth/callback"
    return options


async def _shared_options(
    stack: AsyncExitStack, shared: SharedState | None, config: FunnelConfig
) -> dict[str, Any]:
    """Connect the shared state (if any) and the funnel options that use it.

    With shared state the tokens and client registrations live in it whatever the local
    token-store setting says (for a config with an authenticated server), and pending
    logins are shared by every replica.

    Raises:
        SharedStateError: It cannot be reached, or funnel-tokenstore lacks its store.
    """
    if shared is None:
        return {}
    from funnel_server._shared import SharedFlows

    await stack.enter_async_context(shared)
    options: dict[str, Any] = {"shared": shared, "flows": SharedFlows(shared)}
    if any(server.auth is not None for server in config.servers):
        options["token_store"] = shared.token_store()
    return options


def _base_url(settings: AppSettings, sock: socket.socket) -> str:
    if settings.public_url is not None:
        return settings.public_url
    return f"http://{display_host(settings.bind_host)}:{sock.getsockname()[1]}"


def _sign_in_url(base: str, token: str, next_path: str | None = None) -> str:
    url = f"{base}/?token={quote(token, safe='')}"
    return f"{url}&next={quote(next_path, safe='/')}" if next_path else url


async def _run(  # noqa: PLR0917 - called positionally by anyio.run
    config: FunnelConfig,
    base_dir: Path,
    settings: AppSettings,
    sock: socket.socket | None,
    stdio: bool,
    config_path: str | None = None,
    shared: SharedState | None = None,
) -> int:
    port = sock.getsockname()[1] if sock is not None else None
    # Serving starts at once: a slow backend never holds up initialize or the web app;
    # the first list waits for it briefly, and it is announced with list_changed later.
    options = {
        "ready_timeout": 0.0,
        "startup_wait": _startup_wait(),
        **_funnel_options(port, settings.public_url),
    }
    async with AsyncExitStack() as stack:
        try:
            options |= await _shared_options(stack, shared, config)
        except SharedStateError as exc:
            print(f"funnel-server: {exc}", file=sys.stderr)
            return EXIT_BACKEND_FAILED
        return await _run_funnel(config, base_dir, settings, sock, stdio, config_path, options)


async def _run_funnel(  # noqa: PLR0917 - internal, positional like _run
    config: FunnelConfig,
    base_dir: Path,
    settings: AppSettings,
    sock: socket.socket | None,
    stdio: bool,
    config_path: str | None,
    options: dict[str, Any],
) -> int:
    async with (
        # Capturing before the backends start: the dashboard's log view has their first lines.
        _captured_logs(settings.log_capacity) as logs,
        ServerFunnel(config, base_dir=base_dir, **options) as funnel,
        watching_config(funnel, config_path),
    ):
        if sock is None:
            await serve_stdio(funnel, version=_version())
            return EXIT_OK
        base = _base_url(settings, sock)
        banner = (
            f"funnel-server {_version()}: dashboard {_sign_in_url(base, settings.api_token)}\n"
            f"  MCP endpoint {base}/mcp (Authorization: Bearer <the token in that link>)"
        )
        if stdio:
            # The socket listens already (connections queue in its backlog); the web app
            # and its imports are paid only when the first connection arrives.
            print(banner, file=sys.stderr, flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_web_app_on_first_connection, funnel, settings, sock, logs)
                tg.start_soon(_announce_authorization, funnel, base, settings.api_token)
                await serve_stdio(funnel, version=_version())
                tg.cancel_scope.cancel()
            return EXIT_OK
        from funnel_server._app import create_app

        drain = _drain.get() or _Drain()
        drain.graceful, drain.bound = True, settings.drain_timeout
        readiness = Readiness()
        app = create_app(funnel, settings, logs=logs, shared=funnel.shared, readiness=readiness)
        async with (
            running_server(app, sock, graceful_timeout=settings.drain_timeout) as running,
            anyio.create_task_group() as tg,
        ):
            print(banner, file=sys.stderr, flush=True)
            tg.start_soon(funnel.follow_logins)

            async def overview() -> None:
                # Serving does not wait for the backends; the overview does, briefly,
                # so that its counts are what a client's tools/list gets.
                await funnel.wait_ready(10.0)
                _overview(funnel, sys.stderr)

            tg.start_soon(overview)
            mcp_on_stdin = anyio.Event()
            tg.start_soon(_watch_stdin_for_mcp, mcp_on_stdin)
            async with anyio.create_task_group() as either:

                async def stopped() -> None:
                    await running.stopped.wait()
                    either.cancel_scope.cancel()

                async def misused() -> None:
                    await mcp_on_stdin.wait()
                    either.cancel_scope.cancel()

                async def drained() -> None:
                    # SIGTERM: readiness says 503 from now on, and leaving this block
                    # stops accepting and waits for the requests in flight (bounded);
                    # the funnel then closes the backends.
                    await drain.requested.wait()
                    readiness.draining = True
                    either.cancel_scope.cancel()

                either.start_soon(stopped)
                either.start_soon(misused)
                either.start_soon(drained)
            tg.cancel_scope.cancel()
            if mcp_on_stdin.is_set():
                print(_STDIN_MCP_MESSAGE, file=sys.stderr, flush=True)
                return EXIT_USAGE
    return EXIT_OK


async def _web_app_on_first_connection(
    funnel: Funnel, settings: AppSettings, sock: socket.socket, logs: LogBuffer
) -> None:
    """Start the web app on ``sock`` once a client connects to it (``--stdio`` mode).

    A desktop client's funnel may never see a browser: Litestar, uvicorn and the app
    (about 10 MiB and a third of a second) are loaded for the first OAuth callback or
    dashboard visit, which waits that long once. Until then the socket's backlog holds
    the connection.
    """
    try:
        await anyio.wait_readable(sock)
        app_module = await anyio.to_thread.run_sync(importlib.import_module, "funnel_server._app")
        app = app_module.create_app(funnel, settings, logs=logs)
        async with running_server(app, sock) as running:
            await running.stopped.wait()
    finally:
        sock.close()


@asynccontextmanager
async def _captured_logs(capacity: int) -> AsyncIterator[LogBuffer]:
    with LogBuffer(capacity) as logs:
        yield logs


_STDIN_MCP_MESSAGE = (
    "funnel-server: MCP messages are arriving on stdin, but funnel-server serves MCP over "
    'HTTP (at /mcp) unless started with --stdio. Add "--stdio" to the args in the '
    'client\'s config, e.g. "args": ["funnel-server", "--stdio"]. funnel-server stops now, '
    "so the client reports an error instead of waiting for an answer."
)


async def _watch_stdin_for_mcp(found: anyio.Event) -> None:
    """Set ``found`` when stdin is not a terminal and its first bytes are JSON-RPC.

    A desktop client that runs ``funnel-server`` without ``--stdio`` (the TypeScript
    mcp-funnel serves stdio by default) writes ``initialize`` to stdin and waits for an
    answer on stdout that never comes. Detecting that turns a silent hang into a message.
    stdin that is a terminal, ``/dev/null``, closed, or carries anything else is left alone.
    """
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        if fd < 0 or os.isatty(fd):
            return
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            await anyio.wait_readable(fd)
        elif not stat.S_ISREG(mode):
            return
        first = os.read(fd, 4096)
    except (OSError, ValueError):
        return
    text = first.lstrip()
    if text.startswith((b"{", b"[")) and b'"jsonrpc"' in text:
        found.set()


async def _announce_authorization(funnel: Funnel, base: str, token: str) -> None:
    """In --stdio mode, print once per backend where to authorize it (stderr)."""
    announced: set[str] = set()

    def announce_all() -> None:
        for state in funnel.states():
            if (
                state.status == "auth_required"
                and state.authorize_url
                and state.name not in announced
            ):
                announced.add(state.name)
                print(
                    f"funnel-server: {state.name} needs authorization; open "
                    f"{_sign_in_url(base, token, state.authorize_url)}",
                    file=sys.stderr,
                    flush=True,
                )

    async with funnel.events() as events:
        announce_all()
        async for _ in events:
            announce_all()


async def _login(  # noqa: PLR0917 - called positionally by anyio.run
    config: FunnelConfig,
    base_dir: Path,
    settings: AppSettings,
    sock: socket.socket,
    server_name: str,
    timeout: float,
    shared: SharedState | None = None,
) -> int:
    chosen = config.server(server_name)  # main() checked it exists and uses oauth2-code
    if chosen is None:  # pragma: no cover
        sock.close()
        return EXIT_USAGE
    only = msgspec.structs.replace(config, servers=(chosen,))
    options = _funnel_options(sock.getsockname()[1], settings.public_url)
    async with AsyncExitStack() as stack:
        try:
            options |= await _shared_options(stack, shared, only)
        except SharedStateError as exc:
            print(f"funnel-server: {exc}", file=sys.stderr)
            sock.close()
            return EXIT_BACKEND_FAILED
        return await _login_with(only, base_dir, settings, sock, server_name, timeout, options)


async def _login_with(  # noqa: PLR0917 - internal, positional like _login
    config: FunnelConfig,
    base_dir: Path,
    settings: AppSettings,
    sock: socket.socket,
    server_name: str,
    timeout: float,
    options: dict[str, Any],
) -> int:
    async with ServerFunnel(config, base_dir=base_dir, **options) as funnel:
        from funnel_server._app import create_app, oauth_hooks

        hooks = oauth_hooks(funnel)
        if hooks is None:
            print("funnel-server: this build cannot run authorization flows", file=sys.stderr)
            sock.close()
            return EXIT_USAGE
        app = create_app(funnel, settings, shared=funnel.shared)
        async with running_server(app, sock), funnel.events() as events:
            state = funnel.states()[0]
            if state.status == "connected":
                print(f"funnel-server: {server_name} is connected; nothing to do", file=sys.stderr)
                return EXIT_OK
            try:
                url = await hooks.begin_authorization(server_name)
            except (ProxyError, AuthError) as exc:
                print(f"funnel-server: cannot authorize {server_name}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(
                f"Open this URL in a browser to authorize {server_name}:\n  {url}\n"
                f"Waiting up to {timeout:.0f} s for the browser to come back…",
                file=sys.stderr,
                flush=True,
            )
            with anyio.move_on_after(timeout):
                async for event in events:
                    if (
                        event.state is not None
                        and event.state.name == server_name
                        and event.state.status == "connected"
                    ):
                        print(
                            f"funnel-server: {server_name} is authorized and connected",
                            file=sys.stderr,
                        )
                        return EXIT_OK
            print(
                f"funnel-server: {server_name} was not authorized within {timeout:.0f} s",
                file=sys.stderr,
            )
            return EXIT_BACKEND_FAILED


def _estimate_tokens(payload: object) -> int:
    # About four bytes of JSON per token for the tokenizers of the common models.
    return len(msgspec.json.encode(payload)) // 4


def _listed(funnel: Funnel) -> tuple[list[dict[str, Any]], int]:
    """What a client's ``tools/list`` gets (core tools included) and its token estimate."""
    tools = funnel.list_tools()
    return tools, _estimate_tokens({"tools": tools})


def _states(funnel: Funnel, out: TextIO) -> None:
    for state in funnel.states():
        detail = f" ({state.error})" if state.error and state.status != "connected" else ""
        print(f"{state.name}: {state.status}, {len(state.tools)} tools{detail}", file=out)


def _overview(funnel: Funnel, out: TextIO) -> None:
    _states(funnel, out)
    tools, tokens = _listed(funnel)
    print(
        f"{len(tools)} tools listed to clients, about {tokens} tokens of tools/list.\n"
        "Add servers in ./.mcp-funnel.json (see the README); `funnel-server tools` shows "
        "the list, `funnel-server check` what to fix.",
        file=out,
        flush=True,
    )


@asynccontextmanager
async def _inspecting(
    config: FunnelConfig, base_dir: Path, shared: SharedState | None
) -> AsyncIterator[Funnel | None]:
    """The funnel ``check`` and ``tools`` start (``None``: the shared state is unreachable).

    With shared state it reads the replicas' tokens and pending logins, so it reports what
    they would see. When it cannot be reached the reason is printed and ``None`` yielded.
    """
    async with AsyncExitStack() as stack:
        try:
            options = await _shared_options(stack, shared, config)
        except SharedStateError as exc:
            print(f"funnel-server: {exc}", file=sys.stderr)
            yield None
            return
        options.pop("shared", None)  # a ServerFunnel option; this one only reads
        yield await stack.enter_async_context(
            Funnel(config, base_dir=base_dir, **_funnel_options(None), **options)
        )


async def _tools(
    config: FunnelConfig, base_dir: Path, out: TextIO, shared: SharedState | None = None
) -> int:
    async with _inspecting(config, base_dir, shared) as funnel:
        if funnel is None:
            return EXIT_BACKEND_FAILED
        _states(funnel, out)
        tools, tokens = _listed(funnel)
        listed = {str(tool.get("name")) for tool in tools}
        rows: list[tuple[str, str, str]] = [
            ("+", str(tool.get("name")), str(tool.get("description") or ""))
            for tool in tools
            if str(tool.get("name")) not in {entry.name for entry in funnel.surface.tools}
        ]
        rows += [
            (
                "+" if entry.name in listed else "-",
                entry.name,
                str(entry.definition.get("description") or ""),
            )
            for entry in funnel.surface.tools
        ]
        print(file=out)
        for mark, name, description in rows:
            print(f"  {mark} {name:<40} {description.split(chr(10), 1)[0][:70]}", file=out)
        unlisted = sum(1 for mark, _, _ in rows if mark == "-")
        offered = sum(len(state.tools) for state in funnel.states())
        hidden = max(offered - len(funnel.surface.tools), 0)
        print(
            f"\n{len(tools)} tools exposed to clients ({unlisted} registered but not listed, "
            f"{hidden} hidden by hideTools), about {tokens} tokens of tools/list",
            file=out,
        )
    return EXIT_OK


def _fix(state: BackendState, server: ServerConfig | None, source: str) -> str:
    """What to do about a backend that is not connected (one line for people)."""
    name = state.name
    if state.status == "auth_required":
        return (
            f'run "funnel-server login {name}", or with funnel-server running open '
            f"http://localhost:{DEFAULT_PORT}/api/oauth/authorize/{quote(name, safe='')} "
            "(sign in to the dashboard with the link it prints first)"
        )
    if server is None:
        return ""
    transport = server.transport
    where = f"servers.{name} in {source}"
    if isinstance(transport, StdioTransportConfig):
        shown = " ".join([transport.command, *transport.args])
        return (
            f'check "command"/"args" of {where}: run `{shown}` yourself to see why it fails '
            "(its stderr is in the log above)"
        )
    error = (state.error or "").lower()
    if "401" in error or "403" in error or "unauthor" in error or "forbidden" in error:
        return f'the server refused the credentials: check "auth" (or "headers") of {where}'
    return f'check that {transport.url} is reachable and is an MCP endpoint ("url" of {where})'


async def _check(
    config: FunnelConfig,
    base_dir: Path,
    out: TextIO,
    source: str,
    shared: SharedState | None = None,
) -> int:
    async with _inspecting(config, base_dir, shared) as funnel:
        if funnel is None:
            return EXIT_BACKEND_FAILED
        states = funnel.states()
        conflicts = funnel.surface.conflicts
    width = max((len(state.name) for state in states), default=4)
    print(f"{'server':<{width}}  {'status':<13} tools  error", file=out)
    for state in states:
        print(
            f"{state.name:<{width}}  {state.status:<13} {len(state.tools):>5}  {state.error or ''}",
            file=out,
        )
    if conflicts:
        # Resolved by the config order (not an error), but a person should know.
        print(
            f"\n{len(conflicts)} name conflicts (the server listed first keeps the name):", file=out
        )
        for conflict in conflicts:
            print(f"  {conflict.describe()}", file=out)
    failed = [state for state in states if state.status not in ("connected", "disabled")]
    if failed:
        # Advice goes to stderr: stdout stays the table, one line per backend, for scripts.
        print("to fix:", file=sys.stderr)
        for state in failed:
            fix = _fix(state, config.server(state.name), source)
            print(f"  {state.name}: {fix}", file=sys.stderr, flush=True)
    return EXIT_BACKEND_FAILED if failed else EXIT_OK
