"""Fixtures of the operator's integration tests."""

from __future__ import annotations

import pytest

from clarion_devstack import crdgen
from clarion_devstack.crds import wait_established
from clarion_devstack.pytest_plugin import LocalStack
from clarion_operator.core import crd


@pytest.fixture(scope="session")
def crd_installed(local_stack: LocalStack) -> None:
    """The RealtimeChannel CRD as the operator's model renders it (the generated-files test
    holds manifests/crd.yaml equal to it), applied and Established."""
    local_stack.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=clarion-tests",
        "-f", "-", stdin=crdgen.render_yaml(),
    )  # fmt: skip
    wait_established(local_stack.kubectl, [crd.CRD_NAME])
