"""One reconcile of one RealtimeChannel: drive the core against its ports.

This module makes no decisions of its own. ``core`` validates the spec, renders the
children, plans the topics and computes the status; this module only performs the I/O
those answers call for (describe, create, grow, alter and delete topics; apply and
delete children; read the Deployment) and hands back an :class:`Outcome` the kopf
handlers turn into a status patch, Events and a kopf error. It never imports kopf, so
it is unit-tested with fake ports.

Order of work: topics first (workers consume them), then children. A Kafka outage does
not stop the children from being applied: the workers retry Kafka themselves, and the
status says truthfully that the topics could not be checked.

A drift check (``trigger="timer"``) is skipped while the create/update handler of the same
channel has not settled (still running, or retrying: Kafka down, workers rolling out):
that handler comes back on its own and does the same work, so the timer would only
double it, which at a few hundred channels starting at once is most of the load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from clarion_operator.core import conditions
from clarion_operator.core.conditions import (
    ChannelStatusBody,
    Event,
    Failure,
    action_events,
    blocked_status,
    compute_status,
    monitoring_condition,
    observe_deployment,
    transition_events,
)
from clarion_operator.core.errors import (
    SHORT_RETRY,
    KafkaErrorClass,
    KafkaOperation,
    KafkaOutcome,
    PermanentError,
    ReconcileError,
    RetryableError,
    classify_api_status,
    classify_kafka_error,
    classify_kafka_exception,
)
from clarion_operator.core.exposure import (
    HTTP_ROUTE_API_VERSION,
    INGRESS_API_VERSION,
    ExposureObservation,
    exposure_condition,
)
from clarion_operator.core.reasons import Reason
from clarion_operator.core.render import (
    ChannelContext,
    DesiredState,
    ObjectRef,
    OperatorSettings,
    render,
    worker_name,
)
from clarion_operator.core.spec import ChannelSpec, ExposureSpec, SpecError, parse_spec
from clarion_operator.core.topics import (
    AlterConfigs,
    ChannelClaim,
    ChannelRef,
    CreateTopic,
    GrowPartitions,
    TopicAction,
    TopicFailure,
    TopicStatus,
    is_force_delete,
    kafka_cluster_key,
    plan_deletion,
    plan_topics,
    resolve_claims,
)
from clarion_operator.kafka_admin import KafkaCodeError
from clarion_operator.metrics import Metrics
from clarion_operator.ports import (
    ApiError,
    ClaimIndex,
    KafkaAdmin,
    KafkaAdminFactory,
    KafkaConnection,
    KubeApi,
)

log = logging.getLogger(__name__)

Trigger = Literal["handler", "timer", "delete"]
#: Retries while the workers roll out: quick at first, then no more than once a minute.
WORKERS_RETRY_MAX = 60.0
#: A blocked deletion is retried at least this often, so adding the force-delete
#: annotation releases the finalizer within this many seconds.
DELETION_RETRY_MAX = 15.0


@dataclass(frozen=True)
class Outcome:
    """What one reconcile found and what the handler must write, post and raise."""

    old_status: Mapping[str, Any]
    #: The status to write (the handler writes it only if ``status_changed``).
    status: ChannelStatusBody | None
    events: tuple[Event, ...] = ()
    #: Raise this as kopf.TemporaryError / kopf.PermanentError (None: done).
    error: ReconcileError | None = None
    workers_ready: bool = True
    topics_owned: int | None = None
    logs: tuple[str, ...] = field(default_factory=tuple)
    #: A drift check that did nothing because the channel's handler has not settled.
    skipped: bool = False

    @property
    def status_patch(self) -> dict[str, Any] | None:
        if self.status is None or not conditions.status_changed(self.old_status, self.status):
            return None
        return conditions.status_patch(self.old_status, self.status)


@dataclass(frozen=True)
class _TopicsResult:
    statuses: tuple[TopicStatus, ...] | Failure
    actions: tuple[TopicAction, ...] = ()
    failures: Mapping[str, TopicFailure] = field(default_factory=dict)
    error: RetryableError | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _mro_names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__]


def _classify(exc: Exception, operation: KafkaOperation) -> KafkaErrorClass:
    if isinstance(exc, KafkaCodeError):
        return classify_kafka_error(exc.code, operation)
    return classify_kafka_exception(_mro_names(exc))


def _api_error(exc: ApiError) -> RetryableError | PermanentError:
    """The core's classification, with the API server's own message kept."""
    err = classify_api_status(exc.status)
    message = f"{err.message}: {exc.message}"
    if isinstance(err, RetryableError):
        return RetryableError(err.reason, message, err.delay)
    return PermanentError(err.reason, message)


class Reconciler:
    """Reconciles channels through the ports; one at a time per channel."""

    def __init__(
        self,
        kube: KubeApi,
        kafka: KafkaAdminFactory,
        claims: ClaimIndex,
        *,
        field_manager: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._kube = kube
        self._kafka = kafka
        self._claim_index = claims
        self._field_manager = field_manager
        self._metrics = metrics or Metrics()
        self._clock = clock
        # The create/update handler and the drift timer may fire together for one
        # channel; serialising them keeps status writes and topic actions ordered.
        self._locks: dict[str, asyncio.Lock] = {}
        # Channels whose create/update/resume handler has not settled: it is running or
        # kopf will run it again (retryable error, workers not ready yet).
        self._unsettled: set[str] = set()

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    # --- ensure ----------------------------------------------------------------------

    async def ensure(self, body: Mapping[str, Any], trigger: Trigger = "handler") -> Outcome:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        if trigger == "timer" and uid in self._unsettled:
            return Outcome(dict(body.get("status") or {}), None, skipped=True)
        if trigger == "handler":
            self._unsettled.add(uid)
        started = time.monotonic()
        async with self._lock(uid):
            outcome = await self._ensure(body)
        if trigger == "handler" and _settled(outcome):
            self._unsettled.discard(uid)
        self._metrics.duration.labels(trigger).observe(time.monotonic() - started)
        self._metrics.reconciles.labels(_result(outcome), trigger).inc()
        if outcome.topics_owned is not None:
            self._metrics.set_topics(uid, outcome.topics_owned)
        return outcome

    async def _ensure(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        name, namespace = str(meta["name"]), str(meta["namespace"])
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 0)
        old: Mapping[str, Any] = dict(body.get("status") or {})
        now = self._clock()
        try:
            spec = parse_spec(body.get("spec") or {}, name=name)
        except SpecError as err:
            status = blocked_status(
                old, reason=Reason.INVALID_SPEC, message=err.message, generation=generation, now=now
            )
            return Outcome(old, status, tuple(transition_events(old, status)), err)

        try:
            monitoring = await self._kube.service_monitor_available()
        except ApiError as exc:
            monitoring = False
            log.warning("API discovery of ServiceMonitor failed: %s", exc)
        settings = OperatorSettings(
            field_manager=self._field_manager, monitoring_api_available=monitoring
        )
        desired = render(ChannelContext(name, namespace, uid, generation, spec, settings))

        topics = await self._topics(namespace, name, spec, desired)

        api_error: RetryableError | PermanentError | None = None
        workers: conditions.DeploymentObservation | Failure | None
        try:
            seen = await self._observe_exposure(namespace, spec.exposure)
            for obj in desired.objects():
                if obj is desired.http_route and not seen.api_served:
                    continue  # said in the Exposed condition instead
                applied = await self._kube.apply(obj)
                if obj is desired.http_route:
                    seen = replace(seen, persistence_kept=_persistence_kept(applied))
            for ref in desired.absent():
                await self._kube.delete_if_controlled(ref, uid)
            deployment = await self._kube.get(
                ObjectRef("apps/v1", "Deployment", namespace, worker_name(name))
            )
            workers = observe_deployment(deployment)
        except ApiError as exc:
            api_error = _api_error(exc)
            workers = Failure(api_error.reason, api_error.message)

        status = compute_status(
            old,
            generation=generation,
            now=now,
            topics=topics.statuses,
            workers=workers,
            endpoint=desired.endpoint,
            selector=desired.selector,
            config_hash=desired.config_hash,
            exposed=exposure_condition(spec.exposure, seen, namespace),
            monitored=monitoring_condition(spec.monitoring.service_monitor_enabled, monitoring),
        )
        events = [*action_events(topics.actions, topics.failures), *transition_events(old, status)]
        owned = (
            None
            if isinstance(topics.statuses, Failure)
            else sum(1 for t in topics.statuses if t.reason is not Reason.RESOURCE_CONFLICT)
        )
        error: ReconcileError | None = api_error or topics.error
        return Outcome(
            old,
            status,
            tuple(events),
            error,
            workers_ready=_condition_true(status, conditions.WORKERS_READY),
            topics_owned=owned,
        )

    async def _observe_exposure(self, namespace: str, exp: ExposureSpec) -> ExposureObservation:
        """Whether the API of the exposure is served and its IngressClass or Gateway
        exists. A lookup the operator may not make (403) is not a finding: unknown."""
        if exp.type == "none":
            return ExposureObservation()
        if exp.type == "gateway":
            if not await self._kube.served(HTTP_ROUTE_API_VERSION, "httproutes"):
                return ExposureObservation(api_served=False)
            gw = exp.gateway
            if gw is None:  # parse_spec refuses it; nothing to look up
                return ExposureObservation()
            ref = ObjectRef(HTTP_ROUTE_API_VERSION, "Gateway", gw.namespace or namespace, gw.name)
        else:
            ref = ObjectRef(INGRESS_API_VERSION, "IngressClass", "", str(exp.ingress_class))
        try:
            found = await self._kube.get(ref)
        except ApiError as exc:
            if exc.status != 403:
                raise
            log.warning("%s %s not readable (RBAC): %s", ref.kind, ref.name, exc)
            return ExposureObservation()
        return ExposureObservation(target_found=found is not None)

    async def _topics(
        self, namespace: str, name: str, spec: ChannelSpec, desired: DesiredState
    ) -> _TopicsResult:
        claims = resolve_claims(self._claims(spec))
        try:
            connection = await self._connection(namespace, spec)
        except ApiError as exc:
            err = _api_error(exc)
            again = (
                err if isinstance(err, RetryableError) else RetryableError(err.reason, err.message)
            )
            return _TopicsResult(Failure(err.reason, err.message), error=again)
        except RetryableError as err:
            return _TopicsResult(Failure(err.reason, err.message), error=err)

        names = [t.name for t in desired.topics]
        actions: tuple[TopicAction, ...] = ()
        failures: dict[str, TopicFailure] = {}
        retry: RetryableError | None = None
        try:
            async with self._kafka(connection) as admin:
                observed = await admin.describe(names)
                plan = plan_topics(
                    desired.topics, observed, claims, channel=ChannelRef(namespace, name)
                )
                actions = plan.actions
                for action in actions:
                    operation, code = await _execute(admin, action)
                    cls = classify_kafka_error(code, operation)
                    if cls.outcome is KafkaOutcome.SUCCESS:
                        continue
                    self._metrics.kafka_errors.labels(str(cls.reason)).inc()
                    failures[action.name] = TopicFailure(cls.reason, f"{operation}: {cls.name}")
                    if cls.outcome is KafkaOutcome.RETRY and retry is None:
                        retry = RetryableError(
                            cls.reason, f"{action.name}: {operation}: {cls.name}", cls.delay
                        )
        except Exception as exc:
            cls = _classify(exc, "describe")
            self._metrics.kafka_errors.labels(str(cls.reason)).inc()
            message = f"Kafka at {spec.kafka.bootstrap_servers}: {cls.name}: {exc}"
            return _TopicsResult(
                Failure(cls.reason, message),
                error=RetryableError(cls.reason, message, cls.delay),
            )
        return _TopicsResult(plan.settled(failures), actions, failures, retry)

    def _claims(self, spec: ChannelSpec) -> list[ChannelClaim]:
        """Every watched channel claiming topics on the same Kafka cluster (this one too)."""
        return self._claim_index.claims(kafka_cluster_key(spec.kafka.bootstrap_servers))

    async def _connection(self, namespace: str, spec: ChannelSpec) -> KafkaConnection:
        """The admin connection, with the Secrets the spec names read from the API."""
        sec = spec.kafka.security
        values: dict[str, str | None] = {}
        if sec.credentials is not None:
            data = await self._secret(namespace, sec.credentials.name, "credentialsSecret")
            values["username"] = _key(data, sec.credentials.username_key, sec.credentials.name)
            values["password"] = _key(data, sec.credentials.password_key, sec.credentials.name)
        if sec.tls is not None:
            data = await self._secret(namespace, sec.tls.name, "tlsSecret")
            values["ca_pem"] = _key(data, sec.tls.ca_key, sec.tls.name)
            if sec.tls.cert_key is not None and sec.tls.key_key is not None:
                values["cert_pem"] = _key(data, sec.tls.cert_key, sec.tls.name)
                values["key_pem"] = _key(data, sec.tls.key_key, sec.tls.name)
        return KafkaConnection(
            bootstrap_servers=spec.kafka.bootstrap_servers,
            client_id=f"clarion-operator-{namespace}",
            security_protocol=sec.protocol,
            sasl_mechanism=sec.sasl_mechanism,
            **values,
        )

    async def _secret(self, namespace: str, name: str, field_name: str) -> dict[str, bytes]:
        data = await self._kube.read_secret(namespace, name)
        if data is None:
            raise RetryableError(
                Reason.KAFKA_ERROR,
                f"Secret {namespace}/{name} (spec.kafka.security.{field_name}) not found",
                SHORT_RETRY * 3,
            )
        return data

    # --- delete ----------------------------------------------------------------------

    async def delete(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        # Deletion supersedes a pending create/update: kopf does not run it again.
        self._unsettled.discard(uid)
        started = time.monotonic()
        async with self._lock(uid):
            outcome = await self._delete(body)
        self._metrics.duration.labels("delete").observe(time.monotonic() - started)
        self._metrics.reconciles.labels(_result(outcome), "delete").inc()
        if outcome.error is None:
            self._metrics.set_topics(uid, None)
            self._locks.pop(uid, None)
        return outcome

    async def _delete(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        name, namespace = str(meta["name"]), str(meta["namespace"])
        generation = int(meta.get("generation") or 0)
        old: Mapping[str, Any] = dict(body.get("status") or {})
        if is_force_delete(meta.get("annotations")):
            message = "force-delete annotation set: finalizer released, Kafka topics untouched"
            return Outcome(old, None, (Event("Warning", Reason.DELETION_FORCED, message),))
        try:
            spec = parse_spec(body.get("spec") or {}, name=name)
        except SpecError as err:
            # Nothing trustworthy to delete; the topics (if any) are left as they are.
            return Outcome(old, None, logs=(f"invalid spec, no topic deleted: {err.message}",))
        desired = render(ChannelContext(name, namespace, str(meta["uid"]), generation, spec))
        try:
            claims = resolve_claims(self._claims(spec))
            doomed = plan_deletion(desired.topics, claims, channel=ChannelRef(namespace, name))
            if not doomed:
                return Outcome(old, None)
            connection = await self._connection(namespace, spec)
            async with self._kafka(connection) as admin:
                codes = await admin.delete(doomed)
        except Exception as exc:
            if isinstance(exc, ApiError):
                reason, delay, why = Reason.KUBERNETES_API_ERROR, SHORT_RETRY, str(exc)
            elif isinstance(exc, RetryableError):
                reason, delay, why = exc.reason, exc.delay, exc.message
            else:
                cls = _classify(exc, "delete")
                self._metrics.kafka_errors.labels(str(cls.reason)).inc()
                reason, delay, why = cls.reason, cls.delay, f"{cls.name}: {exc}"
            return self._blocked(old, generation, reason, why, delay)
        events: list[Event] = []
        failed: list[str] = []
        for topic in doomed:
            cls = classify_kafka_error(codes.get(topic, 0), "delete")
            if cls.outcome is KafkaOutcome.SUCCESS:
                events.append(Event("Normal", Reason.TOPIC_DELETED, f"deleted topic {topic}"))
            else:
                self._metrics.kafka_errors.labels(str(cls.reason)).inc()
                failed.append(f"{topic}: {cls.name}")
        if failed:
            outcome = self._blocked(
                old, generation, Reason.KAFKA_ERROR, "; ".join(failed), SHORT_RETRY
            )
            return Outcome(old, outcome.status, (*events, *outcome.events), outcome.error)
        return Outcome(old, None, tuple(events))

    def _blocked(
        self, old: Mapping[str, Any], generation: int, reason: Reason, why: str, delay: float
    ) -> Outcome:
        message = (
            f"topics with deletionPolicy Delete not deleted yet ({reason}: {why}); retrying. "
            "To release the resource without touching Kafka, annotate it "
            "realtime.clarion.dev/force-delete=true"
        )
        status = blocked_status(
            old,
            reason=Reason.DELETION_BLOCKED,
            message=message,
            generation=generation,
            now=self._clock(),
        )
        error = RetryableError(Reason.DELETION_BLOCKED, message, min(delay, DELETION_RETRY_MAX))
        return Outcome(old, status, tuple(transition_events(old, status)), error)


async def _execute(admin: KafkaAdmin, action: TopicAction) -> tuple[KafkaOperation, int]:
    if isinstance(action, CreateTopic):
        return "create", await admin.create(action)
    if isinstance(action, GrowPartitions):
        return "create_partitions", await admin.grow(action)
    assert isinstance(action, AlterConfigs)
    return "alter_configs", await admin.alter(action)


def _persistence_kept(applied: Mapping[str, Any]) -> bool:
    """Whether the API server kept the HTTPRoute's sessionPersistence (the standard-channel
    CRDs prune it: the experimental channel is needed)."""
    rules = (applied.get("spec") or {}).get("rules") or [{}]
    return all("sessionPersistence" in r for r in rules)


def _key(data: Mapping[str, bytes], key: str, secret: str) -> str:
    if key not in data:
        raise RetryableError(
            Reason.KAFKA_ERROR, f"Secret {secret} has no key {key!r}", SHORT_RETRY * 3
        )
    return data[key].decode("utf-8")


def _condition_true(status: Mapping[str, Any], type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _settled(outcome: Outcome) -> bool:
    """Whether the handler is done with this outcome (kopf will not run it again)."""
    if isinstance(outcome.error, PermanentError):
        return True
    return outcome.error is None and outcome.workers_ready


def _result(outcome: Outcome) -> str:
    if isinstance(outcome.error, PermanentError):
        return "permanent"
    if outcome.error is not None:
        return "retry"
    return "success" if outcome.workers_ready else "waiting"


def workers_retry_delay(retry: int) -> float:
    """Backoff while waiting for the workers: 2, 4, 8, ... seconds, capped."""
    return float(min(WORKERS_RETRY_MAX, 2.0 * 2 ** min(retry, 10)))
