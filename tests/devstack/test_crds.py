"""Reading a CRD's Established condition, including before its status is written."""

from __future__ import annotations

import json

from clarion_devstack.crds import established, wait_established


def _crd(conditions: list[dict[str, str]] | None) -> str:
    body: dict[str, object] = {"kind": "CustomResourceDefinition", "metadata": {"name": "x"}}
    if conditions is not None:
        body["status"] = {"conditions": conditions}
    return json.dumps(body)


def test_a_crd_without_a_status_yet_is_not_established_and_does_not_fail() -> None:
    assert not established(_crd(None))
    assert not established(_crd([]))
    assert not established(_crd([{"type": "Established", "status": "False"}]))
    assert established(_crd([{"type": "NamesAccepted", "status": "True"},
                             {"type": "Established", "status": "True"}]))  # fmt: skip


def test_the_wait_reads_again_until_every_crd_is_established() -> None:
    answers = iter([_crd(None), _crd([{"type": "Established", "status": "True"}])])
    reads: list[tuple[str, ...]] = []

    def kubectl(*args: str) -> str:
        reads.append(args)
        return next(answers)

    wait_established(kubectl, ["x"], timeout=10)
    assert reads == [("get", "crd/x", "-o", "json")] * 2
