"""Start, watch and stop the stack's processes.

Each component runs in its own session (process group) with its output in a log
file, so that it outlives ``make env-up`` and ``env-down`` can stop it and any
children it started, by process group.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A component could not be installed, started or reached."""


def free_port() -> int:
    """A TCP port that nothing uses now, below the kernel's ephemeral range.

    Binding port 0 hands out an ephemeral port, which the next outgoing connection of
    any process may take as its local port before the server we give it to binds it
    (seen with Kafka restarted on its old port, and with operators started by tests).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(max(1024, low - 12000), low)
        if port in _handed_out:
            continue  # free now, but promised to a server that has not bound it yet
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    raise StackError("no free TCP port below the ephemeral range")


_handed_out: set[int] = set()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


# Popen objects of the processes this process started: kept so that they are reaped
# (no zombies) and never garbage-collected while running (a ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str],
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our terminal, appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone as far as we are concerned.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if it is still there."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            _reap(pid)
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                _wait_gone(pid)
                return
            time.sleep(0.05)
    raise StackError(f"process {pid} survived SIGKILL")


def stop_popen(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Signal a child started by this process, wait ``grace`` seconds, then kill it."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Loopback:
    """The addresses of a listener on ``127.0.0.1:port`` (the class mixing it in has the
    ``port``): its HTTP and WebSocket bases, and the origin a browser page there sends."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.url


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    # A process reparented to init stays a zombie until init reaps it; wait for that
    # so that nobody (pgrep, the next env-up) sees it afterwards.
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    pid: int | None = None,
    log: Path | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``ready`` until it holds; fail early, with the log's tail, if ``pid`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not alive(pid):
            detail = f"\n--- last lines of {log} ---\n{tail(log)}" if log else ""
            raise StackError(f"{what}: the process exited before it was ready{detail}")
        time.sleep(interval)
    detail = f"\n--- last lines of {log} ---\n{tail(log)}" if log else ""
    raise StackError(f"{what}: not ready after {timeout:.0f}s{detail}")
