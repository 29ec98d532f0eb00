"""Per-route capacity: each route's own workers, queue of fetches, limits and counters.

With one pool shared by every route, a slow or dead upstream for one zone fills every worker
and the queue with its fetches, and every other zone's names wait behind them (issue 11: with
external replies taking 1 s, a 0.3 s burst of 1,000 unique external names left cluster names
unanswered for 31 s). A ``Lane`` is one route's share, and nothing it does touches another's:

* **workers**: at most ``workers`` of the route's fetches run at once (each blocks on its
  upstream for up to the upstream's ``overall_timeout_s``): the route's in-flight bound. A
  worker is one task on the lane's executor, one fetch per task.
* **waiting clients**: at most ``max_pending`` client queries wait on the route (queued for a
  worker or in flight, joined fetches included). The next one is refused at once
  (``admit`` returns False; the resolver answers it SERVFAIL, or stale) and counted
  (``overflows``): never queued behind the others.
* **queue age**: a client query that has waited more than ``max_queue_wait_s`` for a worker is
  dropped (``Waiter.drop``, counted in ``expired``), and a fetch whose waiters have all been
  dropped is not run (``abandoned``): its clients have given up on that try or asked again,
  and answering them late would only cost the upstream time the fresh queries behind need.
  Expired queries at the head of the queue are also dropped when a full lane is asked to
  admit one more, so a queue of dead queries never refuses a live one.
* **refreshes** (prefetches and serve-stale ``immediate`` refreshes: no client waits on them)
  have a budget of their own: at most ``max_refreshes`` queued or running per route, and never
  all the workers (one is always left to clients). A worker takes a refresh only when no
  client fetch is queued, and a refresh over the budget is skipped (``refreshes_skipped``):
  the entry stays as it is, and its next client query asks again. A client query that joins
  a queued refresh turns it into a client fetch (queued and aged as one).

The lane is bookkeeping under its own lock with an injected clock; what a fetch does is the
caller's ``Job.run``, and threads come from the executor (a ``ThreadPoolExecutor`` of
``workers`` threads per lane in production; an inline, hand-run or simulated one in tests).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from kdns.resolver.reasons import Reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """One route's capacity (``ResolverConfig`` documents the defaults and why)."""

    workers: int = 32
    max_pending: int = 1024
    max_queue_wait_s: float = 2.0
    max_refreshes: int = 4

    @property
    def refresh_budget(self) -> int:
        """Refreshes queued or running at once: ``max_refreshes``, leaving one worker free."""
        return max(0, min(self.max_refreshes, self.workers - 1))


@dataclass(slots=True)
class LaneStats:
    """Counters (monotonic) of one route's lane, for metrics."""

    fetches: int = 0
    """Fetches the lane's workers ran."""
    overflows: int = 0
    """Client queries refused at once: ``max_pending`` were already waiting on the route."""
    expired: int = 0
    """Client queries dropped after waiting more than ``max_queue_wait_s`` for a worker."""
    abandoned: int = 0
    """Queued fetches not run because every client waiting on them had been dropped."""
    refreshes_skipped: int = 0
    """Prefetches and stale refreshes not started: the route's refresh budget was in use."""


class Waiter(Protocol):
    """A client query waiting on a queued fetch."""

    @property
    def arrived(self) -> float: ...

    def drop(self) -> None:
        """It waited too long: settle it without an answer (called once, outside the lock)."""


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(eq=False, slots=True)
class Job:
    """One fetch for a lane: ``run`` does it; ``cancel(reason)`` settles it without running
    (every waiter expired: ``expired``; the resolver closed: ``closed``)."""

    run: Callable[[], None]
    cancel: Callable[[Reason], None]
    background: bool
    """A refresh: no client waits on it (yet)."""
    queued_at: float
    waiters: list[Waiter] = field(default_factory=list)
    state: _State = _State.QUEUED


class Joined(enum.Enum):
    """What ``Lane.join`` did with a waiter."""

    QUEUED = "queued"
    """The fetch is queued: the waiter is aged with it."""
    RUNNING = "running"
    """The fetch already runs (or ran): the waiter just waits for its result."""
    GONE = "gone"
    """The fetch was cancelled: start a new one."""


