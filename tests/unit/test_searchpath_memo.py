"""nodecache.searchpath.memo: the policy's one memo of replies given on the node, from tables,
with time passed in (never slept on)."""

from __future__ import annotations

import pytest

from nodecache.searchpath.memo import Memo, Remembered

KEY = ("10.244.0.5", b"\x01\x00\x00\x01query")
REPLY = b"\x12\x34" + b"r" * 40  # the ID is not kept


# (given at, holds until, asked at, size limit) -> recalled
RECALL = [
    (100.2, 130.0, 100.9, None, True),
    (100.2, 130.0, 101.0, None, False),  # for the rest of the second only
    (100.2, 100.5, 100.6, None, False),  # nor past the reply's own validity
    (100.2, 100.5, 100.4, None, True),
    (100.2, 130.0, 100.3, 40, True),  # 40 bytes without the ID fit
    (100.2, 130.0, 100.3, 39, False),
]


@pytest.mark.parametrize(("given", "until", "asked", "limit", "recalled"), RECALL)
def test_recall(
    given: float, until: float, asked: float, limit: int | None, recalled: bool
) -> None:
    memo = Memo(max_entries=4)
    memo.remember(KEY, REPLY, until, "shape", 0, True, given)
    found = memo.recall(KEY, asked, limit)
    assert (found is not None) is recalled
    if found is not None:
        assert found == Remembered(min(until, 101.0), REPLY[2:], "shape", 0, True)


def test_full_memo_starts_over() -> None:
    memo = Memo(max_entries=2)
    for index in range(3):
        memo.remember(("c", bytes([index])), REPLY, 200.0, "name", 0, False, 100.0)
    assert [memo.recall(("c", bytes([i])), 100.0) is not None for i in range(3)] == [
        False,
        False,
        True,
    ]
    assert len(memo) == 1
