"""Every error funnel-auth raises, grouped by what the caller does about it.

::

    AuthError                        root: anything auth-related went wrong
    ├── AuthConfigError              the configuration cannot work: fix it
    ├── AuthorizationRequired        a person must authorize: show .authorization_url
    ├── AuthorizationFailed          an authorization attempt ended without tokens: start over
    │   ├── InvalidState             unknown, reused or expired ``state``
    │   ├── IssuerMismatch           ``iss`` in the response is not the recorded issuer
    │   └── AuthorizationDenied      the authorization server answered ``error=…``
    ├── DiscoveryError               metadata missing, invalid or unusable (no PKCE, …)
    ├── RegistrationError            the client could not register with the server
    ├── TokenRequestError            the token endpoint refused or answered garbage
    │   └── InvalidGrant             the code or refresh token is dead: tokens were cleared
    ├── AuthServerUnavailable        network error, 429 or 5xx: retry later (.retry_after)
    ├── InsufficientScope            step-up authorization gave up after its retries
    └── RateLimited                  this process's own limiter said wait (.retry_after)

Messages never contain a token, code, verifier, state value or secret: they pass
through :func:`funnel_auth.redact`. ``httpx`` exceptions are mapped where they happen
(``raise AuthServerUnavailable(...) from exc``).
"""

from __future__ import annotations

from funnel_auth._redact import redact

__all__ = [
    "AuthConfigError",
    "AuthError",
    "AuthServerUnavailable",
    "AuthorizationDenied",
    "AuthorizationFailed",
    "AuthorizationRequired",
    "DiscoveryError",
    "InsufficientScope",
    "InvalidGrant",
    "InvalidState",
    "IssuerMismatch",
    "RateLimited",
    "RegistrationError",
    "TokenRequestError",
]


class AuthError(Exception):
    """The root of every funnel-auth error.

    Attributes:
        server: The configured server name this error is about, if known.
    """

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(redact(message))
        self.server = server


class AuthConfigError(AuthError):
    """The configuration cannot work (bad server name, missing client id, …)."""


class AuthorizationRequired(AuthError):
    """A person has to open :attr:`authorization_url` and approve access.

    Attributes:
        authorization_url: The URL to show (never open it from a library).
        state: The ``state`` of the pending flow, for callers that track it.
    """

    def __init__(
        self, message: str, *, authorization_url: str, state: str, server: str | None = None
    ) -> None:
        super().__init__(message, server=server)
        self.authorization_url = authorization_url
        self.state = state


class AuthorizationFailed(AuthError):
    """An authorization attempt ended without tokens; nothing was stored."""


class InvalidState(AuthorizationFailed):
    """The callback's ``state`` is unknown, already used, or expired.

    Attributes:
        reason: ``"unknown"`` (also for a reused state) or ``"expired"``.
    """

    def __init__(self, message: str, *, reason: str, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.reason = reason


class IssuerMismatch(AuthorizationFailed):
    """The response's ``iss`` differs from the recorded issuer, or is missing (RFC 9207)."""


class AuthorizationDenied(AuthorizationFailed):
    """The authorization server answered with an error (``access_denied``, …).

    Attributes:
        error: The OAuth error code.
    """

    def __init__(self, message: str, *, error: str, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.error = error


class DiscoveryError(AuthError):
    """Protected-resource or authorization-server metadata is missing or unusable."""


class RegistrationError(AuthError):
    """Client registration failed, or no registration method is available.

    Attributes:
        error: The OAuth error code from the registration endpoint, if any.
    """

    def __init__(
        self, message: str, *, error: str | None = None, server: str | None = None
    ) -> None:
        super().__init__(message, server=server)
        self.error = error


class TokenRequestError(AuthError):
    """The token endpoint refused the request or answered something malformed.

    Attributes:
        error: The OAuth error code (``invalid_client``, …), or ``None`` when the
            response was not an OAuth error (malformed JSON, missing fields).
        status_code: The HTTP status of the response.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        status_code: int | None = None,
        server: str | None = None,
    ) -> None:
        super().__init__(message, server=server)
        self.error = error
        self.status_code = status_code


class InvalidGrant(TokenRequestError):
    """The authorization code or refresh token was rejected; stored tokens were cleared."""


class AuthServerUnavailable(AuthError):
    """The authorization server could not be reached or is overloaded (network, 429, 5xx).

    Stored tokens are kept; try again later.

    Attributes:
        retry_after: Seconds the server asked to wait, if it said.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, server: str | None = None
    ) -> None:
        super().__init__(message, server=server)
        self.retry_after = retry_after


class InsufficientScope(AuthError):
    """The server keeps answering ``insufficient_scope`` after step-up attempts."""


class RateLimited(AuthError):
    """This process refuses to hit the authorization server again so soon.

    Attributes:
        retry_after: Seconds until the next attempt is allowed.
    """

    def __init__(self, message: str, *, retry_after: float, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.retry_after = retry_after
