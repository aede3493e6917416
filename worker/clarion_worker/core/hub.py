"""Routing and fan-out: which connections get an event, offered without awaiting anything.

Connections are indexed by organization and by user, so the cost of an event is
proportional to its recipients:

* ``organization`` events go to connections whose principal has that organization;
* ``user`` events go to that user's connections; when the event also names an
  organization, only to those of the user's connections that have it (user ids are not
  assumed unique across tenants);
* ``broadcast`` events go to every connection.

A connection's optional event-type set narrows any of these. ``publish`` offers the one
pre-serialized item (``outbox.Item``) to each recipient's outbox and returns the connections that
overflowed; they are already unregistered, and the edge closes them with ``SLOW_CONSUMER``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from clarion_worker.core.events import Event
from clarion_worker.core.outbox import Item, Outbox
from clarion_worker.core.principal import Principal


class DirectWriter(Protocol):
    """A connection's socket, offered a frame to write at once (``sessions.Session``).

    A ``True`` from ``write_now`` may also arm the connection (``Connection.armed``): the
    fan-out then writes the next frames alone in their turn with that call, without
    asking again, until the writer disarms it.
    """

    def write_now(self, frame: bytes) -> bool:
        """Write ``frame`` now if nothing is queued, held or closing and the socket takes
        data; False leaves it to the outbox."""
        ...


class Connection:
    """One client session as the hub sees it (mutable: event types can be narrowed)."""

    __slots__ = ("armed", "batch", "direct", "event_types", "id", "outbox", "principal", "sse")

    def __init__(
        self,
        connection_id: str,
        principal: Principal,
        outbox: Outbox,
        *,
        sse: bool = False,
        batch: bool = False,
        event_types: frozenset[str] | None = None,
    ) -> None:
        self.id = connection_id
        self.principal = principal
        self.outbox = outbox
        self.sse = sse
        self.batch = batch
        self.event_types = event_types
        #: Set while the connection's socket can be written by the fan-out itself.
        self.direct: DirectWriter | None = None
        #: The socket's own write, while a frame alone in its turn may go straight to it:
        #: set by the writer after a ``write_now`` that found nothing queued, held,
        #: replaying or closing; cleared by the writer on every change that could make
        #: that untrue (something queued, the socket paused, closing or lost). The
        #: fan-out then touches only this and the socket per recipient, as a bare
        #: server's loop does, not the session's state (latency table,
        #: docs/benchmarks.md).
        self.armed: Callable[[bytes], object] | None = None

    def __repr__(self) -> str:
        return f"Connection({self.id!r})"


_NOBODY: frozenset[Connection] = frozenset()
#: What ``publish`` offers SSE connections when the caller made no SSE item (it makes
#: one whenever the hub has an SSE connection: ``sse_count``).
NO_SSE_ITEM = Item("", 0, True)

#: The routing key of broadcast events: every principal holds it.
BROADCAST_KEY = "*"


def route_key(event: Event) -> str:
    """The one index an event is found under (window and replay use the hub's rule)."""
    if event.audience == "organization":
        return "o:" + (event.organization or "")
    if event.audience == "user":
        return "u:" + (event.user or "")
    return BROADCAST_KEY


def route_keys(principal: Principal) -> frozenset[str]:
    """Every key under which an event meant for ``principal`` can be indexed.

    A superset: ``Hub.wants`` still decides (event types, a user event's organization).
    """
    keys = {BROADCAST_KEY, *("o:" + org for org in principal.organizations)}
    if principal.user is not None:
        keys.add("u:" + principal.user)
    return frozenset(keys)


class Hub:
    def __init__(self) -> None:
        # Sets preserve nothing about order, which fan-out does not need; dict-of-sets
        # gives O(1) add/remove for connection churn.
        self._all: set[Connection] = set()
        self._by_org: dict[str, set[Connection]] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._sse_count = 0

    def __len__(self) -> int:
        return len(self._all)

    @property
    def sse_count(self) -> int:
        return self._sse_count

    def add(self, connection: Connection) -> None:
        if connection in self._all:
            return
        self._all.add(connection)
        for organization in connection.principal.organizations:
            self._by_org.setdefault(organization, set()).add(connection)
        if connection.principal.user is not None:
            self._by_user.setdefault(connection.principal.user, set()).add(connection)
        if connection.sse:
            self._sse_count += 1

    def remove(self, connection: Connection) -> None:
        connection.armed = None
        if connection not in self._all:
            return
        self._all.discard(connection)
        for organization in connection.principal.organizations:
            _discard(self._by_org, organization, connection)
        if connection.principal.user is not None:
            _discard(self._by_user, connection.principal.user, connection)
        if connection.sse:
            self._sse_count -= 1

    def connections(self) -> Iterator[Connection]:
        return iter(tuple(self._all))

    def candidates(self, event: Event) -> Iterable[Connection]:
        """Connections the event's audience reaches, before type and org narrowing."""
        if event.audience == "organization":
            return self._by_org.get(event.organization or "", _NOBODY)
        if event.audience == "user":
            return self._by_user.get(event.user or "", _NOBODY)
        return self._all

    @staticmethod
    def wants(connection: Connection, event: Event) -> bool:
        """The full delivery rule for one connection (replay filtering uses it)."""
        principal = connection.principal
        if event.audience == "organization":
            if event.organization not in principal.organizations:
                return False
        elif event.audience == "user":
            if event.user is None or event.user != principal.user:
                return False
            if event.organization is not None and event.organization not in (
                principal.organizations
            ):
                return False
        types = connection.event_types
        return types is None or event.type in types

    def publish(self, event: Event, item: Item, sse_item: Item = NO_SSE_ITEM) -> list[Connection]:
        """Offer the event's item (SSE connections: ``sse_item``, the same event as an SSE
        message) to every recipient; return (and drop) the overflowed."""
        return self.deliver(event, item, sse_item)[0]

    def deliver(
        self, event: Event, item: Item, sse_item: Item = NO_SSE_ITEM, frame: bytes | None = None
    ) -> tuple[list[Connection], int]:
        """``publish``; with ``frame`` (the item's WebSocket frame) a recipient whose socket
        takes it at once (``DirectWriter.write_now``) gets it written instead of queued.

        The caller passes ``frame`` only for an event that is alone in its event-loop
        turn: nothing else would share its write. Returns the overflowed connections and
        how many recipients got the frame written.
        """
        overflowed: list[Connection] = []
        written = 0
        event_type = event.type
        # Only user events with an organization need a per-recipient organization check;
        # the other audiences are fully decided by the index lookup.
        required_org = event.organization if event.audience == "user" else None
        for connection in self.candidates(event):
            types = connection.event_types
            if types is not None and event_type not in types:
                continue
            if required_org is not None and (
                required_org not in connection.principal.organizations
            ):
                continue
            if frame is not None:
                armed = connection.armed
                if armed is not None:
                    armed(frame)
                    written += 1
                    continue
            if connection.sse:
                accepted = connection.outbox.offer(sse_item)
            else:
                direct = connection.direct
                if frame is not None and direct is not None and direct.write_now(frame):
                    written += 1
                    continue
                accepted = connection.outbox.offer(item)
            if not accepted:
                overflowed.append(connection)
        for connection in overflowed:
            self.remove(connection)
        return overflowed, written


def _discard(index: dict[str, set[Connection]], key: str, connection: Connection) -> None:
    members = index.get(key)
    if members is None:
        return
    members.discard(connection)
    if not members:
        del index[key]  # keep the index from growing with every organization ever seen
