"""Waiting until CustomResourceDefinitions are served, with any kubectl runner.

``kubectl wait --for=condition=Established`` fails at once ("status.conditions accessor
error") on a CRD created a moment ago whose status the API server has not written yet.
With tests side by side, whichever creates the CRD first met it, so the condition is read
until it holds instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

ESTABLISHED = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
#: Between two reads of the condition: the API server sets it within a second or so.
POLL_SECONDS = 0.2


def wait_established(
    kubectl: Callable[..., str], names: Sequence[str], timeout: float = 60.0
) -> None:
    """Until every CRD in ``names`` is Established; ``kubectl(*args)`` returns stdout."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        pending = [n for n in pending if kubectl("get", f"crd/{n}", "-o", ESTABLISHED) != "True"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout:.0f} s: {pending}")
        time.sleep(POLL_SECONDS)
