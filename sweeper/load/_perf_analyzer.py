"""NVIDIA's perf_analyzer as the load generator: found, probed, driven once per level (a
concurrency, or a request rate with ``--request-rate-range`` and ``--request-distribution``),
and its CSV (``-f --verbose-csv``) and summary read back into a Measurement.

Where it runs: a binary, a command prefix (e.g. a wrapper), or a container image run through
the Docker engine with the host network. The spec's load settings map onto its options:
``window_s`` -> ``--measurement-interval``, ``stability_tolerance`` ->
``--stability-percentage`` (the same max/min rule the built-in generator applies, on
throughput and average latency), ``max_windows`` -> ``--max-trials``; the request data is the
sweep's samples as ``--input-data`` JSON. When perf_analyzer cannot stabilise it reports
nothing; the same span is then measured once more with any three windows accepted
(``--stability-percentage 100000 --max-trials 3``) and kept, marked unstable. When no request
ends within a window (a request longer than ``window_s``, or a stall of the server), it exits 3
with "No valid requests recorded"; the level is measured again with longer windows
(``WINDOW_GROWTH``, as the built-in generator does).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Union

from sweeper.errors import ConnectionLost, GeneratorFailed, GeneratorOutOfMemory, SweeperError, TrialError
from sweeper.launchers import OUT_OF_MEMORY, Endpoints, describe_exit, run_to_completion
from sweeper.load._base import (
    CLIENT_BOUND_CORES,
    WINDOW_GROWTH,
    LoadGenerator,
    Workload,
    batch_average,
    statistics_of,
)
from sweeper.load._builtin import BuiltinGenerator
from sweeper.load._loops import MAX_IN_FLIGHT, warm_up
from sweeper.load._tail import Tail
from sweeper.machine import available_memory_mb, resident_mb
from sweeper.measured import LoadGeneratorInfo, Measurement
from sweeper.vocabulary import Level, LoadSettings

# Options the sweeper relies on; a perf_analyzer without one of them is too old.
_REQUIRED_OPTIONS = (
    "--concurrency-range",
    "--measurement-interval",
    "--stability-percentage",
    "--max-trials",
    "--input-data",
    "--verbose-csv",
)
_UNSTABLE = "Failed to obtain stable measurement"
_WATCH_S = 0.1  # how often a running perf_analyzer's memory is read
_MIN_MEMORY_MB = 256.0
_ACCEPT_ANY = ("--stability-percentage=100000", "--max-trials=3")
_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec")
_NO_REQUESTS = "No valid requests recorded within time interval"
_SERVER_LATENCY = re.compile(r"Avg request latency: (\d+) usec")
_REQUEST_COUNT = re.compile(r"Request count: (\d+)")
_US = 1e-3  # perf_analyzer reports microseconds; measurements are in milliseconds
_VERSION = re.compile(r"Perf Analyzer Version ([^\n]+)")
_SEND_RATE = re.compile(r"Avg send request rate: ([\d.]+)")
_BEHIND = "not able to keep up with the desired request rate"
# perf_analyzer's words (its HTTP and gRPC clients') for a connection that broke under it.
_CONNECTION_LOST = re.compile(
    r"Connection reset|Socket closed|Broken pipe|Connection refused|Failed to connect|GOAWAY|Stream removed", re.I
)


class PerfAnalyzerUnavailable(SweeperError):
    """No runnable perf_analyzer (missing, not runnable here, or too old)."""


@dataclasses.dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable perf_analyzer: ``command`` is its argv prefix, or ``image`` a container."""

    command: tuple[str, ...]
    origin: str
    """Where it was found, for messages (``.venv/bin/perf_analyzer``, ``image X``)."""
    image: dict[str, object] | None = None
    version: str | None = None
    """What ``--version`` says (``0.0.0 (commit 3a49a23)``: the PyPI wheel's build)."""

    def run(
        self, args: list[str], workdir: Path, timeout_s: float, memory_mb: float | None = None
    ) -> tuple[int, str, float]:
        """Run with ``args``; (exit status, combined output, CPU seconds it used). Stopped and
        ``GeneratorOutOfMemory`` when it holds more than ``memory_mb``: the host's
        out-of-memory killer never gets to choose (perf_analyzer keeps its responses)."""
        if self.image is not None:
            return _run_in_container(self.image, [*self.command, *args], workdir, timeout_s, memory_mb)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        status, output = _run_watched([*self.command, *args], workdir, timeout_s, memory_mb)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return status, output, cpu


