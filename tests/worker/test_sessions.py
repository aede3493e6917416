"""A session as the runtime builds it (the composition root), driven through its methods
the way the handlers and the writers drive it. No Kafka: the runtime is not started, so
nothing here joins live delivery through the consumer's position."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from clarion_worker.config import Secrets
from clarion_worker.consumer import ChannelState
from clarion_worker.core.cursor import ChannelPosition, TopicLayout
from clarion_worker.core.dispatch import Dispatcher
from clarion_worker.core.events import Event
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import load_settings
from clarion_worker.core.window import WindowSet
from clarion_worker.direct import PAUSED, WRITABLE
from clarion_worker.runtime import WorkerRuntime

PRINCIPAL = Principal(frozenset({"o1"}), "u1")


def runtime() -> WorkerRuntime:
    doc = {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "unit",
        "kafka": {"bootstrapServers": "127.0.0.1:9"},
        "topics": [{"name": "t", "audience": "organization"}],
        "auth": {"mode": "none"},
    }
    settings = load_settings(doc, {}, hostname="unit", edge_env_names=())
    return WorkerRuntime(settings, Secrets(None, None), CollectorRegistry())


class Socket:
    """Stands in for ``direct.DirectSink``: what the write pass wrote and closed."""

    def __init__(self) -> None:
        self.on_writable: object = None
        self.on_blocked: Callable[[], None] | None = None
        self.held = False
        self.written: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None

    def state(self) -> int:
        return WRITABLE

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, code: int, reason: str, *, handshake_seconds: float) -> None:
        self.closed_with = (code, reason)


async def test_a_direct_session_is_written_by_the_runtimes_write_pass() -> None:
    worker = runtime()
    socket = Socket()
    session = worker.open_session(PRINCIPAL, "websocket", False, socket)  # type: ignore[arg-type]
    assert socket.on_writable is not None  # a drained socket marks the session again
    session.request_close(CloseCode.OVERLOADED, "connection limit reached")
    session.flush_now()
    (data,) = socket.written
    frame = json.loads(data[2:])  # one short unmasked text frame: 2 header bytes
    assert (frame["type"], frame["code"]) == ("error", int(CloseCode.OVERLOADED))
    assert socket.closed_with == (int(CloseCode.OVERLOADED), "connection limit reached")
    assert session.frames_written == 1
    assert not session.events_written  # an error frame is no event


def test_the_registry_follows_a_session_in_and_out_of_live_delivery() -> None:
    worker = runtime()
    session = worker.open_session(PRINCIPAL, "sse", False)
    assert len(worker.sessions) == 0  # built, not yet receiving
    worker.sessions.register(session)
    worker.sessions.register(session)  # idempotent
    assert (len(worker.sessions), len(worker.hub), worker.hub.sse_count) == (1, 1, 1)
    assert list(worker.sessions) == [session]
    session.request_close(CloseCode.TOKEN_EXPIRED, "token expired")
    assert (len(worker.sessions), len(worker.hub), worker.sessions.removed) == (0, 0, 1)
    session.finish()
    assert worker.sessions.removed == 1
    gauge = worker.registry.get_sample_value("clarion_worker_connections", {"transport": "sse"})
    assert gauge == 0


def test_the_write_that_empties_the_queue_after_a_replay_is_the_last_replayed_one() -> None:
    session = runtime().open_session(PRINCIPAL, "websocket", False)
    session.replaying = True
    assert session.wrote(1, 1, 0)  # the replay is not finished: still replayed
    session.replay_done = True
    assert session.wrote(1, 1, 3)  # held live frames are still queued behind it
    assert session.replaying
    assert session.wrote(1, 1, 0)  # the hand-over write
    assert not session.replaying
    assert not session.wrote(1, 1, 0)
    assert (session.frames_written, session.events_written) == (4, True)


def test_an_in_band_resume_after_an_event_is_refused_with_an_error_frame() -> None:
    session = runtime().open_session(PRINCIPAL, "websocket", False)
    session.wrote(1, 1, 0)
    session.resume("any-cursor")
    assert session.resume_task is None
    (item,) = session.outbox.take_all()
    assert not item.event
    assert json.loads(item.text)["code"] == int(CloseCode.BAD_FRAME)
    assert session.close_code is None  # the connection stays open


def test_the_client_leaving_keeps_a_drains_close_code() -> None:
    worker = runtime()
    draining, plain = (worker.open_session(PRINCIPAL, "websocket", False) for _ in range(2))
    draining.close_after_flush(CloseCode.DRAIN, "draining")
    draining.peer_left(1001)
    assert (draining.close_code, draining.ended_with()) == (None, int(CloseCode.DRAIN))
    plain.peer_left(1001)
    assert (plain.close_code, plain.ended_with()) == (CloseCode.NORMAL, 1001)
    plain.end()  # the handler ends: nothing more to decide
    assert plain.close_code is CloseCode.NORMAL


class PausedSocket(Socket):
    def state(self) -> int:
        return PAUSED


async def test_write_now_writes_just_what_a_pass_would_write_alone() -> None:
    worker = runtime()
    socket = Socket()
    session = worker.open_session(PRINCIPAL, "websocket", False, socket)  # type: ignore[arg-type]
    assert session.connection.direct is session  # attached: the fan-out may write it
    assert session.write_now(b"one")
    assert (socket.written, session.frames_written, session.events_written) == (
        [b"one"],
        1,
        True,
    )
    session.outbox.offer_control('{"type":"pong"}')  # something queued goes first
    assert not session.write_now(b"two")
    session.flush_now()
    session.outbox.hold()  # a resume is being planned
    assert not session.write_now(b"three")
    session.outbox.release()
    session.replaying = True
    assert not session.write_now(b"four")
    session.replaying = False
    session.pending_close = CloseCode.GOING_AWAY
    assert not session.write_now(b"five")
    assert socket.written == [b"one", b'\x81\x0f{"type":"pong"}']
    paused = PausedSocket()
    other = worker.open_session(PRINCIPAL, "websocket", False, paused)  # type: ignore[arg-type]
    assert not other.write_now(b"six")
    assert paused.written == []
    assert worker.open_session(PRINCIPAL, "sse", False).connection.direct is None


async def test_write_now_arms_the_connection_and_whatever_could_queue_or_close_disarms_it() -> None:
    worker = runtime()
    socket = Socket()
    session = worker.open_session(PRINCIPAL, "websocket", False, socket)  # type: ignore[arg-type]
    worker.sessions.register(session)
    connection = session.connection
    assert connection.armed is None
    assert session.write_now(b"one")
    assert connection.armed == socket.write  # the socket's own write, nothing between
    session.offer_control('{"type":"pong"}')  # queued: frames alone must wait behind it
    assert connection.armed is None
    session.flush_now()
    assert session.write_now(b"two")
    assert socket.on_blocked is not None
    socket.on_blocked()  # paused, closing or lost
    assert connection.armed is None
    assert session.write_now(b"three")
    session.close_after_flush(CloseCode.DRAIN, "draining")  # a drain unregisters
    assert connection.armed is None
    assert len(worker.hub) == 0
    held = Socket()
    held.held = True  # the 101 still waits for the first write: not the socket's own write
    other = worker.open_session(PRINCIPAL, "websocket", False, held)  # type: ignore[arg-type]
    assert other.write_now(b"four")
    assert other.connection.armed is None


def test_frames_written_by_the_fan_out_count_as_the_passes_do() -> None:
    worker = runtime()
    worker.flusher.written_now(3, None)
    worker.flusher.written_now(2, 1_000)
    deliveries = worker.registry.get_sample_value(
        "clarion_worker_deliveries_total", {"transport": "websocket"}
    )
    frames = worker.registry.get_sample_value(
        "clarion_worker_frames_sent_total", {"transport": "websocket", "kind": "one"}
    )
    assert (deliveries, frames) == (5, 5)


# ---- resume ---------------------------------------------------------------------------

INCARNATION = b"topic-id-1"
#: Every event's time: recent (older than resume.maxReplayAgeSeconds would be a reset),
#: and the same in every runtime a test compares.
EVENT_MS = int(time.time() * 1000)


def live_channel(worker: WorkerRuntime) -> Dispatcher:
    """The consumer's state as its start builds it, for topic ``t`` (2 partitions)."""
    position = ChannelPosition([TopicLayout("t", INCARNATION, (0, 0))])
    windows = WindowSet(worker.settings.resume.window_events, {"t": (0, 0)})
    dispatcher = Dispatcher(position, windows, worker.hub)
    worker.consumer.state = ChannelState(
        position=position,
        windows=windows,
        dispatcher=dispatcher,
        incarnations={"t": INCARNATION},
        log_starts={"t": (0, 0)},
    )
    return dispatcher


