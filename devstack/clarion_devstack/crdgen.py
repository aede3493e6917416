"""Generate the ``RealtimeChannel`` CRD and the spec reference (development only).

The ``spec`` schema comes from the spec's pydantic models
(``clarion_contract.channel_spec``): each field's type, default, bounds, enum, pattern
and ``description`` (``kubectl explain`` is the user's manual), each model's ``CEL``
rules as ``x-kubernetes-validations``. The ``status`` schema is written here with small
builders. The operator carries none of this: it only needs the names in
``clarion_operator.core.crd``.

Defaulting note: the API server applies a nested default only when the parent object is
present, so optional parent objects whose children all have defaults are given
``default: {}``. The operator applies the same defaults itself (the models) and never
relies on the API server having done so. Strings and lists used in CEL have
``maxLength``/``maxItems`` so the API server can bound rule cost.

``python -m clarion_devstack.crdgen --write`` regenerates the chart's CRD and the plain
manifest; ``--check`` exits 1 when either differs (the unit test does the same). The
spec reference inside ``docs/operator.md`` is a cog block there calling
:func:`reference` (``make crds`` runs both): one row per field with its path, type,
default, bounds and description.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from clarion_contract.channel_spec import (
    NOT_BLANK_PATTERN,
    QUANTITY_PATTERN,
    Cel,
    Crd,
    RealtimeChannelSpec,
)
from clarion_contract.worker_config import not_blank
from clarion_operator.core.crd import (
    CRD_NAME,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)

Schema = dict[str, Any]


# --- schema builders ---------------------------------------------------------------


def _set(out: Schema, optional: Schema) -> Schema:
    """``out`` with each of the ``optional`` keys that is set (not None), in their order."""
    out.update((key, value) for key, value in optional.items() if value is not None)
    return out


def rule(expr: str, message: str, *, field_path: str | None = None) -> Schema:
    """One CEL validation rule with the message users see when it fails."""
    return _set({"rule": expr, "message": message}, {"fieldPath": field_path})


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
    return _set(
        {"type": "string", "description": desc},
        {
            "enum": None if enum is None else list(enum),
            "pattern": pattern,
            "minLength": min_length,
            "maxLength": max_length,
            "format": fmt,
            "default": default,
        },
    )


def integer(
    desc: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
) -> Schema:
    return _set(
        {"type": "integer", "description": desc},
        {"minimum": minimum, "maximum": maximum, "default": default},
    )


def boolean(desc: str, *, default: bool | None = None) -> Schema:
    return _set({"type": "boolean", "description": desc}, {"default": default})


def obj(
    desc: str,
    props: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Schema, ...] = (),
    default: dict[str, Any] | None = None,
) -> Schema:
    return _set(
        {"type": "object", "description": desc, "properties": props},
        {
            "required": list(required) or None,
            "x-kubernetes-validations": list(rules) or None,
            "default": default,
        },
    )


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
    return _set(
        {"type": "array", "description": desc, "items": items},
        {
            "x-kubernetes-list-type": "map" if map_keys is not None else list_type,
            "x-kubernetes-list-map-keys": None if map_keys is None else list(map_keys),
            "minItems": min_items,
            "maxItems": max_items,
            "x-kubernetes-validations": list(rules) or None,
        },
    )


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


_HEADER: Final = "# Generated by clarion_devstack.crdgen.render_yaml(); do not edit by hand.\n"


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


# --- the files ---------------------------------------------------------------------

ROOT: Final = Path(__file__).resolve().parents[2]
CRD_FILES: Final = (
    Path("charts/clarion/crds/realtimechannels.yaml"),
    Path("manifests/crd.yaml"),
)


def expected(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path (relative to ``root``) and its expected content."""
    return {path: render_yaml() for path in CRD_FILES}


def stale(root: Path = ROOT) -> list[Path]:
    return [
        path
        for path, text in expected(root).items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_devstack.crdgen")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.write:
        for path, text in expected().items():
            (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            (ROOT / path).write_text(text)
            print(f"wrote {path}")
        return 0
    out_of_date = stale()
    for path in out_of_date:
        print(f"stale: {path} (run python -m clarion_devstack.crdgen --write)", file=sys.stderr)
    return 1 if out_of_date else 0


# --- the spec reference of docs/operator.md --------------------------------------


def _type(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"[]{_type(schema.get('items') or {})}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return kind


def _constraints(schema: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if schema.get("pattern") == NOT_BLANK_PATTERN:
        parts.append("not blank (more than whitespace)")
    elif "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    for r in schema.get("x-kubernetes-validations") or []:
        parts.append(f"rule: {r['message']}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(schema: dict[str, Any], path: str, required: bool) -> Iterator[str]:
    default = json.dumps(schema["default"]) if "default" in schema else ""
    yield (
        f"| `{path}` | {_type(schema)} | {'yes' if required else ''} | "
        f"{_cell(f'`{default}`') if default else ''} | {_cell(_constraints(schema))} | "
        f"{_cell(str(schema.get('description', '')))} |"
    )
    props = schema.get("properties") or (schema.get("items") or {}).get("properties")
    needed = set(schema.get("required") or (schema.get("items") or {}).get("required") or ())
    suffix = "[]" if schema.get("type") == "array" else ""
    for name, child in (props or {}).items():
        yield from _rows(child, f"{path}{suffix}.{name}", name in needed)


def reference() -> str:
    lines = [
        "| field | type | required | default | constraints | description |",
        "|---|---|---|---|---|---|",
        *_rows(spec_schema(), "spec", True),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