def _run_watched(argv: list[str], workdir: Path, timeout_s: float, memory_mb: float | None) -> tuple[int, str]:
    """Run ``argv``, watching its resident memory every ``_WATCH_S``; (status, output), 124 past
    ``timeout_s``. Killed on the way out whatever ends the wait (a signal included)."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir, errors="replace"
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                output, _ = process.communicate(timeout=_WATCH_S)  # output read so far is kept between tries
                return process.returncode, output
            except subprocess.TimeoutExpired:
                held = resident_mb(process.pid) or 0.0
                if memory_mb is not None and held > memory_mb:
                    raise GeneratorOutOfMemory(
                        f"perf_analyzer held {held:.0f} MB, over its memory limit of {memory_mb:.0f} MB "
                        "(load.client_memory_mb): stopped"
                    ) from None
                if time.monotonic() > deadline:
                    process.kill()
                    output, _ = process.communicate()
                    return 124, output + f"\n(perf_analyzer did not finish within {timeout_s:.0f} s)"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _run_in_container(
    image: dict[str, object], argv: list[str], workdir: Path, timeout_s: float, memory_mb: float | None
) -> tuple[int, str, float]:
    status, output = run_to_completion(
        image["image"],
        argv,
        base_url=image.get("base_url"),
        volumes=image.get("volumes", {}),
        writable=workdir,
        environment=image.get("env", {}),
        timeout_s=timeout_s,
        labels={"triton-sweeper.perf-analyzer": "1"},
        memory_mb=memory_mb,
    )
    if status == OUT_OF_MEMORY:
        raise GeneratorOutOfMemory(
            f"perf_analyzer's container reached its memory limit of {memory_mb:.0f} MB (load.client_memory_mb): stopped"
        )
    return status, output, 0.0  # its CPU is the container's: not counted here


def _probe(command: tuple[str, ...], origin: str, image: dict[str, object] | None = None) -> PerfAnalyzer:
    """Check that ``command`` runs and knows every option the sweeper passes."""
    analyzer = PerfAnalyzer(command, origin, image)
    with tempfile.TemporaryDirectory(prefix="sweeper-pa-") as folder:
        try:
            status, output, _ = analyzer.run(["--version"], Path(folder), 60)
            _, usage, _ = analyzer.run([], Path(folder), 60)
        except OSError as exc:
            raise PerfAnalyzerUnavailable(f"perf_analyzer ({origin}) does not run: {exc.strerror or exc}") from None
    if "Perf Analyzer" not in output:
        first = next((line for line in output.splitlines() if line.strip()), "no output")
        raise PerfAnalyzerUnavailable(f"perf_analyzer ({origin}) does not run here: {first[:200]}")
    missing = [option for option in _REQUIRED_OPTIONS if option not in usage]
    if missing:
        raise PerfAnalyzerUnavailable(f"perf_analyzer ({origin}) is too old: it lacks {', '.join(missing)}")
    version = _VERSION.search(output)
    return dataclasses.replace(analyzer, version=version.group(1).strip() if version else None)


HINT = (
    "scripts/install-perf-analyzer.sh .venv installs it (PyPI perf-analyzer; on glibc < 2.38 with Debian's "
    "C runtime); or set load.perf_analyzer to a binary, a command or "
    "{image: nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk}"
)


def _candidates() -> list[tuple[tuple[str, ...], str]]:
    """Where ``auto`` looks: beside this Python (a venv's bin), the wheel's binary, PATH."""
    found = []
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file():
        found.append(((str(beside),), str(beside)))
    try:
        import perf_analyzer as wheel  # the PyPI wheel; its entry point drops the exit status

        binary = Path(wheel.__file__).parent / "bin" / "perf_analyzer"
        if binary.is_file():
            found.append(((str(binary),), str(binary)))
    except ImportError:
        pass
    on_path = shutil.which("perf_analyzer")
    if on_path is not None:
        found.append(((on_path,), on_path))
    return found


@functools.cache
def _find_cached(setting_json: str) -> PerfAnalyzer:
    setting = json.loads(setting_json)
    if isinstance(setting, dict):
        return _probe(tuple(setting.get("command", ["perf_analyzer"])), f"image {setting['image']}", setting)
    if isinstance(setting, list):
        if shutil.which(setting[0]) is None and not Path(setting[0]).is_file():
            raise PerfAnalyzerUnavailable(f"load.perf_analyzer: '{setting[0]}' is not a file or a command on PATH")
        return _probe(tuple(setting), " ".join(setting))
    if isinstance(setting, str):
        path = shutil.which(setting) or (setting if Path(setting).is_file() else None)
        if path is None:
            raise PerfAnalyzerUnavailable(f"load.perf_analyzer: '{setting}' is not a file or a command on PATH")
        return _probe((path,), path)
    problems = []
    for command, origin in _candidates():
        try:
            return _probe(command, origin)
        except PerfAnalyzerUnavailable as exc:
            problems.append(str(exc))
    raise PerfAnalyzerUnavailable(
        "; ".join(problems) or "no perf_analyzer beside this Python, from its wheel, or on PATH"
    )


PerfAnalyzerSetting = Union[str, list[str], dict[str, object], None]
"""The spec's ``load.perf_analyzer``: a binary, a command prefix, ``{image: ...}`` as a mapping, or
None (look for one)."""


def find_perf_analyzer(setting: PerfAnalyzerSetting) -> PerfAnalyzer:
    """The perf_analyzer a spec's ``load.perf_analyzer`` names (None: look for one); raises
    PerfAnalyzerUnavailable with the reason. Probed once per process."""
    try:
        return _find_cached(json.dumps(setting, sort_keys=True))
    except PerfAnalyzerUnavailable as exc:
        raise PerfAnalyzerUnavailable(str(exc), hint=HINT) from None


def arguments(
    model_name: str,
    protocol: str,
    endpoints: Endpoints,
    level: Level,
    batch_size: int | None,
    *,
    window_s: float,
    tolerance: float,
    max_windows: int,
    data_file: Path,
    csv_file: Path,
) -> list[str]:
    """perf_analyzer's options for one level. A request rate runs on as many threads as the
    built-in generator's open loop keeps requests in flight (``MAX_IN_FLIGHT``; its default of
    4 caps an overloaded server's queue at 4). Not ``--async``: overloaded, perf_analyzer 2.60's
    asynchronous rate mode does not come back."""
    if level.concurrency is not None:
        load = [f"--concurrency-range={level.concurrency}:{level.concurrency}"]
    else:
        load = [
            f"--request-rate-range={level.request_rate:g}",
            f"--request-distribution={level.arrival}",
            f"--max-threads={MAX_IN_FLIGHT}",
        ]
    args = [
        "-m",
        model_name,
        "-u",
        endpoints.grpc if protocol == "grpc" else endpoints.http,
        "-i",
        protocol,
        *load,
        f"--measurement-interval={max(1, round(window_s * 1000))}",
        f"--stability-percentage={tolerance * 100:g}",
        f"--max-trials={max_windows}",
        f"--input-data={data_file}",
        "-f",
        str(csv_file),
        "--verbose-csv",
        "-v",
    ]
    if batch_size is not None:
        args.append(f"-b{batch_size}")
    return args


def longer_windows(args: list[str], factor: int) -> list[str]:
    """``args`` with perf_analyzer's measurement window ``factor`` times as long."""
    flag = "--measurement-interval="
    return [f"{flag}{int(a.removeprefix(flag)) * factor}" if a.startswith(flag) else a for a in args]


@dataclasses.dataclass(frozen=True)
class Report:
    """What one perf_analyzer run reported, in the Measurement's units."""

    figures: dict[str, float]
    windows: int
    stable: bool


def run_level(
    analyzer: PerfAnalyzer,
    args: list[str],
    csv_file: Path,
    *,
    timeout_s: float,
    max_windows: int,
    memory_mb: float | None = None,
) -> tuple[Report, float, float]:
    """Run one level; (report, CPU seconds, wall seconds). No request ended within a window:
    measured again with longer windows (``WINDOW_GROWTH``). Unstable: measured again, kept.
    ``GeneratorOutOfMemory`` once perf_analyzer holds more than ``memory_mb``."""
    started = time.perf_counter()
    status, output, cpu, args = _run_with_windows_long_enough(analyzer, args, csv_file.parent, timeout_s, memory_mb)
    stable = status == 0
    if not stable and _UNSTABLE in output:
        windows = len(_PASS.findall(output))
        status, output, more = analyzer.run([*args, *_ACCEPT_ANY], csv_file.parent, timeout_s, memory_mb)
        cpu += more
    else:
        windows = len(_PASS.findall(output))
    if status < 0:  # a signal from outside (the memory limit is watched before the kernel's killer acts)
        raise GeneratorFailed(f"perf_analyzer {describe_exit(status)}: {_last_lines(output)}")
    if status != 0 or not csv_file.is_file():
        lost = status != 0 and _CONNECTION_LOST.search(output) is not None
        raise (ConnectionLost if lost else GeneratorFailed)(
            f"perf_analyzer failed (exit status {status}): {_last_lines(output)}"
        )
    report = parse(csv_file.read_text(), output)
    return (
        dataclasses.replace(report, windows=windows or report.windows, stable=stable),
        cpu,
        time.perf_counter() - started,
    )


def _run_with_windows_long_enough(
    analyzer: PerfAnalyzer, args: list[str], workdir: Path, timeout_s: float, memory_mb: float | None
) -> tuple[int, str, float, list[str]]:
    """Run; while no request ended within a window, again with longer windows
    (``WINDOW_GROWTH``). (Status, output, CPU seconds, the arguments of the last run.)"""
    status, output, cpu = analyzer.run(args, workdir, timeout_s, memory_mb)
    given = args
    for factor in WINDOW_GROWTH:
        if status == 0 or _NO_REQUESTS not in output:
            break
        args = longer_windows(given, factor)
        status, output, more = analyzer.run(args, workdir, timeout_s * factor, memory_mb)
        cpu += more
    if status != 0 and _NO_REQUESTS in output:
        raise TrialError(
            f"perf_analyzer recorded no finished request within a window, even {WINDOW_GROWTH[-1]}x "
            "load.window_s long: a request takes longer than that here; raise load.window_s"
        )
    return status, output, cpu, args


def parse(table: str, output: str) -> Report:
    """perf_analyzer's ``--verbose-csv`` row and summary text -> Measurement figures (the average
    batch size comes from the server's statistics around the run: ``measure``)."""
    rows = list(csv.DictReader(io.StringIO(table)))
    if not rows:
        raise TrialError("perf_analyzer wrote an empty CSV")
    row = rows[-1]

    def us(column: str) -> float:
        return float(row[column]) * _US

    figures = {
        "p50_ms": us("p50 latency"),
        "p90_ms": us("p90 latency"),
        "p95_ms": us("p95 latency"),
        "p99_ms": us("p99 latency"),
        "mean_ms": us("Avg latency"),
        "throughput": float(row["Inferences/Second"]),
        "queue_ms": us("Server Queue"),
        "compute_input_ms": us("Server Compute Input"),
        "compute_infer_ms": us("Server Compute Infer"),
        "compute_output_ms": us("Server Compute Output"),
    }
    latency = _SERVER_LATENCY.search(output)
    figures["server_ms"] = float(latency.group(1)) * _US if latency else 0.0
    requests = _REQUEST_COUNT.search(output)
    figures["requests"] = int(requests.group(1)) if requests else 0
    sent = _SEND_RATE.search(output)
    if sent is not None:  # a request rate: what it sent, and its own word on keeping up
        figures["send_rate"] = float(sent.group(1))
        figures["behind_schedule"] = _BEHIND in output
    return Report(figures, windows=len(_PASS.findall(output)), stable=True)


def client_memory_mb(settings: LoadSettings) -> float:
    """The most memory perf_analyzer may hold: ``load.client_memory_mb``, else half of what the
    host has available now (at least ``_MIN_MEMORY_MB``)."""
    if settings.client_memory_mb is not None:
        return settings.client_memory_mb
    available = available_memory_mb()
    return max(_MIN_MEMORY_MB, available / 2) if available is not None else 4096.0


def _last_lines(output: str, limit: int = 3) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("  Pass [")]
    return " | ".join(lines[-limit:])[:600] or "(no output)"


