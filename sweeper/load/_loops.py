"""Driving requests with the built-in client: a closed loop (N threads, each keeping one request
in flight) or an open loop (requests due on a schedule, sent by a pool of threads that grows while
they go out late). The built-in generator measures windows of these loops; both generators warm a
level up with them (``warm_up``).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

import numpy as np

from sweeper.errors import ConnectionLost, TrialError
from sweeper.launchers import Endpoints
from sweeper.load._client import connect, describe_failure
from sweeper.load._grpc import GrpcConnection
from sweeper.load._http import HttpConnection
from sweeper.vocabulary import Level

MAX_IN_FLIGHT = 256
"""The most requests the open loop keeps in flight; beyond it, due requests wait in the client
(their latency still counts from when they were due) and the run falls behind its schedule."""
# An open-loop run is behind its schedule when it sent less than this share of the requests due.
ON_SCHEDULE = 0.9
# A request sent this late makes the open loop add a thread (a few GIL switch intervals).
_LATE_NS = 2_000_000


class Worker(threading.Thread):
    """Keeps one request in flight, cycling through ``requests`` from ``offset``."""

    def __init__(self, send: Callable[[bytes], object], requests: list[bytes], offset: int, stop: threading.Event):
        super().__init__(daemon=True)
        self._send = send
        self._requests = requests
        self._offset = offset
        self._halt = stop
        self.ends: list[int] = []
        self.latencies: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        send, requests, count = self._send, self._requests, len(self._requests)
        ends, latencies, clock = self.ends, self.latencies, time.perf_counter_ns
        index = self._offset
        try:
            while not self._halt.is_set():
                request = requests[index % count]
                index += 1
                start = clock()
                send(request)
                end = clock()
                ends.append(end)
                latencies.append(end - start)
        except BaseException as exc:  # any failed request ends the measurement, with its message
            self.error = exc
            self._halt.set()


class Loop:
    """Threads driving one level, each on its own connection, until ``close``."""

    protocol: str
    level: Level
    timeout_s: float
    stop: threading.Event
    connections: list[HttpConnection | GrpcConnection]
    workers: list[Worker]

    def counts(self) -> tuple[int, int]:
        """Requests sent and due so far (a closed loop has no schedule: 0, 0)."""
        return 0, 0

    def check(self) -> None:
        """Raise TrialError if a request failed."""
        failed = next((w.error for w in list(self.workers) if w.error is not None), None)
        if failed is not None:
            what = f"{self.protocol} inference failed at {self.level.describe()}: "
            what += describe_failure(failed, self.timeout_s)
            lost = isinstance(failed, OSError) and not isinstance(failed, TimeoutError)
            raise (ConnectionLost if lost else TrialError)(what)

    def close(self) -> None:
        self.stop.set()
        for connection in list(self.connections):  # unblocks a worker waiting on a response
            _close_quietly(connection)
        for worker in list(self.workers):
            worker.join(timeout=self.timeout_s)


class _ClosedLoop(Loop):
    """``level.concurrency`` workers, each keeping one request in flight."""

    def __init__(self, protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, timeout_s: float):
        self.protocol, self.level, self.timeout_s = protocol, level, timeout_s
        self.stop = threading.Event()
        self.connections = [connect(protocol, endpoints, timeout_s) for _ in range(level.concurrency)]
        sends = [c.call if protocol == "grpc" else c.infer for c in self.connections]
        # Workers start at different samples, so concurrent requests carry different data.
        self.workers = [Worker(send, requests, index, self.stop) for index, send in enumerate(sends)]
        for worker in self.workers:
            worker.start()


class _Schedule:
    """When each request is due: every 1/rate s, or after exponential gaps (Poisson arrivals,
    seeded so that every configuration sees the same arrivals)."""

    def __init__(self, level: Level, seed: int = 0) -> None:
        self._gap_ns = 1e9 / level.request_rate
        self._rng = np.random.default_rng(seed) if level.arrival == "poisson" else None
        self._lock = threading.Lock()
        self._times = [float(time.perf_counter_ns())]
        self._claimed = 0

    def _add(self) -> None:
        gap = self._gap_ns if self._rng is None else self._rng.exponential(self._gap_ns)
        self._times.append(self._times[-1] + gap)

    def _extend_past(self, moment: float) -> None:
        while self._times[-1] <= moment:
            self._add()

    def claim(self) -> float:
        """The due time (perf_counter ns) of the next request nobody has taken."""
        with self._lock:
            while self._claimed >= len(self._times):
                self._add()
            due = self._times[self._claimed]
            self._claimed += 1
            return due

    def due(self) -> int:
        """How many requests were due by now, taken or not."""
        now = time.perf_counter_ns()
        with self._lock:
            self._extend_past(now)
            return bisect.bisect_right(self._times, now)


class _ScheduledWorker(threading.Thread):
    """Takes the next due request, waits for its time, sends it; latency from its due time."""

    def __init__(self, loop: _OpenLoop, send: Callable[[bytes], object], offset: int) -> None:
        super().__init__(daemon=True)
        self._loop, self._send, self._offset = loop, send, offset
        self.ends: list[int] = []
        self.latencies: list[int] = []
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        loop, send, clock = self._loop, self._send, time.perf_counter_ns
        requests, count, index = loop.requests, len(loop.requests), self._offset
        try:
            while not loop.stop.is_set():
                due = loop.schedule.claim()
                wait = (due - clock()) / 1e9
                if wait > 0 and loop.stop.wait(wait):
                    return
                if clock() - due > _LATE_NS:
                    loop.grow()
                self.sent += 1
                send(requests[index % count])
                index += 1
                end = clock()
                self.ends.append(end)
                self.latencies.append(int(end - due))
        except BaseException as exc:  # any failed request ends the measurement, with its message
            self.error = exc
            loop.stop.set()


class _OpenLoop(Loop):
    """Requests sent at ``level.request_rate`` on its schedule, by a pool that grows while they
    go out late (up to ``MAX_IN_FLIGHT`` threads, each with its own connection)."""

    def __init__(self, protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, timeout_s: float):
        self.protocol, self.level, self.timeout_s = protocol, level, timeout_s
        self.endpoints, self.requests = endpoints, requests
        self.stop = threading.Event()
        self.schedule = _Schedule(level)
        self.connections = []
        self.workers = []
        self._pool = threading.Lock()
        for _ in range(2):
            self.grow()

    def grow(self) -> None:
        """One more sending thread, unless the pool is full or the loop stopping."""
        with self._pool:
            if len(self.workers) >= MAX_IN_FLIGHT or self.stop.is_set():
                return
            connection = connect(self.protocol, self.endpoints, self.timeout_s)
            self.connections.append(connection)
            send = connection.call if self.protocol == "grpc" else connection.infer
            worker = _ScheduledWorker(self, send, len(self.workers))
            self.workers.append(worker)
        worker.start()

    def counts(self) -> tuple[int, int]:
        return sum(w.sent for w in list(self.workers)), self.schedule.due()


def start_loop(protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, timeout_s: float) -> Loop:
    """The loop that drives ``level``: closed for a concurrency, open for a request rate."""
    kind = _ClosedLoop if level.concurrency is not None else _OpenLoop
    return kind(protocol, endpoints, requests, level, timeout_s)


def warm_up(
    protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, seconds: float, timeout_s: float
) -> None:
    """Drive ``level`` for ``seconds``; raise TrialError if a request fails."""
    loop = start_loop(protocol, endpoints, requests, level, timeout_s)
    try:
        loop.stop.wait(seconds)
        loop.check()
    finally:
        loop.close()


def _close_quietly(connection: HttpConnection | GrpcConnection) -> None:
    try:
        connection.close()
    except OSError:
        pass
