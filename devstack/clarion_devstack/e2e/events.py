"""UnionFlow business events in the seed's shape, produced with confluent-kafka.

The seed's ``KafkaEventProducer`` publishes ``{"type", "organizationId", "data",
"timestamp"}`` (plus ``userId`` for user notifications) to five topics; its
``publishBroadcastNotification`` goes to the channel's broadcast topic here. The
producer is librdkafka through confluent-kafka, not aiokafka, so the workers are proven
against a second, independent Kafka client. It is idempotent (``enable.idempotence``):
a broker restart never duplicates or reorders a record in the log, so any loss or
duplicate a client sees is the worker's or the client's.

Every event carries ``data.seq`` (global, for exact loss/duplicate accounting) and
``data.streamSeq`` (consecutive per topic and key, so a dashboard can spot a gap by
itself). Organization events are keyed by organization, user notifications by user:
each stream keeps its order on one partition.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from confluent_kafka import KafkaError, Message, Producer

from clarion_devstack.harness import meant_for

APPROVALS: Final = "unionflow.finance.approvals"
STATS: Final = "unionflow.dashboard.stats"
NOTIFY: Final = "unionflow.notifications.user"
MEMBERS: Final = "unionflow.members.events"
CONTRIBUTIONS: Final = "unionflow.contributions.events"
BROADCAST: Final = "unionflow.notifications.broadcast"

AUDIENCES: Final[Mapping[str, str]] = {
    APPROVALS: "organization",
    STATS: "organization",
    NOTIFY: "user",
    MEMBERS: "organization",
    CONTRIBUTIONS: "organization",
    BROADCAST: "broadcast",
}


@dataclass(frozen=True)
class Sent:
    """One delivered record: what was sent and where Kafka put it."""

    seq: int
    topic: str
    partition: int
    offset: int
    type: str
    organization: str | None
    user: str | None
    stream: str


@dataclass(frozen=True)
class Person:
    user: str
    organizations: tuple[str, ...]


#: The end-to-end tests' organizations and people (a token each).
ORGS: Final = ("org-abidjan", "org-dakar", "org-lome", "org-bamako")
PEOPLE: Final = (
    Person("awa", ("org-abidjan",)),
    Person("kofi", ("org-lome",)),
    Person("fatou", ("org-dakar", "org-abidjan")),
    Person("moussa", ("org-bamako",)),
    Person("aminata", ("org-dakar",)),
    Person("ibrahim", ("org-abidjan", "org-lome", "org-bamako")),
    Person("mariam", ("org-lome",)),
    Person("seydou", ()),
    Person("adjoa", ("org-bamako", "org-dakar")),
)
#: A smaller cast for the scenarios on real pods (the node shares the machine's two
#: cores): three organizations and six people, one of them in no organization.
FEW_ORGS: Final = ORGS[:3]
FEW_PEOPLE: Final = tuple(
    Person(p.user, tuple(org for org in p.organizations if org in FEW_ORGS))
    for p in PEOPLE
    if p.user in {"awa", "kofi", "fatou", "ibrahim", "seydou", "adjoa"}
)


class UnionFlowProducer:
    """confluent-kafka producer of numbered seed-shaped events (thread-safe bookkeeping)."""

    def __init__(self, bootstrap: str, *, client_id: str = "unionflow-e2e") -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                # Outlive a broker restart: records wait in librdkafka's queue meanwhile.
                "message.timeout.ms": 120000,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1000,
            },
            # librdkafka's connection errors during a broker restart go to logging,
            # not straight to stderr.
            logger=logging.getLogger("clarion.e2e.producer"),
        )
        self._lock = threading.Lock()
        self._seq = 0
        self._stream_seq: dict[str, int] = {}
        self.sent: list[Sent] = []
        self.errors: list[str] = []

    @property
    def produced(self) -> int:
        with self._lock:
            return self._seq

    def emit(
        self,
        topic: str,
        event_type: str,
        organization: str | None,
        user: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> int:
        """Queue one event; returns its seq. Delivery is recorded in ``sent``."""
        key = (user if topic == NOTIFY else organization) or "all"
        stream = f"{topic}/{key}"
        with self._lock:
            self._seq += 1
            seq = self._seq
            stream_seq = self._stream_seq.get(stream, 0) + 1
            self._stream_seq[stream] = stream_seq
        body: dict[str, Any] = {
            "type": event_type,
            "organizationId": organization,
            "data": {**(data or {}), "seq": seq, "streamSeq": stream_seq, "stream": stream},
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if user is not None:
            body["userId"] = user

        def delivered(error: KafkaError | None, message: Message) -> None:
            with self._lock:
                if error is not None:
                    self.errors.append(f"seq {seq}: {error}")
                    return
                self.sent.append(
                    Sent(
                        seq,
                        topic,
                        message.partition() or 0,
                        message.offset() or 0,
                        event_type,
                        organization,
                        user,
                        stream,
                    )
                )

        payload = _dumps(body)
        while True:
            try:
                self._producer.produce(topic, payload, key.encode(), on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)
        return seq

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is delivered (or failed)."""
        left = self._producer.flush(timeout)
        if left:
            raise AssertionError(f"{left} record(s) still undelivered after {timeout}s")
        if self.errors:
            raise AssertionError(f"delivery failed: {self.errors[:5]}")

    def delivered(self) -> list[Sent]:
        with self._lock:
            return sorted(self.sent, key=lambda s: s.seq)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- traffic ------------------------------------------------------------------------