def org_event(partition: int, offset: int, org: str) -> Event:
    return Event("t", partition, offset, EVENT_MS, "T", org, None, "organization", "{}", None)


def missed_since_cursor(worker: WorkerRuntime) -> str:
    """A cursor, then 3 events for ``o1`` and 1 for ``o2`` dispatched after it."""
    dispatcher = live_channel(worker)
    cursor = dispatcher.position.current_id()
    for partition, offset, org in ((0, 0, "o1"), (1, 0, "o2"), (1, 1, "o1"), (0, 1, "o1")):
        dispatcher.dispatch(org_event(partition, offset, org))
    return cursor


def frames_of(data: bytes) -> list[dict[str, object]]:
    """The unmasked text frames (each under 64 KiB) of one write, decoded."""
    frames = []
    while data:
        size, head = data[1], 2
        if size == 126:
            size, head = int.from_bytes(data[2:4], "big"), 4
        frames.append(json.loads(data[head : head + size]))
        data = data[head + size :]
    return frames


async def test_a_resume_from_the_windows_leaves_with_its_welcome_in_one_write() -> None:
    worker = runtime()
    cursor = missed_since_cursor(worker)
    socket = Socket()
    session = worker.open_session(PRINCIPAL, "websocket", False, socket)  # type: ignore[arg-type]
    session.open(cursor)
    assert session.resume_task is None  # done in the handler's step: no task
    session.flush_now()
    (data,) = socket.written
    frames = frames_of(data)
    assert [frame["type"] for frame in frames] == ["welcome", "event", "event", "event"]
    assert not session.replaying  # the write emptied the queue: live from here
    live = org_event(0, 2, "o1")
    worker.consumer.state.dispatcher.dispatch(live)  # type: ignore[union-attr]
    session.flush_now()
    assert [frame["type"] for frame in frames_of(socket.written[1])] == ["event"]
    resumes = worker.registry.get_sample_value(
        "clarion_worker_resumes_total", {"outcome": "window"}
    )
    assert resumes == 1


