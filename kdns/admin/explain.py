"""``explain``: one lookup, the variants beside it, and the fix to suggest.

``explain(name, options, libc, answerers)`` runs the lookup as typed, then the same name with a
trailing dot, then each other variant the caller offers (nodecache: absorption off), each on a
fresh answerer (a cold cache), plus the as-typed lookup once more on its warm answerer. The
suggestions are computed, not guessed: each is a real lookup with the fix applied, kept only
when fewer queries are sent (or, as many sent, fewer leave the node) and the
application gets the same addresses.

* **FQDN**: the candidate that found the addresses, with a trailing dot.
* **ndots**: for a name with 2 or more dots found as typed, ``ndots: 2`` in the pod's
  ``dnsConfig.options`` (names with one dot, ``svc.ns``, keep searching).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from kdns.admin import libc, lookup
from kdns.admin.libc import ResolverOptions
from kdns.admin.lookup import Lookup

AS_TYPED = "as typed"
TRAILING_DOT = "trailing dot"
WARM = "again, warm"


@dataclass(frozen=True, slots=True)
class Suggestion:
    text: str
    lookup: Lookup


@dataclass(frozen=True, slots=True)
class Explanation:
    name: str
    libc: str
    options: ResolverOptions
    server: str
    """What answers the pod: ``nodecache`` (absorption on), ``kdns``, or a live address."""
    lookups: tuple[Lookup, ...]
    """As typed first, then the variants; the warm repeat last."""
    suggestions: tuple[Suggestion, ...]

    @property
    def main(self) -> Lookup:
        return self.lookups[0]


def explain(
    name: str,
    options: libc.ResolverOptions,
    libc_name: str,
    server: str,
    answerer: Callable[[], lookup.Answerer],
    variants: Mapping[str, Callable[[], lookup.Answerer]] = {},
    warm: bool = True,
) -> Explanation:
    """See the module docstring. ``answerer`` makes a fresh answerer for the server as
    configured; ``variants`` maps a label to a maker of another one."""
    first = answerer()
    main = lookup.run(name, options, libc_name, first, AS_TYPED)
    lookups = [main]
    if not name.endswith("."):
        lookups.append(lookup.run(name + ".", options, libc_name, answerer(), TRAILING_DOT))
    for label, make in variants.items():
        lookups.append(lookup.run(name, options, libc_name, make(), label))
    if warm:
        lookups.append(lookup.run(name, options, libc_name, first, WARM))
    return Explanation(
        name, libc_name, options, server, tuple(lookups), _suggest(main, options, answerer)
    )


def _suggest(
    main: Lookup, options: libc.ResolverOptions, answerer: Callable[[], lookup.Answerer]
) -> tuple[Suggestion, ...]:
    if main.name.endswith(".") or not main.addresses:
        return ()
    last = main.steps[-1]
    # An autopath answer names what the node found: that is the name to ask for.
    autopath = next((q.cname for q in (last.a, last.aaaa) if q.how == "autopath"), "")
    found = autopath or last.candidate
    tried: list[Suggestion] = []
    fqdn = lookup.run(found, options, main.libc, answerer(), f"FQDN {found}")
    tried.append(Suggestion(f"ask for {found} (the FQDN, with the trailing dot)", fqdn))
    dots = main.name.count(".")
    if dots >= 2 and found == main.name + "." and options.ndots > 2:
        fewer = replace(options, ndots=2)
        ndots = lookup.run(main.name, fewer, main.libc, answerer(), "ndots 2")
        tried.append(
            Suggestion(
                'set dnsConfig: {options: [{name: ndots, value: "2"}]} in the pod spec '
                "(names with 2 or more dots are then tried as typed first)",
                ndots,
            )
        )
    return tuple(
        s
        for s in tried
        if s.lookup.addresses == main.addresses
        and (s.lookup.queries_sent, s.lookup.queries_left) < (main.queries_sent, main.queries_left)
    )
