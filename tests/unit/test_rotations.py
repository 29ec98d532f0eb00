"""``wire.rotations``: which answers loadbalance rotates, and how (pure; no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kdns import wire

Q = ("x", "ns", "svc", "cluster", "local")


def rrs(rtype: int, count: int) -> wire.RRset:
    data: list[object] = [f"10.0.0.{i}" for i in range(count)]
    if rtype == wire.SRV:
        data = [(0, 100, 80, (f"h{i}", *Q)) for i in range(count)]
    return tuple(wire.RR(Q, rtype, 5, d) for d in data)


CNAME = (wire.RR(Q, wire.CNAME, 5, ("target", *Q)),)


@dataclass(frozen=True)
class RotationCase:
    id: str
    answer: tuple[wire.RRset, ...]
    rotations: int
    firsts: int
    """Distinct first records of the rotated RRset over all rotations."""


CASES = [
    RotationCase("single-A-not-rotated", (rrs(wire.A, 1),), 0, 0),
    RotationCase("two-A", (rrs(wire.A, 2),), 2, 2),
    RotationCase("five-SRV", (rrs(wire.SRV, 5),), 5, 5),
    RotationCase("cname-then-three-A-cname-stays-first", (CNAME, rrs(wire.A, 3)), 3, 3),
    RotationCase("forty-A-capped", (rrs(wire.A, 40),), wire.MAX_ROTATIONS, wire.MAX_ROTATIONS),
    RotationCase("TXT-never-rotated", (tuple(wire.RR(Q, wire.TXT, 5, ("a",)) for _ in range(3)),), 0, 0),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rotations(case: RotationCase) -> None:
    answer = wire.Answer(wire.NOERROR, case.answer)
    orders = wire.rotations(answer)
    assert len(orders) == case.rotations
    if not orders:
        assert wire.compile_answer(Q, answer, rotate=True) == wire.compile_answer(Q, answer)
        return
    rotated = [order.answer[-1] for order in orders]
    assert len({rrset[0] for rrset in rotated}) == case.firsts
    assert all(sorted(map(repr, r)) == sorted(map(repr, case.answer[-1])) for r in rotated)
    assert all(order.answer[:-1] == case.answer[:-1] for order in orders)  # CNAME untouched
    heads, bodies = wire.compile_answer(Q, answer, rotate=True)
    assert isinstance(bodies, tuple)
    assert len(bodies) == case.rotations
    assert heads == wire.compile_answer(Q, answer)[0]  # same counts in every rotation


@pytest.mark.parametrize("qid", [0, 1, 2, 0x1234, 0xFFFF])
def test_pick_body_is_the_query_ids(qid: int) -> None:
    bodies = (b"a", b"b", b"c")
    packet = qid.to_bytes(2, "big") + b"\x01\x00"
    assert wire.pick_body(bodies, packet) == bodies[qid % 3]
    assert wire.pick_body(b"only", packet) == b"only"
