"""kopf handlers: thin adapters from kopf's callbacks to the :class:`Reconciler`.

* create / update / resume share one idempotent function (``ensure``);
* a timer re-runs it every ``drift_interval`` seconds to repair what was changed or
  deleted outside the resource (topic configs, partitions, children). Its first tick
  comes one interval after the channel is seen, and a tick is skipped while ``ensure``
  has not settled for the channel (the reconciler tracks that): kopf's timer options
  cannot say "not while a change handler is pending" (``idle=`` counts from the last
  watch event with an unhandled change, and a handler waiting out a backoff makes no
  event, so the timer would still fire; ``when=`` would stop and respawn the timer). A
  drift check that fails for a reason expected to heal (Kafka or the API server not
  answering) is retried within the same tick with the short backoff, not an interval later;
* a second timer, every ``health_interval`` seconds (10 by default), describes the
  channel's topics only (leaders, in-sync replicas) and updates ``TopicsHealthy``, so a
  broker lost shows on the channel within moments, not one drift interval later; it is
  skipped like the drift check, and is silent when Kafka does not answer;
* two watches follow the workers: every worker Deployment and every worker Pod (selected
  by the labels ``core.render`` puts on them) feeds the reconciler, which sets
  ``WorkersReady``/``Ready`` from them, so ``Ready`` follows the rollout within moments
  and a failing pod (the worker refusing its settings, a crash loop) shows on the channel
  with the pod's own message; ``ensure`` no longer retries only to poll the rollout;
* a watch of Secrets (unless ``--no-watch-secrets``) follows the ones the channels'
  ``spec.kafka.security`` names: a Secret created or changed reconciles, at once, the
  channels of an index from Secret to channels (``core.secret_refs``) and no other, so a
  password fixed in place shows on the channel within moments instead of after the
  refusal's two-minute retry. Secrets not in the index are filtered out before any handler
  runs, and nothing of a Secret but its namespace and name is read or logged;
* the delete handler runs behind kopf's finalizer (``ProcessSettings.finalizer``);
* an index of every watched channel's topic claims (``claims.py``) feeds the reconciler;
* a probe of the API server's ``/readyz`` logs once when it goes away (also when only etcd
  does, under an idle operator that makes no request) and once when it is back.

The reconciler writes the status and posts the Events itself; the handlers log one line
per change of a channel's state (a fault at WARNING, with the retry delay) and map the
core's error to kopf's: ``RetryableError`` to ``kopf.TemporaryError(delay=...)`` with the
backoff of :func:`~clarion_operator.core.errors.retry_delay`, ``PermanentError`` to
``kopf.PermanentError``. The timer never raises: a raised error would only make kopf back
off the drift check itself.

kopf logs every retry attempt at ERROR ("Handler 'ensure' failed temporarily: ...",
"Request attempt #1/4 failed; will retry: ...", "Throttling for 1 seconds due to an
unexpected error" with a traceback): 440 ERROR lines in a 90 s API outage.
:class:`ExpectedRetryLogFilter` takes those lines down to DEBUG (the state lines above
and the API probe already say what happens), a retried request that finally escalates to
WARNING, and the per-event "succeeded" lines of the watches and the timer to DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Final, cast

import kopf

from clarion_operator.claims import INDEX_ID, IndexedClaims, index_entry
from clarion_operator.core import crd
from clarion_operator.core.errors import (
    PermanentError,
    RetryableError,
    follow_up_delay,
    retry_delay,
)
from clarion_operator.core.render import MANAGED_BY, WORKER_APP
from clarion_operator.core.secret_refs import channels_to_reconcile, concerns, index_keys
from clarion_operator.core.topics import ChannelClaim
from clarion_operator.reconcile import Outcome, Reconciler
from clarion_operator.settings import ProcessSettings

log = logging.getLogger(__name__)

#: Labels of every worker Deployment and Pod the operator renders (``core.render``).
WORKER_LABELS: Final = {
    "app.kubernetes.io/name": WORKER_APP,
    "app.kubernetes.io/managed-by": MANAGED_BY,
}
#: The label naming the channel of a worker Pod.
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
#: The kopf index from a Secret (``namespace/name``) to the channels naming it.
SECRET_INDEX_ID: Final = "secret_users"
#: Seconds between two probes of the API server's /readyz.
PROBE_INTERVAL: Final = 2.0
#: kopf's logger of every per-object line (handler outcomes included).
KOPF_OBJECTS_LOGGER: Final = "kopf.objects"
#: kopf's backoff of its own requests: a second apart, so its watches are open again
#: within a second of the API server's return (a channel applied just before an outage is
#: first seen then: with steps of 5 s that alone took up to 5 of the 10 s target), over
#: about two minutes in all, since kopf stops the whole operator when a watch request still
#: fails after the last one (a starting API server answers 503 "not all HTTP paths
#: installed yet" for a while). A request a second per watch is nothing to an API server;
#: kopf's default, 1 to 21 s, covers 54 s.
KOPF_REQUEST_BACKOFFS: Final = (0.5, *(1.0,) * 120)
#: kopf's delays before processing an object again after its status or progress could not
#: be written: short and capped (kopf's default grows to 610 s).
KOPF_ERROR_DELAYS: Final = (1.0, 2.0, 3.0)
#: How often kopf looks again whether a channel's timers (drift check, health probe) have
#: ended once the channel is being deleted: its finalizer is released only then. kopf's
#: default is 60 s, so a channel deleted while one of them ran (a Kafka or API call after
#: an outage, say) kept its finalizer for up to a minute after "Deletion is processed".
KOPF_TIMER_EXIT_POLLING: Final = 1.0


def _log_outcome(outcome: Outcome, logger: Any, delay: float | None = None) -> None:
    line = outcome.line
    if line is not None:
        text = line.text if delay is None else f"{line.text}; retrying in {delay:g} s"
        (logger.warning if line.level == "warning" else logger.info)(text)
    for extra in outcome.logs:
        logger.info(extra)


def _delay(outcome: Outcome, retry: int) -> float | None:
    err = outcome.error
    return retry_delay(err, retry) if isinstance(err, RetryableError) else None


def _raise(outcome: Outcome, delay: float | None) -> None:
    err = outcome.error
    if isinstance(err, PermanentError):
        raise kopf.PermanentError(f"{err.reason}: {err.message}")
    if isinstance(err, RetryableError):
        raise kopf.TemporaryError(f"{err.reason}: {err.message}", delay=delay or err.delay)


class ApiState:
    """Whether the API server is known to be away (set by :class:`ApiProbe`)."""

    def __init__(self) -> None:
        self.down = False


#: The one API state of the process: the probe sets it, the log filter reads it.
API_STATE: Final = ApiState()


class ExpectedRetryLogFilter(logging.Filter):
    """kopf's lines about retries that are expected to succeed: not ERRORs.

    Installed on the root logger's handlers (kopf's loggers propagate there), so it sees
    the lines of every kopf logger (and urllib3's), per-object or not. While the API
    server is known to be away (the probe said so, once, at WARNING), every line about a
    request failing or an object being throttled is DEBUG; otherwise a retried request is
    DEBUG, and one that gives up or an object throttled after an error is a WARNING
    (without kopf's traceback).
    """

    def __init__(self, quiet_success: tuple[str, ...] = (), state: ApiState = API_STATE) -> None:
        super().__init__()
        self._quiet_success = tuple(f"'{name}' succeeded." for name in quiet_success)
        self._state = state

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        level = record.levelno
        request = message.startswith(("Request attempt", "Retrying (Retry(", "Throttling for "))
        if level >= logging.WARNING and (
            " failed temporarily: " in message
            or (request and self._state.down)
            or (message.startswith("Request attempt") and "; will retry:" in message)
            or message.startswith("Retrying (Retry(")  # urllib3, under the kubernetes client
            # aiokafka, once per connection attempt: the channel's KafkaUnreachable line
            # (WARNING, with the retry delay) says it once.
            or (
                record.name.startswith("aiokafka")
                and message.startswith(("Unable connect", "Unable to update metadata"))
            )
        ):
            level = logging.DEBUG
        elif level >= logging.ERROR and request:
            level = logging.WARNING
        elif level == logging.INFO and message.endswith(self._quiet_success):
            level = logging.DEBUG
        if level == record.levelno:
            return True
        record.levelno, record.levelname = level, logging.getLevelName(level)
        if level <= logging.WARNING:
            record.exc_info, record.exc_text = None, None
        return level >= logging.getLogger().getEffectiveLevel()


def quiet_expected_retries(handlers: list[logging.Handler] | None = None) -> ExpectedRetryLogFilter:
    """Install :class:`ExpectedRetryLogFilter` on ``handlers`` (the root logger's, which
    ``kopf.configure`` set up)."""
    log_filter = ExpectedRetryLogFilter(
        ("follow_deployment", "follow_pod", "follow_secret", "drift", "health")
    )
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        handler.addFilter(log_filter)
    return log_filter


class ApiProbe:
    """Probes the API server's ``/readyz``; logs once when it goes away, once when back."""

    def __init__(
        self, reconciler: Reconciler, interval: float = PROBE_INTERVAL, state: ApiState = API_STATE
    ) -> None:
        self._reconciler = reconciler
        self._interval = interval
        self._state = state
        self.down_since: float | None = None

    async def check(self) -> None:
        problem = await self._reconciler.probe_api()
        now = time.monotonic()
        if problem is not None and self.down_since is None:
            self.down_since = now
            self._state.down = True
            log.warning(
                "Kubernetes API unavailable (%s): channels are retried every few seconds "
                "until it is back",
                problem,
            )
        elif problem is None and self.down_since is not None:
            log.info("Kubernetes API available again after %.1f s", now - self.down_since)
            self.down_since = None
            self._state.down = False

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # never let the probe die; say why once per failure
                log.debug("API probe failed: %r", exc)
            await asyncio.sleep(self._interval)


def _channel_of_deployment(body: Mapping[str, Any]) -> str | None:
    for owner in (body.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == crd.KIND:
            return str(owner.get("name"))
    return None


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    settings: ProcessSettings,
    claims: IndexedClaims,
) -> None:
    """Register every handler of the operator on ``registry``; ``claims`` is the
    reconciler's claim port, bound to kopf's index at startup."""
    probe = ApiProbe(reconciler)
    background: set[asyncio.Task[None]] = set()

    # async: a sync index function would run in kopf's thread pool on every watch event.
    @kopf.index(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id=INDEX_ID)
    async def channel_claims(body: kopf.Body, **_: Any) -> dict[str, ChannelClaim]:
        return index_entry(body)

    @kopf.on.startup(registry=registry, id="bind_claims")
    async def bind_claims(**kwargs: Any) -> None:
        claims.bind(kwargs[INDEX_ID])
        background.add(asyncio.get_running_loop().create_task(probe.run()))

    @kopf.on.cleanup(registry=registry, id="close")
    async def close(**_: Any) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await reconciler.close()

    @kopf.on.event(
        crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="acknowledge", when=_unseen
    )
    async def acknowledge(body: kopf.Body, **_: Any) -> None:
        await reconciler.acknowledge(body)

    def channel_timer(id_: str, every: float) -> kopf.on.TimerDecorator:
        """Every ``every`` seconds on each channel not being deleted, the first time one
        interval after the operator meets it."""
        return kopf.timer(
            crd.GROUP,
            crd.VERSION,
            crd.PLURAL,
            registry=registry,
            id=id_,
            interval=every,
            initial_delay=every,
            when=_not_deleting,
        )

    @kopf.on.resume(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    @kopf.on.create(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    @kopf.on.update(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    async def ensure(body: kopf.Body, retry: int, logger: kopf.Logger, **_: Any) -> None:
        outcome = await reconciler.ensure(body, "handler")
        delay = _delay(outcome, retry)
        _log_outcome(outcome, logger, delay)
        _raise(outcome, delay)

    @channel_timer("drift", settings.drift_interval)
    async def drift(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
        # kopf passes timers the stop flag of daemons (not in its TimerFn protocol).
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        attempt = 0
        while True:
            outcome = await reconciler.ensure(body, "timer")
            if outcome.skipped:
                logger.debug("drift check skipped: the create/update handler has not settled")
                return
            delay = _delay(outcome, attempt)
            _log_outcome(outcome, logger, delay)
            if delay is None or delay > settings.drift_interval:
                return  # done, or a slow retry: the next tick is soon enough
            if await stopped.wait(delay):
                return
            attempt += 1

    @channel_timer("health", settings.health_interval)
    async def health(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        outcome = await reconciler.probe_health(body)
        if outcome is not None:
            _log_outcome(outcome, logger)

    @kopf.on.event(
        "apps", "v1", "deployments", labels=WORKER_LABELS, registry=registry, id="follow_deployment"
    )
    async def follow_deployment(
        event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
    ) -> None:
        channel = _channel_of_deployment(body)
        if channel is None:
            return
        outcome = await reconciler.follow_deployment(
            str(body.metadata.namespace), channel, dict(body), gone=event.get("type") == "DELETED"
        )
        if outcome is not None:
            _log_outcome(outcome, logger)

    @kopf.on.event("v1", "pods", labels=WORKER_LABELS, registry=registry, id="follow_pod")
    async def follow_pod(
        event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
    ) -> None:
        channel = body.metadata.labels.get(INSTANCE_LABEL)
        if channel is None:
            return
        gone = event.get("type") == "DELETED"
        outcome = await reconciler.follow_pod(
            str(body.metadata.namespace),
            channel,
            str(body.metadata.name),
            None if gone else dict(body),
        )
        if outcome is not None:
            _log_outcome(outcome, logger)

    if settings.watch_secrets:
        _register_secret_watch(registry, reconciler, kopf_settings(settings))

    @kopf.on.delete(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="cleanup")
    async def cleanup(body: kopf.Body, retry: int, logger: kopf.Logger, **_: Any) -> None:
        outcome = await reconciler.delete(body)
        delay = _delay(outcome, retry)
        _log_outcome(outcome, logger, delay)
        _raise(outcome, delay)


def _register_secret_watch(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, settings: kopf.OperatorSettings
) -> None:
    """The index of the Secrets the channels name, and the watch that follows them;
    ``settings`` (kopf's) go with the channels' loggers (kopf hands them to no watch)."""

    # The channel's body as kopf last saw it: what the handler reconciles with, as kopf's
    # own handlers do (the status the reconciler last wrote wins over the body's).
    @kopf.index(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id=SECRET_INDEX_ID)
    async def secret_users(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {key: dict(body) for key in index_keys(body)}

    # kopf's filter: an event of a Secret no channel names never reaches the handler (no
    # task, no "succeeded" line).
    def referenced(
        event: kopf.RawEvent, namespace: str | None, name: str | None, **kw: Any
    ) -> bool:
        return concerns(event.get("type"), namespace, name, kw[SECRET_INDEX_ID])

    @kopf.on.event("v1", "secrets", registry=registry, id="follow_secret", when=referenced)
    async def follow_secret(
        event: kopf.RawEvent, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        kind = event.get("type")
        channels = channels_to_reconcile(kind, namespace, name, kwargs[SECRET_INDEX_ID])
        if not channels:
            return
        names = ", ".join(sorted(str(c["metadata"]["name"]) for c in channels))
        logger.info(f"Secret {namespace}/{name} changed: reconciling channel(s) {names}")
        await asyncio.gather(*(_reconcile_for_secret(reconciler, c, settings) for c in channels))


async def _reconcile_for_secret(
    reconciler: Reconciler, channel: Mapping[str, Any], settings: kopf.OperatorSettings
) -> None:
    """One channel's reconcile after a Secret it names changed; its lines are the channel's.

    kopf does not retry it: a failure that heals by itself is retried here a few times
    (:func:`follow_up_delay`); any other is left to the channel's own handler, already
    retrying, or to the next drift check. This reconcile makes the change show at once."""
    logger = kopf.LocalObjectLogger(
        body=kopf.Body(cast("kopf.RawBody", dict(channel))), settings=settings
    )
    attempt = 0
    while True:
        try:
            outcome = await reconciler.ensure(channel, "secret")
        except Exception as exc:  # one channel's failure must not stop the others
            logger.warning(f"reconcile after a Secret change failed: {exc!r}")
            return
        delay = follow_up_delay(outcome.error, attempt)
        _log_outcome(outcome, logger, delay)
        if delay is None:
            return
        await asyncio.sleep(delay)
        attempt += 1


#: Characters that make a --namespace a kopf pattern (glob or negation), not a name.
_PATTERN_CHARS = frozenset("!*?,")


def _unseen(body: Mapping[str, Any], **_: Any) -> bool:
    """A channel with no condition yet and not being deleted: the operator's first sight."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    return not status.get("conditions") and not meta.get("deletionTimestamp")


def _not_deleting(meta: Mapping[str, Any], **_: Any) -> bool:
    return not meta.get("deletionTimestamp")


def kopf_settings(settings: ProcessSettings) -> kopf.OperatorSettings:
    """kopf's own settings, derived from the process settings."""
    ks = kopf.OperatorSettings()
    ks.persistence.finalizer = settings.finalizer
    # Progress and the last-handled spec live in annotations of our own group: the
    # status stays the user's view (conditions, topics, workers), nothing else.
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=crd.GROUP, key="last-handled-configuration"
    )
    # Events are posted by the reconciler on transitions only; kopf's own log lines
    # ("handler succeeded", "retrying") are not turned into Events.
    ks.posting.level = logging.CRITICAL
    ks.peering.name = settings.peering_name
    ks.peering.standalone = not settings.peering
    ks.peering.clusterwide = settings.clusterwide
    # Exact namespaces need no cluster-scoped reads: kopf's scanning would list and watch
    # Namespaces and CRDs, which a namespaced Role (the chart's) refuses, and kopf retries
    # each 403 with backoff for about a minute before falling back to these same names.
    ks.scanning.disabled = not settings.clusterwide and all(
        not set(ns) & _PATTERN_CHARS for ns in settings.namespaces
    )
    ks.networking.request_timeout = 60.0
    ks.networking.error_backoffs = KOPF_REQUEST_BACKOFFS
    ks.queueing.error_delays = KOPF_ERROR_DELAYS
    ks.background.cancellation_polling = KOPF_TIMER_EXIT_POLLING
    return ks
