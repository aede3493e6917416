"""aiokafka client options from the worker's Kafka settings (security included)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from clarion_worker.core.settings import KafkaSettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client the worker creates."""
    security = kafka.security
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": security.protocol,
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=security.ca_file)
        if security.cert_file and security.key_file:
            context.load_cert_chain(security.cert_file, security.key_file)
        options["ssl_context"] = context
    if security.protocol.startswith("SASL"):
        options["sasl_mechanism"] = security.sasl_mechanism or "PLAIN"
        if security.username_file:
            options["sasl_plain_username"] = Path(security.username_file).read_text().strip()
        if security.password_file:
            options["sasl_plain_password"] = Path(security.password_file).read_text().strip()
    return options
