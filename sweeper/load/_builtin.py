"""The built-in load generator: N threads, each keeping one pre-encoded request in flight.

Each thread owns one connection (HTTP/1.1 or HTTP/2 gRPC) and records the end time and the
latency of every request. After the warm-up, back-to-back windows run until the last three
agree (``stable_windows``); percentiles come from every sample of those three windows.
"""

from __future__ import annotations

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

STABLE_WINDOWS = 3
# A Python process whose threads used this much of a core is limited by its interpreter lock.
CLIENT_BOUND_CORES = 0.9


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
    """A window edge: when, how many requests each worker had completed, CPU used, server stats."""

    at: float
    completed: tuple[int, ...]
    cpu: float
    stats: dict


@dataclasses.dataclass(frozen=True)
class Run:
    """What ``run_until_stable`` observed: the window edges and every worker's samples."""

    boundaries: list[Boundary]
    stable: bool
    latencies_ns: np.ndarray
    """The samples of the last ``STABLE_WINDOWS`` windows."""


def _window(workers: list[_Worker], start: Boundary, end: Boundary) -> list[int]:
    samples: list[int] = []
    for index, worker in enumerate(workers):
        samples += worker.latencies[start.completed[index] : end.completed[index]]
    return samples


def windows_agree(throughputs: list[float], latencies: list[float], tolerance: float) -> bool:
    """perf_analyzer's rule: max / min of the last windows' throughput, and of their mean
    latency, are each within ``1 + tolerance``."""
    return all(min(values) > 0 and max(values) / min(values) <= 1 + tolerance for values in (throughputs, latencies))


class _ClosedLoop:
    """``concurrency`` workers, each on its own connection, from ``start`` to ``close``."""

    def __init__(self, protocol: str, endpoints: Endpoints, requests: list[bytes], concurrency: int, timeout_s: float):
        self.protocol, self.concurrency, self.timeout_s = protocol, concurrency, timeout_s
        self.stop = threading.Event()
        self.connections = [connect(protocol, endpoints, timeout_s) for _ in range(concurrency)]
        sends = [c.call if protocol == "grpc" else c.infer for c in self.connections]
        # Workers start at different samples, so concurrent requests carry different data.
        self.workers = [_Worker(send, requests, index, self.stop) for index, send in enumerate(sends)]
        for worker in self.workers:
            worker.start()

    def check(self) -> None:
        """Raise TrialError if a request failed."""
        failed = next((w.error for w in self.workers if w.error is not None), None)
        if failed is not None:
            what = describe_failure(failed, self.timeout_s)
            raise TrialError(f"{self.protocol} inference failed at concurrency {self.concurrency}: {what}")

    def close(self) -> None:
        self.stop.set()
        for connection in self.connections:  # unblocks a worker waiting on a response
            _close_quietly(connection)
        for worker in self.workers:
            worker.join(timeout=self.timeout_s)


def warm_up(
    protocol: str, endpoints: Endpoints, requests: list[bytes], concurrency: int, seconds: float, timeout_s: float
) -> None:
    """Keep ``concurrency`` requests in flight for ``seconds``; raise TrialError if one fails."""
    loop = _ClosedLoop(protocol, endpoints, requests, concurrency, timeout_s)
    try:
        loop.stop.wait(seconds)
        loop.check()
    finally:
        loop.close()


def run_until_stable(
    protocol: str,
    endpoints: Endpoints,
    requests: list[bytes],
    concurrency: int,
    *,
    warmup_s: float,
    window_s: float,
    tolerance: float,
    max_windows: int,
    timeout_s: float,
    statistics: Callable[[], dict],
) -> Run:
    """Drive ``concurrency`` requests in flight until ``STABLE_WINDOWS`` windows agree (or
    ``max_windows`` were measured); raise TrialError when a request fails."""
    loop = _ClosedLoop(protocol, endpoints, requests, concurrency, timeout_s)
    workers = loop.workers

    def boundary() -> Boundary:
        at = time.perf_counter()
        completed = tuple(len(worker.ends) for worker in workers)
        return Boundary(at, completed, time.process_time(), statistics())

    try:
        loop.stop.wait(warmup_s)
        loop.check()
        boundaries = [boundary()]
        stable = False
        while len(boundaries) <= max_windows:
            loop.stop.wait(window_s)
            loop.check()
            boundaries.append(boundary())
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
    return Run(boundaries, stable, np.asarray(_window(workers, first, last), dtype=np.int64))


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
        concurrency: int,
        load: Any,
    ) -> Measurement:
        run = run_until_stable(
            protocol,
            endpoints,
            requests,
            concurrency,
            warmup_s=load.warmup_s,
            window_s=load.window_s,
            tolerance=load.stability_tolerance,
            max_windows=load.max_windows,
            timeout_s=load.request_timeout_s,
            statistics=lambda: statistics_of(endpoints, workload),
        )
        return _measurement(run, concurrency, workload.batch_size)


def _measurement(run: Run, concurrency: int, batch_size: int) -> Measurement:
    """The figures of the last ``STABLE_WINDOWS`` windows of a run: percentiles from every sample."""
    first, last = run.boundaries[-STABLE_WINDOWS - 1], run.boundaries[-1]
    elapsed = last.at - first.at
    samples = run.latencies_ns / 1e6
    if samples.size == 0:
        raise TrialError(
            f"no request completed in {elapsed:.1f} s at concurrency {concurrency}",
            hint="raise load.window_s or load.request_timeout_s",
        )
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    client_cpu = (last.cpu - first.cpu) / elapsed
    return Measurement(
        concurrency=concurrency,
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
        client_bound=client_cpu >= CLIENT_BOUND_CORES,
        generator="builtin",
    )
