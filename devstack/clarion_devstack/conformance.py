"""The control server of the client conformance suite (``clients/conformance``).

``python -m clarion_devstack.conformance serve --ready-file PATH`` listens on 127.0.0.1
and lets a runner in any language drive real worker processes on the local stack's
Kafka over plain HTTP+JSON: start a fresh channel with its replicas, produce numbered
events, mint tokens, kill, restart, drain, freeze and thaw replicas. It starts nothing
but workers and stops them by PID. It is a thin edge over ``clarion_devstack.harness``;
``clients/conformance/README.md`` is its contract.

Three runners times fourteen scenarios start some ninety replicas, and a worker's
``python -m clarion_worker`` spends about a second of CPU importing before it does
anything. So replicas are forked from one process that imported the worker once (the
fork server, ``serve``'s own child): each is still its own process running the worker's
own ``main`` with its own config file, log, PID and signals, on the stack's real Kafka,
but starts for a few tens of milliseconds of CPU. Each action's duration goes to the server's
output (``[conformance] setup 0.61 s``), so a slow run says where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clarion_worker.server import main as worker_main

from . import stack
from .harness import (
    AUDIENCE,
    ISSUER,
    ChannelTopics,
    Keys,
    Producer,
    create_topics,
    expected_for,
)
from .procs import free_port
from .settings import CHECKOUT, DevstackSettings

ORG = "org-a"
USER = "alice"
OTHER_ORG = "org-other"
#: What every replica runs with unless a scenario's ``setup`` overrides a section.
WORKER_DEFAULTS: dict[str, dict[str, Any]] = {
    "heartbeat": {"intervalSeconds": 5, "timeoutSeconds": 5},
    "drain": {"windowSeconds": 3},
}

#: The suite's scenarios, one JSON file each, that every runner reads.
SCENARIOS = CHECKOUT / "clients" / "conformance" / "scenarios"


def scenario_names() -> list[str]:
    """Every scenario's name (its file's stem), sorted."""
    return sorted(path.stem for path in SCENARIOS.glob("*.json"))


def scenarios_budget() -> int:
    """Seconds a runner may take for every scenario: their own timeouts (60 s unset)."""
    return int(sum(json.loads(p.read_text()).get("timeout", 60) for p in SCENARIOS.glob("*.json")))


def reported_failure(results: dict[str, Any], scenario: str) -> str | None:
    """What a runner's results file (scenario name -> ``{"outcome", "message"}``) says
    went wrong with ``scenario``; None when it passed."""
    if scenario not in results:
        return f"no result for {scenario}"
    outcome = results[scenario]
    if outcome["outcome"] == "passed":
        return None
    return f"{scenario}: {outcome['outcome']}: {outcome['message']}"


class ScenarioError(Exception):
    """A control request that cannot be honoured, or a ``verify`` that does not hold."""


def fork_server() -> int:
    """``python -m clarion_devstack.conformance fork-server``: with the worker imported
    (this module imports its entry point), fork one replica per line read from stdin
    (``{"argv", "env", "log"}``) and answer each with ``{"pid"}``; end when stdin ends.

    Single-threaded, so forking is safe. Replicas are reaped by the kernel (SIGCHLD
    ignored): the control server, not their parent, watches them through pidfds.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the control server
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _replica_process(request["argv"], request["env"], request["log"])
        print(json.dumps({"pid": pid}), flush=True)
    return 0


