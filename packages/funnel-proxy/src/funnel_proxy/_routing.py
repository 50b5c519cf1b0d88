"""Which client answers a backend's request: one rule, pure, tested without I/O.

A backend's request to its client (``sampling/createMessage``, ``elicitation/create``,
``roots/list``) carries nothing that says which call caused it: over stdio there is one
connection, shared by every client funnel serves. So funnel decides by what it knows of
the calls in flight to that backend (:class:`InFlight`), in this order:

0. A request that names its task (``_meta`` ``io.modelcontextprotocol/related-task``)
   goes to the client that created that task, if it declared the capability (the
   funnel looks that up before this rule; see ``_tasks_routing``).
1. Only clients that declared the capability the request needs are candidates (for a
   URL-mode elicitation, the ``url`` mode).
2. Of their calls in flight to that backend, a call already waiting for an answer to an
   earlier request is blocked: it is not the one asking.
3. Of the others, the oldest call that has not asked anything yet: servers start
   handling requests in the order they arrive, so concurrent calls ask in that order.
4. Else the call whose last request was answered most recently: it is the one that
   went on running and asks again.
5. With no call in flight (a server asking for roots on its own), the client that was
   active last.
6. With no candidate at all, nobody: the backend gets a JSON-RPC error at once.

Over streamable HTTP the client's own request stream carries the request to the client
of the chosen call, so two ``/mcp`` clients each see only what their calls caused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from msgspec import Raw

from funnel_transports import Notification, RequestId

__all__ = [
    "Client",
    "InFlight",
    "choose",
    "client_supports",
    "log_level_passes",
    "needed_capability",
]

#: The client capability each backend-to-client request needs.
NEEDS: Final = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
_order = itertools.count()


class InFlight:
    """One client call in flight to a backend, as the router sees it.

    (A plain class with slots: one is made for every proxied call.)

    Attributes:
        server: The backend the call went to.
        request_id: The client's id for the call (its stream, over HTTP).
        started: Order of arrival among all calls.
        asks: Requests of the backend this call was asked so far.
        waiting: Of those, how many still wait for the client's answer.
        answered: Order of the last answer (0: none yet).
    """

    __slots__ = ("answered", "asks", "request_id", "server", "started", "waiting")

    def __init__(self, server: str, request_id: RequestId) -> None:
        self.server = server
        self.request_id = request_id
        self.started = next(_order)
        self.asks = 0
        self.waiting = 0
        self.answered = 0

    def __repr__(self) -> str:
        return f"InFlight(server={self.server!r}, request_id={self.request_id!r})"

    def asking(self) -> None:
        """A request of the backend goes to this call's client."""
        self.asks += 1
        self.waiting += 1

    def answered_now(self) -> None:
        """The client answered (or gave up on) one of them."""
        self.waiting = max(0, self.waiting - 1)
        self.answered = next(_order)


class Client(Protocol):
    """A connected downstream client, as the funnel routes to it."""

    @property
    def capabilities(self) -> Mapping[str, Any]:
        """What the client declared it can do."""
        ...

    @property
    def last_active(self) -> float:
        """When the client last sent a request (monotonic seconds)."""
        ...

    def in_flight(self, server: str) -> Iterable[InFlight]:
        """The client's calls in flight to ``server``."""
        ...

    async def ask(self, method: str, params: Raw | None, call: InFlight | None) -> Raw:
        """Send the client a request (for ``call``, when one caused it); return the result.

        Raises:
            RpcError: The client answered with an error or not in time.
        """
        ...

    def deliver(
        self, message: Notification, *, level: str | None = None, server: str | None = None
    ) -> None:
        """Queue a notification for the client (a log message carries its level).

        ``server``: the backend that sent it, so that it can go with the client's call
        in flight to that backend (on that call's stream, over HTTP).
        """
        ...


def needed_capability(method: str) -> str | None:
    """The client capability ``method`` needs, or ``None`` for a method clients do not serve."""
    return NEEDS.get(method)


def client_supports(
    capabilities: Mapping[str, Any], method: str, params: Mapping[str, Any]
) -> bool:
    """Whether a client that declared ``capabilities`` can answer ``method``."""
    needed = NEEDS.get(method)
    if needed is None or not isinstance(capabilities.get(needed), dict):
        return False
    if method == "elicitation/create":
        modes = capabilities["elicitation"]
        mode = params.get("mode", "form")
        # An empty elicitation capability means form mode (the 2025-06-18 shape).
        return mode in modes or (mode == "form" and not modes)
    return True


def choose(
    clients: Iterable[Client], server: str, method: str, params: Mapping[str, Any]
) -> tuple[Client, InFlight | None] | None:
    """The client (and its call) that answers ``method`` for ``server``, by the module's rule."""
    able = [client for client in clients if client_supports(client.capabilities, method, params)]
    calls = [
        (call, client) for client in able for call in client.in_flight(server) if not call.waiting
    ]
    fresh = [item for item in calls if item[0].asks == 0]
    if fresh:
        call, client = min(fresh, key=lambda item: item[0].started)
        return client, call
    if calls:
        call, client = max(calls, key=lambda item: item[0].answered)
        return client, call
    if not able:
        return None
    return max(able, key=lambda client: client.last_active), None


def log_level_passes(level: str | None, minimum: str | None) -> bool:
    """Whether a message at ``level`` passes a client's ``logging/setLevel`` minimum."""
    if minimum is None or level not in LOG_LEVELS or minimum not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(minimum)
