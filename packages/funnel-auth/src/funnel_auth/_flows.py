"""Pending authorization-code flows, indexed by their ``state``.

:meth:`AuthorizationCodeAuth.begin` records a :class:`PendingAuthorization` (state,
PKCE verifier, the validated issuer, the client, the token endpoint) here before the
URL is shown to anyone; the app's callback hands ``state``, ``code`` and ``iss`` to
:meth:`AuthorizationFlows.complete`, which takes the record out (single use) and lets
its provider exchange the code. One registry can serve many providers, so one callback
route serves every server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from funnel_auth._audit import audit
from funnel_auth._errors import AuthError, InvalidState
from funnel_auth._models import ClientRegistration

__all__ = ["AuthorizationFlows", "AuthorizationStart", "FlowOwner", "PendingAuthorization"]


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


class AuthorizationFlows:
    """The registry of pending authorization flows, shared by providers and the callback.

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

    def now(self) -> float:
        """The registry clock's current time."""
        return self._clock()

    def add(self, pending: PendingAuthorization) -> None:
        """Record a flow (dropping expired ones)."""
        now = self._clock()
        for state in [s for s, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[state]
        self._pending[pending.state] = pending

    def discard(self, state: str) -> None:
        """Forget a flow without completing it."""
        self._pending.pop(state, None)

    def take(self, state: str) -> PendingAuthorization:
        """Remove and return the flow for ``state``: a state is usable once.

        Raises:
            InvalidState: No such flow (never started, or already used), or it expired.
        """
        pending = self._pending.pop(state, None) if state else None
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
        pending = self.take(state)
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
