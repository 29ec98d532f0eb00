"""Query rewriting with CoreDNS's ``rewrite`` syntax: rule strings -> ``Rules``; a question ->
the question to answer instead, and how to turn the answer's names back.

Supported (``rewrite`` plugin semantics, names as lower-case text with a trailing dot)::

    [stop|continue] name [exact|prefix|suffix|substring|regex] FROM TO [ANSWER]
        ANSWER: answer auto | answer name FROM TO
    [stop|continue] type FROM TO

``exact`` (the default) and ``suffix`` compare whole names (a trailing dot is added to FROM and
TO); ``prefix`` and ``substring`` compare the text as written; ``regex`` searches the name with
Python's ``re`` (RE2's common syntax) and fills ``{1}``.. in TO with its groups. A matching
``stop`` rule (the default) ends the list; ``continue`` goes on with the rewritten question.
``answer auto`` turns names in the answer and additional sections (owners, and CNAME, PTR, NS,
MX and SRV targets) back by the inverse rule; for ``regex`` the inverse maps the rewritten name
back to the asked one. ``answer name FROM TO`` (a regex) rewrites owner names. Without an
``answer`` clause the records keep the rewritten owner names, as in CoreDNS.

Pure: no I/O. ``RewriteError`` says what is wrong with a rule; ``kdns.config`` names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from kdns import dns
from kdns.names import Name, name_to_text, text_to_name

MATCH_KINDS: Final = ("exact", "prefix", "suffix", "substring", "regex")
TYPE_CODES: Final = {
    "A": dns.A, "NS": dns.NS, "CNAME": dns.CNAME, "SOA": dns.SOA, "PTR": dns.PTR,
    "HINFO": dns.HINFO, "MX": dns.MX, "TXT": dns.TXT, "AAAA": dns.AAAA, "SRV": dns.SRV,
    "ANY": dns.ANY,
}  # fmt: skip
_GROUP: Final = re.compile(r"\{(\d+)\}")

Reverse = Callable[[str], str]


class RewriteError(ValueError):
    """A rule string cannot be parsed."""


def _absolute(text: str) -> str:
    text = text.lower()
    return text if text.endswith(".") else text + "."


def _fill(template: str, match: re.Match[str]) -> str:
    return _GROUP.sub(lambda group: match.group(int(group.group(1))) or "", template)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``field`` is ``name`` or ``type``."""

    text: str
    field: str
    kind: str
    source: str
    target: str
    stop: bool = True
    answer: str = ""
    """``""``, ``auto``, or ``name`` (with ``answer_from``/``answer_to``)."""
    answer_from: str = ""
    answer_to: str = ""

    def rewrite_name(self, name: str) -> str | None:
        """The rewritten name, or None when the rule does not match."""
        source, target = self.source, self.target
        if self.kind == "exact":
            return target if name == source else None
        if self.kind == "suffix":
            return name[: -len(source)] + target if name.endswith(source) else None
        if self.kind == "prefix":
            return target + name[len(source) :] if name.startswith(source) else None
        if self.kind == "substring":
            return name.replace(source, target) if source in name else None
        match = re.search(source, name)
        return _absolute(_fill(target, match)) if match is not None else None

    def reverse(self, asked: str, rewritten: str) -> Reverse | None:
        """How answer names turn back, or None to leave them as the rewritten question's."""
        source, target = self.source, self.target
        if self.answer == "name":
            pattern, template = re.compile(self.answer_from), self.answer_to

            def by_regex(name: str) -> str:
                match = pattern.search(name)
                return _absolute(_fill(template, match)) if match is not None else name

            return by_regex
        if self.answer != "auto":
            return None
        if self.kind == "suffix":
            return lambda n: n[: -len(target)] + source if n.endswith(target) else n
        if self.kind == "prefix":
            return lambda n: source + n[len(target) :] if n.startswith(target) else n
        if self.kind == "substring":
            return lambda n: n.replace(target, source)
        return lambda n: asked if n == rewritten else n  # exact, regex


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A question after the rules, and the reversals to apply to its answer (last rule first)."""

    name: Name
    qtype: int
    reverses: tuple[Reverse, ...]


@dataclass(frozen=True, slots=True)
class Rules:
    rules: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def name_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.field == "name")

    @property
    def rewritten_types(self) -> frozenset[int]:
        """Query types some ``type`` rule rewrites (their table entries must not be used)."""
        return frozenset(TYPE_CODES[rule.source] for rule in self.rules if rule.field == "type")

    def touches(self, name: Name) -> bool:
        """Whether some name rule matches ``name`` (its table entries must not be used)."""
        text = name_to_text(name)
        return any(rule.rewrite_name(text) is not None for rule in self.name_rules)

    def apply(self, name: Name, qtype: int) -> Rewritten | None:
        """The question to answer instead, or None when no rule changes it."""
        text = name_to_text(name)
        current_type = qtype
        reverses: list[Reverse] = []
        changed = False
        for rule in self.rules:
            if rule.field == "type":
                if current_type != TYPE_CODES[rule.source]:
                    continue
                current_type = TYPE_CODES[rule.target]
            else:
                rewritten = rule.rewrite_name(text)
                if rewritten is None or not _valid(rewritten):
                    continue
                reverse = rule.reverse(text, rewritten)
                if reverse is not None:
                    reverses.append(reverse)
                text = rewritten
            changed = True
            if rule.stop:
                break
        if not changed:
            return None
        return Rewritten(text_to_name(text), current_type, tuple(reversed(reverses)))


def _valid(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 254 and all(0 < len(label) <= 63 for label in labels)


def turn_back_wire(name: bytes, reverses: tuple[Reverse, ...]) -> bytes:
    """``turn_back`` for one uncompressed wire name (a forwarded answer's owners and targets)."""
    labels: list[str] = []
    offset = 0
    while name[offset]:
        length = name[offset]
        labels.append(name[offset + 1 : offset + 1 + length].decode("latin-1").lower())
        offset += 1 + length
    text = name_to_text(tuple(labels))
    for reverse in reverses:
        text = reverse(text)
    return dns.from_labels(text_to_name(text))


def turn_back(answer: dns.Answer, reverses: tuple[Reverse, ...]) -> dns.Answer:
    """Apply the reversals to owner names and name data in the answer and additional sections."""
    if not reverses:
        return answer

    def back(name: Name) -> Name:
        text = name_to_text(name)
        for reverse in reverses:
            text = reverse(text)
        return text_to_name(text)

    def record(rr: dns.RR) -> dns.RR:
        data = rr.data
        if rr.rtype in (dns.CNAME, dns.PTR, dns.NS) and isinstance(data, tuple):
            data = back(data)
        elif rr.rtype == dns.SRV and isinstance(data, tuple):
            data = (*data[:3], back(data[3]))
        elif rr.rtype == dns.MX and isinstance(data, tuple):
            data = (data[0], back(data[1]))
        return replace(rr, owner=back(rr.owner), data=data)

    def section(rrsets: tuple[dns.RRset, ...]) -> tuple[dns.RRset, ...]:
        return tuple(tuple(record(rr) for rr in rrset) for rrset in rrsets)

    return replace(answer, answer=section(answer.answer), additional=section(answer.additional))


def parse_rule(text: str) -> Rule:
    """One CoreDNS rule string (a leading ``rewrite`` is accepted, as copied from a Corefile)."""
    words = text.split()
    if words and words[0] == "rewrite":
        words = words[1:]
    stop = True
    if words and words[0] in ("stop", "continue"):
        stop = words[0] == "stop"
        words = words[1:]
    if not words or words[0] not in ("name", "type"):
        raise RewriteError("expected [stop|continue] name ... or type FROM TO")
    field, args = words[0], words[1:]
    if field == "type":
        if len(args) != 2 or not all(a.upper() in TYPE_CODES for a in args):
            raise RewriteError(f"type rules are FROM TO, each one of {', '.join(TYPE_CODES)}")
        return Rule(text, "type", "exact", args[0].upper(), args[1].upper(), stop)
    kind = "exact"
    if args and args[0] in MATCH_KINDS:
        kind, args = args[0], args[1:]
    if len(args) < 2:
        raise RewriteError("name rules need FROM and TO")
    source, target, rest = args[0], args[1], args[2:]
    if kind in ("exact", "suffix"):
        source, target = _absolute(source), _absolute(target)
    elif kind == "regex":
        _compile(source)
    else:
        source, target = source.lower(), target.lower()
    answer, answer_from, answer_to = "", "", ""
    if rest == ["answer", "auto"]:
        answer = "auto"
    elif len(rest) == 4 and rest[:2] == ["answer", "name"]:
        answer, answer_from, answer_to = "name", rest[2], rest[3]
        _compile(answer_from)
    elif rest:
        raise RewriteError(
            f"after FROM TO expected 'answer auto' or 'answer name FROM TO', got {' '.join(rest)!r}"
        )
    return Rule(text, "name", kind, source, target, stop, answer, answer_from, answer_to)


def _compile(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise RewriteError(f"bad regular expression {pattern!r}: {error}") from None
