"""The reconciler drives the core through fake ports: no broker, no API server, no watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_operator.core.errors import PermanentError, RetryableError
from clarion_operator.core.render import ObjectRef
from clarion_operator.core.topics import (
    AlterConfigs,
    ChannelClaim,
    CreateTopic,
    GrowPartitions,
    ObservedTopic,
    PartitionState,
    TopicHealth,
    channel_claim,
)
from clarion_operator.metrics import Metrics
from clarion_operator.ports import ApiError, Body, EventPost, KafkaAdmin, KafkaConnection
from clarion_operator.reconcile import Reconciler

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeKafka:
    def __init__(self) -> None:
        self.topics: dict[str, ObservedTopic] = {}
        self.calls: list[str] = []
        self.down = False

    async def describe(self, names: Sequence[str]) -> dict[str, ObservedTopic | None]:
        return {n: self.topics.get(n) for n in names}

    async def partitions(
        self, names: Sequence[str]
    ) -> dict[str, tuple[PartitionState, ...] | None]:
        self.calls.append(f"partitions {','.join(names)}")
        found = {n: self.topics.get(n) for n in names}
        return {
            n: None if t is None else t.health.partitions if t.health else ()
            for n, t in found.items()
        }

    async def create(self, action: CreateTopic) -> int:
        self.calls.append(f"create {action.name}")
        if action.name in self.topics:
            return 36
        self.topics[action.name] = ObservedTopic(action.partitions, 1, dict(action.configs))
        return 0

    async def grow(self, action: GrowPartitions) -> int:
        self.calls.append(f"grow {action.name}")
        t = self.topics[action.name]
        self.topics[action.name] = ObservedTopic(action.total, 1, t.dynamic_configs)
        return 0

    async def alter(self, action: AlterConfigs) -> int:
        self.calls.append(f"alter {action.name}")
        t = self.topics[action.name]
        self.topics[action.name] = ObservedTopic(t.partitions, 1, dict(action.configs))
        return 0

    async def delete(self, names: Sequence[str]) -> dict[str, int]:
        self.calls.append(f"delete {','.join(names)}")
        return {n: 0 if self.topics.pop(n, None) else 3 for n in names}

    def __call__(self, connection: KafkaConnection) -> AbstractAsyncContextManager[KafkaAdmin]:
        return self._connect()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[KafkaAdmin]:
        if self.down:
            raise ConnectionRefusedError("Connect call failed")
        yield self


class FakeKube:
    """The Kubernetes port, and the claim index port over the channels it holds."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Body] = {}
        self.channels: list[Body] = []
        self.fail_apply: int | None = None
        #: False: a Deployment's pods are still starting (nothing ready yet).
        self.pods_ready = True
        #: Status patches written, per channel name.
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.fail_status: int | None = None
        self.events: list[EventPost] = []
        #: Event POSTs to answer with this status (then store normally).
        self.fail_events: list[int] = []
        #: (group/version, plural) pairs discovery reports (CRD-backed APIs).
        self.served_apis: set[tuple[str, str]] = set()
        #: Prune HTTPRoute sessionPersistence on apply, as standard-channel CRDs do.
        self.standard_gateway_crds = False

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> Body:
        if self.fail_status is not None:
            raise ApiError(self.fail_status, "no answer")
        self.statuses.append((ref.name, dict(patch)))
        return {}

    async def post_event(self, event: EventPost) -> None:
        if self.fail_events:
            code = self.fail_events.pop(0)
            if code == -409:  # stored, but the answer was lost on the way back
                self.events.append(event)
                raise ApiError(0, "connection reset")
            raise ApiError(code, "no answer")
        if any(e.name == event.name for e in self.events):
            raise ApiError(409, "already exists")
        self.events.append(event)

    async def probe(self) -> str | None:
        return None

    async def apply(self, body: Mapping[str, Any]) -> Body:
        if self.fail_apply is not None:
            raise ApiError(self.fail_apply, "nope")
        obj = dict(body)
        if obj["kind"] == "HTTPRoute" and self.standard_gateway_crds:
            rules = [
                {k: v for k, v in r.items() if k != "sessionPersistence"}
                for r in obj["spec"]["rules"]
            ]
            obj["spec"] = {**obj["spec"], "rules": rules}
        if obj["kind"] == "Deployment":
            replicas = obj["spec"].get("replicas", 1) if self.pods_ready else 0
            obj["status"] = {
                "replicas": replicas,
                "readyReplicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            }
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    async def delete_if_controlled(self, ref: ObjectRef, owner_uid: str) -> bool:
        return self.objects.pop((ref.kind, ref.name), None) is not None

    async def get(self, ref: ObjectRef) -> Body | None:
        return self.objects.get((ref.kind, ref.name))

    def index(self, body: Body) -> Body:
        """``body`` as the one channel kopf's claim index holds (it was created)."""
        self.channels = [body]
        return body

    def claims(self, cluster_key: str) -> list[ChannelClaim]:
        # What the kopf index holds: each channel's entry, filed under its cluster key.
        found = (channel_claim(body) for body in self.channels)
        return [claim for key, claim in filter(None, found) if key == cluster_key]

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return None

    async def service_monitor_available(self) -> bool:
        return False

    async def served(self, group_version: str, plural: str) -> bool:
        return (group_version, plural) in self.served_apis


def channel(spec: dict[str, Any], *, name: str = "dash", uid: str = "u1", **meta: Any) -> Body:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            **meta,
        },
        "spec": spec,
    }


