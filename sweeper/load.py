"""Stage 5: closed-loop load on a running server and what it measured.

N coroutines each keep one request in flight (tritonclient's asyncio clients, binary tensors).
After a warm-up, back-to-back windows run until the last three agree on throughput and p99
within the tolerance (or ``max_windows`` is reached: the result is then marked unstable).
Percentiles come from every sample of those three windows; the server's statistics API is
diffed over the same span to tell queue time from compute time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np

from sweeper.errors import TrialError
from sweeper.launchers import Endpoints, server_statistics
from sweeper.spec import METRICS, LoadSpec

_STABLE_WINDOWS = 3
# A load generator whose process used this many cores or more was likely the bottleneck:
# asyncio runs the request loop on one core.
CLIENT_BOUND_CORES = 0.9
_SERVER_PARTS = ("queue", "compute_input", "compute_infer", "compute_output", "success")


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One concurrency level of one trial. Times in milliseconds, throughput in inferences/s."""

    concurrency: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float
    server_ms: float
    avg_batch_size: float
    requests: int
    windows: int
    stable: bool
    client_cpu: float
    client_bound: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def by_column(measurements: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric of stored measurements under its column name, ``<metric>@c<concurrency>``."""
    return {f"{metric}@c{m['concurrency']}": m[metric] for m in measurements for metric in METRICS}


@dataclasses.dataclass(frozen=True)
class _Boundary:
    at: float
    completed: int
    cpu: float
    stats: dict[str, Any]


def measure(
    endpoints: Endpoints,
    protocol: str,
    model_name: str,
    inputs: dict[str, np.ndarray],
    output_names: list[str],
    concurrency: int,
    settings: LoadSpec,
) -> Measurement:
    """Drive ``concurrency`` requests in flight until the numbers are stable; raise TrialError on failure."""
    return asyncio.run(_measure(endpoints, protocol, model_name, inputs, output_names, concurrency, settings))


def _client(protocol: str, endpoints: Endpoints) -> tuple[Any, Any]:
    if protocol == "grpc":
        import tritonclient.grpc.aio as module

        return module, module.InferenceServerClient(endpoints.grpc)
    import tritonclient.http.aio as module

    return module, module.InferenceServerClient(endpoints.http, conn_limit=0)


async def _measure(
    endpoints: Endpoints,
    protocol: str,
    model_name: str,
    inputs: dict[str, np.ndarray],
    output_names: list[str],
    concurrency: int,
    settings: LoadSpec,
) -> Measurement:
    module, client = _client(protocol, endpoints)
    binary = {"binary_data": True} if protocol == "http" else {}
    # aiohttp asks for gzip by default and Triton then compresses every response: for a 28.8 MB
    # output that cost ~0.9 s a request here. Ask for the plain bytes, as perf_analyzer does.
    plain = {"headers": {"Accept-Encoding": "identity"}} if protocol == "http" else {}
    request_inputs = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), _datatype(array))
        tensor.set_data_from_numpy(array, **binary)
        request_inputs.append(tensor)
    request_outputs = [module.InferRequestedOutput(name, **binary) for name in output_names]
    batch_size = next(iter(inputs.values())).shape[0]

    ends: list[float] = []
    latencies: list[float] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def keep_one_in_flight() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await asyncio.wait_for(
                    client.infer(model_name, request_inputs, outputs=request_outputs, **plain), settings.request_timeout_s
                )
            except Exception as exc:  # any failed request fails the trial, with its message
                failures.append(exc)
                stop.set()
                return
            end = time.perf_counter()
            ends.append(end)
            latencies.append(end - start)

    async def boundary() -> _Boundary:
        stats = await asyncio.to_thread(server_statistics, endpoints, model_name)
        return _Boundary(time.perf_counter(), len(latencies), time.process_time(), stats)

    def check() -> None:
        if failures:
            raise TrialError(f"{protocol} inference failed at concurrency {concurrency}: {failures[0]}")

    workers = [asyncio.create_task(keep_one_in_flight()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(settings.warmup_s)
        check()
        boundaries = [await boundary()]
        stable = False
        while len(boundaries) <= settings.max_windows:
            await asyncio.sleep(settings.window_s)
            check()
            boundaries.append(await boundary())
            if len(boundaries) > _STABLE_WINDOWS and _agree(boundaries[-_STABLE_WINDOWS - 1 :], latencies, settings):
                stable = True
                break
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
    check()
    first, last = boundaries[-_STABLE_WINDOWS - 1], boundaries[-1]
    samples = np.asarray(latencies[first.completed : last.completed]) * 1e3
    if samples.size == 0:
        raise TrialError(
            f"no request completed in {last.at - first.at:.1f} s at concurrency {concurrency}",
            hint="raise load.window_s or load.request_timeout_s",
        )
    elapsed = last.at - first.at
    server = _server_times(first.stats, last.stats)
    client_cpu = (last.cpu - first.cpu) / elapsed
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    return Measurement(
        concurrency=concurrency,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(samples.mean()),
        throughput=samples.size * batch_size / elapsed,
        **server,
        requests=int(samples.size),
        windows=len(boundaries) - 1,
        stable=stable,
        client_cpu=client_cpu,
        client_bound=client_cpu >= CLIENT_BOUND_CORES,
    )


def _agree(boundaries: list[_Boundary], latencies: list[float], settings: LoadSpec) -> bool:
    """Do the windows between these boundaries agree on throughput and p99 within the tolerance?"""
    throughputs, p99s = [], []
    for start, end in zip(boundaries, boundaries[1:]):
        window = latencies[start.completed : end.completed]
        if not window:
            return False
        throughputs.append(len(window) / (end.at - start.at))
        p99s.append(float(np.percentile(window, 99)))
    return all((max(v) - min(v)) <= settings.stability_tolerance * float(np.mean(v)) for v in (throughputs, p99s))


def _server_times(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Per-request averages (ms) of Triton's cumulative statistics between two snapshots."""

    def delta(part: str, key: str) -> float:
        return float(after["inference_stats"][part][key]) - float(before["inference_stats"][part][key])

    times = {}
    for part in _SERVER_PARTS:
        count = delta(part, "count")
        times["server_ms" if part == "success" else f"{part}_ms"] = delta(part, "ns") / count / 1e6 if count else 0.0
    executions = float(after["execution_count"]) - float(before["execution_count"])
    inferences = float(after["inference_count"]) - float(before["inference_count"])
    times["avg_batch_size"] = inferences / executions if executions else 0.0
    return times


def _datatype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


def served_outputs(
    endpoints: Endpoints, model_name: str, feed: dict[str, np.ndarray], output_names: list[str], max_batch_size: int
) -> list[np.ndarray]:
    """Run ``feed`` through the served model in requests of at most ``max_batch_size`` samples."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(endpoints.http)
    total = next(iter(feed.values())).shape[0]
    parts: list[list[np.ndarray]] = [[] for _ in output_names]
    try:
        for start in range(0, total, max_batch_size):
            request = []
            for name, array in feed.items():
                chunk = np.ascontiguousarray(array[start : start + max_batch_size])
                tensor = httpclient.InferInput(name, list(chunk.shape), _datatype(chunk))
                tensor.set_data_from_numpy(chunk, binary_data=True)
                request.append(tensor)
            outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in output_names]
            result = client.infer(model_name, request, outputs=outputs)
            for part, name in zip(parts, output_names):
                part.append(result.as_numpy(name))
    except Exception as exc:  # tritonclient raises its own and socket errors alike
        raise TrialError(f"the accuracy sample failed on the server: {exc}") from None
    finally:
        client.close()
    return [np.concatenate(part) for part in parts]
