"""Multi-round-trip requests (MCP 2026-07-28, SEP-2322) and the bridge between the eras.

A 2026-07-28 server does not send requests to its client: a ``tools/call`` (or
``prompts/get``, ``resources/read``) that needs the user answers with a result of
``resultType: "input_required"`` carrying ``inputRequests`` (keyed requests such as
``elicitation/create``) and an opaque ``requestState``; the client retries the same
request with ``inputResponses`` under the same keys and the ``requestState`` echoed.
A handshake-era server sends ``elicitation/create`` as a request of its own, mid-call.

funnel stands between clients and backends of either era:

* **Same era**: nothing to do. A modern backend's ``input_required`` result goes to a
  modern client as it is, and the retry's ``inputResponses``/``requestState`` go back
  untouched.
* **Handshake-era client, modern backend**: :func:`drive_rounds` asks the client each
  input request as an ordinary server→client request, then retries the backend with the
  answers and its ``requestState``, for at most :data:`MAX_ROUNDS` rounds.
* **Modern client, handshake-era backend**: the backend call is *parked*
  (:class:`ParkedCall`): it keeps running in the funnel's task group while the client's
  request is answered ``input_required`` with the backend's requests and a
  ``requestState`` funnel sealed itself; the client's retry unseals it, hands the answers
  to the waiting backend requests, and waits for what the call does next (its result, or
  another round). The sealed state is opaque, bounded in time and tamper-proof
  (HMAC-SHA256 with a key that never leaves the process); a parked call nobody resumes
  is cancelled when its state expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
from msgspec import Raw

from funnel_proxy._routing import InFlight
from funnel_transports import RpcError, from_raw, to_raw

__all__ = [
    "MAX_ROUNDS",
    "ParkedCall",
    "ParkedCalls",
    "StateSealer",
    "drive_rounds",
    "input_required",
    "is_input_required",
]

logger = logging.getLogger("funnel_proxy.mrtr")

#: Rounds of input funnel drives for a handshake-era client before it gives up.
MAX_ROUNDS: Final = 10
#: Seconds a parked call waits for the client's retry.
DEFAULT_STATE_TTL: Final = 600.0
_PREFIX: Final = "funnel1."
_MARK: Final = b'"resultType":"input_required"'


def is_input_required(raw: Raw) -> bool:
    """Whether a raw result is an ``input_required`` one (no decoding in the common case)."""
    data = bytes(raw)
    if b"input_required" not in data:
        return False
    if _MARK in data:
        return True
    try:
        return from_raw(raw, dict[str, Any]).get("resultType") == "input_required"
    except Exception:  # noqa: BLE001 - not an object: not input_required
        return False


def input_required(requests: Mapping[str, Any], state: str) -> Raw:
    """An ``input_required`` result asking ``requests`` (key → ``{method, params}``)."""
    return to_raw(
        {"resultType": "input_required", "inputRequests": dict(requests), "requestState": state}
    )


class StateSealer:
    """Seals a parked call's id into an opaque, expiring, tamper-proof ``requestState``.

    Args:
        ttl: Seconds a sealed state stays valid.
        clock: Wall-clock seconds (injectable for tests).
    """

    def __init__(
        self, ttl: float = DEFAULT_STATE_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._clock = clock

    @property
    def ttl(self) -> float:
        """Seconds a sealed state stays valid."""
        return self._ttl

    def seal(self, call_id: str) -> str:
        """The ``requestState`` that names ``call_id`` until the TTL passes."""
        body = f"{call_id}|{int(self._clock() + self._ttl)}".encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return _PREFIX + base64.urlsafe_b64encode(body + b"|" + mac).decode().rstrip("=")

    def unseal(self, state: object) -> str | None:
        """The call id a state names; ``None`` when it is not ours, forged or expired."""
        if not isinstance(state, str) or not state.startswith(_PREFIX):
            return None
        token = state[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        # The MAC is the last 32 bytes (it may contain any byte, "|" included).
        body, sep, mac = raw[:-33], raw[-33:-32], raw[-32:]
        if sep != b"|" or not hmac.compare_digest(
            mac, hmac.new(self._key, body, hashlib.sha256).digest()
        ):
            return None
        call_id, _, expiry = body.decode("utf-8", "replace").partition("|")
        if not expiry.isdigit() or int(expiry) < self._clock():
            return None
        return call_id

    @staticmethod
    def is_ours(state: object) -> bool:
        """Whether ``state`` has the shape of a state funnel sealed (it may still be invalid)."""
        return isinstance(state, str) and state.startswith(_PREFIX)


@dataclass(eq=False)
class _Ask:
    method: str
    params: Any
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None


class ParkedCall:
    """A handshake-era backend call whose requests are answered by a modern client's retries.

    It is a funnel client of its own while it runs: the funnel's router sends it the
    backend's requests (it declared the modern client's capabilities and has the call in
    flight), and :meth:`next` tells the client's current request what happened next.
    """

    def __init__(self, call_id: str, server: str, capabilities: Mapping[str, Any]) -> None:
        self.id = call_id
        self.server = server
        self._capabilities = dict(capabilities)
        self._started = time.monotonic()
        self._call = InFlight(server, call_id)
        self._keys = itertools.count(1)
        self._asks: dict[str, _Ask] = {}
        self._changed = anyio.Event()
        self._result: Raw | None = None
        self._error: BaseException | None = None
        self.finished = False
        self.scope = anyio.CancelScope()

    # --------------------------------------------------------------- as a client

    @property
    def capabilities(self) -> Mapping[str, Any]:
        """The modern client's capabilities (from its request's ``_meta``)."""
        return self._capabilities

    @property
    def last_active(self) -> float:
        """When the call started."""
        return self._started

    def in_flight(self, server: str) -> list[InFlight]:
        """The parked call itself while it runs, for its own backend."""
        return [self._call] if server == self.server and not self.finished else []

    async def ask(self, method: str, params: Raw | None, call: InFlight | None) -> Raw:
        """Park the backend's request until the client's retry answers it."""
        key = f"r{next(self._keys)}"
        ask = _Ask(method, from_raw(params) if params is not None else {})
        self._asks[key] = ask
        self._signal()
        try:
            await ask.done.wait()
        finally:
            self._asks.pop(key, None)
        return to_raw(ask.answer)

    def deliver(self, message: Any, *, level: str | None = None, server: str | None = None) -> None:
        """A parked call has no channel for notifications: they are dropped."""

    # --------------------------------------------------------------- running

    async def run(self, call: Callable[[], Awaitable[Raw]]) -> None:
        """Run the backend call (in the funnel's task group) and remember how it ended."""
        with self.scope:
            try:
                self._result = await call()
            except Exception as exc:  # noqa: BLE001 - handed to the client's next request
                self._error = exc
        if self.scope.cancelled_caught and self._error is None and self._result is None:
            self._error = RpcError(-32001, "the call was abandoned: its requestState expired")
        self.finished = True
        self._signal()

    def answer(self, responses: Mapping[str, Any]) -> None:
        """Hand the client's ``inputResponses`` to the backend requests waiting for them."""
        for key, response in responses.items():
            ask = self._asks.get(key)
            if ask is not None and not ask.done.is_set():
                ask.answer = response
                ask.done.set()

    def open_requests(self) -> dict[str, Any]:
        """The backend's requests still waiting, keyed as ``inputRequests``."""
        return {
            key: {"method": ask.method, "params": ask.params}
            for key, ask in self._asks.items()
            if not ask.done.is_set()
        }

    def _signal(self) -> None:
        # Broadcast: every waiter holds the event of its moment; a new one is set up first.
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def next_change(self) -> None:
        """Wait until the call asks something more or ends."""
        if not self.finished:
            await self._changed.wait()

    async def next(self) -> Raw | dict[str, Any]:
        """Wait until the call ends (its raw result) or asks (its open requests).

        Raises:
            Exception: What the backend call raised.
        """
        while True:
            if self.finished:
                if self._error is not None:
                    raise self._error
                assert self._result is not None  # noqa: S101 - finished without error
                return self._result
            if requests := self.open_requests():
                return requests
            await self._changed.wait()


class ParkedCalls:
    """The parked calls of one funnel, each findable by the state it handed out."""

    def __init__(self, sealer: StateSealer | None = None) -> None:
        self.sealer = sealer or StateSealer()
        self._calls: dict[str, ParkedCall] = {}
        self._ids = itertools.count(1)

    def new(self, server: str, capabilities: Mapping[str, Any]) -> ParkedCall:
        """A parked call for ``server``, registered under a fresh id."""
        call = ParkedCall(f"c{next(self._ids)}-{secrets.token_hex(4)}", server, capabilities)
        self._calls[call.id] = call
        return call

    def find(self, state: object) -> ParkedCall | None:
        """The call ``state`` names, when the state is valid and the call still known."""
        call_id = self.sealer.unseal(state)
        return self._calls.get(call_id) if call_id is not None else None

    def forget(self, call: ParkedCall) -> None:
        """Drop a finished call."""
        self._calls.pop(call.id, None)

    async def expire(self, call: ParkedCall) -> None:
        """Cancel ``call`` if no retry resumed it within the TTL (run as a task)."""
        deadline = anyio.current_time() + self.sealer.ttl
        while not call.finished:
            # Every round the client completes starts the TTL anew.
            with anyio.move_on_after(deadline - anyio.current_time()) as wait:
                await call.next_change()
            if wait.cancelled_caught:
                break
            deadline = anyio.current_time() + self.sealer.ttl
        call.scope.cancel()
        self.forget(call)


async def drive_rounds(
    first: Raw,
    retry: Callable[[dict[str, Any], Any], Awaitable[Raw]],
    ask: Callable[[str, Raw | None, InFlight | None], Awaitable[Raw]],
) -> Raw:
    """Serve a modern backend's ``input_required`` rounds by asking a handshake-era client.

    Args:
        first: The backend's first result.
        retry: Sends the request again with ``inputResponses`` and ``requestState``.
        ask: Asks the client one request (``method``, raw ``params``).

    Raises:
        RpcError: The rounds did not end within :data:`MAX_ROUNDS`.
    """
    result = first
    for _ in range(MAX_ROUNDS):
        if not is_input_required(result):
            return result
        body = from_raw(result, dict[str, Any])
        requests = body.get("inputRequests") or {}
        responses: dict[str, Any] = {}
        if isinstance(requests, dict):
            for key, request in requests.items():
                if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                    continue
                params = request.get("params")
                raw = to_raw(params) if params is not None else None
                answer = await ask(request["method"], raw, None)
                responses[key] = from_raw(answer)
        result = await retry(responses, body.get("requestState"))
    if is_input_required(result):
        raise RpcError(-32603, f"the server still wanted input after {MAX_ROUNDS} rounds")
    return result
