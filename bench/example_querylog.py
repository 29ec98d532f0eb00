"""Write examples/querylog.jsonl: half an hour of a node's query log on the demo cluster, in the
query-log format (README "nodecache tune"), for the tune example.

Not captured from a live node: made by the real code, offline. Pods of the demo snapshot look
names up through glibc (kdns.admin.libc) against an offline nodecache over the snapshot
(nodecache.admin.offline: the real resolver, cache and search-path policy, absorption on),
whose clock is set to each lookup's time; every query the pods send is logged with the reply
it got (rcode, TTL, size, whether the cache answered). Outside names come from
examples/outside.zone plus a long tail of names that exist nowhere (NXDOMAIN from the root).
Lookups arrive as a Poisson process (mean ``RATE`` per second) and names are Zipf-distributed,
from a fixed seed, so the file is reproducible:

    .venv/bin/python bench/example_querylog.py [--out examples/querylog.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from kdns.admin import libc, lookup
from kdns.admin.outside import Outside
from kdns.admin.podconf import resolv_conf
from kdns.admin.snapshot import ClusterDNS
from kdns.config import ZoneConfig
from kdns.source.manifests import load_snapshot
from nodecache.admin.offline import OfflineNode

REPO = Path(__file__).resolve().parents[1]
SPAN_S = 30 * 60
RATE = 0.5
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PODS = {  # client address -> namespace (pods of the demo snapshot)
    "10.244.1.10": "shop", "10.244.2.10": "shop", "10.244.1.12": "shop",
    "10.244.1.20": "shop", "10.244.1.30": "data",
}  # fmt: skip
NAMES = [
    "cart",
    "api",
    "payments",
    "checkout.shop",
    "cache.data",
    "db.data",
    "db-0.db.data",
    "kubernetes.default",
    "www.example.com",
    "api.github.com",
    "cart-alias",
    "payments.example.com.",
] + [f"tracker-{n}.ads.example.net" for n in range(60)]  # a long tail that exists nowhere
QTYPE = {1: "A", 28: "AAAA"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "examples" / "querylog.jsonl")
    args = parser.parse_args()
    rng = random.Random(15)
    outside = Outside([("outside.zone", (REPO / "examples" / "outside.zone").read_text())])
    dns = ClusterDNS(
        load_snapshot([REPO / "examples" / "demo-cluster.yaml"]), ZoneConfig(), outside
    )
    host_search = ("corp.example",)
    weights = [1 / (rank + 1) for rank in range(len(NAMES))]
    node = OfflineNode(dns, ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             *host_search))  # fmt: skip
    lines = []
    now = 0.0
    while True:
        now += rng.expovariate(RATE)
        if now >= SPAN_S:
            break
        client = rng.choice(list(PODS))
        options = libc.read_options(resolv_conf(PODS[client], "cluster.local", host_search))
        name = rng.choices(NAMES, weights)[0]
        node.clock.now = START + now
        found = lookup.run(name, options, libc.GLIBC, node, "")
        sent = START + now
        for step in found.steps:
            for query in (step.a, step.aaaa):
                lines.append(
                    {
                        "ts": round(sent, 6), "server": "nodecache", "client": client,
                        "port": rng.randrange(32768, 61000), "proto": "udp",
                        "id": rng.randrange(65536), "qname": query.qname,
                        "qtype": QTYPE[query.qtype], "qclass": "IN", "do": False,
                        "rcode": query.rcode, "ttl": query.ttl, "size": query.size,
                        "duration_s": round(query.latency_ms / 1000, 6),
                        "cache_hit": query.how == "cache",
                    }
                )  # fmt: skip
            sent += step.latency_ms / 1000  # the next candidate goes out after this pair
    args.out.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    print(f"{args.out}: {len(lines)} queries over {SPAN_S} s")


if __name__ == "__main__":
    main()
