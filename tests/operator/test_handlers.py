"""The kopf edge's log filter: the deliberate wait for the workers is not an error."""

from __future__ import annotations

import logging

from clarion_operator.handlers import WAITING_FOR_WORKERS, quiet_workers_wait


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_only_the_workers_wait_is_downgraded_to_info() -> None:
    logger = logging.getLogger("clarion-tests.kopf-objects")
    logger.propagate = False
    records = _Records()
    logger.addHandler(records)
    log_filter = quiet_workers_wait(logger)
    try:
        # kopf's wording: f"{handler} failed temporarily: {error}"
        logger.error(f"Handler 'ensure' failed temporarily: {WAITING_FOR_WORKERS}")
        logger.error("Handler 'ensure' failed temporarily: KafkaUnreachable: no broker")
        logger.error(f"Handler 'ensure' failed permanently: {WAITING_FOR_WORKERS}?")
    finally:
        logger.removeFilter(log_filter)
        logger.removeHandler(records)
    assert [(r.levelname, r.levelno) for r in records.records] == [
        ("INFO", logging.INFO),
        ("ERROR", logging.ERROR),
        ("ERROR", logging.ERROR),
    ]
