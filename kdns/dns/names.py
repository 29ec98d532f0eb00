"""Names as wire bytes: text and label tuples to and from wire form, suffix and subdomain tests,
and the longest-suffix tables that routing and TTL policy share.

A name here is its uncompressed wire form, lower-cased (``b"\\x07cluster\\x05local\\x00"``),
the same bytes ``kdns.dns.query.Question.wire_lower`` holds, so a query's key needs no
conversion. Only ASCII letters are folded (RFC 4343 §3: DNS case-insensitivity is ASCII only).
The authoritative side's grammar works on label tuples (``Labels``, ``kdns.names.Name``);
``from_labels`` and ``to_labels`` are the one conversion between the two.

``ZoneTable.match`` walks the name's suffixes from longest to shortest and stops at the first
zone it holds: at most 128 dict lookups for the longest legal name, usually 3-6.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Generic, TypeVar

T = TypeVar("T")

Labels = tuple[str, ...]
"""A name as lower-case labels, root excluded (``("cart", "shop", "svc", "cluster", "local")``)."""

ROOT: Final = b"\x00"
MAX_NAME: Final = 255
MAX_LABEL: Final = 63


class ZoneNameError(ValueError):
    """A zone name in the config is not a valid DNS name."""


def to_wire(text: str) -> bytes:
    """``"Cluster.Local."`` → lower-case wire bytes; ``"."`` and ``""`` are the root."""
    stripped = text.strip().rstrip(".")
    if not stripped:
        return ROOT
    out = bytearray()
    for label in stripped.split("."):
        raw = label.encode("ascii").lower()
        if not raw or len(raw) > MAX_LABEL:
            raise ZoneNameError(f"bad label {label!r} in {text!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ZoneNameError(f"name longer than 255 octets: {text!r}")
    return bytes(out)


def to_text(name: bytes) -> str:
    """Wire bytes → dotted text with a trailing dot, for logs and errors."""
    labels = []
    offset = 0
    while offset < len(name) and name[offset]:
        length = name[offset]
        labels.append(name[offset + 1 : offset + 1 + length].decode("ascii", "backslashreplace"))
        offset += 1 + length
    return ".".join(labels) + "."


def from_labels(name: Labels) -> bytes:
    """Uncompressed wire form of a label tuple, ending with the root label."""
    out = bytearray()
    for label in name:
        raw = label.encode("latin-1")  # query labels are decoded latin-1: any byte round-trips
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def text_to_labels(text: str) -> Labels:
    """``"Cart.Shop.svc.cluster.local."`` -> ``("cart", "shop", "svc", "cluster", "local")``."""
    text = text.strip().rstrip(".")
    if not text:
        return ()
    return tuple(label.lower() for label in text.split("."))


def to_labels(name: bytes) -> Labels:
    """Wire bytes (uncompressed) -> labels decoded latin-1, so any byte round-trips."""
    labels: list[str] = []
    offset = 0
    while name[offset]:
        length = name[offset]
        labels.append(name[offset + 1 : offset + 1 + length].decode("latin-1"))
        offset += 1 + length
    return tuple(labels)


def suffixes(name: bytes) -> Iterator[bytes]:
    """The name itself, then each parent, ending with the root."""
    offset = 0
    while offset < len(name) and name[offset]:
        yield name[offset:]
        offset += 1 + name[offset]
    yield ROOT


def is_subdomain(name: bytes, zone: bytes) -> bool:
    """True if ``name`` equals ``zone`` or lies below it (both lower-case wire forms).

    A plain ``endswith`` is not enough: labels are binary, so the one-label name
    ``b"\\x07x\\x05local\\x00"`` ends with the bytes of ``b"\\x05local\\x00"`` without being
    below it. We compare only at label boundaries.
    """
    if len(zone) > len(name):
        return False
    if zone == ROOT:
        return True
    start = len(name) - len(zone)
    return any(start == offset for offset in _label_offsets(name)) and name[start:] == zone


def _label_offsets(name: bytes) -> Iterator[int]:
    offset = 0
    while offset < len(name) and name[offset]:
        yield offset
        offset += 1 + name[offset]


class ZoneTable(Generic[T]):
    """Zones → values; ``match`` picks the longest zone that is a suffix of the name."""

    __slots__ = ("_zones",)

    def __init__(self, zones: Mapping[bytes, T]) -> None:
        self._zones = dict(zones)

    @classmethod
    def from_text(cls, zones: Mapping[str, T]) -> ZoneTable[T]:
        return cls({to_wire(zone): value for zone, value in zones.items()})

    def match(self, name: bytes) -> tuple[bytes, T] | None:
        zones = self._zones
        for suffix in suffixes(name):
            value = zones.get(suffix)
            if value is not None:
                return suffix, value
        return None

    def items(self) -> list[tuple[bytes, T]]:
        return list(self._zones.items())

    def __len__(self) -> int:
        return len(self._zones)
