"""The single source of the ``RealtimeChannel`` CustomResourceDefinition.

The chart's ``crds/realtimechannels.yaml`` and ``manifests/crd.yaml`` are generated from
:func:`render_yaml`; never edit them by hand (a drift test fails). The ``spec`` schema is
generated from the spec's pydantic models (``clarion_contract.channel_spec``): each
field's type, default, bounds, enum, pattern and ``description`` (``kubectl explain`` is
the user's manual), each model's ``CEL`` rules as ``x-kubernetes-validations``. The
``status`` schema is written here with small builders.

Defaulting note: the API server applies a nested default only when the parent object is
present, so optional parent objects whose children all have defaults are given
``default: {}``. The operator applies the same defaults itself (the models) and never
relies on the API server having done so.

Strings and lists used in CEL have ``maxLength``/``maxItems`` so the API server can bound
rule cost.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from clarion_contract.channel_spec import (
    DEFAULT_AFFINITY_TIMEOUT as DEFAULT_AFFINITY_TIMEOUT,
)
from clarion_contract.channel_spec import (
    DEFAULT_DRAIN_WINDOW_SECONDS as DEFAULT_DRAIN_WINDOW_SECONDS,
)
from clarion_contract.channel_spec import (
    DEFAULT_IMAGE as DEFAULT_IMAGE,
)
from clarion_contract.channel_spec import (
    DEFAULT_INGRESS_CLASS as DEFAULT_INGRESS_CLASS,
)
from clarion_contract.channel_spec import (
    DEFAULT_MAX_REPLICAS as DEFAULT_MAX_REPLICAS,
)
from clarion_contract.channel_spec import (
    DEFAULT_MIN_REPLICAS as DEFAULT_MIN_REPLICAS,
)
from clarion_contract.channel_spec import (
    DEFAULT_PARTITIONS as DEFAULT_PARTITIONS,
)
from clarion_contract.channel_spec import (
    DEFAULT_REPLICAS as DEFAULT_REPLICAS,
)
from clarion_contract.channel_spec import (
    DEFAULT_SCRAPE_INTERVAL as DEFAULT_SCRAPE_INTERVAL,
)
from clarion_contract.channel_spec import (
    DEFAULT_SSE_PATH as DEFAULT_SSE_PATH,
)
from clarion_contract.channel_spec import (
    DEFAULT_STICKY_COOKIE as DEFAULT_STICKY_COOKIE,
)
from clarion_contract.channel_spec import (
    DEFAULT_STICKY_MAX_AGE as DEFAULT_STICKY_MAX_AGE,
)
from clarion_contract.channel_spec import (
    DEFAULT_STREAM_TIMEOUT as DEFAULT_STREAM_TIMEOUT,
)
from clarion_contract.channel_spec import (
    DEFAULT_TARGET_CPU as DEFAULT_TARGET_CPU,
)
from clarion_contract.channel_spec import (
    DEFAULT_WEBSOCKET_PATH as DEFAULT_WEBSOCKET_PATH,
)
from clarion_contract.channel_spec import (
    DNS_LABEL_PATTERN as DNS_LABEL_PATTERN,
)
from clarion_contract.channel_spec import (
    DNS_SUBDOMAIN_PATTERN as DNS_SUBDOMAIN_PATTERN,
)
from clarion_contract.channel_spec import (
    DURATION_PATTERN as DURATION_PATTERN,
)
from clarion_contract.channel_spec import (
    HOST_PATTERN as HOST_PATTERN,
)
from clarion_contract.channel_spec import (
    HTTP_PATH_PATTERN as HTTP_PATH_PATTERN,
)
from clarion_contract.channel_spec import (
    MAX_HOSTNAMES as MAX_HOSTNAMES,
)
from clarion_contract.channel_spec import (
    MIN_STREAM_TIMEOUT as MIN_STREAM_TIMEOUT,
)
from clarion_contract.channel_spec import (
    NOT_BLANK_PATTERN as NOT_BLANK_PATTERN,
)
from clarion_contract.channel_spec import (
    QUANTITY_PATTERN as QUANTITY_PATTERN,
)
from clarion_contract.channel_spec import (
    SECRET_KEY_PATTERN as SECRET_KEY_PATTERN,
)
from clarion_contract.channel_spec import (
    TOPIC_NAME_PATTERN as TOPIC_NAME_PATTERN,
)
from clarion_contract.channel_spec import (
    Cel,
    Crd,
    RealtimeChannelSpec,
)
from clarion_contract.worker_config import not_blank
from clarion_contract.zones import TIMESTAMP_ZONE_PATTERN as TIMESTAMP_ZONE_PATTERN

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

Schema = dict[str, Any]


# --- schema builders ---------------------------------------------------------------


def rule(expr: str, message: str, *, field_path: str | None = None) -> Schema:
    """One CEL validation rule with the message users see when it fails."""
    out: Schema = {"rule": expr, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


def string(
    desc: str,
    *,
    default: str | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    fmt: str | None = None,
) -> Schema:
    out: Schema = {"type": "string", "description": desc}
    if enum is not None:
        out["enum"] = list(enum)
    if pattern is not None:
        out["pattern"] = pattern
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    if fmt is not None:
        out["format"] = fmt
    if default is not None:
        out["default"] = default
    return out


def integer(
    desc: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
) -> Schema:
    out: Schema = {"type": "integer", "description": desc}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if default is not None:
        out["default"] = default
    return out


def number(
    desc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    default: float | None = None,
) -> Schema:
    out: Schema = {"type": "number", "description": desc}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if default is not None:
        out["default"] = default
    return out


def boolean(desc: str, *, default: bool | None = None) -> Schema:
    out: Schema = {"type": "boolean", "description": desc}
    if default is not None:
        out["default"] = default
    return out


def obj(
    desc: str,
    props: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Schema, ...] = (),
    default: dict[str, Any] | None = None,
) -> Schema:
    out: Schema = {"type": "object", "description": desc, "properties": props}
    if required:
        out["required"] = list(required)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    if default is not None:
        out["default"] = default
    return out


def array(
    desc: str,
    items: Schema,
    *,
    map_keys: tuple[str, ...] | None = None,
    list_type: str | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    rules: tuple[Schema, ...] = (),
) -> Schema:
    out: Schema = {"type": "array", "description": desc, "items": items}
    if map_keys is not None:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = list(map_keys)
    elif list_type is not None:
        out["x-kubernetes-list-type"] = list_type
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


def string_map(desc: str, *, value_desc: str, max_properties: int = 64) -> Schema:
    return {
        "type": "object",
        "description": desc,
        "additionalProperties": {"type": "string", "description": value_desc},
        "maxProperties": max_properties,
    }


def quantity_map(desc: str) -> Schema:
    return {
        "type": "object",
        "description": desc,
        "additionalProperties": {
            "description": "A Kubernetes quantity, for example 250m or 512Mi.",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        },
    }


# --- the spec, from its models -----------------------------------------------------


def model_description(model: type[BaseModel]) -> str:
    """The first paragraph of the model's docstring, on one line."""
    return " ".join((model.__doc__ or "").split("\n\n")[0].split())


