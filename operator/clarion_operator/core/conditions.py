"""Status and conditions of a RealtimeChannel, in Kubernetes API conventions.

``TopicsHealthy`` (``core/health.py``: under-replicated, below min.insync.replicas or
offline partitions) sits beside ``Ready`` like ``Exposed`` and ``Monitored``; only
offline partitions (no leader: nothing delivered from them) make ``Ready`` False.

Three conditions: ``TopicsReady`` (Kafka matches the spec), ``WorkersReady`` (the worker
Deployment is rolled out and ready, or why not: a worker pod failing says so with the
worker's own exit message) and ``Ready`` (both, and the spec is valid). Each has
``type``, ``status`` ("True"/"False"/"Unknown"), a CamelCase ``reason``, ``message``,
``lastTransitionTime`` and ``observedGeneration``.

``lastTransitionTime`` moves only when ``status`` moves, never when only the reason or
message changes, and ``now`` is an argument: the same inputs give the same status, so
:func:`status_changed` can tell the edge to skip a no-op status write (and the write does
not retrigger kopf's handlers for nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict

from clarion_operator.core import crd
from clarion_operator.core.reasons import Reason
from clarion_operator.core.topics import (
    AlterConfigs,
    CreateTopic,
    GrowPartitions,
    TopicAction,
    TopicFailure,
    TopicState,
    TopicStatus,
)

ConditionStatus = Literal["True", "False", "Unknown"]
READY: Final = "Ready"
TOPICS_READY: Final = "TopicsReady"
WORKERS_READY: Final = "WorkersReady"
#: The channel's HTTPRoute or Ingress and what serves it (only with spec.exposure).
EXPOSED: Final = "Exposed"
#: Whether the ServiceMonitor the spec asks for exists (only with it); never blocks Ready:
#: without it the workers still run, scraped through their prometheus.io annotations.
MONITORED: Final = "Monitored"
#: Leaders and in-sync replicas of the topics' partitions (``core/health.py``).
TOPICS_HEALTHY: Final = "TopicsHealthy"
CONDITION_TYPES: Final = (READY, TOPICS_READY, WORKERS_READY, EXPOSED, MONITORED, TOPICS_HEALTHY)
#: Conditions that are kept as they are between reconciles, and announced by an Event when
#: they turn False.
_SIDE_CONDITIONS: Final = (EXPOSED, MONITORED, TOPICS_HEALTHY)
MAX_MESSAGE: Final = 1024

#: Reasons that mean "in progress", reported as Normal Events rather than Warnings.
_PROGRESS_REASONS: Final = frozenset(
    {
        Reason.RECONCILED,
        Reason.RECONCILING,
        Reason.TOPICS_CREATING,
        Reason.TOPICS_UPDATING,
        Reason.WORKERS_PROGRESSING,
        Reason.WORKERS_READY,
    }
)


class ConditionBody(TypedDict):
    type: str
    status: ConditionStatus
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class TopicStatusBody(TypedDict, total=False):
    name: str
    state: str
    partitions: int
    replicationFactor: int
    configInSync: bool
    reason: str
    message: str


class WorkersStatusBody(TypedDict):
    desired: int
    ready: int
    updated: int
    available: int


class ChannelStatusBody(TypedDict, total=False):
    observedGeneration: int
    conditions: list[ConditionBody]
    topics: list[TopicStatusBody]
    topicsSummary: str
    workers: WorkersStatusBody
    workersSummary: str
    endpoint: str
    replicas: int
    selector: str
    configHash: str


#: The status keys this module owns; anything else (kopf's progress) is left alone.
MANAGED_KEYS: Final = frozenset(ChannelStatusBody.__annotations__)


@dataclass(frozen=True)
class Failure:
    """A step failed before its outcome could be observed (Kafka unreachable, ...)."""

    reason: Reason
    message: str
    status: ConditionStatus = "False"


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    #: A :class:`Reason` (a str); a condition read back from a status may carry any text.
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentObservation:
    """What the worker Deployment reports (see :func:`observe_deployment`)."""

    desired: int
    replicas: int
    ready: int
    updated: int
    available: int
    #: status.observedGeneration has caught up with metadata.generation.
    generation_observed: bool = True
    progress_deadline_exceeded: bool = False
    #: A rollout of this Deployment completed once (Progressing: NewReplicaSetAvailable):
    #: no available worker then means workers were lost, not that they are starting.
    rolled_out_before: bool = False


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _floor(meta: Mapping[str, Any]) -> int:
    text = (meta.get("annotations") or {}).get(crd.MIN_REPLICAS_ANNOTATION)
    return int(text) if isinstance(text, str) and text.isdigit() else 0


def observe_deployment(raw: Mapping[str, Any] | None) -> DeploymentObservation | None:
    """Read a Deployment body as returned by the API server (None: it does not exist)."""
    if raw is None:
        return None
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    meta = raw.get("metadata") or {}
    # An absent spec.replicas means the API server's default of 1. An autoscaled channel's
    # Deployment names the HPA's floor: below it, workers are still missing.
    desired = max(_int(spec.get("replicas", 1)), _floor(meta))
    conditions = status.get("conditions") or []
    progressing = [
        c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Progressing"
    ]
    deadline = any(c.get("reason") == "ProgressDeadlineExceeded" for c in progressing)
    completed = any(c.get("reason") == "NewReplicaSetAvailable" for c in progressing)
    return DeploymentObservation(
        desired=desired,
        replicas=_int(status.get("replicas")),
        ready=_int(status.get("readyReplicas")),
        updated=_int(status.get("updatedReplicas")),
        available=_int(status.get("availableReplicas")),
        generation_observed=_int(status.get("observedGeneration")) >= _int(meta.get("generation")),
        progress_deadline_exceeded=deadline,
        rolled_out_before=completed,
    )


#: Waiting reasons of a container that will not start by itself (a crash loop, a bad
#: image, a missing ConfigMap or Secret key, a refused container config).
_FAILING_WAIT_REASONS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
        "ErrImageNeverPull",
    }
)


def pod_problem(pod: Mapping[str, Any] | None) -> str | None:
    """Why a worker pod fails, in the worker's own words when it left any; None if it does not.

    The worker's exit message reaches ``lastState.terminated.message`` (the pod template's
    ``terminationMessagePolicy: FallbackToLogsOnError`` puts the last log lines there); a
    container still starting normally (ContainerCreating, probes not yet passed) is not a
    problem, one that crashed stays a problem until it is ready again.
    """
    if pod is None:
        return None
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    name = str(meta.get("name", "?"))
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for cs in statuses:
        if not isinstance(cs, Mapping) or cs.get("ready"):
            continue
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
        exit_code = _int(terminated.get("exitCode"))
        wait_reason = str(waiting.get("reason") or "")
        # A container running again after a crash but not ready since is still failing:
        # clearing the problem at each restart would flap the condition with the loop.
        if wait_reason not in _FAILING_WAIT_REASONS and not (terminated and exit_code != 0):
            continue
        what = [wait_reason] if wait_reason else []
        if terminated:
            what.append(f"exit code {exit_code} ({terminated.get('reason') or 'Error'})")
        restarts = _int(cs.get("restartCount"))
        if restarts:
            what.append(f"{restarts} restart(s)")
        said = str(terminated.get("message") or waiting.get("message") or "").strip()
        head = f"pod {name}, container {cs.get('name')}: {', '.join(what)}"
        return _clip(f"{head}: {said}" if said else head)
    if status.get("phase") == "Failed":
        said = str(status.get("message") or status.get("reason") or "failed")
        return _clip(f"pod {name}: {said}")
    return None


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


# Topic states in order of what the user must look at first.
_TOPIC_PRIORITY: Final = (
    TopicState.RESOURCE_CONFLICT,
    TopicState.NOT_SUPPORTED,
    TopicState.ERROR,
    TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
    TopicState.CREATING,
    TopicState.UPDATING,
)
_STATE_REASON: Final = {
    TopicState.RESOURCE_CONFLICT: Reason.RESOURCE_CONFLICT,
    TopicState.NOT_SUPPORTED: Reason.NOT_SUPPORTED,
    TopicState.ERROR: Reason.KAFKA_ERROR,
    TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED: Reason.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
    TopicState.CREATING: Reason.TOPICS_CREATING,
    TopicState.UPDATING: Reason.TOPICS_UPDATING,
}


def topics_condition(topics: Sequence[TopicStatus] | Failure) -> Condition:
    if isinstance(topics, Failure):
        return Condition(TOPICS_READY, topics.status, topics.reason, _clip(topics.message))
    for state in _TOPIC_PRIORITY:
        hit = [t for t in topics if t.state is state]
        if hit:
            # An Error topic carries the classified reason (InvalidTopicConfig, ...).
            reason = hit[0].reason if state is TopicState.ERROR and hit[0].reason else None
            message = "; ".join(t.message or f"{t.name}: {t.state}" for t in hit)
            return Condition(TOPICS_READY, "False", reason or _STATE_REASON[state], _clip(message))
    return Condition(TOPICS_READY, "True", Reason.RECONCILED, f"{len(topics)} topic(s) in sync")


def workers_condition(
    workers: DeploymentObservation | Failure | None,
    previous: Mapping[str, Any] | None = None,
    problem: str | None = None,
) -> Condition:
    """WorkersReady from the Deployment; ``previous`` is the last WorkersReady condition,
    ``problem`` a failing worker pod's :func:`pod_problem`.

    Workers not all ready with a pod failing is ``WorkersFailing`` with the pod's message
    (the worker refusing its settings, a crash loop, a bad image). No available worker is
    ``WorkersUnavailable`` (a Warning) only when workers were ready before (the previous
    condition, or a completed rollout of the Deployment) or the rollout hit its progress
    deadline; while a new channel's first Pods start it is ``WorkersProgressing``, which
    is normal, not a fault, whatever failed before (an API error of a first reconcile).
    """
    if isinstance(workers, Failure):
        return Condition(WORKERS_READY, workers.status, workers.reason, _clip(workers.message))
    if workers is None:
        return Condition(
            WORKERS_READY, "Unknown", Reason.WORKERS_PROGRESSING, "worker Deployment not created"
        )
    w = workers
    counts = f"{w.ready}/{w.desired} ready, {w.updated} updated, {w.available} available"
    rolling = (
        not w.generation_observed
        or w.updated < w.desired
        or w.ready < w.desired
        or w.replicas > w.desired
    )
    if rolling and problem is not None:
        return Condition(
            WORKERS_READY, "False", Reason.WORKERS_FAILING, _clip(f"{problem} ({counts})")
        )
    if w.desired > 0 and w.available == 0:
        was_ready = previous is not None and (
            previous.get("status") == "True" or previous.get("reason") == Reason.WORKERS_UNAVAILABLE
        )
        if not (was_ready or w.rolled_out_before or w.progress_deadline_exceeded):
            return Condition(
                WORKERS_READY, "False", Reason.WORKERS_PROGRESSING, f"starting: {counts}"
            )
        return Condition(
            WORKERS_READY, "False", Reason.WORKERS_UNAVAILABLE, f"no worker available ({counts})"
        )
    if rolling:
        stuck = " (rollout stuck: ProgressDeadlineExceeded)" if w.progress_deadline_exceeded else ""
        return Condition(
            WORKERS_READY, "False", Reason.WORKERS_PROGRESSING, f"rolling out: {counts}{stuck}"
        )
    return Condition(WORKERS_READY, "True", Reason.WORKERS_READY, f"{w.ready}/{w.desired} ready")


def ready_condition(
    topics: Condition, workers: Condition, health: Condition | None = None
) -> Condition:
    """Ready from topics and workers. ``Exposed`` stays beside it: a missing IngressClass or
    Gateway leaves in-cluster clients served, and a channel written before ``exposure``
    existed must not turn unready on an upgrade of the operator. ``TopicsHealthy`` too,
    except for offline partitions: with no leader, nothing of theirs is delivered."""
    for part in (topics, workers):
        if part.status == "False":
            return Condition(READY, "False", part.reason, part.message)
    if health is not None and health.reason == Reason.PARTITIONS_OFFLINE:
        return Condition(READY, "False", health.reason, health.message)
    for part in (topics, workers):
        if part.status == "Unknown":
            return Condition(READY, "Unknown", part.reason, part.message)
    return Condition(READY, "True", Reason.RECONCILED, "topics in sync and workers ready")


def monitoring_condition(asked: bool, available: bool) -> Condition | None:
    """``Monitored``: None when the spec asks for no ServiceMonitor."""
    if not asked:
        return None
    if available:
        return Condition(
            MONITORED, "True", Reason.SERVICE_MONITOR_APPLIED, "ServiceMonitor applied"
        )
    return Condition(
        MONITORED,
        "False",
        Reason.SERVICE_MONITOR_UNAVAILABLE,
        "spec.monitoring.serviceMonitor.enabled, but the cluster does not serve "
        "monitoring.coreos.com/v1 ServiceMonitor (install the Prometheus Operator's CRDs); "
        "the worker pods carry prometheus.io/* scrape annotations instead",
    )


def format_time(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serializes."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _previous_conditions(previous: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for c in (previous or {}).get("conditions") or []:
        if isinstance(c, Mapping) and isinstance(c.get("type"), str):
            out[c["type"]] = c
    return out


def _body(
    cond: Condition,
    previous: Mapping[str, Mapping[str, Any]],
    generation: int,
    now: str,
) -> ConditionBody:
    before = previous.get(cond.type)
    moved = before is None or before.get("status") != cond.status
    last = before.get("lastTransitionTime") if before is not None else None
    return {
        "type": cond.type,
        "status": cond.status,
        "reason": str(cond.reason),
        "message": cond.message,
        "lastTransitionTime": now if moved or not isinstance(last, str) else last,
        "observedGeneration": generation,
    }


def _topic_body(t: TopicStatus) -> TopicStatusBody:
    body: TopicStatusBody = {
        "name": t.name,
        "state": str(t.state),
        "configInSync": t.config_in_sync,
    }
    if t.partitions is not None:
        body["partitions"] = t.partitions
    if t.replication_factor is not None:
        body["replicationFactor"] = t.replication_factor
    if not t.ready:
        if t.reason is not None:
            body["reason"] = str(t.reason)
        if t.message is not None:
            body["message"] = _clip(t.message)
    return body


def compute_status(
    previous: Mapping[str, Any] | None,
    *,
    generation: int,
    now: datetime,
    topics: Sequence[TopicStatus] | Failure,
    workers: DeploymentObservation | Failure | None,
    endpoint: str | None = None,
    selector: str | None = None,
    config_hash: str | None = None,
    problem: str | None = None,
    exposed: Condition | None = None,
    monitored: Condition | None = None,
    healthy: Condition | None = None,
) -> ChannelStatusBody:
    """The whole status the operator owns, from this round's observations.

    ``exposed`` is the ``Exposed`` condition (``exposure.exposure_condition``), None when
    the channel has no exposure; ``monitored`` the ``Monitored`` one
    (:func:`monitoring_condition`), which never makes the channel not Ready.

    ``topics`` is :meth:`TopicPlan.settled` (or a :class:`Failure` when Kafka could not be
    asked); ``workers`` is :func:`observe_deployment` of the Deployment; ``problem`` is a
    failing worker pod's :func:`pod_problem`. ``healthy`` is ``TopicsHealthy``
    (``health.health_condition``); None keeps the last one written (Kafka not asked).
    """
    stamp = format_time(now)
    prev = _previous_conditions(previous)
    tc = topics_condition(topics)
    wc = workers_condition(workers, prev.get(WORKERS_READY), problem)
    if healthy is None:
        healthy = _condition_of(prev.get(TOPICS_HEALTHY))
    rc = ready_condition(tc, wc, healthy)
    parts = tuple(c for c in (rc, tc, wc, exposed, monitored, healthy) if c is not None)
    status: ChannelStatusBody = {
        "observedGeneration": generation,
        "conditions": [_body(c, prev, generation, stamp) for c in parts],
    }
    if isinstance(topics, Failure):
        # Kafka was not asked: the last known per-topic state is still the best answer.
        old_topics = (previous or {}).get("topics")
        if isinstance(old_topics, list):
            status["topics"] = old_topics
        old_summary = (previous or {}).get("topicsSummary")
        if isinstance(old_summary, str):
            status["topicsSummary"] = old_summary
    else:
        status["topics"] = [_topic_body(t) for t in topics]
        status["topicsSummary"] = f"{sum(t.ready for t in topics)}/{len(topics)}"
    if isinstance(workers, DeploymentObservation):
        _set_workers(status, workers)
    elif isinstance(workers, Failure):
        # The Deployment was not read: the last known counts are still the best answer.
        for key in ("workers", "workersSummary", "replicas"):
            if key in (previous or {}):
                status[key] = (previous or {})[key]
    if endpoint is not None:
        status["endpoint"] = endpoint
    if selector is not None:
        status["selector"] = selector
    if config_hash is not None:
        status["configHash"] = config_hash
    return status


def _set_workers(status: ChannelStatusBody, workers: DeploymentObservation) -> None:
    status["workers"] = {
        "desired": workers.desired,
        "ready": workers.ready,
        "updated": workers.updated,
        "available": workers.available,
    }
    status["workersSummary"] = f"{workers.ready}/{workers.desired}"
    status["replicas"] = workers.replicas


#: Ready reasons that stop reconciliation: following the workers leaves them in place.
_BLOCKING_REASONS: Final = frozenset({Reason.INVALID_SPEC, Reason.DELETION_BLOCKED})


def follow_workers(
    previous: Mapping[str, Any] | None,
    *,
    workers: DeploymentObservation | None,
    problem: str | None,
    now: datetime,
) -> ChannelStatusBody | None:
    """The status once the workers changed, between two reconciles (a watch event of the
    Deployment or of a worker pod): ``WorkersReady`` and ``Ready`` recomputed from the
    Deployment and the pods, everything else (topics, generation) kept as it was.

    None when there is nothing to follow yet: no status written by a reconcile (it will
    read the Deployment itself).
    """
    if not previous:
        return None
    prev = _previous_conditions(previous)
    topics = prev.get(TOPICS_READY)
    if topics is None:
        return None
    generation = _int(previous.get("observedGeneration"))
    stamp = format_time(now)
    tc = Condition(
        TOPICS_READY,
        _status_of(topics.get("status")),
        str(topics.get("reason") or ""),
        str(topics.get("message") or ""),
    )
    wc = workers_condition(workers, prev.get(WORKERS_READY), problem)
    status = _kept_status(previous)
    rc = ready_condition(tc, wc, _condition_of(prev.get(TOPICS_HEALTHY)))
    bodies: list[Any] = [
        _followed_ready(rc, prev, generation, stamp),
        dict(topics),
        _body(wc, prev, generation, stamp),
    ]
    bodies.extend(dict(prev[t]) for t in _SIDE_CONDITIONS if t in prev)
    status["conditions"] = bodies
    if workers is not None:
        _set_workers(status, workers)
    return status


def follow_health(
    previous: Mapping[str, Any] | None, *, healthy: Condition, now: datetime
) -> ChannelStatusBody | None:
    """The status once a health probe described the topics between two reconciles:
    ``TopicsHealthy`` replaced, ``Ready`` recomputed (offline partitions), everything else
    kept. None when there is nothing to update: no status written by a reconcile yet, or
    nothing changed."""
    if not previous:
        return None
    prev = _previous_conditions(previous)
    topics, workers = prev.get(TOPICS_READY), prev.get(WORKERS_READY)
    if topics is None or workers is None:
        return None
    generation = _int(previous.get("observedGeneration"))
    stamp = format_time(now)
    status = _kept_status(previous)
    rc = ready_condition(_as_condition(topics), _as_condition(workers), healthy)
    bodies: list[Any] = [
        _followed_ready(rc, prev, generation, stamp),
        *(dict(c) for t, c in prev.items() if t not in (READY, TOPICS_HEALTHY)),
        _body(healthy, prev, generation, stamp),
    ]
    status["conditions"] = bodies
    return status if status_changed(previous, status) else None


def _kept_status(previous: Mapping[str, Any]) -> ChannelStatusBody:
    """What a follow between two reconciles keeps: the keys the last reconcile wrote."""
    status: ChannelStatusBody = {}
    for key in MANAGED_KEYS:
        if key in previous:
            status[key] = previous[key]  # type: ignore[literal-required]
    return status


def _followed_ready(
    rc: Condition, prev: Mapping[str, Mapping[str, Any]], generation: int, stamp: str
) -> Mapping[str, Any]:
    """Ready as a follow recomputed it, unless a reason that stops reconciliation holds
    it (then it stays as the reconcile wrote it)."""
    ready = prev.get(READY)
    if ready is not None and ready.get("reason") in _BLOCKING_REASONS:
        return dict(ready)
    return _body(rc, prev, generation, stamp)


def _condition_of(body: Mapping[str, Any] | None) -> Condition | None:
    """A condition read back from a status (None: not there)."""
    return None if body is None else _as_condition(body)


def _as_condition(body: Mapping[str, Any]) -> Condition:
    return Condition(
        str(body.get("type")),
        _status_of(body.get("status")),
        str(body.get("reason") or ""),
        str(body.get("message") or ""),
    )


def _status_of(value: object) -> ConditionStatus:
    if value == "True":
        return "True"
    return "False" if value == "False" else "Unknown"


def first_status(
    previous: Mapping[str, Any] | None, *, generation: int, now: datetime
) -> ChannelStatusBody | None:
    """The status of a channel seen for the first time, written before any Kafka call:
    ``Ready=False`` and ``TopicsReady``/``WorkersReady`` ``Unknown``, all ``Reconciling``.
    At 200 channels starting together the topics took minutes and the status waited for
    them; this says at once that the operator has the channel in hand. None when a status
    is already there (a restarted operator, a spec edit): that one stays until the
    reconcile replaces it, so nothing flaps back to ``Reconciling``."""
    if _previous_conditions(previous):
        return None
    stamp = format_time(now)
    message = "first reconcile in progress: checking the Kafka topics, then the workers"
    parts = (
        Condition(READY, "False", Reason.RECONCILING, message),
        Condition(TOPICS_READY, "Unknown", Reason.RECONCILING, "Kafka not asked yet"),
        Condition(
            WORKERS_READY, "Unknown", Reason.RECONCILING, "worker Deployment not applied yet"
        ),
    )
    return {
        "observedGeneration": generation,
        "conditions": [_body(c, {}, generation, stamp) for c in parts],
    }


def blocked_status(
    previous: Mapping[str, Any] | None,
    *,
    reason: Reason,
    message: str,
    generation: int,
    now: datetime,
) -> ChannelStatusBody:
    """Ready=False for a reason that stops reconciliation (InvalidSpec, DeletionBlocked).

    The other conditions and fields are kept as they were: their observedGeneration then
    shows they describe an older generation.
    """
    stamp = format_time(now)
    prev = _previous_conditions(previous)
    status: ChannelStatusBody = {}
    for key in MANAGED_KEYS:
        if previous is not None and key in previous:
            status[key] = previous[key]  # type: ignore[literal-required]
    ready = _body(Condition(READY, "False", reason, _clip(message)), prev, generation, stamp)
    kept = (TOPICS_READY, WORKERS_READY, *_SIDE_CONDITIONS)
    others = [c for t, c in sorted(prev.items()) if t in kept]
    status["conditions"] = [ready, *others]  # type: ignore[list-item]
    status["observedGeneration"] = generation
    return status


def _normalized(status: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {k: v for k, v in (status or {}).items() if k in MANAGED_KEYS}
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = sorted(
            (dict(c) for c in conditions if isinstance(c, Mapping)),
            key=lambda c: str(c.get("type")),
        )
    return out


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change anything the operator owns."""
    return _normalized(old) != _normalized(new)


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch for ``status``: ``new`` plus explicit nulls for owned keys it dropped."""
    patch: dict[str, Any] = dict(new)
    for key in old or {}:
        if key in MANAGED_KEYS and key not in new:
            patch[key] = None
    return patch


def _event_type(reason: str, status: str) -> Literal["Normal", "Warning"]:
    if status == "True" or reason in _PROGRESS_REASONS:
        return "Normal"
    return "Warning"


def transition_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Event]:
    """Events for what changed: the Ready condition's status or reason, and topics that
    entered a state needing attention."""
    events: list[Event] = []
    before = _previous_conditions(old).get(READY)
    after = _previous_conditions(new).get(READY)
    if after is not None and (
        before is None
        or before.get("status") != after.get("status")
        or before.get("reason") != after.get("reason")
    ):
        reason = str(after.get("reason"))
        events.append(
            Event(_event_type(reason, str(after.get("status"))), reason, str(after.get("message")))
        )
    for side in _SIDE_CONDITIONS:
        before_side = _previous_conditions(old).get(side)
        after_side = _previous_conditions(new).get(side)
        if (
            side == TOPICS_HEALTHY
            and after_side is not None
            and after_side.get("status") == "True"
            and before_side is not None
            and before_side.get("status") == "False"
        ):
            # A recovery of the topics is news as well: their trouble had an Event.
            reason, message = str(after_side.get("reason")), str(after_side.get("message"))
            events.append(Event("Normal", reason, message))
            continue
        if (
            after_side is not None
            and after_side.get("status") == "False"
            and (before_side is None or before_side.get("reason") != after_side.get("reason"))
        ):
            # Said even while Ready carries another reason (workers still starting).
            reason, message = str(after_side.get("reason")), str(after_side.get("message"))
            event = Event("Warning", reason, message)
            if event not in events:
                events.append(event)
    old_topics = {
        t.get("name"): t.get("state")
        for t in (old or {}).get("topics") or []
        if isinstance(t, Mapping)
    }
    for topic in new.get("topics") or []:
        if not isinstance(topic, Mapping):
            continue
        state = topic.get("state")
        if state == old_topics.get(topic.get("name")) or state in (
            TopicState.READY,
            TopicState.CREATING,
            TopicState.UPDATING,
        ):
            continue
        reason = str(topic.get("reason") or state)
        message = str(topic.get("message") or f"topic {topic.get('name')} is {state}")
        event = Event("Warning", reason, message)
        # With one topic in trouble, Ready carries the very same reason and message.
        if event not in events:
            events.append(event)
    return events


def adoption_events(
    previous: Mapping[str, Any] | None,
    topics: Sequence[TopicStatus] | Failure,
    actions: Sequence[TopicAction] = (),
) -> list[Event]:
    """``TopicAdopted`` for each topic this channel now owns that existed before it was
    created here and that no earlier status recorded: created by hand or by another tool,
    or created by this operator just before it crashed and lost the round's Events."""
    if isinstance(topics, Failure):
        return []
    known = {
        t.get("name")
        for t in (previous or {}).get("topics") or []
        if isinstance(t, Mapping)
        and t.get("partitions") is not None
        and t.get("state") not in (TopicState.CREATING, TopicState.ERROR)
    }
    acted = {a.name for a in actions if isinstance(a, CreateTopic)}
    return [
        Event(
            "Normal",
            Reason.TOPIC_ADOPTED,
            f"adopted existing topic {t.name} with {t.partitions} partition(s)",
        )
        for t in topics
        if t.name not in known
        and t.name not in acted
        and t.partitions is not None
        and t.state is not TopicState.RESOURCE_CONFLICT
    ]


