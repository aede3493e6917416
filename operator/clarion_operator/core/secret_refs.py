"""Which channels a Secret concerns: the decision behind following Secret changes.

The operator reads two Secrets of a channel itself, both named by
``spec.kafka.security`` in the channel's namespace: ``credentialsSecret`` (the SASL
username and password) and ``tlsSecret`` (the CA bundle, and the client certificate and
key for mutual TLS). A channel whose credentials Kafka refused is retried only after the
refusal's long backoff, so a Secret fixed in place showed nowhere for two minutes. The
kopf edge keeps an index from each such Secret (``namespace/name``) to the channels
naming it (:func:`index_keys`) and, when a Secret of the index is created or changed,
reconciles those channels and no other (:func:`channels_to_reconcile`).

Not followed, on purpose:

* the Secrets of ``spec.auth`` (``hmacSecret``, ``jwks.secret``): the operator never
  reads them, it only projects them into the workers' volume, where the kubelet updates
  the files;
* a Secret deleted: the workers keep the files they have, and the next reconcile (a
  retry, the drift check) reports the missing Secret;
* the initial listing of the watch (event type None): every channel is reconciled at the
  operator's start anyway.

Everything here works on raw bodies and names; nothing reads a Secret's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

#: Watch event types of a Secret whose new content the channels must see.
FOLLOWED_EVENTS: Final = frozenset({"ADDED", "MODIFIED"})

T = TypeVar("T")


def secret_key(namespace: str, name: str) -> str:
    """The index key of one Secret."""
    return f"{namespace}/{name}"


def referenced_secrets(body: Mapping[str, Any]) -> frozenset[str]:
    """Names of the Secrets the operator reads for this channel (its namespace's).

    From the raw spec, so an invalid channel that names a Secret still follows it: fixing
    the Secret may be what makes it reconcile.
    """
    kafka = (body.get("spec") or {}).get("kafka")
    security = kafka.get("security") if isinstance(kafka, Mapping) else None
    if not isinstance(security, Mapping):
        return frozenset()
    names = set()
    for field in ("credentialsSecret", "tlsSecret"):
        ref = security.get(field)
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            names.add(name)
    return frozenset(names)


def index_keys(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The index keys a channel is filed under: one per Secret it makes the operator read.

    Empty for a channel being deleted: its finalizer's handler reads the Secrets again if
    it needs them, and a Secret change must not start a reconcile of it.
    """
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return ()
    namespace = meta.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        return ()
    return tuple(secret_key(namespace, name) for name in sorted(referenced_secrets(body)))


def concerns(
    event_type: str | None, namespace: str | None, name: str | None, index: Mapping[str, Any]
) -> bool:
    """Whether a Secret's watch event must reconcile any channel (a cheap filter)."""
    if event_type not in FOLLOWED_EVENTS or not namespace or not name:
        return False
    return bool(index.get(secret_key(namespace, name)))


def channels_to_reconcile(
    event_type: str | None,
    namespace: str | None,
    name: str | None,
    index: Mapping[str, Iterable[T]],
) -> list[T]:
    """The index's entries (the channels) that name this Secret, when the event is one the
    channels must follow; empty otherwise. A copy: the index changes between awaits."""
    if event_type not in FOLLOWED_EVENTS or not namespace or not name:
        return []
    return list(index.get(secret_key(namespace, name)) or ())
