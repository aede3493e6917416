"""spec.exposure: the HTTPRoute and the Ingress per controller profile, the legacy
spec.ingress conversion, status.endpoint, and the Exposed condition's decision."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_devstack import crdgen
from clarion_operator.core.conditions import (
    Condition,
    DeploymentObservation,
    compute_status,
    follow_workers,
    transition_events,
)
from clarion_operator.core.exposure import (
    ExposureObservation,
    duration,
    exposure_condition,
)
from clarion_operator.core.reasons import Reason
from clarion_operator.core.render import (
    DesiredState,
    ObjectRef,
)
from clarion_operator.core.spec import ExposureSpec, SpecError, parse_spec

#: The ``render_channel`` fixture (conftest.py): a raw spec, and settings by keyword.
RenderChannel = Callable[..., DesiredState]

TRAEFIK_SVC = "traefik.ingress.kubernetes.io/service."
BACKEND_INGRESS = {"service": {"name": "dash-worker", "port": {"name": "http"}}}


def _with(raw: dict[str, Any], exposure: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "exposure": exposure}


#: The sample channel (minimal_raw) with ``spec.exposure`` set to the argument, rendered.
RenderExposure = Callable[[dict[str, Any]], DesiredState]


@pytest.fixture
def render_exposure(render_channel: RenderChannel, minimal_raw: dict[str, Any]) -> RenderExposure:
    return lambda exposure: render_channel(_with(minimal_raw, exposure))


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    return [p.path for p in err.value.problems]


GATEWAY = {
    "type": "gateway",
    "hostnames": ["rt.example.com", "*.rt.example.com"],
    "stickyCookie": {"name": "rt", "maxAgeSeconds": 5400},
    "gateway": {"name": "public", "namespace": "infra", "sectionName": "https", "tls": True},
}


def test_gateway_renders_an_httproute_for_long_streams_with_cookie_persistence(
    render_exposure: RenderExposure,
) -> None:
    state = render_exposure(GATEWAY)
    route = state.http_route
    assert route is not None
    assert state.ingress is None
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "dash-worker"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "infra",
            "sectionName": "https",
        }
    ]
    assert spec["hostnames"] == ["rt.example.com", "*.rt.example.com"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/ws/dashboard"}},
        {"path": {"type": "PathPrefix", "value": "/sse/dashboard"}},
    ]
    assert rule["backendRefs"] == [{"name": "dash-worker", "port": 80}]
    # A stream is one request for its whole life: no request timeout (GEP-1742 "0s").
    assert rule["timeouts"] == {"request": "0s"}
    assert rule["sessionPersistence"] == {
        "sessionName": "rt",
        "type": "Cookie",
        "absoluteTimeout": "1h30m",
        "cookieConfig": {"lifetimeType": "Permanent"},
    }
    # The gateway pins clients; kube-proxy's ClientIP affinity must not second-guess it.
    assert state.service["spec"]["sessionAffinity"] == "None"
    assert "annotations" not in state.service["metadata"]
    assert state.endpoint == "wss://rt.example.com/ws/dashboard"
    assert ObjectRef("networking.k8s.io/v1", "Ingress", "apps", "dash-worker") in state.absent()
    assert route in state.objects()


def test_gateway_minimal_parent_and_no_hostnames(render_exposure: RenderExposure) -> None:
    state = render_exposure({"type": "gateway", "gateway": {"name": "gw"}})
    assert state.http_route is not None
    spec = state.http_route["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]
    assert "hostnames" not in spec
    assert spec["rules"][0]["sessionPersistence"]["absoluteTimeout"] == "1h"
    # No concrete host: the endpoint stays the in-cluster Service.
    assert state.endpoint == "ws://dash-worker.apps.svc.cluster.local/ws/dashboard"


def test_traefik_profile_puts_stickiness_on_the_service(render_exposure: RenderExposure) -> None:
    state = render_exposure(
        {
            "type": "ingress",
            "hostnames": ["rt.example.com"],
            "ingress": {"className": "traefik", "profile": "traefik"},
        },
    )
    ing = state.ingress
    assert ing is not None
    assert state.http_route is None
    # Traefik reads nothing of ours from the Ingress (it streams unbuffered by default).
    assert "annotations" not in ing["metadata"]
    assert ing["spec"]["ingressClassName"] == "traefik"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "rt.example.com"
    assert [p["backend"] for p in rule["http"]["paths"]] == [BACKEND_INGRESS] * 2
    svc = state.service
    assert svc["metadata"]["annotations"] == {
        f"{TRAEFIK_SVC}sticky.cookie": "true",
        f"{TRAEFIK_SVC}sticky.cookie.name": "clarion-affinity",
        f"{TRAEFIK_SVC}sticky.cookie.maxage": "3600",
        f"{TRAEFIK_SVC}sticky.cookie.path": "/",
        f"{TRAEFIK_SVC}sticky.cookie.httponly": "true",
    }
    assert svc["spec"]["sessionAffinity"] == "None"
    assert state.endpoint == "ws://rt.example.com/ws/dashboard"
    assert (
        ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "dash-worker")
        in state.absent()
    )


def test_traefik_cookie_is_secure_with_tls(render_exposure: RenderExposure) -> None:
    state = render_exposure(
        {
            "type": "ingress",
            "hostnames": ["rt.example.com"],
            "ingress": {"className": "traefik", "profile": "traefik", "tlsSecretName": "rt-tls"},
        },
    )
    assert state.service["metadata"]["annotations"][f"{TRAEFIK_SVC}sticky.cookie.secure"] == "true"
    assert state.ingress is not None
    assert state.ingress["spec"]["tls"] == [{"hosts": ["rt.example.com"], "secretName": "rt-tls"}]
    assert state.endpoint == "wss://rt.example.com/ws/dashboard"


def test_haproxy_profile_in_its_own_annotations(render_exposure: RenderExposure) -> None:
    state = render_exposure(
        {
            "type": "ingress",
            "streamTimeoutSeconds": 7200,
            "stickyCookie": {"name": "rt"},
            "ingress": {
                "className": "haproxy",
                "profile": "haproxy",
                "annotations": {"haproxy.org/timeout-server": "9000s", "x": "y"},
            },
        },
    )
    assert state.ingress is not None
    assert state.ingress["metadata"]["annotations"] == {
        "haproxy.org/cookie-persistence": "rt",
        "haproxy.org/timeout-tunnel": "7200s",
        # The user's annotations win.
        "haproxy.org/timeout-server": "9000s",
        "x": "y",
    }
    assert "annotations" not in state.service["metadata"]
    (rule,) = state.ingress["spec"]["rules"]
    assert "host" not in rule


def test_nginx_profile_keeps_the_retired_controllers_annotations(
    render_exposure: RenderExposure,
) -> None:
    state = render_exposure(
        {"type": "ingress", "ingress": {"className": "nginx", "profile": "nginx"}},
    )
    assert state.ingress is not None
    ann = state.ingress["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert ann["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_generic_profile_writes_only_the_users_annotations(render_exposure: RenderExposure) -> None:
    state = render_exposure(
        {
            "type": "ingress",
            "hostnames": ["a.example.com", "b.example.com"],
            "ingress": {"className": "acme", "profile": "generic", "annotations": {"k": "v"}},
        },
    )
    assert state.ingress is not None
    assert state.ingress["metadata"]["annotations"] == {"k": "v"}
    assert [r["host"] for r in state.ingress["spec"]["rules"]] == ["a.example.com", "b.example.com"]
    assert "annotations" not in state.service["metadata"]


def test_none_renders_neither_and_removes_both(render_exposure: RenderExposure) -> None:
    state = render_exposure({"type": "none"})
    assert state.ingress is None
    assert state.http_route is None
    absent = state.absent()
    assert ObjectRef("networking.k8s.io/v1", "Ingress", "apps", "dash-worker") in absent
    assert ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "dash-worker") in absent
    assert state.service["spec"]["sessionAffinity"] == "ClientIP"


def test_legacy_ingress_converts_to_the_nginx_profile(full_raw: dict[str, Any]) -> None:
    exp = parse_spec(full_raw).exposure
    assert exp == ExposureSpec(
        type="ingress",
        hostnames=("rt.example.com",),
        sticky_cookie_name="rt",
        sticky_cookie_max_age_seconds=600,
        ingress_class="nginx",
        profile="nginx",
        tls_secret_name="rt-tls",
        annotations=exp.annotations,
        legacy=True,
    )
    assert dict(exp.annotations) == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "7200",
        "x": "y",
    }
    assert parse_spec({**full_raw, "ingress": {"enabled": False}}).exposure == ExposureSpec()


def test_exposure_and_enabled_legacy_ingress_are_refused_together(
    full_raw: dict[str, Any],
) -> None:
    raw = _with(full_raw, {"type": "none"})
    assert _problems(raw) == ["spec.exposure"]


@pytest.mark.parametrize(
    ("exposure", "paths"),
    [
        ({"type": "gateway"}, ["spec.exposure.gateway"]),
        ({"type": "ingress"}, ["spec.exposure.ingress"]),
        ({"type": "ingress", "ingress": {"className": "x"}}, ["spec.exposure.ingress.profile"]),
        (
            {"type": "ingress", "ingress": {"className": "x", "profile": "istio"}},
            ["spec.exposure.ingress.profile"],
        ),
        (
            {
                "type": "ingress",
                "ingress": {"className": "x", "profile": "traefik", "tlsSecretName": "t"},
            },
            ["spec.exposure.hostnames"],
        ),
        ({"type": "public"}, ["spec.exposure.type"]),
        ({}, ["spec.exposure.type"]),
        ({"type": "none", "hostnames": ["Not A Host"]}, ["spec.exposure.hostnames[0]"]),
        ({"type": "none", "streamTimeoutSeconds": 10}, ["spec.exposure.streamTimeoutSeconds"]),
        (
            {"type": "gateway", "gateway": {"name": "gw", "namespace": "Bad_NS"}},
            ["spec.exposure.gateway.namespace"],
        ),
    ],
)
def test_invalid_exposure_is_a_clear_error(
    minimal_raw: dict[str, Any], exposure: dict[str, Any], paths: list[str]
) -> None:
    assert _problems(_with(minimal_raw, exposure)) == paths


def test_duration_is_a_gateway_api_duration() -> None:
    assert duration(3600) == "1h"
    assert duration(5400) == "1h30m"
    assert duration(61) == "1m1s"
    assert duration(31536000) == "8760h"
    assert duration(0) == "0s"


def test_crd_schema_has_the_exposure_section_and_its_rules() -> None:
    spec = crdgen.spec_schema()
    exp = spec["properties"]["exposure"]
    assert exp["required"] == ["type"]
    assert exp["properties"]["type"]["enum"] == ["none", "gateway", "ingress"]
    assert exp["properties"]["ingress"]["properties"]["profile"]["enum"] == [
        "traefik",
        "haproxy",
        "nginx",
        "generic",
    ]
    # No default: an absent exposure must stay absent so a legacy spec.ingress still counts.
    assert "default" not in exp
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("self.ingress.enabled" in r and "has(self.exposure)" in r for r in rules)


# --- the Exposed condition ------------------------------------------------------------


def _exp(raw: dict[str, Any], exposure: dict[str, Any]) -> ExposureSpec:
    return parse_spec(_with(raw, exposure)).exposure


def test_no_condition_without_exposure(minimal_raw: dict[str, Any]) -> None:
    assert exposure_condition(ExposureSpec(), ExposureObservation(), "apps") is None


def test_gateway_api_not_installed(minimal_raw: dict[str, Any]) -> None:
    exp = _exp(minimal_raw, GATEWAY)
    cond = exposure_condition(exp, ExposureObservation(api_served=False), "apps")
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.GATEWAY_API_NOT_INSTALLED)
    assert "Gateway API CRDs" in cond.message


def test_gateway_not_found_names_it(minimal_raw: dict[str, Any]) -> None:
    exp = _exp(minimal_raw, {"type": "gateway", "gateway": {"name": "gw"}})
    cond = exposure_condition(exp, ExposureObservation(target_found=False), "apps")
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.GATEWAY_NOT_FOUND)
    assert cond.message.startswith("Gateway apps/gw does not exist")


def test_ingress_class_not_found(minimal_raw: dict[str, Any]) -> None:
    exp = _exp(
        minimal_raw, {"type": "ingress", "ingress": {"className": "tr", "profile": "traefik"}}
    )
    cond = exposure_condition(exp, ExposureObservation(target_found=False), "apps")
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.INGRESS_CLASS_NOT_FOUND)
    assert "IngressClass tr (traefik profile) does not exist" in cond.message


def test_exposed_and_pruned_persistence_said(minimal_raw: dict[str, Any]) -> None:
    exp = _exp(minimal_raw, GATEWAY)
    ok = exposure_condition(exp, ExposureObservation(target_found=True), "apps")
    assert ok is not None
    assert (ok.status, ok.reason) == ("True", Reason.EXPOSED)
    assert ok.message == "HTTPRoute attached to Gateway infra/public (listener https)"
    pruned = exposure_condition(
        exp, ExposureObservation(target_found=True, persistence_kept=False), "apps"
    )
    assert pruned is not None
    assert pruned.status == "True"
    assert "sessionPersistence was pruned" in pruned.message


# --- the Exposed condition in the status ----------------------------------------------


def _status(exposed: Condition | None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    workers = DeploymentObservation(desired=2, replicas=2, ready=2, updated=2, available=2)
    status = compute_status(
        previous,
        generation=1,
        now=datetime(2026, 11, 30, tzinfo=UTC),
        topics=[],
        workers=workers,
        exposed=exposed,
    )
    return dict(status)


def _types(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_exposed_false_is_a_warning_beside_ready_not_inside_it(
    minimal_raw: dict[str, Any],
) -> None:
    exp = _exp(
        minimal_raw, {"type": "ingress", "ingress": {"className": "x", "profile": "haproxy"}}
    )
    missing = exposure_condition(exp, ExposureObservation(target_found=False), "apps")
    before = _status(None)
    after = _status(missing, before)
    assert _types(after)["Exposed"] == ("False", "IngressClassNotFound")
    # Ready stays topics and workers: in-cluster clients are served, and a channel
    # written before exposure existed must not turn unready on an operator upgrade.
    assert _types(after)["Ready"] == ("True", "Reconciled")
    events = transition_events(before, after)
    assert [(e.type, e.reason) for e in events] == [("Warning", "IngressClassNotFound")]
    # A worker watch event recomputes Ready and keeps what the reconcile found.
    workers = DeploymentObservation(desired=2, replicas=2, ready=2, updated=2, available=2)
    followed = follow_workers(
        after, workers=workers, problem=None, now=datetime(2026, 11, 30, tzinfo=UTC)
    )
    assert followed is not None
    assert _types(dict(followed))["Exposed"] == ("False", "IngressClassNotFound")
    assert _types(dict(followed))["Ready"] == ("True", "Reconciled")
    # Once the class exists: Exposed, no second Warning; no Exposed without exposure.
    found = exposure_condition(exp, ExposureObservation(target_found=True), "apps")
    fixed = _status(found, after)
    assert _types(fixed)["Exposed"] == ("True", "Exposed")
    assert transition_events(after, fixed) == []
    assert "Exposed" not in _types(_status(None))
