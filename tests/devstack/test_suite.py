"""make test's runner: which pytest runs it plans, and how their exit codes combine."""

from __future__ import annotations

from clarion_devstack.pytest_plugin import work_unit
from clarion_devstack.suite import EXCLUSIVE, NO_TESTS_COLLECTED, plan, verdict


def test_the_first_phase_spreads_the_non_exclusive_tests_by_file() -> None:
    parallel, exclusive = plan(["-x"], {"CLARION_TEST_WORKERS": "3"})
    assert parallel.args[:4] == ("-n", "3", "--dist", "loadfile")
    assert ("-m", f"not {EXCLUSIVE}") == parallel.args[4:6]
    assert parallel.args[-1] == "-x"
    assert exclusive.args[:4] == ("-p", "no:xdist", "-m", EXCLUSIVE)
    assert exclusive.args[-1] == "-x"


def test_no_workers_runs_the_first_phase_in_one_process() -> None:
    parallel, _ = plan([], {"CLARION_TEST_WORKERS": "0"})
    assert "-n" not in parallel.args
    assert parallel.args[:2] == ("-p", "no:xdist")


def test_a_phase_that_selects_nothing_passes_and_any_failure_fails_the_run() -> None:
    assert verdict([0, NO_TESTS_COLLECTED]) == 0
    assert verdict([NO_TESTS_COLLECTED, 0]) == 0
    assert verdict([1, 0]) == 1
    assert verdict([0, 2]) == 2


def test_a_work_unit_is_a_file_except_the_e2e_and_kafka_folders_each_one() -> None:
    assert work_unit("tests/worker/test_x.py::test_a[direct]") == "tests/worker/test_x.py"
    assert work_unit("tests/e2e/test_e2e.py::test_a") == "tests/e2e/"
    assert work_unit("tests/e2e/test_real_pods.py::test_b") == "tests/e2e/"
    assert work_unit("tests/kafka/test_secured_integration.py::test_c") == "tests/kafka/"
