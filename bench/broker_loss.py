"""Broker loss under load: how long clients of the workers go without events when the
broker leading most of a channel's partitions is SIGKILLed, and what is lost.

    .venv/bin/python bench/broker_loss.py --trials 3 --output broker-loss.json

Starts its own three-node Kafka (``clarion_devstack.kafka_cluster``: KRaft, combined
broker and controller nodes, replication factor 3, ``min.insync.replicas=2``, Kafka's
default failure detection) on free 127.0.0.1 ports, two worker processes and one client
per worker, and stops them all afterwards. A producer with ``acks=all`` and idempotence
sends numbered events at ``--rate`` per second. Each trial: events flow, the leader of
most partitions is SIGKILLed, events flow from the new leaders, the broker is started
again and the wait is until every partition is fully replicated. Reported per trial: the
longest gap between two deliveries to a client, the longest gap between two producer
acknowledgements (Kafka's share), and the longest acknowledgement-to-client delay (the
workers' share); at the end, events sent, lost and duplicated per client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from result_json import emit  # type: ignore[import-not-found]  # bench/result_json.py, beside this

from clarion_devstack import install, kafka_cluster, kafka_load
from clarion_devstack.harness import Keys, Producer, expected_for, settle, start_worker_process
from clarion_devstack.settings import DevstackSettings


def window_gap(times: list[float], start: float, end: float) -> float:
    """The longest gap between consecutive instants within [start, end)."""
    return kafka_load.longest_gap([t for t in times if t < end], start)


async def trial(
    cluster: kafka_cluster.KafkaCluster,
    topics: Any,
    load: kafka_load.Load,
    collectors: list[Any],
) -> dict[str, Any]:
    await load.until(2 * kafka_load.RATE)
    leaders = [p["leader"] for p in await kafka_load.partitions(cluster.bootstrap, topics)]
    victim = max(set(leaders), key=leaders.count)
    wall, mono = time.time(), time.monotonic()
    cluster.kill(victim)
    await load.until(3 * kafka_load.RATE, within=120)
    cluster.start(victim)
    await kafka_load.fully_replicated(cluster.bootstrap, topics, within=180)
    await load.until(kafka_load.RATE)
    return {
        "victim": victim,
        "led": f"{leaders.count(victim)}/{len(leaders)}",
        "_since": (wall, mono),
    }


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - script edge
    libs = install.ensure_kafka(settings)
    cluster = kafka_cluster.prepare(settings.java, libs, directory / "kafka")
    workers = []
    try:
        started = time.monotonic()
        cluster.start_all()
        cluster_start = time.monotonic() - started
        topics = await kafka_load.create_channel_topics(
            cluster.bootstrap, f"bl-{uuid.uuid4().hex[:8]}"
        )
        keys = Keys(directory)
        for name in ("w1", "w2"):
            workers.append(
                start_worker_process(
                    name=name,
                    kafka_bootstrap=cluster.bootstrap,
                    topics=topics,
                    keys=keys,
                    directory=directory,
                )
            )
        kafka = AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True, linger_ms=0
        )
        await kafka.start()
        producer = Producer(kafka)
        collectors = await kafka_load.connect_clients(keys, workers)
        load = kafka_load.Load(producer, topics)
        trials = []
        try:
            for _ in range(args.trials):
                trials.append(await trial(cluster, topics, load, collectors))
        finally:
            await load.stop()
        await settle(producer, workers, collectors, topics.bcast)
        expected = expected_for(producer.sent, set(kafka_load.ORGS), kafka_load.USER, topics)
        kills = [found.pop("_since") for found in trials]
        for number, found in enumerate(trials):
            wall, mono = kills[number]
            # Each trial's window runs from its kill to the next trial's kill.
            wall_end, mono_end = kills[number + 1] if number + 1 < len(kills) else (1e18, 1e18)
            found["delivery_pause_s"] = [
                round(window_gap(c.received_at, wall - 1, wall_end), 2) for c in collectors
            ]
            found["producer_pause_s"] = round(window_gap(load.acked_at, mono - 1, mono_end), 2)
        clients = []
        for collector in collectors:
            got = collector.seqs()
            clients.append(
                {
                    "received": len(got),
                    "lost": len(set(expected) - set(got)),
                    "duplicated": len(got) - len(set(got)),
                    "ack_to_client_max_s": round(kafka_load.worker_delay(collector, load), 2),
                }
            )
        for collector in collectors:
            await collector.stop()
        await kafka.stop()
        return {
            "benchmark": "broker-loss",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["bench/broker_loss.py", *sys.argv[1:]]),
            "rate_per_s": kafka_load.RATE,
            "cluster_start_s": round(cluster_start, 1),
            "events_sent": len(producer.sent),
            "trials": trials,
            "clients": clients,
            "load_average": os.getloadavg(),
        }
    finally:
        for worker in workers:
            worker.stop()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-broker-loss-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    emit(result, args.output)


if __name__ == "__main__":
    main()
