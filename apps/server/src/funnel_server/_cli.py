"""The ``funnel-server`` command line.

Plain ``funnel-server`` runs the funnel and the web app (REST API, ``/mcp``, ``/ws``,
OAuth callback, dashboard) on uvicorn, on 127.0.0.1:3456 by default, and prints the
dashboard's sign-in link on stderr. ``funnel-server --stdio`` serves the funnel to one
MCP client on stdin/stdout (nothing but MCP ever reaches stdout) and keeps the web app
listening for OAuth callbacks and the dashboard. ``funnel-server login SERVER`` runs the
authorization code flow for one backend. ``funnel-server tools`` prints the tool surface
and its size in tokens, ``funnel-server check`` tries every backend and prints a status
table.

Exit codes: 0 success; 1 a backend failed (``check``) or a login did not finish;
2 bad arguments or config (including a non-loopback ``--host`` without
``FUNNEL_API_TOKEN``). With no config file anywhere, an embedded demo config with a
built-in backend runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import anyio
import anyio.abc
import msgspec

from funnel_auth import AuthError
from funnel_proxy import Funnel, FunnelConfig, ProxyError, ServerConfig, StdioTransport, serve_stdio
from funnel_proxy._config import load_config
from funnel_proxy._errors import ConfigError, ConfigNotFound
from funnel_server._audit import RedactingFormatter, configure_audit_log, remove_audit_handlers
from funnel_server._calls import ServerFunnel
from funnel_server._live_config import watching_config
from funnel_server._logs import LogBuffer
from funnel_server._security import API_TOKEN_ENV, is_loopback_host, load_api_token
from funnel_server._serve import bind, display_host, running_server
from funnel_server._settings import AppSettings
from funnel_tokenstore import funnel_home

__all__ = ["demo_config", "main"]

logger = logging.getLogger("funnel_server")

EXIT_OK = 0
EXIT_BACKEND_FAILED = 1
EXIT_USAGE = 2

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3456


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funnel-server")
    except PackageNotFoundError:  # a source tree without metadata
        return "0"


def demo_config() -> FunnelConfig:
    """The config used when there is none: the built-in demo backend only."""
    demo = StdioTransport(command=sys.executable, args=("-m", "funnel_server._demo"))
    return FunnelConfig(
        servers=(ServerConfig(name="demo", transport=demo),),
        default_passthrough_env=("PATH", "HOME"),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funnel-server",
        description="funnel: many MCP servers behind one filtered, namespaced tool surface.",
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
        help=f"port of the web app (default {DEFAULT_PORT})",
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
        "--log-level",
        default=os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
        help="log level on stderr",
    )

    parser.add_argument("--version", action="version", version=f"funnel-server {_version()}")
    # People type options after the command too (`funnel-server check --config x.json`):
    # the commands accept the ones that matter to them, defaulting to the main parser's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--port", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "tools", parents=[common], help="print the exposed tool surface and its size in tokens"
    )
    sub.add_parser(
        "check",
        parents=[common],
        help="validate the config, try every backend, print a status table",
    )
    login = sub.add_parser(
        "login", parents=[common], help="authorize one backend (OAuth authorization code flow)"
    )
    login.add_argument("server", help="the backend's name in the config")
    login.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the browser (default 300)"
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
        if args.command == "check":
            return _event_loop(_until_signalled, _check, config, base_dir, sys.stdout)
        if args.command == "tools":
            return _event_loop(_until_signalled, _tools, config, base_dir, sys.stdout)
        return _serve(args, config, base_dir)
    except KeyboardInterrupt:  # a signal that arrived before the event loop started
        return EXIT_OK


EVENT_LOOP_ENV = "FUNNEL_EVENT_LOOP"


def _event_loop(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``anyio.run`` on asyncio, with uvloop's loop where it is installed.

    uvloop measured 5-12 % less time per HTTP request here (``tools/bench/http_stack.py``).
    ``FUNNEL_EVENT_LOOP=asyncio`` keeps the standard loop.
    """
    use_uvloop = os.environ.get(EVENT_LOOP_ENV, "").strip().lower() != "asyncio"
    if use_uvloop and importlib.util.find_spec("uvloop") is None:
        use_uvloop = False
    return anyio.run(main, *args, backend_options={"use_uvloop": use_uvloop})


