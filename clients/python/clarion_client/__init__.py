"""Clarion's Python client: events of a channel across reconnects, resumed by the last id.

``ClarionClient`` is the client (``clarion_client.client``), ``clarion tail`` its command
line (``clarion_client.cli``), ``clarion_client.backoff`` the reconnect policy. It reads
the wire protocol's close codes from the contract and needs no part of the worker.
"""

from clarion_client.client import ClarionClient, ClientRejectedError, ClientStats, StateCallback

__all__ = ["ClarionClient", "ClientRejectedError", "ClientStats", "StateCallback"]
