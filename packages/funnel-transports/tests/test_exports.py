"""The public surface of funnel_transports is deliberate: this test pins it."""

from __future__ import annotations

import funnel_transports


def test_every_public_name_is_exported_and_nothing_else() -> None:
    exported = set(funnel_transports.__all__)
    assert len(exported) == len(funnel_transports.__all__), "duplicates in __all__"
    for name in exported:
        assert hasattr(funnel_transports, name), name
    public = {
        name
        for name, value in vars(funnel_transports).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public <= exported


def test_the_core_names_stay_exported() -> None:
    core = {
        "Backoff",
        "ClientSession",
        "ConnectError",
        "ConnectionLost",
        "ErrorResponse",
        "Message",
        "Notification",
        "Request",
        "Response",
        "RpcError",
        "StdioTransport",
        "Transport",
        "TransportClosed",
        "TransportError",
        "decode_message",
        "encode_message",
    }
    assert core <= set(funnel_transports.__all__)
