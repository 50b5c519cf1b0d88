"""One process of the soak test (``test_soak.py``): calls a protected server for a while.

Usage: ``python soak_worker.py SERVER_URL TOKEN_FILE SECONDS``. Uses the tokens a person
stored in ``TOKEN_FILE`` (a :class:`~funnel_tokenstore.FileTokenStore` shared with the
other workers), refreshing them as they expire. Prints one JSON line at the end:
``{"event": "done", "ok": N, "unavailable": N}``, or ``{"event": "relogin"}`` and exits 3
when a person would have to log in again (the failure the soak looks for). SIGTERM stops
it early and cleanly (a restart).
"""

from __future__ import annotations

import json
import signal
import sys
import time

import anyio
import httpx

from funnel_auth import (
    AuthorizationCodeAuth,
    AuthorizationRequired,
    AuthServerUnavailable,
    OAuth2AuthorizationCode,
    create_auth,
)
from funnel_tokenstore import FileTokenStore

REDIRECT = "http://localhost:3456/api/oauth/callback"


def make_auth(server_url: str, token_file: str) -> AuthorizationCodeAuth:
    """The provider every soak process uses (same server name, same store)."""
    auth = create_auth(
        OAuth2AuthorizationCode(client_id="app"),
        server_name="soak",
        server_url=server_url,
        store=FileTokenStore(token_file),
        redirect_uri=REDIRECT,
        timeout=1.0,  # an injected 1.5 s hang at the token endpoint is a timeout
    )
    assert isinstance(auth, AuthorizationCodeAuth)
    return auth


async def run(server_url: str, token_file: str, seconds: float) -> int:
    auth = make_auth(server_url, token_file)
    ok = unavailable = 0
    deadline = time.monotonic() + seconds
    async with anyio.create_task_group() as tg:

        async def stop_on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()

        tg.start_soon(stop_on_sigterm)
        async with httpx.AsyncClient(auth=auth, timeout=5.0) as client:
            while time.monotonic() < deadline:
                try:
                    response = await client.post(server_url, json={})
                except AuthorizationRequired:
                    print(json.dumps({"event": "relogin"}), flush=True)  # noqa: T201
                    tg.cancel_scope.cancel()
                    return 3
                except AuthServerUnavailable:
                    unavailable += 1  # the token expired while the AS was down: retry
                else:
                    if response.status_code != 200:
                        print(json.dumps({"event": "status", "status": response.status_code}))  # noqa: T201
                        tg.cancel_scope.cancel()
                        return 4
                    ok += 1
                await anyio.sleep(0.05)  # a steady trickle of calls, not a busy loop
        tg.cancel_scope.cancel()
    print(json.dumps({"event": "done", "ok": ok, "unavailable": unavailable}), flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(run, sys.argv[1], sys.argv[2], float(sys.argv[3])))
