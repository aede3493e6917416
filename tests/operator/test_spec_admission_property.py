"""Every spec the CRD admits renders a worker document the worker accepts (issue 12, item 11).

Specs are generated from the CRD's own OpenAPI schema (types, bounds, enums, patterns,
list keys), so the generator follows the CRD as it changes. The cross-field CEL rules are
not re-implemented here: the unit property says that whatever the operator's spec
validation admits, the worker's own settings loader accepts; the integration property
sends generated specs to the real API server and checks that its verdict (schema and CEL)
and the operator's are the same. Together: the CRD admits only what the worker runs.

The test imports both packages on purpose; the products never import each other.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from clarion_contract.zones import resolve_zone
from clarion_devstack import crdgen
from clarion_operator.core import crd
from clarion_operator.core.render import ChannelContext, render
from clarion_operator.core.spec import SpecError, parse_spec
from clarion_worker.core.settings import SettingsError, load_settings, parse_document

Schema = dict[str, Any]

#: Characters strings are drawn from: ordinary ones, separators, and whitespace the worker
#: strips (ASCII, no-break and em spaces, a file separator, a line separator).
ALPHABET = "abcXYZ019._-/:@ \t\n\x0b\x1c\xa0\u2003\u2028é"
#: Integers around every bound the worker compares (its defaults and minimums).
EDGES = (0, 1, 15, 16, 17, 63, 64, 65, 999, 1000, 1001, 1048575, 1048576, 1048577)


def _go_regex(pattern: str) -> str:
    """The pattern as the API server (RE2) reads it: ``$`` only at the very end."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _string(node: Schema) -> st.SearchStrategy[str]:
    lo, hi = node.get("minLength", 0), node.get("maxLength", 64)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "pattern" in node:
        return st.from_regex(_go_regex(node["pattern"])).filter(lambda s: lo <= len(s) <= hi)
    return st.text(ALPHABET, min_size=lo, max_size=min(hi, 12))


def _integer(node: Schema) -> st.SearchStrategy[int]:
    lo = node.get("minimum", -(2**31))
    hi = node.get("maximum", 2**31)
    edges = [e for e in EDGES if lo <= e <= hi]
    parts = [st.integers(lo, min(hi, lo + 100)), st.integers(lo, min(hi, 2_000_000))]
    if edges:
        parts.append(st.sampled_from(edges))
    return st.one_of(parts)


def strategy(node: Schema) -> st.SearchStrategy[Any]:
    """Values the node's structural schema admits (CEL rules aside)."""
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 10**6), _string(node))
    kind = node.get("type")
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return _integer(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = strategy(node["items"])
        lo, hi = node.get("minItems", 0), min(node.get("maxItems", 3), 3)
        if node.get("x-kubernetes-list-type") == "map":
            (key,) = node["x-kubernetes-list-map-keys"]
            return st.lists(items, min_size=lo, max_size=hi, unique_by=lambda i: i[key])
        unique = node.get("x-kubernetes-list-type") == "set"
        return st.lists(items, min_size=lo, max_size=hi, unique=unique)
    if kind == "object" and "properties" in node:
        required = set(node.get("required", ()))
        props = node["properties"]
        return st.fixed_dictionaries(
            {k: strategy(v) for k, v in props.items() if k in required},
            optional={k: strategy(v) for k, v in props.items() if k not in required},
        )
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        keys = st.text("abcxyz.-_", min_size=1, max_size=8)
        hi = min(node.get("maxProperties", 3), 3)
        return st.dictionaries(keys, strategy(node["additionalProperties"]), max_size=hi)
    raise AssertionError(f"no strategy for {node}")


SPEC_SCHEMA = crdgen.spec_schema()
specs = strategy(SPEC_SCHEMA)


def _worker_accepts(raw: dict[str, Any]) -> bool:
    """parse_spec's verdict; when it admits, the worker must load the rendered document."""
    try:
        spec = parse_spec(copy.deepcopy(raw), name="gen")
    except SpecError:
        return False
    text = render(ChannelContext("gen", "ns", "uid-1", 1, spec)).worker_json
    try:
        load_settings(parse_document(text), {}, hostname="gen-worker-0")
    except SettingsError as err:
        pytest.fail(f"the worker refuses what the operator admitted:\n{raw}\n{err}")
    return True


#: How many generated specs each property test tries (slow and filtered: the generator
#: makes specs the operator refuses too).
GENERATED_SPECS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@GENERATED_SPECS
@given(specs)
def test_every_spec_the_operator_admits_renders_a_document_the_worker_accepts(
    raw: dict[str, Any],
) -> None:
    _worker_accepts(raw)


def test_generator_covers_admitted_specs_often_enough() -> None:
    admitted = 0
    seen = 0

    # Derandomized: from one random run to the next the share admitted went from 4 to 16
    # of 150 (the examples come in runs of alike specs), so a random run failed one time
    # in three; these 150 admit 12.
    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(specs)
    def count(raw: dict[str, Any]) -> None:
        nonlocal admitted, seen
        seen += 1
        admitted += _worker_accepts(raw)

    count()
    assert seen >= 100
    assert admitted >= seen // 20, (admitted, seen)


def test_not_blank_pattern_is_pythons_whitespace() -> None:
    pattern = re.compile(crd.NOT_BLANK_PATTERN)
    wrong = [
        hex(c) for c in range(0x110000) if (pattern.fullmatch(chr(c)) is None) != chr(c).isspace()
    ]
    assert wrong == []


# --- the real API server: its verdict (schema + CEL) is the operator's ------------------


@pytest.fixture
def custom_objects(kube_api: k8s.ApiClient, crd_installed: None) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_api)


