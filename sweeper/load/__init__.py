"""Stage 5: load on a running server, and what it measured.

One interface (``LoadGenerator``), two implementations that fill the same ``Measurement``:
NVIDIA's perf_analyzer (the ecosystem's standard) and a built-in client held to it
(benchmarks/load_fidelity.py), each at a concurrency (closed loop) or a request rate (open
loop). A trial's capacity searches (``_capacity``) run on either. ``choose_generator`` resolves
the spec's ``auto``.
"""

from __future__ import annotations

import numpy as np

from sweeper.errors import TrialError
from sweeper.launchers import Endpoints
from sweeper.load._base import LoadGenerator, Workload, batch_average, server_times
from sweeper.load._builtin import STABLE_WINDOWS, BuiltinGenerator, windows_agree
from sweeper.load._capacity import (
    CapacityTarget,
    SearchBounds,
    capacity_of,
    held_by_most,
    load_verdict,
    search_capacity,
    with_retakes,
)
from sweeper.load._perf_analyzer import (
    PerfAnalyzer,
    PerfAnalyzerGenerator,
    PerfAnalyzerSetting,
    PerfAnalyzerUnavailable,
    find_perf_analyzer,
)
from sweeper.measured import Measurement

GENERATORS: dict[str, type[LoadGenerator]] = {"builtin": BuiltinGenerator, "perf_analyzer": PerfAnalyzerGenerator}
"""The spec's ``load.generator`` names (besides ``auto``) to the classes."""

__all__ = [
    "GENERATORS",
    "STABLE_WINDOWS",
    "BuiltinGenerator",
    "CapacityTarget",
    "LoadGenerator",
    "Measurement",
    "PerfAnalyzer",
    "PerfAnalyzerGenerator",
    "PerfAnalyzerSetting",
    "PerfAnalyzerUnavailable",
    "SearchBounds",
    "Workload",
    "batch_average",
    "capacity_of",
    "load_verdict",
    "choose_generator",
    "find_perf_analyzer",
    "search_capacity",
    "with_retakes",
    "held_by_most",
    "served_outputs",
    "server_times",
    "windows_agree",
]


def choose_generator(generator: str, setting: PerfAnalyzerSetting) -> LoadGenerator:
    """Resolve ``load.generator`` (``setting`` is ``load.perf_analyzer``). ``perf_analyzer``
    without a runnable one raises PerfAnalyzerUnavailable; ``auto`` falls back to the built-in
    client and its ``describe()`` says why."""
    if generator == "builtin":
        return BuiltinGenerator()
    try:
        analyzer = find_perf_analyzer(setting)
    except PerfAnalyzerUnavailable as exc:
        if generator == "perf_analyzer":
            raise
        return BuiltinGenerator(
            f"load.generator auto: no runnable perf_analyzer ({exc}); the built-in generator measures"
        )
    return PerfAnalyzerGenerator(analyzer)


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
