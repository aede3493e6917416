"""RFC 6455 server-to-client frames, built once and shared by every recipient.

A server never masks its frames (RFC 6455 §5.1), so a text frame is a fixed header plus
the UTF-8 payload: the same bytes are correct for every client. This is what lets one
fan-out pass hand one ``bytes`` object to thousands of sockets.
"""

from __future__ import annotations

import struct
from typing import Final

_FIN_TEXT: Final = 0x81


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, length) + payload
