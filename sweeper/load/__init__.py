"""Stage 5: load on a running server, and what it measured.

Two generators fill the same ``Measurement``: NVIDIA's perf_analyzer (the ecosystem's
standard, ``_perf_analyzer``) and a built-in closed-loop client (``_builtin``) held to it
(benchmarks/load_fidelity.py). ``choose_generator`` resolves the spec's ``auto``. Before any
load, one request's response is checked against the model's declared outputs: an empty or
mis-shaped output fails the trial instead of producing fast-looking numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.data import Samples
from sweeper.errors import TrialError
from sweeper.launchers import Endpoints, server_statistics
from sweeper.load._builtin import (
    CLIENT_BOUND_CORES,
    STABLE_WINDOWS,
    describe_failure,
    run_until_stable,
    send_once,
    warm_up,
    windows_agree,
)
from sweeper.load._perf_analyzer import PerfAnalyzer, PerfAnalyzerUnavailable, arguments, find_perf_analyzer, run_level
from sweeper.load._wire import InferenceError, check_outputs, grpc_message, http_request
from sweeper.tensors import TensorSpec

GENERATORS = ("builtin", "perf_analyzer")

__all__ = [
    "GENERATORS",
    "STABLE_WINDOWS",
    "Measurement",
    "PerfAnalyzer",
    "PerfAnalyzerUnavailable",
    "Workload",
    "choose_generator",
    "find_perf_analyzer",
    "measure",
    "served_outputs",
    "server_times",
    "windows_agree",
]


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
    generator: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored on the trial."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a trial sends: the model's tensors and the sweep's samples, ``batch_size`` a request
    (``batched`` False: a model without a batch axis, one sample a request)."""

    model_name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    samples: Samples
    batch_size: int
    batched: bool

    @functools.cached_property
    def tensors(self) -> list[dict[str, np.ndarray]]:
        """Every distinct request, in the order the generators cycle through them."""
        return self.samples.requests(self.batch_size, batched=self.batched)

    def encoded(self, protocol: str, endpoints: Endpoints) -> list[bytes]:
        """The requests in ``protocol``'s wire format, for the built-in generator."""
        names = [t.name for t in self.outputs]
        if protocol == "grpc":
            return [grpc_message(self.model_name, list(self.inputs), t, names) for t in self.tensors]
        return [http_request(self.model_name, list(self.inputs), t, names, endpoints.http) for t in self.tensors]


def choose_generator(generator: str, setting: Any) -> tuple[str, PerfAnalyzer | None, str]:
    """Resolve ``load.generator``: (name, perf_analyzer or None, why, for the run's header).
    ``perf_analyzer`` without a runnable one raises PerfAnalyzerUnavailable; ``auto`` falls back."""
    if generator == "builtin":
        return "builtin", None, "load.generator: builtin"
    try:
        analyzer = find_perf_analyzer(setting)
    except PerfAnalyzerUnavailable as exc:
        if generator == "perf_analyzer":
            raise
        return (
            "builtin",
            None,
            f"load.generator auto: no runnable perf_analyzer ({exc}); the built-in generator measures",
        )
    return "perf_analyzer", analyzer, f"perf_analyzer ({analyzer.origin})"


def _check_first_response(
    protocol: str, endpoints: Endpoints, workload: Workload, request: bytes, timeout_s: float
) -> None:
    try:
        found = send_once(protocol, endpoints, request, timeout_s)
        check_outputs(found, list(workload.outputs), workload.batch_size if workload.batched else None)
    except InferenceError as exc:
        raise TrialError(f"the first {protocol} response is wrong: {exc}") from None
    except (OSError, ConnectionError) as exc:
        raise TrialError(f"the first {protocol} request failed: {describe_failure(exc, timeout_s)}") from None


