"""config.pbtxt through Triton's own schema: built, printed, parsed back."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.spec import TrialConfig
from sweeper.tensors import TensorSpec
from sweeper.triton_config import build_model_config, knobs_from_pbtxt, parse_pbtxt, to_pbtxt

INPUTS = [TensorSpec("x", "FP32", (16,))]
OUTPUTS = [TensorSpec("y", "FP32", (-1, 4))]


def test_round_trip_keeps_every_field():
    model = build_model_config("m", INPUTS, OUTPUTS, TrialConfig(8, 250, 3, "grpc", "fp32"), backend="python", gpu=False)
    parsed = parse_pbtxt(to_pbtxt(model))
    assert parsed == model
    assert parsed.max_batch_size == 8
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert parsed.instance_group[0].count == 3
    assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(parsed.output[0].dims) == [-1, 4]
    assert parsed.input[0].data_type == mc.TYPE_FP32


def test_zero_delay_means_no_dynamic_batching():
    model = build_model_config("m", INPUTS, OUTPUTS, TrialConfig(4, 0, 1, "http", "fp32"), backend="python", gpu=False)
    assert not model.HasField("dynamic_batching")
    assert "dynamic_batching" not in to_pbtxt(model)


def test_onnxruntime_backend_on_gpu_with_tensorrt():
    model = build_model_config(
        "m", INPUTS, OUTPUTS, TrialConfig(4, 100, 2, "http", "fp16_trt"), backend="onnxruntime", gpu=True, tensorrt_precision="FP16"
    )
    assert (model.backend, model.platform, model.default_model_filename) == ("onnxruntime", "onnxruntime_onnx", "model.onnx")
    assert model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    trt = model.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"


def test_knobs_from_an_existing_config():
    text = 'max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100000 }\ninstance_group [{ count: 2 }]'
    assert knobs_from_pbtxt(text) == {"max_batch_size": 8, "max_queue_delay_us": 100000, "instance_count": 2}
    assert knobs_from_pbtxt("max_batch_size: 4")["max_queue_delay_us"] == 0


def test_invalid_pbtxt_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="max_batch_sise"):
        parse_pbtxt("max_batch_sise: 8")
