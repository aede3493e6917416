"""A channel's rules for UnionFlow's producers: user events without a user, the zone of
zoneless timestamps. Parsed, refused when wrong, rendered into worker.json, and what is
rendered is what the worker accepts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from clarion_operator.core.render import DesiredState
from clarion_operator.core.spec import SpecError, parse_spec
from clarion_worker.core.events import RawRecord, RecordDecoder
from clarion_worker.core.settings import load_settings

#: The ``render_channel`` fixture (conftest.py): a raw spec, and settings by keyword.
RenderChannel = Callable[..., DesiredState]

SEED_TOPICS: list[dict[str, Any]] = [
    {"name": "unionflow.finance.approvals", "audience": "organization"},
    {"name": "unionflow.notifications.user", "audience": "user", "withoutUser": "organization"},
    {"name": "unionflow.members.events", "audience": "user", "withoutUser": "reject"},
]


def _raw(minimal_raw: dict[str, Any], **routing: Any) -> dict[str, Any]:
    raw = copy.deepcopy(minimal_raw)
    raw["topics"] = copy.deepcopy(SEED_TOPICS)
    raw["routing"] = routing
    return raw


def _worker_doc(state: DesiredState) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(state.config_map["data"]["worker.json"])
    return doc


def _problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return [(p.path, p.message) for p in info.value.problems]


def test_rules_are_parsed_and_rendered(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    raw = _raw(minimal_raw, timestampZone="Africa/Abidjan")
    spec = parse_spec(raw)
    assert [t.without_user for t in spec.topics] == [None, "organization", "reject"]
    assert spec.routing.timestamp_zone == "Africa/Abidjan"
    doc = _worker_doc(render_channel(raw))
    assert doc["topics"] == [
        {"name": "unionflow.finance.approvals", "audience": "organization"},
        {"name": "unionflow.notifications.user", "audience": "user", "withoutUser": "organization"},
        {"name": "unionflow.members.events", "audience": "user", "withoutUser": "reject"},
    ]
    assert doc["routing"]["timestampZone"] == "Africa/Abidjan"


def test_unset_rules_leave_the_worker_defaults(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    doc = _worker_doc(render_channel(minimal_raw))
    assert "withoutUser" not in doc["topics"][0]
    assert "timestampZone" not in doc.get("routing", {})


@pytest.mark.parametrize("zone", ["UTC", "Z", "+01:00", "-05:30", "Europe/Paris", "Etc/GMT+1"])
def test_rendered_document_is_what_the_worker_runs(
    render_channel: RenderChannel, minimal_raw: dict[str, Any], zone: str
) -> None:
    settings = load_settings(
        _worker_doc(render_channel(_raw(minimal_raw, timestampZone=zone))), hostname="w-0"
    )
    decoder = RecordDecoder.for_settings(settings)
    broadcast = json.dumps(
        {"type": "BROADCAST_NOTIFICATION", "organizationId": "org-1", "data": {}}
    ).encode()
    event = decoder.decode(
        RawRecord("unionflow.notifications.user", 0, 0, None, b"org-1", broadcast)
    )
    assert (event.audience, event.organization, event.userless) == ("organization", "org-1", True)


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (
            lambda raw: raw["topics"][0].update(withoutUser="reject"),
            "spec.topics[0].withoutUser",
            "only for topics of audience user",
        ),
        (
            lambda raw: raw["topics"][1].update(withoutUser="everyone"),
            "spec.topics[1].withoutUser",
            "must be one of organization, reject",
        ),
        (
            lambda raw: raw["routing"].update(timestampZone="Mars/Olympus"),
            "spec.routing.timestampZone",
            "unknown time zone",
        ),
        (
            lambda raw: raw["routing"].update(timestampZone="+19:00"),
            "spec.routing.timestampZone",
            "offset out of range",
        ),
        (
            lambda raw: raw["routing"].update(timestampZone="CET 1"),
            "spec.routing.timestampZone",
            "is not a zone name (UTC, +HH:MM or an IANA name)",
        ),
    ],
)
def test_wrong_rules_are_refused(
    minimal_raw: dict[str, Any], mutate: Any, path: str, words: str
) -> None:
    raw = _raw(minimal_raw)
    mutate(raw)
    problems = _problems(raw)
    assert any(p == path and words in message for p, message in problems), problems
