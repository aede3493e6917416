"""UnionFlow's own producer stack through Clarion, unchanged (issue 18).

A Quarkus 3.33 application (``quarkus-producer/``: ``quarkus-messaging-kafka``, the seed's
``KafkaEventProducer`` with ``Emitter<Record<String, Map<String, Object>>>``,
``buildEvent(type, organizationId, data)`` stamping ``LocalDateTime.now()``, the five
topics, records keyed by entity id) is built with Maven and run as a plain JVM
(``java -jar quarkus-run.jar``) in zone Europe/Paris against the local stack's Kafka. The
channel is ``quarkus-producer/realtimechannel.yaml``, reconciled by the operator; two worker
processes run its rendering behind HAProxy, and mobile-style clients connect through it.

Checked exactly, per client: every event meant for it (organization events to members,
user notifications to their user, ``publishBroadcastNotification`` to every member of the
organization it names), once, nothing else; each frame's ``eventType`` is the producer's
and its ``ts`` is the producer's instant (epoch ms), read by a producer interceptor from the
very ``LocalDateTime`` (or other timestamp object) the record carried. A second part sends
the same shape with the timestamp written the other ways Java writes one; the one form
the worker does not accept (``java.util.Date#toString``) must carry the Kafka timestamp and
be counted.

The build is cached in the Clarion cache (``~/.cache/clarion/quarkus-producer-<hash>``),
outside the checkout, keyed by the project's files; Maven's artefacts live in ``~/.m2``.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import hashlib
import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion_devstack.e2e.clients import Viewer, all_welcomed, viewer
from clarion_devstack.e2e.cluster import Deployment, replica_counts
from clarion_devstack.e2e.events import Person
from clarion_devstack.harness import metric_reaches
from clarion_devstack.pytest_plugin import LocalStack
from clarion_devstack.settings import DevstackSettings

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).with_name("quarkus-producer")
CHANNEL_FILE = PROJECT / "realtimechannel.yaml"
#: The JVM's zone, and the channel's routing.timestampZone.
ZONE = "Europe/Paris"

#: SmallRye channel → the seed's topic (application.properties).
CHANNELS: Mapping[str, str] = {
    "finance-approvals-out": "unionflow.finance.approvals",
    "dashboard-stats-out": "unionflow.dashboard.stats",
    "notifications-out": "unionflow.notifications.user",
    "members-events-out": "unionflow.members.events",
    "contributions-events-out": "unionflow.contributions.events",
}
#: KafkaEventProducer's methods → (topic, event type, what the record is keyed by).
CALLS: Mapping[str, tuple[str, str, str]] = {
    "publishApprovalPending": ("unionflow.finance.approvals", "APPROVAL_PENDING", "id"),
    "publishApprovalApproved": ("unionflow.finance.approvals", "APPROVAL_APPROVED", "id"),
    "publishApprovalRejected": ("unionflow.finance.approvals", "APPROVAL_REJECTED", "id"),
    "publishDashboardStatsUpdate": ("unionflow.dashboard.stats", "DASHBOARD_STATS_UPDATED", "org"),
    "publishKpiUpdate": ("unionflow.dashboard.stats", "KPI_UPDATED", "org"),
    "publishUserNotification": ("unionflow.notifications.user", "USER_NOTIFICATION", "user"),
    "publishBroadcastNotification": (
        "unionflow.notifications.user",
        "BROADCAST_NOTIFICATION",
        "org",
    ),
    "publishMemberCreated": ("unionflow.members.events", "MEMBER_CREATED", "id"),
    "publishMemberUpdated": ("unionflow.members.events", "MEMBER_UPDATED", "id"),
    "publishContributionPaid": ("unionflow.contributions.events", "CONTRIBUTION_PAID", "id"),
}
#: TimestampForms.java: the other ways Java code writes the timestamp.
FORMS = (
    "local-tostring",
    "local-array",
    "zoned-region",
    "offset",
    "instant-z",
    "epoch-ms",
    "epoch-s",
    "decimal-s",
    "date-tostring",  # not accepted: the Kafka timestamp stands in, counted
)
ORGS = ("org-abidjan", "org-dakar", "org-lome")
PEOPLE = (
    Person("awa", ("org-abidjan",)),
    Person("fatou", ("org-dakar", "org-abidjan")),
    Person("kofi", ("org-lome",)),
    Person("ibrahim", ("org-abidjan", "org-lome")),
    Person("aminata", ("org-dakar",)),
    Person("seydou", ()),
)


# ---- the Quarkus application ----------------------------------------------------------


@dataclass(frozen=True)
class ProducerApp:
    jar: Path
    #: Seconds the Maven build took in this run; None when the cached build was reused.
    build_seconds: float | None


def _fingerprint(project: Path) -> str:
    """The build's inputs: the pom and the sources (not the channel file beside them)."""
    digest = hashlib.sha256()
    files = [project / "pom.xml", *(p for p in (project / "src").rglob("*") if p.is_file())]
    for path in sorted(files):
        digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_producer(settings: DevstackSettings) -> ProducerApp:
    """``mvn package`` of the project in the Clarion cache, once per version of its files."""
    dest = settings.cache_dir / f"quarkus-producer-{_fingerprint(PROJECT)}"
    jar = dest / "target" / "quarkus-app" / "quarkus-run.jar"
    done = dest / ".complete"
    if done.exists() and jar.exists():
        return ProducerApp(jar, None)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with dest.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run builds it once
        if done.exists() and jar.exists():
            return ProducerApp(jar, None)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(PROJECT, dest, ignore=shutil.ignore_patterns("target"))
        started = time.monotonic()
        result = subprocess.run(
            [settings.mvn, "-B", "-ntp", "-q", "package"],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"mvn package failed in {dest}:\n{(result.stdout + result.stderr)[-4000:]}"
            )
        seconds = time.monotonic() - started
        done.write_text(f"{seconds:.1f}\n")
        return ProducerApp(jar, seconds)


