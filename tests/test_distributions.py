"""The product ships as separate distributions: each wheel holds its own package only, and
what installing the worker (or the operator, or the client) brings holds nothing of the
other parts nor of the development stack, while every module each one imports is declared.

The wheels are built from the checkout without network (``--no-index``, hatchling from the
dev group); third-party requirements are followed through the metadata installed in the
venv, whose versions constraints.txt pins.
"""

from __future__ import annotations

import ast
import email.parser
import functools
import importlib.metadata
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

#: Distribution -> (its folder, the one import package its wheel holds).
DISTRIBUTIONS = {
    "clarion-contract": ("contract", "clarion_contract"),
    "clarion-worker": ("worker", "clarion_worker"),
    "clarion-operator": ("operator", "clarion_operator"),
    "clarion-client": ("clients/python", "clarion_client"),
    "clarion-devstack": ("devstack", "clarion_devstack"),
}
#: What only development needs: in no product's install.
DEVELOPMENT = {"clarion-devstack", "pytest", "cogapp", "confluent-kafka", "hatchling"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    folders = [str(ROOT / folder) for folder, _ in DISTRIBUTIONS.values()]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--wheel-dir", str(out), *folders),
        ],
        check=True,
    )
    built: dict[str, Path] = {}
    for wheel in out.glob("*.whl"):
        name = canonicalize_name(wheel.name.split("-", 1)[0])
        built[name] = wheel
    assert set(built) == set(DISTRIBUTIONS), built
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.HeaderParser().parsestr(archive.read(name).decode())


def _requirements(wheels: dict[str, Path], name: str) -> list[str]:
    if name in wheels:
        return _metadata(wheels[name]).get_all("Requires-Dist", [])
    return importlib.metadata.distribution(name).requires or []


def closure(wheels: dict[str, Path], root: str) -> set[str]:
    """Every distribution installing ``root`` brings, itself included (extras followed)."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = f"{name}{sorted(extras)}"
        if key in seen:
            continue
        seen.add(key)
        for text in _requirements(wheels, name):
            req = Requirement(text)
            marker = req.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {key.split("[", 1)[0] for key in seen}


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_each_wheel_holds_its_own_package_only(wheels: dict[str, Path], dist: str) -> None:
    _, package = DISTRIBUTIONS[dist]
    with zipfile.ZipFile(wheels[dist]) as archive:
        tops = {n.split("/", 1)[0] for n in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {package}


#: What installing each product brings (its closure): at least the first set, and nothing
#: of the second (the other parts, their frameworks, the development stack).
BRINGS: dict[str, tuple[set[str], set[str]]] = {
    "clarion-worker": (
        {"clarion-contract", "starlette", "uvicorn", "aiokafka"},
        {"clarion-operator", "clarion-client", "kopf", "kubernetes", *DEVELOPMENT},
    ),
    "clarion-operator": (
        {"clarion-contract", "kopf", "kubernetes", "aiokafka"},
        {"clarion-worker", "clarion-client", "starlette", "uvicorn", *DEVELOPMENT},
    ),
    # What an app installs to follow a channel: the contract's close codes, websockets and
    # httpx, and nothing the worker or the operator runs on.
    "clarion-client": (
        {"clarion-contract", "websockets", "httpx"},
        {"clarion-worker", "clarion-operator", "starlette", "uvicorn", "aiokafka",
         "prometheus-client", "kopf", "kubernetes", *DEVELOPMENT},
    ),
    "clarion-contract": (
        {"pydantic"},
        {"clarion-worker", "clarion-operator", "aiokafka", *DEVELOPMENT},
    ),
}  # fmt: skip


@pytest.fixture
def installed(wheels: dict[str, Path], dist: str) -> set[str]:
    """What installing the test's ``dist`` brings (:func:`closure`)."""
    return closure(wheels, dist)


@pytest.mark.parametrize("dist", sorted(BRINGS))
def test_each_product_brings_what_it_runs_on_and_nothing_of_the_others(
    installed: set[str], dist: str
) -> None:
    needed, foreign = BRINGS[dist]
    assert needed <= installed, needed - installed
    assert not installed & foreign, installed & foreign


def _scripts(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        lines = archive.read(name).decode().splitlines()
    section = ""
    scripts: dict[str, str] = {}
    for line in lines:
        if line.startswith("["):
            section = line.strip("[] ")
        elif section == "console_scripts" and "=" in line:
            key, _, value = line.partition("=")
            scripts[key.strip()] = value.strip()
    return scripts


def test_clarion_tail_ships_with_the_client_and_the_worker_image_runs_the_worker_only(
    wheels: dict[str, Path],
) -> None:
    assert _scripts(wheels["clarion-client"]) == {"clarion": "clarion_client.cli:main"}
    assert _scripts(wheels["clarion-worker"]) == {"clarion-worker": "clarion_worker.server:main"}


def _imported_modules(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".", 1)[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _providers(module: str) -> Iterable[str]:
    return (canonicalize_name(d) for d in _packages_distributions()[module])


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_every_module_a_distribution_imports_is_declared(installed: set[str], dist: str) -> None:
    """A module imported but not required would be missing from the image at run time."""
    folder, package = DISTRIBUTIONS[dist]
    ours = {p: d for d, (_, p) in DISTRIBUTIONS.items()}
    undeclared = []
    for module in sorted(_imported_modules(ROOT / folder / package)):
        providers = {ours[module]} if module in ours else set(_providers(module))
        if not providers & installed:
            undeclared.append(f"{module} (from {', '.join(sorted(providers))})")
    assert not undeclared, f"{dist} imports without requiring: {undeclared}"