def spec(**topic: Any) -> dict[str, Any]:
    return {
        "kafka": {"bootstrapServers": "k:9092"},
        "topics": [{"name": "orders", "partitions": 2, **topic}],
        "auth": {"mode": "none"},
    }


#: The fakes and the reconciler that drives them.
Parts = tuple[FakeKube, FakeKafka, Reconciler]


@pytest.fixture
def parts() -> Parts:
    kube, kafka = FakeKube(), FakeKafka()
    return (
        kube,
        kafka,
        Reconciler(kube, kafka, kube, field_manager="fm", metrics=Metrics(), clock=lambda: NOW),
    )


async def test_ensure_creates_topics_applies_children_and_is_ready(parts: Parts) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    out = await rec.ensure(body)
    assert out.error is None
    assert out.workers_ready
    assert kafka.calls == ["create orders"]
    assert {k for k, _ in kube.objects} == {
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    assert out.status is not None
    assert out.status_patch is not None
    assert [e.reason for e in out.events] == ["TopicCreated", "Reconciled"]
    # The next round observes what creation left (the broker's replication factor) ...
    settled = await rec.ensure({**body, "status": out.status})
    assert settled.status is not None
    # ... and from then on the same inputs mean nothing to do and nothing to write.
    again = await rec.ensure({**body, "status": settled.status})
    assert kafka.calls == ["create orders"]
    assert again.status_patch is None
    assert again.events == ()


async def test_invalid_spec_is_permanent_and_touches_nothing(parts: Parts) -> None:
    kube, kafka, rec = parts
    out = await rec.ensure(channel(spec(name="..")))
    assert isinstance(out.error, PermanentError)
    assert out.status is not None
    assert out.status["conditions"][0]["reason"] == "InvalidSpec"
    assert not kube.objects
    assert not kafka.calls


async def test_kafka_down_is_retried_and_children_are_still_applied(parts: Parts) -> None:
    kube, kafka, rec = parts
    kafka.down = True
    out = await rec.ensure(channel(spec()))
    assert isinstance(out.error, RetryableError)
    assert out.error.reason == "KafkaUnreachable"
    assert out.status is not None
    ready = out.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "KafkaUnreachable")
    assert ("Deployment", "dash-worker") in kube.objects


async def test_api_conflict_is_retried(parts: Parts) -> None:
    kube, _kafka, rec = parts
    kube.fail_apply = 409
    out = await rec.ensure(channel(spec()))
    assert isinstance(out.error, RetryableError)
    assert out.error.reason == "ApiConflict"


async def test_delete_removes_delete_policy_topics_only(parts: Parts) -> None:
    kube, kafka, rec = parts
    topics = [{"name": "keep"}, {"name": "drop", "deletionPolicy": "Delete"}]
    body = kube.index(channel({**spec(), "topics": topics}))
    await rec.ensure(body)
    out = await rec.delete(body)
    assert out.error is None
    assert set(kafka.topics) == {"keep"}
    assert [e.reason for e in out.events] == ["TopicDeleted"]


