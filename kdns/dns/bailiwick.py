"""The bailiwick rule: which records of an upstream's reply we trust.

An upstream is asked because a route sends a zone to it (``kdns.resolver.core.Router``); that
route zone is its bailiwick (``.`` for the default ``--upstream`` servers, which are recursive
resolvers trusted for every name). Then:

1. *Answer section.* The chain starts at the question name and follows CNAMEs found in the
   answer (in any order, at most ``MAX_CHAIN`` hops, loops cut; qtype CNAME and ANY are not
   followed, RFC 1034 §3.6.2). An answer RR is kept only if its owner is a chain name inside the
   bailiwick, or it is a DNAME (RFC 6672) owned inside the bailiwick by an ancestor of such a
   name. The chain is cut at the first name outside the bailiwick: the CNAME that points there
   is kept (its owner is ours), but nothing owned by the target is, and the resolver asks the
   target's own route instead (``Sanitized.chase``; RFC 1034 §4.3.2 step 3). Records for names
   that are not on the chain (the classic injected "extra answer") are dropped.
2. *Authority section.* Kept only if owned inside the bailiwick by the chain's last trusted name
   or one of its ancestors (the SOA of a negative answer, RFC 2308 §2; NS of the zone), plus
   DNSSEC proof records (NSEC, NSEC3, RRSIG) owned inside the bailiwick.
3. *Additional section.* Kept only if owned inside the bailiwick by a name that a kept record
   points at (NS, MX, SRV... targets) or by a chain name; RFC 2181 §5.4.1 ranks this data
   lowest. OPT is never stored: each reply gets its own.

And the invariant that makes the rest safe: **a reply only ever fills the cache entry of the
question it answers**. Records are never split out into entries for other names, so a spoofed
or out-of-bailiwick record can at worst travel with the answer it arrived in, and the rules
above remove it from there too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kdns.dns.constants import CNAME, DNAME, DNSSEC_PROOF
from kdns.dns.names import is_subdomain
from kdns.dns.records import Record
from kdns.dns.reply import ReplyFacts


@dataclass(frozen=True, slots=True)
class Sanitized:
    """The records of a reply that the bailiwick rule keeps."""

    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    chase: bytes | None
    """A CNAME target outside the bailiwick that the resolver must ask its own route for
    (case as in the reply), or None."""
    dropped: int
    """How many records were removed (poisoning attempts, or an over-eager upstream)."""


def sanitize(facts: ReplyFacts, bailiwick: bytes) -> Sanitized:
    """Apply the bailiwick rule of the module docstring for an upstream trusted for
    ``bailiwick`` (a lower-case wire zone name)."""
    trusted: list[bytes] = []
    chase: bytes | None = None
    for name in facts.chain:
        if not is_subdomain(name, bailiwick):
            chase = name
            break
        trusted.append(name)
    trusted_set = set(trusted)
    answer: list[Record] = []
    authority: list[Record] = []
    additional: list[Record] = []
    dropped = 0
    for record in facts.records:
        if record.section != 0:
            continue
        owner = record.owner_lower
        keep = owner in trusted_set or (
            record.rtype == DNAME
            and is_subdomain(owner, bailiwick)
            and any(is_subdomain(name, owner) and name != owner for name in trusted)
        )
        if keep:
            answer.append(record)
        else:
            dropped += 1
    end = trusted[-1] if trusted else facts.chain[0]
    for record in facts.records:
        if record.section != 1:
            continue
        owner = record.owner_lower
        if is_subdomain(owner, bailiwick) and (
            record.rtype in DNSSEC_PROOF or is_subdomain(end, owner)
        ):
            authority.append(record)
        else:
            dropped += 1
    referenced = set(trusted)
    for record in (*answer, *authority):
        referenced.update(record.names())
    for record in facts.records:
        if record.section != 2:
            continue
        owner = record.owner_lower
        if owner in referenced and is_subdomain(owner, bailiwick):
            additional.append(record)
        else:
            dropped += 1
    if chase is not None:
        chase = _original_case(facts.records, chase)
    return Sanitized(tuple(answer), tuple(authority), tuple(additional), chase, dropped)


def _original_case(records: Iterable[Record], name_lower: bytes) -> bytes:
    for record in records:
        if record.rtype == CNAME and record.rdata.lower() == name_lower:
            return record.rdata
    return name_lower
