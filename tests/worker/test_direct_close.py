"""When a closing connection is aborted (issue 12, item 4): a client that still reads
gets everything already in the socket, then the close; one that stopped is cut."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clarion_worker.direct import _CloseWatch


class FakeTransport:
    def __init__(self, unsent: int) -> None:
        self.unsent = unsent
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def get_extra_info(self, name: str) -> Any:
        return None  # no kernel queue to ask: the transport's buffer is all there is

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> str:
        self.timers.append((self.now + delay, callback))
        return "timer"

    def run_next(self) -> None:
        at, callback = self.timers.pop(0)
        self.now = at
        callback()


class FakeProtocol:
    def __init__(self, unsent: int) -> None:
        self.transport = FakeTransport(unsent)
        self.loop = FakeLoop()
        self.disconnected = False
        self.close_timer: Any = None


def _watch(unsent: int, *, period: float = 2.0, cap: float = 30.0) -> FakeProtocol:
    protocol = FakeProtocol(unsent)
    watch = _CloseWatch(protocol, period, cap)  # type: ignore[arg-type]
    protocol.loop.call_later(period, watch.check)
    return protocol


def test_a_client_that_stopped_reading_is_aborted_after_one_period() -> None:
    protocol = _watch(4_000_000)
    protocol.loop.run_next()
    assert protocol.transport.aborted
    assert protocol.loop.now == 2.0


def test_a_client_still_reading_keeps_the_connection_until_it_has_the_close() -> None:
    protocol = _watch(4_000_000)
    for left in (3_000_000, 2_000_000, 1_000_000, 0):
        protocol.transport.unsent = left
        protocol.loop.run_next()
        assert not protocol.transport.aborted, left
    # All handed over: until the cap for its own receive buffer (and its close reply).
    protocol.loop.run_next()
    assert protocol.transport.aborted
    assert protocol.loop.now == 30.0


def test_a_trickle_is_cut_at_the_cap() -> None:
    protocol = _watch(4_000_000, cap=9.0)
    left = 4_000_000
    while not protocol.transport.aborted:
        left -= 1
        protocol.transport.unsent = left
        protocol.loop.run_next()
    assert protocol.loop.now <= 10.0


def test_a_client_that_answered_is_left_alone() -> None:
    protocol = _watch(0)
    protocol.disconnected = True
    protocol.loop.run_next()
    assert not protocol.transport.aborted
    assert protocol.loop.timers == []