async def test_delete_with_kafka_down_blocks_until_force_annotation(parts: Parts) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec(deletionPolicy="Delete")))
    kafka.down = True
    out = await rec.delete(body)
    assert isinstance(out.error, RetryableError)
    assert out.error.delay <= 15
    assert out.status is not None
    assert out.status["conditions"][0]["reason"] == "DeletionBlocked"
    forced = channel(
        spec(deletionPolicy="Delete"),
        annotations={"realtime.clarion.dev/force-delete": "true"},
    )
    out = await rec.delete(forced)
    assert out.error is None
    assert [e.reason for e in out.events] == ["DeletionForced"]


@pytest.mark.parametrize(
    "older_spec",
    [
        pytest.param(spec(), id="valid"),
        # An invalid older sibling still claims its topics.
        pytest.param({**spec(), "auth": {"mode": "bogus"}}, id="invalid"),
    ],
)
async def test_younger_claimant_gets_resource_conflict(
    parts: Parts, older_spec: dict[str, Any]
) -> None:
    kube, kafka, rec = parts
    older = channel(older_spec, name="older", uid="u0")
    younger = channel(spec(), name="younger", uid="u9", creationTimestamp="2026-02-01T00:00:00Z")
    kube.channels = [younger, older]
    out = await rec.ensure(younger)
    assert out.status is not None
    assert out.status["conditions"][0]["reason"] == "ResourceConflict"
    assert kafka.calls == []


async def test_claims_on_another_kafka_cluster_do_not_conflict(parts: Parts) -> None:
    kube, kafka, rec = parts
    elsewhere = channel(
        {**spec(), "kafka": {"bootstrapServers": "other:9092"}}, name="older", uid="u0"
    )
    younger = channel(spec(), name="younger", uid="u9", creationTimestamp="2026-02-01T00:00:00Z")
    kube.channels = [younger, elsewhere]
    out = await rec.ensure(younger)
    assert out.error is None
    assert kafka.calls == ["create orders"]


async def test_delete_leaves_a_topic_an_older_channel_owns(parts: Parts) -> None:
    kube, kafka, rec = parts
    older = channel(spec(), name="older", uid="u0")
    younger = channel(
        spec(deletionPolicy="Delete"),
        name="younger",
        uid="u9",
        creationTimestamp="2026-02-01T00:00:00Z",
    )
    kube.channels = [older, younger]
    await rec.ensure(older)
    out = await rec.delete(younger)
    assert out.error is None
    assert "orders" in kafka.topics
    assert not any(c.startswith("delete") for c in kafka.calls)


async def test_drift_check_waits_until_the_handler_settles(parts: Parts) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    kafka.down = True
    first = await rec.ensure(body, "handler")
    assert isinstance(first.error, RetryableError)  # kopf runs the handler again
    calls = list(kafka.calls)
    skipped = await rec.ensure(body, "timer")
    assert skipped.skipped
    assert (skipped.status_patch, skipped.events) == (None, ())
    assert kafka.calls == calls

    kafka.down = False
    settled = await rec.ensure({**body, "status": first.status}, "handler")
    assert settled.error is None
    drift = await rec.ensure({**body, "status": settled.status}, "timer")
    assert not drift.skipped


async def test_a_secret_change_reconciles_while_the_handler_retries_and_settles_it(
    parts: Parts,
) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    kafka.down = True
    first = await rec.ensure(body, "handler")
    assert isinstance(first.error, RetryableError)  # kopf retries, possibly minutes later
    assert (await rec.ensure(body, "timer")).skipped

    kafka.down = False  # what a fixed Secret does to a refused login
    fixed = await rec.ensure({**body, "status": first.status}, "secret")
    assert not fixed.skipped
    assert fixed.error is None
    assert fixed.status is not None
    assert fixed.status_patch is not None
    # Settled: the timers (drift, health) need not wait for the handler's retry.
    assert not (await rec.ensure({**body, "status": fixed.status}, "timer")).skipped


