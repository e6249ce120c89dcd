"""Stage 3: config.pbtxt, built and parsed with Triton's own protobuf schema.

A trial's config is its model's *template* (the user's config.pbtxt, or one generated from
an ONNX graph) with only the swept fields rewritten: every other field is kept as it was.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.tensors import TensorSpec
from sweeper.vocabulary import BATCHING_OFF, TrialConfig

# Backends that a platform string stands for (config.pbtxt may name either).
_PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
}


def template_from_io(model_name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> mc.ModelConfig:
    """A config for a model known by its tensors alone (an ONNX file): name, inputs, outputs."""
    model = mc.ModelConfig(name=model_name)
    for tensors, target in ((inputs, model.input), (outputs, model.output)):
        for tensor in tensors:
            datatype = "STRING" if tensor.datatype == "BYTES" else tensor.datatype
            target.add(name=tensor.name, data_type=mc.DataType.Value(f"TYPE_{datatype}"), dims=tensor.shape)
    return model


def model_backend(model: mc.ModelConfig) -> str:
    """The Triton backend a config needs (``backend``, or the one its ``platform`` implies)."""
    return model.backend or _PLATFORM_BACKENDS.get(model.platform, model.platform)


def apply_trial(
    template: mc.ModelConfig,
    config: TrialConfig,
    *,
    serve_with: str | None = None,
    instance_kind: int | None = None,
    tensorrt_precision: str | None = None,
) -> mc.ModelConfig:
    """The template with one trial's knobs.

    ``serve_with`` (``onnxruntime`` or ``python``) sets the backend of an ONNX model;
    ``instance_kind`` the kind of an instance group the template lacks. ``dynamic_batching``
    keeps its other fields (preferred sizes above ``max_batch_size`` are dropped: Triton
    refuses them); ``off`` removes the block."""
    model = mc.ModelConfig()
    model.CopyFrom(template)
    model.max_batch_size = config.max_batch_size
    if config.max_queue_delay_us == BATCHING_OFF:
        model.ClearField("dynamic_batching")
    else:
        model.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
        kept = [size for size in model.dynamic_batching.preferred_batch_size if size <= config.max_batch_size]
        del model.dynamic_batching.preferred_batch_size[:]
        model.dynamic_batching.preferred_batch_size.extend(kept)
    if not model.instance_group:
        group = model.instance_group.add(count=config.instance_count)
        if instance_kind is not None:
            group.kind = instance_kind
    for group in model.instance_group:
        group.count = config.instance_count
    if serve_with is not None:
        serve_as(model, serve_with, template)
    if tensorrt_precision is not None:
        # ONNX Runtime's TensorRT execution provider builds the engine in this precision.
        model.optimization.execution_accelerators.ClearField("gpu_execution_accelerator")
        trt = model.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = tensorrt_precision
    return model


def serve_as(model: mc.ModelConfig, backend: str, template: mc.ModelConfig) -> mc.ModelConfig:
    """Set (in place) the backend an ONNX model is served with: ``onnxruntime`` (Triton's
    backend), ``python`` (the sweeper's python-backend model) or ``original`` (the template's own
    backend, platform and model file name). Returns ``model``."""
    if backend == "onnxruntime":
        model.backend, model.platform = "onnxruntime", "onnxruntime_onnx"
        model.default_model_filename = "model.onnx"
    elif backend == "python":
        model.backend = "python"
        model.ClearField("platform")
        model.ClearField("default_model_filename")
    else:
        model.backend, model.platform = template.backend, template.platform
        model.default_model_filename = template.default_model_filename
    return model


def to_pbtxt(model: mc.ModelConfig) -> str:
    """config.pbtxt text."""
    return text_format.MessageToString(model)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; a syntax error becomes ValueError with Triton's field names."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model config: {exc}") from None


def knobs_from_config(model: mc.ModelConfig) -> dict[str, Any]:
    """The three server-side knobs of a config: ``dynamic_batching { }`` is delay 0, no block is
    ``off``; the instance count is the ``count`` of its instance groups (Triton's default 1)."""
    delay = model.dynamic_batching.max_queue_delay_microseconds if model.HasField("dynamic_batching") else BATCHING_OFF
    counts = {group.count or 1 for group in model.instance_group} or {1}
    if len(counts) > 1:
        raise ValueError(f"its instance groups have different counts {sorted(counts)}; instance_count sets them all")
    return {"max_batch_size": model.max_batch_size, "max_queue_delay_us": delay, "instance_count": counts.pop()}
