"""Zone names on the wire and longest-suffix matching (kdns/dns/names.py)."""

from __future__ import annotations

import pytest

from kdns.dns import names as zone


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        (".", b"\x00"),
        ("", b"\x00"),
        ("Cluster.Local", b"\x07cluster\x05local\x00"),
        ("cluster.local.", b"\x07cluster\x05local\x00"),
        ("in-addr.arpa", b"\x07in-addr\x04arpa\x00"),
    ],
)
def test_to_wire(text: str, wire: bytes) -> None:
    assert zone.to_wire(text) == wire
    assert zone.to_text(wire) == (text.lower().rstrip(".") + "." if text.strip(".") else ".")


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".com", ".".join(["abcdefgh"] * 32)])
def test_to_wire_rejects(bad: str) -> None:
    with pytest.raises(zone.ZoneNameError):
        zone.to_wire(bad)


@pytest.mark.parametrize(
    ("name", "parent", "expected"),
    [
        ("a.cluster.local", "cluster.local", True),
        ("cluster.local", "cluster.local", True),
        ("cluster.local", ".", True),
        ("xcluster.local", "cluster.local", False),
        ("local", "cluster.local", False),
        ("a.b.example.com", "example.com", True),
        ("a.b.example.com", "b.example.org", False),
    ],
)
def test_is_subdomain(name: str, parent: str, expected: bool) -> None:
    assert zone.is_subdomain(zone.to_wire(name), zone.to_wire(parent)) is expected


def test_is_subdomain_only_at_label_boundaries() -> None:
    # One binary label "x\x05local": its bytes end like the name "local." but it is not below it.
    tricky = b"\x07x\x05local\x00"
    assert tricky.endswith(zone.to_wire("local"))
    assert not zone.is_subdomain(tricky, zone.to_wire("local"))


def test_zone_table_longest_suffix() -> None:
    table = zone.ZoneTable.from_text(
        {".": "default", "cluster.local": "cluster", "corp.example": "stub", "a.corp.example": "a"}
    )
    cases = {
        "svc.ns.svc.cluster.local": ("cluster.local", "cluster"),
        "x.a.corp.example": ("a.corp.example", "a"),
        "b.corp.example": ("corp.example", "stub"),
        "example.com": (".", "default"),
    }
    for name, (matched, value) in cases.items():
        assert table.match(zone.to_wire(name)) == (zone.to_wire(matched), value)
    assert zone.ZoneTable.from_text({"cluster.local": 1}).match(zone.to_wire("x.com")) is None
