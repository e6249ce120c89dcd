"""Stage 2: one ONNX file per precision, built once per study and checked against FP32.

Layout: ``<study dir>/models/<precision>/model.onnx`` with ``accuracy.json`` beside it, so a
resumed study reuses both. FP16 uses ONNX Runtime's float16 converter (FP32 inputs and outputs
kept); INT8 uses ONNX Runtime quantization: dynamic (QOperator) for the CPU execution provider,
static QDQ with a calibration reader where the server has a GPU and for ``int8_trt``.
``fp16_trt`` ships the FP32 graph: TensorRT converts it on the server, so the accuracy of both
TensorRT precisions is measured through the served model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from sweeper.errors import SpecError, TrialError
from sweeper.spec import TENSORRT_PRECISIONS, LoadedSpec, resolve_factory
from sweeper.tensors import TensorSpec, generate_inputs, onnx_io

# The accuracy sample uses its own seed so it never equals the load generator's data.
_ACCURACY_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class ModelArtifact:
    precision: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_abs_error: float | None
    cosine_similarity: float | None
    """None for TensorRT precisions: the engine is built on the server, so the trial measures
    accuracy through the served model (``ArtifactBuilder.compare``). Whether the figures are
    within the spec's tolerance is ``ArtifactBuilder.outside_tolerance``'s to say."""


class ArtifactBuilder:
    """Builds each precision on first use; ``build`` returns at once for a cached one."""

    def __init__(self, loaded: LoadedSpec, models_dir: Path, *, gpu: bool) -> None:
        self._loaded = loaded
        self._spec = loaded.spec
        self._dir = models_dir
        self._gpu = gpu
        self._built: dict[str, ModelArtifact | TrialError] = {}
        self._reference: list[np.ndarray] | None = None

    def build(self, precision: str) -> ModelArtifact:
        """The artifact for ``precision``; a failed conversion is a TrialError (remembered)."""
        if precision not in self._built:
            try:
                self._built[precision] = self._build(precision)
            except (SpecError, TrialError):
                raise
            except Exception as exc:  # converters raise anything; the study goes on without it
                self._built[precision] = TrialError(f"building the {precision} model failed: {exc}")
        built = self._built[precision]
        if isinstance(built, TrialError):
            raise built
        return built

    def _build(self, precision: str) -> ModelArtifact:
        target = self._dir / precision / "model.onnx"
        report = target.with_name("accuracy.json")
        if not (target.is_file() and report.is_file()):
            target.parent.mkdir(parents=True, exist_ok=True)
            fp32 = self._fp32() if precision != "fp32" else None
            partial = target.with_suffix(".partial.onnx")
            if precision == "fp32":
                self._write_fp32(partial)
            elif precision == "fp16":
                _to_fp16(fp32, partial)
            elif precision == "fp16_trt":
                shutil.copyfile(fp32, partial)  # TensorRT converts the FP32 graph itself
            else:
                self._to_int8(fp32, partial, static=precision == "int8_trt" or self._gpu)
            partial.replace(target)
            if fp32 is None:
                error, cosine = 0.0, 1.0
            elif precision in TENSORRT_PRECISIONS:
                error, cosine = None, None
            else:
                error, cosine = self.compare(_run(target, self.accuracy_sample()))
            report.write_text(json.dumps({"max_abs_error": error, "cosine_similarity": cosine}))
        figures = json.loads(report.read_text())
        inputs, outputs = self.io(target)
        return ModelArtifact(
            precision=precision,
            path=target,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            max_abs_error=figures["max_abs_error"],
            cosine_similarity=figures["cosine_similarity"],
        )

    def _fp32(self) -> Path:
        return self.build("fp32").path

    def io(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Model I/O; the spec's ``model.inputs`` overrides what the graph says."""
        inputs, outputs = onnx_io(onnx.load(str(path), load_external_data=False))
        if self._spec.model.inputs is not None:
            inputs = [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in self._spec.model.inputs]
        unknown = [t for t in inputs if -1 in t.shape]
        if unknown:
            raise SpecError(
                f"{self._loaded.path}: model.inputs: the model's input '{unknown[0].name}' has a "
                f"variable per-sample shape {list(unknown[0].shape)}",
                hint="give model.inputs with a concrete shape for load generation",
            )
        return inputs, outputs

    def sample_inputs(self, inputs: list[TensorSpec] | tuple[TensorSpec, ...], batch_size: int, seed: int) -> dict[str, np.ndarray]:
        data = self._spec.model.example_inputs
        return generate_inputs(list(inputs), batch_size, low=data.low, high=data.high, seed=seed)

    def _write_fp32(self, out: Path) -> None:
        source = self._spec.model.source
        if source.onnx is not None:
            shutil.copyfile(source.onnx, out)
            return
        import torch  # only a pytorch source needs torch

        factory = resolve_factory(source.pytorch, self._loaded.path)
        module = factory().eval()
        specs = [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in self._spec.model.inputs]
        example = self.sample_inputs(specs, 1, self._spec.model.example_inputs.seed)
        args = tuple(torch.from_numpy(example[t.name]) for t in specs)
        with torch.no_grad():
            produced = module(*args)
        count = len(produced) if isinstance(produced, (tuple, list)) else 1
        output_names = [f"output{i}" for i in range(count)] if count > 1 else ["output"]
        names = [t.name for t in specs] + output_names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                args,
                str(out),
                input_names=[t.name for t in specs],
                output_names=output_names,
                dynamic_axes={name: {0: "batch"} for name in names},
                dynamo=False,
            )

    def _to_int8(self, fp32: Path, out: Path, *, static: bool) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static
        from onnxruntime.quantization.calibrate import CalibrationDataReader

        prepared = out.with_name("preprocessed.onnx")
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if not static:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        else:
            inputs, _ = self.io(fp32)
            data = self._spec.model.example_inputs
            batches = [self.sample_inputs(inputs, 1, data.seed + i) for i in range(data.samples)]

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._items = iter(batches)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self._items, None)

            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ)
        prepared.unlink(missing_ok=True)

    def accuracy_sample(self) -> dict[str, np.ndarray]:
        """The inputs every precision is checked on (``example_inputs.samples`` of them)."""
        inputs, _ = self.io(self._fp32())
        data = self._spec.model.example_inputs
        return self.sample_inputs(inputs, data.samples, data.seed + _ACCURACY_SEED_OFFSET)

    def compare(self, produced: list[np.ndarray]) -> tuple[float, float]:
        """Max abs error and (worst over outputs) cosine similarity against FP32 on the sample."""
        if self._reference is None:
            self._reference = _run(self._fp32(), self.accuracy_sample())
        pairs = [(r, np.asarray(p, dtype=np.float64)) for r, p in zip(self._reference, produced)]
        error = max(float(np.max(np.abs(r - p))) for r, p in pairs)
        cosine = min(_cosine(r, p) for r, p in pairs)
        return error, cosine

    def outside_tolerance(self, precision: str, error: float, cosine: float) -> str | None:
        if precision == "fp32":
            return None
        tolerance = self._spec.accuracy
        if cosine < tolerance.min_cosine_similarity:
            return f"{precision} cosine similarity {cosine:.6f} < {tolerance.min_cosine_similarity}"
        if tolerance.max_abs_error is not None and error > tolerance.max_abs_error:
            return f"{precision} max abs error {error:.3g} > {tolerance.max_abs_error}"
        return None


def _to_fp16(fp32: Path, out: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o, dtype=np.float64) for o in _session(path).run(None, feed)]


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
