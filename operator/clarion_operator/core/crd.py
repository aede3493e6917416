"""The ``RealtimeChannel`` CustomResourceDefinition's names and the spec's constants.

The CRD itself (``charts/clarion/crds/realtimechannels.yaml``, ``manifests/crd.yaml``) is
generated at development time from the spec's models (``clarion_contract.channel_spec``)
by ``clarion_devstack.crdgen`` (``make crds``); the operator needs only its names, and
the spec's defaults and patterns, re-exported here for the code that renders objects.
"""

from __future__ import annotations

from typing import Final

from clarion_contract.channel_spec import (
    DEFAULT_AFFINITY_TIMEOUT,
    DEFAULT_DRAIN_WINDOW_SECONDS,
    DEFAULT_IMAGE,
    DEFAULT_INGRESS_CLASS,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICAS,
    DEFAULT_SCRAPE_INTERVAL,
    DEFAULT_SSE_PATH,
    DEFAULT_STICKY_COOKIE,
    DEFAULT_STICKY_MAX_AGE,
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_TARGET_CPU,
    DEFAULT_WEBSOCKET_PATH,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    HOST_PATTERN,
    HTTP_PATH_PATTERN,
    MAX_HOSTNAMES,
    MIN_STREAM_TIMEOUT,
    NOT_BLANK_PATTERN,
    QUANTITY_PATTERN,
    SECRET_KEY_PATTERN,
    TOPIC_NAME_PATTERN,
)
from clarion_contract.zones import TIMESTAMP_ZONE_PATTERN

__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "DEFAULT_AFFINITY_TIMEOUT",
    "DEFAULT_DRAIN_WINDOW_SECONDS",
    "DEFAULT_IMAGE",
    "DEFAULT_INGRESS_CLASS",
    "DEFAULT_MAX_REPLICAS",
    "DEFAULT_MIN_REPLICAS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICAS",
    "DEFAULT_SCRAPE_INTERVAL",
    "DEFAULT_SSE_PATH",
    "DEFAULT_STICKY_COOKIE",
    "DEFAULT_STICKY_MAX_AGE",
    "DEFAULT_STREAM_TIMEOUT",
    "DEFAULT_TARGET_CPU",
    "DEFAULT_WEBSOCKET_PATH",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "DURATION_PATTERN",
    "GROUP",
    "HOST_PATTERN",
    "HTTP_PATH_PATTERN",
    "KIND",
    "MAX_HOSTNAMES",
    "MAX_NAME_LENGTH",
    "MIN_REPLICAS_ANNOTATION",
    "MIN_STREAM_TIMEOUT",
    "NOT_BLANK_PATTERN",
    "PLURAL",
    "QUANTITY_PATTERN",
    "SECRET_KEY_PATTERN",
    "SHORT_NAMES",
    "SINGULAR",
    "TIMESTAMP_ZONE_PATTERN",
    "TOPIC_NAME_PATTERN",
    "VERSION",
]

GROUP: Final = "realtime.clarion.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "RealtimeChannel"
PLURAL: Final = "realtimechannels"
SINGULAR: Final = "realtimechannel"
SHORT_NAMES: Final = ("rtc",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: Annotation on an autoscaled channel's worker Deployment: the HorizontalPodAutoscaler's
#: minReplicas. The Deployment starts at 1 replica (spec.replicas belongs to the HPA, so the
#: operator never writes it) and the HPA raises it to the floor on its next sync; until the
#: ready workers reach the floor, WorkersReady and Ready stay False.
MIN_REPLICAS_ANNOTATION: Final = "clarion.dev/min-replicas"

#: Channel names feed ``<name>-worker`` object names, DNS-1035 labels of at most 63.
MAX_NAME_LENGTH: Final = 56
