"""Error classification: what to do next, without importing aiokafka or kopf."""

from __future__ import annotations

import pytest

from clarion_operator.core import errors
from clarion_operator.core.errors import (
    LONG_RETRY,
    QUICK_RETRY,
    SHORT_RETRY,
    KafkaOutcome,
    PermanentError,
    RetryableError,
    classify_api_status,
    classify_kafka_error,
    classify_kafka_exception,
    follow_up_delay,
    retry_delay,
)
from clarion_operator.core.reasons import Reason


def test_retryable_carries_reason_and_delay() -> None:
    err = RetryableError(Reason.KAFKA_UNREACHABLE, "down", 3.0)
    assert (err.reason, err.message, err.delay, str(err)) == (
        Reason.KAFKA_UNREACHABLE,
        "down",
        3.0,
        "down",
    )
    assert RetryableError(Reason.KAFKA_ERROR, "x").delay == errors.SHORT_RETRY


def test_topic_already_exists_is_adoption_on_create() -> None:
    result = classify_kafka_error(36, "create")
    assert result.outcome is KafkaOutcome.SUCCESS
    assert result.to_error("x") is None
    assert classify_kafka_error(36, "create_partitions").outcome is KafkaOutcome.RETRY


def test_unknown_topic_is_success_on_delete_only() -> None:
    assert classify_kafka_error(3, "delete").outcome is KafkaOutcome.SUCCESS
    assert classify_kafka_error(3, "describe").outcome is KafkaOutcome.RETRY


@pytest.mark.parametrize("code", [-1, 5, 6, 7, 8, 13, 19, 41, 56, 89])
def test_transient_codes_retry_soon(code: int) -> None:
    result = classify_kafka_error(code, "create")
    assert result.outcome is KafkaOutcome.RETRY
    assert result.delay == errors.SHORT_RETRY
    err = result.to_error("boom")
    assert isinstance(err, RetryableError)
    assert err.message.endswith("boom")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (37, Reason.INVALID_PARTITIONS),
        (38, Reason.INVALID_REPLICATION_FACTOR),
        (40, Reason.INVALID_TOPIC_CONFIG),
        (29, Reason.KAFKA_AUTHORIZATION_FAILED),
        (31, Reason.KAFKA_AUTHORIZATION_FAILED),
        (44, Reason.KAFKA_ERROR),
        (73, Reason.KAFKA_ERROR),
        (9999, Reason.KAFKA_ERROR),
    ],
)
def test_rejected_codes_retry_slowly_with_reason(code: int, reason: Reason) -> None:
    result = classify_kafka_error(code, "create")
    assert result.outcome is KafkaOutcome.REJECTED
    assert result.reason is reason
    assert result.delay == errors.LONG_RETRY


def test_none_code_is_success() -> None:
    assert classify_kafka_error(0, "alter_configs").outcome is KafkaOutcome.SUCCESS


@pytest.mark.parametrize(
    "mro",
    [
        ["KafkaConnectionError", "KafkaError", "Exception"],
        ["ConnectionRefusedError", "ConnectionError", "OSError", "Exception"],
        ["TimeoutError", "OSError", "Exception"],
        ["NodeNotReadyError", "KafkaError"],
    ],
)
def test_connection_errors_mean_unreachable(mro: list[str]) -> None:
    result = classify_kafka_exception(mro)
    assert result.outcome is KafkaOutcome.RETRY
    assert result.reason is Reason.KAFKA_UNREACHABLE


def test_auth_errors_win_over_oserror() -> None:
    result = classify_kafka_exception(["SSLError", "OSError", "Exception"])
    assert result.reason is Reason.KAFKA_AUTHORIZATION_FAILED
    assert result.outcome is KafkaOutcome.REJECTED


def test_unknown_exception_retries_with_its_name() -> None:
    result = classify_kafka_exception(["WeirdError", "Exception"])
    assert (result.outcome, result.reason, result.name) == (
        KafkaOutcome.RETRY,
        Reason.KAFKA_ERROR,
        "WeirdError",
    )
    assert classify_kafka_exception([]).name == "Exception"


