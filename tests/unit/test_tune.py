"""``nodecache tune`` (issue 15): reading query logs, the replay through the real cache on the
log's own clock, the report, the plot and the progress bar.

The replay is checked against hit ratios computed independently, here: an exact LRU over a
Zipf workload (no expiry), and an exact TTL expiry with no size bound (prefetch off).
"""

from __future__ import annotations

import io
import json
import random
from collections import OrderedDict
from pathlib import Path

import pytest

from kdns.resolver import policy
from kdns.resolver.config import PrefetchConfig, ResolverConfig, ZoneTTL
from nodecache import cli
from nodecache.admin.tune import logs
from nodecache.admin.tune.progress import Progress
from nodecache.admin.tune.replay import Setting, replay

QUERY_LOG_KEYS = {
    "server": "nodecache", "client": "10.244.0.7", "port": 40000, "proto": "udp", "id": 1,
    "qclass": "IN", "do": False, "size": 100, "duration_s": 0.0004, "cache_hit": False,
}  # fmt: skip


def line(ts: float, qname: str, qtype: str = "A", rcode: str = "NOERROR", ttl: int | None = 300,
         **extra: object) -> str:  # fmt: skip
    record = {**QUERY_LOG_KEYS, "ts": ts, "qname": qname, "qtype": qtype, "rcode": rcode,
              "ttl": ttl, **extra}  # fmt: skip
    return json.dumps(record)


def zipf_names(count: int, queries: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(count)]
    return rng.choices(range(count), weights, k=queries)


