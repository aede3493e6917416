"""make test's runner: which pytest runs it plans, and how their exit codes combine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clarion_devstack.pytest_plugin import work_unit
from clarion_devstack.suite import (
    BACKGROUND,
    EXCLUSIVE,
    NO_TESTS_COLLECTED,
    Phase,
    Plan,
    plan,
    run_phases,
    verdict,
)


def test_the_first_phase_spreads_the_non_exclusive_tests_by_file() -> None:
    phases = plan(["-x"], {"CLARION_TEST_WORKERS": "3"})
    parallel, exclusive = phases.parallel, phases.exclusive
    assert parallel.args[:4] == ("-n", "3", "--dist", "loadfile")
    assert ("-m", f"not {EXCLUSIVE} and not {BACKGROUND}") == parallel.args[4:6]
    assert parallel.args[-1] == "-x"
    assert exclusive.args[:4] == ("-p", "no:xdist", "-m", EXCLUSIVE)
    assert exclusive.args[-1] == "-x"


def test_the_background_tests_run_in_one_process_of_their_own_never_the_exclusive_ones() -> None:
    phases = plan(["-x"], {"CLARION_TEST_WORKERS": "3"})
    background = phases.background.args
    assert background[:4] == ("-n", "3", "--dist", "loadfile")
    assert background[4:6] == ("-m", f"{BACKGROUND} and not {EXCLUSIVE}")
    assert background[-1] == "-x"
    # Each test in exactly one phase: the exclusive phase takes every exclusive test.
    assert phases.exclusive.args[2:4] == ("-m", EXCLUSIVE)


def test_no_workers_runs_the_first_phase_in_one_process() -> None:
    parallel = plan([], {"CLARION_TEST_WORKERS": "0"}).parallel
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
    # The idle test shares nothing with its folder: a unit of its own, beside it.
    idle = "tests/e2e/test_traffic_entry_idle.py"
    assert work_unit(f"{idle}::test_idle") == idle


def test_the_background_phase_runs_beside_the_first_and_its_output_follows_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Real pytest processes: the background test finishes only once the first phase's
    # test has run, so run one after the other they would time out.
    beside = tmp_path / "first-phase-ran"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_bg.py").write_text(
        "import pathlib, time\n"
        "def test_waits_for_the_first_phase():\n"
        f"    flag = pathlib.Path({str(beside)!r})\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not flag.exists():\n"
        "        assert time.monotonic() < deadline, 'the first phase never ran beside me'\n"
        "        time.sleep(0.05)\n"
        "    print('BACKGROUND-SAW-THE-FIRST-PHASE')\n"
    )
    (tmp_path / "test_first.py").write_text(
        "import pathlib\n"
        "def test_runs_beside_the_background():\n"
        f"    pathlib.Path({str(beside)!r}).touch()\n"
        "    print('FIRST-PHASE-RAN')\n"
    )
    (tmp_path / "test_alone.py").write_text("def test_alone():\n    print('EXCLUSIVE-RAN')\n")

    def phase(name: str, test: str) -> Phase:
        ini = str(tmp_path / "pytest.ini")
        return Phase(name, ("-c", ini, "-p", "no:cacheprovider", "-s", str(tmp_path / test)))

    phases = Plan(
        phase("background", "test_bg.py"),
        phase("parallel", "test_first.py"),
        phase("exclusive", "test_alone.py"),
    )
    codes = run_phases(phases, dict(os.environ))  # noqa: TID251 - the children's environment
    out = capfd.readouterr().out
    assert codes == [0, 0, 0], out
    first, background, alone = (
        out.index(s) for s in ("FIRST-PHASE-RAN", "BACKGROUND-SAW-THE-FIRST-PHASE", "EXCLUSIVE-RAN")
    )
    assert first < background < alone