async def test_workers_rolling_out_settle_the_handler_the_watch_follows(parts: Parts) -> None:
    kube, _kafka, rec = parts
    body = kube.index(channel(spec()))
    kube.pods_ready = False
    first = await rec.ensure(body, "handler")
    # Not an error: the handler is done, the Deployment's watch takes over.
    assert first.error is None
    assert not first.workers_ready
    assert not (await rec.ensure(body, "timer")).skipped
    assert first.status is not None
    assert first.status["conditions"][0]["reason"] == "WorkersProgressing"

    deployment = dict(kube.objects[("Deployment", "dash-worker")])
    deployment["status"] = {
        "replicas": 2,
        "readyReplicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
    }
    followed = await rec.follow_deployment("ns", "dash", deployment)
    assert followed is not None
    assert followed.workers_ready
    assert followed.status is not None
    ready = followed.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled")
    # Written by the reconciler itself, in order: the reconciles' status, then the watch's.
    assert kube.statuses[-2][1]["conditions"][0]["reason"] == "WorkersProgressing"
    assert kube.statuses[-1][1]["conditions"][0]["status"] == "True"
    assert [e.reason for e in followed.events] == ["Reconciled"]
    assert followed.line is not None
    assert followed.line.level == "info"


async def test_drift_check_runs_after_a_permanent_error_and_after_deletion_starts(
    parts: Parts,
) -> None:
    kube, _kafka, rec = parts
    invalid = channel(spec(name=".."))
    out = await rec.ensure(invalid, "handler")
    assert isinstance(out.error, PermanentError)
    assert not (await rec.ensure(invalid, "timer")).skipped

    body = channel(spec(), uid="u2")
    kube.pods_ready = False
    await rec.ensure(body, "handler")
    await rec.delete(body)
    assert not (await rec.ensure(body, "timer")).skipped


async def _settle_events(rec: Reconciler) -> None:
    """Wait for the Event posts the reconciler started (they run beside it)."""
    await asyncio.gather(*list(rec._tasks))


