"""Write (or check) every file generated from ``core/crd.py``.

``python -m clarion_operator.crdgen --write`` regenerates the chart's CRD and the plain
manifest; ``--check`` exits 1 when either differs from what the generator produces (the
unit test does the same). The spec reference inside ``docs/operator.md`` is the cog
block there (``make crds`` runs both).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from clarion_operator.core.crd import render_yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CRD_FILES: Final = (
    Path("charts/clarion/crds/realtimechannels.yaml"),
    Path("manifests/crd.yaml"),
)


def expected(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path (relative to ``root``) and its expected content."""
    return {path: render_yaml() for path in CRD_FILES}


def stale(root: Path = ROOT) -> list[Path]:
    return [
        path
        for path, text in expected(root).items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarion_operator.crdgen")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.write:
        for path, text in expected().items():
            (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            (ROOT / path).write_text(text)
            print(f"wrote {path}")
        return 0
    out_of_date = stale()
    for path in out_of_date:
        print(f"stale: {path} (run python -m clarion_operator.crdgen --write)", file=sys.stderr)
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
