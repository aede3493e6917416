"""Debian's HAProxy in front of the worker replicas: the local stand-in for ingress-nginx.

The configuration gives what the operator's Ingress annotations ask of ingress-nginx:

- cookie affinity: ``cookie <name> insert indirect nocache``, one ``cookie`` value per
  server, so a reconnecting client that keeps its cookie lands on the same replica
  (which holds its recent events); a client whose replica is gone is sent elsewhere
  and gets a new cookie (``option redispatch``, like ``session-cookie-change-on-failure``);
- long-lived connections: ``timeout tunnel 3600s`` (the 3600 s proxy timeouts);
- health checks on ``/readyz`` every 500 ms, so a draining replica (readiness fails at
  once) or a dead one is taken out of rotation without cutting established tunnels.

It listens on 127.0.0.1 only. WebSocket and SSE paths go to the workers; anything else
goes to an optional second backend (the demo dashboard), so the page and its sockets
share one origin.
"""

from __future__ import annotations

import csv
import io
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clarion_devstack.e2e.sysdeps import HAPROXY
from clarion_devstack.procs import Loopback, free_port, port_open, stop_popen


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    #: A worker process on the host, or a worker pod's address on the real node.
    host: str = "127.0.0.1"


def render_config(
    *,
    port: int,
    stats_port: int,
    servers: Sequence[Server],
    cookie: str,
    stream_paths: Sequence[str],
    site_port: int | None = None,
) -> str:
    lines = [
        "global",
        "    log stdout format raw local0 info",
        "    maxconn 8000",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    # WebSocket and SSE tunnels: far above the application heartbeat.",
        "    timeout tunnel 3600s",
        "    timeout client-fin 5s",
        "    # A refused connection (a dead replica not yet marked down) is retried on another.",
        "    retries 3",
        "    option redispatch 1",
        "",
        "frontend clarion",
        f"    bind 127.0.0.1:{port}",
        f"    acl stream path_beg {' '.join(stream_paths)}",
        "    use_backend workers if stream",
        f"    default_backend {'site' if site_port is not None else 'workers'}",
        "",
        "backend workers",
        "    balance leastconn",
        f"    cookie {cookie} insert indirect nocache httponly",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        "    default-server check inter 500ms fastinter 250ms downinter 500ms fall 1 rise 1",
    ]
    lines += [f"    server {s.name} {s.host}:{s.port} cookie {s.name}" for s in servers]
    if site_port is not None:
        lines += ["", "backend site", f"    server site 127.0.0.1:{site_port}"]
    lines += [
        "",
        "listen stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 2s",
        "",
    ]
    return "\n".join(lines)


@dataclass
class LoadBalancer(Loopback):
    servers: list[Server]
    cookie: str
    stream_paths: list[str]
    workdir: Path
    log: Path
    site_port: int | None = None
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/"

    def start(self, timeout: float = 20) -> None:
        config = self.workdir / "haproxy.cfg"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            render_config(
                port=self.port,
                stats_port=self.stats_port,
                servers=self.servers,
                cookie=self.cookie,
                stream_paths=self.stream_paths,
                site_port=self.site_port,
            )
        )
        check = subprocess.run([str(HAPROXY), "-c", "-f", str(config)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects {config}:\n{check.stdout.decode()}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            # -db: foreground, no daemon: the process is ours to stop.
            self.proc = subprocess.Popen(
                [str(HAPROXY), "-db", "-f", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and port_open(self.stats_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start; see {self.log}")
            time.sleep(0.05)

    def states(self) -> dict[str, str]:
        """Each worker server's state as HAProxy sees it (UP, DOWN, ...)."""
        text = httpx.get(f"{self.stats_url};csv", timeout=2).text.lstrip("# ")
        return {
            row["svname"]: row["status"].split(" ")[0]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "workers" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_state(self, server: str, state: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.states().get(server) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy: {server} is not {state}: {self.states()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_popen(self.proc)
        self.proc = None
