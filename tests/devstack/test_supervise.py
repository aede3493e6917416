"""The supervisor that keeps kube-controller-manager and kube-scheduler running: its
restart decision (pure), and the process it drives, with plain Python children."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from clarion_devstack import kube
from clarion_devstack.pki import FILES, Pki
from clarion_devstack.procs import alive, spawn, stop, wait_until
from clarion_devstack.supervise import Restart, RestartPolicy, describe_exit, next_start

POLICY = RestartPolicy(first=0.5, cap=2.0, stable_after=10.0)


def test_a_child_that_ran_for_a_while_is_restarted_at_once() -> None:
    assert next_start(POLICY, streak=5, ran_for=300.0, stopping=False) == Restart(0.5, 0)


def test_quick_exits_back_off_up_to_the_cap() -> None:
    delays, streak = [], 0
    for _ in range(6):
        decision = next_start(POLICY, streak=streak, ran_for=0.3, stopping=False)
        assert decision is not None
        delays.append(decision.delay)
        streak = decision.streak
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert streak == 6


def test_a_long_run_after_a_crash_loop_resets_the_backoff() -> None:
    assert next_start(POLICY, streak=4, ran_for=10.0, stopping=False) == Restart(0.5, 0)
    assert next_start(POLICY, streak=4, ran_for=9.9, stopping=False) == Restart(2.0, 5)


def test_no_restart_once_the_supervisor_is_stopping() -> None:
    assert next_start(POLICY, streak=0, ran_for=300.0, stopping=True) is None
    assert next_start(POLICY, streak=3, ran_for=0.1, stopping=True) is None


def test_exit_codes_and_signals_are_described() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"


def _pki(tmp_path: Path) -> Pki:
    return Pki(*(tmp_path / name for name in FILES))


def test_controller_manager_and_scheduler_run_supervised_with_leader_election(
    tmp_path: Path,
) -> None:
    cp = kube.plan(tmp_path, _pki(tmp_path))
    for make, name in (
        (kube.controller_manager, "kube-controller-manager"),
        (kube.scheduler, "kube-scheduler"),
    ):
        launch = make(Path(f"/bin/{name}"), cp, tmp_path / "x.log")
        argv = list(launch.argv)
        split = argv.index("--")
        supervisor, child = argv[:split], argv[split + 1 :]
        assert supervisor[:3] == [sys.executable, "-m", "clarion_devstack.supervise"]
        assert f"--name={name}" in supervisor
        assert f"--wait-for={cp.api_url}/readyz" in supervisor
        assert f"--ca-file={cp.pki.ca_cert}" in supervisor
        assert child[0] == f"/bin/{name}"
        assert f"--kubeconfig={cp.kubeconfig}" in child
        assert "--leader-elect=true" in child
        assert "--leader-elect=false" not in child
        assert "--leader-elect-resource-namespace=kube-system" in child
        # Shorter than the defaults (15/10/2 s), which kept Ready 17-21 s after an outage.
        assert "--leader-elect-lease-duration=5s" in child
        assert "--leader-elect-renew-deadline=4s" in child
        assert "--leader-elect-retry-period=1s" in child


# --- the process ---------------------------------------------------------------------

#: A child that appends its PID to a file, then exits with code 3 on its first run and
#: sleeps on the next ones (ignoring SIGTERM when asked to).
CHILD = """
import os, signal, sys, time
path = sys.argv[1]
if len(sys.argv) > 2:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(path, "a") as f:
    f.write(f"{os.getpid()}\\n")
with open(path) as f:
    runs = len(f.read().split())
if runs == 1:
    sys.exit(3)
time.sleep(120)
"""


def _supervise(
    tmp_path: Path, *child_args: str, grace: float = 8.0, wait_for: str | None = None
) -> subprocess.Popen[bytes]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    argv = [sys.executable, "-m", "clarion_devstack.supervise", "--name=toy"]
    argv += [f"--wait-for={wait_for}"] if wait_for else []
    argv += [f"--grace={grace}", "--", sys.executable, str(script), str(tmp_path / "pids")]
    return spawn([*argv, *child_args], tmp_path / "toy.log")


def _pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_the_child_is_restarted_after_it_exits_and_the_exit_code_logged(tmp_path: Path) -> None:
    sup = _supervise(tmp_path)
    try:
        wait_until(lambda: len(_pids(tmp_path)) == 2, what="second start", timeout=30)
        first, second = _pids(tmp_path)
        log = (tmp_path / "toy.log").read_text()
        assert f"toy: pid {first} exited with code 3 after" in log
        assert "restarting in 0.5 s" in log
        assert f"toy: started pid {second}" in log
        assert alive(second)
    finally:
        stop(sup.pid)
    sup.wait(timeout=10)
    assert not alive(_pids(tmp_path)[-1])


def test_sigterm_to_the_supervisor_alone_stops_the_child_without_a_restart(
    tmp_path: Path,
) -> None:
    sup = _supervise(tmp_path)
    wait_until(lambda: len(_pids(tmp_path)) == 2, what="second start", timeout=30)
    child = _pids(tmp_path)[-1]
    os.kill(sup.pid, signal.SIGTERM)  # the supervisor only, not its process group
    assert sup.wait(timeout=15) == 0
    wait_until(lambda: not alive(child), what="child gone", timeout=5)
    assert len(_pids(tmp_path)) == 2
    assert f"pid {child} was killed by SIGTERM" in (tmp_path / "toy.log").read_text()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    sup = _supervise(tmp_path, "ignore-sigterm", grace=0.5)
    wait_until(lambda: len(_pids(tmp_path)) == 2, what="second start", timeout=30)
    child = _pids(tmp_path)[-1]
    os.kill(sup.pid, signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    wait_until(lambda: not alive(child), what="child gone", timeout=5)
    log = (tmp_path / "toy.log").read_text()
    assert "still running 0.5 s after SIGTERM: SIGKILL" in log
    assert f"pid {child} was killed by SIGKILL" in log


def test_a_killed_supervisor_leaves_no_orphan(tmp_path: Path) -> None:
    sup = _supervise(tmp_path)
    wait_until(lambda: len(_pids(tmp_path)) == 2, what="second start", timeout=30)
    child = _pids(tmp_path)[-1]
    os.kill(sup.pid, signal.SIGKILL)  # no chance to stop the child itself
    sup.wait(timeout=10)
    wait_until(lambda: not alive(child), what="orphan gone", timeout=5)


class _Readyz(http.server.BaseHTTPRequestHandler):
    answer = b"not yet"

    def do_GET(self) -> None:
        body = type(self).answer
        self.send_response(200 if body == b"ok" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_the_child_starts_only_once_the_url_answers_ok(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = tmp_path / "toy.log"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        sup = _supervise(tmp_path, wait_for=url)
        try:
            wait_until(lambda: "waiting for" in log.read_text(), what="waiting", timeout=30)
            assert _pids(tmp_path) == []  # not started while the server says 503
            _Readyz.answer = b"ok"
            wait_until(lambda: len(_pids(tmp_path)) == 2, what="second start", timeout=30)
            assert f"{url} ready after" in log.read_text()
        finally:
            stop(sup.pid)
            sup.wait(timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_no_command_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clarion_devstack.supervise", "--name=toy", "--"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no command given" in result.stderr


def test_a_command_that_cannot_start_is_reported() -> None:
    missing = "/nonexistent/kube-thing"
    result = subprocess.run(
        [sys.executable, "-m", "clarion_devstack.supervise", "--name=toy", "--", missing],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 127
    assert f"cannot start {missing}" in result.stdout
