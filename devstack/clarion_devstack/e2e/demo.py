"""``make demo``: the local stack, the operator, the UnionFlow channel, two workers behind
an entry point, a producer of UnionFlow-like events, and a live dashboard. Ctrl-C stops it.

The workers are the Deployment's own pods on the stack's real node when it has one (built
from the worker image, started by the kubelet), behind Traefik serving the channel's own
Ingress; otherwise worker processes configured from what the operator rendered, behind a
hand-configured HAProxy, and the demo says so.

The dashboard (static HTML and JS in ``dashboard/``) is served by a tiny local server
behind the same entry point as the workers (Traefik's file provider, or HAProxy's second
backend), so the page and its WebSockets share one origin (the one the channel's
allowedOrigins is given). ``/config.json`` hands the page
demo tokens minted with the channel's secret; ``/clarion.js`` is the TypeScript client's
browser bundle (clients/typescript, built on first use), which the page's reconnect,
resume and token refresh come from.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clarion_devstack import stack, tsclient
from clarion_devstack.e2e import pods, sysdeps, traefik
from clarion_devstack.e2e.cluster import Deployment
from clarion_devstack.e2e.events import Person, Traffic, UnionFlowProducer
from clarion_devstack.procs import free_port
from clarion_devstack.progress import say, step
from clarion_devstack.settings import DevstackSettings

DASHBOARD = Path(__file__).with_name("dashboard")
ORGANIZATIONS = ("org-abidjan", "org-dakar", "org-lome")
VIEWERS = (
    ("Trésorière, Abidjan", Person("awa", ("org-abidjan",))),
    ("Secrétaire, Dakar", Person("moussa", ("org-dakar",))),
    ("Fédération (Abidjan + Lomé)", Person("kofi", ("org-abidjan", "org-lome"))),
)


@dataclass
class Site:
    """The dashboard's static files and its ``/config.json``, on 127.0.0.1."""

    config: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        site = self
        settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - process edge
        tsclient.ensure_built(settings)
        bundle = tsclient.browser_bundle(settings)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(DASHBOARD), **kwargs)

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/config.json":
                    self._send(json.dumps(site.config).encode(), "application/json")
                    return
                if path == "/clarion.js":
                    self._send(bundle.read_bytes(), "text/javascript")
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, name="dashboard", daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def dashboard_config(dep: Deployment) -> dict[str, Any]:
    assert dep.rendered is not None
    return {
        "websocketPath": dep.rendered.websocket_path,
        "viewers": [
            {
                "label": label,
                "user": p.user,
                "organizations": list(p.organizations),
                "token": dep.token(p),
            }
            for label, p in VIEWERS
        ],
    }


class DemoProducer:
    """UnionFlow-like traffic at a steady rate, in a thread."""

    def __init__(self, bootstrap: str, rate: float) -> None:
        self.producer = UnionFlowProducer(bootstrap, client_id="unionflow-demo")
        self.traffic = Traffic(ORGANIZATIONS, [p for _, p in VIEWERS])
        self.rate = rate
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1 / self.rate):
            self.traffic.next(self.producer)

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():  # a set-up that failed before start() never ran it
            self.thread.join(timeout=5)
        self.producer.flush(10)


def run_demo(
    settings: DevstackSettings,
    *,
    port: int,
    rate: float,
    wait: Callable[[], None],
) -> None:
    sysdeps.ensure()
    existing = stack.read_env(settings)
    owned = existing is None or not stack.healthy(existing)
    env = stack.up(settings)
    workdir = Path(tempfile.mkdtemp(prefix="clarion-demo-", dir=settings.state_dir))
    site = Site()
    no_node = pods.unavailable_reason(env)
    if no_node is None:
        say("the workers run as real pods on the stack's node")
    else:
        say(f"no real node ({no_node}): the workers run as processes on this machine")
    # With the real node, Traefik (built on first use) serves the channel's Ingress.
    entry = traefik.traefik_binary(settings) if no_node is None else None
    dep = Deployment(env, workdir, namespace="unionflow-demo", replicas=2, site_port=site.port,
                     lb_port=port, real_pods=no_node is None, traefik_binary=entry)  # fmt: skip
    producer: DemoProducer | None = None
    try:
        site.start()
        dep.up()
        site.config = dashboard_config(dep)
        producer = DemoProducer(env["kafka_bootstrap"], rate)
        producer.start()
        token = site.config["viewers"][2]["token"]
        kubectl = f"{env['kubectl']} --kubeconfig {env['kubeconfig']}"
        if dep.real_pods:
            replicas = ", ".join(f"{name} ({ip}:{p})" for name, (ip, p) in dep.pod_ips.items())
            real = env.get("node")
            assert real is not None
            crictl = f"{real['crictl']} -r unix://{real['containerd_socket']}"
            first = next(iter(dep.pod_ips))
            kill = (
                f"{crictl} stop $({crictl} ps -q --name worker --pod $({crictl} pods -q "
                f"--name {first}))\n            (the kubelet restarts it in the same pod; or: "
                f"{kubectl} -n {dep.namespace} delete pod {first})"
            )
            print(dep.kube.run("get", "pods", "-n", dep.namespace, "-o", "wide"), flush=True)
        else:
            replicas = ", ".join(f"{w.replica_id} (:{w.port})" for w in dep.workers)
            kill = f"kill -9 {dep.workers[0].proc.pid if dep.workers[0].proc else ''}"
        if dep.controller is not None:
            entry_admin = f"{dep.controller.api}/api/http/services (Traefik's view)"
            print(dep.kube.run("get", "ingress", "-n", dep.namespace), flush=True)
        else:
            assert dep.lb is not None
            entry_admin = f"{dep.lb.stats_url} (stats)"
        say("the demo is running:")
        print(
            f"\n  dashboard      {dep.entry_url}/\n"
            f"  WebSocket      {dep.ws_url}\n"
            f"  {dep.entry_name:<14} {entry_admin}\n"
            f"  replicas       {replicas}\n"
            f"  logs           {dep.log_dir}\n"
            f"  pods           {kubectl} -n {dep.namespace} get pods -o wide\n\n"
            f"  tail it:  .venv/bin/clarion tail {dep.ws_url} --token {shlex.quote(token)}\n"
            f"  kill a replica and watch the page reconnect and resume:\n"
            f"            {kill}\n\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        wait()
    finally:
        with step("stop the demo"):
            if producer is not None:
                producer.stop()
            dep.down()
            site.stop()
            if owned:
                stack.down(settings, quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clarion-demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8480, help="load balancer port")
    parser.add_argument("--rate", type=float, default=4.0, help="events per second")
    args = parser.parse_args(argv)
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the process edge
    stop = threading.Event()

    def wait() -> None:
        # Until here Ctrl-C raises KeyboardInterrupt, and run_demo's cleanup still runs.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()

    try:
        run_demo(settings, port=args.port, rate=args.rate, wait=wait)
    except KeyboardInterrupt:
        return 130
    say("stopped; no process of the demo is left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
