"""A kdns server on the live source, as ``kdns serve`` builds it, for ``bench/scale.py``.

It wires what ``kdns serve --kubeconfig PATH`` does without going through the CLI (whose live
source wiring is done separately): ``load_api_client`` -> ``Runtime(synced=False)`` ->
``Responder`` -> a UDP server on 127.0.0.1:0 -> ``WatchSource``. It runs as its own process so
that resident memory is measured honestly, and speaks one JSON object per line on stdout:

* ``{"event": "imported", ...}`` right after the imports (RSS then: the libraries' share);
* ``{"event": "listening", "port": N}`` once the UDP socket is bound;
* ``{"event": "synced", ...}`` after every initial list is in a published table and a full
  ``gc.collect()`` (the figures the benchmark reports).

``--store-only`` isolates the watcher's own cost: the informers feed a bare ``Store`` (no
answer table is ever built, no DNS is served), so sync time and memory are those of
list + convert + store alone.

It exits when stdin closes (the benchmark's end), stopping the watchers first.

Usage: python bench/scale_server.py --kubeconfig PATH [--store-only] [--page-size N]
                                    [--log-level WARNING]
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402

from kdns.config import ZoneConfig  # noqa: E402
from kdns.runtime import Runtime  # noqa: E402
from kdns.serve.protocol import Responder  # noqa: E402
from kdns.serve.udp import UDPServer, bind_udp  # noqa: E402
from kdns.state import Store  # noqa: E402
from kdns.watch import WatchSettings, WatchSource, load_api_client  # noqa: E402

IMPORTED = time.monotonic()


def rss_kb(field: str = "VmRSS") -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else -1


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class StoreSink:
    """Applies changes to a bare Store at once, in the submitting thread (no table)."""

    def __init__(self) -> None:
        self.store = Store(ZoneConfig())
        self.store.synced = False
        self.lock = threading.Lock()

    def submit(self, change: Callable[[Store], None]) -> int:
        with self.lock:
            change(self.store)
        return 0

    def flush(self, timeout: float = 10.0) -> bool:
        return True


def store_only(args: argparse.Namespace) -> int:
    client = load_api_client(args.kubeconfig, None, os.environ)
    sink = StoreSink()
    emit(event="listening", port=0)
    settings = WatchSettings(page_size=args.page_size)
    source = WatchSource(client, sink, namespaces=None, pods=False, settings=settings)
    source.start()
    synced = source.wait_synced(args.sync_timeout)
    synced_at = time.monotonic()
    gc.collect()
    before_trim = rss_kb()
    if os.environ.get("KDNS_BENCH_TRIM"):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    store = sink.store
    emit(
        event="synced",
        ok=synced,
        seconds=synced_at - STARTED,
        seconds_after_imports=synced_at - IMPORTED,
        rss_kb=rss_kb(),
        hwm_kb=rss_kb("VmHWM"),
        services=len(store.services),
        slices=len(store.slices),
        endpoints=sum(len(s.endpoints) for s in store.slices.values()),
        rss_before_trim_kb=before_trim,
    )
    sys.stdin.read()
    source.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--sync-timeout", type=float, default=120.0)
    parser.add_argument("--store-only", action="store_true")
    parser.add_argument("--page-size", type=int, default=WatchSettings().page_size)
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    emit(event="imported", seconds=IMPORTED - STARTED, rss_kb=rss_kb())
    if args.store_only:
        return store_only(args)

    client = load_api_client(args.kubeconfig, None, os.environ)
    responder = Responder(1232)
    runtime = Runtime(ZoneConfig(), responder, synced=False)
    runtime.replace([])  # an empty, unsynced table: SERVFAIL instead of NXDOMAIN until synced
    sock = bind_udp("127.0.0.1", 0)
    udp = UDPServer(sock, responder.answer, fast_path=responder.fast_path)
    udp.start()
    emit(event="listening", port=sock.getsockname()[1])

    settings = WatchSettings(page_size=args.page_size)
    source = WatchSource(client, runtime, namespaces=None, pods=False, settings=settings)
    source.start()
    synced = source.wait_synced(args.sync_timeout)
    synced_at = time.monotonic()
    store = runtime.store
    gc.collect()
    emit(
        event="synced",
        ok=synced,
        seconds=synced_at - STARTED,
        seconds_after_imports=synced_at - IMPORTED,
        rss_kb=rss_kb(),
        hwm_kb=rss_kb("VmHWM"),
        services=len(store.services),
        slices=len(store.slices),
        endpoints=sum(len(s.endpoints) for s in store.slices.values()),
        last_publish_ms=runtime.last_publish_s * 1000,
        lists={i.name: i.stats.pages for i in source.informers},
    )
    sys.stdin.read()  # until the benchmark closes our stdin
    emit(
        event="stopping",
        rss_kb=rss_kb(),
        hwm_kb=rss_kb("VmHWM"),
        last_publish_ms=runtime.last_publish_s * 1000,
        status=source.status(),
    )
    source.stop()
    udp.stop()
    runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
