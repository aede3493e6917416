"""kopf handlers: thin adapters from kopf's callbacks to the :class:`Reconciler`.

* create / update / resume share one idempotent function (``ensure``);
* a timer re-runs it every ``drift_interval`` seconds to repair what was changed or
  deleted outside the resource (topic configs, partitions, children). Its first tick
  comes one interval after the channel is seen, and a tick is skipped while ``ensure``
  has not settled for the channel (the reconciler tracks that): kopf's timer options
  cannot say "not while a change handler is pending" (``idle=`` counts from the last
  watch event with an unhandled change, and a handler waiting out a 60 s backoff makes
  no event, so the timer would still fire; ``when=`` would stop and respawn the timer);
* the delete handler runs behind kopf's finalizer (``ProcessSettings.finalizer``);
* an index of every watched channel's topic claims (``claims.py``) feeds the reconciler.

Each handler writes the status the core computed (only when it changed), posts the
Events the core listed, and maps the core's error to kopf's: ``RetryableError`` to
``kopf.TemporaryError(delay=...)``, ``PermanentError`` to ``kopf.PermanentError``. The
timer never raises: its next tick is its retry, and a raised error would only make kopf
back off the drift check itself.

Waiting for the workers to roll out is not a failure, but kopf has one way to run a
handler again later, ``kopf.TemporaryError``, and logs every one at ERROR ("Handler
'ensure' failed temporarily: waiting for the workers", once per retry and channel).
:class:`WorkersWaitLogFilter` logs exactly that line at INFO; any other temporary error
stays an ERROR. A filter rather than finishing the handler and polling from a second
short timer: the retry keeps its backoff (2 s, 4 s, ... 60 s) and kopf's bookkeeping, and
a filter that stops matching (kopf rewording the line) only brings the ERROR back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import kopf

from clarion_operator.claims import INDEX_ID, IndexedClaims, index_entry
from clarion_operator.core import crd
from clarion_operator.core.errors import PermanentError, RetryableError
from clarion_operator.core.topics import ChannelClaim
from clarion_operator.reconcile import Outcome, Reconciler, workers_retry_delay
from clarion_operator.settings import ProcessSettings


def _publish(outcome: Outcome, body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
    changes = outcome.status_patch
    if changes is not None:
        for key, value in changes.items():
            patch.status[key] = value
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    for line in outcome.logs:
        logger.info(line)


#: The TemporaryError message of the deliberate wait for the workers.
WAITING_FOR_WORKERS: Final = "waiting for the workers"
#: kopf's logger of every per-object line (handler outcomes included).
KOPF_OBJECTS_LOGGER: Final = "kopf.objects"


class WorkersWaitLogFilter(logging.Filter):
    """Logs kopf's "failed temporarily: waiting for the workers" at INFO, not ERROR."""

    _SUFFIX: Final = f" failed temporarily: {WAITING_FOR_WORKERS}"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().endswith(self._SUFFIX):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def quiet_workers_wait(logger: logging.Logger | None = None) -> WorkersWaitLogFilter:
    """Install :class:`WorkersWaitLogFilter` on kopf's per-object logger."""
    log_filter = WorkersWaitLogFilter()
    (logger or logging.getLogger(KOPF_OBJECTS_LOGGER)).addFilter(log_filter)
    return log_filter


def _raise(outcome: Outcome, *, retry: int) -> None:
    err = outcome.error
    if isinstance(err, PermanentError):
        raise kopf.PermanentError(f"{err.reason}: {err.message}")
    if isinstance(err, RetryableError):
        raise kopf.TemporaryError(f"{err.reason}: {err.message}", delay=err.delay)
    if not outcome.workers_ready:
        # Not an error: the handler stays unfinished and runs again shortly, so the
        # status follows the rollout instead of waiting for the next drift tick.
        raise kopf.TemporaryError(WAITING_FOR_WORKERS, delay=workers_retry_delay(retry))


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    settings: ProcessSettings,
    claims: IndexedClaims,
) -> None:
    """Register every handler of the operator on ``registry``; ``claims`` is the
    reconciler's claim port, bound to kopf's index at startup."""

    # async: a sync index function would run in kopf's thread pool on every watch event.
    @kopf.index(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id=INDEX_ID)
    async def channel_claims(body: kopf.Body, **_: Any) -> dict[str, ChannelClaim]:
        return index_entry(body)

    @kopf.on.startup(registry=registry, id="bind_claims")
    async def bind_claims(**kwargs: Any) -> None:
        claims.bind(kwargs[INDEX_ID])

    @kopf.on.resume(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    @kopf.on.create(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    @kopf.on.update(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="ensure")
    async def ensure(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: kopf.Logger, **_: Any
    ) -> None:
        outcome = await reconciler.ensure(body, "handler")
        _publish(outcome, body, patch, logger)
        _raise(outcome, retry=retry)

    @kopf.timer(
        crd.GROUP,
        crd.VERSION,
        crd.PLURAL,
        registry=registry,
        id="drift",
        interval=settings.drift_interval,
        initial_delay=settings.drift_interval,
        when=_not_deleting,
    )
    async def drift(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        outcome = await reconciler.ensure(body, "timer")
        if outcome.skipped:
            logger.debug("drift check skipped: the create/update handler has not settled")
            return
        _publish(outcome, body, patch, logger)
        if outcome.error is not None:
            logger.warning(f"drift check: {outcome.error.reason}: {outcome.error.message}")

    @kopf.on.delete(crd.GROUP, crd.VERSION, crd.PLURAL, registry=registry, id="cleanup")
    async def cleanup(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: kopf.Logger, **_: Any
    ) -> None:
        outcome = await reconciler.delete(body)
        _publish(outcome, body, patch, logger)
        _raise(outcome, retry=retry)


#: Characters that make a --namespace a kopf pattern (glob or negation), not a name.
_PATTERN_CHARS = frozenset("!*?,")


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
    # Events are posted explicitly (kopf.event) on transitions only; kopf's own log
    # lines ("handler succeeded", "retrying") are not turned into Events.
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
    return ks
