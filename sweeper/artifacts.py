"""Stage 2: one model file per precision, built once per study and checked against the reference.

Layout: ``<study dir>/models/<precision>/model.onnx`` with ``accuracy.json`` beside it, so a
resumed study reuses both. The reference (``fp32`` for an ONNX or PyTorch source, ``native``
for a model folder: the file as given) is copied; FP16 uses ONNX Runtime's float16 converter
(inputs and outputs keep their type); INT8 uses ONNX Runtime quantization after
``quant_pre_process``: dynamic (QOperator) for the CPU execution provider, static QDQ with the
sweep's samples as calibration data where the server has a GPU and for ``int8_trt``.
``fp16_trt`` ships the reference graph: TensorRT converts it on the server, so the accuracy of
both TensorRT precisions is measured through the served model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from sweeper.data import Samples
from sweeper.errors import PrecisionError, TrialError
from sweeper.files import write_atomic
from sweeper.tensors import TensorSpec

Feeds = list[dict[str, np.ndarray]]
Converter = Callable[[Path, Path, Feeds, bool], None]
"""(reference file, output file, the sweep's samples as requests, gpu) -> writes the converted model."""


def _copy(reference: Path, out: Path, feeds: Feeds, gpu: bool) -> None:
    shutil.copyfile(reference, out)


def _to_fp16(reference: Path, out: Path, feeds: Feeds, gpu: bool) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_float_to_float16(onnx.load(str(reference)), keep_io_types=True)
    onnx.save(model, str(out))


def _to_int8(reference: Path, out: Path, feeds: Feeds, gpu: bool, *, static: bool = False) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    prepared = out.with_name("preprocessed.onnx")
    model = onnx.load(str(reference))
    # skl2onnx may list one domain twice; ONNX Runtime's quantizer then finds no opset.
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in versions.items())
    onnx.save(model, str(prepared))
    quant_pre_process(str(prepared), str(prepared), skip_symbolic_shape=True)
    try:
        if not (static or gpu):
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
            return

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._items = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._items, None)

        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ)
    finally:
        prepared.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Precision:
    """How a precision's model file is made, and the TensorRT mode that serves it (if any)."""

    convert: Converter
    tensorrt: str | None = None

    @property
    def reference(self) -> bool:
        """The model as given, not a conversion."""
        return self.convert is _copy


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision(_copy),
    "native": Precision(_copy),
    "fp16": Precision(_to_fp16),
    "int8": Precision(_to_int8),
    "fp16_trt": Precision(_copy, tensorrt="FP16"),
    "int8_trt": Precision(lambda *args: _to_int8(*args, static=True), tensorrt="INT8"),
}
"""Every precision a search space may name; adding one is one entry."""
REFERENCE_PRECISIONS = ("fp32", "native")


