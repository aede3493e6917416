"""Windows, resume planning and replay sessions: never partial, never a gap or duplicate."""

from __future__ import annotations

import json

import pytest

from clarion_worker.core.cursor import ChannelPosition, TopicLayout, decode_cursor
from clarion_worker.core.dispatch import Dispatcher
from clarion_worker.core.events import Event
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.outbox import Outbox
from clarion_worker.core.principal import Principal
from clarion_worker.core.replay import ReplaySession
from clarion_worker.core.resume import (
    FromKafka,
    FromWindow,
    Reset,
    TopicFacts,
    plan_resume,
)
from clarion_worker.core.settings import ResumeSettings
from clarion_worker.core.window import Dispatched, PartitionWindow, WindowSet

INC = {"t": b"topic-id-1"}
NOW_MS = 1_700_000_100_000
BOUNDS = ResumeSettings(window_events=5, max_replay_events=50, max_replay_age_seconds=3600)


def event(offset: int, partition: int = 0, org: str = "o1", ts: int = NOW_MS - 1000) -> Event:
    return Event("t", partition, offset, ts, "T", org, None, "organization", str(offset), None)


class Channel:
    """A dispatcher over topic ``t`` with two partitions starting at offset 10."""

    def __init__(self, window: int = 5) -> None:
        self.position = ChannelPosition([TopicLayout("t", INC["t"], (10, 10))])
        self.windows = WindowSet(window, {"t": (10, 10)})
        self.hub = Hub()
        self.dispatcher = Dispatcher(self.position, self.windows, self.hub)
        self.ids: dict[tuple[int, int], str] = {}

    def send(self, partition: int, offset: int, org: str = "o1", ts: int = NOW_MS - 1000) -> str:
        self.dispatcher.dispatch(event(offset, partition, org, ts))
        self.ids[(partition, offset)] = self.position.current_id()
        return self.ids[(partition, offset)]

    def plan(
        self,
        cursor: str,
        log_start: tuple[int, int] = (0, 0),
        bounds: ResumeSettings = BOUNDS,
        incarnation: bytes = INC["t"],
    ) -> object:
        return plan_resume(
            cursor,
            live=self.position.snapshot(),
            topics={"t": TopicFacts(incarnation, log_start)},
            windows=self.windows,
            bounds=bounds,
            now_ms=NOW_MS,
        )


def test_window_coverage_follows_evictions_and_gaps() -> None:
    window = PartitionWindow(3, start_offset=10)
    assert window.covers(10)
    assert not window.covers(9)
    for offset in (10, 12, 15, 16):  # gaps: transaction markers, skipped records
        window.append(Dispatched(event(offset), "{}"))
    assert len(window) == 3
    assert not window.covers(10)
    assert window.covers(11)  # 11 was never dispatched: the window still has "all" from 11
    assert [d.event.offset for d in window.since(11)] == [12, 15, 16]
    assert [d.event.offset for d in window.since(16)] == [16]
    assert window.since(17) == []
    empty = PartitionWindow(0, start_offset=10)
    empty.append(Dispatched(event(10), "{}"))
    assert not empty.covers(10)
    assert empty.covers(11)


def test_from_window_then_reset_when_evicted() -> None:
    channel = Channel()
    cursor = channel.send(0, 10)
    for offset in (11, 12):
        channel.send(0, offset)
    channel.send(1, 10)
    plan = channel.plan(cursor)
    assert isinstance(plan, FromWindow)
    assert [(d.event.partition, d.event.offset) for d in plan.items] == [(0, 11), (0, 12), (1, 10)]
    assert plan.live == {"t": (13, 11)}
    assert plan.start == {"t": (11, 10)}
    for offset in range(13, 20):
        channel.send(0, offset)
    plan = channel.plan(cursor)
    assert isinstance(plan, FromKafka)
    assert [(r.partition, r.start, r.end) for r in plan.ranges] == [(0, 11, 20), (1, 10, 11)]


def test_nothing_missed_is_an_empty_window_plan() -> None:
    channel = Channel()
    cursor = channel.send(1, 10)
    plan = channel.plan(cursor)
    assert isinstance(plan, FromWindow)
    assert plan.items == ()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage", "bad_cursor"),
        ("incarnation", "incarnation_changed"),
        ("retention", "beyond_retention"),
        ("too_far", "too_far_behind"),
        ("ahead", "ahead_of_log"),
        ("old_window", "too_old"),
        ("old_kafka", "too_old"),
    ],
)
def test_reset_reasons(case: str, reason: str) -> None:
    channel = Channel(window=100)
    old_ts = NOW_MS - 7200 * 1000
    cursor = channel.send(0, 10, ts=old_ts if case == "old_kafka" else NOW_MS - 1000)
    if case == "garbage":
        plan = channel.plan("not-a-cursor!")
    elif case == "incarnation":
        plan = channel.plan(cursor, incarnation=b"topic-id-2")
    elif case == "retention":
        channel.send(0, 11)
        plan = channel.plan(cursor, log_start=(12, 0))
    elif case == "too_far":
        for offset in range(11, 70):
            channel.send(0, offset)
        plan = channel.plan(cursor)
    elif case == "ahead":
        other = Channel()
        plan = other.plan(cursor)  # other's position is 10 on p0: cursor says 11
    elif case == "old_window":
        channel.send(0, 11, ts=old_ts)
        plan = channel.plan(cursor)
    else:
        small = Channel(window=0)
        plan = small.plan(cursor)
        small.send(0, 10)
        small.send(0, 11)
        plan = small.plan(cursor)
    assert plan == Reset(reason)  # type: ignore[arg-type]


