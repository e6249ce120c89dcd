"""The load-generator interface: what a trial sends (``Workload``), one ``LoadGenerator`` per way
of sending it, and what Triton's own statistics say about the same span."""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import ClassVar

import numpy as np

from sweeper.data import Samples
from sweeper.errors import TrialError
from sweeper.launchers import Endpoints, server_statistics
from sweeper.load._capacity import (
    CapacityTarget,
    load_verdict,
    search_capacity,
)
from sweeper.load._client import describe_failure, send_once
from sweeper.load._tail import Tail
from sweeper.load._wire import InferenceError, check_outputs, grpc_message, http_request
from sweeper.measured import Capacity, LoadGeneratorInfo, Measurement
from sweeper.tensors import TensorSpec
from sweeper.vocabulary import Level, LoadSettings

WINDOW_GROWTH = (4, 16)
"""The window multiples tried, in turn, when no request ended within a window (a request longer
than ``load.window_s``, or a stall): a window without a sample says nothing of the level. The
same for both generators (perf_analyzer's own advice: "use a larger time window")."""
# A Python process whose threads used this much of a core is limited by its interpreter lock.
CLIENT_BOUND_CORES = 0.9


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


class LoadGenerator(abc.ABC):
    """A way of driving load at one level (a concurrency, or a request rate) and measuring it.

    ``measure`` and ``measure_trial`` check one response against the model's declared outputs
    first (an empty or mis-shaped output fails the trial instead of producing fast-looking
    numbers), then hand each level to the implementation."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def info(self) -> LoadGeneratorInfo:
        """The generator's name and version, as trial records keep them."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where it comes from, for the run's header (``perf_analyzer (.venv/bin/perf_analyzer)``)."""

    @abc.abstractmethod
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
        """Warm up, then measure ``level`` under the spec's load ``settings`` (for a load a
        capacity search judges, with enough samples to judge it by ``tail``, as far as the
        generator can); raise TrialError when a request fails."""

    def measure(
        self, endpoints: Endpoints, protocol: str, workload: Workload, level: Level | int, settings: LoadSettings
    ) -> Measurement:
        """Measure one level (an int: that concurrency)."""
        level = Level(concurrency=level) if isinstance(level, int) else level
        requests = workload.encoded(protocol, endpoints)
        response_bytes = check_first_response(protocol, endpoints, workload, requests[0], settings.request_timeout_s)
        measured = self.measure_level(endpoints, protocol, workload, requests, level, settings)
        return dataclasses.replace(measured, **over_the_wire(measured, workload, response_bytes))

    def measure_trial(
        self,
        endpoints: Endpoints,
        protocol: str,
        workload: Workload,
        settings: LoadSettings,
        targets: list[CapacityTarget],
    ) -> tuple[list[Measurement], list[Capacity]]:
        """Every level of ``settings``, then each capacity search within its bounds (a load
        measured once serves every search and level that names it; one measured again before it
        could decide keeps both measurements, in the order taken)."""
        requests = workload.encoded(protocol, endpoints)
        response_bytes = check_first_response(protocol, endpoints, workload, requests[0], settings.request_timeout_s)
        loads = _TrialLoads(self, endpoints, protocol, workload, requests, settings, response_bytes)
        # The first search's tail: a listed level is also where its search starts.
        first = Tail(targets[0].percentile, targets[0].budget_ms) if targets else None
        for level in settings.levels:
            loads.at(level, None, first)
        capacities = [loads.search(target) for target in targets]
        return loads.taken, capacities


@dataclasses.dataclass
class _TrialLoads:
    """One trial's measurements as they are taken: a load measured once serves every search and
    level that names it (``standing``: a level's label -> the measurement of it that counts)."""

    generator: LoadGenerator
    endpoints: Endpoints
    protocol: str
    workload: Workload
    requests: list[bytes]
    settings: LoadSettings
    response_bytes: int
    taken: list[Measurement] = dataclasses.field(default_factory=list)
    standing: dict[str, int] = dataclasses.field(default_factory=dict)

    def _measure(
        self, level: Level, tail: Tail | None, settings: LoadSettings | None = None, **marks: object
    ) -> Measurement:
        found = self.generator.measure_level(
            self.endpoints, self.protocol, self.workload, self.requests, level, settings or self.settings, tail
        )
        return dataclasses.replace(found, **marks, **over_the_wire(found, self.workload, self.response_bytes))

    def at(self, level: Level, search: str | None, tail: Tail | None, again: str | None = None) -> Measurement:
        """``level``'s measurement, taken now unless it stands; ``again``: why the standing one
        is measured again (it is kept, marked)."""
        if again is not None:
            index = self.standing.pop(level.label)
            self.taken[index] = dataclasses.replace(self.taken[index], remeasured=again)
        if level.label not in self.standing:
            self.standing[level.label] = len(self.taken)
            self.taken.append(self._measure(level, tail, search=search))
        return self.taken[self.standing[level.label]]

    def search(self, target: CapacityTarget) -> Capacity:
        """``target``'s capacity: the search over the loads (``search_capacity``: the load found is
        measured again ``retakes`` times, and where most of its measurements broke the budget the
        search goes on below it), then each tried load's verdict."""
        template, tail = self.settings.levels[0], Tail(target.percentile, target.budget_ms)

        def measure(value: float, again: str | None = None) -> Measurement:
            return self.at(template.with_value(value), target.column, tail, again)

        def retake(value: float) -> list[Measurement]:
            return self._retakes(template.with_value(value), target)

        found = search_capacity(
            measure, target, self.settings.capacity, retake if self.settings.capacity.retakes else None
        )
        for load in found.tried:
            index = self.standing[template.with_value(load).label]
            self.taken[index] = dataclasses.replace(self.taken[index], verdict=load_verdict(self.taken[index], target))
        return found

    def _retakes(self, level: Level, target: CapacityTarget) -> list[Measurement]:
        """``level`` measured ``retakes`` times more, each with its verdict, kept."""
        # The server is warm: it served the search's loads up to now.
        warm = dataclasses.replace(self.settings, warmup_s=0.0)
        takes = []
        for number in range(1, self.settings.capacity.retakes + 1):
            again = self._measure(level, None, warm, search=target.column, retake=number)
            takes.append(dataclasses.replace(again, verdict=load_verdict(again, target)))
        self.taken.extend(takes)
        return takes


def over_the_wire(measured: Measurement, workload: Workload, response_bytes: int) -> dict[str, float]:
    """What the client read: bytes per response, and MiB/s at the load's throughput (inferences
    per second over the inferences a request carries)."""
    per_request = workload.batch_size if workload.batched else 1
    return {
        "response_bytes": response_bytes,
        "response_mb_s": response_bytes * measured.throughput / per_request / 2**20,
    }


def check_first_response(
    protocol: str, endpoints: Endpoints, workload: Workload, request: bytes, timeout_s: float
) -> int:
    """One request on its own: TrialError unless its outputs are the model's declared ones;
    the bytes of output tensors it carried."""
    try:
        found = send_once(protocol, endpoints, request, timeout_s)
        check_outputs(found, list(workload.outputs), workload.batch_size if workload.batched else None)
        return sum(size for *_, size in found)
    except InferenceError as exc:
        raise TrialError(f"the first {protocol} response is wrong: {exc}") from None
    except (OSError, ConnectionError) as exc:
        raise TrialError(f"the first {protocol} request failed: {describe_failure(exc, timeout_s)}") from None


def statistics_of(endpoints: Endpoints, workload: Workload) -> dict[str, object]:
    """The served model's cumulative statistics now."""
    return server_statistics(endpoints, workload.model_name)


_SERVER_PARTS = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def server_times(before: dict[str, object], after: dict[str, object]) -> dict[str, float]:
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


def batch_average(before: dict[str, object], after: dict[str, object]) -> float:
    """Inferences per model execution between two statistics snapshots, from the executions
    counted by batch size: Triton counts each size with its execution, so a snapshot never sees
    an inference before its execution (the total counts can skew by one)."""
    executions = {b["batch_size"]: b["compute_infer"]["count"] for b in after.get("batch_stats", [])}
    for earlier in before.get("batch_stats", []):
        executions[earlier["batch_size"]] = executions.get(earlier["batch_size"], 0) - earlier["compute_infer"]["count"]
    count = sum(executions.values())
    return sum(size * n for size, n in executions.items()) / count if count else 0.0
