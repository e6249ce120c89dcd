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

import numpy as np

from sweeper.errors import TrialError
from sweeper.launchers import Endpoints
from sweeper.load._grpc import GrpcConnection
from sweeper.load._http import HttpConnection
from sweeper.load._wire import InferenceError, grpc_outputs, http_outputs

STABLE_WINDOWS = 3
# A Python process whose threads used this much of a core is limited by its interpreter lock.
CLIENT_BOUND_CORES = 0.9


def connect(protocol: str, endpoints: Endpoints, timeout_s: float) -> HttpConnection | GrpcConnection:
    """A connection for one worker."""
    if protocol == "grpc":
        return GrpcConnection(endpoints.grpc, timeout_s)
    return HttpConnection(endpoints.http, timeout_s)


def send_once(
    protocol: str, endpoints: Endpoints, request: bytes, timeout_s: float
) -> list[tuple[str, str, list[int], int]]:
    """One request on a fresh connection; the outputs its response describes."""
    connection = connect(protocol, endpoints, timeout_s)
    try:
        if protocol == "grpc":
            return grpc_outputs(connection.call(request, keep=True))
        start, length, header = connection.infer(request)
        return http_outputs(connection.body(start, length), header)
    finally:
        connection.close()


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


def describe_failure(failure: BaseException, timeout_s: float) -> str:
    """A failed request in words (a timeout names the spec's setting)."""
    if isinstance(failure, TimeoutError):
        return f"no response within load.request_timeout_s ({timeout_s:g} s)"
    if isinstance(failure, InferenceError):
        return str(failure)
    return f"{type(failure).__name__}: {failure}"
