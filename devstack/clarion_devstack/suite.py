"""``make test``'s runner: the local stack once, then the suite in two phases.

Most integration tests spend their time waiting (for a rollout, a timeout, a retry, a
drain), so they run side by side: the first phase spreads every test not marked
``exclusive`` over pytest-xdist workers, a file to a worker (``--dist loadfile``: a
module's fixtures, such as the end-to-end deployment, are built once). Beside it, in
pytest workers of their own, run the ``background`` tests: tests/e2e/ (its files share
the UnionFlow topics, so they run one after another anyway, and mostly wait on pods,
proxies and rollouts), tests/kafka/ (one three-broker cluster, brokers stopped and
restarted) and, in a third worker, the test that waits 200 s on a timer for Traefik's
timeouts on names no other test uses. The second phase
runs the ``exclusive`` tests one at a time: they stop Kafka, etcd, the API server or the
real node, so nothing else may be using the stack meanwhile. All phases share one stack:
a healthy running one (``make env-up``) is reused and left running; otherwise this runner
starts it, tells the tests so (:data:`STARTED_BY_RUN`, which lets the exclusive ones run
on it), and stops it at the end, also when a phase fails or the run is interrupted.

``python -m clarion_devstack.suite [pytest args]``; ``CLARION_TEST_WORKERS`` sets the
number of workers of the first phase (``0`` runs it in one process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO

from . import stack
from .settings import DevstackSettings

#: Names the ``started_at`` of a stack this run started: tests may stop its components.
STARTED_BY_RUN = "CLARION_STACK_STARTED_BY_RUN"
#: The first phase's workers; 0 runs it in one process. Most tests wait, so 3 workers
#: take the warm suite from about 28 to 15-19 minutes. But on this 2-core machine every
#: fresh-clone run side by side still failed a few load-sensitive tests (a different few
#: each time; docs/development.md), so the default stays one process until they hold.
DEFAULT_WORKERS = 0
EXCLUSIVE = "exclusive"
BACKGROUND = "background"
#: The background phase's workers: one per work unit it has (tests/e2e/, tests/kafka/,
#: the idle test).
BACKGROUND_WORKERS = 3
#: How long an interrupted phase may take to tear its fixtures down.
INTERRUPT_GRACE_SECONDS = 60
#: pytest's exit code when a selection is empty: a phase with nothing to run passes.
NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class Phase:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """The pytest invocations (arguments after ``python -m pytest``): ``background``
    runs beside ``parallel``, then ``exclusive`` alone."""

    background: Phase
    parallel: Phase
    exclusive: Phase


def plan(extra: Sequence[str], environ: Mapping[str, str]) -> Plan:
    workers = int(environ.get("CLARION_TEST_WORKERS", DEFAULT_WORKERS))
    spread = ("-n", str(workers), "--dist", "loadfile") if workers > 0 else ("-p", "no:xdist")
    beside = ("-n", str(BACKGROUND_WORKERS), "--dist", "loadfile")
    alone = ("-p", "no:xdist")
    durations = ("--durations=25",)
    return Plan(
        Phase(
            "background", (*beside, "-m", f"{BACKGROUND} and not {EXCLUSIVE}", *durations, *extra)
        ),
        Phase(
            "parallel",
            (*spread, "-m", f"not {EXCLUSIVE} and not {BACKGROUND}", *durations, *extra),
        ),
        Phase("exclusive", (*alone, "-m", EXCLUSIVE, *durations, *extra)),
    )


def verdict(codes: Sequence[int]) -> int:
    """The run's exit code: the first failing phase's, 0 when every phase passed."""
    failing = [c for c in codes if c not in (0, NO_TESTS_COLLECTED)]
    return failing[0] if failing else 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A CI timeout sends SIGTERM: unwind through ``finally`` so the stack goes down.
    raise KeyboardInterrupt


def _start_pytest(
    phase: Phase, environ: Mapping[str, str], output: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    print(f"\n[clarion] test phase {phase.name}: pytest {' '.join(phase.args)}", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *phase.args],
        env=environ,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def _interrupt(children: Sequence[subprocess.Popen[bytes]]) -> None:
    # SIGINT lets pytest tear its fixtures down (workers, operators it started);
    # SIGKILL only if it does not finish in time.
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _ended(phase: Phase, code: int, began: float) -> int:
    took = time.monotonic() - began
    print(f"[clarion] test phase {phase.name}: exit {code} in {took:.0f} s", flush=True)
    return code


def run_phases(phases: Plan, environ: Mapping[str, str]) -> list[int]:
    """The background phase beside the parallel one (its output held back, then printed
    whole, so the two never interleave), then the exclusive phase alone."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryFile() as held:
            began = time.monotonic()
            background = _start_pytest(phases.background, environ, held)
            children.append(background)
            parallel = _start_pytest(phases.parallel, environ)
            children.append(parallel)
            codes = [_ended(phases.parallel, parallel.wait(), began)]
            background_code = background.wait()
            held.seek(0)
            print(f"\n[clarion] test phase {phases.background.name}, its output:", flush=True)
            shutil.copyfileobj(held, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            codes.append(_ended(phases.background, background_code, began))
        began = time.monotonic()
        exclusive = _start_pytest(phases.exclusive, environ)
        children.append(exclusive)
        codes.append(_ended(phases.exclusive, exclusive.wait(), began))
        return codes
    except KeyboardInterrupt:
        _interrupt(children)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ)  # noqa: TID251 - the process edge
    settings = DevstackSettings.from_environ(environ)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    running = stack.read_env(settings)
    owned = running is None or not stack.healthy(running)
    env = stack.up(settings) if owned else running
    assert env is not None
    if owned:
        environ[STARTED_BY_RUN] = repr(env["started_at"])
    try:
        codes = run_phases(plan(extra, environ), environ)
    finally:
        if owned:
            stack.down(settings, quiet=True)
    return verdict(codes)


if __name__ == "__main__":
    sys.exit(main())