async def test_an_event_post_retried_after_a_lost_answer_is_stored_once(
    parts: Parts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube, _kafka, rec = parts
    monkeypatch.setattr("clarion_operator.reconcile.retry_delay", lambda err, n: 0.0)
    body = kube.index(channel(spec()))
    # The first POST is stored but its answer lost; the retry meets 409, not a duplicate.
    kube.fail_events = [-409, 503]
    out = await rec.ensure(body)
    await _settle_events(rec)
    assert [e.reason for e in out.events] == ["TopicCreated", "Reconciled"]
    assert [e.reason for e in kube.events] == ["TopicCreated", "Reconciled"]
    assert len({e.name for e in kube.events}) == 2


async def test_a_status_that_could_not_be_written_posts_no_event_and_is_retried_soon(
    parts: Parts,
) -> None:
    kube, _kafka, rec = parts
    body = kube.index(channel(spec()))
    kube.fail_status = 0
    out = await rec.ensure(body)
    await _settle_events(rec)
    assert isinstance(out.error, RetryableError)
    assert out.error.delay <= 10
    assert (out.events, kube.events) == ((), [])
    kube.fail_status = None
    again = await rec.ensure(body)
    await _settle_events(rec)
    # The topic was created by the failed round: adopted now, so it is still reported.
    assert [e.reason for e in kube.events] == ["TopicAdopted", "Reconciled"]
    assert again.error is None


async def test_topics_created_before_a_crash_are_adopted_with_an_event(parts: Parts) -> None:
    kube, kafka, rec = parts
    # Created, then the operator died.
    kafka.topics["orders"] = ObservedTopic(2, 1, {"max.message.bytes": "1064960"})
    body = kube.index(channel(spec()))
    out = await rec.ensure(body)
    assert kafka.calls == []
    assert [e.reason for e in out.events] == ["TopicAdopted", "Reconciled"]
    # Recorded in the status from then on: no second adoption.
    again = await rec.ensure({**body, "status": out.status})
    assert "TopicAdopted" not in [e.reason for e in again.events]


async def test_a_topic_from_before_the_record_limit_gets_it_with_an_event(parts: Parts) -> None:
    kube, kafka, rec = parts
    raw = spec()
    raw["workers"] = {
        **raw.get("workers", {}),
        "limits": {"maxRecordBytes": 2 * 1024**2, "queueMaxBytes": 4 * 1024**2},
    }
    # Created by an operator that did not set max.message.bytes (and recorded in the status).
    kafka.topics["orders"] = ObservedTopic(2, 1, {})
    body = kube.index(channel(raw))
    out = await rec.ensure(body)
    assert kafka.calls == ["alter orders"]
    assert kafka.topics["orders"].dynamic_configs == {"max.message.bytes": str(2 * 1024**2 + 16384)}
    assert "set config overrides of topic orders (keys: max.message.bytes)" in [
        e.message for e in out.events
    ]


async def test_the_health_probe_reports_a_lost_broker_beside_ready(parts: Parts) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    assert await rec.probe_health(body) is None  # no status written by a reconcile yet
    await rec.ensure(body)
    full, lost = (1, 2, 3), (1, 3)
    kafka.topics["orders"] = replace(
        kafka.topics["orders"],
        health=TopicHealth(
            "orders", (PartitionState(0, 1, full, lost), PartitionState(1, 3, full, full)), 2
        ),
    )
    written = len(kube.statuses)
    probed = await rec.probe_health(body)
    assert probed is not None
    assert probed.status is not None
    conditions = {c["type"]: c for c in probed.status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["TopicsHealthy"]["reason"] == "UnderReplicatedPartitions"
    assert "1 under-replicated, of 2 partition(s)" in conditions["TopicsHealthy"]["message"]
    assert [e.reason for e in probed.events] == ["UnderReplicatedPartitions"]
    assert probed.line is not None
    assert probed.line.level == "warning"
    assert len(kube.statuses) == written + 1
    assert await rec.probe_health(body) is None  # nothing changed: nothing written
    kafka.down = True
    assert await rec.probe_health(body) is None  # Kafka not answering: left to reconciles
    assert len(kube.statuses) == written + 1


async def test_a_drift_check_that_finds_a_broker_lost_logs_it_once(parts: Parts) -> None:
    _kube, kafka, rec = parts
    body = channel(spec())
    await rec.ensure(body)
    full = (1, 2, 3)
    kafka.topics["orders"] = replace(
        kafka.topics["orders"],
        health=TopicHealth("orders", (PartitionState(0, 1, full, (1, 3)),), 2),
    )
    out = await rec.ensure(body, "timer")
    assert out.line is not None
    assert (out.line.level, out.line.key) == ("warning", ("False", "UnderReplicatedPartitions"))
    assert out.line.text.startswith("TopicsHealthy=False UnderReplicatedPartitions: 0 offline")
    assert (await rec.ensure(body, "timer")).line is None  # unchanged: no second line


async def test_a_failing_worker_pod_shows_on_the_channel_with_its_message(parts: Parts) -> None:
    kube, _kafka, rec = parts
    body = kube.index(channel(spec()))
    kube.pods_ready = False
    await rec.ensure(body)
    said = "settings refused: workers.limits.queueMaxEvents (10) < batchMaxEvents (64)"
    pod = {
        "metadata": {"name": "dash-worker-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": False,
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 2, "message": said}},
                }
            ]
        },
    }
    failing = await rec.follow_pod("ns", "dash", "dash-worker-1", pod)
    assert failing is not None
    assert failing.status is not None
    ready = failing.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "WorkersFailing")
    assert said in ready["message"]
    assert failing.line is not None
    assert failing.line.level == "warning"
    # The same problem again (the next restart) changes nothing and writes nothing.
    writes = len(kube.statuses)
    assert await rec.follow_pod("ns", "dash", "dash-worker-1", pod) is None
    assert len(kube.statuses) == writes
    # The pod deleted (spec fixed, new pods rolling out): no longer failing.
    cleared = await rec.follow_pod("ns", "dash", "dash-worker-1", None)
    assert cleared is not None
    assert cleared.status is not None
    assert cleared.status["conditions"][0]["reason"] == "WorkersProgressing"


