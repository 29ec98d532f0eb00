"""What a pod's libc sends for one ``getaddrinfo(NAME, AF_UNSPEC)``: the query plan.

Pure: resolv.conf text and a name in, candidates and stopping rules out
(../shared/docs/nodecache.md §3, glibc ``res_query.c``, musl ``lookup_name.c``):

* **Candidates.** A trailing dot: the name as given, nothing else (both libcs). Otherwise with
  ``dots`` = the dots in the name:

  - glibc: ``dots >= ndots``: the name as given first, then each search domain; else each
    search domain first, the name as given last;
  - musl: ``dots >= ndots``: the name as given only (no search at all); else the search
    domains, then the name as given.

  musl reads only the first 255 characters of the ``search`` line (a 256-byte buffer), so it
  searches only the domains that fit there; glibc before 2.26 kept 6 domains, later ones all.
* **A and AAAA together.** Each candidate is asked as an A and an AAAA query in parallel (an
  ``AF_UNSPEC`` lookup on a dual-stack pod), and both replies are judged together.
* **Stopping** (``judge``). Addresses in either reply end the lookup with those addresses.
  glibc goes on after NXDOMAIN, NODATA and SERVFAIL alike; musl goes on only when a reply is
  NXDOMAIN, and stops with ``EAI_NODATA`` on NODATA and ``EAI_AGAIN`` on SERVFAIL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from kdns.resolver.resolvconf import parse as parse_resolv_conf

GLIBC: Final = "glibc"
MUSL: Final = "musl"
LIBCS: Final = (GLIBC, MUSL)
DEFAULT_NDOTS: Final = 1
MAX_NDOTS: Final = 15
MUSL_SEARCH_LINE: Final = 255
"""musl keeps the first 255 characters of a ``search`` line."""


@dataclass(frozen=True, slots=True)
class ResolverOptions:
    """The parts of a resolv.conf the libc's plan depends on."""

    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    ndots: int


def read_options(text: str) -> ResolverOptions:
    """``nameserver``, ``search`` (via ``kdns.resolver.resolvconf``) and ``options ndots:N``
    (the last one wins; capped at 15 as both libcs do)."""
    conf = parse_resolv_conf(text)
    ndots = DEFAULT_NDOTS
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words or words[0] != "options":
            continue
        for option in words[1:]:
            key, _, value = option.partition(":")
            if key == "ndots" and value.isdigit():
                ndots = min(int(value), MAX_NDOTS)
    return ResolverOptions(conf.nameservers, conf.search, ndots)


def musl_search(search: tuple[str, ...]) -> tuple[str, ...]:
    """The domains musl searches: those whole within the first 255 characters of the line."""
    kept: list[str] = []
    line = len("search")
    for domain in search:
        line += 1 + len(domain)
        if line > MUSL_SEARCH_LINE:
            break
        kept.append(domain)
    return tuple(kept)


def candidates(name: str, options: ResolverOptions, libc: str) -> tuple[str, ...]:
    """The names the libc tries, in order, each with a trailing dot (module docstring)."""
    if libc not in LIBCS:
        raise ValueError(f"libc: expected one of {', '.join(LIBCS)}, got {libc!r}")
    text = name.strip()
    if not text or text == ".":
        raise ValueError("name: empty")
    if text.endswith("."):
        return (text,)
    as_is = text + "."
    search = musl_search(options.search) if libc == MUSL else options.search
    searched = tuple(f"{text}.{domain}." for domain in search if domain)
    if text.count(".") >= options.ndots:
        return (as_is,) if libc == MUSL else (as_is, *searched)
    return (*searched, as_is)


class Verdict(enum.Enum):
    """What a candidate's pair of replies means to the libc."""

    NEXT = "next"
    """Try the next candidate."""
    FOUND = "found"
    """Stop: the application gets the addresses."""
    STOP = "stop"
    """Stop: the application gets an error."""


class Reply(enum.Enum):
    """One reply as the libc reads it."""

    ADDRESSES = "addresses"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    """SERVFAIL, a timeout, or any other error rcode."""


def judge(libc: str, a: Reply, aaaa: Reply) -> Verdict:
    """The step after one candidate's A and AAAA replies (module docstring)."""
    if Reply.ADDRESSES in (a, aaaa):
        if libc == MUSL and Reply.SERVFAIL in (a, aaaa):
            return Verdict.STOP  # musl: any failed reply of the pair is EAI_AGAIN
        return Verdict.FOUND
    if libc == GLIBC:
        return Verdict.NEXT
    if a is Reply.NXDOMAIN or aaaa is Reply.NXDOMAIN:
        if Reply.SERVFAIL in (a, aaaa):
            return Verdict.STOP
        return Verdict.NEXT
    return Verdict.STOP


def failure(libc: str, replies: tuple[Reply, Reply] | None) -> str:
    """The error the application gets when no candidate had addresses: the last pair decides
    for musl (it stopped there); glibc reports NONAME unless the last pair failed."""
    if replies is None:
        return "EAI_NONAME"
    if Reply.SERVFAIL in replies:
        return "EAI_AGAIN"
    if libc == MUSL and Reply.NXDOMAIN not in replies:
        return "EAI_NODATA"
    if libc == GLIBC and all(reply is Reply.NODATA for reply in replies):
        return "EAI_NODATA"
    return "EAI_NONAME"
