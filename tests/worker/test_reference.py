from clarion_worker.core.protocol import CloseCode
from clarion_worker.reference import close_codes, table


def test_the_settings_table_has_a_row_per_key() -> None:
    # The documents hold these tables through cog blocks: tests/devstack/test_docs.py.
    rows = table().splitlines()
    assert rows[0].startswith("| key | type | default |")
    assert any(row.startswith("| `drain.windowSeconds` |") for row in rows)


def test_the_close_code_table_has_a_row_per_code() -> None:
    rows = close_codes().splitlines()[2:]
    assert [int(row.split("|")[1]) for row in rows] == [int(code) for code in CloseCode]
