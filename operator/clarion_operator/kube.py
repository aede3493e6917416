"""The Kubernetes port implemented with the kubernetes client, off the event loop.

Children are written by server-side apply: a raw ``PATCH`` with content type
``application/apply-patch+yaml`` (JSON is YAML), one ``fieldManager`` and ``force=true``,
so the operator owns every field it renders and nothing else; a field someone else
changed by hand is taken back on the next apply. The client is blocking, so every call
runs in a worker thread and kopf's loop never stalls: in the operator's own pool
(``--kube-api-threads``), not asyncio's default one, which is only min(32, CPUs + 4)
threads and is shared with DNS lookups (``getaddrinfo``) of every Kafka connection. With
200 channels applied at once on two cores (``bench/w5.py``), the default pool's 6 threads
were all busy here while the loop sat idle.

Paths are built from a small table of the kinds the operator touches instead of API
discovery: the set is fixed by ``core.render`` and discovery would cost a round of
requests per reconcile. Discovery is used for exactly one question: is the
ServiceMonitor API served (cached briefly, since installing Prometheus Operator later
must be noticed without a restart).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, Final, TypedDict, Unpack

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from clarion_operator.core import crd
from clarion_operator.core.render import ObjectRef
from clarion_operator.ports import ApiError, Body, EventPost

#: apiVersion/kind -> plural (all namespaced).
PLURALS: Final[dict[tuple[str, str], str]] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "Ingress"): "ingresses",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    (crd.API_VERSION, crd.KIND): crd.PLURAL,
}
#: Kinds only read (get), never written: does an exposure's IngressClass (cluster-scoped)
#: or parent Gateway exist.
READ_ONLY_PLURALS: Final[dict[tuple[str, str], str]] = {
    ("networking.k8s.io/v1", "IngressClass"): "ingressclasses",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateways",
}
SERVICE_MONITOR_GROUP_VERSION: Final = "monitoring.coreos.com/v1"
DISCOVERY_TTL: Final = 30.0
#: ``source.component`` / ``reportingComponent`` of the Events the operator posts.
EVENT_SOURCE: Final = "clarion-operator"
#: Timeout of one readiness probe of the API server (``/readyz``).
PROBE_TIMEOUT: Final = 3.0


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural = PLURALS.get((api_version, kind)) or READ_ONLY_PLURALS[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
    return f"{path}/{name}" if name else path


class _CallOptions(TypedDict, total=False):
    """A request's options beside its method and path (``KubeClient._call``)."""

    body: object
    query: list[tuple[str, str]] | None
    content_type: str | None
    #: Seconds (None: the client's request timeout).
    timeout: float | None
    #: Return nothing and keep an error's text as it is (non-JSON endpoints).
    raw: bool


