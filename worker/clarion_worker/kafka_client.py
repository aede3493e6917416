"""aiokafka client options from the worker's Kafka settings (security included)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from clarion_worker.core.settings import KafkaSettings

#: How long asking the bootstrap servers why they refused may take, all of them.
_PROBE_SECONDS = 5.0
#: What a broker answers to credentials or a certificate it refuses (not "unreachable").
_REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    ssl.SSLError,
)


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


async def refusal(kafka: KafkaSettings, timeout_ms: int = 10_000) -> Exception | None:
    """Why the brokers refuse this worker (wrong password, untrusted CA), if they do.

    aiokafka's bootstrap reports every failure as "Unable to bootstrap" and keeps the
    reason in a log line of its own: this asks the bootstrap servers again, one by one,
    with the same options (the credential files read afresh), and returns the refusal.
    """
    try:
        options = client_options(kafka)
    except OSError:
        return None  # a credential file went missing: the caller reports that itself
    try:
        # Bounded: a frozen broker must not double the time to report it unreachable.
        async with asyncio.timeout(_PROBE_SECONDS):
            for server in kafka.bootstrap_servers.split(","):
                host, _, port = server.strip().rpartition(":")
                try:
                    probe = await create_conn(
                        host,
                        int(port),
                        client_id=options["client_id"],
                        request_timeout_ms=timeout_ms,
                        ssl_context=options.get("ssl_context"),
                        security_protocol=options["security_protocol"],
                        sasl_mechanism=options.get("sasl_mechanism"),
                        sasl_plain_username=options.get("sasl_plain_username"),
                        sasl_plain_password=options.get("sasl_plain_password"),
                    )
                except _REFUSALS as refused:
                    return refused
                except (TimeoutError, OSError, ValueError, KafkaConnectionError):
                    continue  # this one is unreachable: try the next
                probe.close()
    except TimeoutError:
        pass
    return None