def model_schema(
    model: type[BaseModel], desc: str | None = None, *, default: bool = False
) -> Schema:
    """The OpenAPI schema of ``model``: one property per field (camelCase key), the
    required ones listed, the model's ``CEL`` rules, ``default: {}`` when asked."""
    stated: frozenset[str] | None = getattr(model, "CRD_DEFAULTS", None)
    props: dict[str, Schema] = {}
    required: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        props[key] = _field(info, with_default=stated is None or key in stated)
        if info.is_required():
            required.append(key)
    rules = tuple(_rule(item) for item in getattr(model, "CEL", ()))
    return obj(
        desc or model_description(model),
        props,
        required=tuple(required),
        rules=rules,
        default={} if default else None,
    )


def _rule(item: Cel | tuple[str, str]) -> Schema:
    if isinstance(item, Cel):
        return rule(item.rule, item.message, field_path=item.field_path)
    return rule(*item)


def _field(info: FieldInfo, *, with_default: bool) -> Schema:
    base, metadata = _unwrap(info.annotation, list(info.metadata))
    desc = info.description or ""
    mark = next((m for m in metadata if isinstance(m, Crd)), Crd())
    bound = _bounds(metadata)
    has_default = not info.is_required() and info.default_factory is None
    if isinstance(base, type) and issubclass(base, BaseModel):
        # An object whose default is "every key unset" is defaulted to {} in the CRD too.
        empty = has_default and isinstance(info.default, base) and info.default == base()
        return model_schema(base, info.description, default=empty)
    origin = typing.get_origin(base)
    if origin is tuple:
        item, item_meta = _unwrap(typing.get_args(base)[0], [])
        if isinstance(item, type) and issubclass(item, BaseModel):
            items = model_schema(item)
        else:
            items = _scalar(item, item_meta, mark.items, None, mark)
        return array(
            desc,
            items,
            map_keys=mark.map_keys or None,
            list_type=None if mark.map_keys else mark.list_type,
            min_items=bound["min_length"],
            max_items=bound["max_length"],
        )
    if origin in (dict, Mapping):
        if mark.quantities:
            return quantity_map(desc)
        return string_map(desc, value_desc=mark.items, max_properties=bound["max_length"] or 64)
    value = info.default if has_default and with_default else None
    return _scalar(base, metadata, desc, value, mark, extra=info.json_schema_extra)


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    return {
        name: next((getattr(m, name) for m in metadata if getattr(m, name, None) is not None), None)
        for name in ("ge", "le", "min_length", "max_length", "pattern")
    }