def test_real_exception_mro_helper_shape() -> None:
    names = [c.__name__ for c in type(ConnectionResetError()).__mro__]
    assert classify_kafka_exception(names).reason is Reason.KAFKA_UNREACHABLE


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (409, RetryableError, Reason.API_CONFLICT),
        (429, RetryableError, Reason.KUBERNETES_API_ERROR),
        (503, RetryableError, Reason.KUBERNETES_API_ERROR),
        (422, PermanentError, Reason.INVALID_SPEC),
        (403, RetryableError, Reason.KUBERNETES_API_ERROR),
    ],
)
def test_api_status(code: int, kind: type[Exception], reason: Reason) -> None:
    err = classify_api_status(code)
    assert type(err) is kind
    assert err.reason is reason


@pytest.mark.parametrize("code", [0, 408, 429, 500, 503])
def test_no_answer_is_retried_like_a_5xx_not_like_a_403(code: int) -> None:
    # Status 0 (connection refused/reset, timeout) used to fall through to the 120 s branch.
    err = classify_api_status(code)
    assert isinstance(err, RetryableError)
    assert err.reason is Reason.KUBERNETES_API_ERROR
    assert err.delay <= SHORT_RETRY
    assert [retry_delay(err, n) for n in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    forbidden = classify_api_status(403)
    assert isinstance(forbidden, RetryableError)
    assert forbidden.delay == LONG_RETRY


def test_retry_delay_backs_off_to_the_quick_cap_or_keeps_a_long_delay() -> None:
    conflict = classify_api_status(409)
    assert isinstance(conflict, RetryableError)
    assert [retry_delay(conflict, n) for n in range(3)] == [1.0, 2.0, 2.0]
    unreachable = classify_kafka_exception(["KafkaConnectionError"]).to_error("down")
    assert isinstance(unreachable, RetryableError)
    assert retry_delay(unreachable, 50) == QUICK_RETRY
    slow = RetryableError(Reason.KAFKA_ERROR, "Secret missing", SHORT_RETRY * 3)
    assert retry_delay(slow, 0) == SHORT_RETRY * 3


def test_a_follow_up_reconcile_retries_only_what_heals_by_itself_and_not_for_ever() -> None:
    unknown_yet = classify_kafka_error(3, "describe_configs").to_error("just created")
    assert [follow_up_delay(unknown_yet, n) for n in range(7)] == [
        1.0, 2.0, 4.0, 5.0, 5.0, None, None,
    ]  # fmt: skip
    refused = classify_kafka_exception(["SaslAuthenticationFailedError"]).to_error("password")
    assert follow_up_delay(refused, 0) is None  # a human must act: the long retry's
    assert follow_up_delay(PermanentError(Reason.INVALID_SPEC, "bad"), 0) is None
    assert follow_up_delay(None, 0) is None


def test_reasons_are_camel_case() -> None:
    for reason in Reason:
        assert reason.value[0].isupper()
        assert reason.value.isalnum()


@pytest.mark.parametrize(
    ("requested", "registered", "expected"),
    [
        (1, 0, errors.BROKER_NOT_AVAILABLE),  # the only broker shutting down or starting
        (-1, 0, errors.BROKER_NOT_AVAILABLE),  # the broker's default, nobody registered
        (3, 0, errors.BROKER_NOT_AVAILABLE),
        (1, 1, errors.BROKER_NOT_AVAILABLE),  # refused a moment ago, honourable now
        (3, 3, errors.BROKER_NOT_AVAILABLE),
        (3, 1, errors.INVALID_REPLICATION_FACTOR),  # a factor this cluster cannot honour
        (2, 1, errors.INVALID_REPLICATION_FACTOR),
    ],
)
def test_replication_refusal_while_brokers_are_missing_heals_soon(
    requested: int, registered: int, expected: int
) -> None:
    code = errors.create_refusal(errors.INVALID_REPLICATION_FACTOR, requested, registered)
    assert code == expected
    outcome = errors.classify_kafka_error(code, "create").outcome
    assert outcome is (
        errors.KafkaOutcome.RETRY
        if expected == errors.BROKER_NOT_AVAILABLE
        else errors.KafkaOutcome.REJECTED
    )


@pytest.mark.parametrize("code", [errors.NONE, errors.TOPIC_ALREADY_EXISTS, errors.INVALID_CONFIG])
def test_other_create_answers_pass_through(code: int) -> None:
    assert errors.create_refusal(code, 1, 0) == code
