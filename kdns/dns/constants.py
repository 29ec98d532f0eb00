"""DNS numbers: RR types and classes, rcodes, header flag bits, EDE codes and message sizes.

The one place these are spelled; every other module of kdns and nodecache names them from here
(``kdns.wire`` and ``kdns.resolver.message`` re-export the ones their callers use).
"""

from __future__ import annotations

from typing import Final

# Types and classes (RFC 1035, 3596, 2782, 6891, 8482).
A: Final = 1
NS: Final = 2
CNAME: Final = 5
SOA: Final = 6
PTR: Final = 12
HINFO: Final = 13
MX: Final = 15
TXT: Final = 16
AAAA: Final = 28
SRV: Final = 33
DNAME: Final = 39
OPT: Final = 41
RRSIG: Final = 46
NSEC: Final = 47
NSEC3: Final = 50
IXFR: Final = 251
AXFR: Final = 252
ANY: Final = 255
CLASS_IN: Final = 1
DNSSEC_PROOF: Final = frozenset({RRSIG, NSEC, NSEC3})

# Response codes.
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
NOTAUTH: Final = 9
BADVERS: Final = 16

# Header flag bits of the 16-bit flags word (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD/CD).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010

# RFC 8914 extended DNS error codes we send, and the EDNS option that carries them.
EDE_STALE_ANSWER: Final = 3
EDE_NO_REACHABLE_AUTHORITY: Final = 22
EDE_OPTION: Final = 15

HEADER_SIZE: Final = 12
QUESTION_OFFSET: Final = 12
POINTER_TO_QUESTION: Final = b"\xc0\x0c"
MIN_UDP_SIZE: Final = 512
TCP_MAX_SIZE: Final = 65535
