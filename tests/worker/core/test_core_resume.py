"""Windows, resume planning and replay sessions: never partial, never a gap or duplicate."""

from __future__ import annotations

import json
import random

import pytest

from clarion_worker.core.cursor import ChannelPosition, TopicLayout, decode_cursor
from clarion_worker.core.dispatch import Dispatcher
from clarion_worker.core.events import Event
from clarion_worker.core.hub import Connection, Hub, route_key, route_keys
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


# ---- keyed windows: a resume reads only what can concern its client ------------------


def any_event(offset: int, partition: int, kind: str) -> Event:
    """An organization event of ``o<n>``, a user event ``u:<user>@<org>``, or a broadcast;
    its data is ``[partition, offset]``."""
    data = f"[{partition},{offset}]"
    ts = NOW_MS - 1000
    if kind == "all":
        return Event("t", partition, offset, ts, "T", None, None, "broadcast", data, None)
    if kind.startswith("u:"):
        user, org = kind[2:].split("@")
        return Event("t", partition, offset, ts, "T", org, user, "user", data, None)
    return Event("t", partition, offset, ts, "T", kind, None, "organization", data, None)


def test_window_index_returns_exactly_the_entries_under_the_keys_after_evictions() -> None:
    window = PartitionWindow(6, start_offset=0)
    kinds = ["o1", "o2", "all", "u:ann@o1", "o1", "o3", "all", "o2", "u:bob@o2", "o1"]
    for offset, kind in enumerate(kinds):
        window.append(Dispatched(any_event(offset, 0, kind), "{}"))
    keys = route_keys(Principal(frozenset({"o1"}), "ann"))
    assert keys == {"*", "o:o1", "u:ann"}
    everything = window.since(4)
    assert [d.event.offset for d in everything] == [4, 5, 6, 7, 8, 9]  # 0-3 evicted
    assert [d.event.offset for d in window.since(4, keys)] == [
        d.event.offset for d in everything if route_key(d.event) in keys
    ]
    assert window.since(4, {"o:nobody"}) == []


@pytest.mark.parametrize("seed", range(25))
def test_keyed_replay_delivers_the_same_events_and_its_ids_resume_exactly(seed: int) -> None:
    rng = random.Random(seed)
    channel = Channel(window=1000)
    kinds = ["o1", "o2", "o3", "all", "u:ann@o1", "u:bob@o1", "u:ann@o2"]
    next_offset = [10, 10]
    for _ in range(rng.randint(5, 60)):
        partition = rng.randint(0, 1)
        channel.dispatcher.dispatch(any_event(next_offset[partition], partition, rng.choice(kinds)))
        next_offset[partition] += rng.choice([1, 1, 1, 2])  # gaps: markers, skipped records
    principal = Principal(frozenset(rng.sample(["o1", "o2", "o3"], rng.randint(1, 2))), "ann")
    live = channel.position.snapshot()
    start = {"t": tuple(rng.randint(10, end) for end in live["t"])}
    cursor = ChannelPosition([TopicLayout("t", INC["t"], start["t"])]).current_id()

    def replay(from_id: str, keyed: bool) -> list[tuple[int, int, str]]:
        client = Connection("c", principal, Outbox(max_events=10**6, max_bytes=10**9))
        plan = plan_resume(
            from_id,
            live=live,
            topics={"t": TopicFacts(INC["t"], (0, 0))},
            windows=channel.windows,
            bounds=ResumeSettings(window_events=1000, max_replay_events=10**6),
            now_ms=NOW_MS,
            keys=route_keys(principal) if keyed else None,
        )
        assert isinstance(plan, FromWindow)
        session = ReplaySession(client, start=plan.start, live=plan.live, incarnations=INC)
        for scope, items in plan.segments:
            session.feed_items(items)
            session.end_range(scope.topic, scope.partition, scope.end)
        assert session.pump()
        envelopes = [json.loads(item.text) for item in client.outbox.take_all()]
        return [(e["data"][1], e["data"][0], e["id"]) for e in envelopes]

    keyed, unkeyed = replay(cursor, True), replay(cursor, False)
    assert [(o, p) for o, p, _ in keyed] == [(o, p) for o, p, _ in unkeyed]
    # Resuming from any replayed id gives exactly the events after it: no gap, no duplicate.
    for index, (_o, _p, event_id) in enumerate(keyed):
        assert [(o, p) for o, p, _ in replay(event_id, True)] == [
            (o, p) for o, p, _ in keyed[index + 1 :]
        ]
