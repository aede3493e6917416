import io
import re

import pytest

from clarion_devstack.progress import step


def test_step_announces_start_heartbeat_and_duration() -> None:
    out = io.StringIO()
    with step("build thing", out=out, tick=0.01):
        # Wait for a heartbeat line rather than for a fixed time.
        while "still running" not in out.getvalue():
            pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "[clarion] > build thing ..."
    assert re.fullmatch(r"\[clarion\]   build thing: still running \(\d+\.\ds\)", lines[1])
    assert re.fullmatch(r"\[clarion\] ok build thing \(\d+\.\ds\)", lines[-1])


def test_step_reports_failure_and_reraises() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError, match="boom"), step("doomed", out=out):
        raise ValueError("boom")
    assert "x doomed failed after" in out.getvalue()
    assert "ok doomed" not in out.getvalue()
