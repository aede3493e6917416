"""The spec reference of ``docs/operator.md``, generated from the CRD schema.

A cog block in the document calls :func:`reference` (``make crds``; see
``clarion_devstack.docs``), so the hand-written sections around it stay as written. One
row per field: path, type, default, bounds and the description ``kubectl explain`` shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from clarion_operator.core import crd
from clarion_operator.core.crd import spec_schema


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
    if schema.get("pattern") == crd.NOT_BLANK_PATTERN:
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
