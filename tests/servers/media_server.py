"""A stdio MCP test server (official SDK) whose tools answer with an image and with audio,
and one (``options``) whose arguments are of every JSON schema kind a form has a field for.

The image is a 48x48 PNG drawn here (a purple square on a transparent ground), the audio
a quarter second of a 440 Hz tone as 8 kHz mono WAV: real, decodable media, so a browser
test can check that the dashboard renders them (the image's natural width is 48).
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import wave
import zlib
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import AudioContent, ImageContent, TextContent

server = MCPServer("media-peer")

SIDE = 48


def png() -> bytes:
    rows = b""
    for y in range(SIDE):
        row = b"\x00"  # filter: none
        for x in range(SIDE):
            inside = 8 <= x < SIDE - 8 and 8 <= y < SIDE - 8
            row += bytes((124, 131, 255, 255)) if inside else bytes((0, 0, 0, 0))
        rows += row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        frames = b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / 8000)))
            for i in range(2000)
        )
        sound.writeframes(frames)
    return out.getvalue()


@server.tool()
def picture() -> list[TextContent | ImageContent]:
    """A small picture and its caption."""
    data = base64.b64encode(png()).decode()
    return [
        TextContent(type="text", text="a purple square"),
        ImageContent(type="image", data=data, mime_type="image/png"),
    ]


@server.tool()
def tone() -> list[AudioContent]:
    """A quarter second of A440."""
    return [
        AudioContent(type="audio", data=base64.b64encode(wav()).decode(), mime_type="audio/wav")
    ]


@server.tool()
def options(  # noqa: PLR0917 - a tool's parameters are its arguments
    color: Literal["red", "green", "blue"],
    count: int,
    loud: bool = False,
    ratio: float = 0.5,
    tags: list[str] | None = None,
    note: str = "",
) -> str:
    """Answer the arguments it got, as JSON with sorted keys."""
    given = {
        "color": color,
        "count": count,
        "loud": loud,
        "ratio": ratio,
        "tags": tags,
        "note": note,
    }
    return json.dumps(given, sort_keys=True)


if __name__ == "__main__":
    server.run("stdio")
