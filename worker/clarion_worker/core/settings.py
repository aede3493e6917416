"""Worker settings: the contract's settings model, loaded from the operator's document
plus ``CLARION_*`` environment overrides.

The model, its defaults, bounds, cross-field rules and the override names live in
``clarion_contract.worker_config`` (the operator checks its document against the same
model); this module is the worker's view of it. ``load_settings(doc, env, hostname=...)``
never reads ``os.environ``: the edge passes the environment as a mapping.
``parse_document`` reads JSON or YAML text.
"""

from __future__ import annotations

from typing import Final

import yaml

from clarion_contract.worker_config import (
    ENV_PREFIX,
    JWT_ALGORITHMS_ASYMMETRIC,
    JWT_ALGORITHMS_HMAC,
    KEYS,
    REPLICA_ID_ENV,
    AuthSettings,
    DrainSettings,
    HeartbeatSettings,
    KafkaSecurity,
    KafkaSettings,
    KeyInfo,
    KeyReference,
    KiB,
    LimitsSettings,
    MiB,
    ResumeSettings,
    RoutingSettings,
    ServerSettings,
    SettingsError,
    TopicSettings,
    WorkerSettings,
    key_reference,
)
from clarion_contract.worker_config import load_worker_settings as load_settings

ALGORITHMS_HMAC: Final = JWT_ALGORITHMS_HMAC
ALGORITHMS_ASYMMETRIC: Final = JWT_ALGORITHMS_ASYMMETRIC

__all__ = [
    "ALGORITHMS_ASYMMETRIC",
    "ALGORITHMS_HMAC",
    "ENV_PREFIX",
    "KEYS",
    "REPLICA_ID_ENV",
    "AuthSettings",
    "DrainSettings",
    "HeartbeatSettings",
    "KafkaSecurity",
    "KafkaSettings",
    "KeyInfo",
    "KeyReference",
    "KiB",
    "LimitsSettings",
    "MiB",
    "ResumeSettings",
    "RoutingSettings",
    "ServerSettings",
    "SettingsError",
    "TopicSettings",
    "WorkerSettings",
    "key_reference",
    "load_settings",
    "parse_document",
    "settings_to_json",
]


def parse_document(text: str) -> object:
    """Parse the settings document; JSON is YAML, so one safe YAML parse reads both."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError([f"(document): not valid JSON or YAML: {error}"]) from error


def settings_to_json(settings: WorkerSettings) -> str:
    """A stable JSON rendering, for logging the effective settings (files, never secrets)."""
    return settings.model_dump_json()
