"""Who a connection belongs to, as established by its verified token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """Organizations the client may see, its user id, and when its token expires (epoch s)."""

    organizations: frozenset[str]
    user: str | None
    expires_at: float | None = None
