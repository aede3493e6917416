"""Files generated from charts/clarion: the plain install manifest and the values reference.

``python -m clarion_devstack.charts --write`` regenerates the manifest (``make
manifests``); ``--check`` exits 1 when it is stale. One source: the chart renders
``manifests/install.yaml`` with ``manifests/values.yaml``. The values reference in
``docs/install.md`` is built from the ``# --`` comments of ``charts/clarion/values.yaml``
by the cog block around it (``values_reference_of_checkout``; see ``clarion_devstack.docs``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from . import install
from .docs import write_or_check
from .procs import StackError
from .settings import CHECKOUT, DevstackSettings

CHART: Final = Path("charts/clarion")
INSTALL_YAML: Final = Path("manifests/install.yaml")
INSTALL_VALUES: Final = Path("manifests/values.yaml")
RELEASE: Final = "clarion"
NAMESPACE: Final = "clarion-system"

_HEADER: Final = f"""\
# Generated from charts/clarion by `make manifests` (helm template with manifests/values.yaml);
# do not edit by hand. The RealtimeChannel CRD, the operator in namespace {NAMESPACE} watching
# every namespace, its ServiceAccount and RBAC.
"""
_NAMESPACE_DOC: Final = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: clarion
"""


def helm_binary(settings: DevstackSettings) -> Path:
    """The pinned helm, built from the Go module proxy unless cached."""
    return install.ensure_go(settings, install.HELM) / "helm"


@dataclass(frozen=True)
class Helm:
    """The pinned helm over charts/clarion (used by the chart tests)."""

    binary: Path
    checkout: Path

    @property
    def chart(self) -> Path:
        return self.checkout / CHART

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def template(self, *args: str, namespace: str = NAMESPACE, values: Sequence[Path] = ()) -> str:
        files = [f"--values={v}" for v in values]
        return self.run(
            "template", RELEASE, str(self.chart), f"--namespace={namespace}", *files, *args
        ).stdout

    def objects(
        self, *args: str, namespace: str = NAMESPACE, values: Sequence[Path] = ()
    ) -> list[dict[str, Any]]:
        text = self.template(*args, namespace=namespace, values=values)
        return [doc for doc in yaml.safe_load_all(text) if doc]


def render_install(helm: Path, checkout: Path) -> str:
    """``manifests/install.yaml``: a Namespace, then the chart rendered without its tests."""
    result = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(checkout / CHART),
            "--namespace",
            NAMESPACE,
            "--include-crds",
            "--skip-tests",
            "--values",
            str(checkout / INSTALL_VALUES),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"helm template failed:\n{result.stderr}")
    # Objects applied with kubectl are not managed by Helm: say so, or a later
    # `helm install` would believe it owns them.
    body = result.stdout.replace(
        "app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: kubectl"
    )
    return f"{_HEADER}---\n{_NAMESPACE_DOC}{body}"


@dataclass(frozen=True)
class ValueDoc:
    key: str
    type: str
    default: str
    description: str


def _type_of(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _lookup(values: Mapping[str, Any], dotted: str) -> object:
    node: object = values
    for part in dotted.split("."):
        assert isinstance(node, Mapping)
        node = node[part]
    return node


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?:\s|$)")


def values_docs(text: str) -> list[ValueDoc]:
    """Every key of a values.yaml preceded by a ``# --`` comment, in file order."""
    values = yaml.safe_load(text) or {}
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            dotted = ".".join(key for _, key in stack)
            value = _lookup(values, dotted)
            docs.append(
                ValueDoc(
                    key=dotted,
                    type=_type_of(value),
                    default=json.dumps(value, separators=(",", ":")),
                    description=" ".join(pending),
                )
            )
            pending = None
    return docs


def undocumented(text: str) -> list[str]:
    """Keys of a values.yaml with neither a ``# --`` comment nor a documented parent."""
    documented = {doc.key for doc in values_docs(text)}

    def walk(node: Mapping[str, Any], prefix: str) -> Iterator[str]:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in documented:
                continue
            if isinstance(value, Mapping) and value:
                yield from walk(value, f"{dotted}.")
            else:
                yield dotted

    return list(walk(yaml.safe_load(text) or {}, ""))


def values_reference(text: str) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for doc in values_docs(text):
        default = doc.default.replace("|", "\\|")
        rows.append(f"| `{doc.key}` | {doc.type} | `{default}` | {doc.description} |")
    return "\n".join(rows) + "\n"


def values_reference_of_checkout() -> str:
    """The values reference of this checkout's chart (docs/install.md's cog block)."""
    return values_reference((CHECKOUT / CHART / "values.yaml").read_text())


def generated(helm: Path, checkout: Path) -> dict[Path, str]:
    """Each generated file's expected content, keyed by its path in the checkout."""
    return {INSTALL_YAML: render_install(helm, checkout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_devstack.charts", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the process edge
    try:
        files = generated(helm_binary(settings), settings.checkout)
    except StackError as exc:
        print(f"[clarion] error: {exc}", file=sys.stderr)
        return 1
    return write_or_check(files, settings.checkout, write=args.write, remedy="make manifests")


if __name__ == "__main__":
    sys.exit(main())
