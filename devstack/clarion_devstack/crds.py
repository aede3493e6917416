"""Waiting until CustomResourceDefinitions are served, with any kubectl runner; and the
document of a small one, for tests that need a kind of their own.

``kubectl wait --for=condition=Established`` fails at once ("status.conditions accessor
error") on a CRD created a moment ago whose status the API server has not written yet.
With tests side by side, whichever creates the CRD first met it, so the condition is read
until it holds instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Between two reads of the condition: the API server sets it within a second or so.
POLL_SECONDS = 0.2


def wait_established(
    kubectl: Callable[..., str], names: Sequence[str], timeout: float = 60.0
) -> None:
    """Until every CRD in ``names`` is Established; ``kubectl(*args)`` returns stdout."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        pending = [n for n in pending if not established(kubectl("get", f"crd/{n}", "-o", "json"))]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout:.0f} s: {pending}")
        time.sleep(POLL_SECONDS)


def established(crd_json: str) -> bool:
    """Whether a CRD (``kubectl get crd/NAME -o json``) has ``Established=True``; a status
    not written yet has no conditions (a jsonpath filter fails on it, so parse)."""
    conditions = (json.loads(crd_json).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def crd_document(group: str, kind: str, plural: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A namespaced CRD of one served and stored version ``v1`` whose objects follow
    ``schema`` (the openAPIV3Schema)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
