"""The generated tables of the documentation are what their cog blocks write (issue 14
item 6): a stale document fails here, and rerunning a block keeps the text around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion_devstack import docs
from clarion_devstack.settings import CHECKOUT


@pytest.mark.parametrize("path", docs.DOCUMENTS, ids=str)
def test_every_generated_table_is_what_its_block_writes(path: Path) -> None:
    assert docs.stale([path]) == [], f"{path} is stale: run `make docs`"


def test_a_stale_block_is_found_and_rewritten_without_touching_the_rest(tmp_path: Path) -> None:
    source = (CHECKOUT / "docs/protocol.md").read_text()
    edited = source.replace("| 4008 |", "| 4999 |", 1)
    assert edited != source
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/protocol.md").write_text(edited)
    assert docs.stale([Path("docs/protocol.md")], root=tmp_path) == [Path("docs/protocol.md")]
    assert docs.regenerated(tmp_path / "docs/protocol.md") == source
