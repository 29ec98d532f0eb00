"""Custom records (``records:``, ``hosts:``) over real sockets: both UDP loops (the C
accelerator and the pure-Python one), UDP with EDNS, and TCP, next to the fixture cluster.

Ids name the feature and the choice documented in README.md ("Custom records").
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import pytest

from kdns.config import build_config
from kdns.serve import accel
from tests.support.cluster import fixture_objects
from tests.support.dnscase import Case, check, soa
from tests.support.servers import RunningServer, running_server

pytestmark = pytest.mark.integration

T = "testns.svc.cluster.local."
SOA = soa()

RECORDS = [
    "db.corp.example. 30 IN A 192.0.2.10",
    "db.corp.example. 30 IN A 192.0.2.11",
    "corp.example. 60 IN MX 10 mail.corp.example.",
    "mail.corp.example. 60 IN A 192.0.2.25",
    'txt.corp.example. IN TXT "hello world" "two"',
    "_ldap._tcp.corp.example. 60 IN SRV 0 10 389 db.corp.example.",
    f"alias.corp.example. 30 IN CNAME svc1.{T}",
    "www.corp.example. 30 CNAME db.corp.example.",
    "legacy.cluster.local. 5 IN A 10.1.1.1",
    f"svc1.{T} 5 IN A 10.9.9.9",
    "ext.interwebs.test. 40 IN AAAA 2001:db8::40",
    "ptr.corp.example. 30 IN PTR db.corp.example.",
    "web.ghost.svc.cluster.local. 5 IN A 10.2.2.2",
    "deep.under.cluster.local. 5 IN A 10.1.1.2",
]
HOSTS = [
    "192.0.2.50 files.corp.example files  # the file server",
    "2001:db8::50 files.corp.example",
]


def rev(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def refused(id: str, qname: str, qtype: str = "A") -> Case:
    return Case(id, qname, qtype, "REFUSED", aa=False)


CASES = [
    Case("records-A-outside-zone", "db.corp.example.", "A",
         answer=("db.corp.example. 30 IN A 192.0.2.10", "db.corp.example. 30 IN A 192.0.2.11")),
    Case("records-case-insensitive", "DB.Corp.Example.", "A",
         answer=("db.corp.example. 30 IN A 192.0.2.10", "db.corp.example. 30 IN A 192.0.2.11")),
    Case("records-NODATA-outside-zone-has-no-SOA", "db.corp.example.", "AAAA"),
    Case("records-NODATA-outside-zone-other-type", "db.corp.example.", "TXT"),
    Case("records-MX-with-glue", "corp.example.", "MX",
         answer=("corp.example. 60 IN MX 10 mail.corp.example.",),
         additional=("mail.corp.example. 60 IN A 192.0.2.25",)),
    Case("records-TXT-default-ttl", "txt.corp.example.", "TXT",
         answer=('txt.corp.example. 5 IN TXT "hello world" "two"',)),
    Case("records-SRV-with-glue", "_ldap._tcp.corp.example.", "SRV",
         answer=("_ldap._tcp.corp.example. 60 IN SRV 0 10 389 db.corp.example.",),
         additional=("db.corp.example. 30 IN A 192.0.2.10", "db.corp.example. 30 IN A 192.0.2.11")),
    Case("records-CNAME-into-cluster-chased", "alias.corp.example.", "A",
         answer=(f"alias.corp.example. 30 IN CNAME svc1.{T}", f"svc1.{T} 5 IN A 10.9.9.9")),
    Case("records-CNAME-to-custom-chased", "www.corp.example.", "A",
         answer=("www.corp.example. 30 IN CNAME db.corp.example.",
                 "db.corp.example. 30 IN A 192.0.2.10", "db.corp.example. 30 IN A 192.0.2.11")),
    Case("records-CNAME-for-every-type", "www.corp.example.", "TXT",
         answer=("www.corp.example. 30 IN CNAME db.corp.example.",)),
    Case("records-PTR", "ptr.corp.example.", "PTR", answer=("ptr.corp.example. 30 IN PTR db.corp.example.",)),
    Case("records-ANY-one-rrset", "db.corp.example.", "ANY",
         answer=("db.corp.example. 30 IN A 192.0.2.10", "db.corp.example. 30 IN A 192.0.2.11")),
    Case("records-in-zone-name", "legacy.cluster.local.", "A", answer=("legacy.cluster.local. 5 IN A 10.1.1.1",)),
    Case("records-in-zone-NODATA-has-zone-SOA", "legacy.cluster.local.", "AAAA", authority=(SOA,)),
    Case("records-in-zone-below-is-cluster-NXDOMAIN", "x.legacy.cluster.local.", "A", "NXDOMAIN",
         authority=(SOA,)),
    Case("records-in-zone-ENT-namespace-is-NODATA-RFC8020", "ghost.svc.cluster.local.", "A",
         authority=(SOA,)),
    Case("records-in-zone-ENT-namespace-name-answered", "web.ghost.svc.cluster.local.", "A",
         answer=("web.ghost.svc.cluster.local. 5 IN A 10.2.2.2",)),
    Case("records-in-zone-ENT-sibling-stays-NXDOMAIN", "db.ghost.svc.cluster.local.", "A",
         "NXDOMAIN", authority=(SOA,)),
    Case("records-in-zone-ENT-off-grammar-is-NODATA-RFC8020", "under.cluster.local.", "AAAA",
         authority=(SOA,)),
    Case("records-collision-custom-wins", f"svc1.{T}", "A", answer=(f"svc1.{T} 5 IN A 10.9.9.9",)),
    Case("records-collision-other-type-NODATA", f"svc1.{T}", "SRV", authority=(SOA,)),
    Case("records-ExternalName-target-is-custom", f"ext.{T}", "AAAA",
         answer=(f"ext.{T} 5 IN CNAME ext.interwebs.test.", "ext.interwebs.test. 40 IN AAAA 2001:db8::40")),
    Case("cluster-names-unchanged", f"hdls-noport.{T}", "A", answer=(f"hdls-noport.{T} 5 IN A 172.0.3.1",)),
    refused("records-sibling-is-not-ours", "other.corp.example."),
    refused("records-below-a-custom-name-is-not-ours", "x.db.corp.example."),
    Case("hosts-A-default-ttl-3600", "files.corp.example.", "A",
         answer=("files.corp.example. 3600 IN A 192.0.2.50",)),
    Case("hosts-alias-single-label", "files.", "A", answer=("files. 3600 IN A 192.0.2.50",)),
    Case("hosts-AAAA", "files.corp.example.", "AAAA", answer=("files.corp.example. 3600 IN AAAA 2001:db8::50",)),
    Case("hosts-PTR-one-per-name", rev("192.0.2.50"), "PTR",
         answer=(f"{rev('192.0.2.50')} 3600 IN PTR files.corp.example.", f"{rev('192.0.2.50')} 3600 IN PTR files.")),
    Case("hosts-PTR-v6", rev("2001:db8::50"), "PTR",
         answer=(f"{rev('2001:db8::50')} 3600 IN PTR files.corp.example.",)),
    # Above a custom PTR, as above any PTR outside the cluster's addresses, the name is not
    # ours (forwarded; REFUSED here): kdns denies nothing there, so RFC 8020 is not at stake.
    refused("hosts-reverse-ancestor-is-not-ours", "2.0.192.in-addr.arpa.", "PTR"),
    Case("hosts-reverse-other-type-NODATA-reverse-SOA", rev("192.0.2.50"), "A",
         authority=("in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5",)),
]  # fmt: skip

TRANSPORTS = ["udp-c-loop", "udp-python-loop", "udp-edns", "tcp"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[bool, RunningServer]]:
    config = build_config({"records": RECORDS, "hosts": HOSTS, "upstream": "none"}).zone
    with (
        running_server(fixture_objects(), config) as c_loop,
        running_server(fixture_objects(), config, python_udp_loop=True) as python_loop,
    ):
        yield {False: c_loop, True: python_loop}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_custom_record(case: Case, transport: str, servers: dict[bool, RunningServer]) -> None:
    server = servers[transport == "udp-python-loop"]
    query = dns.message.make_query(
        case.qname, case.qtype, use_edns=0 if transport == "udp-edns" else None
    )
    check(server.query(query, "tcp" if transport == "tcp" else "udp"), case)


def test_custom_answers_are_compiled_into_the_records_table(
    servers: dict[bool, RunningServer],
) -> None:
    """Custom names hit ``AnswerTable.records``: the C loop serves them, no slow path."""
    table = servers[False].runtime.table
    assert table is not None
    for name, qtype in (
        ("db.corp.example", 1),
        ("files.corp.example", 28),
        ("alias.corp.example", 1),
    ):
        key = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
        assert key + qtype.to_bytes(2, "big") + b"\x00\x01" in table.records, name
    assert accel.available or "KDNS_NO_ACCEL" in accel.reason, accel.reason


def kdns(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "kdns", *args], capture_output=True, text=True, timeout=60, cwd=root
    )


CONFIG_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("bad-type", {"records": ["a.example. 5 IN NAPTR x"]}, "records[0]: type must be one of"),
    ("bad-address", {"records": ["ok.example. A 1.2.3.4", "a.example. A 1.2.3"]},
     "records[1]: '1.2.3' is not an IPv4 address"),
    ("cname-and-data", {"records": ["a.example. CNAME b.example.", "a.example. A 1.2.3.4"]},
     "records[0]: a.example. has a CNAME and other records"),
    ("zone-apex", {"records": ["cluster.local. A 1.2.3.4"]}, "records[0]: cluster.local. is a served zone's apex"),
    ("hosts-bad-ip", {"hosts": ["192.0.2.300 x.example"]}, "hosts[0]: '192.0.2.300' is not an IP address"),
    ("hosts-no-name", {"hosts": ["192.0.2.3"]}, "hosts[0]: expected IP NAME"),
    ("hosts-file-missing", {"hosts_file": "/nonexistent/hosts"}, "hosts_file: cannot read /nonexistent/hosts"),
    ("hosts-reverse-not-bool", {"hosts_reverse": "no"}, "hosts_reverse: expected true or false"),
    ("noendpoints-not-bool", {"noendpoints": "yes"}, "noendpoints: expected true or false"),
    ("ignore-empty-with-noendpoints", {"noendpoints": True, "ignore_empty_service": True},
     "ignore_empty_service: cannot be combined with noendpoints"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), [c[1:] for c in CONFIG_ERRORS],
                         ids=[c[0] for c in CONFIG_ERRORS])  # fmt: skip
def test_config_errors_exit_2_naming_the_field_and_line(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    import yaml

    config = tmp_path / "kdns.yaml"
    config.write_text(yaml.safe_dump(values))
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo-cluster.yaml"
    result = kdns("check", "--manifests", str(demo), "--config", str(config))
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


def test_hosts_file_errors_name_the_file_line_and_check_reports_collisions(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo-cluster.yaml"
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n10.0.0.1 cart.shop.svc.cluster.local\nnot-an-ip name\n")
    result = kdns("check", "--manifests", str(demo), "--hosts-file", str(hosts))
    assert result.returncode == 2
    assert f"hosts_file {hosts} line 3: 'not-an-ip' is not an IP address" in result.stderr
    hosts.write_text("# comment\n10.0.0.1 cart.shop.svc.cluster.local  files.corp.example\n")
    result = kdns("check", "--manifests", str(demo), "--hosts-file", str(hosts))
    assert result.returncode == 0, result.stderr
    assert "shadowing cluster names (custom wins): cart.shop.svc.cluster.local." in result.stdout
    assert "shadows the cluster's name" in result.stderr


def test_check_names_custom_records_nodecache_would_deny(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo-cluster.yaml"
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.1.1 legacy.cluster.local web.ghost.svc.cluster.local\n")
    result = kdns("check", "--manifests", str(demo), "--hosts-file", str(hosts))
    assert result.returncode == 0, result.stderr
    assert "outside the cluster name grammar: legacy.cluster.local.\n" in result.stdout
    assert "local_nxdomain_except: [legacy.cluster.local.]" in result.stdout
