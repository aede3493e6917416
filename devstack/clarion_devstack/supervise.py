"""``python -m clarion_devstack.supervise --name NAME -- COMMAND...``: keep one component
running, as the kubelet (static pods) or systemd keep a real control plane's.

kube-controller-manager and kube-scheduler run with leader election, as in production:
when the API server is gone longer than their renew deadline they lose their lease and
exit ("leaderelection lost"), and a fresh process, restarted at once, lists everything
when the API server is back. Without a supervisor they would stay dead; with leader
election off they stay up but sit in client-go's watch backoff for a minute.

The supervisor is what the stack records and stops: its PID leads the process group the
stack started, the child stays in that group (so ``procs.stop`` ends both), and the child
is killed by the kernel if the supervisor dies first (``PR_SET_PDEATHSIG``), so no orphan
is ever left. On SIGTERM, SIGINT or SIGHUP it stops the child (SIGTERM, then SIGKILL after
``--grace`` seconds) and exits. Every exit and restart is logged, with the child's exit
code, to the supervisor's output: the component's log.

With ``--wait-for URL`` a start waits until the URL answers ``ok`` (the API server's
``/readyz``): a process started while the API server is away would sit in client-go's
list/watch backoff and only list everything tens of seconds after its return (a fresh one
started then lists at once), so the child is started as soon as it is back.

``next_start`` decides (pure); ``main`` drives processes and signals.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

#: prctl(2) option: the signal the kernel sends a child when its parent thread dies.
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    """Restart after every exit: 0.5 s after a run that lasted, with a short capped
    backoff while the child keeps exiting soon after it starts (an API server still
    down refuses its first requests): 0.5, 1, 2, 2, ... s by default. The cap stays
    short so that a component that crashed in a loop through an outage is started again
    within ``cap`` seconds of the outage's end."""

    first: float = 0.5
    cap: float = 2.0
    #: A run at least this long resets the backoff: the child was not crash-looping.
    stable_after: float = 10.0


@dataclass(frozen=True)
class Restart:
    """Start the child again after ``delay`` seconds; it is the ``streak``-th start in a
    row after a quick exit (0 after a run that lasted)."""

    delay: float
    streak: int


def next_start(
    policy: RestartPolicy, *, streak: int, ran_for: float, stopping: bool
) -> Restart | None:
    """After the child exited (having run ``ran_for`` seconds; ``streak`` quick exits
    before this run): when to start it again, or None when the supervisor is stopping."""
    if stopping:
        return None
    if ran_for >= policy.stable_after:
        return Restart(policy.first, 0)
    return Restart(min(policy.cap, policy.first * 2.0**streak), streak + 1)


def describe_exit(returncode: int) -> str:
    """``Popen.returncode`` in words: negative is the signal that ended the child."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return setup


def answers_ok(url: str, ca_file: str | None) -> bool:
    """``url`` answers 200 with the body ``ok`` (HTTPS verified against ``ca_file``)."""
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return bool(resp.read().strip() == b"ok")
    except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
        return False


class Supervisor:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        policy: RestartPolicy,
        grace: float,
        ready: Callable[[], bool] | None = None,
        ready_what: str = "",
    ):
        self.name = name
        self.argv = list(argv)
        self.policy = policy
        self.grace = grace
        self.ready = ready
        self.ready_what = ready_what
        self.stopping = False

    def log(self, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        print(f"[supervise {stamp}] {self.name}: {message}", flush=True)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the loop below signals the child within 0.2 s.
        self.stopping = True

    def start(self) -> subprocess.Popen[bytes]:
        # The child inherits our stdout/stderr (the component's log) and process group.
        return subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent(os.getpid())
        )

    def wait(self, child: subprocess.Popen[bytes]) -> int:
        """Until the child exits; once stopping, SIGKILL it after the grace period."""
        killed_at: float | None = None
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping:
                if killed_at is None:
                    self.log(f"stopping: SIGTERM to pid {child.pid}")
                    child.send_signal(signal.SIGTERM)
                    killed_at = time.monotonic() + self.grace
                elif time.monotonic() >= killed_at:
                    self.log(
                        f"pid {child.pid} still running {self.grace:g} s after SIGTERM: SIGKILL"
                    )
                    child.kill()
                    killed_at = float("inf")

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def wait_ready(self) -> bool:
        """Until ``ready`` holds (polled every 0.5 s): False if stopping meanwhile."""
        if self.ready is None or self.ready():
            return True
        since = time.monotonic()
        self.log(f"waiting for {self.ready_what} before starting")
        while not self.stopping:
            self.pause(0.5)
            if self.ready():
                self.log(f"{self.ready_what} ready after {time.monotonic() - since:.1f} s")
                return True
        return False

    def run(self) -> int:
        streak = 0
        while not self.stopping:
            if not self.wait_ready():
                break
            started = time.monotonic()
            try:
                child = self.start()
            except OSError as exc:
                self.log(f"cannot start {self.argv[0]}: {exc}")
                return 127
            self.log(f"started pid {child.pid}")
            code = self.wait(child)
            ran_for = time.monotonic() - started
            decision = next_start(
                self.policy, streak=streak, ran_for=ran_for, stopping=self.stopping
            )
            if decision is None:
                self.log(f"pid {child.pid} {describe_exit(code)} after {ran_for:.1f} s; stopped")
                return 0
            streak = decision.streak
            self.log(
                f"pid {child.pid} {describe_exit(code)} after {ran_for:.1f} s; "
                f"restarting in {decision.delay:g} s"
            )
            self.pause(decision.delay)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clarion_devstack.supervise", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--name", required=True, help="the component, for the log lines")
    parser.add_argument(
        "--grace", type=float, default=8.0, help="seconds between SIGTERM and SIGKILL"
    )
    parser.add_argument("--wait-for", help="start only once this URL answers ok")
    parser.add_argument("--ca-file", help="CA to verify the --wait-for URL's certificate")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")
    url: str | None = args.wait_for
    ready = (lambda: answers_ok(url, args.ca_file)) if url else None
    supervisor = Supervisor(args.name, command, RestartPolicy(), args.grace, ready, url or "")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
