"""The local stack's settings: one frozen object, built once at the process edge."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DevstackSettings:
    """Where the stack keeps its state and caches, and which tools it runs."""

    #: The repository checkout (holds the Go wrapper modules and the Kafka pom).
    checkout: Path
    #: Per-checkout state: ``env.json``, component data and logs. Git-ignored.
    state_dir: Path
    #: Downloads and builds, keyed by pinned version; shared by every clone.
    cache_dir: Path
    go: str
    java: str
    mvn: str
    #: Start the real node (containerd, kubelet, kube-proxy) when the machine can run it;
    #: ``CLARION_REAL_NODE=0`` keeps the stack KWOK-only.
    real_node: bool = True

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.json"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], checkout: Path = CHECKOUT
    ) -> DevstackSettings:
        """Read ``CLARION_CACHE_DIR``, ``XDG_CACHE_HOME``, ``CLARION_STATE_DIR``,
        ``CLARION_REAL_NODE`` and ``HOME``."""
        if "CLARION_CACHE_DIR" in environ:
            cache = Path(environ["CLARION_CACHE_DIR"])
        else:
            home = Path(environ.get("HOME", str(Path.home())))
            cache = Path(environ.get("XDG_CACHE_HOME", str(home / ".cache"))) / "clarion"
        state = Path(environ.get("CLARION_STATE_DIR", str(checkout / ".clarion")))
        return cls(
            checkout=checkout,
            state_dir=state,
            cache_dir=cache,
            go=_tool("go", environ),
            java=_tool("java", environ),
            mvn=_tool("mvn", environ),
            real_node=environ.get("CLARION_REAL_NODE", "1").lower() not in ("0", "no", "off"),
        )


def _tool(name: str, environ: Mapping[str, str]) -> str:
    found = shutil.which(name, path=environ.get("PATH"))
    return found or name
