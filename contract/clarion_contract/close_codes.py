"""The close codes of Clarion's wire protocol, with what a client does after each.

The worker closes with them (and reports them in metrics and logs, for SSE too, where the
stream simply ends); every client library reads them to decide between reconnecting with
backoff, refreshing its token and stopping. They live here, beside the other shapes both
sides share, so the Python client (``clarion-client``) needs no part of the worker.
Standard library only: importing this module imports nothing else of the contract.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class CloseCode(IntEnum):
    """WebSocket close codes the worker uses; 4xxx are Clarion's application codes.

    The same numbers are reported in metrics and logs for SSE, where the stream simply ends.
    Each member carries its ``meaning`` (used for docs and error messages).
    """

    meaning: str

    def __new__(cls, value: int, meaning: str = "") -> CloseCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    NORMAL = (1000, "The server or client finished the session on purpose.")
    GOING_AWAY = (
        1001,
        "The server is stopping without a drain (last resort); reconnect with backoff.",
    )
    PROTOCOL_ERROR = (1002, "The client broke the WebSocket protocol itself (bad framing).")
    UNSUPPORTED_DATA = (1003, "The client sent a binary frame; the protocol is JSON text only.")
    ABNORMAL = (
        1006,
        "The connection dropped without a close frame (network loss, a killed app); never "
        "sent, only seen and counted.",
    )
    INVALID_DATA = (1007, "The client sent a text frame that is not UTF-8.")
    MESSAGE_TOO_BIG = (1009, "A client frame exceeded ``limits.maxClientFrameBytes``.")
    INTERNAL_ERROR = (1011, "An unexpected server fault; reconnect with backoff and resume.")
    UNAUTHORIZED = (
        4001,
        "The token is missing, malformed or its signature does not verify. Do not retry blindly.",
    )
    FORBIDDEN = (
        4003,
        "The origin is not allowed, or the token lacks the required claims, issuer or audience.",
    )
    TOKEN_EXPIRED = (
        4004,
        "The token expired (at the handshake or during the connection): get a fresh token, "
        "then reconnect; the same token is refused again.",
    )
    SLOW_CONSUMER = (
        4008,
        "The client's outbound queue overflowed: reconnect with backoff and resume.",
    )
    BAD_FRAME = (
        4009,
        "The client sent a frame that is not valid protocol (non-JSON, unknown type, bad field).",
    )
    OVERLOADED = (
        4013,
        "This replica cannot take the connection now (at ``limits.maxConnections``, starting "
        "or draining): reconnect with backoff (maybe elsewhere).",
    )
    DRAIN = (
        4100,
        "This replica is draining: reconnect after the advised delay, and resume elsewhere.",
    )

    @property
    def client_should_reconnect(self) -> bool:
        """Whether a well-behaved client reconnects (with backoff) after this code."""
        return self not in _TERMINAL_CODES


_TERMINAL_CODES: Final = frozenset(
    {
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.BAD_FRAME,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
    }
)
