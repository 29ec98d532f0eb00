"""Why a fetch gave no usable answer: the one vocabulary of ``upstream.Failure.reason``.

A ``StrEnum``, so a member equals the string the upstream client and older callers use
(``Failure("timeout")`` still compares equal to ``Reason.TIMEOUT``); decisions compare members,
never spelled-out strings (``decide.caches_failure``).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    TIMEOUT = "timeout"
    """No server answered within the try and overall deadlines."""
    UNREACHABLE = "unreachable"
    """A refused connection or an ICMP unreachable."""
    SERVFAIL = "servfail"
    """A server answered SERVFAIL, or its reply broke the bailiwick or chain rules."""
    REFUSED = "refused"
    NOTIMP = "notimp"
    FORMERR = "formerr"
    TRUNCATED = "truncated"
    """TC=1 over TCP: nothing complete to serve."""
    OVERLOADED = "overloaded"
    """Our own capacity (``max_concurrent``, a refresh budget): says nothing about the name."""
    CLOSED = "closed"
    """We are shutting down, or a pooled connection closed under the query."""
    EXPIRED = "expired"
    """A queued fetch not run: every client waiting on it was dropped (``lanes``)."""
    INTERNAL = "internal"
    """A bug caught on the fetch path; also any reason this vocabulary does not know."""

    @classmethod
    def of(cls, text: str) -> Reason:
        """The member for ``text``; INTERNAL for a string no member spells (an upstream fake,
        or a reason added upstream before this list), which is then treated as before: a
        failure about the name."""
        try:
            return cls(text)
        except ValueError:
            return cls.INTERNAL
