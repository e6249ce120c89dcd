"""The built-in load generator, closed loop or open loop.

Closed loop (a concurrency): N threads, each keeping one pre-encoded request in flight. Open loop
(a request rate): requests are due on a schedule (constant gaps, or exponential ones for Poisson
arrivals); a pool of threads sends each when it is due and counts its latency from that time, so
a request that waits for a free thread (the server is behind) waits on the clock, as it would in
front of a real server (no coordinated omission). The pool grows while requests are sent late,
up to ``MAX_IN_FLIGHT``; a run whose sends fall behind the schedule is flagged.

Each thread owns one connection (HTTP/1.1 or HTTP/2 gRPC) and records the end time and the
latency of every request. After the warm-up, back-to-back windows run until the last three
agree (``stable_windows``); percentiles come from every sample of those three windows.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sweeper.errors import TrialError
from sweeper.launchers import Endpoints
from sweeper.load._base import LoadGenerator, Workload, server_times, statistics_of
from sweeper.load._client import connect, describe_failure
from sweeper.load._grpc import GrpcConnection
from sweeper.load._http import HttpConnection
from sweeper.record import LoadGeneratorInfo, Measurement, sweeper_version
from sweeper.vocabulary import Level

STABLE_WINDOWS = 3
WINDOW_GROWTH = (4, 16)
"""The window multiples tried, in turn, when no request ended within a window (a request longer
than ``load.window_s``, or a stall): a window without a sample says nothing of the level. The
same for both generators (perf_analyzer's own advice: "use a larger time window")."""
# A Python process whose threads used this much of a core is limited by its interpreter lock.
CLIENT_BOUND_CORES = 0.9
MAX_IN_FLIGHT = 256
"""The most requests the open loop keeps in flight; beyond it, due requests wait in the client
(their latency still counts from when they were due) and the run falls behind its schedule."""
# An open-loop run is behind its schedule when it sent less than this share of the requests due.
ON_SCHEDULE = 0.9
# A request sent this late makes the open loop add a thread (a few GIL switch intervals).
_LATE_NS = 2_000_000


class _Worker(threading.Thread):
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


@dataclasses.dataclass(frozen=True)
class Boundary:
    """A window edge: when, how many requests each worker had completed, how many had been sent
    and were due (open loop), CPU used, server stats."""

    at: float
    completed: tuple[int, ...]
    cpu: float
    stats: dict
    sent: int = 0
    due: int = 0


@dataclasses.dataclass(frozen=True)
class Run:
    """What ``run_until_stable`` observed: the window edges and every worker's samples."""

    boundaries: list[Boundary]
    stable: bool
    latencies_ns: np.ndarray
    """The samples of the last ``STABLE_WINDOWS`` windows."""


def _window(workers: list[_Worker], start: Boundary, end: Boundary) -> list[int]:
    samples: list[int] = []
    for index, worker in enumerate(workers[: len(end.completed)]):
        first = start.completed[index] if index < len(start.completed) else 0  # a thread added since
        samples += worker.latencies[first : end.completed[index]]
    return samples


def windows_agree(throughputs: list[float], latencies: list[float], tolerance: float) -> bool:
    """perf_analyzer's rule: max / min of the last windows' throughput, and of their mean
    latency, are each within ``1 + tolerance``."""
    return all(min(values) > 0 and max(values) / min(values) <= 1 + tolerance for values in (throughputs, latencies))


class _Loop:
    """Threads driving one level, each on its own connection, until ``close``."""

    protocol: str
    level: Level
    timeout_s: float
    stop: threading.Event
    connections: list[HttpConnection | GrpcConnection]
    workers: list[Any]

    def counts(self) -> tuple[int, int]:
        """Requests sent and due so far (a closed loop has no schedule: 0, 0)."""
        return 0, 0

    def check(self) -> None:
        """Raise TrialError if a request failed."""
        failed = next((w.error for w in list(self.workers) if w.error is not None), None)
        if failed is not None:
            what = describe_failure(failed, self.timeout_s)
            raise TrialError(f"{self.protocol} inference failed at {self.level.describe()}: {what}")

    def close(self) -> None:
        self.stop.set()
        for connection in list(self.connections):  # unblocks a worker waiting on a response
            _close_quietly(connection)
        for worker in list(self.workers):
            worker.join(timeout=self.timeout_s)


class _ClosedLoop(_Loop):
    """``level.concurrency`` workers, each keeping one request in flight."""

    def __init__(self, protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, timeout_s: float):
        self.protocol, self.level, self.timeout_s = protocol, level, timeout_s
        self.stop = threading.Event()
        self.connections = [connect(protocol, endpoints, timeout_s) for _ in range(level.concurrency)]
        sends = [c.call if protocol == "grpc" else c.infer for c in self.connections]
        # Workers start at different samples, so concurrent requests carry different data.
        self.workers = [_Worker(send, requests, index, self.stop) for index, send in enumerate(sends)]
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


class _OpenLoop(_Loop):
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


def _loop(protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, timeout_s: float) -> _Loop:
    kind = _ClosedLoop if level.concurrency is not None else _OpenLoop
    return kind(protocol, endpoints, requests, level, timeout_s)


def warm_up(
    protocol: str, endpoints: Endpoints, requests: list[bytes], level: Level, seconds: float, timeout_s: float
) -> None:
    """Drive ``level`` for ``seconds``; raise TrialError if a request fails."""
    loop = _loop(protocol, endpoints, requests, level, timeout_s)
    try:
        loop.stop.wait(seconds)
        loop.check()
    finally:
        loop.close()


def run_until_stable(
    protocol: str,
    endpoints: Endpoints,
    requests: list[bytes],
    level: Level,
    *,
    warmup_s: float,
    window_s: float,
    tolerance: float,
    max_windows: int,
    timeout_s: float,
    statistics: Callable[[], dict],
) -> Run:
    """Drive ``level`` until ``STABLE_WINDOWS`` windows agree (or ``max_windows`` were
    measured); a window in which no request ended starts the count again with longer windows
    (``WINDOW_GROWTH``); raise TrialError when a request fails."""
    loop = _loop(protocol, endpoints, requests, level, timeout_s)
    workers = loop.workers

    def boundary() -> Boundary:
        at = time.perf_counter()
        completed = tuple(len(worker.ends) for worker in list(workers))
        sent, due = loop.counts()
        return Boundary(at, completed, time.process_time(), statistics(), sent, due)

    try:
        loop.stop.wait(warmup_s)
        loop.check()
        boundaries = [boundary()]
        stable = False
        growth = iter(WINDOW_GROWTH)
        window = window_s
        while len(boundaries) <= max_windows:
            loop.stop.wait(window)
            loop.check()
            boundaries.append(boundary())
            if not _window(list(workers), boundaries[-2], boundaries[-1]):
                factor = next(growth, None)
                if factor is not None:  # start again from here, with longer windows
                    window, boundaries = window_s * factor, boundaries[-1:]
                    continue
            if len(boundaries) > STABLE_WINDOWS:
                last = boundaries[-STABLE_WINDOWS - 1 :]
                samples = [_window(workers, a, b) for a, b in zip(last, last[1:])]
                throughputs = [len(s) / (b.at - a.at) for s, a, b in zip(samples, last, last[1:])]
                means = [float(np.mean(s)) if s else 0.0 for s in samples]
                if windows_agree(throughputs, means, tolerance):
                    stable = True
                    break
    finally:
        loop.close()
    first, last = boundaries[-STABLE_WINDOWS - 1], boundaries[-1]
    return Run(boundaries, stable, np.asarray(_window(list(workers), first, last), dtype=np.int64))


def _close_quietly(connection: HttpConnection | GrpcConnection) -> None:
    try:
        connection.close()
    except OSError:
        pass


class BuiltinGenerator(LoadGenerator):
    """The built-in closed-loop client, held to perf_analyzer (benchmarks/load_fidelity.py)."""

    name = "builtin"

    def __init__(self, why: str = "load.generator: builtin") -> None:
        self._why = why

    @property
    def info(self) -> LoadGeneratorInfo:
        return LoadGeneratorInfo(self.name, sweeper_version())

    def describe(self) -> str:
        return self._why

    def measure_level(
        self,
        endpoints: Endpoints,
        protocol: str,
        workload: Workload,
        requests: list[bytes],
        level: Level,
        load: Any,
    ) -> Measurement:
        run = run_until_stable(
            protocol,
            endpoints,
            requests,
            level,
            warmup_s=load.warmup_s,
            window_s=load.window_s,
            tolerance=load.stability_tolerance,
            max_windows=load.max_windows,
            timeout_s=load.request_timeout_s,
            statistics=lambda: statistics_of(endpoints, workload),
        )
        return _measurement(run, level, workload.batch_size)


def _measurement(run: Run, level: Level, batch_size: int) -> Measurement:
    """The figures of the last ``STABLE_WINDOWS`` windows of a run: percentiles from every sample."""
    first, last = run.boundaries[-STABLE_WINDOWS - 1], run.boundaries[-1]
    elapsed = last.at - first.at
    samples = run.latencies_ns / 1e6
    if samples.size == 0:
        raise TrialError(
            f"no request completed in {elapsed:.1f} s at {level.describe()}",
            hint="raise load.window_s or load.request_timeout_s",
        )
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    client_cpu = (last.cpu - first.cpu) / elapsed
    scheduled = level.request_rate is not None
    behind = scheduled and (last.sent - first.sent) < ON_SCHEDULE * (last.due - first.due)
    return Measurement(
        concurrency=level.concurrency,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(samples.mean()),
        throughput=samples.size * batch_size / elapsed,
        **server_times(first.stats, last.stats),
        requests=int(samples.size),
        windows=len(run.boundaries) - 1,
        stable=run.stable,
        client_cpu=client_cpu,
        client_bound=client_cpu >= CLIENT_BOUND_CORES or behind,
        generator="builtin",
        request_rate=level.request_rate,
        arrival=level.arrival if scheduled else None,
        send_rate=(last.sent - first.sent) / elapsed if scheduled else None,
        behind_schedule=behind,
    )
