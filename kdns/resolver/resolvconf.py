"""Reading a resolv.conf: the node's nameservers (default upstreams) and search domains.

Only the lines we use are read (``nameserver``, ``search``, ``domain``); the rest of resolv.conf
(options, sortlist) does not change where we forward. Unparseable nameserver lines are skipped
with their reason, as glibc does.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def parse(text: str) -> ResolvConf:
    nameservers: list[str] = []
    search: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, *values = line.split()
        if key == "nameserver" and values:
            try:
                nameservers.append(str(ipaddress.ip_address(values[0].split("%", 1)[0])))
            except ValueError:
                logger.warning("resolv.conf: skipping nameserver %r: not an IP address", values[0])
        elif key in ("search", "domain"):
            search = [v.rstrip(".").lower() for v in values]  # the last one wins, as in glibc
    return ResolvConf(tuple(nameservers), tuple(search))


def read(path: str | Path) -> ResolvConf:
    """Parse ``path``; a missing file means no nameservers (the caller decides what that means)."""
    try:
        return parse(Path(path).read_text())
    except OSError as error:
        logger.warning("cannot read %s: %s", path, error.strerror)
        return ResolvConf()