@dataclasses.dataclass(frozen=True)
class Drift:
    """How far a precision's outputs are from the reference model's on the sweep's samples."""

    max_abs_error: float
    cosine_similarity: float
    """The worst over the outputs."""
    top1_agreement: float | None = None
    """The share of score vectors (the last axis of each score output: classes, a vocabulary)
    whose highest entry is the reference's, the worst over those outputs; None without one."""

    def as_dict(self) -> dict:
        """JSON-ready form (accuracy.json)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelArtifact:
    """One precision's model file and its drift from the reference on the sweep's samples."""

    precision: str
    path: Path
    drift: Drift | None
    """None for TensorRT precisions: the engine is built on the server, so the trial measures
    accuracy through the served model (``ArtifactBuilder.compare``)."""


class ArtifactBuilder:
    """Builds each precision on first use; ``build`` returns at once for a cached one."""

    def __init__(
        self,
        reference: Path,
        samples: Samples,
        models_dir: Path,
        *,
        gpu: bool,
        batched: bool = True,
        score_outputs: tuple[str, ...] = (),
    ) -> None:
        self._reference = reference
        self._scores = score_outputs
        self._samples = samples
        self._batched = batched
        self._dir = models_dir
        self._gpu = gpu
        self._built: dict[str, ModelArtifact | PrecisionError] = {}
        self._expected: list[list[np.ndarray]] | None = None
        self._names: list[str] = []

    def build(self, precision: str) -> ModelArtifact:
        """The artifact for ``precision``; a failed conversion is a PrecisionError (remembered)."""
        if precision not in self._built:
            try:
                self._built[precision] = self._build(precision)
            except TrialError as exc:
                self._built[precision] = PrecisionError(str(exc), exc.hint)
            except OSError:
                raise  # the results folder, not the model: the run cannot go on
            except Exception as exc:  # converters raise anything; the study goes on without it
                self._built[precision] = PrecisionError(f"building the {precision} model failed: {exc}")
        built = self._built[precision]
        if isinstance(built, PrecisionError):
            raise built
        return built

    def _build(self, precision: str) -> ModelArtifact:
        recipe = PRECISIONS[precision]
        target = self._dir / precision / "model.onnx"
        report = target.with_name("accuracy.json")
        if not (target.is_file() and report.is_file()):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial.onnx")
            recipe.convert(self._reference, partial, self.accuracy_feeds(), self._gpu)
            if not recipe.reference and recipe.tensorrt is None and _same_computation(self._reference, partial):
                partial.unlink()
                raise PrecisionError(
                    f"{precision} changes no operator of this model: it would serve as the model as given does",
                    hint=f"{precision} is left out; the model's own precision is measured",
                )
            partial.replace(target)
            if recipe.tensorrt is not None:
                figures = {}
            elif recipe.reference:
                figures = Drift(0.0, 1.0, 1.0 if self._scores else None).as_dict()
            else:
                figures = self.compare(run_onnx(target, self.accuracy_feeds())).as_dict()
            write_atomic(report, json.dumps(figures))
        figures = json.loads(report.read_text())
        return ModelArtifact(precision, target, Drift(**figures) if figures else None)

    def accuracy_feeds(self) -> list[dict[str, np.ndarray]]:
        """Each sample as a request of one: what every precision is checked on."""
        return [self._samples.batch(i, 1, batched=self._batched) for i in range(self._samples.count)]

    def compare(self, produced: list[list[np.ndarray]]) -> Drift:
        """The drift of ``produced[sample][output]`` (in the reference model's output order)
        from the reference model's outputs."""
        if self._expected is None:
            self._expected = run_onnx(self._reference, self.accuracy_feeds())
            self._names = [o.name for o in _session(self._reference).get_outputs()]
        error, cosine, agreements = 0.0, 1.0, []
        for index, name in enumerate(self._names):
            expected = [outputs[index] for outputs in self._expected]
            served = [np.asarray(outputs[index], dtype=np.float64) for outputs in produced]
            reference, candidate = (np.concatenate([a.ravel() for a in arrays]) for arrays in (expected, served))
            if reference.shape != candidate.shape:
                return Drift(math.inf, -1.0, 0.0 if self._scores else None)
            if reference.size:
                error = max(error, float(np.max(np.abs(reference - candidate))))
            cosine = min(cosine, _cosine(reference, candidate))
            if name in self._scores:
                agreements.append(top1_agreement(expected, served))
        return Drift(error, cosine, min(agreements) if agreements else None)


def _same_computation(reference: Path, converted: Path) -> bool:
    """Whether a conversion left every operator and every weight's type as it was, casts and
    identities aside (a tree ensemble has nothing to quantize; FP16 only wraps its operators in
    casts; the quantizer's preprocessing drops the identities onnxmltools writes)."""

    def signature(path: Path) -> tuple[list, list]:
        graph = onnx.load(str(path), load_external_data=False).graph
        operators = sorted((n.domain, n.op_type) for n in graph.node if n.op_type not in ("Cast", "Identity"))
        return operators, sorted(i.data_type for i in graph.initializer)

    return signature(reference) == signature(converted)


def top1_agreement(expected: list[np.ndarray], served: list[np.ndarray]) -> float:
    """The share of score vectors (the last axis, per sample and position) whose highest entry
    the served output puts where the reference does."""
    same = total = 0
    for reference, candidate in zip(expected, served):
        if reference.ndim == 0 or reference.shape[-1] < 2:
            continue
        width = reference.shape[-1]
        picks = np.argmax(reference.reshape(-1, width), axis=1) == np.argmax(candidate.reshape(-1, width), axis=1)
        same, total = same + int(picks.sum()), total + picks.size
    return same / total if total else 1.0


def score_outputs(outputs: tuple[TensorSpec, ...]) -> tuple[str, ...]:
    """The outputs whose last axis is scores (over classes, a vocabulary): floating point with a
    last axis of more than one entry (or one the model leaves open)."""
    floats = ("FP16", "FP32", "FP64", "BF16")
    return tuple(t.name for t in outputs if t.datatype in floats and t.shape and t.shape[-1] != 1)


def outside_tolerance(
    precision: str,
    drift: Drift,
    *,
    min_cosine: float,
    max_error: float | None = None,
    min_top1: float | None = None,
) -> str | None:
    """Why a precision's drift is not acceptable (the spec's ``accuracy``), or None when it is."""
    if drift.cosine_similarity < min_cosine:
        return f"{precision} cosine similarity {drift.cosine_similarity:.6f} < {min_cosine}"
    if max_error is not None and drift.max_abs_error > max_error:
        return f"{precision} max abs error {drift.max_abs_error:.3g} > {max_error}"
    if min_top1 is not None and drift.top1_agreement is not None and drift.top1_agreement < min_top1:
        return f"{precision} top-1 agreement {drift.top1_agreement:.4f} < {min_top1}"
    return None


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """The model's outputs on each of ``feeds`` (ONNX Runtime, CPU, one session), as float64
    for comparison: ``[feed][output]``."""
    session = _session(path)
    return [[np.asarray(o, dtype=np.float64) for o in session.run(None, feed)] for feed in feeds]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 if norms == 0 else float(np.dot(a, b) / norms)


def time_in_process(path: Path, feed: dict[str, np.ndarray], repeats: int = 50) -> float:
    """Median ms of one ONNX Runtime call in this process: the 'local' side of the gap."""
    session = _session(path)
    for _ in range(3):
        session.run(None, feed)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))
