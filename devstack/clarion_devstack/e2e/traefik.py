"""Traefik v3 as a process against the local stack: the maintained ingress controller the
end-to-end tests put in front of the real node's worker pods.

Traefik reads the cluster through the stack's kubeconfig with two providers:

- Kubernetes Ingress: the ``traefik`` IngressClass (controller
  ``traefik.io/ingress-controller``); stickiness comes from the Service's
  ``traefik.ingress.kubernetes.io/service.sticky.cookie*`` annotations, which the
  operator writes for ``exposure.ingress.profile: traefik``;
- Kubernetes Gateway API: the ``traefik`` GatewayClass (controller
  ``traefik.io/gateway-controller``) and a Gateway whose HTTP listener has the port of
  Traefik's ``web`` entry point (that is how Traefik binds a listener to an entry point).

Traefik routes straight to the EndpointSlices' addresses (pod IPs on the real node's
bridge), never to 127.0.0.1 (an EndpointSlice cannot hold a loopback address): without
the real node there is nothing for it to route to. It listens on 127.0.0.1 only, phones
nowhere (no version check, no anonymous usage), and its API (routers, services, their
servers) on a second loopback port is what tests wait on instead of sleeping.

The Gateway API CRDs come from the ``sigs.k8s.io/gateway-api`` module (Go module proxy,
the release Traefik is built against): the experimental channel, which has
``HTTPRoute.spec.rules[].sessionPersistence`` (GEP-1619), or the standard one.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from clarion_devstack import install, versions
from clarion_devstack.crds import wait_established
from clarion_devstack.e2e.deploy import FIELD_MANAGER, DeployError, Kube
from clarion_devstack.procs import Loopback, free_port, spawn, stop, tail
from clarion_devstack.settings import DevstackSettings

INGRESS_CLASS = "traefik"
INGRESS_CONTROLLER = "traefik.io/ingress-controller"
GATEWAY_CLASS = "traefik"
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
Channel = Literal["standard", "experimental"]


def traefik_binary(settings: DevstackSettings) -> Path:
    """Traefik built from the Go module proxy at the pinned version (cached)."""
    return install.ensure_go(settings, install.TRAEFIK) / "traefik"


def gateway_api_crds(settings: DevstackSettings, channel: Channel = "experimental") -> list[Path]:
    """The Gateway API CRD files of the pinned release, from the Go module cache."""
    out = subprocess.run(
        [settings.go, "mod", "download", "-json", f"{GATEWAY_API_MODULE}@v{versions.GATEWAY_API}"],
        capture_output=True,
        text=True,
        # Outside any module: an explicit module@version, and no go.mod/go.sum touched.
        cwd=settings.cache_dir,
    )
    if out.returncode != 0:
        raise DeployError(f"go mod download {GATEWAY_API_MODULE} failed:\n{out.stderr}")
    folder = Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / channel
    files = sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    if not files:
        raise DeployError(f"no CRD files in {folder}")
    return files


def install_gateway_api(
    kube: Kube, settings: DevstackSettings, channel: Channel = "experimental"
) -> None:
    """Apply the Gateway API CRDs (server-side: they exceed the client-side annotation
    limit) and wait until the API server serves them."""
    files = gateway_api_crds(settings, channel)
    args = [arg for f in files for arg in ("-f", str(f))]
    kube.run(
        "apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", *args
    )
    wait_established(
        kube.run,
        [
            "gateways.gateway.networking.k8s.io",
            "httproutes.gateway.networking.k8s.io",
            "gatewayclasses.gateway.networking.k8s.io",
        ],
    )


def uninstall_gateway_api(kube: Kube) -> None:
    """Remove the Gateway API CRDs (a test that needs a cluster without them)."""
    names = kube.run("get", "crd", "-o", "name").split()
    ours = [n for n in names if n.endswith((".gateway.networking.k8s.io", ".x-k8s.io"))]
    if ours:
        kube.run("delete", "--wait=true", *ours)


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS},
        "spec": {"controller": INGRESS_CONTROLLER},
    }


def gateway_objects(namespace: str, name: str, port: int) -> list[dict[str, Any]]:
    """The GatewayClass and a Gateway with one HTTP listener on Traefik's ``web`` port."""
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "web",
                        "protocol": "HTTP",
                        "port": port,
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
        },
    ]


