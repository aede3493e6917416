"""Visible progress for long steps: the step's name, then elapsed time while it runs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_TICK_SECONDS = 15.0


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def say(message: str, out: TextIO | None = None) -> None:
    stream = out or sys.stderr
    print(f"[clarion] {message}", file=stream, flush=True)


@contextmanager
def step(name: str, out: TextIO | None = None, tick: float = _TICK_SECONDS) -> Iterator[None]:
    """Print ``name`` when it starts, a heartbeat every ``tick`` seconds, and its duration."""
    started = time.monotonic()
    done = threading.Event()
    say(f"> {name} ...", out)

    def heartbeat() -> None:
        while not done.wait(tick):
            say(f"  {name}: still running ({_fmt(time.monotonic() - started)})", out)

    ticker = threading.Thread(target=heartbeat, name=f"progress:{name}", daemon=True)
    ticker.start()
    try:
        yield
    except BaseException:
        say(f"x {name} failed after {_fmt(time.monotonic() - started)}", out)
        raise
    finally:
        done.set()
        ticker.join()
    say(f"ok {name} ({_fmt(time.monotonic() - started)})", out)
