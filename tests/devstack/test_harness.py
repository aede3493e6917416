"""The tests' own statement of who gets what (the oracle both harnesses' expected_for use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clarion_devstack.harness import ChannelTopics, WorkerProcess, expected_for, meant_for


@pytest.mark.parametrize(
    ("audience", "organization", "recipient", "meant"),
    [
        ("broadcast", None, None, True),
        ("organization", "org-a", None, True),
        ("organization", "org-c", None, False),
        ("user", "org-a", "alice", True),
        ("user", None, "alice", True),  # a user event without organization
        ("user", "org-c", "alice", False),  # not in one of her organizations
        ("user", "org-a", "bob", False),
    ],
)
def test_who_gets_an_event(
    audience: str, organization: str | None, recipient: str | None, meant: bool
) -> None:
    assert meant_for(audience, organization, recipient, {"org-a", "org-b"}, "alice") is meant


def test_expected_for_keeps_production_order_and_reads_the_audience_from_the_topic() -> None:
    topics = ChannelTopics.named("t")
    sent = [
        {"topic": "t.bcast", "organizationId": None, "data": {"seq": 1}},
        {"topic": "t.approvals", "organizationId": "org-b", "data": {"seq": 2}},
        {"topic": "t.notify", "organizationId": "org-a", "userId": "bob", "data": {"seq": 3}},
        {"topic": "t.notify", "organizationId": "org-a", "userId": "alice", "data": {"seq": 4}},
    ]
    assert expected_for(sent, {"org-a"}, "alice", topics) == [1, 4]


def test_a_worker_process_s_addresses_are_the_loopback_ones(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", ""]) as proc:
        worker = WorkerProcess("w1", 18080, proc, tmp_path / "w1.log")
    assert worker.ws == "ws://127.0.0.1:18080/ws/dashboard"
    assert worker.http == worker.url == worker.origin == "http://127.0.0.1:18080"
