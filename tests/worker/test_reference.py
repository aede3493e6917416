from pathlib import Path

from clarion_worker.reference import BEGIN, END, close_codes, table

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "worker-config.md"


def test_worker_config_doc_lists_every_key_as_the_code_defines_it() -> None:
    text = DOC.read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert generated == table(), (
        "docs/worker-config.md is stale: python -m clarion_worker.reference"
    )


def test_protocol_doc_lists_every_close_code() -> None:
    text = (DOCS / "protocol.md").read_text()
    begin = "<!-- BEGIN GENERATED: python -m clarion_worker.reference close-codes -->"
    generated = text.split(begin, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert generated == close_codes(), "docs/protocol.md is stale"