def _replica_process(argv: list[str], env: dict[str, str], log: str) -> NoReturn:
    """A forked replica: ``python -m clarion_worker``'s own entry point, its output in
    ``log``, exactly ``env`` as its environment."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(nothing)
        os.environ.clear()  # noqa: TID251 - the replica process's edge
        os.environ.update(env)  # noqa: TID251
        code = worker_main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Forker:
    """The control server's end of the fork server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "clarion_devstack.conformance", "fork-server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def fork(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        """A new replica's PID (blocking: the first waits for the fork server's imports)."""
        request = json.dumps({"argv": argv, "env": env, "log": str(log)}).encode() + b"\n"
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(request)
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline()
        if not answer:
            raise ScenarioError(f"the fork server exited ({self._proc.poll()})")
        pid: int = json.loads(answer)["pid"]
        return pid

    def close(self) -> None:
        """Ends the fork server (blocking); its replicas are the caller's to stop."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@dataclass
class WorkerHandle:
    """One run of a replica: a forked worker process, watched and signalled by pidfd."""

    name: str
    port: int
    pid: int
    #: None once the process is known to have ended (and the descriptor closed).
    pidfd: int | None
    log: Path

    @classmethod
    def of(cls, name: str, port: int, pid: int, log: Path) -> WorkerHandle:
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended (and was reaped) already
            pidfd = None
        return cls(name, port, pid, pidfd, log)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait(self, seconds: float) -> bool:
        """Whether the process ended within ``seconds`` (its pidfd turns readable)."""
        if self.pidfd is not None and select.select([self.pidfd], [], [], seconds)[0]:
            os.close(self.pidfd)
            self.pidfd = None
        return self.pidfd is None

    @property
    def running(self) -> bool:
        return not self._wait(0)

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.pidfd is not None
            signal.pidfd_send_signal(self.pidfd, sig)

    def kill(self) -> None:
        """SIGKILL (which ends a frozen process too), then wait until it has ended."""
        self.signal(signal.SIGKILL)
        self._wait(10)

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float]:
        """Every sample of /metrics: ``name{label="v",...}`` (labels sorted) to its value."""
        samples: dict[str, float] = {}
        for line in (await http.get(f"{self.http}/metrics")).text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            series, _, value = line.rpartition(" ")
            metric, _, labels = series.partition("{")
            if labels:
                metric += "{" + ",".join(sorted(labels.rstrip("}").split(","))) + "}"
            samples[metric] = float(value)
        return samples

    async def consumed(self, http: httpx.AsyncClient) -> float:
        """Valid plus bad records this worker read, over all topics."""
        return sum(
            value
            for series, value in (await self.metrics(http)).items()
            if series.startswith(
                ("clarion_worker_events_consumed_total", "clarion_worker_bad_records_total")
            )
        )

    async def until_ready(self, http: httpx.AsyncClient, within: float = 60.0) -> None:
        """Wait until /readyz says ok (the worker has its Kafka assignment)."""
        deadline = time.monotonic() + within
        # Another process's state: nothing to await but its next answer.
        while True:
            if not self.running:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise ScenarioError(f"worker {self.name} exited: {tail}")
            try:
                if (await http.get(f"{self.http}/readyz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ScenarioError(f"worker {self.name} not ready in {within:.0f} s: {self.log}")
            await asyncio.sleep(0.02)


@dataclass
class Replica:
    name: str
    port: int
    worker: WorkerHandle | None = None
    frozen: bool = False
    #: Sent SIGTERM: on its way out, so no longer waited for or asked for metrics.
    draining: bool = False
    #: Records the worker had read, and records produced, when it became ready.
    consumed_at_start: float = 0.0
    produced_at_start: int = 0

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.running

    @property
    def serving(self) -> bool:
        """Running, neither frozen nor draining: it answers, and reads what is produced."""
        return self.running and not self.frozen and not self.draining

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
    #: Written once: ``Keys.hmac_file`` rewrites the file, under running workers' feet.
    hmac_file: Path
    producer: Producer
    sections: dict[str, dict[str, Any]]
    http: httpx.AsyncClient
    forker: Forker
    replicas: list[Replica] = field(default_factory=list)

    @property
    def produced(self) -> int:
        return len(self.producer.sent)

    def _config(self, replica: Replica) -> Path:
        doc: dict[str, Any] = {
            "apiVersion": "clarion.dev/worker-config/v1",
            "channel": "tests",
            "kafka": {"bootstrapServers": self.kafka_bootstrap, "metadataRefreshSeconds": 1},
            "topics": self.topics.config(),
            "auth": {
                "mode": "jwt",
                "hmacSecretFile": str(self.hmac_file),
                "algorithms": ["HS256"],
                "audience": AUDIENCE,
                "issuer": ISSUER,
                "leewaySeconds": 0,
            },
        }
        for section, values in self.sections.items():
            doc.setdefault(section, {}).update(values)
        path = self.directory / f"{replica.name}.json"
        path.write_text(json.dumps(doc))
        return path

    async def start_replica(self, replica: Replica) -> None:
        config = self._config(replica)
        # A pod gets no CLARION_* variables but those the operator sets; the worker
        # rejects unknown ones, so the server's own must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}  # noqa: TID251
        env["CLARION_REPLICA_ID"] = replica.name
        argv = ["--config", str(config), "--host", "127.0.0.1", "--port", str(replica.port)]
        log = self.directory / f"{replica.name}.log"
        pid = await asyncio.to_thread(self.forker.fork, argv, env, log)
        worker = WorkerHandle.of(replica.name, replica.port, pid, log)
        replica.worker = worker
        replica.frozen = False
        replica.draining = False
        await worker.until_ready(self.http)
        replica.consumed_at_start = await worker.consumed(self.http)
        replica.produced_at_start = self.produced

    def replica(self, args: dict[str, Any]) -> Replica:
        index = args.get("replica", 0)
        if not isinstance(index, int) or not 0 <= index < len(self.replicas):
            raise ScenarioError(f"no replica {index!r}: there are {len(self.replicas)}")
        return self.replicas[index]

    async def stop(self) -> None:
        """SIGKILL every replica at once: no scenario tests its teardown, so no drain."""
        await asyncio.gather(
            *(asyncio.to_thread(r.worker.kill) for r in self.replicas if r.worker is not None)
        )


class Controller:
    """The actions of the control server; one session at a time."""

    def __init__(self, kafka_bootstrap: str, work_dir: Path, forker: Forker) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.forker = forker
        self.work_dir = work_dir
        self.session: Session | None = None
        #: One set of keys for every session (an RSA key costs CPU to make).
        self._keys: Keys | None = None
        self._hmac_file = work_dir / "hmac.secret"
        #: Without keep-alive: a killed replica must not leave a dead pooled connection.
        self._http = httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))
        #: Topic deletions of past sessions, left to finish while the next one runs.
        self._deletions: set[asyncio.Task[None]] = set()

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
        started = time.monotonic()
        # A producer per session: one for all would keep asking the broker for the
        # metadata of every deleted topic of the sessions before.
        kafka = AIOKafkaProducer(bootstrap_servers=self.kafka_bootstrap, linger_ms=0)
        try:
            topics, _ = await asyncio.gather(
                create_topics(self.kafka_bootstrap, ChannelTopics.named(prefix)), kafka.start()
            )
        except BaseException:
            await kafka.stop()
            raise
        if self._keys is None:
            self._keys = await asyncio.to_thread(Keys, self.work_dir)
            self._hmac_file = self._keys.hmac_file
        keys = self._keys
        directory = self.work_dir / prefix
        directory.mkdir(parents=True)
        session = Session(
            self.kafka_bootstrap,
            directory,
            topics,
            keys,
            self._hmac_file,
            Producer(kafka),
            sections,
            self._http,
            self.forker,
        )
        session.replicas = [Replica(f"w{i + 1}", free_port()) for i in range(count)]
        self.session = session
        topics_done = time.monotonic()
        await asyncio.gather(*(session.start_replica(r) for r in session.replicas))
        print(
            f"[conformance] setup {prefix}: topics {topics_done - started:.2f} s, "
            f"{count} replicas ready {time.monotonic() - topics_done:.2f} s",
            flush=True,
        )
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
            # Not a draining one: it stops listening before it exits, whenever it likes.
            if replica.serving and replica.worker is not None:
                target = replica.consumed_at_start + session.produced - replica.produced_at_start
                await _consumed_reaches(replica.worker, session.http, target)
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
            await asyncio.to_thread(replica.worker.kill)
        await session.start_replica(replica)
        return {"name": replica.name}

    async def drain(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        replica = session.replica(args)
        if replica.worker is None or not replica.running:
            raise ScenarioError(f"replica {replica.name} is not running")
        replica.worker.signal(signal.SIGTERM)
        replica.draining = True
        await _not_ready(replica.worker, session.http)
        return {"name": replica.name, "windowSeconds": session.sections["drain"]["windowSeconds"]}

    async def freeze(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = self._current().replica(args)
        if replica.worker is None or not replica.running:
            raise ScenarioError(f"replica {replica.name} is not running")
        replica.worker.signal(signal.SIGSTOP)
        replica.frozen = True
        return {"name": replica.name}

    async def thaw(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = self._current().replica(args)
        if replica.worker is not None:
            replica.worker.signal(signal.SIGCONT)
        replica.frozen = False
        return {"name": replica.name}

    async def verify(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._current()
        wanted = float(args.get("batchFrames", 0))
        sent = 0.0
        series = 'clarion_worker_frames_sent_total{kind="batch",transport="websocket"}'
        for replica in session.replicas:
            if replica.worker is not None and replica.running and not replica.frozen:
                try:
                    sent += (await replica.worker.metrics(session.http)).get(series, 0.0)
                except httpx.HTTPError:
                    if not replica.draining:
                        raise  # a draining one stops listening when it likes
        if sent < wanted:
            raise ScenarioError(f"{sent:.0f} batch frames sent, wanted at least {wanted:.0f}")
        return {"batchFrames": sent}

    async def teardown(self, _args: dict[str, Any]) -> dict[str, Any]:
        session, self.session = self.session, None
        if session is not None:
            await session.stop()
            # Three runners times every scenario: do not leave their topics to the
            # shared broker. The runner need not wait for it: the next session has topics
            # of its own, and ``close`` waits for what is left.
            task = asyncio.create_task(self._forget(session))
            self._deletions.add(task)
            task.add_done_callback(self._deletions.discard)
        return {}

    async def _forget(self, session: Session) -> None:
        """Stop the session's producer, delete its topics (best effort: a broker that
        refuses costs only disk)."""
        await session.producer.kafka.stop()
        topics = session.topics
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            try:
                await admin.delete_topics([topics.approvals, topics.notify, topics.bcast])
            finally:
                await admin.close()

    async def close(self) -> None:
        await self.teardown({})
        await asyncio.gather(*self._deletions)
        await self._http.aclose()


async def _not_ready(worker: WorkerHandle, http: httpx.AsyncClient, within: float = 10.0) -> None:
    """Wait until a replica stops saying ready (draining, or no longer listening)."""
    async with asyncio.timeout(within):
        # Another process's state: nothing to await but its next answer.
        while True:
            try:
                if (await http.get(f"{worker.http}/readyz", timeout=1)).status_code != 200:
                    return
            except httpx.HTTPError:
                return
            await asyncio.sleep(0.02)


async def _consumed_reaches(
    worker: WorkerHandle, http: httpx.AsyncClient, count: float, within: float = 30.0
) -> None:
    """Wait until a replica has read ``count`` records (valid and bad) from Kafka."""
    async with asyncio.timeout(within):
        # Another process's counter: nothing to await but its next scrape.
        while await worker.consumed(http) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


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
            started = time.monotonic()
            try:
                answer = await actions[action](args)
                print(f"[conformance] {action} {time.monotonic() - started:.2f} s", flush=True)
                return JSONResponse(answer)
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
    # Started first: it imports the worker while uvicorn starts.
    forker = Forker()
    controller = Controller(kafka_bootstrap, work_dir, forker)
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
        try:
            await controller.close()
        finally:
            forker.close()


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
    sub.add_parser("fork-server", help="(serve's own helper) fork replicas asked for on stdin")
    args = parser.parse_args(argv)
    if args.command == "fork-server":
        return fork_server()
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
