"""glibc's allocator: thresholds fixed at start-up, free pages handed back after a
collection (the churn soak in docs/benchmarks.md measures the effect on RSS)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from clarion_worker import allocator

glibc = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim"),
    reason="not glibc",
)


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@glibc
def test_an_operator_choice_in_the_environment_is_left_alone() -> None:
    assert allocator.tune({"MALLOC_TRIM_THRESHOLD_": "0"}) is False
    assert allocator.tune({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False


@glibc
def test_after_tuning_freed_buffers_and_trimmed_heap_pages_go_back_to_the_system() -> None:
    assert allocator.tune({}) is True
    baseline = _rss_kib()
    # Many medium objects (below the mmap threshold: heap), every other one kept alive,
    # so the heap cannot shrink from its top alone: the free pages are in its middle.
    chunks = [bytearray(64 * 1024) for _ in range(2000)]  # 125 MiB
    for chunk in chunks:
        chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page
    grown = _rss_kib()
    kept = chunks[1::2]
    del chunks
    assert allocator.trim() is True
    trimmed = _rss_kib()
    # Half the buffers are gone: at least a third of what was allocated came back.
    assert grown - trimmed > (grown - baseline) // 3, (baseline, grown, trimmed)
    del kept
