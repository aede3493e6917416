"""The one contract between Clarion's operator and its workers.

The operator renders a ``RealtimeChannel`` into a worker settings document (a JSON
file in a ConfigMap); the worker loads that document into its settings. This package
holds the document's model (``worker_config``: keys, defaults, bounds, rules, the
loader), the wire protocol's close codes (``close_codes``, which the Python client reads
too) and the few shared constants, and nothing else: no I/O, no framework imports.
import-linter keeps the operator and the worker from importing each other, so every
fact both sides need lives here.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker_config import (
        AUDIENCES,
        CONFIG_API_VERSION,
        CONFIG_FILENAME,
        HEALTH_PATH,
        JWT_ALGORITHMS,
        JWT_ALGORITHMS_ASYMMETRIC,
        JWT_ALGORITHMS_HMAC,
        LIMIT_DEFAULTS,
        METRICS_PATH,
        MIN_CLIENT_FRAME_BYTES,
        READY_PATH,
        SASL_MECHANISMS,
        SECURITY_PROTOCOLS,
        WORKER_PORT,
        Audience,
        AuthSettings,
        DrainSettings,
        HeartbeatSettings,
        KafkaSecurity,
        KafkaSettings,
        LimitsSettings,
        ResumeSettings,
        RoutingSettings,
        ServerSettings,
        SettingsError,
        TopicSettings,
        WorkerConfig,
        WorkerSettings,
        load_worker_settings,
        validate_document,
    )

__all__ = [
    "AUDIENCES",
    "CONFIG_API_VERSION",
    "CONFIG_FILENAME",
    "HEALTH_PATH",
    "JWT_ALGORITHMS",
    "JWT_ALGORITHMS_ASYMMETRIC",
    "JWT_ALGORITHMS_HMAC",
    "LIMIT_DEFAULTS",
    "METRICS_PATH",
    "MIN_CLIENT_FRAME_BYTES",
    "READY_PATH",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "WORKER_PORT",
    "Audience",
    "AuthSettings",
    "DrainSettings",
    "HeartbeatSettings",
    "KafkaSecurity",
    "KafkaSettings",
    "LimitsSettings",
    "ResumeSettings",
    "RoutingSettings",
    "ServerSettings",
    "SettingsError",
    "TopicSettings",
    "WorkerConfig",
    "WorkerSettings",
    "load_worker_settings",
    "validate_document",
]


if not TYPE_CHECKING:  # mypy reads the names above; a typo must stay an error there

    def __getattr__(name: str) -> object:
        """The names above load the settings model (pydantic) on first use only: the
        client, which imports ``clarion_contract.close_codes``, never pays for it."""
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from . import worker_config

        value = getattr(worker_config, name)
        globals()[name] = value
        return value
