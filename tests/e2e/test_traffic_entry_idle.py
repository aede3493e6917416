"""Idle streams through Traefik outlive its default timeouts (readTimeout 60 s, idleTimeout
180 s) on the workers' heartbeats alone: real pods on the real node, Traefik v3 in front.

The test waits 200 s on a timer, so ``make test`` runs it in a process of its own beside the
first phase (``background``). It therefore shares nothing with any other test: its channel
reads topics named after its namespace, serves paths no other channel serves, and its
Traefik watches only that namespace. So no other test's events reach it (it stays idle),
and none of its events reach another test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clarion_devstack.e2e import clients, deploy, traefik
from clarion_devstack.e2e.deploy import Kube
from clarion_devstack.e2e.events import FEW_PEOPLE, UnionFlowProducer
from clarion_devstack.e2e.pods import PodChannel
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.background]

#: Longer than Traefik's default idleTimeout (180 s) and readTimeout (60 s).
IDLE_SECONDS = 200.0
WEBSOCKET_PATH = "/ws/idle"
SSE_PATH = "/sse/idle"


@dataclass
class IdleChannel(PodChannel):
    """The UnionFlow channel on topics and paths of its own, exposed by an Ingress."""

    @property
    def organization_topic(self) -> str:
        return f"idle.{self.namespace}.organization"

    @property
    def broadcast_topic(self) -> str:
        return f"idle.{self.namespace}.broadcast"

    def objects(self, **workers: Any) -> list[dict[str, Any]]:
        objects = super().objects(**workers)
        spec = deploy.channel_of(objects)["spec"]
        spec["topics"] = [
            {"name": self.organization_topic, "partitions": 1, "audience": "organization"},
            {"name": self.broadcast_topic, "partitions": 1, "audience": "broadcast"},
        ]
        for topic in spec["topics"]:
            topic["deletionPolicy"] = "Delete"
        spec["server"] = {
            **spec.get("server", {}),
            "websocketPath": WEBSOCKET_PATH,
            "sse": {"enabled": True, "path": SSE_PATH},
        }
        spec["exposure"] = {
            "type": "ingress",
            "ingress": {"className": traefik.INGRESS_CLASS, "profile": "traefik"},
        }
        return objects


@pytest.fixture(scope="module")
def idle_channel(make_pod_channel: Callable[..., PodChannel]) -> Iterator[IdleChannel]:
    ch = make_pod_channel(IdleChannel, "idle", replicas=1, drain_window_seconds=2)
    assert isinstance(ch, IdleChannel)
    with ch:
        yield ch


@pytest.fixture(scope="module")
def own_traefik(
    local_stack: LocalStack, idle_channel: IdleChannel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[traefik.Traefik]:
    traefik.ensure_ingress_class(Kube.of(local_stack.env))
    proc = traefik.Traefik(
        traefik.traefik_binary(local_stack.settings),
        local_stack.env["kubeconfig"],
        tmp_path_factory.mktemp("traefik-idle") / "traefik.log",
        gateway_api=False,
        namespaces=(idle_channel.namespace,),
    )
    proc.start()
    try:
        proc.wait_servers(f"{idle_channel.namespace}-{idle_channel.deployment_name}-", 1)
        yield proc
    finally:
        proc.stop()


async def _sse_lines(
    url: str, token: str, lines: list[tuple[float, str]], stop: asyncio.Event
) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", url, params={"access_token": token}) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            lines.append((time.monotonic(), line))
            if stop.is_set():
                return


async def test_idle_streams_outlive_traefiks_default_timeouts(
    idle_channel: IdleChannel, own_traefik: traefik.Traefik, producer: UnionFlowProducer
) -> None:
    """A WebSocket and an SSE stream with no event for longer than both of Traefik's
    timeouts stay up on the heartbeats alone, then deliver the next events."""
    person = FEW_PEOPLE[0]
    organization = person.organizations[0]
    token = idle_channel.token(person)
    ws = clients.viewer(f"{own_traefik.ws_base}{WEBSOCKET_PATH}", token, person)
    lines: list[tuple[float, str]] = []
    stop = asyncio.Event()
    sse = asyncio.create_task(_sse_lines(f"{own_traefik.url}{SSE_PATH}", token, lines, stop))
    try:
        await clients.all_welcomed([ws])
        started = time.monotonic()

        async def heartbeats_past(deadline: float) -> None:
            while not any(at >= deadline and line.startswith(":") for at, line in lines):
                if sse.done():
                    sse.result()  # the stream ended: raise what ended it
                    raise AssertionError("SSE stream ended while idle")
                await asyncio.sleep(1)

        await asyncio.wait_for(heartbeats_past(started + IDLE_SECONDS), IDLE_SECONDS + 60)
        assert ws.events == [], "the stream was not idle: events of another test reached it"
        assert len(ws.welcomes) == 1, ws.welcomes  # never reconnected
        assert ws.error is None
        in_order = [
            producer.emit(idle_channel.organization_topic, "MEMBER_UPDATED", organization)
            for _ in range(10)
        ]
        # Another topic: its event may come before or after those (order holds per
        # partition, not across topics).
        broadcast = producer.emit(idle_channel.broadcast_topic, "BROADCAST_NOTIFICATION", None)
        sent = [*in_order, broadcast]
        producer.flush(30)

        def exactly_once_in_order(seqs: list[int]) -> None:
            assert sorted(seqs) == sorted(sent), seqs  # all, once
            assert [s for s in seqs if s != broadcast] == in_order  # in order

        await ws.wait(lambda v: len(v.events) >= len(sent))
        exactly_once_in_order([e["data"]["seq"] for e in ws.events])
        assert len(ws.welcomes) == 1, ws.welcomes

        def sse_seqs() -> list[int]:
            data = [ln for _, ln in lines if ln.startswith("data:") and '"event"' in ln]
            return [int(_json(ln[len("data:") :])["data"]["seq"]) for ln in data]

        async def sse_caught_up() -> None:
            while len(sse_seqs()) < len(sent):
                if sse.done():
                    sse.result()
                    raise AssertionError("SSE stream ended after the idle period")
                await asyncio.sleep(0.1)

        await asyncio.wait_for(sse_caught_up(), 30)
        exactly_once_in_order(sse_seqs())
        pings = sum(1 for at, ln in lines if ln.startswith(":") and at > started)
        print(
            f"[traffic-entry] idle {IDLE_SECONDS:.0f}s through Traefik: WebSocket welcomes "
            f"{len(ws.welcomes)}, SSE pings while idle {pings}, then {len(sent)} events on "
            "each stream, each topic's in order"
        )
    finally:
        stop.set()
        sse.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await sse
        await ws.stop()


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value
