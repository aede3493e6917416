import socket
import sys
from pathlib import Path

import pytest

from clarion_devstack.procs import StackError, alive, free_port, spawn, stop, wait_until


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    # A parent that starts a child and ignores SIGTERM: stop must still end both.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = spawn([sys.executable, "-c", script], log)
    wait_until(lambda: log.read_text().strip() != "", what="child pid", timeout=10)
    child = int(log.read_text().split()[0])
    stop(proc.pid, grace=0.5)
    proc.wait(timeout=5)
    wait_until(lambda: not alive(child), what="child gone", timeout=5)


def test_wait_until_names_the_log_when_the_process_dies(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    proc = spawn([sys.executable, "-c", "print('fatal: no config'); raise SystemExit(3)"], log)
    with pytest.raises(StackError, match=r"(?s)exited before it was ready.*fatal: no config"):
        wait_until(lambda: False, what="thing", timeout=30, pid=proc.pid, log=log)
    proc.wait()


def test_wait_until_times_out_with_a_clear_message() -> None:
    with pytest.raises(StackError, match="thing: not ready after 0s"):
        wait_until(lambda: False, what="thing", timeout=0.2, interval=0.05)
