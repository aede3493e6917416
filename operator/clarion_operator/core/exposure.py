"""The traffic entry of a channel: an HTTPRoute or an Ingress, and what to say about it.

Pure. :func:`render_http_route` and :func:`render_ingress` turn a validated
:class:`~clarion_operator.core.spec.ExposureSpec` into the object the cluster's entry point
understands; :func:`service_annotations` adds what a controller reads from the Service
(Traefik's stickiness); :func:`exposure_condition` decides the ``Exposed`` condition from
what the edge observed (is the API served, does the named IngressClass or Gateway exist).

Every controller gets, in its own terms: cookie stickiness (one cookie for the WebSocket
and the SSE path), stream timeouts far above the heartbeat interval, and responses passed
on unbuffered. Stickiness is an optimisation, never a requirement: a client resumes from
its Kafka offsets on any replica.

- ``gateway``: ``HTTPRoute`` (``gateway.networking.k8s.io/v1``) with ``sessionPersistence``
  (GEP-1619, experimental channel) and ``timeouts.request: 0s`` (a stream is one request
  that lasts as long as the client stays; a finite request timeout would cut it).
- ``ingress`` + ``traefik``: Traefik streams unbuffered by default and reads stickiness
  from Service annotations (``traefik.ingress.kubernetes.io/service.sticky.cookie*``);
  its idle timeouts are entry-point settings, not per Ingress.
- ``ingress`` + ``haproxy``: HAProxy Kubernetes Ingress's ``haproxy.org/`` annotations
  (cookie persistence, server and tunnel timeouts); HAProxy does not buffer responses.
- ``ingress`` + ``nginx``: ingress-nginx's annotations (retired in March 2026; kept for
  existing clusters).
- ``ingress`` + ``generic``: the user's annotations only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from clarion_operator.core.conditions import EXPOSED, Condition
from clarion_operator.core.reasons import Reason
from clarion_operator.core.spec import ExposureSpec

Body = dict[str, Any]

GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
HTTP_ROUTE_API_VERSION: Final = f"{GATEWAY_GROUP}/v1"
INGRESS_API_VERSION: Final = "networking.k8s.io/v1"

NGINX_PREFIX: Final = "nginx.ingress.kubernetes.io/"
HAPROXY_PREFIX: Final = "haproxy.org/"
TRAEFIK_SERVICE_PREFIX: Final = "traefik.ingress.kubernetes.io/service."


@dataclass(frozen=True)
class Backend:
    """The worker Service the entry point forwards to, and the paths it serves."""

    service: str
    port_name: str
    port: int
    paths: tuple[str, ...]


def duration(seconds: int) -> str:
    """A Gateway API Duration (``^([0-9]{1,5}(h|m|s|ms)){1,4}$``): 3600 -> ``1h``."""
    if seconds <= 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out += f"{count}{unit}"
    return out


def render_http_route(exp: ExposureSpec, backend: Backend, metadata: Body) -> Body:
    """The HTTPRoute of ``type: gateway``."""
    gw = exp.gateway
    if gw is None:
        raise ValueError("exposure type gateway without a gateway")
    parent: Body = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gw.name}
    if gw.namespace is not None:
        parent["namespace"] = gw.namespace
    if gw.section_name is not None:
        parent["sectionName"] = gw.section_name
    rule: Body = {
        "matches": [{"path": {"type": "PathPrefix", "value": p}} for p in backend.paths],
        "backendRefs": [{"name": backend.service, "port": backend.port}],
        # A WebSocket or SSE stream is one request lasting the whole connection: "0s"
        # disables the request timeout (GEP-1742); idleness is the heartbeats' business.
        "timeouts": {"request": "0s"},
        "sessionPersistence": {
            "sessionName": exp.sticky_cookie_name,
            "type": "Cookie",
            "absoluteTimeout": duration(exp.sticky_cookie_max_age_seconds),
            "cookieConfig": {"lifetimeType": "Permanent"},
        },
    }
    spec: Body = {"parentRefs": [parent]}
    if exp.hostnames:
        spec["hostnames"] = list(exp.hostnames)
    spec["rules"] = [rule]
    return {
        "apiVersion": HTTP_ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": spec,
    }


def ingress_annotations(exp: ExposureSpec) -> dict[str, str]:
    """The Ingress annotations of the profile, then the user's (which win)."""
    timeout = exp.stream_timeout_seconds
    ours: dict[str, str] = {}
    if exp.profile == "nginx":
        p = NGINX_PREFIX
        ours = {
            f"{p}affinity": "cookie",
            # persistent: keep existing clients on their replica even when the replica
            # set changes (balanced would move them to rebalance).
            f"{p}affinity-mode": "persistent",
            f"{p}session-cookie-name": exp.sticky_cookie_name,
            f"{p}session-cookie-max-age": str(exp.sticky_cookie_max_age_seconds),
            f"{p}session-cookie-expires": str(exp.sticky_cookie_max_age_seconds),
            # One cookie for both paths, so WS and SSE of a client land on the same replica.
            f"{p}session-cookie-path": "/",
            f"{p}session-cookie-change-on-failure": "true",
            f"{p}proxy-read-timeout": str(timeout),
            f"{p}proxy-send-timeout": str(timeout),
            f"{p}proxy-http-version": "1.1",
            # SSE frames must reach the client as written, not when a buffer fills.
            f"{p}proxy-buffering": "off",
        }
    elif exp.profile == "haproxy":
        p = HAPROXY_PREFIX
        ours = {
            # HAProxy inserts the cookie and routes on it ("cookie <name> insert").
            f"{p}cookie-persistence": exp.sticky_cookie_name,
            # SSE is a long response (server timeout); a WebSocket is a tunnel after the
            # upgrade (tunnel timeout). HAProxy forwards responses as they come.
            f"{p}timeout-server": f"{timeout}s",
            f"{p}timeout-tunnel": f"{timeout}s",
        }
    # traefik: nothing on the Ingress (stickiness is on the Service; Traefik streams
    # unbuffered and its idle timeouts belong to the entry point). generic: the user's.
    return dict(sorted({**ours, **exp.annotations}.items()))


