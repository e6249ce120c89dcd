"""``sweeper init SOURCE``: a first spec for a model, commented, that runs as it is.

SOURCE is an ONNX file, a Triton model folder (config.pbtxt and 1/) or a PyTorch factory
(``module:factory``). The model is read, never served: its inputs (shapes the graph leaves
dynamic are guessed and marked ``CHECK``), its own config as the baseline, the knobs that apply
to it (no batching knobs for max_batch_size 0, conversions only for ONNX), and a trial budget
sized from one in-process inference on this machine.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.data import generate_samples
from sweeper.errors import UsageError
from sweeper.launchers import host_has_gpu
from sweeper.source import ModelSource, SourceError, from_onnx, from_repository, network_of
from sweeper.tensors import TensorSpec, batch_axis_fix
from sweeper.vocabulary import distinct_configurations

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_GUESSED_SIZE = 16
"""A dimension the model leaves open (-1) gets this size, marked for the user to check."""
_BUDGET_S = 600.0
"""The sweep ``init`` sizes: about ten minutes on this machine, confirmation included (a first
sweep that tries a dozen configurations or more, not two)."""
_CONFIRM_REPEATS = 2
_CANDIDATES = 6
"""About how many trials confirmation measures again (the front, its neighbours, the baseline)."""


@dataclasses.dataclass(frozen=True)
class Draft:
    """What ``init`` learnt of a model: enough to write its spec."""

    kind: str
    """``onnx``, ``pytorch`` or ``repository``."""
    source: str
    """The value of ``model.source.<kind>``."""
    name: str
    inputs: tuple[TensorSpec, ...]
    batched: bool
    convertible: bool
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    checks: tuple[str, ...] = ()
    """Guesses the user should check, each said in the spec."""
    latency_s: float | None = None
    """One in-process inference of one sample, where it could be timed."""


def draft(source: str, spec_folder: Path, *, keep_gpu: bool = False) -> Draft:
    """Read the model SOURCE names; UsageError when SOURCE is none of the three kinds, or with
    ``keep_gpu`` a model folder whose config asks for a GPU this host lacks."""
    path = Path(source)
    try:
        if path.is_dir():
            return _draft_folder(path, spec_folder, keep_gpu)
        if path.is_file() and path.suffix == ".onnx":
            return _draft_onnx(path, spec_folder)
        if _FACTORY.match(source) and not path.exists():
            return _draft_factory(source, spec_folder)
    except SourceError as exc:
        raise UsageError(f"{source}: {exc}") from None
    raise UsageError(
        f"{source}: not an ONNX file (.onnx), a Triton model folder (config.pbtxt and 1/) or a PyTorch "
        "factory (module.path:factory)",
        hint="sweeper init model.onnx | sweeper init models/my_model | sweeper init my_package.models:make",
    )


def _relative(path: Path, spec_folder: Path) -> str:
    """A path as the spec names it: relative to the spec's folder where it can be."""
    try:
        return str(path.resolve().relative_to(spec_folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _concrete(inputs: tuple[TensorSpec, ...]) -> tuple[tuple[TensorSpec, ...], list[str]]:
    """Open dimensions (-1) given ``_GUESSED_SIZE``; the guesses said."""
    concrete, checks = [], []
    for tensor in inputs:
        if tensor.variable:
            shape = tuple(_GUESSED_SIZE if d == -1 else d for d in tensor.shape)
            checks.append(
                f"{tensor.name}: the model leaves its shape open {list(tensor.shape)}; {list(shape)} is a guess"
            )
            tensor = dataclasses.replace(tensor, shape=shape)
        concrete.append(tensor)
    return tuple(concrete), checks


def _draft_onnx(path: Path, spec_folder: Path) -> Draft:
    model = from_onnx(path, _model_name(path.stem, path.resolve().parent.name))
    inputs, checks = _concrete(model.inputs)
    if not model.batched:
        tensors = [t.name for t in (*model.inputs, *model.outputs)]
        checks.insert(
            0,
            f"the model's first axis is fixed at {model.fixed_batch} (exported without a dynamic batch axis): "
            f"Triton cannot batch its requests, so the space has no batching knobs. To let it batch, "
            f"{batch_axis_fix(tensors)}",
        )
    return Draft(
        "onnx",
        _relative(path, spec_folder),
        model.name,
        inputs,
        batched=model.batched,
        convertible=True,
        checks=tuple(checks),
        latency_s=_onnx_latency(path, inputs, model.batched),
    )


def _gpu_fields_on_this_host(model: ModelSource, keep_gpu: bool) -> list[str]:
    """CHECK lines for a config written for a GPU on a host without one (``for_cpu``); with
    ``keep_gpu`` it is refused instead."""
    changes = () if host_has_gpu() else model.for_cpu().host_changes
    if changes and keep_gpu:
        raise UsageError(
            f"{model.folder}: the model's config asks for a GPU ({'; '.join(changes)}) and this host has none",
            hint="run init on the GPU host, or leave out --keep-gpu to measure the config on this host's CPU",
        )
    if not changes:
        return []
    return [
        f"this host has no GPU: the config is measured on its CPU, changed so: {'; '.join(changes)}. The figures "
        "are this host's; the export gives the GPU fields back (server.keep_gpu: true refuses instead)"
    ]


def _draft_folder(folder: Path, spec_folder: Path, keep_gpu: bool = False) -> Draft:
    if not (folder / "config.pbtxt").is_file():
        models = sorted(p.name for p in folder.iterdir() if (p / "config.pbtxt").is_file())
        if models:
            raise UsageError(
                f"{folder} is a model repository: give one model's folder",
                hint=", ".join(str(folder / m) for m in models[:5]),
            )
    model = from_repository(folder, None)
    inputs, checks = _concrete(model.inputs)
    checks += _gpu_fields_on_this_host(model, keep_gpu)
    latency = _onnx_latency(model.onnx_file, inputs, model.batched) if model.onnx_file is not None else None
    return Draft(
        "repository",
        _relative(folder, spec_folder),
        model.name,
        inputs,
        batched=model.batched,
        convertible=model.convertible,
        checks=tuple(checks),
        latency_s=latency,
    )


def _draft_factory(reference: str, spec_folder: Path) -> Draft:
    network = network_of(reference, spec_folder)  # imported as `sweeper run` will: from the spec's folder
    inputs, ranges, checks = _guess_inputs(network)
    latency, failure = _torch_latency(network, inputs, ranges)
    if failure is not None:
        checks.append(f"the model did not run on these guessed inputs ({failure}): give its real inputs")
    module, _, factory = reference.rpartition(":")
    name = _model_name(factory, module.rpartition(".")[2])
    return Draft("pytorch", reference, name, inputs, True, True, ranges, tuple(checks), latency)


_GENERIC = {"model", "models", "make", "build", "create", "factory", "net", "network", "main", "load", "onnx", "export"}
"""Words that name no model (``model.onnx``, ``pkg.models_hf:make``): the folder or module names it."""


def _model_name(text: str, where: str) -> str:
    """A name for the model and its study: ``text`` (a file's stem, a factory's name), or where it
    lives (the file's folder, the factory's module) when ``text`` is a generic word."""
    if re.sub(r"[^a-z]", "", text.lower().replace("get_", "").replace("_model", "")) in _GENERIC:
        text = where if re.sub(r"[^a-z]", "", where.lower()) not in _GENERIC | {""} else text
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("._-")
    return name[:100] or "model"


def unique_study_name(name: str, results_dir: Path) -> str:
    """``name``, or ``name-2``, ``name-3``, ... where the results folder already holds a study of
    that name: a second model initialised beside the first gets a study of its own."""
    candidate, suffix = name, 1
    while (results_dir / candidate).exists():
        suffix += 1
        candidate = f"{name}-{suffix}"
    return candidate


def _guess_inputs(network: Any) -> tuple[tuple[TensorSpec, ...], dict[str, tuple[float, float]], list[str]]:
    """A factory's inputs from its forward's parameters and its first layer: an embedding takes
    INT64 token ids below its size (masks and token types 0 or 1), a linear layer its
    in_features, a convolution its channels over a guessed extent."""
    import torch

    parameters = inspect.signature(network.forward).parameters.values()
    names = [
        p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ] or ["input"]
    first = next((m for m in network.modules() if not list(m.children()) and list(m.parameters())), None)
    ranges: dict[str, tuple[float, float]] = {}
    if isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
        shape, datatype, layer = (128,), "INT64", f"Embedding of {first.num_embeddings}"
        for name in names:
            binary = any(word in name for word in ("mask", "type"))
            ranges[name] = (0.0, 2.0) if binary else (0.0, float(first.num_embeddings))
    elif isinstance(first, torch.nn.Linear):
        shape, datatype, layer = (first.in_features,), "FP32", f"Linear({first.in_features}, ...)"
    elif isinstance(first, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        extent = {torch.nn.Conv1d: (128,), torch.nn.Conv2d: (224, 224), torch.nn.Conv3d: (16, 112, 112)}[type(first)]
        shape, datatype, layer = (
            (first.in_channels, *extent),
            "FP32",
            f"{type(first).__name__}({first.in_channels}, ...)",
        )
    elif isinstance(first, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)):
        shape, datatype, layer = (
            (_GUESSED_SIZE, first.input_size),
            "FP32",
            f"{type(first).__name__}({first.input_size}), batch first",
        )
    else:
        shape, datatype, layer = (_GUESSED_SIZE,), "FP32", "no layer it could read"
    inputs = tuple(TensorSpec(name, datatype, shape) for name in names)
    checks = [f"model.inputs are guessed from forward({', '.join(names)}) and the first layer ({layer})"]
    return inputs, ranges, checks


def _example(
    inputs: tuple[TensorSpec, ...], ranges: dict[str, tuple[float, float]], batched: bool = True
) -> dict[str, np.ndarray]:
    samples = generate_samples(list(inputs), 1, low=0.0, high=1.0, seed=0, ranges=ranges)
    return samples.batch(0, 1, batched=batched)


def _timed(call: Any) -> float:
    """The median of five calls, after one warm-up (seconds)."""
    call()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _onnx_latency(path: Path, inputs: tuple[TensorSpec, ...], batched: bool = True) -> float | None:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = _example(inputs, {}, batched)
        return _timed(lambda: session.run(None, feeds))
    except Exception:  # a graph ORT's CPU provider cannot run: the budget falls back to a default
        return None


def _torch_latency(
    network: Any, inputs: tuple[TensorSpec, ...], ranges: dict[str, tuple[float, float]]
) -> tuple[float | None, str | None]:
    import torch

    args = tuple(torch.from_numpy(a) for a in _example(inputs, ranges).values())
    try:
        with torch.no_grad():
            return _timed(lambda: network(*args)), None
    except Exception as exc:  # the guess is wrong: said in the spec, not raised
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"


def space_of(model: Draft) -> dict[str, list]:
    """The knobs that apply to the model, with values that tell configurations apart."""
    space: dict[str, list] = {}
    if model.batched:
        space["max_batch_size"] = [1, 8, 32]
        space["max_queue_delay_us"] = ["off", 0, 500, 2000]
    space["instance_count"] = [1, 2]
    space["protocol"] = ["http", "grpc"]
    if model.convertible:
        reference = "native" if model.kind == "repository" else "fp32"
        space["precision"] = [reference, "fp16", "int8"]
    return space


def trial_budget(model: Draft, space: dict[str, list], levels: int = 2) -> tuple[int, int, float]:
    """Trials that finish in about ``_BUDGET_S`` here with their confirmation, the confirmation
    runs expected, and the seconds one run is expected to take: a server start (about 4 s), and
    per load level (``levels``: 2 listed, or about 8 with a capacity search) its warm-up and
    three to six windows, each long enough for a few dozen requests of the in-process latency
    (5 ms where it was not timed)."""
    latency = model.latency_s if model.latency_s is not None else 0.005
    window = max(0.5, 30 * latency)
    per_run = 4.0 + levels * (0.5 + 4 * window)
    size = distinct_configurations(space)
    confirming = _CONFIRM_REPEATS * min(_CANDIDATES, size)
    trials = max(3, min(size, int(_BUDGET_S // per_run) - confirming))
    return trials, confirming, per_run


def launcher_block(keep_gpu: bool = False) -> str:
    """``server:``: the local launcher where a tritonserver is installed, else Docker; with
    ``keep_gpu`` a config that asks for a GPU is refused on a host without one."""
    kept = (
        "  keep_gpu: true              # a config that asks for a GPU is never measured on a CPU\n" if keep_gpu else ""
    )
    if importlib.util.find_spec("pytriton") is not None or shutil.which("tritonserver"):
        local = "  launcher: local             # nvidia-pytriton's tritonserver, or server.tritonserver: PATH\n"
        return f"server:\n{local}{kept}"
    return (
        "server:\n  launcher: docker            # no local tritonserver here (pip install nvidia-pytriton for one)\n"
        f"  docker: {{image: nvcr.io/nvidia/tritonserver:24.10-py3}}\n{kept}"
    )


def spec_text(
    model: Draft,
    spec_name: str,
    trials: int | None = None,
    *,
    study_name: str | None = None,
    latency_budget_ms: float | None = None,
    keep_gpu: bool = False,
) -> str:
    """The commented spec of a model, to be written as ``spec_name``: ranked by p50 at
    concurrency 1 and throughput at 8, or with ``latency_budget_ms`` by the load sustained while
    p99 stays within it (capacity) and the server's memory; ``keep_gpu``: ``server.keep_gpu``."""
    space = space_of(model)
    budget, confirming, per_run = trial_budget(model, space, 8 if latency_budget_ms is not None else 2)
    size = distinct_configurations(space)
    trials = trials if trials is not None else budget
    timed = f"{model.latency_s * 1000:.3g} ms in-process" if model.latency_s is not None else "not timed in-process"
    lines = [
        f"# A first sweep of {model.name}, written by `sweeper init` ({model.kind} source).",
        f"#   sweeper check {spec_name}   # every check, nothing started",
        f"#   sweeper run {spec_name}     # about {(trials + confirming) * per_run / 60:.0f} min here: {trials} "
        f"trials and about {confirming} confirmation runs, {per_run:.0f} s each (one inference {timed})",
    ]
    lines += [f"# CHECK: {check}" for check in model.checks]
    lines += [
        "study:",
        f"  name: {study_name or model.name}",
        f"  trials: {trials}                # configurations to measure, of the {size} the space has",
        "  sampler: tpe",
        "  seed: 0",
        f"  confirm_repeats: {_CONFIRM_REPEATS}         # the front's candidates on {_CONFIRM_REPEATS} more fresh "
        "servers each (0: off)",
    ]
    lines += _model_lines(model)
    lines.append(launcher_block(keep_gpu).rstrip("\n"))
    lines += _space_lines(model, space)
    lines += _ranking_lines(latency_budget_ms)
    if model.convertible:
        lines += [
            "accuracy:                 # FP16/INT8 trials whose outputs drift further are infeasible",
            "  min_cosine_similarity: 0.999",
        ]
    return "\n".join(lines) + "\n"


def _model_lines(model: Draft) -> list[str]:
    """``model:``: its name, source, inputs and the ranges of its generated requests."""
    lines = [
        "model:",
        *([] if model.kind == "repository" else [f"  name: {model.name}"]),
        f"  source: {{{model.kind}: {json.dumps(model.source)}}}",
        "  inputs:                  # name, datatype and "
        + ("per-sample shape (no batch axis)" if model.batched else "the model's whole shape (it has no batch axis)"),
        *(
            f"    - {{name: {json.dumps(t.name)}, datatype: {t.datatype}, shape: {list(t.shape)}}}"
            for t in model.inputs
        ),
    ]
    if model.ranges:
        lines.append("  example_inputs:          # generated requests: each input's own range [low, high)")
        lines.append("    ranges:")
        lines += [f"      {json.dumps(n)}: {{low: {lo:g}, high: {hi:g}}}" for n, (lo, hi) in model.ranges.items()]
    return lines


def _ranking_lines(latency_budget_ms: float | None) -> list[str]:
    if latency_budget_ms is None:
        return [
            "load:",
            "  concurrency: [1, 8]      # requests in flight: 1 for latency, 8 for throughput",
            "objectives:",
            "  - {metric: p50_ms, concurrency: 1, direction: minimize}",
            "  - {metric: throughput, concurrency: 8, direction: maximize}",
            "# constraints:             # a feasible trial keeps them, e.g. a latency budget:",
            "#   - {metric: p99_ms, concurrency: 8, max: 50}",
        ]
    budget = f"{latency_budget_ms:g}"
    return [
        "load:",
        "  concurrency: [1]         # measured as listed (the latency breakdown); each capacity search starts here",
        "  capacity: {low: 1, high: 64, resolution: 2}   # concurrency 1, 2, 4, ... while p99 holds, then bisected",
        "objectives:                # what a deployment is sized by: load sustained within the budget, and memory",
        f"  - {{metric: capacity, percentile: p99_ms, budget_ms: {budget}, direction: maximize, primary: true}}",
        "  - {metric: server_memory_mb, direction: minimize}",
        "constraints:               # a configuration that breaks the budget even alone is infeasible",
        f"  - {{metric: p99_ms, concurrency: 1, max: {budget}}}",
    ]


def _space_lines(model: Draft, space: dict[str, list]) -> list[str]:
    lines = ["search_space:"]
    if not model.batched:
        lines.append("  # max_batch_size 0: requests have no batch axis, so no batching knobs")
    notes = {
        "max_queue_delay_us": "   # off: no dynamic_batching block; 0: batching without waiting",
        "precision": "   # converted with ONNX Runtime's tools",
    }
    for knob, values in space.items():
        lines.append(f"  {knob}: [{', '.join(map(str, values))}]{notes.get(knob, '')}")
    if model.kind == "repository":
        lines.append("# The baseline is the folder's own config.pbtxt: always trial 0.")
    else:
        lines.append("# The baseline, what a plain deployment runs: always trial 0.")
        batching = "max_batch_size: 8, max_queue_delay_us: off, " if model.batched else ""
        lines.append(f"baseline: {{{batching}instance_count: 1, protocol: http, precision: fp32}}")
    return lines