def _zone_is_known(zone: object) -> bool:
    if not isinstance(zone, str):
        return True
    try:
        resolve_zone(zone)
    except ValueError:
        return not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*", zone)
    return True


def _api_admits(api: k8s.CustomObjectsApi, namespace: str, raw: dict[str, Any]) -> bool:
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "gen"},
        "spec": raw,
    }
    try:
        api.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body, dry_run="All"
        )
    except ApiException as exc:
        if exc.status != 422:
            raise
        return False
    return True


def _smallest(**sections: Any) -> dict[str, Any]:
    """The smallest spec (one topic, no auth), with ``sections`` added or replaced."""
    return {
        "kafka": {"bootstrapServers": "0"},
        "topics": [{"name": "0"}],
        "auth": {"mode": "none"},
        **sections,
    }


@pytest.mark.integration
def test_the_api_server_admits_exactly_what_the_operator_admits(
    custom_objects: k8s.CustomObjectsApi, namespace: str
) -> None:
    verdicts: list[bool] = []

    @GENERATED_SPECS
    @given(specs)
    # Found by this test: the CRD admitted a TLS Secret whose keys coincide.
    @example(
        raw=_smallest(
            kafka={
                "bootstrapServers": "0",
                "security": {
                    "protocol": "SSL",
                    "tlsSecret": {"name": "0", "caKey": "0", "keyKey": "0", "certKey": "0"},
                },
            }
        )
    )
    # Found by this test: the CRD admitted offsets beyond 18 hours, which the workers refuse.
    @example(raw=_smallest(routing={"timestampZone": "-19:00"}))
    # Found by this test: autoscaling with resources that name no CPU (the operator refuses).
    @example(raw=_smallest(workers={"autoscaling": {}, "resources": {}}))
    def check(raw: dict[str, Any]) -> None:
        # The one check no schema can make: whether a zone name is in the zone database.
        # The CRD admits any well-formed name, the operator refuses an unknown one with
        # InvalidSpec (docs/operator.md); out-of-range offsets the CRD's pattern refuses.
        assume(_zone_is_known((raw.get("routing") or {}).get("timestampZone")))
        api = _api_admits(custom_objects, namespace, raw)
        operator = _worker_accepts(raw)
        assert api == operator, f"API server admits: {api}, operator admits: {operator}\n{raw}"
        verdicts.append(api)

    check()
    assert any(verdicts), "no generated spec was admitted"
    assert not all(verdicts), "no generated spec was refused"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"workers": {"limits": {"maxClientFrameBytes": 15}}}, "greater than or equal to 16"),
        ({"workers": {"limits": {"batchMaxEvents": 1001}}}, "batchMaxEvents must not exceed"),
        ({"workers": {"limits": {"queueMaxBytes": 1024}}}, "maxRecordBytes must not exceed"),
        (
            {"workers": {"limits": {"maxRecordBytes": 10, "queueMaxBytes": 9}}},
            "maxRecordBytes must not exceed",
        ),
    ],
)
def test_the_api_server_refuses_limits_the_worker_refuses(
    custom_objects: k8s.CustomObjectsApi, namespace: str, patch: dict[str, Any], message: str
) -> None:
    raw = {
        "kafka": {"bootstrapServers": "kafka:9092"},
        "topics": [{"name": "orders"}],
        "auth": {"mode": "none"},
        **patch,
    }
    body = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": "x"}, "spec": raw}
    with pytest.raises(ApiException) as info:
        custom_objects.create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, body, dry_run="All"
        )
    assert info.value.status == 422
    assert message in str(info.value.body)


def test_contract_limit_defaults_are_the_workers() -> None:
    """The operator's cross-field rules fill unset limits with the worker's defaults."""
    from clarion_contract.worker_config import LIMIT_DEFAULTS, MIN_CLIENT_FRAME_BYTES
    from clarion_worker.core.settings import KEYS

    by_path = {key.path: key for key in KEYS}
    for name, value in LIMIT_DEFAULTS.items():
        assert by_path[f"limits.{name}"].default == value, name
    assert by_path["limits.maxClientFrameBytes"].minimum == MIN_CLIENT_FRAME_BYTES