def service_annotations(exp: ExposureSpec) -> dict[str, str]:
    """Annotations the controller reads from the worker Service (Traefik's stickiness)."""
    if exp.type != "ingress" or exp.profile != "traefik":
        return {}
    p = TRAEFIK_SERVICE_PREFIX
    out = {
        f"{p}sticky.cookie": "true",
        f"{p}sticky.cookie.name": exp.sticky_cookie_name,
        f"{p}sticky.cookie.maxage": str(exp.sticky_cookie_max_age_seconds),
        # One cookie for both paths (WS and SSE of a client on the same replica).
        f"{p}sticky.cookie.path": "/",
        f"{p}sticky.cookie.httponly": "true",
    }
    if exp.tls_secret_name is not None:
        out[f"{p}sticky.cookie.secure"] = "true"
    return out


def render_ingress(exp: ExposureSpec, backend: Backend, metadata: Body) -> Body:
    """The Ingress of ``type: ingress``; ``metadata`` gets the profile's annotations."""
    if exp.ingress_class is None:
        raise ValueError("exposure type ingress without a class")
    target = {"service": {"name": backend.service, "port": {"name": backend.port_name}}}
    http = {"paths": [{"path": p, "pathType": "Prefix", "backend": target} for p in backend.paths]}
    rules: list[Body] = (
        [{"host": h, "http": http} for h in exp.hostnames] if exp.hostnames else [{"http": http}]
    )
    spec: Body = {"ingressClassName": exp.ingress_class, "rules": rules}
    if exp.tls_secret_name is not None and exp.hostnames:
        spec["tls"] = [{"hosts": list(exp.hostnames), "secretName": exp.tls_secret_name}]
    annotations = ingress_annotations(exp)
    meta = dict(metadata)
    if annotations:
        meta["annotations"] = {**dict(metadata.get("annotations") or {}), **annotations}
    return {"apiVersion": INGRESS_API_VERSION, "kind": "Ingress", "metadata": meta, "spec": spec}


def public_url(exp: ExposureSpec, path: str) -> str | None:
    """The URL clients use through the entry point, when a concrete host is known."""
    hosts = [h for h in exp.hostnames if not h.startswith("*.")]
    if exp.type == "none" or not hosts:
        return None
    if exp.type == "gateway":
        tls = exp.gateway is not None and exp.gateway.tls
    else:
        tls = exp.tls_secret_name is not None
    return f"{'wss' if tls else 'ws'}://{hosts[0]}{path}"


# --- what the edge observed, and the condition -------------------------------------


@dataclass(frozen=True)
class ExposureObservation:
    """What the edge found in the cluster for the exposure it is about to write.

    ``api_served``: the API of the rendered kind is served (HTTPRoute needs the Gateway
    API CRDs). ``target_found``: the named IngressClass or Gateway exists (None: not
    looked up, for example because the API is not served). ``persistence_kept``: the API
    server kept the HTTPRoute's ``sessionPersistence`` (None: not applied); a cluster with
    only the standard-channel CRDs prunes it.
    """

    api_served: bool = True
    target_found: bool | None = None
    persistence_kept: bool | None = None


def target_description(exp: ExposureSpec, namespace: str) -> str:
    if exp.type == "gateway" and exp.gateway is not None:
        ns = exp.gateway.namespace or namespace
        section = f" (listener {exp.gateway.section_name})" if exp.gateway.section_name else ""
        return f"Gateway {ns}/{exp.gateway.name}{section}"
    if exp.type == "ingress":
        return f"IngressClass {exp.ingress_class} ({exp.profile} profile)"
    return "nothing"


def exposure_condition(
    exp: ExposureSpec, observed: ExposureObservation, namespace: str
) -> Condition | None:
    """The ``Exposed`` condition; None for ``type: none`` (no condition at all).

    False (with a reason saying what to install or create) when the API is not served
    or the named IngressClass/Gateway does not exist: the channel says so instead of
    skipping silently. The Ingress/HTTPRoute is still written when its API is served, so
    creating the class or Gateway later is enough.
    """
    if exp.type == "none":
        return None
    target = target_description(exp, namespace)
    if exp.type == "gateway" and not observed.api_served:
        return Condition(
            EXPOSED,
            "False",
            Reason.GATEWAY_API_NOT_INSTALLED,
            "the cluster does not serve HTTPRoute (gateway.networking.k8s.io/v1): install "
            "the Gateway API CRDs (experimental channel for sessionPersistence), or use "
            "exposure type ingress",
        )
    if observed.target_found is False:
        reason = (
            Reason.GATEWAY_NOT_FOUND if exp.type == "gateway" else Reason.INGRESS_CLASS_NOT_FOUND
        )
        kind = "HTTPRoute" if exp.type == "gateway" else "Ingress"
        return Condition(
            EXPOSED,
            "False",
            reason,
            f"{target} does not exist: the {kind} is written but nothing serves it",
        )
    kind = "HTTPRoute" if exp.type == "gateway" else "Ingress"
    message = f"{kind} attached to {target}"
    if observed.persistence_kept is False:
        message += (
            "; sessionPersistence was pruned by the API server (standard-channel CRDs): "
            "clients are not pinned, they resume on any replica"
        )
    return Condition(EXPOSED, "True", Reason.EXPOSED, message)