def _scalar(
    base: Any,
    metadata: list[Any],
    desc: str,
    default: Any,
    mark: Crd,
    *,
    extra: object = None,
) -> Schema:
    bound = _bounds(metadata)
    if typing.get_origin(base) is typing.Literal:
        return string(desc, enum=typing.get_args(base), default=default)
    if base is bool:
        return boolean(desc, default=default)
    if base is int:
        return integer(desc, minimum=bound["ge"], maximum=bound["le"], default=default)
    if base is str:
        if isinstance(extra, dict) and extra.get("pattern") is not None:
            bound["pattern"] = extra["pattern"]
        text = any(getattr(m, "func", None) is not_blank for m in metadata)
        return string(
            desc,
            default=default,
            pattern=NOT_BLANK_PATTERN if text else bound["pattern"],
            enum=mark.enum or None,
            min_length=1 if text else bound["min_length"],
            max_length=bound["max_length"],
        )
    raise TypeError(f"{base!r} is not generated yet")


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The type under ``Optional`` and ``Annotated``, with all the metadata."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(inner[0], metadata)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _unwrap(base, [*metadata, *extra])
    return annotation, metadata


def spec_schema() -> Schema:
    """The ``spec`` schema."""
    return model_schema(RealtimeChannelSpec)


# --- status ------------------------------------------------------------------------


def status_schema() -> Schema:
    """The ``status`` schema: declared field by field (kopf and kubectl rely on it)."""
    condition = obj(
        "A condition in Kubernetes API conventions.",
        {
            "type": string(
                "Ready, TopicsReady, WorkersReady, Exposed or Monitored.", max_length=316
            ),
            "status": string("True, False or Unknown.", enum=("True", "False", "Unknown")),
            "reason": string("CamelCase reason, machine-readable.", max_length=1024),
            "message": string("Human-readable details.", max_length=32768),
            "lastTransitionTime": string("When status last changed.", fmt="date-time"),
            "observedGeneration": integer(
                "metadata.generation the condition was computed for.", minimum=0
            ),
        },
        required=("type", "status"),
    )
    topic = obj(
        "Observed state of one topic.",
        {
            "name": string("Topic name."),
            "partitions": integer("Partition count in Kafka (or to be created)."),
            "replicationFactor": integer("Replication factor in Kafka."),
            "configInSync": boolean("Dynamic config overrides equal the spec."),
            "state": string(
                "Ready, Creating, Updating, NotSupported, ReplicationFactorChangeNotApplied, "
                "ResourceConflict or Error."
            ),
            "reason": string("CamelCase reason when not Ready."),
            "message": string("Details when not Ready."),
        },
        required=("name",),
    )
    workers = obj(
        "Observed state of the worker Deployment.",
        {
            "desired": integer("Replicas wanted."),
            "ready": integer("Replicas ready."),
            "updated": integer("Replicas running the current template."),
            "available": integer("Replicas available."),
        },
    )
    return obj(
        "Observed state, written by the operator.",
        {
            "observedGeneration": integer("metadata.generation last reconciled.", minimum=0),
            "conditions": array(
                "Ready, TopicsReady, WorkersReady, and Exposed and Monitored when they apply.",
                condition,
                map_keys=("type",),
            ),
            "topics": array("Per-topic state.", topic, map_keys=("name",)),
            "topicsSummary": string("Ready topics over desired topics, e.g. 2/2."),
            "workers": workers,
            "workersSummary": string("Ready workers over desired workers, e.g. 2/2."),
            "endpoint": string("URL clients connect to."),
            "replicas": integer("Current worker replicas (scale subresource)."),
            "selector": string("Label selector of the worker pods (scale subresource)."),
            "configHash": string("sha256 of the rendered worker settings."),
            "kopf": {
                "type": "object",
                "description": "Handler progress kept by the kopf framework; not for users.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    )


def printer_columns() -> list[Schema]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "description": "Ready condition status.",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "description": "Ready condition reason.",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {
            "name": "Topics",
            "type": "string",
            "description": "Ready topics over desired topics.",
            "jsonPath": ".status.topicsSummary",
        },
        {
            "name": "Workers",
            "type": "string",
            "description": "Ready workers over desired workers.",
            "jsonPath": ".status.workersSummary",
        },
        {
            "name": "Endpoint",
            "type": "string",
            "description": "URL clients connect to.",
            "jsonPath": ".status.endpoint",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def open_api_schema() -> Schema:
    return {
        "type": "object",
        "description": "A realtime channel: Kafka topics streamed to WebSocket and SSE clients "
        "by horizontally scaled workers.",
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "RealtimeChannel."},
            # Structural schemas allow nothing but the type on metadata.
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            rule(
                f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                f"name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(it prefixes the worker objects' names)",
            )
        ],
    }


def crd_manifest() -> dict[str, Any]:
    """The whole CustomResourceDefinition, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "clarion",
                "app.kubernetes.io/part-of": "clarion",
                "app.kubernetes.io/component": "crd",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["clarion"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


_HEADER: Final = "# Generated by clarion_operator.core.crd.render_yaml(); do not edit by hand.\n"


def render_yaml() -> str:
    """Deterministic YAML text of :func:`crd_manifest` (insertion order, no aliases)."""

    class _NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    body = yaml.dump(
        crd_manifest(),
        Dumper=_NoAliasDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return _HEADER + body