def measure(
    endpoints: Endpoints,
    protocol: str,
    workload: Workload,
    concurrency: int,
    settings: Any,
    analyzer: PerfAnalyzer | None = None,
) -> Measurement:
    """Measure one concurrency level with the built-in generator, or with ``analyzer``.

    ``settings`` is the spec's ``load`` block. Raises TrialError when a request fails or the
    first response does not match the model's declared outputs."""
    requests = workload.encoded(protocol, endpoints)
    _check_first_response(protocol, endpoints, workload, requests[0], settings.request_timeout_s)

    def statistics() -> dict:
        return server_statistics(endpoints, workload.model_name)

    if analyzer is None:
        run = run_until_stable(
            protocol,
            endpoints,
            requests,
            concurrency,
            warmup_s=settings.warmup_s,
            window_s=settings.window_s,
            tolerance=settings.stability_tolerance,
            max_windows=settings.max_windows,
            timeout_s=settings.request_timeout_s,
            statistics=statistics,
        )
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
            throughput=samples.size * workload.batch_size / elapsed,
            **server_times(first.stats, last.stats),
            requests=int(samples.size),
            windows=len(run.boundaries) - 1,
            stable=run.stable,
            client_cpu=client_cpu,
            client_bound=client_cpu >= CLIENT_BOUND_CORES,
            generator="builtin",
        )

    # perf_analyzer: the server warms up under the built-in generator first (perf_analyzer's
    # own options count warm-up requests, not seconds).
    if settings.warmup_s > 0:
        warm_up(protocol, endpoints, requests, concurrency, settings.warmup_s, settings.request_timeout_s)
    with tempfile.TemporaryDirectory(prefix="sweeper-pa-") as folder:
        data_file, csv_file = Path(folder) / "input-data.json", Path(folder) / "result.csv"
        data_file.write_text(json.dumps(workload.samples.perf_analyzer_json()))
        args = arguments(
            workload.model_name,
            protocol,
            endpoints,
            concurrency,
            workload.batch_size if workload.batched else None,
            window_s=settings.window_s,
            tolerance=settings.stability_tolerance,
            max_windows=settings.max_windows,
            data_file=data_file,
            csv_file=csv_file,
        )
        limit = 60 + 3 * (settings.max_windows + 3) * (settings.window_s + settings.request_timeout_s)
        before = statistics()
        report, cpu, wall = run_level(analyzer, args, csv_file, timeout_s=limit, max_windows=settings.max_windows)
        batch = batch_average(before, statistics())
    client_cpu = cpu / wall if wall > 0 else 0.0
    return Measurement(
        concurrency=concurrency,
        **report.figures,
        avg_batch_size=batch,
        windows=report.windows,
        stable=report.stable,
        client_cpu=client_cpu,
        client_bound=client_cpu >= CLIENT_BOUND_CORES * (os.cpu_count() or 1),
        generator="perf_analyzer",
    )


_SERVER_PARTS = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def server_times(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Per-request averages (ms) of Triton's cumulative statistics between two snapshots, and
    the average batch size (inferences per model execution)."""

    def delta(part: str, key: str) -> float:
        return float(after["inference_stats"][part][key]) - float(before["inference_stats"][part][key])

    times = {}
    for part in _SERVER_PARTS:
        count = delta(part, "count")
        times["server_ms" if part == "success" else f"{part}_ms"] = delta(part, "ns") / count / 1e6 if count else 0.0
    times["avg_batch_size"] = batch_average(before, after)
    return times


def batch_average(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Inferences per model execution between two statistics snapshots, from the executions
    counted by batch size: Triton counts each size with its execution, so a snapshot never sees
    an inference before its execution (the total counts can skew by one)."""
    executions = {b["batch_size"]: b["compute_infer"]["count"] for b in after.get("batch_stats", [])}
    for earlier in before.get("batch_stats", []):
        executions[earlier["batch_size"]] = executions.get(earlier["batch_size"], 0) - earlier["compute_infer"]["count"]
    count = sum(executions.values())
    return sum(size * n for size, n in executions.items()) / count if count else 0.0


def served_outputs(
    endpoints: Endpoints, workload: Workload, feeds: list[dict[str, np.ndarray]]
) -> list[list[np.ndarray]]:
    """Each feed (one request) through the served model over HTTP: ``[feed][output]`` arrays."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(endpoints.http)
    produced = []
    try:
        for feed in feeds:
            request = []
            for tensor in workload.inputs:
                array = feed[tensor.name]
                item = httpclient.InferInput(tensor.name, list(array.shape), tensor.datatype)
                item.set_data_from_numpy(array, binary_data=True)
                request.append(item)
            outputs = [httpclient.InferRequestedOutput(t.name, binary_data=True) for t in workload.outputs]
            result = client.infer(workload.model_name, request, outputs=outputs)
            produced.append([result.as_numpy(t.name) for t in workload.outputs])
    except (InferenceServerException, OSError) as exc:
        raise TrialError(f"the accuracy sample failed on the server: {exc}") from None
    finally:
        client.close()
    return produced
