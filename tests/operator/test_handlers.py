"""The kopf edge's log filter: kopf's lines about expected retries are not ERRORs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from clarion_operator.handlers import (
    ApiState,
    ExpectedRetryLogFilter,
    kopf_settings,
    quiet_expected_retries,
)
from clarion_operator.settings import ProcessSettings


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured(name: str) -> Iterator[tuple[logging.Logger, _Records]]:
    """Every record of logger ``name`` (not passed on to its parents), with the root
    logger at DEBUG meanwhile: downgraded lines are dropped below the root's level."""
    logger = logging.getLogger(name)
    records = _Records()
    saved = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    root = logging.getLogger()
    root_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield logger, records
    finally:
        root.setLevel(root_level)
        logger.removeHandler(records)
        logger.propagate, logger.level = saved


def test_expected_retries_are_not_errors_and_the_rest_is_untouched() -> None:
    with _captured("clarion-tests.kopf-objects") as (logger, records):
        quiet_expected_retries([records])
        # kopf's wordings (execution.py, api.py, throttlers.py).
        logger.error("Handler 'ensure' failed temporarily: KubernetesApiError: no answer")
        logger.error(
            "Request attempt #1/4 failed; will retry: PATCH https://127.0.0.1:6443/x -> "
            "ClientConnectorError()"
        )
        logger.error("Request attempt #4/4 failed; escalating: PATCH https://x -> Error()")
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError:
            logger.exception("Throttling for 1 seconds due to an unexpected error: X")
        logger.info("Handler 'follow_pod' succeeded.")
        logger.info("Handler 'ensure' succeeded.")
        logger.error("Handler 'ensure' failed permanently: InvalidSpec: bad")
        logger.error("Handler 'ensure' failed with an exception and will try again: Boom")
    assert [(r.levelname, r.levelno) for r in records.records] == [
        ("DEBUG", logging.DEBUG),
        ("DEBUG", logging.DEBUG),
        ("WARNING", logging.WARNING),
        ("WARNING", logging.WARNING),
        ("DEBUG", logging.DEBUG),
        ("INFO", logging.INFO),
        ("ERROR", logging.ERROR),
        ("ERROR", logging.ERROR),
    ]
    assert records.records[3].exc_info is None  # no traceback for a retried object


def test_while_the_api_is_known_away_failing_requests_are_debug() -> None:
    state = ApiState()
    with _captured("clarion-tests.kopf-away") as (logger, records):
        records.addFilter(ExpectedRetryLogFilter(state=state))
        for down in (False, True):
            state.down = down
            logger.error("Request attempt #4/4 failed; escalating: GET https://x -> Error()")
            logger.error("Throttling for 1 seconds due to an unexpected error: X")
            logger.warning("Retrying (Retry(total=2)) after connection broken by 'X': /api")
    assert [r.levelname for r in records.records] == [
        *("WARNING", "WARNING", "DEBUG"),
        *("DEBUG", "DEBUG", "DEBUG"),
    ]


def test_kafka_connection_attempts_are_debug() -> None:
    with _captured("aiokafka.conn") as (logger, records):
        records.addFilter(ExpectedRetryLogFilter())
        logger.error('Unable connect to "127.0.0.1:9092": [Errno 111] Connect call failed')
        logger.error("Unable to update metadata from [1]")
        logger.error("Some other aiokafka failure")
    assert [r.levelname for r in records.records] == ["DEBUG", "DEBUG", "ERROR"]


def test_downgraded_lines_are_dropped_below_the_configured_level() -> None:
    logger = logging.getLogger("clarion-tests.kopf-quiet")
    logger.propagate = False
    records = _Records()
    logger.addHandler(records)
    quiet_expected_retries([records])
    root = logging.getLogger()
    root_level = root.level
    root.setLevel(logging.INFO)
    try:
        logger.error("Handler 'ensure' failed temporarily: KafkaUnreachable: refused")
        logger.error("Handler 'ensure' failed permanently: InvalidSpec: bad")
    finally:
        root.setLevel(root_level)
        logger.removeHandler(records)
    assert [r.levelname for r in records.records] == ["ERROR"]


def test_a_channel_deleted_while_a_timer_runs_is_released_soon_after_the_timer_ends() -> None:
    """kopf releases the finalizer of an object being deleted only once its timers have
    ended, and looks again every ``cancellation_polling`` seconds: 60 by default, which kept
    a deleted channel for up to a minute (its drift check was still running)."""
    ks = kopf_settings(ProcessSettings(namespaces=("a",)))
    assert ks.background.cancellation_polling <= 1


def test_kopf_backs_off_briefly_after_api_failures() -> None:
    """kopf's own retries (its patches, its watches) come every second and the throttling
    of an object whose processing failed every few seconds, not after kopf's 21 s and
    610 s."""
    ks = kopf_settings(ProcessSettings(namespaces=("a",)))
    backoffs = list(ks.networking.error_backoffs)  # type: ignore[arg-type]
    assert max(backoffs) <= 1
    # kopf stops the operator when a watch request fails after its last retry: a starting
    # API server answers 503 for a while, so the retries must outlast kopf's 54 s default.
    assert sum(backoffs) >= 120
    assert max(ks.queueing.error_delays) <= 3