class KubeClient:
    """:class:`~clarion_operator.ports.KubeApi` over a ``kubernetes.client.ApiClient``."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        field_manager: str,
        executor: Executor | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self._api = api
        self._field_manager = field_manager
        #: None: asyncio's default pool (tests); the process passes its own, sized pool.
        self._executor = executor
        self._timeout = request_timeout
        self._monitoring: tuple[float, bool] | None = None
        self._served: dict[str, tuple[float, frozenset[str]]] = {}

    # --- raw calls (blocking; only ever run in a thread) -----------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
        raw: bool = False,
    ) -> Body | None:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        _m, url, hdrs, payload, _p = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method,
                url,
                header_params=hdrs,
                body=payload,
                _request_timeout=timeout or self._timeout,
            )
            data = response.read()
        except ApiException as exc:
            raise ApiError(int(exc.status or 0), str(exc.reason or exc)) from exc
        except Exception as exc:
            # urllib3 connection errors: no answer at all, retried like a 5xx.
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status <= 299:
            text = data.decode("utf-8", "replace") if data else ""
            said = text if raw else _status_message(text)
            raise ApiError(response.status, said or str(response.reason))
        if not data or raw:
            return None
        loaded = json.loads(data)
        return loaded if isinstance(loaded, dict) else None

    async def _run(self, method: str, path: str, **options: Unpack[_CallOptions]) -> Body | None:
        """``_call`` in the client's thread pool."""
        call = functools.partial(self._call, method, path, **options)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _get(self, path: str) -> Body | None:
        try:
            return await self._run("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # --- the port --------------------------------------------------------------------

    async def apply(self, body: Mapping[str, Any]) -> Body:
        meta = body["metadata"]
        path = object_path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
        out = await self._run(
            "PATCH",
            path,
            body=dict(body),
            query=[("fieldManager", self._field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return out or {}

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> Body:
        path = object_path(ref.api_version, ref.kind, ref.namespace, ref.name) + "/status"
        out = await self._run(
            "PATCH",
            path,
            body={"status": dict(patch)},
            content_type="application/merge-patch+json",
        )
        return out or {}

    async def post_event(self, event: EventPost) -> None:
        namespace = event.channel.namespace
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event.name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": event.channel.api_version,
                "kind": event.channel.kind,
                "namespace": namespace,
                "name": event.channel.name,
                "uid": event.channel_uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": EVENT_SOURCE,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._run("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except ApiError as exc:
            if exc.status != 409:  # 409: an earlier attempt was stored; its answer was lost
                raise

    async def probe(self) -> str | None:
        """None when the API server is ready (``/readyz``), else what is wrong."""
        try:
            await self._run("GET", "/readyz", timeout=PROBE_TIMEOUT, raw=True)
        except ApiError as exc:
            # A 500 lists every check; the failed ones ("[-]etcd failed: ...") say why.
            failed = [ln[3:] for ln in exc.message.splitlines() if ln.startswith("[-]")]
            return f"{exc.status}: {'; '.join(failed)}" if failed else str(exc)[:300]
        return None

    async def get(self, ref: ObjectRef) -> Body | None:
        return await self._get(object_path(ref.api_version, ref.kind, ref.namespace, ref.name))

    async def delete_if_controlled(self, ref: ObjectRef, owner_uid: str) -> bool:
        if (ref.api_version, ref.kind) == (SERVICE_MONITOR_GROUP_VERSION, "ServiceMonitor") and (
            not await self.service_monitor_available()
        ):
            return False
        path = object_path(ref.api_version, ref.kind, ref.namespace, ref.name)
        current = await self._get(path)
        if current is None:
            return False
        owners = (current.get("metadata") or {}).get("ownerReferences") or []
        if not any(o.get("controller") and o.get("uid") == owner_uid for o in owners):
            # Someone else's object with our name: never delete what we do not control.
            return False
        uid = current["metadata"]["uid"]
        try:
            await self._run("DELETE", path, body={"preconditions": {"uid": uid}})
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        secret = await self._get(object_path("v1", "Secret", namespace, name))
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {str(k): base64.b64decode(v) for k, v in data.items() if isinstance(v, str)}

    async def served(self, group_version: str, plural: str) -> bool:
        now = time.monotonic()
        cached = self._served.get(group_version)
        if cached is None or now - cached[0] >= DISCOVERY_TTL:
            found = await self._get(f"/apis/{group_version}")
            names = frozenset(str(r.get("name")) for r in (found or {}).get("resources") or [])
            cached = (now, names)
            self._served[group_version] = cached
        return plural in cached[1]

    async def service_monitor_available(self) -> bool:
        now = time.monotonic()
        if self._monitoring is not None and now - self._monitoring[0] < DISCOVERY_TTL:
            return self._monitoring[1]
        found = await self._get(f"/apis/{SERVICE_MONITOR_GROUP_VERSION}")
        available = found is not None and any(
            r.get("name") == "servicemonitors" for r in found.get("resources") or []
        )
        self._monitoring = (now, available)
        return available


def _status_message(text: str) -> str:
    """The ``message`` of a Kubernetes Status body (the useful part of a 422)."""
    try:
        loaded = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(loaded, dict) and isinstance(loaded.get("message"), str):
        return str(loaded["message"])
    return text[:500]