def _conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_gateway_exposure_without_the_gateway_api_says_so(parts: Parts) -> None:
    kube, _, rec = parts
    body = kube.index(
        channel({**spec(), "exposure": {"type": "gateway", "gateway": {"name": "gw"}}})
    )
    out = await rec.ensure(body)
    # Nothing to apply the HTTPRoute to: not applied, and not silently skipped either.
    assert ("HTTPRoute", "dash-worker") not in kube.objects
    assert out.status is not None
    conds = _conditions(out.status)
    assert conds["Exposed"] == ("False", "GatewayAPINotInstalled")
    assert conds["Ready"] == ("True", "Reconciled")  # in-cluster clients are served
    assert conds["WorkersReady"][0] == "True"
    assert ("Warning", "GatewayAPINotInstalled") in [(e.type, e.reason) for e in out.events]
    # The CRDs and the Gateway appear: the route is applied and the channel is Ready.
    kube.served_apis.add(("gateway.networking.k8s.io/v1", "httproutes"))
    kube.objects[("Gateway", "gw")] = {"kind": "Gateway", "metadata": {"name": "gw"}}
    again = await rec.ensure({**body, "status": out.status})
    assert ("HTTPRoute", "dash-worker") in kube.objects
    assert again.status is not None
    assert _conditions(again.status)["Exposed"] == ("True", "Exposed")
    assert _conditions(again.status)["Ready"][0] == "True"


async def test_ingress_class_missing_is_a_condition_and_the_ingress_still_applied(
    parts: Parts,
) -> None:
    kube, _, rec = parts
    exposure = {"type": "ingress", "ingress": {"className": "traefik", "profile": "traefik"}}
    body = kube.index(channel({**spec(), "exposure": exposure}))
    out = await rec.ensure(body)
    assert ("Ingress", "dash-worker") in kube.objects
    assert out.status is not None
    assert _conditions(out.status)["Exposed"] == ("False", "IngressClassNotFound")
    (event,) = [e for e in out.events if e.reason == "IngressClassNotFound"]
    assert event.type == "Warning"
    assert "IngressClass traefik (traefik profile) does not exist" in event.message
    kube.objects[("IngressClass", "traefik")] = {"kind": "IngressClass"}
    again = await rec.ensure({**body, "status": out.status})
    assert again.status is not None
    assert _conditions(again.status)["Exposed"] == ("True", "Exposed")


async def test_no_exposed_condition_without_exposure(parts: Parts) -> None:
    kube, _, rec = parts
    body = kube.index(channel(spec()))
    out = await rec.ensure(body)
    assert out.status is not None
    assert "Exposed" not in _conditions(out.status)


