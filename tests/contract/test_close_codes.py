"""The wire protocol's close codes: one enum, in the contract, that the worker closes with
and the Python client reads; importing it loads no part of the settings model."""

from __future__ import annotations

import subprocess
import sys

from clarion_contract.close_codes import CloseCode


def test_close_codes_are_documented_and_classified() -> None:
    expected = {1000, 1001, 1002, 1003, 1006, 1007, 1009, 1011}
    expected |= {4001, 4003, 4004, 4008, 4009, 4013, 4100}
    assert {int(code) for code in CloseCode} == expected
    meanings = [code.meaning for code in CloseCode]
    assert all(meanings)
    assert len(set(meanings)) == len(meanings)
    assert CloseCode(4008) is CloseCode.SLOW_CONSUMER
    assert CloseCode.SLOW_CONSUMER.client_should_reconnect
    assert CloseCode.DRAIN.client_should_reconnect
    assert CloseCode.TOKEN_EXPIRED.client_should_reconnect
    assert not CloseCode.UNAUTHORIZED.client_should_reconnect
    assert not CloseCode.BAD_FRAME.client_should_reconnect


def test_the_close_codes_load_without_the_settings_model() -> None:
    """A client reads the close codes only: importing them must not import pydantic (the
    contract's package used to load its whole settings model on any import)."""
    probe = (
        "import sys, clarion_contract.close_codes, clarion_contract as c; "
        "print(sorted(m for m in ('pydantic', 'clarion_contract.worker_config') "
        "if m in sys.modules)); "
        "c.WORKER_PORT; print('pydantic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"  # the package's names still load the model, on first use
