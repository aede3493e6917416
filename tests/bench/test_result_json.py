"""bench/result_json.py: how the stand-alone benchmark scripts hand over their result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_the_result_goes_to_stdout_and_to_the_output_file_in_a_new_folder(
    bench_script: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {"benchmark": "x", "trials": [{"lost": 0}]}
    output = tmp_path / "new" / "x.json"
    bench_script("result_json").emit(result, output)
    assert json.loads(capsys.readouterr().out) == result
    assert output.read_text().endswith("}\n")
    assert json.loads(output.read_text()) == result


def test_without_an_output_file_only_stdout(
    bench_script: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_script("result_json").emit({"a": 1}, None)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert not list(tmp_path.iterdir())