@dataclass
class Traefik(Loopback):
    """One Traefik process; ``start`` and ``stop`` (by its PID) are the test's to call."""

    binary: Path
    kubeconfig: str
    log: Path
    #: Watch the Gateway API too (needs its CRDs installed first).
    gateway_api: bool = True
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    #: A page on 127.0.0.1 served for every other path (the demo's dashboard), so the
    #: page and its sockets share one origin; through Traefik's file provider.
    site_port: int | None = None
    #: Watch only these namespaces (all when empty): channels of the same example in other
    #: namespaces, such as an earlier test's still terminating, share its host and paths.
    namespaces: tuple[str, ...] = ()
    pid: int | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def argv(self) -> list[str]:
        args = [
            str(self.binary),
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            f"--entryPoints.web.address=127.0.0.1:{self.port}",
            f"--entryPoints.traefik.address=127.0.0.1:{self.api_port}",
            # The API on the "traefik" entry point (127.0.0.1 only); the dashboard's assets
            # are not in a module-proxy build, and the API is all the tests read.
            "--api.insecure=true",
            "--api.dashboard=false",
            "--ping=true",
            "--log.level=INFO",
            "--providers.kubernetesIngress=true",
            # A Service without ready endpoints keeps its router (503, not 404): a client
            # during a full restart is told to retry, and tests can see the route at once.
            "--providers.kubernetesIngress.allowEmptyServices=true",
        ]
        if self.namespaces:
            watched = ",".join(self.namespaces)
            args.append(f"--providers.kubernetesIngress.namespaces={watched}")
        if self.gateway_api:
            args.append("--providers.kubernetesGateway=true")
            if self.namespaces:
                args.append(f"--providers.kubernetesGateway.namespaces={watched}")
        if self.site_port is not None:
            args.append(f"--providers.file.filename={self.site_config}")
        return args

    @property
    def site_config(self) -> Path:
        return self.log.with_name("traefik-site.yaml")

    def _write_site_config(self) -> None:
        if self.site_port is None:
            return
        # Lowest priority: the channel's own paths (Ingress/HTTPRoute routers) win.
        dynamic = {
            "http": {
                "routers": {
                    "site": {
                        "rule": "PathPrefix(`/`)",
                        "priority": 1,
                        "entryPoints": ["web"],
                        "service": "site",
                    }
                },
                "services": {
                    "site": {
                        "loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{self.site_port}"}]}
                    }
                },
            }
        }
        self.site_config.parent.mkdir(parents=True, exist_ok=True)
        self.site_config.write_text(yaml.safe_dump(dynamic))

    def start(self, timeout: float = 60) -> None:
        # Only what Traefik needs: no CLARION_* or proxy settings leak in.
        env = {"KUBECONFIG": self.kubeconfig, "HOME": str(self.log.parent)}
        self._write_site_config()
        proc = spawn(self.argv(), self.log, env=env)
        self.pid = proc.pid
        self.wait(lambda: self._get("/ping") == "OK", "Traefik answers /ping", timeout)

    def stop(self) -> None:
        if self.pid is not None:
            stop(self.pid)
            self.pid = None

    def _get(self, path: str) -> Any:
        try:
            resp = httpx.get(f"{self.api}{path}", timeout=2)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        return resp.text if path == "/ping" else resp.json()

    def wait(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.2)
        raise DeployError(f"timed out waiting for {what}\n--- {self.log} ---\n{tail(self.log, 40)}")

    def services(self) -> list[Mapping[str, Any]]:
        found = self._get("/api/http/services")
        return list(found) if isinstance(found, list) else []

    def routers(self) -> list[Mapping[str, Any]]:
        found = self._get("/api/http/routers")
        return list(found) if isinstance(found, list) else []

    def servers_of(self, service_substring: str) -> set[str]:
        """The server URLs Traefik load-balances for services whose name contains
        ``service_substring`` (pod IPs: ``http://10.x.y.z:8080``)."""
        out: set[str] = set()
        for svc in self.services():
            if service_substring in str(svc.get("name", "")):
                lb = svc.get("loadBalancer") or {}
                out.update(str(s.get("url")) for s in lb.get("servers") or [])
        return out

    def wait_servers(self, service_substring: str, count: int, timeout: float = 120) -> set[str]:
        """Wait until Traefik routes to exactly ``count`` servers of the service."""
        self.wait(
            lambda: len(self.servers_of(service_substring)) == count,
            f"Traefik routing to {count} server(s) of {service_substring}",
            timeout,
        )
        return self.servers_of(service_substring)


def ensure_ingress_class(kube: Kube) -> None:
    kube.apply([ingress_class()])


def ensure_gateway(kube: Kube, namespace: str, name: str, port: int) -> None:
    kube.apply(gateway_objects(namespace, name, port))
