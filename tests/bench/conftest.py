"""bench/ is a folder of scripts, not a package: the tests load a script from its path."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_script(stem: str) -> ModuleType:
    """``bench/<stem>.py`` as a module, once per session, registered in sys.modules (its
    dataclasses need that) with bench/ on sys.path (its sibling imports, as when run)."""
    name = f"clarion_bench_{stem}"
    module = sys.modules.get(name)
    if module is None:
        if str(BENCH) not in sys.path:
            sys.path.insert(0, str(BENCH))
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{stem}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """Load ``bench/<stem>.py`` (see ``load_script``)."""
    return load_script
