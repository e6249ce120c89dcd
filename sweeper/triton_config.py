"""Stage 3: config.pbtxt, built and parsed with Triton's own protobuf schema."""

from __future__ import annotations

from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.spec import TrialConfig
from sweeper.tensors import TensorSpec

Backend = Literal["onnxruntime", "python"]


def build_model_config(
    model_name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    config: TrialConfig,
    *,
    backend: Backend,
    gpu: bool,
    tensorrt_precision: str | None = None,
) -> mc.ModelConfig:
    """The model config for one trial; dynamic batching is absent when the delay is 0."""
    model = mc.ModelConfig(name=model_name, backend=backend, max_batch_size=config.max_batch_size)
    if backend == "onnxruntime":
        model.platform = "onnxruntime_onnx"
        model.default_model_filename = "model.onnx"
    for tensor, target in [(t, model.input) for t in inputs] + [(t, model.output) for t in outputs]:
        target.add(name=tensor.name, data_type=mc.DataType.Value(f"TYPE_{tensor.datatype}"), dims=tensor.shape)
    if config.max_queue_delay_us > 0:
        model.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    model.instance_group.add(count=config.instance_count, kind=kind)
    if tensorrt_precision is not None:
        # ONNX Runtime's TensorRT execution provider builds the engine in this precision.
        trt = model.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = tensorrt_precision
    return model


def to_pbtxt(model: mc.ModelConfig) -> str:
    return text_format.MessageToString(model)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; a syntax error becomes ValueError with Triton's field names."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model config: {exc}") from None


def knobs_from_pbtxt(text: str) -> dict[str, Any]:
    """The three server-side knobs of an existing config.pbtxt (the team's current config)."""
    model = parse_pbtxt(text)
    if model.max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1 for the sweep to compare batching")
    delay = model.dynamic_batching.max_queue_delay_microseconds if model.HasField("dynamic_batching") else 0
    count = sum(group.count or 1 for group in model.instance_group) or 1
    return {"max_batch_size": model.max_batch_size, "max_queue_delay_us": delay, "instance_count": count}
