"""kdns and nodecache as real processes (``python -m kdns|nodecache serve``) on 127.0.0.1:0,
with the ports they report in their log: ``program`` starts one and stops it afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query

from tests.support.waiting import stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-cluster.yaml"


@dataclass
class Program:
    name: str
    process: subprocess.Popen[str]
    log: list[str]
    dns_port: int
    metrics_port: int

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())

    def query(self, name: str, transport: str = "udp") -> dns.message.Message:
        message = dns.message.make_query(name, "A")
        ask = dns.query.udp if transport == "udp" else dns.query.tcp
        return ask(message, "127.0.0.1", port=self.dns_port, timeout=5)

    def health_port(self) -> int:
        for line in list(self.log):
            if match := re.search(r"health on \S*127\.0\.0\.1:(\d+)", line):
                return int(match.group(1))
        raise AssertionError(f"no health port in {self.log}")

    def query_log(self, **settings: str) -> dict[str, Any]:
        """POST /querylog with ``settings`` (none: GET); the JSON status it answers."""
        url = f"http://127.0.0.1:{self.health_port()}/querylog"
        data = None
        if settings:
            url += "?" + urllib.parse.urlencode(settings)
            data = b""
        with urllib.request.urlopen(url, data=data, timeout=5) as response:
            return dict(json.load(response))


@dataclass
class Launched:
    """A running ``python -m NAME serve ...`` and the log lines it has written so far."""

    name: str
    process: subprocess.Popen[str]
    log: list[str]

    def port(self, pattern: str, timeout: float = 20) -> int:
        """Wait for the port the log reports (``pattern``'s group 1)."""

        def reported() -> int:
            if self.process.poll() is not None:  # not an AssertionError: wait_until stops at once
                raise RuntimeError(
                    f"{self.name} exited {self.process.returncode}: {''.join(self.log)}"
                )
            for line in list(self.log):
                if match := re.search(pattern, line):
                    return int(match.group(1))
            return 0

        return wait_until(reported, timeout=timeout, message=f"{pattern} in {self.log}")


@contextlib.contextmanager
def launched(name: str, *args: str, kill: bool = False) -> Iterator[Launched]:
    """``python -m NAME serve ARGS`` from the repository root, its stderr collected line by
    line; stopped afterwards with SIGTERM (or SIGKILL with ``kill``: no drain to wait for)."""
    command = [sys.executable, "-m", name, "serve", *args]
    process = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    log: list[str] = []
    stderr = process.stderr
    threading.Thread(target=lambda: log.extend(iter(stderr.readline, "")), daemon=True).start()
    try:
        yield Launched(name, process, log)
    finally:
        if kill and process.poll() is None:
            process.kill()
        stop_process(process)


@contextlib.contextmanager
def program(name: str, *args: str) -> Iterator[Program]:
    with launched(name, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
                  "--metrics-listen", "127.0.0.1:0", *args) as started:  # fmt: skip
        dns_port = started.port(r"serving on 127\.0\.0\.1:(\d+)")
        metrics_port = started.port(r"metrics on \S*127\.0\.0\.1:(\d+)", timeout=5)
        yield Program(name, started.process, started.log, dns_port, metrics_port)
