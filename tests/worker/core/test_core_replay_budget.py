"""The replay budget per event-loop turn: shared by every replay, renewed each turn."""

from __future__ import annotations

import pytest

from clarion_worker.core.replay import TurnBudget


def test_grants_up_to_the_budget_within_a_turn_then_nothing() -> None:
    budget = TurnBudget(128)
    assert budget.take(100, turn=1) == 100
    assert budget.take(100, turn=1) == 28  # the rest of the turn's budget
    assert budget.take(5, turn=1) == 0  # wait for a later turn


def test_a_new_turn_renews_the_budget_for_everyone() -> None:
    budget = TurnBudget(10)
    assert [budget.take(7, turn=1), budget.take(7, turn=1)] == [7, 3]
    assert [budget.take(7, turn=2), budget.take(7, turn=2)] == [7, 3]
    assert budget.take(3, turn=5) == 3


def test_never_more_than_asked_and_never_negative() -> None:
    budget = TurnBudget(10)
    assert budget.take(0, turn=1) == 0
    assert budget.take(-3, turn=1) == 0
    assert budget.take(4, turn=1) == 4


def test_a_budget_must_allow_progress() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TurnBudget(0)


def test_take_all_grants_the_whole_request_or_nothing() -> None:
    budget = TurnBudget(10)
    assert budget.take_all(7, turn=1)
    assert not budget.take_all(4, turn=1)  # 3 left: nothing taken
    assert budget.take(10, turn=1) == 3
    assert budget.take_all(0, turn=1)  # nothing asked: always granted
    assert budget.take_all(10, turn=2)
    assert not budget.take_all(11, turn=3)  # more than a whole turn's budget
