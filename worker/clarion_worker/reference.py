"""Renders the settings reference table of docs/worker-config.md from the settings keys.

``python -m clarion_worker.reference`` prints it; a unit test fails when the document's
table differs, so the doc cannot drift from the code.
"""

from __future__ import annotations

from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import key_reference

BEGIN = "<!-- BEGIN GENERATED: python -m clarion_worker.reference -->"
END = "<!-- END GENERATED -->"


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
