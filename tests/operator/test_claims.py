"""The claim index port: what the kopf index stores per channel, and reading it back."""

from __future__ import annotations

import pytest

from clarion_operator.claims import IndexedClaims, index_entry
from clarion_operator.core.topics import ChannelClaim

CLAIM = ChannelClaim("ns", "dash", "2026-01-01T00:00:00Z", "u1", ("orders",))


def test_index_entry_files_the_claim_under_its_cluster_key() -> None:
    body = {
        "metadata": {
            "namespace": "ns",
            "name": "dash",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"kafka": {"bootstrapServers": "K:9092"}, "topics": [{"name": "orders"}]},
    }
    assert index_entry(body) == {"k:9092": CLAIM}


def test_index_entry_is_empty_not_none_without_bootstrap_servers() -> None:
    # kopf keeps an object's old entries when the index function returns None.
    assert index_entry({"metadata": {"name": "dash"}, "spec": {}}) == {}


def test_claims_read_the_bound_index_by_cluster_key() -> None:
    claims = IndexedClaims()
    with pytest.raises(RuntimeError):
        claims.claims("k:9092")
    index: dict[str, list[ChannelClaim]] = {"k:9092": [CLAIM]}
    claims.bind(index)
    assert claims.claims("k:9092") == [CLAIM]
    assert claims.claims("other:9092") == []
    # Live: later index updates are seen; the answer is a copy, not the index's store.
    index["k:9092"].append(CLAIM)
    answer = claims.claims("k:9092")
    assert len(answer) == 2
    answer.clear()
    assert len(index["k:9092"]) == 2
