"""Give freed memory back to the system: glibc's allocator, tuned at start-up and trimmed.

Under churn the worker allocates and frees large buffers all the time (Kafka fetch
responses of read-backs, up to 1 MiB each; handshake and frame buffers). glibc raises its
mmap threshold dynamically after such a buffer is freed, so later ones land on the heap,
and a heap with live objects scattered through it is never returned: in the churn soak
(docs/benchmarks.md) RSS stayed 130 MiB above the idle baseline once every client had
gone. Fixing both thresholds at 128 KiB (glibc's own starting value) keeps big buffers
in their own mappings, returned when freed, and lets the heap's top be trimmed; and
``trim`` after the worker's deliberate full collections (``WorkerRuntime.collect_if_due``)
hands back the free pages inside the heap too.

This is the C library's documented interface (``mallopt(3)``, ``malloc_trim(3)``),
reached through ``ctypes``. Anything else (musl, macOS) has neither and is left alone, as
is a process whose operator already chose with ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from typing import Final

#: mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: Both thresholds: glibc's own initial value, kept instead of raised.
THRESHOLD_BYTES: Final = 128 * 1024
_ENV_CHOICES: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


_LIBC: Final = _libc()


def tune(environ: Mapping[str, str]) -> bool:
    """Fix glibc's mmap and trim thresholds, unless the environment already sets them.

    Returns whether the allocator was tuned."""
    if _LIBC is None or any(name in environ for name in _ENV_CHOICES):
        return False
    mmap: int = _LIBC.mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES)
    trim: int = _LIBC.mallopt(_M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    return mmap == 1 and trim == 1


def trim() -> bool:
    """Return free heap pages to the system (``malloc_trim(0)``); whether any were."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
