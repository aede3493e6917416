"""Which concurrent admin calls share one Kafka request, and which part of its answer each
call gets back (``core/batches.py``)."""

from __future__ import annotations

from clarion_operator.core.batches import Call, distribute, take_batch


def call(*names: str) -> Call[str]:
    return Call(tuple((name, f"spec of {name}") for name in names))


def test_calls_arriving_together_share_one_request_each_name_once() -> None:
    queue = [call("a"), call("b", "c"), call("a", "d")]
    batch = take_batch(queue, limit=10, distinct=False)
    assert batch.taken == (0, 1, 2)
    assert [name for name, _ in batch.items] == ["a", "b", "c", "d"]
    assert dict(batch.items)["a"] == "spec of a"


def test_distinct_requests_leave_a_repeated_topic_for_the_next_request() -> None:
    # CreateTopics refuses a request naming a topic twice (INVALID_REQUEST for both).
    queue = [call("a"), call("a"), call("b"), call("a", "c")]
    first = take_batch(queue, limit=10, distinct=True)
    assert first.taken == (0, 2)
    assert [name for name, _ in first.items] == ["a", "b"]
    rest = [q for i, q in enumerate(queue) if i not in first.taken]
    second = take_batch(rest, limit=10, distinct=True)
    assert second.taken == (0,)  # "a" again; the call naming "a" and "c" waits once more
    assert take_batch(rest[1:], limit=10, distinct=True).taken == (0,)


def test_the_limit_bounds_a_request_but_a_larger_call_still_goes_alone() -> None:
    queue = [call("a", "b"), call("c", "d"), call("e")]
    assert take_batch(queue, limit=3, distinct=False).taken == (0, 2)
    big = [call("a", "b", "c", "d"), call("e")]
    assert take_batch(big, limit=3, distinct=False).taken == (0,)
    # The same topic described twice is one item: it always fits.
    assert take_batch([call("e"), *big], limit=3, distinct=False).taken == (0, 2)


def test_an_empty_queue_makes_an_empty_batch() -> None:
    assert take_batch([], limit=3, distinct=True).items == ()


def test_each_call_gets_its_own_names_answers_and_missing_for_the_unanswered() -> None:
    answers = {"a": 0, "b": 36, "c": 17}
    assert distribute(call("b", "a"), answers, -1) == {"b": 36, "a": 0}
    assert distribute(call("x"), answers, -1) == {"x": -1}
