from pathlib import Path

from clarion_worker.reference import BEGIN, END, table

DOC = Path(__file__).resolve().parents[2] / "docs" / "worker-config.md"


def test_worker_config_doc_lists_every_key_as_the_code_defines_it() -> None:
    text = DOC.read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert generated == table(), (
        "docs/worker-config.md is stale: python -m clarion_worker.reference"
    )