def test_retention_only_matters_when_events_were_missed() -> None:
    channel = Channel()
    cursor = channel.send(0, 10)
    assert isinstance(channel.plan(cursor, log_start=(11, 11)), FromWindow)


def test_recreated_topic_with_more_partitions_in_cursor() -> None:
    wide = ChannelPosition([TopicLayout("t", INC["t"], (10, 10, 10))])
    cursor = wide.advance("t", 2, 10, NOW_MS)
    assert Channel().plan(cursor) == Reset("incarnation_changed")


def test_partitions_added_after_the_cursor_replay_from_zero() -> None:
    narrow = ChannelPosition([TopicLayout("t", INC["t"], (10,))])
    cursor = narrow.advance("t", 0, 10, NOW_MS - 1000)
    channel = Channel()
    channel.send(0, 10)
    plan = channel.plan(cursor)
    assert isinstance(plan, FromKafka)  # p1 from 0: the window started at 10
    assert [(r.partition, r.start, r.end) for r in plan.ranges] == [(1, 0, 10)]
    assert channel.plan(cursor, log_start=(0, 3)) == Reset("beyond_retention")


def test_unknown_topics_in_cursor_are_ignored() -> None:
    other = ChannelPosition([TopicLayout("gone", b"x", (1,)), TopicLayout("t", INC["t"], (10, 10))])
    cursor = other.advance("t", 0, 10, NOW_MS)
    channel = Channel()
    channel.send(0, 10)
    plan = channel.plan(cursor)
    assert isinstance(plan, FromWindow)
    assert plan.items == ()


def connect(hub: Hub, org: str = "o1", max_events: int = 100) -> Connection:
    connection = Connection(
        "c", Principal(frozenset({org}), None), Outbox(max_events=max_events, max_bytes=10**6)
    )
    hub.add(connection)
    return connection


def frames(connection: Connection) -> list[dict[str, object]]:
    out = []
    while (frame := connection.outbox.take_frame(batch=False)) is not None:
        out.append(json.loads(frame))
    return out


def test_replay_then_live_has_no_gap_no_duplicate_and_honest_ids() -> None:
    channel = Channel(window=100)
    cursor = channel.send(0, 10)
    channel.send(0, 11)
    channel.send(1, 10, org="o2")  # not for this client
    channel.send(1, 11)
    channel.send(0, 12)
    client = connect(channel.hub)
    client.outbox.hold()
    plan = channel.plan(cursor)
    assert isinstance(plan, FromWindow)
    session = ReplaySession(client, start=plan.start, live=plan.live, incarnations=INC)
    session.feed_items(plan.items)
    channel.send(1, 12)  # live, while replay is in progress: held
    channel.send(0, 13)
    assert session.pump()
    session.finish()
    channel.send(0, 14)
    got = frames(client)
    # Replay (p0: 11, 12; p1: 11), then the held live events, then live again.
    assert [f["data"] for f in got] == [11, 12, 11, 12, 13, 14]
    # Replay ids never claim partition 1 beyond what the client has seen.
    first = decode_cursor(str(got[0]["id"])).topics[0].offsets
    assert first == (12, 10)
    last_replayed = decode_cursor(str(got[2]["id"])).topics[0].offsets
    assert last_replayed == (13, 12)
    assert [f["id"] for f in got[3:]] == [
        channel.ids[(1, 12)],
        channel.ids[(0, 13)],
        channel.ids[(0, 14)],
    ]


def test_replay_from_kafka_ignores_out_of_range_and_paces() -> None:
    channel = Channel(window=0)
    cursor = channel.send(0, 10)
    for offset in range(11, 16):
        channel.send(0, offset)
    client = connect(channel.hub, max_events=2)
    client.outbox.hold()
    plan = channel.plan(cursor)
    assert isinstance(plan, FromKafka)
    session = ReplaySession(client, start=plan.start, live=plan.live, incarnations=INC)
    # The edge over-reads on both sides and repeats a record: all harmless.
    session.feed_events([event(o) for o in range(9, 18)] + [event(12)])
    session.skip("t", 0, 30)
    assert session.pending == 5
    assert not session.pump()  # outbox holds 2: wait for the writer
    channel.send(0, 16)  # live during replay: held, not an overflow
    assert client.outbox.held_count == 1
    with pytest.raises(RuntimeError):
        session.finish()
    received = frames(client)
    while not session.pump():
        received += frames(client)
    session.finish()
    received += frames(client)
    assert [f["data"] for f in received] == [11, 12, 13, 14, 15, 16]
    assert session.sent == 5


def test_replay_to_sse_clients_uses_sse_framing() -> None:
    channel = Channel()
    cursor = channel.send(0, 10)
    channel.send(0, 11)
    client = Connection(
        "s", Principal(frozenset({"o1"}), None), Outbox(max_events=9, max_bytes=9999), sse=True
    )
    plan = channel.plan(cursor)
    assert isinstance(plan, FromWindow)
    session = ReplaySession(client, start=plan.start, live=plan.live, incarnations=INC)
    session.feed_items(plan.items)
    assert session.pump()
    chunk = client.outbox.take_chunk(10_000)
    assert chunk is not None
    assert chunk.startswith("id: ")
    assert chunk.endswith("\n\n")
