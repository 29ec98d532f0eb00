"""A real NSD (Debian ``nsd``) on 127.0.0.1 serving a test zone: an authoritative upstream.

``running_nsd(zone, text)`` writes the zone and a config into a temporary directory, starts
``nsd -d`` (foreground, so the test owns the process) on a free port, waits until it answers,
and stops it afterwards. Without the ``nsd`` binary the test is skipped with a reason.
``write_config(directory, zones, host, port)`` writes the same config for several zones on any
address, for a caller that starts NSD itself (tests/support/ndots.py, inside a namespace).

The config carries the pitfalls bench/run.py found:

* ``rrl-ratelimit: 0``: Debian builds NSD with response rate limiting on (200 qps per /24 and
  response class), which would drop replies in a burst of NXDOMAIN tests;
* ``minimal-responses: yes``: no NS/glue padding in positive answers, so sections are what the
  zone says;
* ``username: ""``, ``chroot: ""``: no privilege drop or chroot (a tmp dir outside it);
* pidfile, zonelistfile, xfrd state and the database all inside the tmp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.support.waiting import stop_process, wait_until

ZONE = "example.test"
ZONE_TEXT = """$ORIGIN example.test.
$TTL 300
@       3600 IN SOA ns1.example.test. hostmaster.example.test. 1 7200 1800 86400 60
@       IN NS   ns1.example.test.
ns1     IN A    192.0.2.53
www     IN A    192.0.2.1
www     IN AAAA 2001:db8::1
short   5    IN A    192.0.2.5
alias   IN CNAME www.example.test.
chain1  IN CNAME chain2.example.test.
chain2  IN CNAME www.example.test.
away    IN CNAME www.elsewhere.test.
_http._tcp.svc IN SRV 0 100 80 target.example.test.
target  IN A    192.0.2.80
txt     IN TXT  "hello world"
empty   IN TXT  "only txt here"
"""
"""The default test zone: SOA TTL 3600 with MINIMUM 60, so negative answers carry 60 s
(RFC 2308 §5: min(SOA TTL, MINIMUM)); a 5 s record; in-zone and out-of-zone CNAMEs; an SRV
whose target's address NSD adds as additional data."""

CONF = """server:
    ip-address: {host}
    port: {port}
    do-ip6: no
    server-count: 1
    verbosity: 0
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    hide-version: yes
    minimal-responses: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
"""
ZONE_CONF = """zone:
    name: "{zone}"
    zonefile: "{file}"
"""


def write_config(
    directory: Path, zones: Mapping[str, str], host: str = "127.0.0.1", port: int = 53
) -> Path:
    """Zone files and an ``nsd.conf`` in ``directory`` serving ``zones`` (name -> zone text) on
    ``host:port``; checked with ``nsd-checkconf``. The root zone is ``"."`` (file ``root.zone``)."""
    conf = CONF.format(host=host, port=port, dir=directory)
    for zone, text in zones.items():
        file = f"{zone.strip('.') or 'root'}.zone"
        (directory / file).write_text(text)
        conf += ZONE_CONF.format(zone=zone, file=file)
    path = directory / "nsd.conf"
    path.write_text(conf)
    check = subprocess.run(["nsd-checkconf", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nsd-checkconf rejected the config: {check.stderr}")
    return path


@dataclass
class RunningNSD:
    host: str
    port: int
    zone: str
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        parts = []
        for name in ("nsd.log", "stderr"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)


def nsd_missing_reason() -> str | None:
    """Why NSD tests cannot run here, or None if they can."""
    if shutil.which("nsd") is None or shutil.which("nsd-checkconf") is None:
        how = (
            "apt-get install nsd"
            if os.geteuid() == 0
            else "not root, so it cannot be installed here"
        )
        return f"nsd is not installed (Debian package nsd: {how})"
    return None


def _free_port() -> int:
    # NSD binds UDP and TCP on the same port: find one free for both.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for NSD")


@contextlib.contextmanager
def running_nsd(zone: str = ZONE, zone_text: str = ZONE_TEXT) -> Iterator[RunningNSD]:
    reason = nsd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="kdns-nsd-") as tmp:
        directory = Path(tmp)
        port = _free_port()
        conf = write_config(directory, {zone: zone_text}, port=port)
        with (directory / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                ["nsd", "-d", "-c", str(conf)],
                stdout=stderr,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        server = RunningNSD("127.0.0.1", port, zone, directory, process)
        try:
            probe = dns.message.make_query(f"{zone}.", "SOA")

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"nsd exited with {process.returncode}: {server.log()}")
                try:
                    dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.2)
                except (TimeoutError, OSError, dns.exception.Timeout):
                    return False
                return True

            wait_until(answers, timeout=10, message="nsd answers its zone's SOA")
            yield server
        finally:
            stop_process(process)