def action_events(
    actions: Sequence[TopicAction],
    failures: Mapping[str, TopicFailure] | None = None,
    existed: frozenset[str] = frozenset(),
) -> list[Event]:
    """Events for the topic actions the edge just executed; ``existed`` names the topics
    whose create found them already there (adopted, not created)."""
    failures = failures or {}
    events: list[Event] = []
    for action in actions:
        failure = failures.get(action.name)
        if failure is not None:
            events.append(
                Event("Warning", str(failure.reason), f"{action.name}: {failure.message}")
            )
        elif isinstance(action, CreateTopic) and action.name in existed:
            events.append(
                Event(
                    "Normal",
                    Reason.TOPIC_ADOPTED,
                    f"adopted existing topic {action.name} (it existed when creating it)",
                )
            )
        elif isinstance(action, CreateTopic):
            events.append(
                Event(
                    "Normal",
                    Reason.TOPIC_CREATED,
                    f"created topic {action.name} with {action.partitions} partition(s)",
                )
            )
        elif isinstance(action, GrowPartitions):
            events.append(
                Event(
                    "Normal",
                    Reason.TOPIC_UPDATED,
                    f"grew topic {action.name} to {action.total} partition(s)",
                )
            )
        elif isinstance(action, AlterConfigs):
            keys = ", ".join(sorted(action.configs)) or "none"
            events.append(
                Event(
                    "Normal",
                    Reason.TOPIC_UPDATED,
                    f"set config overrides of topic {action.name} (keys: {keys})",
                )
            )
    return events


@dataclass(frozen=True)
class StateLine:
    """One log line for a change of a channel's state: ``key`` tells changes apart."""

    level: Literal["info", "warning"]
    key: tuple[str, str]
    text: str


def state_line(status: Mapping[str, Any] | None) -> StateLine | None:
    """The line to log when the Ready condition's status or reason changes (the caller
    compares ``key`` with the last one it logged): a fault at WARNING, anything normal or
    in progress at INFO."""
    ready = _previous_conditions(status).get(READY)
    if ready is None:
        return None
    value, reason = str(ready.get("status")), str(ready.get("reason"))
    level: Literal["info", "warning"] = (
        "info" if _event_type(reason, value) == "Normal" else "warning"
    )
    return StateLine(level, (value, reason), f"Ready={value} {reason}: {ready.get('message')}")
