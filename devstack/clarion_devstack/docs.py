"""The generated parts of the documentation, kept by cog (cogapp).

Each generated table sits in a cog block of its document: an HTML comment holding the
Python that writes it (a call into the module that owns the facts), followed by the
output, up to ``<!-- [[[end]]] -->``. Everything around a block is hand-written and
stays as written. ``python -m clarion_devstack.docs --write`` reruns every block
(``make docs``; ``make crds`` and ``make manifests`` run the blocks of their documents);
``--check`` exits 1 when a document differs from what its blocks write, and
tests/devstack/test_docs.py does the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cogapp import Cog

from .settings import CHECKOUT

#: The documents with cog blocks, relative to the checkout.
DOCUMENTS: Final = (
    Path("docs/operator.md"),
    Path("docs/worker-config.md"),
    Path("docs/protocol.md"),
    Path("docs/install.md"),
)


def regenerated(path: Path) -> str:
    """The document at ``path`` as its cog blocks write it."""
    text = path.read_text()
    return str(Cog().process_string(text, fname=str(path)))


def stale(paths: Sequence[Path] = DOCUMENTS, root: Path = CHECKOUT) -> list[Path]:
    return [path for path in paths if (root / path).read_text() != regenerated(root / path)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_devstack.docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rerun the cog blocks")
    mode.add_argument("--check", action="store_true", help="exit 1 when a document is stale")
    parser.add_argument("documents", nargs="*", type=Path, help="default: every document")
    args = parser.parse_args(argv)
    out_of_date = stale(args.documents or DOCUMENTS)
    if args.write:
        for path in out_of_date:
            (CHECKOUT / path).write_text(regenerated(CHECKOUT / path))
            print(f"wrote {path}")
        return 0
    for path in out_of_date:
        print(f"{path} is stale: run `make docs`", file=sys.stderr)
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