def exact_lru_hits(keys: list[int], capacity: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for key in keys:
        if key in cache:
            hits += 1
            cache.move_to_end(key)
            continue
        cache[key] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
    return hits


ALL_DAY = policy.TTLPolicy((), ZoneTTL(0, 86_400, 0, 86_400))


@pytest.fixture(scope="module")
def zipf_log() -> tuple[list[int], logs.LogRead]:
    """6000 queries over 400 names, one a second (the cache's LRU order is kept at 1 s
    resolution, so at this spacing it is exact), TTL a day: nothing expires."""
    keys = zipf_names(400, 6000, seed=15)
    lines = [line(float(t), f"name{key}.example.com.", ttl=86_400) for t, key in enumerate(keys)]
    return keys, logs.read(lines)


@pytest.mark.parametrize("capacity", [1, 10, 50, 200, 400])
def test_replay_reproduces_an_exact_lru_on_a_zipf_log(
    zipf_log: tuple[list[int], logs.LogRead], capacity: int
) -> None:
    keys, log = zipf_log
    result = replay(log, Setting(capacity, "day", ALL_DAY), ResolverConfig())
    assert result.hits == exact_lru_hits(keys, capacity)
    assert result.upstream_queries == len(keys) - result.hits  # nothing due for prefetch
    assert result.peak_entries == min(capacity, len(set(keys)))


def test_replay_reproduces_exact_ttl_expiry() -> None:
    """No size bound, prefetch off: a query hits while fewer whole seconds than the TTL have
    passed since the miss that stored its name (the cache's countdown)."""
    rng = random.Random(5)
    ttls = {key: rng.randint(5, 60) for key in range(50)}
    events = sorted((rng.uniform(0, 3600), rng.randrange(50)) for _ in range(5000))
    stored: dict[int, float] = {}
    expected = 0
    for ts, key in events:
        if key in stored and int(ts - stored[key]) < ttls[key]:
            expected += 1
        else:
            stored[key] = ts
    log = logs.read(line(ts, f"k{key}.example.com.", ttl=ttls[key]) for ts, key in events)
    config = ResolverConfig(prefetch=PrefetchConfig(enabled=False))
    result = replay(
        log, Setting(100_000, "t", policy.TTLPolicy((), ZoneTTL(0, 3600, 0, 3600))), config
    )
    assert result.hits == expected


def test_a_logged_servfail_after_expiry_is_a_stale_answer() -> None:
    """RFC 8767 verify: the upstream fails (the log's SERVFAIL), the expired answer is served."""
    log = logs.read([
        line(0, "api.example.com.", ttl=10),
        line(25, "api.example.com.", rcode="SERVFAIL", ttl=None),
        line(30, "api.example.com.", rcode="SERVFAIL", ttl=None),  # within the recheck timer
    ])  # fmt: skip
    config = ResolverConfig(prefetch=PrefetchConfig(enabled=False))
    result = replay(log, Setting(100, "c", policy.TTLPolicy()), config)
    assert (result.hits, result.stale_served, result.upstream_queries) == (0, 2, 2)


def test_a_cache_hit_line_takes_the_ttl_of_its_last_miss() -> None:
    """A nodecache log's hits carry what was left of the TTL: when the replayed cache (here
    one entry, so b evicts a) misses where the logged one hit, it stores the key's full TTL."""
    log = logs.read([
        line(0, "a.example.com.", ttl=60),
        line(1, "b.example.com.", ttl=60),
        line(20, "a.example.com.", ttl=40, cache_hit=True),  # a miss here: stored for 60 s
        line(65, "a.example.com.", ttl=55, cache_hit=True),  # 45 s later: still fresh
    ])  # fmt: skip
    config = ResolverConfig(prefetch=PrefetchConfig(enabled=False))
    all_hour = policy.TTLPolicy((), ZoneTTL(0, 3600, 0, 3600))
    result = replay(log, Setting(1, "c", all_hour), config)
    assert (result.hits, result.upstream_queries) == (1, 3)


BAD_LINES = [
    pytest.param("{not json", "not JSON", id="not-json"),
    pytest.param("[1, 2]", "expected a JSON object", id="not-an-object"),
    pytest.param(json.dumps({"qname": "a.", "qtype": "A", "rcode": "NOERROR"}), "ts: missing",
                 id="no-ts"),
    pytest.param(line(1, "a.", qtype="BOGUS"), "qtype: unknown qtype", id="bad-qtype"),
    pytest.param(line(1, "a.", rcode="MAYBE"), "rcode: unknown rcode", id="bad-rcode"),
    pytest.param(line(1, "a.", ttl=-1), "ttl:", id="negative-ttl"),
    pytest.param(line(1, "a.", size="big"), "size:", id="bad-size"),
    pytest.param(line(1, "a" * 70 + "."), "qname:", id="long-label"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_malformed_lines_are_counted_with_the_reason_not_fatal(bad: str, reason: str) -> None:
    log = logs.read([line(0, "ok.example.com."), bad, line(2, "ok.example.com.", qtype="TYPE65")])
    assert log.format == "query log"
    assert (len(log.queries), log.malformed) == (2, 1)
    assert log.reasons[0].startswith("line 2: ")
    assert reason in log.reasons[0]
    assert log.queries[1].qtype == 65


def test_unknown_keys_are_ignored() -> None:
    log = logs.read([line(0, "a.example.com.", future_key={"x": 1})])
    assert (len(log.queries), log.malformed) == (1, 0)


def test_a_dnsperf_list_gets_synthetic_times_at_the_rate() -> None:
    log = logs.read(["# dnsperf", "www.example.com A", "www.example.com AAAA", "x.test MX", "bad"],
                    rate=4)  # fmt: skip
    assert log.format == "dnsperf"
    assert [(q.ts, q.qtype) for q in log.queries] == [(0.0, 1), (0.25, 28), (0.5, 15)]
    assert log.malformed == 1


def test_the_progress_bar_redraws_in_place_and_finishes_the_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = Progress(1000, stream, clock=lambda: now[0])
    bar.advance(500)
    now[0] = 2.0
    bar.advance(500)
    bar.finish()
    text = stream.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n")
    assert "100%  1000/1000 queries  2.0 s" in text


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def log_file(tmp_path: Path, zipf_log: tuple[list[int], logs.LogRead]) -> Path:
    keys, _ = zipf_log
    path = tmp_path / "queries.jsonl"
    lines = [line(float(t), f"name{key}.example.com.", ttl=86_400) for t, key in enumerate(keys)]
    path.write_text("\n".join([*lines, "garbage"]) + "\n")
    return path


def test_tune_json_parses_with_the_progress_bar_on_and_matches_the_lru(
    log_file: Path, zipf_log: tuple[list[int], logs.LogRead], capsys: pytest.CaptureFixture[str]
) -> None:
    keys, _ = zipf_log
    code = cli.main(["tune", "--log", str(log_file), "--sizes", "10,50,400", "--ttl",
                     "0:86400", "--json", "--progress", "on"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    document = json.loads(out)
    assert "100%" in err
    assert "queries" in err
    assert document["log"]["malformed"] == 1
    ratios = {(r["ttl_policy"], r["max_entries"]): r["hit_ratio"] for r in document["results"]}
    for size in (10, 50, 400):
        assert ratios[("0:86400", size)] == exact_lru_hits(keys, size) / len(keys)
    assert document["recommendation"]["max_entries"] in (10, 50, 400)


def test_tune_writes_a_png_plot(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "tune.png"
    code = cli.main(["tune", "--log", str(log_file), "--sizes", "10,100", "--plot", str(png)])
    out, _ = capsys.readouterr()
    assert code == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
    assert f"plot: {png}" in out
    assert "recommendation:" in out


ERRORS = [
    pytest.param(["--log", "/nonexistent"], "--log: cannot read", id="missing-log"),
    pytest.param(["--ttl", "30:5"], "--ttl: expected FLOOR:CAP", id="floor-above-cap"),
    pytest.param(["--sizes", "ten"], "--sizes: expected", id="bad-sizes"),
    pytest.param(["--rate", "0"], "--rate: must be > 0", id="bad-rate"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], message: str, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [] if "--log" in argv else ["--log", str(log_file)]
    code = cli.main(["tune", *base, *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err


# --- the query log's exact spelling (kdns/querylines.py of the query-log work) ---------------

LOGGED_TYPES = ["A", "NS", "CNAME", "SOA", "PTR", "HINFO", "MX", "TXT", "AAAA", "SRV", "NAPTR",
                "DNAME", "OPT", "DS", "RRSIG", "NSEC", "DNSKEY", "NSEC3", "TLSA", "SPF", "IXFR",
                "AXFR", "ANY", "CAA", "TYPE65", "TYPE65535"]  # fmt: skip


@pytest.mark.parametrize("qtype", LOGGED_TYPES)
def test_every_logged_type_mnemonic_is_read(qtype: str) -> None:
    log = logs.read([line(0, "a.example.", qtype=qtype)])
    assert (len(log.queries), log.reasons) == (1, [])


@pytest.mark.parametrize(
    ("rcode", "number"),
    [("NOERROR", 0), ("NXDOMAIN", 3), ("YXDOMAIN", 6), ("NOTZONE", 10), ("11", 11),
     ("BADSIG", 16), ("BADCOOKIE", 23), ("24", 24)],
)  # fmt: skip
def test_every_logged_rcode_spelling_is_read(rcode: str, number: int) -> None:
    """miekg/dns spellings, as CoreDNS logs them: unnamed rcodes are bare numbers."""
    log = logs.read([line(0, "a.example.", rcode=rcode)])
    assert log.reasons == []
    assert log.queries[0].rcode == number


@pytest.mark.parametrize(
    ("qname", "wire_name"),
    [
        pytest.param("Cart.Shop.svc.cluster.local.", b"\x04cart\x04shop\x03svc\x07cluster\x05local\x00",
                     id="case-folded"),
        pytest.param("a\\.b.example.", b"\x03a.b\x07example\x00", id="escaped-dot"),
        pytest.param("a\\\\b.example.", b"\x03a\\b\x07example\x00", id="escaped-backslash"),
        pytest.param("\\000\\255.example.", b"\x02\x00\xff\x07example\x00", id="decimal-escapes"),
        pytest.param(".", b"\x00", id="root"),
    ],
)  # fmt: skip
def test_logged_names_are_read_in_presentation_format(qname: str, wire_name: bytes) -> None:
    log = logs.read([line(0, qname)])
    assert log.reasons == []
    assert log.queries[0].name == wire_name
