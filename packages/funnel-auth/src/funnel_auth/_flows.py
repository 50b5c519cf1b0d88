"""Pending authorization-code flows, indexed by their ``state``.

:meth:`AuthorizationCodeAuth.begin` records a :class:`PendingAuthorization` (state,
PKCE verifier, the validated issuer, the client, the token endpoint) here before the
URL is shown to anyone; the app's callback hands ``state``, ``code`` and ``iss`` to
:meth:`AuthorizationFlows.complete`, which takes the record out (single use) and lets
its provider exchange the code. One registry can serve many providers, so one callback
route serves every server.

The registry is pluggable (:class:`FlowRegistry`): :class:`AuthorizationFlows` keeps the
flows in this process; an application running several processes passes one that keeps
them where every process sees them (funnel-server's, in Valkey/Redis, sealed). Such a
registry stores a flow as its :meth:`PendingAuthorization.encode` bytes and, when a
callback arrives, gives it to the provider of that server *in the process that received
the callback* (:meth:`FlowRegistry.attach`), so a login begun by one process completes
in another. :meth:`FlowRegistry.lock` serializes the start of a server's flow (and the
client registration it may need) across those processes: whoever comes second joins the
flow the first one started.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import msgspec

from funnel_auth._audit import audit
from funnel_auth._errors import AuthError, InvalidState
from funnel_auth._models import ClientRegistration

__all__ = [
    "AuthorizationFlows",
    "AuthorizationStart",
    "FlowOwner",
    "FlowRegistry",
    "PendingAuthorization",
]


class FlowOwner(Protocol):
    """What a flow's provider offers the registry (:class:`AuthorizationCodeAuth` does)."""

    server_name: str

    async def _exchange(
        self,
        pending: PendingAuthorization,
        *,
        code: str | None,
        iss: str | None,
        error: str | None,
        error_description: str | None,
    ) -> None: ...

    def _flow_finished(self, pending: PendingAuthorization, error: AuthError | None) -> None: ...


@dataclass(frozen=True)
class AuthorizationStart:
    """What :meth:`AuthorizationCodeAuth.begin` returns.

    Attributes:
        authorization_url: The URL a person opens to authorize.
        state: The flow's single-use ``state`` (also in the URL; never log it).
        expires_at: When the flow expires, on the registry's monotonic clock.
    """

    authorization_url: str
    state: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True, repr=False)
class PendingAuthorization:
    """Everything needed to finish one authorization, bound to its ``state``."""

    state: str
    verifier: str
    issuer: str | None
    iss_advertised: bool
    authorization_url: str
    redirect_uri: str
    scope: str | None
    resource: str
    token_endpoint: str
    registration: ClientRegistration
    expires_at: float
    provider: FlowOwner

    def __repr__(self) -> str:
        return f"PendingAuthorization(server={self.provider.server_name!r}, issuer={self.issuer!r})"

    @property
    def server(self) -> str:
        """The server the flow is for."""
        return self.provider.server_name

    def encode(self) -> bytes:
        """The flow as bytes, without its provider (it holds the PKCE verifier: seal it)."""
        fields = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "provider"
        }
        return _RECORD_ENCODER.encode(_FlowRecord(server=self.provider.server_name, **fields))

    @staticmethod
    def decode(data: bytes, owners: Mapping[str, FlowOwner]) -> PendingAuthorization:
        """A flow from :meth:`encode`'s bytes, handed to this process's provider of its server.

        Raises:
            InvalidState: The bytes are not a flow, or no provider here serves its server.
        """
        try:
            record = _RECORD_DECODER.decode(data)
        except msgspec.DecodeError:
            raise InvalidState("unreadable authorization state", reason="unknown") from None
        owner = owners.get(record.server)
        if owner is None:
            raise InvalidState(
                f"no provider for {record.server} here to complete its authorization",
                reason="unknown",
                server=record.server,
            )
        fields = msgspec.structs.asdict(record)
        del fields["server"]
        return PendingAuthorization(**fields, provider=owner)


class _FlowRecord(msgspec.Struct, kw_only=True, frozen=True):
    server: str
    state: str
    verifier: str
    issuer: str | None
    iss_advertised: bool
    authorization_url: str
    redirect_uri: str
    scope: str | None
    resource: str
    token_endpoint: str
    registration: ClientRegistration
    expires_at: float


_RECORD_ENCODER = msgspec.json.Encoder()
_RECORD_DECODER = msgspec.json.Decoder(_FlowRecord)


