"""Authoritative compilation: decided answers to the bytes the answer table stores.

It owns what the authoritative side builds on top of the wire package ``kdns.dns``:

* ``Compiled`` is what the answer table stores: eight header variants (``kdns.dns.header.heads``:
  RD and CD copied from the query, with and without an OPT record) and one body (or, with
  loadbalance, one body per rotation of the answer's A/AAAA/SRV records). A reply is
  ``id + head + question + body``.
* ``compile_answer``, ``rotations`` and ``pick_body``: loadbalance's rotations, and which one a
  query gets.

The RR model, the writer (``encode``), the question parser and the truncation are the wire
package's; this module re-exports the names its callers use from it, so the authoritative side
reads ``wire.X`` as before.
"""

from __future__ import annotations

from typing import Final

from kdns.dns.constants import AAAA as AAAA
from kdns.dns.constants import ANY as ANY
from kdns.dns.constants import AXFR as AXFR
from kdns.dns.constants import BADVERS as BADVERS
from kdns.dns.constants import CLASS_IN as CLASS_IN
from kdns.dns.constants import CNAME as CNAME
from kdns.dns.constants import FORMERR as FORMERR
from kdns.dns.constants import HEADER_SIZE as HEADER_SIZE
from kdns.dns.constants import HINFO as HINFO
from kdns.dns.constants import IXFR as IXFR
from kdns.dns.constants import MIN_UDP_SIZE as MIN_UDP_SIZE
from kdns.dns.constants import MX as MX
from kdns.dns.constants import NOERROR as NOERROR
from kdns.dns.constants import NOTAUTH as NOTAUTH
from kdns.dns.constants import NOTIMP as NOTIMP
from kdns.dns.constants import NS as NS
from kdns.dns.constants import NXDOMAIN as NXDOMAIN
from kdns.dns.constants import OPT as OPT
from kdns.dns.constants import POINTER_TO_QUESTION as POINTER_TO_QUESTION
from kdns.dns.constants import PTR as PTR
from kdns.dns.constants import QUESTION_OFFSET as QUESTION_OFFSET
from kdns.dns.constants import REFUSED as REFUSED
from kdns.dns.constants import SERVFAIL as SERVFAIL
from kdns.dns.constants import SOA as SOA
from kdns.dns.constants import SRV as SRV
from kdns.dns.constants import TCP_MAX_SIZE as TCP_MAX_SIZE
from kdns.dns.constants import TXT as TXT
from kdns.dns.constants import A as A
from kdns.dns.edns import opt_record as opt_record
from kdns.dns.header import heads as heads
from kdns.dns.names import from_labels as from_labels
from kdns.dns.reader import Edns as Edns
from kdns.dns.reader import Question as Question
from kdns.dns.reader import WireError as WireError
from kdns.dns.reader import parse_name as parse_name
from kdns.dns.reader import parse_question as parse_question
from kdns.dns.reader import parse_records as parse_records
from kdns.dns.reader import skip_rr as skip_rr
from kdns.dns.records import RR as RR
from kdns.dns.records import Answer as Answer
from kdns.dns.records import RRset as RRset
from kdns.dns.truncate import truncate as truncate
from kdns.dns.writer import Encoded as Encoded
from kdns.dns.writer import encode as encode
from kdns.dns.writer import encode_batches as encode_batches
from kdns.names import Name

name_wire = from_labels
"""Uncompressed wire form of a Name (the wire package's ``from_labels``)."""


Body = bytes | tuple[bytes, ...]
"""What follows the question: one body, or one per rotation (``compile_answer``)."""
Compiled = tuple[tuple[bytes, ...], Body]
"""What the answer table stores per key: (``heads(...)`` variants, body)."""


ROTATED_TYPES: Final = frozenset({A, AAAA, SRV})
"""RRsets whose order ``loadbalance: round_robin`` varies (CoreDNS's loadbalance plugin
shuffles A and AAAA; SRV too, since a headless Service's clients may take the first target)."""

MAX_ROTATIONS: Final = 16
"""Bodies compiled per rotated answer: every order for up to 16 records, else 16 evenly spaced
rotations (each of 16 evenly spaced records comes first in one of them)."""


def compile_answer(qname: Name, answer: Answer, rotate: bool = False) -> Compiled:
    """Compile ``answer``; with ``rotate``, an answer section holding an A, AAAA or SRV RRset of
    several records gets one body per rotation (``pick_body`` chooses one per query)."""
    encoded = encode(qname, answer)
    an, ns, ar = encoded.counts
    head = heads(encoded.rcode, encoded.authoritative, False, an, ns, ar)
    if rotate:
        orders = rotations(answer)
        if orders:
            return head, tuple(encode(qname, order).body for order in orders)
    return head, encoded.body


def rotations(answer: Answer) -> tuple[Answer, ...]:
    """``answer`` with each rotatable RRset of its answer section rotated by 0..k-1 steps of
    len/k records (k = min(longest such RRset, MAX_ROTATIONS)); () when nothing rotates."""
    longest = max(
        (len(rrset) for rrset in answer.answer if rrset and rrset[0].rtype in ROTATED_TYPES),
        default=0,
    )
    if longest < 2:
        return ()
    count = min(longest, MAX_ROTATIONS)

    def rotated(rrset: RRset, step: int) -> RRset:
        if len(rrset) < 2 or rrset[0].rtype not in ROTATED_TYPES:
            return rrset
        shift = step * len(rrset) // count % len(rrset)
        return rrset[shift:] + rrset[:shift]

    return tuple(
        Answer(
            answer.rcode,
            tuple(rotated(rrset, step) for rrset in answer.answer),
            answer.authority,
            answer.additional,
            answer.authoritative,
        )
        for step in range(count)
    )


def pick_body(body: Body, packet: bytes) -> bytes:
    """The body to send for ``packet``: a rotated entry's rotation is chosen by the query ID.

    Resolvers pick IDs at random (glibc, musl and dnspython all do), so clients spread evenly
    over the rotations with no shared counter to update, and one packet always gets the same
    bytes from every serving path (the C loop chooses the same way)."""
    if isinstance(body, bytes):
        return body
    return body[((packet[0] << 8) | packet[1]) % len(body)]