class Lane:
    """One route's capacity. Thread-safe."""

    def __init__(
        self,
        name: str,
        limits: LaneLimits,
        executor: Executor,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.limits = limits
        self.executor = executor
        self.clock = clock
        self.stats = LaneStats()
        self._lock = threading.Lock()
        self._clients: deque[Job] = deque()
        self._refreshes: deque[Job] = deque()
        self._waiting = 0
        self._busy = 0
        """Workers claimed: running a job, or submitted to the executor and about to take one."""
        self._running = 0
        self._refreshing = 0
        """Refreshes queued or running (against the refresh budget)."""
        self._closed = False

    # --- gauges ----------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Client queries waiting on the route (queued or in flight)."""
        return self._waiting

    @property
    def queued(self) -> int:
        """Fetches waiting for a worker."""
        return len(self._clients) + len(self._refreshes)

    @property
    def busy(self) -> int:
        """Workers running (or about to run) a fetch."""
        return self._busy

    # --- client slots ------------------------------------------------------------------------

    def admit(self) -> bool:
        """Take a slot for one more waiting client query; False (counted) if the route is
        full. A full route first drops the expired queries at the head of its queue."""
        cancelled: list[Job] = []
        dropped: list[Waiter] = []
        with self._lock:
            if self._waiting < self.limits.max_pending:
                self._waiting += 1
                return True
            self._expire_locked(self.clock(), cancelled, dropped)
        self._settle(cancelled, dropped)  # the dropped give their slots back
        with self._lock:
            if self._waiting < self.limits.max_pending:
                self._waiting += 1
                return True
            self.stats.overflows += 1
            return False

    def release(self) -> None:
        """Give back a slot taken by ``admit`` (the query got its reply, or was dropped)."""
        with self._lock:
            self._waiting -= 1

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, job: Job) -> bool:
        """Queue ``job`` and start a worker if one is free; False (a refresh over budget,
        counted, or a closed lane) if it was not queued."""
        with self._lock:
            if self._closed:
                return False
            if job.background:
                if self._refreshing >= self.limits.refresh_budget:
                    self.stats.refreshes_skipped += 1
                    return False
                self._refreshing += 1
                self._refreshes.append(job)
            else:
                self._clients.append(job)
            start = self._claim_worker()
        if start:
            self._start_worker()
        return True

    def join(self, job: Job, waiter: Waiter) -> Joined:
        """Add a client query to ``job``. A queued refresh becomes a client fetch."""
        start = False
        with self._lock:
            if job.state is _State.QUEUED:
                job.waiters.append(waiter)
                if job.background:
                    self._refreshes.remove(job)
                    self._refreshing -= 1
                    job.background = False
                    self._clients.append(job)
                    start = self._claim_worker()
                result = Joined.QUEUED
            elif job.state is _State.CANCELLED:
                result = Joined.GONE
            else:
                result = Joined.RUNNING
        if start:
            self._start_worker()
        return result

    def expire(self) -> int:
        """Drop every queued client query that has waited too long (the resolver calls this a
        few times per ``max_queue_wait_s``: with every worker stuck on a dead upstream, no
        worker would take, and so drop, them for a while). Returns how many were dropped."""
        cancelled: list[Job] = []
        dropped: list[Waiter] = []
        with self._lock:
            self._expire_locked(self.clock(), cancelled, dropped)
        self._settle(cancelled, dropped)
        return len(dropped)

    def close(self) -> list[Job]:
        """Stop taking jobs; the queued ones are returned (cancelled ``closed``)."""
        with self._lock:
            self._closed = True
            jobs = [*self._clients, *self._refreshes]
            self._clients.clear()
            self._refreshes.clear()
            for job in jobs:
                job.state = _State.CANCELLED
        for job in jobs:
            job.cancel(Reason.CLOSED)
        return jobs

    # --- workers -----------------------------------------------------------------------------

    def _claim_worker(self) -> bool:
        """Under the lock: reserve a worker if one is free and queued work has none yet."""
        idle = self._busy - self._running
        if self._busy < self.limits.workers and idle < self._startable():
            self._busy += 1
            return True
        return False

    def _startable(self) -> int:
        """Under the lock: queued jobs a worker may take now (refreshes within the budget)."""
        running_refreshes = self._refreshing - len(self._refreshes)
        room = max(0, self.limits.refresh_budget - running_refreshes)
        return len(self._clients) + min(len(self._refreshes), room)

    def _start_worker(self) -> None:
        try:
            self.executor.submit(self._work)
        except RuntimeError:  # the executor was shut down: the resolver is closing
            with self._lock:
                self._busy -= 1
            self.close()

    def _work(self) -> None:
        """One worker turn: the next job, run; then the next turn if there is queued work."""
        job = self._take()
        if job is None:
            return
        try:
            job.run()
        except Exception:
            logger.exception("a fetch on route %s failed", self.name)
        with self._lock:
            job.state = _State.DONE
            self._running -= 1
            if job.background:
                self._refreshing -= 1
            # Keep this worker if queued work has no other claimed worker to take it.
            again = self._busy - self._running <= self._startable()
            if not again:
                self._busy -= 1
        if again:
            self._start_worker()

    def _take(self) -> Job | None:
        """The next job for a worker: a client fetch first (its expired waiters dropped, and
        skipped if none is left), else a refresh within the budget. None frees the worker."""
        cancelled: list[Job] = []
        dropped: list[Waiter] = []
        now = self.clock()
        job = None
        with self._lock:
            while self._clients:
                candidate = self._clients.popleft()
                if self._shed(candidate, now, dropped):
                    job = candidate
                    break
                self._abandon(candidate, cancelled)
            if job is None and self._startable():
                job = self._refreshes.popleft()
            if job is None:
                self._busy -= 1
            else:
                job.state = _State.RUNNING
                self._running += 1
                self.stats.fetches += 1
        self._settle(cancelled, dropped)
        return job

    def _expire_locked(self, now: float, cancelled: list[Job], dropped: list[Waiter]) -> None:
        """Under the lock: drop the queued client queries that have waited too long, oldest
        first, and the fetches left with none. The queue is (to within the microseconds two
        threads may race by) in order of each fetch's first waiter, so this stops at the first
        fetch whose first waiter is live: O(what it drops). What it misses, a worker's ``_take``
        or the next sweep drops."""
        max_wait = self.limits.max_queue_wait_s
        kept: list[Job] = []
        clients = self._clients
        while clients and now - clients[0].waiters[0].arrived > max_wait:
            job = clients.popleft()
            if self._shed(job, now, dropped):
                kept.append(job)  # a retry joined it: it stays, at the front
            else:
                self._abandon(job, cancelled)
        clients.extendleft(reversed(kept))

    def _shed(self, job: Job, now: float, dropped: list[Waiter]) -> bool:
        """Under the lock: move ``job``'s waiters that waited too long to ``dropped``
        (counted); whether any is left."""
        max_wait = self.limits.max_queue_wait_s
        live = [waiter for waiter in job.waiters if now - waiter.arrived <= max_wait]
        if len(live) != len(job.waiters):
            gone = [waiter for waiter in job.waiters if now - waiter.arrived > max_wait]
            dropped.extend(gone)
            self.stats.expired += len(gone)
            job.waiters = live
        return bool(live)

    def _abandon(self, job: Job, cancelled: list[Job]) -> None:
        """Under the lock: ``job`` will not run (cancelled outside the lock, by ``_settle``)."""
        job.state = _State.CANCELLED
        self.stats.abandoned += 1
        cancelled.append(job)

    def _settle(self, cancelled: list[Job], dropped: list[Waiter]) -> None:
        """Outside the lock: tell dropped waiters, then cancel abandoned fetches."""
        for waiter in dropped:
            try:
                waiter.drop()
            except Exception:
                logger.exception("dropping a waiting query failed")
        for job in cancelled:
            job.cancel(Reason.EXPIRED)
