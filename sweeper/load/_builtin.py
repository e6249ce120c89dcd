"""The built-in load generator, closed loop or open loop.

Closed loop (a concurrency): N threads, each keeping one pre-encoded request in flight. Open loop
(a request rate): requests are due on a schedule (constant gaps, or exponential ones for Poisson
arrivals); a pool of threads sends each when it is due and counts its latency from that time, so
a request that waits for a free thread (the server is behind) waits on the clock, as it would in
front of a real server (no coordinated omission). The pool grows while requests are sent late,
up to ``MAX_IN_FLIGHT``; a run whose sends fall behind the schedule is flagged.

Each thread owns one connection (HTTP/1.1 or HTTP/2 gRPC) and records the end time and the
latency of every request. After the warm-up, back-to-back windows run until the last three
agree (``stable_windows``); percentiles come from every sample of those three windows. A load a
capacity search judges (``Tail``) is measured on, window after window pooled with those three,
while its percentile's interval straddles the budget, up to ``MORE_SAMPLES`` times the samples
the percentile needs and at most ``max_windows`` windows more (``sweeper.load._tail``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from sweeper.errors import TrialError
from sweeper.launchers import Endpoints
from sweeper.load._base import (
    CLIENT_BOUND_CORES,
    WINDOW_GROWTH,
    LoadGenerator,
    Workload,
    server_times,
    statistics_of,
)
from sweeper.load._loops import ON_SCHEDULE, Loop, Worker, start_loop
from sweeper.load._tail import Tail, interval
from sweeper.measured import LoadGeneratorInfo, Measurement
from sweeper.record import sweeper_version
from sweeper.vocabulary import PERCENTILES, Level, LoadSettings

STABLE_WINDOWS = 3


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
    """The samples of the pooled windows: the last ``STABLE_WINDOWS``, and any measured after
    them while the tail's verdict was open."""
    pooled_from: int
    """The index in ``boundaries`` where the pooled windows begin."""


def _window(workers: list[Worker], start: Boundary, end: Boundary) -> list[int]:
    samples: list[int] = []
    for index, worker in enumerate(workers[: len(end.completed)]):
        first = start.completed[index] if index < len(start.completed) else 0  # a thread added since
        samples += worker.latencies[first : end.completed[index]]
    return samples


def windows_agree(throughputs: list[float], latencies: list[float], tolerance: float) -> bool:
    """perf_analyzer's rule: max / min of the last windows' throughput, and of their mean
    latency, are each within ``1 + tolerance``."""
    return all(min(values) > 0 and max(values) / min(values) <= 1 + tolerance for values in (throughputs, latencies))


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
    tail: Tail | None = None,
) -> Run:
    """Drive ``level`` until ``STABLE_WINDOWS`` windows agree (or ``max_windows`` were
    measured); a window in which no request ended starts the count again with longer windows
    (``WINDOW_GROWTH``); with a ``tail``, on while its verdict is open (``_settle``); raise
    TrialError when a request fails."""
    loop = start_loop(protocol, endpoints, requests, level, timeout_s)
    workers = loop.workers

    def boundary() -> Boundary:
        at = time.perf_counter()
        completed = tuple(len(worker.ends) for worker in list(workers))
        sent, due = loop.counts()
        return Boundary(at, completed, time.process_time(), statistics(), sent, due)

    try:
        loop.stop.wait(warmup_s)
        loop.check()
        boundaries, stable, window = _stabilise(loop, boundary, window_s, tolerance, max_windows)
        pooled_from = len(boundaries) - STABLE_WINDOWS - 1
        if tail is not None:
            _settle(loop, boundaries, boundary, tail, pooled_from, window, max_windows)
    finally:
        loop.close()
    samples = _window(list(workers), boundaries[pooled_from], boundaries[-1])
    return Run(boundaries, stable, np.asarray(samples, dtype=np.int64), pooled_from)


def _stabilise(
    loop: Loop, boundary: Callable[[], Boundary], window_s: float, tolerance: float, max_windows: int
) -> tuple[list[Boundary], bool, float]:
    """Windows until the last ``STABLE_WINDOWS`` agree or ``max_windows`` were measured; a window
    in which no request ended starts the count again with longer windows. (The window edges,
    whether they agreed, the window length reached.)"""
    boundaries = [boundary()]
    growth = iter(WINDOW_GROWTH)
    window = window_s
    while len(boundaries) <= max_windows:
        loop.stop.wait(window)
        loop.check()
        boundaries.append(boundary())
        if not _window(list(loop.workers), boundaries[-2], boundaries[-1]):
            factor = next(growth, None)
            if factor is not None:  # start again from here, with longer windows
                window, boundaries = window_s * factor, boundaries[-1:]
                continue
        if len(boundaries) > STABLE_WINDOWS and _last_windows_agree(list(loop.workers), boundaries, tolerance):
            return boundaries, True, window
    return boundaries, False, window


def _last_windows_agree(workers: list[Worker], boundaries: list[Boundary], tolerance: float) -> bool:
    last = boundaries[-STABLE_WINDOWS - 1 :]
    samples = [_window(workers, a, b) for a, b in zip(last, last[1:])]
    throughputs = [len(s) / (b.at - a.at) for s, a, b in zip(samples, last, last[1:])]
    means = [float(np.mean(s)) if s else 0.0 for s in samples]
    return windows_agree(throughputs, means, tolerance)


def _settle(
    loop: Loop,
    boundaries: list[Boundary],
    boundary: Callable[[], Boundary],
    tail: Tail,
    pooled_from: int,
    window: float,
    max_windows: int,
) -> None:
    """Measure more windows, pooled with the stable ones, while ``tail`` says the samples do not
    settle the load's verdict; at most ``max_windows`` windows more (the time the load's
    stability could take again: a slow load is then decided on its point estimate)."""
    for _ in range(max_windows):
        pooled = np.asarray(_window(list(loop.workers), boundaries[pooled_from], boundaries[-1]), dtype=float)
        if tail.settled(pooled / 1e6):
            return
        loop.stop.wait(window)
        loop.check()
        boundaries.append(boundary())


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
        settings: LoadSettings,
        tail: Tail | None = None,
    ) -> Measurement:
        run = run_until_stable(
            protocol,
            endpoints,
            requests,
            level,
            warmup_s=settings.warmup_s,
            window_s=settings.window_s,
            tolerance=settings.stability_tolerance,
            max_windows=settings.max_windows,
            timeout_s=settings.request_timeout_s,
            statistics=lambda: statistics_of(endpoints, workload),
            tail=tail,
        )
        return _measurement(run, level, workload.batch_size)


def _measurement(run: Run, level: Level, batch_size: int) -> Measurement:
    """The figures of a run's pooled windows: percentiles and their intervals from every sample."""
    first, last = run.boundaries[run.pooled_from], run.boundaries[-1]
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
        intervals={p: _bounded(interval(samples, p)) for p in PERCENTILES},
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


def _bounded(bounds: tuple[float, float]) -> list[float | None]:
    """An interval as stored: None for a side the samples do not bound."""
    return [value if math.isfinite(value) else None for value in bounds]
