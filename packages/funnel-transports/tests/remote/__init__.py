"""Tests of the remote transports (streamable HTTP, legacy SSE, WebSocket)."""
