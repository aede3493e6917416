"""The write pass's decision for one client, pure: what to write and whether to close.

The edge (``flusher.Flusher``) asks with the socket's state and the session's queue and
close state, then performs the answer: take the whole queue and write its bytes (encoded
by ``coalesce.PassEncoder``), then close with the code given. Like websockets' sans-I/O
protocol and centrifuge's writer, the rules live here and the driver only carries them out.
"""

from __future__ import annotations

from typing import Final

#: The socket's state, as ``direct.DirectSink.state`` reports it.
CLOSED: Final = 0
PAUSED: Final = 1
WRITABLE: Final = 2

_NOTHING: Final = (False, None)


def plan_write(
    state: int, queued: int, close_code: int | None, pending_close: int | None
) -> tuple[bool, int | None]:
    """``(write, close)``: whether to take and write the whole queue now, and the code to
    close with once that is done (None: stay open).

    A lost socket gets nothing: its handler sees the disconnect and cleans up. Queued
    frames go out when the socket takes data (below its high-water mark), or regardless
    when the session must close now (``close_code``: its error and close frames go out even
    into a full socket). A close follows once nothing is left queued: at once for
    ``close_code``, after the queue for ``pending_close`` (a drain's reconnect advice).
    """
    if state == CLOSED:
        return _NOTHING
    write = queued > 0 and (close_code is not None or state == WRITABLE)
    if write or not queued:
        code = close_code if close_code is not None else pending_close
        if code is not None:
            return write, code
    return (True, None) if write else _NOTHING