class FlowRegistry(Protocol):
    """Where pending flows live: this process (:class:`AuthorizationFlows`) or shared.

    Attributes:
        ttl: Seconds a flow stays valid after it starts.
    """

    ttl: float

    def now(self) -> float:
        """The registry's clock (the same for every process that shares the registry)."""
        ...

    def attach(self, owner: FlowOwner) -> None:
        """Name the provider that completes ``owner.server_name``'s flows in this process."""
        ...

    def lock(self, server: str) -> AbstractAsyncContextManager[None]:
        """Held while a server's flow is joined or started (and its client registered)."""
        ...

    async def add(self, pending: PendingAuthorization) -> None:
        """Record a flow (its ``state`` usable once, until ``expires_at``)."""
        ...

    async def discard(self, state: str) -> None:
        """Forget a flow without completing it."""
        ...

    async def find(self, server: str, scope: str | None) -> PendingAuthorization | None:
        """The unexpired flow of ``server`` for exactly ``scope``, to join, if any."""
        ...

    async def complete(
        self,
        state: str,
        code: str | None,
        iss: str | None = None,
        *,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        """Finish the flow ``state`` belongs to; return its server's name."""
        ...


class AuthorizationFlows:
    """The registry of pending authorization flows, shared by providers and the callback.

    It keeps the flows in this process. Subclasses keep them elsewhere by overriding
    :meth:`now`, :meth:`lock`, :meth:`add`, :meth:`discard`, :meth:`find` and
    :meth:`pop` (see :class:`FlowRegistry`).

    Args:
        ttl: Seconds a flow stays valid after :meth:`AuthorizationCodeAuth.begin`.
        clock: A monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, *, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self._clock = clock
        self._pending: dict[str, PendingAuthorization] = {}
        self._owners: dict[str, FlowOwner] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def now(self) -> float:
        """The registry clock's current time."""
        return self._clock()

    def attach(self, owner: FlowOwner) -> None:
        """Name the provider that completes ``owner.server_name``'s flows here (the latest wins)."""
        self._owners[owner.server_name] = owner

    @property
    def owners(self) -> Mapping[str, FlowOwner]:
        """The providers attached, by server name."""
        return self._owners

    @asynccontextmanager
    async def lock(self, server: str) -> AsyncIterator[None]:
        """Held while ``server``'s flow is joined or started (one task at a time)."""
        lock = self._locks.setdefault(server, anyio.Lock())
        async with lock:
            yield

    async def add(self, pending: PendingAuthorization) -> None:
        """Record a flow (dropping expired ones)."""
        now = self._clock()
        for state in [s for s, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[state]
        self._pending[pending.state] = pending

    async def discard(self, state: str) -> None:
        """Forget a flow without completing it."""
        self._pending.pop(state, None)

    async def find(self, server: str, scope: str | None) -> PendingAuthorization | None:
        """The unexpired flow of ``server`` for exactly ``scope``, if any."""
        now = self._clock()
        for pending in self._pending.values():
            if pending.server == server and pending.scope == scope and pending.expires_at > now:
                return pending
        return None

    async def pop(self, state: str) -> PendingAuthorization | None:
        """Remove and return the flow recorded for ``state`` (expired or not), if any."""
        return self._pending.pop(state, None)

    async def take(self, state: str) -> PendingAuthorization:
        """Remove and return the flow for ``state``: a state is usable once.

        Raises:
            InvalidState: No such flow (never started, or already used), or it expired.
        """
        pending = await self.pop(state) if state else None
        if pending is None:
            audit(
                "auth.flow_failed",
                server="unknown",
                outcome="failure",
                reason="unknown or reused state",
            )
            raise InvalidState("unknown or already used authorization state", reason="unknown")
        if pending.expires_at <= self._clock():
            server = pending.provider.server_name
            audit(
                "auth.flow_failed",
                server=server,
                issuer=pending.issuer,
                outcome="failure",
                reason="expired state",
            )
            pending.provider._flow_finished(
                pending,
                InvalidState("authorization state expired", reason="expired", server=server),
            )
            raise InvalidState("authorization state expired", reason="expired", server=server)
        return pending

    async def complete(
        self,
        state: str,
        code: str | None,
        iss: str | None = None,
        *,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        """Finish the flow ``state`` belongs to: check ``iss``, exchange ``code``, store tokens.

        Args:
            state: The callback's ``state``.
            code: The callback's ``code`` (``None`` on an error response).
            iss: The callback's ``iss`` (RFC 9207), if present.
            error: The callback's ``error``, if present.
            error_description: The callback's ``error_description``, if present.

        Returns:
            The server name the flow was for.

        Raises:
            InvalidState: Unknown, reused or expired ``state``.
            IssuerMismatch: ``iss`` is wrong, or missing where advertised.
            AuthorizationDenied: The server answered with an error.
            TokenRequestError: The code exchange failed (nothing stored).
            AuthServerUnavailable: The token endpoint could not be reached.
        """
        pending = await self.take(state)
        await pending.provider._exchange(
            pending, code=code, iss=iss, error=error, error_description=error_description
        )
        return pending.provider.server_name

    async def complete_callback(self, params: Mapping[str, str]) -> str:
        """:meth:`complete` from the callback's query parameters (``state``, ``code``, ``iss``, ``error``…)."""
        return await self.complete(
            params.get("state", ""),
            params.get("code"),
            params.get("iss"),
            error=params.get("error"),
            error_description=params.get("error_description"),
        )

    def __len__(self) -> int:
        return len(self._pending)