_NAMES = ("Awa", "Kofi", "Fatou", "Moussa", "Aminata", "Ibrahim", "Mariam", "Seydou", "Adjoa")
_SURNAMES = ("Diallo", "Traoré", "Koné", "Ouédraogo", "Mensah", "Coulibaly", "Sow", "Bamba")


@dataclass
class Traffic:
    """A stream of UnionFlow-like events for a few organizations and their members."""

    organizations: Sequence[str]
    people: Sequence[Person]
    rng: random.Random = field(default_factory=lambda: random.Random(6))
    _members: dict[str, int] = field(default_factory=dict)

    def next(self, producer: UnionFlowProducer) -> int:
        rng = self.rng
        roll = rng.random()
        org = rng.choice(list(self.organizations))
        count = self._members.setdefault(org, rng.randint(80, 400))
        if roll < 0.25:
            kind = rng.choice(("APPROVAL_PENDING", "APPROVAL_APPROVED", "APPROVAL_REJECTED"))
            return producer.emit(
                APPROVALS,
                kind,
                org,
                data={
                    "approvalId": f"apv-{rng.randrange(10**6):06d}",
                    "transactionType": rng.choice(("DISBURSEMENT", "LOAN", "REFUND")),
                    "amount": rng.randrange(5, 500) * 1000,
                    "currency": "XOF",
                },
            )
        if roll < 0.45:
            return producer.emit(
                STATS,
                rng.choice(("DASHBOARD_STATS_UPDATED", "KPI_UPDATED")),
                org,
                data={
                    "totalMembers": count,
                    "activeMembers": int(count * rng.uniform(0.6, 0.95)),
                    "contributionsThisMonth": rng.randrange(100, 5000) * 1000,
                    "currency": "XOF",
                },
            )
        if roll < 0.6:
            kind = rng.choice(("MEMBER_CREATED", "MEMBER_UPDATED"))
            if kind == "MEMBER_CREATED":
                self._members[org] = count + 1
            return producer.emit(
                MEMBERS,
                kind,
                org,
                data={
                    "memberId": f"mbr-{rng.randrange(10**5):05d}",
                    "name": f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}",
                },
            )
        if roll < 0.8:
            return producer.emit(
                CONTRIBUTIONS,
                "CONTRIBUTION_PAID",
                org,
                data={
                    "memberId": f"mbr-{rng.randrange(10**5):05d}",
                    "amount": rng.randrange(1, 50) * 500,
                    "currency": "XOF",
                    "period": "2026-03",
                },
            )
        if roll < 0.97 and self.people:
            person = rng.choice(list(self.people))
            member_org = rng.choice(list(person.organizations)) if person.organizations else None
            return producer.emit(
                NOTIFY,
                "USER_NOTIFICATION",
                member_org,
                person.user,
                data={
                    "title": rng.choice(
                        ("Cotisation reçue", "Demande approuvée", "Nouveau message")
                    ),
                    "priority": rng.choice(("LOW", "NORMAL", "HIGH")),
                },
            )
        return producer.emit(
            BROADCAST,
            "BROADCAST_NOTIFICATION",
            None,
            data={
                "title": "Maintenance planifiée",
                "message": "Mise à jour ce soir à 22h",
            },
        )


# ---- exact delivery accounting -------------------------------------------------------


def expected_for(sent: Iterable[Sent], organizations: Iterable[str], user: str | None) -> list[int]:
    """The seqs a client granted ``organizations`` (and identified as ``user``) must get."""
    orgs = set(organizations)
    return [
        record.seq
        for record in sent
        if meant_for(AUDIENCES[record.topic], record.organization, record.user, orgs, user)
    ]


@dataclass(frozen=True)
class Accounting:
    expected: int
    delivered: int
    lost: tuple[int, ...]
    duplicated: tuple[int, ...]
    unexpected: tuple[int, ...]
    out_of_order: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.out_of_order)


def account(received: Sequence[int], expected: Sequence[int], sent: Iterable[Sent]) -> Accounting:
    """Compare what a client got with what it should have got, by seq and per partition."""
    got = list(received)
    seen: set[int] = set()
    dups: set[int] = set()
    for seq in got:
        (dups if seq in seen else seen).add(seq)
    wanted = set(expected)
    where = {s.seq: (s.topic, s.partition) for s in sent}
    last: dict[tuple[str, int], int] = {}
    disorder: list[str] = []
    for seq in got:
        place = where.get(seq)
        if place is None:
            continue
        if seq < last.get(place, 0):
            disorder.append(f"{seq} after {last[place]} on {place[0]}[{place[1]}]")
        last[place] = max(seq, last.get(place, 0))
    return Accounting(
        expected=len(wanted),
        delivered=len(got),
        lost=tuple(sorted(wanted - seen)),
        duplicated=tuple(sorted(dups)),
        unexpected=tuple(sorted(seen - wanted)),
        out_of_order=tuple(disorder[:10]),
    )
