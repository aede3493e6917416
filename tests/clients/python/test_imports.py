"""What an app gets when it imports the client: the client, the contract's close codes,
websockets and httpx, and no module of the worker, the operator or their frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = (
    "clarion_worker",
    "clarion_operator",
    "clarion_devstack",
    "starlette",
    "uvicorn",
    "aiokafka",
    "prometheus_client",
    "kopf",
    "kubernetes",
    "pydantic",
)


def test_importing_the_client_loads_nothing_of_the_server_side() -> None:
    probe = (
        "import json, sys, clarion_client, clarion_client.cli; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    assert {"clarion_client", "clarion_contract", "websockets", "httpx"} <= loaded
    assert not loaded & set(SERVER_SIDE)
