"""The query log: its lines (kdns.querylines), its settings, filters, sampling and rate limit
(kdns.querylog). Time is injected; the writer is drained by ``close``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from kdns.config import ConfigError, QueryLogConfig, parse_query_log
from kdns.querylines import entry, json_line, text_line
from kdns.querylog import QueryLog, http_route

JSON_KEYS = [
    "ts", "server", "client", "port", "proto", "id", "qname", "qtype", "qclass", "do", "rcode",
    "ttl", "size", "duration_s", "cache_hit",
]  # fmt: skip
SOA = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"


def query(name: str, qtype: str = "A", *, do: bool = False, qid: int = 4660) -> bytes:
    message = dns.message.make_query(
        name, qtype, use_edns=0 if do else False, ednsflags=dns.flags.DO if do else 0
    )
    message.id = qid
    return message.to_wire()


def reply(
    packet: bytes,
    rcode: str = "NOERROR",
    answer: tuple[str, ...] = (),
    authority: tuple[str, ...] = (),
    aa: bool = True,
) -> bytes:
    response = dns.message.make_response(dns.message.from_wire(packet))
    response.set_rcode(dns.rcode.from_text(rcode))
    if aa:
        response.flags |= dns.flags.AA
    for line in answer:
        name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
        response.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    for line in authority:
        name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
        response.authority.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    return response.to_wire()


@dataclass(frozen=True)
class LineCase:
    id: str
    packet: bytes
    reply: bytes
    client: str
    fields: dict[str, object]
    text: str


CART = "Cart.Shop.svc.cluster.local."
CASES = [
    LineCase(
        "positive: smallest answer TTL, name as sent",
        query(CART),
        reply(query(CART), answer=(f"{CART} 30 IN A 10.0.0.1", f"{CART} 5 IN A 10.0.0.2")),
        "10.244.1.7",
        {"qname": CART, "qtype": "A", "rcode": "NOERROR", "ttl": 5, "do": False},
        '[INFO] 10.244.1.7:41234 - 4660 "A IN Cart.Shop.svc.cluster.local. udp 45 false 512" '
        "NOERROR qr,aa,rd",
    ),
    LineCase(
        "NXDOMAIN: the SOA's negative TTL, min(TTL, MINIMUM)",
        query("nope.shop.svc.cluster.local."),
        reply(query("nope.shop.svc.cluster.local."), "NXDOMAIN", authority=(SOA,)),
        "10.244.1.7",
        {"rcode": "NXDOMAIN", "ttl": 5},
        '"A IN nope.shop.svc.cluster.local. udp',
    ),
    LineCase(
        "NODATA: the SOA's negative TTL",
        query("cart.shop.svc.cluster.local.", "AAAA"),
        reply(query("cart.shop.svc.cluster.local.", "AAAA"), authority=(SOA,)),
        "10.244.1.7",
        {"rcode": "NOERROR", "qtype": "AAAA", "ttl": 5},
        "NOERROR qr,aa,rd",
    ),
    LineCase(
        "SERVFAIL: no TTL",
        query("example.com."),
        reply(query("example.com."), "SERVFAIL", aa=False),
        "10.244.1.7",
        {"rcode": "SERVFAIL", "ttl": None},
        "SERVFAIL qr,rd",
    ),
    LineCase(
        "an unknown type is TYPEn; DO and the EDNS size",
        query("example.com.", "TYPE65", do=True),
        reply(query("example.com.", "TYPE65", do=True), aa=False),
        "fd00::7",
        {"qtype": "TYPE65", "do": True, "client": "fd00::7"},
        '[INFO] [fd00::7]:41234 - 4660 "TYPE65 IN example.com. udp 40 true 1232"',
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lines_carry_the_fixed_fields(case: LineCase) -> None:
    found = entry(
        case.packet, case.reply, ts=1796194800.25, server="nodecache", client=case.client,
        port=41234, proto="udp", duration_s=0.000125, cache_hit=True,
    )  # fmt: skip
    assert found is not None
    fields = json.loads(json_line(found))
    assert list(fields) == JSON_KEYS
    assert fields["ts"] == 1796194800.25
    assert fields["server"] == "nodecache"
    assert fields["port"] == 41234
    assert fields["proto"] == "udp"
    assert fields["id"] == 4660
    assert fields["qclass"] == "IN"
    assert fields["size"] == len(case.reply)
    assert fields["duration_s"] == 0.000125
    assert fields["cache_hit"] is True
    for key, value in case.fields.items():
        assert fields[key] == value, key
    text = text_line(found)
    assert case.text in text
    assert text.endswith(f" {len(case.reply)} 0.000125s")


def test_a_query_without_a_question_has_no_line() -> None:
    header = b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    assert entry(header, header, ts=0, server="kdns", client="10.0.0.1", port=1, proto="udp",
                 duration_s=0, cache_hit=False) is None  # fmt: skip


# --- settings ------------------------------------------------------------------------------------

ERRORS = [
    ({"enabled": "maybe"}, "query_log.enabled"),
    ({"format": "xml"}, "query_log.format"),
    ({"rcode": "failures"}, "query_log.rcode"),
    ({"suffix": ".."}, "query_log.suffix"),
    ({"client": "10.0.0.0/33"}, "query_log.client"),
    ({"sample": 0}, "query_log.sample"),
    ({"rate": -1}, "query_log.rate"),
    ({"rate": "fast"}, "query_log.rate"),
    ({"output": ""}, "query_log.output"),
    ({"colour": "red"}, "query_log.colour"),
]


@pytest.mark.parametrize(("raw", "field"), ERRORS, ids=[f for _, f in ERRORS])
def test_bad_settings_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_query_log(raw)
    assert caught.value.field == field


def test_settings_from_a_query_string_and_from_yaml_agree() -> None:
    from_query = parse_query_log(
        {
            "enabled": "true",
            "rcode": "denial,error",
            "suffix": "Example.COM",
            "client": "10.0.0.0/8",
        }
    )
    from_yaml = parse_query_log(
        {"enabled": True, "rcode": ["denial", "error"], "suffix": ["example.com."],
         "client": ["10.0.0.0/8"]}
    )  # fmt: skip
    assert from_query == from_yaml
    assert from_query.suffix == ("example.com.",)
    assert parse_query_log({"rcode": "all"}).rcode == frozenset()


# --- filters, sampling, rate ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def offered(log: QueryLog, packet: bytes, answer: bytes, client: str = "10.1.2.3") -> None:
    log.offer(packet, answer, client, 5353, "udp", False, 1000)


A = query("www.example.com.")
A_OK = reply(A, answer=("www.example.com. 30 IN A 192.0.2.1",), aa=False)
NX = query("nope.example.com.")
NX_DENIED = reply(NX, "NXDOMAIN", authority=(SOA,), aa=False)
FAIL = reply(query("x.example.org."), "SERVFAIL", aa=False)

FILTERS = [
    ("everything", {}, [(A, A_OK, "10.1.2.3"), (NX, NX_DENIED, "10.1.2.3")], 2),
    ("denials only", {"rcode": "denial"}, [(A, A_OK, "10.1.2.3"), (NX, NX_DENIED, "10.1.2.3")], 1),
    ("errors only", {"rcode": "error"},
     [(A, A_OK, "10.1.2.3"), (query("x.example.org."), FAIL, "10.1.2.3")], 1),
    ("suffix on a label boundary", {"suffix": "example.com"},
     [(A, A_OK, "10.1.2.3"), (query("www.notexample.com."), A_OK, "10.1.2.3"),
      (query("EXAMPLE.com."), A_OK, "10.1.2.3")], 2),
    ("client CIDR", {"client": "10.1.0.0/16,fd00::/8"},
     [(A, A_OK, "10.1.2.3"), (A, A_OK, "10.2.0.1"), (A, A_OK, "fd00::5")], 2),
    ("all filters at once", {"rcode": "success", "suffix": "example.com", "client": "10.0.0.0/8"},
     [(A, A_OK, "10.1.2.3"), (NX, NX_DENIED, "10.1.2.3"), (A, A_OK, "192.0.2.9")], 1),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "queries", "written"), [f[1:] for f in FILTERS],
                         ids=[f[0] for f in FILTERS])  # fmt: skip
def test_filters_hold(
    settings: dict[str, str], queries: list[tuple[bytes, bytes, str]], written: int, tmp_path: Path
) -> None:
    output = tmp_path / "queries.log"
    log = QueryLog("kdns", parse_query_log({"enabled": "true", "format": "json",
                                            "output": str(output), **settings}))  # fmt: skip
    for packet, answer, client in queries:
        offered(log, packet, answer, client)
    log.close()
    lines = output.read_text().splitlines()
    assert len(lines) == written
    assert log.stats.outcomes["written"] == written
    assert log.stats.outcomes["filtered"] == len(queries) - written
    for line in lines:
        assert list(json.loads(line)) == JSON_KEYS


def test_sampling_keeps_one_in_n(tmp_path: Path) -> None:
    log = QueryLog(
        "kdns", QueryLogConfig(enabled=True, sample=4, rate=0, output=str(tmp_path / "q"))
    )
    for _ in range(40):
        offered(log, A, A_OK)
    log.close()
    assert log.stats.outcomes["written"] == 10
    assert log.stats.outcomes["sampled_out"] == 30


def test_the_rate_limit_holds_and_refills(tmp_path: Path) -> None:
    clock = Clock()
    log = QueryLog(
        "kdns", QueryLogConfig(enabled=True, rate=10, output=str(tmp_path / "q")), clock=clock
    )
    for _ in range(100):  # a burst: the bucket starts full (10) and refills at 10 a second
        offered(log, A, A_OK)
    assert log.stats.outcomes["rate_limited"] == 90
    clock.now += 1.0
    for _ in range(100):
        offered(log, A, A_OK)
    clock.now += 0.5
    for _ in range(100):
        offered(log, A, A_OK)
    log.close()
    assert log.stats.outcomes["written"] == 25  # 10, 10 after a second, 5 after half of one
    assert log.stats.outcomes["rate_limited"] == 275


def test_runtime_switch_and_watchers(tmp_path: Path) -> None:
    log = QueryLog("kdns")
    seen: list[bool] = []
    log.watch(seen.append)
    assert seen == [False]
    assert log.enabled is False
    log.configure(QueryLogConfig(enabled=True, output=str(tmp_path / "q")))
    log.configure(QueryLogConfig(enabled=True, format="json", output=str(tmp_path / "q")))
    log.configure(QueryLogConfig())
    assert seen == [False, True, False]
    log.close()


def test_the_c_loops_are_diverted_before_the_log_says_it_is_on(tmp_path: Path) -> None:
    """A watcher is the C loop's divert flag: the C loop does not log, so it must have handed
    the socket over before anyone (the /querylog endpoint, a query right after it) can see the
    log on; and when the log goes off it is off before the C loop takes the socket back."""
    log = QueryLog("kdns")
    heard: list[tuple[bool, bool]] = []  # (the flag, what log.enabled said at that moment)
    log.watch(lambda flag: heard.append((flag, log.enabled)))
    log.configure(QueryLogConfig(enabled=True, output=str(tmp_path / "q")))
    log.configure(QueryLogConfig())
    assert heard == [(False, False), (True, False), (False, False)]
    log.close()


def test_an_output_that_cannot_be_opened_names_the_field(tmp_path: Path) -> None:
    log = QueryLog("kdns")
    with pytest.raises(ConfigError) as caught:
        log.configure(QueryLogConfig(enabled=True, output=str(tmp_path / "no" / "such" / "dir")))
    assert caught.value.field == "query_log.output"
    assert log.enabled is False


def test_http_may_not_choose_a_file_the_config_did_not_name(tmp_path: Path) -> None:
    named = tmp_path / "named.log"
    log = QueryLog("kdns", QueryLogConfig(output=str(named)))
    route = http_route(log)
    status, body = route("POST", f"enabled=true&output={tmp_path / 'other.log'}")
    assert status == 400
    assert body.startswith("query_log.output: ")
    assert log.enabled is False
    status, body = route("POST", f"enabled=true&output={named}")
    assert status == 200
    assert json.loads(body)["output"] == str(named)
    status, body = route("POST", "output=stderr&rate=fast")
    assert (status, body) == (400, "query_log.rate: expected a number, got 'fast'\n")
    assert route("GET", "enabled=false")[0] == 200  # GET reads; it changes nothing
    assert log.enabled is True
    log.close()
