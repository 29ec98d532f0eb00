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
    skipped: tuple[str, ...] = ()
    """Nameserver entries that cannot be used, each with why (``"x (not an IP address)"``)."""


def parse(text: str) -> ResolvConf:
    """Nameservers in file order (all of them, as CoreDNS's ``forward . /etc/resolv.conf``; glibc
    reads three), and the search list. Link-local IPv6 with a zone (``fe80::1%eth0``) cannot be
    used from a socket address tuple without its scope id, so it is skipped with a reason."""
    nameservers: list[str] = []
    search: list[str] = []
    skipped: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, *values = line.split()
        if key == "nameserver" and values:
            address = values[0]
            if "%" in address:
                skipped.append(f"{address} (link-local with a zone index)")
                continue
            try:
                ipaddress.ip_address(address)
            except ValueError:
                skipped.append(f"{address} (not an IP address)")
                continue
            nameservers.append(address)
        elif key in ("search", "domain"):
            search = [v.rstrip(".").lower() for v in values]  # the last one wins, as in glibc
    return ResolvConf(tuple(nameservers), tuple(search), tuple(skipped))


def read(path: str | Path) -> ResolvConf:
    """Parse ``path``, logging unusable entries; a missing file means no nameservers (the caller
    decides what that means)."""
    try:
        conf = parse(Path(path).read_text())
    except OSError as error:
        logger.warning("cannot read %s: %s", path, error.strerror)
        return ResolvConf()
    for entry in conf.skipped:
        logger.warning("%s: skipping nameserver %s", path, entry)
    return conf
