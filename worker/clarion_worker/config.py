"""The worker's process edge for settings: read the file, apply the environment, load
secrets named by the settings. The only place in the worker that touches either."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clarion_worker.core.settings import (
    SettingsError,
    WorkerSettings,
    load_settings,
    parse_document,
)

#: Environment variables the edge itself reads (not settings keys).
EDGE_ENV = ("CLARION_CONFIG", "CLARION_LOG_LEVEL")


@dataclass(frozen=True)
class Secrets:
    hmac_secret: bytes | None
    jwks: Mapping[str, Any] | None


def load(path: Path, environ: Mapping[str, str]) -> WorkerSettings:
    """Settings from ``path`` (JSON or YAML) with ``CLARION_*`` overrides from ``environ``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SettingsError([f"(file) {path}: cannot read: {error.strerror}"]) from error
    return load_settings(
        parse_document(text), environ, hostname=socket.gethostname(), edge_env_names=EDGE_ENV
    )


def load_secrets(settings: WorkerSettings) -> Secrets:
    """Read the HMAC secret and a JWKS file, if the settings name them."""
    auth = settings.auth
    hmac = _read(auth.hmac_secret_file).strip() if auth.hmac_secret_file else None
    jwks = None
    if auth.jwks_file:
        try:
            jwks = json.loads(_read(auth.jwks_file))
        except ValueError as error:
            raise SettingsError([f"auth.jwksFile: not a JSON key set: {error}"]) from error
    return Secrets(hmac, jwks)


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as error:
        raise SettingsError([f"{name}: cannot read: {error.strerror}"]) from error
