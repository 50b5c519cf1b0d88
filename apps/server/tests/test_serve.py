"""The listening socket: accepted connections send small responses at once."""

from __future__ import annotations

import socket

from funnel_server._serve import bind


def test_accepted_connections_have_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY on an accepted socket only when its proto is IPPROTO_TCP
    # (accepted sockets copy the listener's); the listener's own TCP_NODELAY is inherited
    # by the kernel whatever loop accepts. Without either, small answers wait ~40 ms.
    listener = bind("127.0.0.1", 0)
    try:
        listener.settimeout(5)
        with socket.create_connection(listener.getsockname(), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
