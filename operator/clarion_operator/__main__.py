"""``clarion-operator`` / ``python -m clarion_operator``: the operator process.

Builds the settings (flags and environment, read here and nowhere else), JSON logging,
the kubernetes client and its thread pool, the /metrics and /readyz server (ready once
kopf's startup handlers ran, not ready again from the start of its cleanup), and runs
kopf with the handlers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from clarion_operator.claims import IndexedClaims
from clarion_operator.handlers import kopf_settings, quiet_expected_retries, register
from clarion_operator.kafka_admin import AiokafkaFactory
from clarion_operator.kube import KubeClient
from clarion_operator.metrics import Metrics
from clarion_operator.reconcile import Reconciler
from clarion_operator.settings import ProcessSettings, SettingsError, from_args

_LOG_FORMATS = {
    "json": kopf.LogFormat.JSON,
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
}


def kube_configuration(settings: ProcessSettings) -> k8s.Configuration:
    """In-cluster service account, else the kubeconfig (flag, KUBECONFIG, default)."""
    configuration = k8s.Configuration()
    if settings.kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return configuration
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    return configuration


def _sized(configuration: k8s.Configuration, threads: int) -> k8s.Configuration:
    # One pooled connection per thread: urllib3's pool defaults to 5 per CPU, and past it
    # every extra concurrent call opens a connection, then drops it with a warning.
    configuration.connection_pool_maxsize = threads
    return configuration


def _login(configuration: k8s.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration the kubernetes client uses."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else parts
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = from_args(
            sys.argv[1:] if argv is None else argv,
            os.environ,  # noqa: TID251 - the process edge: the only read of the environment
        )
    except SettingsError as exc:
        print(f"clarion-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(verbose=settings.verbose, log_format=_LOG_FORMATS[settings.log_format])
    quiet_expected_retries()
    log = logging.getLogger("clarion_operator")

    configuration = _sized(kube_configuration(settings), settings.kube_api_threads)
    api = k8s.ApiClient(configuration)
    threads = ThreadPoolExecutor(settings.kube_api_threads, thread_name_prefix="kube-api")
    kube = KubeClient(api, field_manager=settings.field_manager, executor=threads)
    metrics = Metrics()
    claims = IndexedClaims()
    reconciler = Reconciler(
        kube,
        AiokafkaFactory(settings.kafka_request_timeout_ms),
        claims,
        field_manager=settings.field_manager,
        metrics=metrics,
    )
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, settings, claims)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _login(configuration)

    @kopf.on.startup(registry=registry)
    def ready(**_: Any) -> None:
        metrics.ready.set()

    @kopf.on.cleanup(registry=registry)
    def stopping(**_: Any) -> None:
        metrics.ready.clear()

    metrics.serve(settings.metrics_port)
    log.info(
        "starting clarion-operator",
        extra={
            "namespaces": list(settings.namespaces),
            "clusterwide": settings.clusterwide,
            "peering": settings.peering,
            "drift_interval": settings.drift_interval,
            "metrics_port": settings.metrics_port,
            "liveness_port": settings.liveness_port,
            "kube_api_threads": settings.kube_api_threads,
        },
    )
    try:
        kopf.run(
            registry=registry,
            settings=kopf_settings(settings),
            standalone=not settings.peering,
            peering_name=settings.peering_name if settings.peering else None,
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness_endpoint,
        )
    finally:
        # kopf has cancelled every handler by now: nothing waits on a queued call.
        threads.shutdown(wait=False, cancel_futures=True)
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
