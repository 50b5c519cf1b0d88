"""MCP protocol constants and the few result shapes the session itself reads.

Everything the proxy forwards stays raw; only the negotiation results are typed here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "HANDSHAKE_VERSIONS",
    "LATEST_HANDSHAKE_VERSION",
    "LATEST_VERSION",
    "MODERN_VERSIONS",
    "DiscoverResult",
    "Implementation",
    "InitializeResult",
    "is_modern",
]

#: Stateless-era versions (per-request ``_meta``, ``server/discover``), newest first.
MODERN_VERSIONS: Final = ("2026-07-28",)
#: Handshake-era versions (``initialize``), newest first.
HANDSHAKE_VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION: Final = MODERN_VERSIONS[0]
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_VERSIONS[0]

META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
META_LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"


def is_modern(version: str) -> bool:
    """Whether ``version`` belongs to the stateless (2026-07-28 and later) era."""
    return version in MODERN_VERSIONS or version > HANDSHAKE_VERSIONS[0]


class Implementation(msgspec.Struct, kw_only=True, frozen=True):
    """Name and version of an MCP client or server."""

    name: str
    version: str
    title: str | UnsetType = UNSET


class InitializeResult(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The answer to ``initialize`` (handshake era)."""

    protocol_version: str
    capabilities: dict[str, Any] = msgspec.field(default_factory=dict)
    server_info: Implementation | UnsetType = UNSET
    instructions: str | UnsetType = UNSET


class DiscoverResult(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The answer to ``server/discover`` (stateless era)."""

    supported_versions: list[str]
    capabilities: dict[str, Any] = msgspec.field(default_factory=dict)
    instructions: str | UnsetType = UNSET
    meta: dict[str, Any] = msgspec.field(default_factory=dict, name="_meta")
