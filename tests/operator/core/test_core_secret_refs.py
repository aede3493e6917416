"""Which channels a Secret's change reconciles (``core.secret_refs``)."""

from __future__ import annotations

from typing import Any

import pytest

from clarion_operator.core.secret_refs import (
    channels_to_reconcile,
    concerns,
    index_keys,
    referenced_secrets,
)


def channel(
    name: str, security: dict[str, Any] | None = None, namespace: str = "team-a", **meta: Any
) -> dict[str, Any]:
    kafka: dict[str, Any] = {"bootstrapServers": "kafka:9093"}
    if security is not None:
        kafka["security"] = security
    return {
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": {
            "kafka": kafka,
            "auth": {"mode": "jwt", "hmacSecret": {"name": "jwt-key", "key": "hmac"}},
        },
    }


SASL_TLS = {
    "protocol": "SASL_SSL",
    "saslMechanism": "SCRAM-SHA-512",
    "credentialsSecret": {"name": "kafka-user"},
    "tlsSecret": {"name": "cluster-ca", "caKey": "ca.crt"},
}


def index_of(*channels: dict[str, Any]) -> dict[str, list[str]]:
    """What kopf's index holds: per key, one entry (here the name) per channel."""
    index: dict[str, list[str]] = {}
    for body in channels:
        for key in index_keys(body):
            index.setdefault(key, []).append(body["metadata"]["name"])
    return index


def test_a_channel_is_filed_under_each_kafka_secret_it_makes_the_operator_read() -> None:
    assert referenced_secrets(channel("c", SASL_TLS)) == {"kafka-user", "cluster-ca"}
    assert index_keys(channel("c", SASL_TLS)) == ("team-a/cluster-ca", "team-a/kafka-user")
    # One Secret for both: filed once.
    both = {**SASL_TLS, "tlsSecret": {"name": "kafka-user"}}
    assert index_keys(channel("c", both)) == ("team-a/kafka-user",)


def test_plaintext_auth_secrets_and_deleting_channels_file_nothing() -> None:
    # spec.auth's Secrets are projected into the workers, never read by the operator.
    assert index_keys(channel("c")) == ()
    assert index_keys(channel("c", {"protocol": "PLAINTEXT"})) == ()
    assert index_keys(channel("c", SASL_TLS, deletionTimestamp="2026-11-30T12:00:00Z")) == ()
    # Malformed shapes (the CRD refuses them; the index must not break on them).
    assert index_keys({"metadata": {"name": "c"}, "spec": {"kafka": "x"}}) == ()
    assert index_keys(channel("c", {"credentialsSecret": "kafka-user"})) == ()
    assert index_keys(channel("c", {"credentialsSecret": {"name": ""}})) == ()
    assert index_keys({"metadata": {"name": "c"}, "spec": {"kafka": {"security": SASL_TLS}}}) == ()


def test_an_invalid_channel_still_follows_the_secret_it_names() -> None:
    invalid = channel("c", {**SASL_TLS, "protocol": "NOT-A-PROTOCOL"})
    assert "team-a/kafka-user" in index_keys(invalid)


def test_a_change_reconciles_exactly_the_channels_naming_that_secret() -> None:
    index = index_of(
        channel("one", SASL_TLS),
        channel("two", {**SASL_TLS, "credentialsSecret": {"name": "other-user"}}),
        channel("plain"),
        channel("elsewhere", SASL_TLS, namespace="team-b"),
    )
    for kind in ("ADDED", "MODIFIED"):
        assert channels_to_reconcile(kind, "team-a", "kafka-user", index) == ["one"]
        assert sorted(channels_to_reconcile(kind, "team-a", "cluster-ca", index)) == ["one", "two"]
        assert channels_to_reconcile(kind, "team-b", "kafka-user", index) == ["elsewhere"]
        assert channels_to_reconcile(kind, "team-a", "jwt-key", index) == []
        assert channels_to_reconcile(kind, "team-c", "kafka-user", index) == []
        assert concerns(kind, "team-a", "other-user", index)
        assert not concerns(kind, "team-a", "unrelated", index)


@pytest.mark.parametrize("kind", [None, "DELETED", "BOOKMARK", "ERROR"])
def test_the_initial_listing_and_deletions_reconcile_nothing(kind: str | None) -> None:
    index = index_of(channel("one", SASL_TLS))
    assert not concerns(kind, "team-a", "kafka-user", index)
    assert channels_to_reconcile(kind, "team-a", "kafka-user", index) == []


def test_an_emptied_entry_or_a_missing_name_concerns_nothing() -> None:
    # kopf keeps an emptied store under its key until it is collected.
    index: dict[str, list[str]] = {"team-a/kafka-user": []}
    assert not concerns("MODIFIED", "team-a", "kafka-user", index)
    assert not concerns("MODIFIED", None, "kafka-user", index)
    assert not concerns("MODIFIED", "team-a", None, index)
    assert channels_to_reconcile("MODIFIED", "team-a", "kafka-user", index) == []


def test_the_result_is_a_copy_of_the_index_entry() -> None:
    index = index_of(channel("one", SASL_TLS))
    found = channels_to_reconcile("MODIFIED", "team-a", "kafka-user", index)
    index["team-a/kafka-user"].append("late")
    assert found == ["one"]
