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
from collections.abc import Mapping, Sequence
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


def write_or_check(files: Mapping[Path, str], root: Path, *, write: bool, remedy: str) -> int:
    """Bring generated files (path under ``root`` -> expected text) up to date, or (not
    ``write``) report the stale ones and return 1 if there are any."""
    out_of_date = [path for path, text in files.items() if _read(root / path) != text]
    if write:
        for path in out_of_date:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(files[path])
            print(f"wrote {path}")
        return 0
    for path in out_of_date:
        print(f"{path} is stale: run `{remedy}`", file=sys.stderr)
    return 1 if out_of_date else 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_devstack.docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rerun the cog blocks")
    mode.add_argument("--check", action="store_true", help="exit 1 when a document is stale")
    parser.add_argument("documents", nargs="*", type=Path, help="default: every document")
    args = parser.parse_args(argv)
    files = {path: regenerated(CHECKOUT / path) for path in args.documents or DOCUMENTS}
    return write_or_check(files, CHECKOUT, write=args.write, remedy="make docs")


if __name__ == "__main__":
    sys.exit(main())
