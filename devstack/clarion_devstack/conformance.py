"""The control server of the client conformance suite (``clients/conformance``).

``python -m clarion_devstack.conformance serve --ready-file PATH`` listens on 127.0.0.1
and lets a runner in any language drive real worker processes on the local stack's
Kafka over plain HTTP+JSON: start a fresh channel with its replicas, produce numbered
events, mint tokens, kill, restart, drain, freeze and thaw replicas. It starts nothing
but workers and stops them by PID. It is a thin edge over ``clarion_devstack.harness``;
``clients/conformance/README.md`` is its contract.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import stack
from .harness import (
    AUDIENCE,
    ISSUER,
    ChannelTopics,
    Keys,
    Producer,
    WorkerProcess,
    consumed_reaches,
    create_topics,
    expected_for,
    start_worker_process,
)
from .procs import free_port
from .settings import DevstackSettings

ORG = "org-a"
USER = "alice"
OTHER_ORG = "org-other"
#: What every replica runs with unless a scenario's ``setup`` overrides a section.
WORKER_DEFAULTS: dict[str, dict[str, Any]] = {
    "heartbeat": {"intervalSeconds": 5, "timeoutSeconds": 5},
    "drain": {"windowSeconds": 3},
}


class ScenarioError(Exception):
    """A control request that cannot be honoured, or a ``verify`` that does not hold."""


@dataclass
class Replica:
    name: str
    port: int
    worker: WorkerProcess | None = None
    frozen: bool = False
    #: Records the worker had read, and records produced, when it became ready.
    consumed_at_start: float = 0.0
    produced_at_start: int = 0

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.proc.poll() is None

    def describe(self) -> dict[str, str]:
        base = f"127.0.0.1:{self.port}"
        return {
            "name": self.name,
            "ws": f"ws://{base}/ws/dashboard",
            "sse": f"http://{base}/sse/dashboard",
            "http": f"http://{base}",
        }


@dataclass
class Session:
    """One scenario's channel: its topics, replicas, keys and produced events."""

    kafka_bootstrap: str
    directory: Path
    topics: ChannelTopics
    keys: Keys
    producer: Producer
    sections: dict[str, dict[str, Any]]
    replicas: list[Replica] = field(default_factory=list)

    @property
    def produced(self) -> int:
        return len(self.producer.sent)

    async def start_replica(self, replica: Replica) -> None:
        auth = {
            "mode": "jwt",
            "hmacSecretFile": str(self.keys.hmac_file),
            "algorithms": ["HS256"],
            "audience": AUDIENCE,
            "issuer": ISSUER,
            "leewaySeconds": 0,
        }
        sections: dict[str, Any] = dict(self.sections)

        def start() -> WorkerProcess:
            return start_worker_process(
                name=replica.name,
                kafka_bootstrap=self.kafka_bootstrap,
                topics=self.topics,
                keys=self.keys,
                directory=self.directory,
                auth=auth,
                port=replica.port,
                **sections,
            )

        worker = await asyncio.to_thread(start)
        replica.worker = worker
        replica.frozen = False
        replica.consumed_at_start = await asyncio.to_thread(worker.consumed)
        replica.produced_at_start = self.produced

    def replica(self, args: dict[str, Any]) -> Replica:
        index = args.get("replica", 0)
        if not isinstance(index, int) or not 0 <= index < len(self.replicas):
            raise ScenarioError(f"no replica {index!r}: there are {len(self.replicas)}")
        return self.replicas[index]

    async def stop(self) -> None:
        for replica in self.replicas:
            if replica.worker is not None:
                # SIGKILL ends a frozen (SIGSTOPped) process too.
                await asyncio.to_thread(replica.worker.stop)