async def test_a_deployment_event_older_than_the_reconciles_read_is_ignored(
    parts: Parts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube, _kafka, rec = parts
    body = kube.index(channel(spec()))
    await rec.ensure(body)
    deployment = dict(kube.objects[("Deployment", "dash-worker")])

    def version(rv: str, **status: int) -> Body:
        return {
            **deployment,
            "metadata": {**deployment["metadata"], "resourceVersion": rv},
            "status": status,
        }

    ready = version("120", replicas=2, readyReplicas=2, updatedReplicas=2, availableReplicas=2)

    async def read(ref: ObjectRef) -> Body | None:
        return ready if ref.kind == "Deployment" else None

    monkeypatch.setattr(kube, "get", read)
    settled = await rec.ensure(body)
    assert settled.workers_ready
    # The watch delivers the state from before the reconcile's GET (0 ready) only now.
    writes = len(kube.statuses)
    assert await rec.follow_deployment("ns", "dash", version("110", replicas=2)) is None
    assert len(kube.statuses) == writes  # no flap to WorkersUnavailable and back
    lost = await rec.follow_deployment("ns", "dash", version("130", replicas=2))
    assert lost is not None
    assert lost.status is not None
    assert lost.status["conditions"][0]["reason"] == "WorkersUnavailable"


async def test_pruned_session_persistence_is_said_in_the_exposed_condition(parts: Parts) -> None:
    kube, _, rec = parts
    kube.served_apis.add(("gateway.networking.k8s.io/v1", "httproutes"))
    kube.objects[("Gateway", "gw")] = {"kind": "Gateway", "metadata": {"name": "gw"}}
    kube.standard_gateway_crds = True
    body = kube.index(
        channel({**spec(), "exposure": {"type": "gateway", "gateway": {"name": "gw"}}})
    )
    out = await rec.ensure(body)
    assert out.status is not None
    exposed = next(c for c in out.status["conditions"] if c["type"] == "Exposed")
    assert (exposed["status"], exposed["reason"]) == ("True", "Exposed")
    assert "sessionPersistence was pruned" in exposed["message"]


async def test_a_new_channel_says_reconciling_before_kafka_is_asked(parts: Parts) -> None:
    kube, kafka, rec = parts
    written_when_asked: list[list[tuple[str, dict[str, Any]]]] = []
    describe = kafka.describe

    async def watched(names: Sequence[str]) -> dict[str, ObservedTopic | None]:
        written_when_asked.append(list(kube.statuses))
        return await describe(names)

    kafka.describe = watched  # type: ignore[method-assign]
    body = kube.index(channel(spec()))
    out = await rec.ensure(body)
    [(_name, first)] = written_when_asked[0]
    assert _conditions(first) == {
        "Ready": ("False", "Reconciling"),
        "TopicsReady": ("Unknown", "Reconciling"),
        "WorkersReady": ("Unknown", "Reconciling"),
    }
    # No Event and no log line of its own: the reconcile's say where the channel went.
    await _settle_events(rec)
    assert [e.reason for e in kube.events] == ["TopicCreated", "Reconciled"]
    assert out.line is not None
    assert out.line.key == ("True", "Reconciled")
    # A channel with a status (a spec edit, a restarted operator) keeps it meanwhile.
    written = len(kube.statuses)
    edited = {**body, "metadata": {**body["metadata"], "generation": 2}, "status": out.status}
    await rec.ensure(edited)
    assert all(
        _conditions(patch)["Ready"] != ("False", "Reconciling")
        for _, patch in kube.statuses[written:]
    )


async def test_a_channel_is_acknowledged_on_first_sight_once_and_the_reconcile_goes_on(
    parts: Parts,
) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    await rec.acknowledge(body)
    [(_name, first)] = kube.statuses
    assert _conditions(first)["Ready"] == ("False", "Reconciling")
    assert kafka.calls == []  # no Kafka call before the first status
    # Seen again before kopf's reconcile: nothing more. The reconcile writes its own.
    await rec.acknowledge(body)
    assert len(kube.statuses) == 1
    out = await rec.ensure(body)
    assert out.line is not None
    assert out.line.key == ("True", "Reconciled")
    assert all(_conditions(p)["Ready"] != ("False", "Reconciling") for _, p in kube.statuses[1:])


async def test_the_health_probe_asks_only_for_metadata_once_a_reconcile_read_the_configs(
    parts: Parts,
) -> None:
    kube, kafka, rec = parts
    full = (1, 2, 3)
    kafka.topics["orders"] = ObservedTopic(
        2, 3, {}, TopicHealth("orders", (PartitionState(0, 1, full, full),), 2)
    )
    body = kube.index(channel(spec(replicationFactor=3)))
    await rec.ensure(body)
    # One in-sync replica left: below min.insync.replicas 2, which only the configs say.
    kafka.topics["orders"] = replace(
        kafka.topics["orders"],
        health=TopicHealth("orders", (PartitionState(0, 1, full, (1,)),), 7),
    )
    kafka.calls.clear()
    probed = await rec.probe_health(body)
    assert kafka.calls == ["partitions orders"]
    assert probed is not None
    assert probed.status is not None
    assert _conditions(probed.status)["TopicsHealthy"] == ("False", "BelowMinInSyncReplicas")


async def test_the_health_probe_asks_kafka_outside_the_channels_lock(parts: Parts) -> None:
    kube, kafka, rec = parts
    body = kube.index(channel(spec()))
    await rec.ensure(body)
    asked, answer = asyncio.Event(), asyncio.Event()
    describe = kafka.describe

    async def slow(names: Sequence[str]) -> dict[str, ObservedTopic | None]:
        asked.set()
        await answer.wait()
        return await describe(names)

    kafka.describe = slow  # type: ignore[method-assign]
    kafka.topics["orders"] = replace(
        kafka.topics["orders"],
        health=TopicHealth("orders", (PartitionState(0, -1, (1,), ()),), 1),
    )
    probe = asyncio.create_task(rec.probe_health(body))
    await asyncio.wait_for(asked.wait(), 30)
    # A reconcile is not kept waiting by the probe's describe ...
    assert not rec._lock("ns/dash").locked()
    kafka.describe = describe  # type: ignore[method-assign]
    drift = await rec.ensure({**body, "status": rec._old("ns/dash", "u1", body)}, "timer")
    assert drift.status is not None
    # ... and the probe, which described before it, writes nothing after it.
    written = len(kube.statuses)
    answer.set()
    assert await probe is None
    assert len(kube.statuses) == written
