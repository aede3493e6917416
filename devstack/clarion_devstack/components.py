"""What the stack records about each running component, and how to restart it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict


class ComponentRecord(TypedDict):
    """One component as written to ``env.json``."""

    pid: int
    log: str
    argv: list[str]
    cwd: str | None


@dataclass(frozen=True)
class Launch:
    """How to start a component: enough to start it again after a stop."""

    name: str
    argv: tuple[str, ...]
    log: Path
    cwd: Path | None = None

    def record(self, pid: int) -> ComponentRecord:
        return {
            "pid": pid,
            "log": str(self.log),
            "argv": list(self.argv),
            "cwd": str(self.cwd) if self.cwd else None,
        }

    @classmethod
    def from_record(cls, name: str, record: ComponentRecord) -> Launch:
        cwd = record["cwd"]
        return cls(name, tuple(record["argv"]), Path(record["log"]), Path(cwd) if cwd else None)
