"""URL rules of the MCP authorization spec, pure.

- the canonical resource URI (RFC 8707 §2; MCP "Canonical Server URI");
- protected-resource metadata well-known URLs in spec order (RFC 9728 §3.1, MCP D3);
- authorization-server metadata well-known URLs in spec order (RFC 8414 §3.1 and §5,
  OIDC Discovery; MCP D4);
- the back-compat endpoints of 2025-03-26 servers without metadata (MCP D8);
- authorization URL building, and the "HTTPS or loopback" rule for endpoints and
  redirect URIs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = [
    "as_metadata_urls",
    "build_url",
    "canonical_resource",
    "fallback_endpoints",
    "is_loopback_url",
    "is_secure_url",
    "origin_of",
    "prm_urls",
    "resource_covers",
]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def canonical_resource(url: str) -> str:
    """Return the canonical URI of an MCP server for the ``resource`` parameter.

    Lower-case scheme and host, no fragment, no default port, no trailing slash (the
    path ``/`` becomes empty). The query is kept as given.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("an MCP server URL must be an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def origin_of(url: str) -> str:
    """Return ``scheme://host[:port]`` of ``url`` (lower case, default port dropped)."""
    parts = urlsplit(canonical_resource(url))
    return f"{parts.scheme}://{parts.netloc}"


def resource_covers(resource: str, server_url: str) -> bool:
    """Whether a metadata ``resource`` identifies the MCP server at ``server_url``.

    True when both canonicalise to the same URI, or when ``resource`` is the same
    origin and a path prefix of the server URL on a segment boundary (a server may name
    itself by its origin while its endpoint is ``/mcp``).
    """
    try:
        res = canonical_resource(resource)
        srv = canonical_resource(server_url)
    except ValueError:
        return False
    if res == srv:
        return True
    res_parts, srv_parts = urlsplit(res), urlsplit(srv)
    if (res_parts.scheme, res_parts.netloc) != (
        srv_parts.scheme,
        srv_parts.netloc,
    ) or res_parts.query:
        return False
    return srv_parts.path.startswith(res_parts.path + "/")


def prm_urls(server_url: str) -> list[str]:
    """Protected-resource metadata URLs to try, in the order the MCP spec requires.

    ``/.well-known/oauth-protected-resource<path>`` first when the server URL has a
    path, then ``/.well-known/oauth-protected-resource`` at the root.
    """
    canonical = canonical_resource(server_url)
    parts = urlsplit(canonical)
    root = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource"
    if parts.path:
        return [root + parts.path, root]
    return [root]


def as_metadata_urls(issuer: str) -> list[str]:
    """Authorization-server metadata URLs to try for ``issuer``, in spec order.

    With a path (``https://as/tenant``): ``/.well-known/oauth-authorization-server/tenant``,
    ``/.well-known/openid-configuration/tenant``, ``/tenant/.well-known/openid-configuration``.
    Without: ``/.well-known/oauth-authorization-server``, ``/.well-known/openid-configuration``.
    """
    parts = urlsplit(issuer)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError("an issuer must be an absolute http(s) URL")
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if path:
        return [
            f"{base}/.well-known/oauth-authorization-server{path}",
            f"{base}/.well-known/openid-configuration{path}",
            f"{base}{path}/.well-known/openid-configuration",
        ]
    return [
        f"{base}/.well-known/oauth-authorization-server",
        f"{base}/.well-known/openid-configuration",
    ]


def fallback_endpoints(server_url: str) -> dict[str, str]:
    """The 2025-03-26 default endpoints at the server's origin, for servers without metadata."""
    origin = origin_of(server_url)
    return {
        "issuer": origin,
        "authorization_endpoint": f"{origin}/authorize",
        "token_endpoint": f"{origin}/token",
        "registration_endpoint": f"{origin}/register",
    }


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is ``localhost`` or a loopback IP address."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secure_url(url: str) -> bool:
    """HTTPS, or HTTP to a loopback host (the only places OAuth traffic may go)."""
    scheme = urlsplit(url).scheme.lower()
    return scheme == "https" or (scheme == "http" and is_loopback_url(url))


def build_url(base: str, params: Mapping[str, str | None]) -> str:
    """Add query parameters to ``base`` (keeping its own query); ``None`` values are left out."""
    parts = urlsplit(base)
    query = urlencode([(k, v) for k, v in params.items() if v is not None])
    joined = f"{parts.query}&{query}" if parts.query and query else parts.query or query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))