async def _until_signalled(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """Run ``main`` until it returns, or until SIGINT/SIGTERM asks funnel-server to stop.

    A signal cancels ``main``, which unwinds through the funnel: backends are stopped and
    their children reaped, the web app shut down, tokens already persisted. Handling both
    signals here, in the event loop, works the same whether SIGINT is deliverable (a
    terminal) or ignored (a background job, a service manager that only sends SIGTERM).
    """
    result = EXIT_OK
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            nonlocal result
            result = await main(*args)
            tg.cancel_scope.cancel()

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logger.info("%s received; shutting down", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        tg.start_soon(run)
    return result


def _serve(args: argparse.Namespace, config: FunnelConfig, base_dir: Path) -> int:
    home = funnel_home()
    try:
        token, token_source = load_api_token(home)
    except ValueError as exc:
        print(f"funnel-server: {exc}", file=sys.stderr)
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
            )
        return _event_loop(
            _until_signalled, _run, config, base_dir, settings, sock, args.stdio, args.config
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


def _funnel_options(port: int | None) -> dict[str, Any]:
    """The OAuth redirect URI: this server's own callback on the port it really listens on."""
    if port is None or "redirect_uri" not in inspect.signature(Funnel.__init__).parameters:
        return {}
    return {"redirect_uri": f"http://localhost:{port}/api/oauth/callback"}


def _base_url(settings: AppSettings, sock: socket.socket) -> str:
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
) -> int:
    port = sock.getsockname()[1] if sock is not None else None
    # Serving starts at once: a slow backend never holds up initialize or the web app;
    # the first list waits for it briefly, and it is announced with list_changed later.
    options = {"ready_timeout": 0.0, "startup_wait": _startup_wait(), **_funnel_options(port)}
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

        async with running_server(create_app(funnel, settings, logs=logs), sock) as running:
            print(banner, file=sys.stderr, flush=True)
            _overview(funnel, sys.stderr)
            await running.stopped.wait()
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
) -> int:
    chosen = [server for server in config.servers if server.name == server_name]
    if not chosen:
        names = ", ".join(server.name for server in config.servers) or "none"
        print(
            f"funnel-server: no server named {server_name!r} (configured: {names})", file=sys.stderr
        )
        sock.close()
        return EXIT_USAGE
    only = msgspec.structs.replace(config, servers=(chosen[0],))
    options = _funnel_options(sock.getsockname()[1])
    async with ServerFunnel(only, base_dir=base_dir, **options) as funnel:
        from funnel_server._app import create_app, oauth_hooks

        hooks = oauth_hooks(funnel)
        if hooks is None:
            print("funnel-server: this build cannot run authorization flows", file=sys.stderr)
            sock.close()
            return EXIT_USAGE
        app = create_app(funnel, settings)
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


def _overview(funnel: Funnel, out: TextIO) -> None:
    surface = funnel.surface
    exposed = surface.exposed_tools
    for state in funnel.states():
        detail = f" ({state.error})" if state.error and state.status != "connected" else ""
        print(f"{state.name}: {state.status}, {len(state.tools)} tools{detail}", file=out)
    print(
        f"{len(exposed)} tools exposed, about {_estimate_tokens(exposed)} tokens of tools/list.\n"
        "Add servers in ./.mcp-funnel.json (see the README); desktop clients can run\n"
        '  {"mcpServers": {"funnel": {"command": "uvx", "args": ["funnel-server", "--stdio"]}}}',
        file=out,
        flush=True,
    )


async def _tools(config: FunnelConfig, base_dir: Path, out: TextIO) -> int:
    async with Funnel(config, base_dir=base_dir, **_funnel_options(None)) as funnel:
        surface = funnel.surface
        exposed = surface.exposed_tools
        for state in funnel.states():
            detail = f" ({state.error})" if state.error and state.status != "connected" else ""
            print(f"{state.name}: {state.status}, {len(state.tools)} tools{detail}", file=out)
        print(file=out)
        for entry in surface.tools:
            mark = "+" if entry.exposed else "-"
            description = str(entry.definition.get("description") or "").split("\n", 1)[0]
            print(f"  {mark} {entry.name:<40} {description[:70]}", file=out)
        hidden = len(surface.tools) - len(exposed)
        print(
            f"\n{len(exposed)} tools exposed ({hidden} registered but not exposed), "
            f"about {_estimate_tokens(exposed)} tokens of tools/list",
            file=out,
        )
    return EXIT_OK


async def _check(config: FunnelConfig, base_dir: Path, out: TextIO) -> int:
    async with Funnel(config, base_dir=base_dir, **_funnel_options(None)) as funnel:
        states = funnel.states()
    width = max((len(state.name) for state in states), default=4)
    print(f"{'server':<{width}}  {'status':<13} tools  error", file=out)
    for state in states:
        print(
            f"{state.name:<{width}}  {state.status:<13} {len(state.tools):>5}  {state.error or ''}",
            file=out,
        )
    failed = [state for state in states if state.status not in ("connected", "disabled")]
    return EXIT_BACKEND_FAILED if failed else EXIT_OK