class PerfAnalyzerGenerator(LoadGenerator):
    """NVIDIA's perf_analyzer, once per level. The server warms up under the built-in client
    first: perf_analyzer's own options count warm-up requests, not seconds."""

    name = "perf_analyzer"

    def __init__(self, analyzer: PerfAnalyzer) -> None:
        self.analyzer = analyzer
        self._memory_bound: dict[tuple[str, str], float] = {}
        """Per server and protocol, the lowest load at which perf_analyzer reached its memory
        limit: loads from there are measured by the built-in client without trying it again."""

    @property
    def info(self) -> LoadGeneratorInfo:
        return LoadGeneratorInfo(self.name, self.analyzer.version)

    def describe(self) -> str:
        return f"perf_analyzer ({self.analyzer.origin})"

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
        """perf_analyzer reports percentiles, not its samples: ``tail`` changes nothing (its
        told-to ``--percentile`` and count windows cost 2.2-2.9x the wall time of a capacity
        study here and narrowed no spread between servers: benchmarks/README.md). A load where
        perf_analyzer fails while the server lives on (its own error, or its memory limit: it
        keeps every response), and every higher load after a memory limit, is measured by the
        built-in client, which keeps none, with a note saying so."""
        key = (endpoints.http, protocol)
        if level.value < self._memory_bound.get(key, math.inf):
            try:
                return self._measure(endpoints, protocol, workload, requests, level, settings)
            except GeneratorFailed as exc:
                if isinstance(exc, GeneratorOutOfMemory):
                    self._memory_bound[key] = level.value
                why = str(exc)
        else:
            why = f"perf_analyzer reached its memory limit at {level.with_value(self._memory_bound[key]).label}"
        try:
            measured = BuiltinGenerator().measure_level(endpoints, protocol, workload, requests, level, settings, tail)
        except (TrialError, OSError) as exc:  # the server's failure, then (a dead server is told apart later)
            raise TrialError(f"{why}; the built-in client failed too: {exc}") from None
        note = f"{why}; measured by the built-in client instead (the generator's failure, not the server's)"
        return dataclasses.replace(measured, note=note)

    def _measure(
        self,
        endpoints: Endpoints,
        protocol: str,
        workload: Workload,
        requests: list[bytes],
        level: Level,
        settings: LoadSettings,
    ) -> Measurement:
        """One level, measured by perf_analyzer under its memory limit."""
        if settings.warmup_s > 0:
            warm_up(protocol, endpoints, requests, level, settings.warmup_s, settings.request_timeout_s)
        with tempfile.TemporaryDirectory(prefix="sweeper-pa-") as folder:
            data_file, csv_file = Path(folder) / "input-data.json", Path(folder) / "result.csv"
            data_file.write_text(json.dumps(workload.samples.perf_analyzer_json()))
            args = arguments(
                workload.model_name,
                protocol,
                endpoints,
                level,
                workload.batch_size if workload.batched else None,
                window_s=settings.window_s,
                tolerance=settings.stability_tolerance,
                max_windows=settings.max_windows,
                data_file=data_file,
                csv_file=csv_file,
            )
            limit = 60 + 3 * (settings.max_windows + 3) * (settings.window_s + settings.request_timeout_s)
            before = statistics_of(endpoints, workload)
            report, cpu, wall = run_level(
                self.analyzer,
                args,
                csv_file,
                timeout_s=limit,
                max_windows=settings.max_windows,
                memory_mb=client_memory_mb(settings),
            )
            batch = batch_average(before, statistics_of(endpoints, workload))
        return self._measurement(level, report, batch, cpu / wall if wall > 0 else 0.0)

    def _measurement(self, level: Level, report: Report, batch: float, client_cpu: float) -> Measurement:
        """perf_analyzer's report of ``level`` as a Measurement; the client is the bottleneck
        where it used ``CLIENT_BOUND_CORES`` of the host or fell behind a request rate."""
        behind = bool(report.figures.get("behind_schedule"))
        return Measurement(
            concurrency=level.concurrency,
            **report.figures,
            avg_batch_size=batch,
            windows=report.windows,
            stable=report.stable,
            client_cpu=client_cpu,
            client_bound=client_cpu >= CLIENT_BOUND_CORES * (os.cpu_count() or 1) or behind,
            generator=self.name,
            request_rate=level.request_rate,
            arrival=level.arrival if level.request_rate is not None else None,
        )
