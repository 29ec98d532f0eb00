"""The cache's own plumbing loop: rules only once our listener answers, then re-ensured.

As NodeLocal does (../shared/docs/nodecache.md §1.2, "startup guard"), the interface is made
before the listeners bind (they bind its IPs), but the iptables rules, which take the node's
DNS traffic over, go in only once a real query to our own listener is answered: a cache that
fails to start never captures DNS. After that both are re-ensured every ``--sync-interval``
(something may delete them: an iptables restore, a network agent), each time after the probe
passes again. A failing probe removes nothing here: that is the guard's job, and the two
reconcile from the same data, so they cannot fight over the result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from nodecache.node.plumbing import Plumbing

logger = logging.getLogger(__name__)

FIRST_PROBE_RETRY_S: Final = 0.5
"""Until the first install, how soon a failed self-probe is retried."""


class NodeSync:
    """Runs ``tick`` on a thread: at once, then every ``interval_s`` (``FIRST_PROBE_RETRY_S``
    until the rules are first in)."""

    def __init__(self, plumbing: Plumbing, answers: Callable[[], bool], interval_s: float) -> None:
        self.plumbing = plumbing
        self.answers = answers
        self.interval_s = interval_s
        self.installed = False
        """Whether the rules have gone in at least once."""
        self.ticks = 0
        self._failing = False
        """In a streak of unanswered self-probes (warned once per streak, not every tick)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-sync", daemon=True)

    def tick(self) -> bool:
        """Ensure the interface; if our listener answers, ensure the rules. True if both."""
        self.ticks += 1
        ok = self.plumbing.ensure_interface()
        if not self.answers():
            if not self._failing:
                logger.warning("our listener does not answer; iptables rules left as they are")
            self._failing = True
            return False
        if self._failing:
            logger.info("our listener answers again")
        self._failing = False
        ok &= self.plumbing.ensure_rules()
        if ok and not self.installed:
            logger.info(
                "listener answers: node plumbing in place (%d rules, interface %s)",
                len(self.plumbing.rules) if self.plumbing.setup_iptables else 0,
                self.plumbing.interface if self.plumbing.setup_interface else "off",
            )
            self.installed = True
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug here must not stop the loop (or DNS)
                logger.exception("node plumbing sync failed")
            self._stop.wait(self.interval_s if self.installed else FIRST_PROBE_RETRY_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (waiting for a tick in progress), so nothing reinstalls after."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
