"""The operator's process settings: flags, environment, and what is refused."""

from __future__ import annotations

import pytest

from clarion_operator.settings import ProcessSettings, SettingsError, from_args


def test_flags_build_frozen_settings() -> None:
    s = from_args(
        ["-n", "a", "-n", "b", "--drift-interval", "3", "--standalone", "--metrics-port", "0"],
        {},
    )
    assert s.namespaces == ("a", "b")
    assert (s.clusterwide, s.peering, s.drift_interval, s.metrics_port) == (False, False, 3.0, 0)
    assert s.field_manager == "clarion-operator"
    assert s.kube_api_threads == 32
    assert s.health_interval == 10.0
    assert s.watch_secrets is True
    with pytest.raises(AttributeError):
        s.peering = True  # type: ignore[misc]


def test_environment_is_the_fallback_and_flags_win() -> None:
    env = {
        "CLARION_OPERATOR_ALL_NAMESPACES": "true",
        "CLARION_OPERATOR_PEERING": "yes",
        "CLARION_OPERATOR_DRIFT_INTERVAL": "30",
        "CLARION_OPERATOR_KAFKA_REQUEST_TIMEOUT_MS": "5000",
        "CLARION_OPERATOR_LOG_FORMAT": "plain",
        "CLARION_OPERATOR_KUBE_API_THREADS": "8",
    }
    s = from_args([], env)
    assert (s.clusterwide, s.peering, s.drift_interval) == (True, True, 30.0)
    assert (s.kafka_request_timeout_ms, s.log_format) == (5000, "plain")
    assert s.kube_api_threads == 8
    assert from_args(["--kube-api-threads", "64"], env).kube_api_threads == 64
    assert from_args(["--standalone", "--drift-interval", "5"], env).peering is False
    assert from_args([], {**env, "CLARION_OPERATOR_HEALTH_INTERVAL": "3"}).health_interval == 3.0
    assert from_args(["--health-interval", "2.5"], env).health_interval == 2.5
    assert s.liveness_endpoint == "http://0.0.0.0:8081/healthz"


def test_the_secret_watch_is_on_unless_switched_off_by_flag_or_variable() -> None:
    off = {"CLARION_OPERATOR_WATCH_SECRETS": "false"}
    assert from_args(["-n", "a"], {}).watch_secrets is True
    assert from_args(["-n", "a", "--no-watch-secrets"], {}).watch_secrets is False
    assert from_args(["-n", "a"], off).watch_secrets is False
    assert from_args(["-n", "a", "--watch-secrets"], off).watch_secrets is True


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {}),
        (["-n", "a", "--drift-interval", "0"], {}),
        (["-n", "a", "--health-interval", "0"], {}),
        (["-n", "a"], {"CLARION_OPERATOR_HEALTH_INTERVAL": "often"}),
        (["-n", "a", "--metrics-port", "70000"], {}),
        (["-n", "a"], {"CLARION_OPERATOR_METRICS_PORT": "x"}),
        (["-n", "a"], {"CLARION_OPERATOR_PEERING": "maybe"}),
        (["-n", "a", "--kube-api-threads", "0"], {}),
        (["-n", "a"], {"CLARION_OPERATOR_KUBE_API_THREADS": "many"}),
        (["-n", "a"], {"CLARION_OPERATOR_WATCH_SECRETS": "sometimes"}),
    ],
)
def test_refuses_settings_it_cannot_run_with(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        from_args(argv, env)


def test_scope_is_one_of_namespaces_or_cluster() -> None:
    with pytest.raises(SettingsError):
        ProcessSettings(namespaces=("a",), clusterwide=True)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("METRICS_PORT", "8082.0", "CLARION_OPERATOR_METRICS_PORT is not an integer: '8082.0'"),
        ("DRIFT_INTERVAL", "1m", "CLARION_OPERATOR_DRIFT_INTERVAL is not a number: '1m'"),
    ],
)
def test_a_variable_that_is_not_a_number_is_named_with_its_value(
    name: str, raw: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        from_args(["-n", "a"], {f"CLARION_OPERATOR_{name}": raw})
    assert str(refused.value) == message


def test_numbers_from_variables_keep_their_setting_type() -> None:
    s = from_args(
        ["-n", "a"],
        {"CLARION_OPERATOR_DRIFT_INTERVAL": "5", "CLARION_OPERATOR_KUBE_API_THREADS": "4"},
    )
    assert (s.drift_interval, s.kube_api_threads) == (5.0, 4)
    assert isinstance(s.drift_interval, float)
    assert isinstance(s.kube_api_threads, int)
