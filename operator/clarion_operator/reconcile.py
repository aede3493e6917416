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
channel has not settled (still running, or retrying: Kafka down, API errors): that handler
comes back on its own and does the same work, so the timer would only double it, which at
a few hundred channels starting at once is most of the load. A reconcile started by a
change of a Secret the channel names (``trigger="secret"``, ``core.secret_refs``) is never
skipped, and settles the channel for the timers when it succeeds.

The status is written here (merge patch of the ``status`` subresource), under the channel's
lock, and not by kopf after the handler returns: the workers are followed by watching
(:meth:`Reconciler.follow_deployment`, :meth:`Reconciler.follow_pod`, fed by kopf's
watches of the worker Deployments and Pods), and those updates and a reconcile's must land
in the order they were computed, or a late write of a reconcile would undo a newer
"workers ready". So a reconcile no longer waits (polls) for the rollout: it settles, and
the watch sets ``Ready`` within moments of the Deployment reporting it. Events are posted
after the status they describe was written, each with a name of its own chosen once
(``ports.EventPost``), so a POST retried after a lost answer is not stored twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from clarion_operator.core import conditions
from clarion_operator.core.conditions import (
    ChannelStatusBody,
    DeploymentObservation,
    Event,
    Failure,
    StateLine,
    action_events,
    adoption_events,
    blocked_status,
    compute_status,
    first_status,
    follow_health,
    follow_workers,
    monitoring_condition,
    observe_deployment,
    pod_problem,
    state_line,
    transition_events,
)
from clarion_operator.core.crd import API_VERSION, KIND
from clarion_operator.core.errors import (
    SHORT_RETRY,
    TOPIC_ALREADY_EXISTS,
    KafkaErrorClass,
    KafkaOperation,
    KafkaOutcome,
    PermanentError,
    ReconcileError,
    RetryableError,
    classify_api_status,
    classify_kafka_error,
    classify_kafka_exception,
    retry_delay,
)
from clarion_operator.core.exposure import (
    HTTP_ROUTE_API_VERSION,
    INGRESS_API_VERSION,
    ExposureObservation,
    exposure_condition,
)
from clarion_operator.core.health import health_condition, health_of
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
    TopicHealth,
    TopicStatus,
    is_force_delete,
    kafka_cluster_key,
    plan_deletion,
    plan_topics,
    resolve_claims,
)
from clarion_operator.metrics import Metrics
from clarion_operator.ports import (
    ApiError,
    ClaimIndex,
    EventPost,
    KafkaAdmin,
    KafkaAdminFactory,
    KafkaCodeError,
    KafkaConnection,
    KubeApi,
)

log = logging.getLogger(__name__)

Trigger = Literal["handler", "timer", "delete", "secret"]
#: Attempts to post one Event while the API server does not answer (about a minute).
EVENT_ATTEMPTS = 15
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
    #: The channel's state changed since the last line logged for it: log this one.
    line: StateLine | None = None

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
    #: Topics whose create found them already there.
    existed: frozenset[str] = frozenset()
    #: ``TopicsHealthy`` from the describe (None: no topic described).
    health: conditions.Condition | None = None
    #: The effective min.insync.replicas of each topic described.
    min_isr: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _Workers:
    """What the watches last reported of one channel's workers."""

    deployment: DeploymentObservation | None = None
    #: resourceVersion of the Deployment state above: a watch event can be older than
    #: what a reconcile's GET already saw, and must not take the status back in time.
    version: int | None = None
    #: Failing worker pods: pod name -> :func:`~clarion_operator.core.conditions.pod_problem`.
    problems: dict[str, str] = field(default_factory=dict)

    def problem(self) -> str | None:
        return self.problems[min(self.problems)] if self.problems else None

    def observe(self, deployment: Mapping[str, Any] | None, *, gone: bool = False) -> bool:
        """Take a newer state of the Deployment; False (ignored) when it is older."""
        version = _resource_version(deployment)
        if version is not None and self.version is not None and version < self.version:
            return False
        self.version = version if version is not None else self.version
        self.deployment = None if gone else observe_deployment(deployment)
        return True