class Controller:
    """The actions of the control server; one session at a time."""

    def __init__(self, kafka_bootstrap: str, work_dir: Path) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.work_dir = work_dir
        self.session: Session | None = None
        self._kafka: AIOKafkaProducer | None = None

    def _current(self) -> Session:
        if self.session is None:
            raise ScenarioError("no session: POST /setup first")
        return self.session

    async def setup(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.teardown({})
        count = int(args.get("replicas", 2))
        sections = {k: dict(v) for k, v in WORKER_DEFAULTS.items()}
        for section, values in (args.get("worker") or {}).items():
            sections.setdefault(section, {}).update(values)
        prefix = f"conf-{uuid.uuid4().hex[:8]}"
        topics = await create_topics(self.kafka_bootstrap, ChannelTopics.named(prefix))
        if self._kafka is None:
            self._kafka = AIOKafkaProducer(bootstrap_servers=self.kafka_bootstrap, linger_ms=0)
            await self._kafka.start()
        directory = self.work_dir / prefix
        directory.mkdir(parents=True)
        keys = await asyncio.to_thread(Keys, directory)
        session = Session(
            self.kafka_bootstrap, directory, topics, keys, Producer(self._kafka), sections
        )
        session.replicas = [Replica(f"w{i + 1}", free_port()) for i in range(count)]
        self.session = session
        await asyncio.gather(*(session.start_replica(r) for r in session.replicas))
        described = [r.describe() for r in session.replicas]
        return {
            "ws": [r["ws"] for r in described],
            "sse": [r["sse"] for r in described],
            "replicas": described,
            "token": keys.token([ORG], USER),
            "org": ORG,
            "user": USER,
            "logs": str(directory),
        }

    async def produce(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        counts = {kind: int(args.get(kind, 0)) for kind in ("org", "user", "all", "other")}
        topics = session.topics
        sends: list[Callable[[], Awaitable[dict[str, Any]]]] = []
        for i in range(max(counts.values(), default=0)):
            if i < counts["org"]:
                sends.append(
                    functools.partial(
                        session.producer.send,
                        topics.approvals,
                        "APPROVAL_PENDING",
                        ORG,
                        key=f"{ORG}-k{i % 3}",
                    )
                )
            if i < counts["user"]:
                sends.append(
                    lambda: session.producer.send(
                        topics.notify, "NOTIFICATION", ORG, user=USER, key=USER
                    )
                )
            if i < counts["all"]:
                sends.append(
                    lambda: session.producer.send(topics.bcast, "KPI_UPDATE", None, key="all")
                )
            if i < counts["other"]:
                sends.append(
                    lambda: session.producer.send(
                        topics.approvals, "APPROVAL_PENDING", OTHER_ORG, key=OTHER_ORG
                    )
                )
        if args.get("burst"):
            # All in flight at once: the producer sends them as few batches, the
            # workers read them in one fetch and fan them out in one pass.
            records = list(await asyncio.gather(*(send() for send in sends)))
        else:
            records = [await send() for send in sends]
        for replica in session.replicas:
            if replica.running and not replica.frozen and replica.worker is not None:
                target = replica.consumed_at_start + session.produced - replica.produced_at_start
                try:
                    await consumed_reaches(replica.worker, target)
                except httpx.HTTPError:
                    if replica.running:
                        raise  # a draining replica may exit meanwhile: only that is fine
        seqs = expected_for(records, {ORG}, USER, topics)
        return {"seqs": seqs, "count": len(seqs)}

    async def token(self, args: dict[str, Any]) -> dict[str, Any]:
        keys = self._current().keys
        kind = args.get("kind", "valid")
        ttl = float(args.get("ttl", 3600))
        if kind == "valid":
            token = keys.token([ORG], USER, ttl=ttl)
        elif kind == "expired":
            token = keys.token([ORG], USER, ttl=-120)
        elif kind == "bad_signature":
            token = keys.token([ORG], USER, ttl=ttl, key=b"not-the-channel-secret-0123456789")
        elif kind == "wrong_audience":
            token = keys.token([ORG], USER, ttl=ttl, audience="someone-else")
        elif kind == "malformed":
            token = "not.a.jwt"
        else:
            raise ScenarioError(f"unknown token kind {kind!r}")
        return {"token": token}

    async def kill(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = self._current().replica(args)
        if replica.worker is not None and replica.running:
            await asyncio.to_thread(replica.worker.kill)
        return {"name": replica.name}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        replica = session.replica(args)
        if replica.worker is not None:
            await asyncio.to_thread(replica.worker.stop)
        await session.start_replica(replica)
        return {"name": replica.name}

    async def drain(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        replica = session.replica(args)
        if replica.worker is None or not replica.running:
            raise ScenarioError(f"replica {replica.name} is not running")
        replica.worker.terminate()
        await _not_ready(replica.worker)
        return {"name": replica.name, "windowSeconds": session.sections["drain"]["windowSeconds"]}

    async def freeze(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = self._current().replica(args)
        if replica.worker is None or not replica.running:
            raise ScenarioError(f"replica {replica.name} is not running")
        replica.worker.proc.send_signal(signal.SIGSTOP)
        replica.frozen = True
        return {"name": replica.name}

    async def thaw(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = self._current().replica(args)
        if replica.worker is not None and replica.running:
            replica.worker.proc.send_signal(signal.SIGCONT)
        replica.frozen = False
        return {"name": replica.name}

    async def verify(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        wanted = float(args.get("batchFrames", 0))
        sent = 0.0
        for replica in session.replicas:
            if replica.worker is not None and replica.running and not replica.frozen:
                try:
                    sent += await asyncio.to_thread(
                        replica.worker.metric,
                        "clarion_worker_frames_sent_total",
                        transport="websocket",
                        kind="batch",
                    )
                except httpx.HTTPError:
                    if replica.running:
                        raise
        if sent < wanted:
            raise ScenarioError(f"{sent:.0f} batch frames sent, wanted at least {wanted:.0f}")
        return {"batchFrames": sent}

    async def teardown(self, _args: dict[str, Any]) -> dict[str, Any]:
        session, self.session = self.session, None
        if session is not None:
            await session.stop()
            # Three runners times every scenario: do not leave their topics to the
            # shared broker. Best effort: a broker that refuses costs only disk.
            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap)
            with contextlib.suppress(Exception):
                await admin.start()
                try:
                    await admin.delete_topics(
                        [session.topics.approvals, session.topics.notify, session.topics.bcast]
                    )
                finally:
                    await admin.close()
        return {}

    async def close(self) -> None:
        await self.teardown({})
        if self._kafka is not None:
            await self._kafka.stop()
            self._kafka = None


async def _not_ready(worker: WorkerProcess, within: float = 10.0) -> None:
    """Wait until a replica stops saying ready (draining, or no longer listening)."""
    async with asyncio.timeout(within), httpx.AsyncClient(timeout=1) as http:
        while True:
            try:
                if (await http.get(f"{worker.http}/readyz")).status_code != 200:
                    return
            except httpx.HTTPError:
                return
            await asyncio.sleep(0.05)


def make_app(controller: Controller) -> Starlette:
    lock = asyncio.Lock()
    actions: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
        "setup": controller.setup,
        "produce": controller.produce,
        "token": controller.token,
        "replica/kill": controller.kill,
        "replica/restart": controller.restart,
        "replica/drain": controller.drain,
        "replica/freeze": controller.freeze,
        "replica/thaw": controller.thaw,
        "verify": controller.verify,
        "teardown": controller.teardown,
    }

    async def handle(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in actions:
            return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
        body = await request.body()
        try:
            args = json.loads(body) if body.strip() else {}
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(args, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        async with lock:
            try:
                return JSONResponse(await actions[action](args))
            except ScenarioError as error:
                return JSONResponse({"error": str(error)}, status_code=409)
            except Exception as error:  # the runner shows it; the server keeps serving
                return JSONResponse({"error": f"{type(error).__name__}: {error}"}, status_code=500)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{action:path}", handle, methods=["POST"]),
        ]
    )


async def serve(kafka_bootstrap: str, work_dir: Path, ready_file: Path | None) -> None:
    controller = Controller(kafka_bootstrap, work_dir)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(controller),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
            await asyncio.sleep(0.05)
        if ready_file is not None:
            partial = ready_file.with_name(ready_file.name + ".partial")
            partial.write_text(json.dumps({"control": f"http://127.0.0.1:{port}"}))
            partial.replace(ready_file)
        print(f"[clarion] conformance control server on http://127.0.0.1:{port}", flush=True)

    announcer = asyncio.create_task(announce())
    # uvicorn catches SIGTERM and SIGINT while serving, then restores these handlers and
    # raises the signal again: they must not end the process before its workers stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    try:
        await server.serve()
    finally:
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer
        await controller.close()


def _stack_kafka() -> str:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the process edge
    env = stack.read_env(settings)
    if env is None or not stack.healthy(env):
        raise SystemExit("the local stack is down: `make env-up`, or pass --kafka-bootstrap")
    return env["kafka_bootstrap"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_devstack.conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve the control endpoints until SIGTERM")
    run.add_argument("--ready-file", type=Path, help='write {"control": URL} here when listening')
    run.add_argument("--kafka-bootstrap", help="default: the running local stack's")
    run.add_argument("--work-dir", type=Path, help="worker configs and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    bootstrap = args.kafka_bootstrap or _stack_kafka()
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(serve(bootstrap, args.work_dir, args.ready_file))
    else:
        with tempfile.TemporaryDirectory(prefix="clarion-conformance-") as work_dir:
            asyncio.run(serve(bootstrap, Path(work_dir), args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