async def test_a_resume_the_turns_budget_cannot_cover_waits_in_a_task_with_the_same_result() -> (
    None
):
    at_once, later = runtime(), runtime()
    written = []
    for worker in (at_once, later):
        cursor = missed_since_cursor(worker)
        if worker is later:
            assert worker.replay_budget.take_now(worker.replay_budget._budget.per_turn)
            assert not worker.replay_budget.take_now(1)
        socket = Socket()
        session = worker.open_session(PRINCIPAL, "websocket", False, socket)  # type: ignore[arg-type]
        session.open(cursor)
        if worker is later:
            assert session.resume_task is not None
            await session.resume_task
        session.flush_now()
        written.append(b"".join(socket.written))
    welcome_at_once, *events_at_once = frames_of(written[0])
    welcome_later, *events_later = frames_of(written[1])
    assert welcome_later["type"] == welcome_at_once["type"] == "welcome"
    assert events_at_once == events_later
    assert [event["id"] for event in events_at_once] == [e["id"] for e in events_later]
    assert len(events_at_once) == 3


async def test_a_resume_waiting_in_its_task_ends_quietly_when_the_client_leaves() -> None:
    """Cancelled, the task returns instead of keeping a CancelledError whose traceback
    would hold the session in a reference cycle (``Session.start``)."""
    worker = runtime()
    cursor = missed_since_cursor(worker)
    worker.replay_budget._budget.per_turn = 1  # its 3 events take 3 turns
    session = worker.open_session(PRINCIPAL, "websocket", False, Socket())  # type: ignore[arg-type]
    session.open(cursor)
    task = session.resume_task
    assert task is not None
    await asyncio.sleep(0)  # the task starts, replays one event and waits for a turn
    assert not task.done()
    session.end()
    await asyncio.wait({task})
    assert not task.cancelled()
    assert task.exception() is None
    assert session.close_code is CloseCode.NORMAL
