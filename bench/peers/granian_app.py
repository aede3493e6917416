"""Clarion's worker app for granian: ``granian --interface asgi --factory granian_app:create``.

The same runtime and Starlette app as ``python -m clarion_worker``, built from
``$CLARION_CONFIG``; granian replaces uvicorn (and the worker's own drain wrapper).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from clarion_worker import config
from clarion_worker.app import create_app
from clarion_worker.runtime import WorkerRuntime


def create() -> Starlette:
    environ = dict(os.environ)  # noqa: TID251 - the process edge
    settings = config.load(Path(environ["CLARION_CONFIG"]), environ)
    runtime = WorkerRuntime(settings, config.load_secrets(settings), CollectorRegistry())
    return create_app(runtime)
