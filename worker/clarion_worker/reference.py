"""The settings reference of docs/worker-config.md and the close-code table of
docs/protocol.md, written there by the documents' cog blocks (see
``clarion_devstack.docs``); a test fails when a document differs, so it cannot drift
from the code. ``python -m clarion_worker.reference [close-codes]`` prints one.
"""

from __future__ import annotations

from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import key_reference


def table() -> str:
    lines = [
        "| key | type | default | environment override | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in key_reference():
        env = f"`{row.env}`" if row.env != "-" else "-"
        lines.append(f"| `{row.key}` | {row.type} | {row.default} | {env} | {row.meaning} |")
    return "\n".join(lines) + "\n"


def close_codes() -> str:
    """The close-code table of docs/protocol.md."""
    lines = ["| code | name | reconnect? | meaning |", "|---|---|---|---|"]
    for code in CloseCode:
        again = "yes, with backoff" if code.client_should_reconnect else "no: fix the cause"
        lines.append(f"| {int(code)} | `{code.name}` | {again} | {code.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(close_codes() if sys.argv[1:] == ["close-codes"] else table(), end="")
