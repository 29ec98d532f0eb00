"""The step order of one client query from its bytes (kdns/resolver/front.py), case by case:
which step answers, and what the others did not do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest

from kdns.resolver.front import Front
from kdns.resolver.later import Later
from kdns.resolver.message import Kind
from tests.unit.resolver.fakes import ManualExecutor, make_reply, parse
from tests.unit.resolver.test_core import EXT, EXT_A, World

CLIENT = ("127.0.0.1", 5353)
MEMO_REPLY = b"\x00\x00remembered"
LOCAL_REPLY = b"\x00\x00local"


class Policy:
    """A search-path policy that remembers one query's bytes and claims nothing else."""

    def __init__(self, remembered: bytes | None = None) -> None:
        self._remembered = remembered
        self.decided = 0
        self.watchers: list[Callable[[bytes], None]] = []

    def decide(self, _query: object, _client: object, _settle: object) -> None:
        self.decided += 1

    def may_shortcut(self, _name: bytes, _kind: Kind) -> bool:
        return True

    def watch_claims(self, claimed: Callable[[bytes], None]) -> None:
        self.watchers.append(claimed)

    def remembered(self, packet: bytes, _client_ip: str) -> bytes | None:
        if self._remembered is not None and packet[2:] == self._remembered[2:]:
            return packet[:2] + MEMO_REPLY[2:]
        return None


def query(name: str = EXT, qtype: str = "A", *, response: bool = False) -> bytes:
    message = dns.message.make_query(name, qtype)
    message.id = 0x0102
    if response:
        message.flags |= 0x8000
    return message.to_wire()


@dataclass(frozen=True)
class Case:
    packet: bytes
    expect: str
    """Which step answered: memo, shortcut, dropped, rejected, local, resolved, later."""
    remembered: bytes | None = None
    warm: bool = False
    """The cache holds the answer (a resolve before the case)."""
    manual: bool = False
    """The upstream answers only when the test runs the executor: the reply is Later."""


CASES = {
    "step0-memo-before-the-cache": Case(query(), "memo", remembered=query(), warm=True),
    "step1-shortcut-hit": Case(query(), "shortcut", warm=True),
    "step1-another-type-is-no-hit": Case(query(qtype="TXT"), "resolved", warm=True),
    "step2-response-dropped": Case(query(response=True), "dropped"),
    "step2-axfr-refused": Case(query(qtype="AXFR"), "rejected"),
    "step3-local-answer": Case(query("probe.local.invalid.", "TXT"), "local"),
    "step4-miss-resolved-now": Case(query(), "resolved"),
    "step4-miss-answered-later": Case(query(), "later", manual=True),
}


def delivered(reply: bytes | Later | None) -> bytes | None:
    """The reply bytes now: given at once, or already sent through a Later."""
    if isinstance(reply, Later):
        sent: list[bytes] = []
        reply(sent.append)
        return sent[0] if sent else None
    return reply


def local(query: object) -> bytes | None:
    name = query.question.wire_lower  # type: ignore[attr-defined]
    return LOCAL_REPLY if name == b"\x05probe\x05local\x07invalid\x00" else None


@pytest.mark.parametrize("case_id", list(CASES))
def test_step_order(case_id: str) -> None:
    case = CASES[case_id]
    policy = Policy(case.remembered)
    world = World(policy=policy, executor=ManualExecutor() if case.manual else None)
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    world.default.replies[(EXT, "TXT")] = make_reply(EXT, "TXT", answer=[f'{EXT} 300 IN TXT "t"'])
    if case.warm:
        world.ask()
        policy.decided = 0
    front = Front(world.resolver, local=local)
    asked = world.default.count()

    reply = front.answer(case.packet, CLIENT, tcp=False)

    stats = front.stats
    answered_by: dict[str, Callable[[], bool]] = {
        "memo": lambda: reply == case.packet[:2] + MEMO_REPLY[2:] and stats.remembered == 1,
        "shortcut": lambda: stats.fast_hits == 1 and parse(reply).answer != [],  # type: ignore[arg-type]
        "dropped": lambda: reply is None and stats.dropped == 1,
        "rejected": lambda: (
            isinstance(reply, bytes)
            and parse(reply).rcode() == dns.rcode.REFUSED
            and stats.rejected == 1
        ),
        "local": lambda: reply == LOCAL_REPLY and stats.local == 1,
        "resolved": lambda: delivered(reply) is not None and world.default.count() == asked + 1,
        "later": lambda: isinstance(reply, Later) and front.inflight == 1 and not delivered(reply),
    }
    assert answered_by[case.expect](), (reply, stats)
    if case.expect in ("memo", "shortcut", "dropped", "rejected", "local"):
        assert world.default.count() == asked, "a step before the resolver asked upstream"
        assert policy.decided == 0, "a step before the resolver reached the policy's decision"
    assert case.manual or front.inflight == 0
    assert policy.watchers == [world.cache.drop_views], "the policy's claims reach the cache"


def test_a_later_reply_settles_the_query_in_flight() -> None:
    world = World(executor=ManualExecutor())
    world.default.replies[(EXT, "A")] = make_reply(EXT, answer=EXT_A)
    front = Front(world.resolver)
    later = front.answer(query(), CLIENT, tcp=False)
    assert isinstance(later, Later)
    assert not front.wait_idle(0)
    sent: list[bytes] = []
    later(sent.append)
    assert isinstance(world.executor, ManualExecutor)
    world.executor.run_all()
    assert front.inflight == 0
    assert front.wait_idle(0)
    assert [parse(reply).id for reply in sent] == [0x0102]
