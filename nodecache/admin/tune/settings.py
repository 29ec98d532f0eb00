"""What ``tune`` sweeps: cache sizes and TTL policies, from flags, each error naming the flag.

* ``--sizes 1000,5000,20000``: ``cache.max_entries`` values. Default: ``DEFAULT_SIZES`` up to
  the first one that holds every distinct question of the log (larger ones change nothing).
* ``--ttl FLOOR:CAP`` (repeatable): a policy that floors and caps every answer, positive and
  negative, in every zone at FLOOR and CAP seconds. The config's own policy (nodecache's
  defaults, or ``--config``: success 5-30 s, cluster denials 5 s, other denials 5-30 s) is
  always the first, labelled ``config``. Default extra policies: ``DEFAULT_POLICIES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kdns.resolver import policy
from kdns.resolver.config import ResolverConfig, ZoneTTL
from kdns.resolver.core import ttl_policy_for
from nodecache.admin.tune.replay import Setting

DEFAULT_SIZES: Final = (100, 300, 1000, 3000, 10_000, 20_000, 50_000, 100_000, 300_000)
DEFAULT_POLICIES: Final = ("5:60", "5:300", "30:300")
CONFIG_LABEL: Final = "config"
MAX_TTL_S: Final = 86_400


class SettingsError(ValueError):
    """A bad ``--sizes`` or ``--ttl`` value (the message names the flag)."""


def parse_sizes(text: str | None, distinct: int) -> tuple[int, ...]:
    if text is None:
        sizes: list[int] = []
        for size in DEFAULT_SIZES:
            sizes.append(size)
            if size >= distinct:
                break
        return tuple(sizes)
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SettingsError(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise SettingsError(f"--sizes: expected sizes of at least 1, got {text!r}")
    return tuple(values)


def parse_policy(text: str) -> tuple[int, int]:
    floor_text, sep, cap_text = text.partition(":")
    try:
        floor, cap = int(floor_text), int(cap_text)
    except ValueError:
        floor = cap = -1
    if not sep or not 0 <= floor <= cap <= MAX_TTL_S:
        raise SettingsError(
            f"--ttl: expected FLOOR:CAP seconds with 0 <= FLOOR <= CAP <= {MAX_TTL_S}, got {text!r}"
        )
    return floor, cap


def settings(
    sizes: Sequence[int], policies: Sequence[str], config: ResolverConfig
) -> list[Setting]:
    """Every size under the config's policy, then under each ``FLOOR:CAP`` policy."""
    made: list[tuple[str, policy.TTLPolicy, int | None]] = [
        (CONFIG_LABEL, ttl_policy_for(config), None)
    ]
    for text in dict.fromkeys(policies):
        floor, cap = parse_policy(text)
        limits = ZoneTTL(floor, cap, floor, cap)
        zones = [(zone, limits) for zone, _ in config.zone_ttls()]
        made.append((f"{floor}:{cap}", policy.TTLPolicy(zones, limits), cap))
    return [
        Setting(size, label, ttl_policy, cap) for label, ttl_policy, cap in made for size in sizes
    ]
