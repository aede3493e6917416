"""The claim index port over a kopf index of every watched RealtimeChannel.

Topic ownership (the oldest channel claiming a topic on a Kafka cluster wins) needs every
sibling's claim. Listing every RealtimeChannel on every reconcile made the total work grow
with the square of the channel count (200 channels applied at once: 200 lists of 200
objects, each decoded in a thread of the Kubernetes pool). kopf keeps an index fed by the
watch the operator already has: :func:`index_entry` files each channel's claim under its
Kafka cluster key, and kopf calls no resource handler before the initial listing is
indexed, so the first reconciles after a start see every sibling, as the list did.

Scope: the index holds the channels the operator watches. Cluster-wide that is every
channel; with ``--namespace`` it is those namespaces, which is what the list fell back to
under the chart's namespaced RBAC (it could not list elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from clarion_operator.core.topics import ChannelClaim, channel_claim

#: The kopf index id; kopf hands the index to handlers as a keyword of this name.
INDEX_ID: Final = "channel_claims"


def index_entry(body: Mapping[str, object]) -> dict[str, ChannelClaim]:
    """What the kopf index stores for one channel: its claim under its cluster key.

    An empty mapping (not None) for a channel naming no bootstrap servers: kopf then drops
    whatever the channel claimed before, where None would keep a stale entry.
    """
    found = channel_claim(body)
    if found is None:
        return {}
    key, claim = found
    return {key: claim}


class IndexedClaims:
    """:class:`~clarion_operator.ports.ClaimIndex` over kopf's live index.

    kopf creates its indexes inside ``kopf.run`` and hands them only to handlers, so the
    startup handler binds the index here once; it is the same live object from then on.
    """

    def __init__(self) -> None:
        self._index: Mapping[str, Iterable[ChannelClaim]] | None = None

    def bind(self, index: Mapping[str, Iterable[ChannelClaim]]) -> None:
        self._index = index

    def claims(self, cluster_key: str) -> list[ChannelClaim]:
        if self._index is None:
            # kopf runs startup handlers before any resource handler: a bug, not a state.
            raise RuntimeError("the channel claim index is not bound yet")
        # A copy: kopf updates the index between awaits, never while this runs.
        return list(self._index.get(cluster_key, ()))