def _resource_version(body: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number (etcd's revision), None when it is not one."""
    raw = ((body or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except ValueError:
        return None


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
        # The create/update handler, the drift timer and the workers' watches may fire
        # together for one channel; serialising them (by namespace/name) keeps status
        # writes and topic actions in the order they were decided.
        self._locks: dict[str, asyncio.Lock] = {}
        # Channels (uid) whose create/update/resume handler has not settled: it is
        # running or kopf will run it again (a retryable error).
        self._unsettled: set[str] = set()
        # The last status written per channel, with its uid: newer than the body of a
        # kopf callback, which lags our own writes by a watch event.
        self._written: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._workers: dict[str, _Workers] = {}
        # The key of the last state line logged per channel.
        self._logged: dict[str, tuple[str, str]] = {}
        # Reconciles done per channel: a health probe that described the topics while a
        # reconcile ran writes nothing (the reconcile's describe is as new or newer).
        self._rounds: dict[str, int] = {}
        # Each channel's topics' effective min.insync.replicas, as its last reconcile read
        # them: the health probe then asks Kafka for the metadata only, not the configs.
        self._min_isr: dict[str, dict[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _seen(self, key: str) -> _Workers:
        return self._workers.setdefault(key, _Workers())

    def _old(self, key: str, uid: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        written = self._written.get(key)
        if written is not None and written[0] == uid:
            return written[1]
        return dict(body.get("status") or {})

    async def probe_api(self) -> str | None:
        """None when the API server is ready, else what is wrong (``KubeApi.probe``)."""
        return await self._kube.probe()

    async def close(self) -> None:
        """Stop posting Events still being retried (the operator is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        close = getattr(self._kafka, "close", None)
        if close is not None:
            await close()

    # --- ensure ----------------------------------------------------------------------

    async def ensure(self, body: Mapping[str, Any], trigger: Trigger = "handler") -> Outcome:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        key = _key(body)
        if trigger == "timer" and uid in self._unsettled:
            return Outcome(dict(body.get("status") or {}), None, skipped=True)
        if trigger == "handler":
            self._unsettled.add(uid)
        started = time.monotonic()
        async with self._lock(key):
            if trigger == "handler":
                await self._first_status(key, uid, body)
            outcome = await self._publish(key, uid, await self._ensure(body))
            self._rounds[key] = self._rounds.get(key, 0) + 1
        self._post_events(_channel_ref(body), uid, outcome.events)
        # A Secret's change (trigger "secret") that settles the channel lets the timers
        # run again: the handler's own retry may still be minutes away.
        if trigger in ("handler", "secret") and _settled(outcome):
            self._unsettled.discard(uid)
        self._metrics.duration.labels(trigger).observe(time.monotonic() - started)
        self._metrics.reconciles.labels(_result(outcome), trigger).inc()
        if outcome.topics_owned is not None:
            self._metrics.set_topics(uid, outcome.topics_owned)
        return outcome

    async def acknowledge(self, body: Mapping[str, Any]) -> None:
        """The first status of a channel on its first watch event, before kopf has added
        its finalizer and come back to run the reconcile: with 200 channels applied at once
        that second pass came 12 s later at the median, behind the API server's queue.
        Nothing when the channel has a status already; a failed write is the reconcile's."""
        meta = body.get("metadata") or {}
        key, uid = _key(body), str(meta.get("uid", ""))
        async with self._lock(key):
            await self._first_status(key, uid, body)

    async def _first_status(self, key: str, uid: str, body: Mapping[str, Any]) -> None:
        """A channel without a status gets ``Ready=False Reconciling`` at once, before any
        Kafka call (:func:`~clarion_operator.core.conditions.first_status`): with 200
        channels starting together the topics took minutes, and nothing said the operator
        had seen the channel. No Event (the reconcile's transition says where it went) and
        no log line (its state line does); a write that fails is left to the reconcile."""
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        old = self._old(key, uid, body)
        status = first_status(old, generation=int(meta.get("generation") or 0), now=self._clock())
        if status is not None:
            await self._publish(key, uid, Outcome(old, status))

    async def _ensure(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        name, namespace = str(meta["name"]), str(meta["namespace"])
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 0)
        key = _key(body)
        old = self._old(key, uid, body)
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
            # The API server's own failure shows in the status and the state line.
            log.debug("API discovery of ServiceMonitor failed: %s", exc)
        settings = OperatorSettings(
            field_manager=self._field_manager, monitoring_api_available=monitoring
        )
        desired = render(ChannelContext(name, namespace, uid, generation, spec, settings))

        topics = await self._topics(namespace, name, spec, desired)
        if topics.min_isr:
            self._min_isr[key] = dict(topics.min_isr)

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
            seen_workers = self._seen(key)
            seen_workers.observe(deployment)  # or the newer state a watch event brought
            workers = seen_workers.deployment
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
            problem=self._seen(key).problem(),
            exposed=exposure_condition(spec.exposure, seen, namespace),
            monitored=monitoring_condition(spec.monitoring.service_monitor_enabled, monitoring),
            healthy=topics.health,
        )
        events = [
            *action_events(topics.actions, topics.failures, topics.existed),
            *adoption_events(old, topics.statuses, topics.actions),
            *transition_events(old, status),
        ]
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
        existed: set[str] = set()
        retry: RetryableError | None = None
        try:
            async with self._kafka(connection) as admin:
                observed = await admin.describe(names)
                health = health_of(observed)
                plan = plan_topics(
                    desired.topics, observed, claims, channel=ChannelRef(namespace, name)
                )
                actions = plan.actions
                for action in actions:
                    operation, code = await _execute(admin, action)
                    cls = classify_kafka_error(code, operation)
                    if cls.outcome is KafkaOutcome.SUCCESS:
                        if operation == "create" and code == TOPIC_ALREADY_EXISTS:
                            existed.add(action.name)
                        continue
                    self._metrics.kafka_errors.labels(str(cls.reason)).inc()
                    failures[action.name] = TopicFailure(cls.reason, f"{operation}: {cls.name}")
                    if cls.outcome is KafkaOutcome.RETRY and retry is None:
                        retry = RetryableError(
                            cls.reason, f"{action.name}: {operation}: {cls.name}", cls.delay
                        )
                settled = plan.settled(failures)
                if any(isinstance(a, CreateTopic) for a in actions) and not failures:
                    # A topic created with the broker's default replication factor: read
                    # it back, so the first status is complete (not only the next drift
                    # check's), and a resumed operator finds nothing to add.
                    observed = await admin.describe(names)
                    health = health_of(observed)
                    reread = plan_topics(
                        desired.topics, observed, claims, channel=ChannelRef(namespace, name)
                    )
                    if not reread.actions:
                        settled = reread.statuses
        except Exception as exc:
            cls = _classify(exc, "describe")
            self._metrics.kafka_errors.labels(str(cls.reason)).inc()
            message = f"Kafka at {spec.kafka.bootstrap_servers}: {cls.name}: {exc}"
            return _TopicsResult(
                Failure(cls.reason, message),
                error=RetryableError(cls.reason, message, cls.delay),
            )
        min_isr = {
            n: t.health.min_insync_replicas
            for n, t in observed.items()
            if t is not None and t.health is not None
        }
        return _TopicsResult(settled, actions, failures, retry, frozenset(existed), health, min_isr)

    def _claims(self, spec: ChannelSpec) -> list[ChannelClaim]:
        """Every watched channel claiming topics on the same Kafka cluster (this one too)."""
        return self._claim_index.claims(kafka_cluster_key(spec.kafka.bootstrap_servers))

    async def _connection(self, namespace: str, spec: ChannelSpec) -> KafkaConnection:
        """The admin connection, with the Secrets the spec names read from the API."""
        sec = spec.kafka.security
        values: dict[str, str | None] = {}
        if sec.credentials is not None:
            data = await self._secret(namespace, sec.credentials.name, "credentialsSecret")
            values["username"] = _secret_key(
                data, sec.credentials.username_key, sec.credentials.name
            )
            values["password"] = _secret_key(
                data, sec.credentials.password_key, sec.credentials.name
            )
        if sec.tls is not None:
            data = await self._secret(namespace, sec.tls.name, "tlsSecret")
            values["ca_pem"] = _secret_key(data, sec.tls.ca_key, sec.tls.name)
            if sec.tls.cert_key is not None and sec.tls.key_key is not None:
                values["cert_pem"] = _secret_key(data, sec.tls.cert_key, sec.tls.name)
                values["key_pem"] = _secret_key(data, sec.tls.key_key, sec.tls.name)
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

    # --- status, Events, log lines --------------------------------------------------------

    async def _publish_followed(
        self, key: str, uid: str, old: Mapping[str, Any], status: ChannelStatusBody
    ) -> Outcome:
        """Publish a status that followed a watch or the health probe (no reconcile): its
        transitions' Events, and whether the workers are ready now."""
        return await self._publish(
            key,
            uid,
            Outcome(
                old,
                status,
                tuple(transition_events(old, status)),
                workers_ready=_condition_true(status, conditions.WORKERS_READY),
            ),
        )

    async def _publish(self, key: str, uid: str, outcome: Outcome) -> Outcome:
        """Write the outcome's status (if it changed) and pick its state line; under the
        channel's lock. A failed write drops the Events (they describe a change that did
        not happen; the retry computes them again) and makes the outcome retryable."""
        status = outcome.status
        if status is None:
            return outcome
        patch = outcome.status_patch
        if patch is not None:
            ref = ObjectRef(API_VERSION, KIND, *key.split("/", 1))
            try:
                await self._kube.patch_status(ref, patch)
            except ApiError as exc:
                err = _api_error(exc)
                kept = outcome.error if isinstance(outcome.error, RetryableError) else None
                outcome = replace(outcome, events=(), error=kept or err)
            else:
                self._written[key] = (uid, status)
        line = state_line(status)
        if line is not None and self._logged.get(key) != line.key:
            self._logged[key] = line.key
            outcome = replace(outcome, line=line)
        elif outcome.line is None and patch is not None:
            outcome = replace(outcome, line=_health_line(outcome.old_status, status))
        return outcome

    def _post_events(self, channel: ObjectRef, uid: str, events: tuple[Event, ...]) -> None:
        if not events:
            return
        task = asyncio.get_running_loop().create_task(self._post(channel, uid, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, channel: ObjectRef, uid: str, events: tuple[Event, ...]) -> None:
        for event in events:
            post = EventPost(
                f"{channel.name}.{uuid.uuid4().hex[:16]}",
                channel,
                uid,
                event.type,
                event.reason,
                event.message,
            )
            for attempt in range(EVENT_ATTEMPTS):
                try:
                    await self._kube.post_event(post)
                    break
                except ApiError as exc:
                    err = _api_error(exc)
                    if not isinstance(err, RetryableError) or attempt + 1 == EVENT_ATTEMPTS:
                        log.warning(
                            "Event %s %s of %s/%s not posted: %s",
                            event.type,
                            event.reason,
                            channel.namespace,
                            channel.name,
                            exc,
                        )
                        break
                    await asyncio.sleep(retry_delay(err, attempt))

    # --- topic health between reconciles ---------------------------------------------

    async def probe_health(self, body: Mapping[str, Any]) -> Outcome | None:
        """Describe the channel's topics and update ``TopicsHealthy`` (and ``Ready``, for
        offline partitions) when their leaders or in-sync replicas changed: a lighter
        check than a reconcile, run more often, so a broker lost shows within moments.

        Nothing happens while the channel's create/update handler has not settled, before
        a reconcile wrote a status, or when Kafka does not answer (the reconciles report
        that); None then, and when nothing changed.

        Kafka is asked outside the channel's lock, so a reconcile never waits for a probe's
        describe; a probe that described while a reconcile ran writes nothing (the
        reconcile described as late or later). Once a reconcile read the topics' configs, the
        probe asks for the metadata only (``KafkaAdmin.partitions``) with the
        ``min.insync.replicas`` it read, and through the shared client's coalescing
        (``kafka_batch.py``): the probes of many channels that fall together are one
        Metadata request.
        """
        meta = body.get("metadata") or {}
        uid, key = str(meta.get("uid", "")), _key(body)
        if uid in self._unsettled or meta.get("deletionTimestamp"):
            return None
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        try:
            spec = parse_spec(body.get("spec") or {}, name=name)
        except SpecError:
            return None
        rounds = self._rounds.get(key, 0)
        names = [t.name for t in spec.topics]
        min_isr = self._min_isr.get(key, {})
        try:
            connection = await self._connection(namespace, spec)
            async with self._kafka(connection) as admin:
                if all(n in min_isr for n in names):
                    # The configs change only through a reconcile (or by hand: the drift
                    # check reads them): the metadata says what the probe is for.
                    found = await admin.partitions(names)
                    health = health_condition(
                        [TopicHealth(n, parts, min_isr[n]) for n, parts in found.items() if parts]
                    )
                else:
                    health = health_of(await admin.describe(names))
        except Exception as exc:
            log.debug("health probe of %s: Kafka not asked: %s", key, exc)
            return None
        if health is None:
            return None
        async with self._lock(key):
            if uid in self._unsettled or self._rounds.get(key, 0) != rounds:
                return None  # a reconcile ran meanwhile: its describe is the newer one
            old = self._old(key, uid, body)
            status = follow_health(old, healthy=health, now=self._clock())
            if status is None:
                return None
            outcome = await self._publish_followed(key, uid, old, status)
        self._post_events(_channel_ref(body), uid, outcome.events)
        return outcome

    # --- following the workers ---------------------------------------------------------

    async def follow_deployment(
        self, namespace: str, name: str, deployment: Mapping[str, Any], *, gone: bool = False
    ) -> Outcome | None:
        """A watch event of channel ``name``'s worker Deployment (``gone``: deleted).
        An event older than what a reconcile already read is ignored."""
        key = f"{namespace}/{name}"
        if not self._seen(key).observe(deployment, gone=gone):
            return None
        return await self._follow(key)

    async def follow_pod(
        self, namespace: str, name: str, pod_name: str, pod: Mapping[str, Any] | None
    ) -> Outcome | None:
        """A watch event of one of channel ``name``'s worker pods (None: it was deleted).
        Only a change of what is wrong with the pod touches the status."""
        key = f"{namespace}/{name}"
        seen = self._seen(key)
        problem = pod_problem(pod)
        if seen.problems.get(pod_name) == problem:
            return None
        if problem is None:
            seen.problems.pop(pod_name, None)
        else:
            seen.problems[pod_name] = problem
        return await self._follow(key)

    async def _follow(self, key: str) -> Outcome | None:
        namespace, name = key.split("/", 1)
        ref = ObjectRef(API_VERSION, KIND, namespace, name)
        async with self._lock(key):
            written = self._written.get(key)
            if written is None:
                try:
                    body = await self._kube.get(ref)
                except ApiError as exc:
                    log.debug("reading %s for its workers failed: %s", key, exc)
                    return None
                meta = (body or {}).get("metadata") or {}
                if body is None:
                    self._workers.pop(key, None)  # the channel is gone: forget its workers
                    return None
                if meta.get("deletionTimestamp"):
                    return None
                uid = str(meta.get("uid", ""))
                old: Mapping[str, Any] = dict(body.get("status") or {})
            else:
                uid, old = written
            seen = self._seen(key)
            status = follow_workers(
                old, workers=seen.deployment, problem=seen.problem(), now=self._clock()
            )
            if status is None:
                return None
            outcome = await self._publish_followed(key, uid, old, status)
        self._post_events(ref, uid, outcome.events)
        return outcome

    # --- delete ----------------------------------------------------------------------

    async def delete(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        key = _key(body)
        # Deletion supersedes a pending create/update: kopf does not run it again.
        self._unsettled.discard(uid)
        started = time.monotonic()
        async with self._lock(key):
            outcome = await self._publish(key, uid, await self._delete(body))
        self._post_events(_channel_ref(body), uid, outcome.events)
        self._metrics.duration.labels("delete").observe(time.monotonic() - started)
        self._metrics.reconciles.labels(_result(outcome), "delete").inc()
        if outcome.error is None:
            self._metrics.set_topics(uid, None)
            memories = (self._locks, self._written, self._workers, self._logged)
            for memory in (*memories, self._rounds, self._min_isr):
                memory.pop(key, None)
        return outcome

    async def _delete(self, body: Mapping[str, Any]) -> Outcome:
        meta = body.get("metadata") or {}
        name, namespace = str(meta["name"]), str(meta["namespace"])
        generation = int(meta.get("generation") or 0)
        old = self._old(_key(body), str(meta.get("uid", "")), body)
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


def _secret_key(data: Mapping[str, bytes], key: str, secret: str) -> str:
    if key not in data:
        raise RetryableError(
            Reason.KAFKA_ERROR, f"Secret {secret} has no key {key!r}", SHORT_RETRY * 3
        )
    return data[key].decode("utf-8")


def _persistence_kept(applied: Mapping[str, Any]) -> bool:
    """Whether the API server kept the HTTPRoute's sessionPersistence (the standard-channel
    CRDs prune it: the experimental channel is needed)."""
    rules = (applied.get("spec") or {}).get("rules") or [{}]
    return all("sessionPersistence" in r for r in rules)


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _channel_ref(body: Mapping[str, Any]) -> ObjectRef:
    meta = body.get("metadata") or {}
    return ObjectRef(API_VERSION, KIND, str(meta.get("namespace")), str(meta.get("name")))


def _health_line(old: Mapping[str, Any], new: Mapping[str, Any]) -> StateLine | None:
    """A log line when ``TopicsHealthy`` changed its status or reason (one whose Ready
    changed with it is logged by that line instead)."""

    def of(status: Mapping[str, Any]) -> Mapping[str, Any]:
        found = [
            c for c in status.get("conditions") or [] if c.get("type") == conditions.TOPICS_HEALTHY
        ]
        return found[0] if found else {}

    before, after = of(old), of(new)
    key = (str(after.get("status")), str(after.get("reason")))
    if not after or (str(before.get("status")), str(before.get("reason"))) == key:
        return None
    level: Literal["info", "warning"] = "info" if key[0] == "True" else "warning"
    return StateLine(level, key, f"TopicsHealthy={key[0]} {key[1]}: {after.get('message')}")


def _condition_true(status: Mapping[str, Any], type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _settled(outcome: Outcome) -> bool:
    """Whether the handler is done with this outcome (kopf will not run it again): the
    workers rolling out are followed by the watches, not by running the handler again."""
    return not isinstance(outcome.error, RetryableError)


def _result(outcome: Outcome) -> str:
    if isinstance(outcome.error, PermanentError):
        return "permanent"
    if outcome.error is not None:
        return "retry"
    return "success" if outcome.workers_ready else "waiting"
