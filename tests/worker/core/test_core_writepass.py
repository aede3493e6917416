"""The write pass's per-client decision (issue 14 item 2): a table, no sockets."""

from __future__ import annotations

import pytest

from clarion_worker.core.writepass import CLOSED, PAUSED, WRITABLE, plan_write

SLOW, DRAIN = 4008, 4100


@pytest.mark.parametrize(
    ("state", "queued", "close_code", "pending_close", "expected"),
    [
        (CLOSED, 3, None, None, (False, None)),  # lost: the handler cleans up
        (CLOSED, 0, SLOW, None, (False, None)),
        (WRITABLE, 0, None, None, (False, None)),  # marked, nothing left
        (WRITABLE, 3, None, None, (True, None)),
        (PAUSED, 3, None, None, (False, None)),  # waits for resume_writing
        (PAUSED, 3, SLOW, None, (True, SLOW)),  # a close now goes out into a full socket
        (WRITABLE, 0, SLOW, None, (False, SLOW)),
        (WRITABLE, 2, None, DRAIN, (True, DRAIN)),  # the advice, then the close
        (PAUSED, 2, None, DRAIN, (False, None)),  # a drain waits for its queue
        (PAUSED, 0, None, DRAIN, (False, DRAIN)),
        (WRITABLE, 1, SLOW, DRAIN, (True, SLOW)),  # the close decided now wins
    ],
)
def test_what_to_write_and_whether_to_close(
    state: int,
    queued: int,
    close_code: int | None,
    pending_close: int | None,
    expected: tuple[bool, int | None],
) -> None:
    assert plan_write(state, queued, close_code, pending_close) == expected


@pytest.mark.parametrize("queued", [0, 1, 2, 1000])
def test_the_write_pass_fast_path_is_plan_writes_answer(queued: int) -> None:
    # ``flusher.Flusher.flush`` skips ``plan_write`` when no close is under way and the
    # socket takes data, and writes whatever is queued: the answer it would have given.
    assert plan_write(WRITABLE, queued, None, None) == (queued > 0, None)