def run_producer(
    settings: DevstackSettings,
    app: ProducerApp,
    bootstrap: str,
    topics: Mapping[str, str],
    plan: Sequence[Mapping[str, Any]],
    sent_file: Path,
    log: Path,
) -> None:
    """The JVM, as UnionFlow's backend runs it; the plan on its standard input. Its
    temporary files (Vert.x's file cache) go beside ``sent_file``, not in /tmp."""
    scratch = sent_file.parent / "jvm-tmp"
    scratch.mkdir(exist_ok=True)
    argv = [
        settings.java,
        "-Xmx256m",
        f"-Djava.io.tmpdir={scratch}",
        f"-Duser.timezone={ZONE}",
        f"-Dkafka.bootstrap.servers={bootstrap}",
        f"-Dclarion.sent-file={sent_file}",
        *(f"-Dmp.messaging.outgoing.{ch}.topic={topics[t]}" for ch, t in CHANNELS.items()),
        "-jar",
        str(app.jar),
    ]
    stdin = "".join(json.dumps(step) + "\n" for step in plan)
    with log.open("w") as out:
        result = subprocess.run(
            argv, input=stdin, text=True, stdout=out, stderr=subprocess.STDOUT, timeout=180
        )
    if result.returncode != 0:
        raise AssertionError(f"the Quarkus producer exited {result.returncode}; log {log}")


# ---- what is produced and who must get it ----------------------------------------------


