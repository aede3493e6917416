"""How a benchmark script hands over its result, shared by the scripts that run alone.

The JSON document goes to stdout, and to ``--output`` when given (its folder made).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], output: str | Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
