"""Test helpers: complete an authorization without a browser.

:func:`follow_authorization` plays the user agent against an authorization server that
approves automatically or with a development login form: it follows the redirect chain
from the authorization URL, submits ``oidc-provider``'s development login and consent
forms when it meets them, and stops at the redirect to the client's ``redirect_uri``,
returning the callback parameters without requesting that URL. Meant for tests and CI;
it never opens a browser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urljoin, urlsplit

import anyio
import httpx

__all__ = ["CallbackParams", "follow_authorization"]

_PROMPT: Final = re.compile(r"""name=["']prompt["'][^>]*value=["'](\w+)["']""")
_FORM_ACTION: Final = re.compile(r"""<form[^>]*action=["']([^"']+)["']""")


@dataclass(frozen=True)
class CallbackParams:
    """The query of the redirect back to the client.

    Attributes:
        code: The authorization code, if granted.
        state: The ``state`` echoed back.
        iss: The ``iss`` parameter (RFC 9207), if sent.
        error: The OAuth error, if refused.
        error_description: The server's description of the error.
        params: Every callback parameter.
    """

    code: str | None = field(repr=False)
    state: str | None = field(repr=False)
    iss: str | None
    error: str | None
    error_description: str | None
    params: dict[str, str] = field(repr=False)


def _callback(location: str) -> CallbackParams:
    params = dict(parse_qsl(urlsplit(location).query))
    return CallbackParams(
        code=params.get("code"),
        state=params.get("state"),
        iss=params.get("iss"),
        error=params.get("error"),
        error_description=params.get("error_description"),
        params=params,
    )


def _is_redirect_target(location: str, redirect_uri: str) -> bool:
    target, actual = urlsplit(redirect_uri), urlsplit(location)
    return (actual.scheme, actual.netloc, actual.path) == (
        target.scheme,
        target.netloc,
        target.path,
    )


async def follow_authorization(
    authorization_url: str,
    *,
    login: str = "alice",
    password: str = "x",  # noqa: S107 -- a development login form's throwaway value
    approve: bool = True,
    max_steps: int = 20,
    timeout: float = 10.0,
) -> CallbackParams:
    """Follow an authorization URL to the callback, approving (or refusing) on the way.

    Args:
        authorization_url: The URL from :class:`~funnel_auth.AuthorizationRequired`
            or ``begin()``; its ``redirect_uri`` says where to stop.
        login: The login to submit on a development login form.
        password: The password to submit on it.
        approve: ``False`` aborts at the first interaction page, so the server
            answers ``access_denied``.
        max_steps: Redirects and form posts allowed before giving up.
        timeout: Seconds allowed overall.

    Returns:
        The callback's parameters (``code``, ``state``, ``iss`` or ``error``).

    Raises:
        RuntimeError: The chain did not reach the redirect URI.
    """
    query = dict(parse_qsl(urlsplit(authorization_url).query))
    redirect_uri = query.get("redirect_uri")
    if not redirect_uri:
        raise RuntimeError("the authorization URL has no redirect_uri")
    with anyio.fail_after(timeout):
        async with httpx.AsyncClient(follow_redirects=False) as client:
            response = await client.get(authorization_url)
            for _ in range(max_steps):
                if response.is_redirect:
                    location = urljoin(str(response.url), response.headers["location"])
                    if _is_redirect_target(location, redirect_uri):
                        return _callback(location)
                    response = await client.get(location)
                    continue
                if response.status_code == 200:
                    prompt = _PROMPT.search(response.text)
                    if prompt is None:
                        break
                    action_match = _FORM_ACTION.search(response.text)
                    action = urljoin(
                        str(response.url),
                        action_match.group(1) if action_match else str(response.url),
                    )
                    if not approve:
                        response = await client.get(
                            urljoin(str(response.url), urlsplit(str(response.url)).path + "/abort")
                        )
                        continue
                    if prompt.group(1) == "login":
                        form = {"prompt": "login", "login": login, "password": password}
                    else:
                        form = {"prompt": prompt.group(1)}
                    response = await client.post(action, data=form)
                    continue
                break
    raise RuntimeError(
        f"the authorization chain ended at HTTP {response.status_code} without reaching the redirect URI"
    )