def make_plan(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Calls of the seed's producer methods, then the other timestamp forms; numbered."""
    plan: list[dict[str, Any]] = []
    calls = list(CALLS)
    for _ in range(count):
        call = rng.choice(calls)
        org: str | None = rng.choice(ORGS)
        step: dict[str, Any] = {"call": call, "id": str(uuid.UUID(int=rng.getrandbits(128)))}
        if call == "publishUserNotification":
            person = rng.choice(PEOPLE)
            step["userId"] = person.user
            org = rng.choice(person.organizations) if person.organizations else None
            data: dict[str, Any] = {"title": "Cotisation reçue", "priority": "NORMAL"}
        elif call == "publishBroadcastNotification":
            data = {"title": "Maintenance planifiée", "message": "Mise à jour ce soir à 22h"}
        else:
            data = {"amount": rng.randrange(1, 500) * 1000, "currency": "XOF"}
        step["organizationId"] = org
        step["data"] = data
        plan.append(step)
    for form in FORMS:
        for org in ORGS:
            plan.append(
                {
                    "call": "timestampForm",
                    "form": form,
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "organizationId": org,
                    "data": {"form": form},
                }
            )
    for seq, step in enumerate(plan, start=1):
        step["data"]["seq"] = seq
    return plan


def recipients(step: Mapping[str, Any]) -> set[str]:
    """Who must get the event, by the documented rules (docs/worker-config.md)."""
    org, user = step.get("organizationId"), step.get("userId")
    if step["call"] == "publishUserNotification":
        return {
            p.user for p in PEOPLE if p.user == user and (org is None or org in p.organizations)
        }
    # Organization topics, and broadcast notifications (a user topic, no user).
    return {p.user for p in PEOPLE if org in p.organizations}


@pytest.fixture(scope="module")
def producer_app(local_stack: LocalStack) -> ProducerApp:
    return build_producer(local_stack.settings)


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"qk{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def channel(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> Iterator[Deployment]:
    """The channel file as written, its topics prefixed so runs never share them (and
    deleted with the channel)."""
    workdir = tmp_path_factory.mktemp("quarkus")
    docs = list(yaml.safe_load_all(CHANNEL_FILE.read_text()))
    for doc in docs:
        if doc.get("kind") == "RealtimeChannel":
            for topic in doc["spec"]["topics"]:
                topic["name"] = f"{prefix}.{topic['name']}"
                # Test facts: a light topic, gone with the channel.
                topic.update(partitions=3, deletionPolicy="Delete")
            # HAProxy on 127.0.0.1 plays the Ingress (no ingress controller runs here).
            doc["spec"].pop("ingress", None)
    channel_file = workdir / "realtimechannel.yaml"
    channel_file.write_text(yaml.safe_dump_all(docs))
    dep = Deployment(
        local_stack.env,
        workdir,
        namespace=f"qk-{prefix}",
        replicas=2,
        drain_window_seconds=2,
        channel_file=channel_file,
        quiet=True,
    )
    with dep:
        yield dep


# The first run of a changed project builds it with Maven (minutes on a busy 2-core
# machine), inside this test's setup.
@pytest.mark.timeout(1200)
async def test_seed_producer_through_the_workers(
    local_stack: LocalStack,
    producer_app: ProducerApp,
    channel: Deployment,
    prefix: str,
    tmp_path: Path,
) -> None:
    dep = channel
    topics = {t: f"{prefix}.{t}" for t in CHANNELS.values()}
    viewers: list[Viewer] = [viewer(dep.ws_url, dep.token(p), p) for p in PEOPLE]
    try:
        await all_welcomed(viewers)
        plan = make_plan(random.Random(18), 240)
        sent_file = tmp_path / "sent.jsonl"
        await asyncio.to_thread(
            run_producer,
            local_stack.settings,
            producer_app,
            local_stack.kafka_bootstrap,
            topics,
            plan,
            sent_file,
            dep.log_dir / "quarkus-producer.log",
        )
        sent = {
            int(line["seq"]): line for line in map(json.loads, sent_file.read_text().splitlines())
        }
        assert sorted(sent) == list(range(1, len(plan) + 1)), "the interceptor saw every record"
        by_seq = {int(step["data"]["seq"]): step for step in plan}
        wanted = {
            p.user: {seq for seq, step in by_seq.items() if p.user in recipients(step)}
            for p in PEOPLE
        }

        # Every replica has dispatched every record (all are valid), and every client
        # holds every event meant for it.
        per_topic = collections.Counter(
            topics[CALLS.get(s["call"], ("unionflow.finance.approvals",))[0]] for s in plan
        )
        for replica in dep.workers:
            for topic, count in per_topic.items():
                try:
                    await metric_reaches(
                        replica.worker,
                        "clarion_worker_events_consumed_total",
                        count,
                        60,
                        topic=topic,
                    )
                except TimeoutError:
                    bad = [
                        line
                        for line in replica.worker.metrics().splitlines()
                        if line.startswith("clarion_worker_bad_records_total{")
                        and topic in line
                        and not line.endswith(" 0.0")
                    ]
                    raise AssertionError(
                        f"{replica.replica_id} did not deliver all {count} records of {topic}; "
                        f"bad records: {bad}"
                    ) from None
        for v in viewers:
            want = wanted[v.person.user]
            await v.wait(lambda x, w=want: w <= set(x.seqs()), 60)  # type: ignore[misc]

        problems: list[str] = []
        forms: collections.Counter[str] = collections.Counter()
        exact_ts: collections.Counter[str] = collections.Counter()
        for v in viewers:
            got = v.seqs()
            if sorted(got) != sorted(wanted[v.person.user]):
                extra = sorted(set(got) - wanted[v.person.user])
                dups = [s for s, n in collections.Counter(got).items() if n > 1]
                problems.append(f"{v.person.user}: unexpected {extra[:10]} duplicated {dups[:10]}")
            for frame in v.events:
                seq = int(frame["data"]["seq"])
                step, line = by_seq[seq], sent[seq]
                topic, event_type, _key = CALLS.get(
                    step["call"], ("unionflow.finance.approvals", "APPROVAL_PENDING", "id")
                )
                form = step.get("form", "seed LocalDateTime (Quarkus Jackson)")
                forms[form] += 1
                expected_ts = line["instantMs"] if line["instantMs"] is not None else None
                checks = {
                    "type": frame["type"] == "event",
                    "eventType": frame["eventType"] == event_type,
                    "topic": frame["topic"] == topics[topic],
                    "organizationId": frame["organizationId"] == step["organizationId"],
                    "userId": frame.get("userId") == step.get("userId"),
                    "id": isinstance(frame.get("id"), str) and bool(frame["id"]),
                    "ts": frame["ts"]
                    == (expected_ts if expected_ts is not None else frame["kafkaTs"]),
                }
                if all(checks.values()):
                    exact_ts[form] += 1
                else:
                    failed = [k for k, ok in checks.items() if not ok]
                    problems.append(f"{v.person.user} seq {seq} ({form}): {failed} in {frame}")
        assert not problems, problems[:10]

        broadcasts = sum(1 for s in plan if s["call"] == "publishBroadcastNotification")
        unparsable = sum(1 for s in plan if s.get("form") == "date-tostring")
        for replica in dep.workers:
            worker = replica.worker
            assert (
                worker.metric(
                    "clarion_worker_userless_events_total",
                    topic=topics[CALLS["publishBroadcastNotification"][0]],
                )
                == broadcasts
            )
            assert (
                worker.metric(
                    "clarion_worker_timestamps_ignored_total",
                    topic=topics["unionflow.finance.approvals"],
                    reason="unparsable",
                )
                == unparsable
            )
            assert (
                worker.metric(
                    "clarion_worker_bad_records_total",
                    topic=topics["unionflow.notifications.user"],
                    reason="missing_user",
                )
                == 0
            )

        calls = collections.Counter(s["call"] for s in plan)
        classes = collections.Counter(
            str(line["timestampClass"]).rsplit(".", 1)[-1] for line in sent.values()
        )
        build = (
            f"built in {producer_app.build_seconds:.1f} s"
            if producer_app.build_seconds is not None
            else "cached build reused"
        )
        print(f"\n[quarkus] producer: Quarkus 3.33.2 fast-jar ({build}), JVM zone {ZONE}")
        print(f"[quarkus] produced {len(plan)} records: {dict(sorted(calls.items()))}")
        print(f"[quarkus] timestamp objects the records carried: {dict(sorted(classes.items()))}")
        print(f"[quarkus] replicas: {replica_counts(viewers)}")
        for v in viewers:
            got = v.seqs()
            b = sum(1 for s in got if by_seq[s]["call"] == "publishBroadcastNotification")
            orgs = ",".join(v.person.organizations) or "-"
            print(
                f"[quarkus] client {v.person.user:8} orgs {orgs:28}"
                f" expected {len(wanted[v.person.user]):4} delivered {len(got):4}"
                f" (broadcast notifications {b}), exact"
            )
        for form, count in sorted(forms.items()):
            print(f"[quarkus] ts form {form:38} deliveries {count:4}, ts exact {exact_ts[form]:4}")
    finally:
        for v in viewers:
            await v.stop()
