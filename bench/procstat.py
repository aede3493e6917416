"""CPU, memory and process trees from /proc, shared by the benchmark scripts.

Figures are per process tree (granian's worker is a child; the operator may fork), so a
server is measured the same way whatever its process model.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

_TICK: Final = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for child in _children(pid):
        pids += process_tree(child)
    return pids


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User plus system CPU of ``pid`` and its live descendants; with ``reaped``, also of
    the children ``pid`` has already waited for."""
    total = 0.0
    for one in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
            if reaped and one == pid:
                ticks += int(fields[13]) + int(fields[14])
            total += ticks / _TICK
    return total


def status_field(pid: int, key: str) -> int:
    """One numeric field of /proc/<pid>/status (0 if the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return sum(status_field(one, "VmRSS") for one in process_tree(pid))


def thread_count(pid: int) -> int:
    return sum(status_field(one, "Threads") for one in process_tree(pid))


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()
