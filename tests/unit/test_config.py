"""config.pbtxt through Triton's own schema: a template with only the swept fields rewritten."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.tensors import TensorSpec, config_io
from sweeper.triton_config import (
    apply_trial,
    config_field,
    knobs_from_config,
    model_backend,
    parse_pbtxt,
    template_from_io,
    to_pbtxt,
)
from sweeper.vocabulary import TrialConfig

INPUTS = [TensorSpec("x", "FP32", (16,)), TensorSpec("tokens", "BYTES", (-1,))]
OUTPUTS = [TensorSpec("y", "FP32", (-1, 4))]
TEMPLATE = template_from_io("m", INPUTS, OUTPUTS)


def test_round_trip_keeps_every_field():
    model = apply_trial(
        TEMPLATE,
        TrialConfig(8, 250, 3, "grpc", "fp32"),
        serve_with="python",
        instance_kind=mc.ModelInstanceGroup.KIND_CPU,
    )
    parsed = parse_pbtxt(to_pbtxt(model))
    assert parsed == model
    assert parsed.max_batch_size == 8 and parsed.backend == "python"
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert parsed.instance_group[0].count == 3 and parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(parsed.output[0].dims) == [-1, 4]
    assert parsed.input[1].data_type == mc.TYPE_STRING
    assert config_io(parsed) == (INPUTS, OUTPUTS)


def test_off_has_no_block_and_zero_batches_without_waiting():
    off = apply_trial(TEMPLATE, TrialConfig(4, "off", 1, "http", "fp32"))
    zero = apply_trial(TEMPLATE, TrialConfig(4, 0, 1, "http", "fp32"))
    assert not off.HasField("dynamic_batching") and "dynamic_batching" not in to_pbtxt(off)
    assert zero.HasField("dynamic_batching") and zero.dynamic_batching.max_queue_delay_microseconds == 0
    assert "dynamic_batching {\n}" in to_pbtxt(zero)
    assert knobs_from_config(off)["max_queue_delay_us"] == "off"
    assert knobs_from_config(zero)["max_queue_delay_us"] == 0


def test_a_templates_other_fields_are_kept():
    template = parse_pbtxt(
        'name: "m" platform: "onnxruntime_onnx" max_batch_size: 16 '
        "dynamic_batching { preferred_batch_size: [4, 16] max_queue_delay_microseconds: 100 "
        "default_queue_policy { timeout_action: REJECT } } "
        "instance_group [{ count: 2 kind: KIND_GPU gpus: [0] }, { count: 2 kind: KIND_GPU gpus: [1] }] "
        'parameters { key: "intra_op_thread_count" value { string_value: "2" } } '
        "version_policy { latest { num_versions: 1 } } "
        'model_warmup [{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [16] zero_data: true } } }]'
    )
    model = apply_trial(template, TrialConfig(8, 0, 3, "grpc", "native"))
    assert list(model.dynamic_batching.preferred_batch_size) == [4], "sizes above max_batch_size are dropped"
    assert model.dynamic_batching.default_queue_policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert [g.count for g in model.instance_group] == [3, 3] and [list(g.gpus) for g in model.instance_group] == [
        [0],
        [1],
    ]
    assert model.parameters["intra_op_thread_count"].string_value == "2"
    assert model.version_policy.latest.num_versions == 1 and model.model_warmup[0].name == "w"
    assert model.platform == "onnxruntime_onnx" and model_backend(model) == "onnxruntime"
    assert template.max_batch_size == 16, "the template itself is not changed"


def test_onnxruntime_backend_on_gpu_with_tensorrt():
    model = apply_trial(
        TEMPLATE,
        TrialConfig(4, 100, 2, "http", "fp16_trt"),
        serve_with="onnxruntime",
        instance_kind=mc.ModelInstanceGroup.KIND_GPU,
        tensorrt_precision="FP16",
    )
    assert (model.backend, model.platform, model.default_model_filename) == (
        "onnxruntime",
        "onnxruntime_onnx",
        "model.onnx",
    )
    assert model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    trt = model.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"


def test_knobs_from_an_existing_config():
    text = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100000 }\ninstance_group [{ count: 2 }]"
    assert knobs_from_config(parse_pbtxt(text)) == {
        "max_batch_size": 8,
        "max_queue_delay_us": 100000,
        "instance_count": 2,
    }
    assert knobs_from_config(parse_pbtxt("max_batch_size: 4")) == {
        "max_batch_size": 4,
        "max_queue_delay_us": "off",
        "instance_count": 1,
    }
    with pytest.raises(ValueError, match="different counts"):
        knobs_from_config(parse_pbtxt("instance_group [{ count: 1 }, { count: 2 }]"))


def test_invalid_pbtxt_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="max_batch_sise"):
        parse_pbtxt("max_batch_sise: 8")


def test_swept_fields_are_set_on_top_of_the_knobs_and_an_unset_one_keeps_the_template():
    template = parse_pbtxt(
        'name: "m"\nmax_batch_size: 8\ndynamic_batching { preferred_batch_size: [8] }\n'
        'parameters { key: "intra_op_thread_count" value { string_value: "3" } }\n'
        "response_cache { enable: false }\n"
    )
    fields = (
        ("config.dynamic_batching.preferred_batch_size", "[2, 4]"),
        ("config.instance_group[0].kind", "KIND_CPU"),
        ("config.parameters.inter_op_thread_count", "2"),
        ("config.response_cache", None),
        ("config.optimization.execution_accelerators.cpu_execution_accelerator", '[{"name": "openvino"}]'),
    )
    model = apply_trial(template, TrialConfig(8, 100, 2, "http", "fp32", extra=fields))
    assert list(model.dynamic_batching.preferred_batch_size) == [2, 4]
    assert model.dynamic_batching.max_queue_delay_microseconds == 100
    assert model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and model.instance_group[0].count == 2
    assert model.parameters["intra_op_thread_count"].string_value == "3", "the template's other entries stay"
    assert model.parameters["inter_op_thread_count"].string_value == "2"
    assert model.HasField("response_cache") and not model.response_cache.enable, "None keeps the template's"
    assert model.optimization.execution_accelerators.cpu_execution_accelerator[0].name == "openvino"
    off = apply_trial(template, TrialConfig(8, "off", 1, "http", "fp32", extra=fields))
    assert not off.HasField("dynamic_batching"), "a batching field does not turn batching on"


def test_a_field_reads_back_as_the_parameter_it_was_stored_as():
    for path, value in (
        ("dynamic_batching.preferred_batch_size", [4, 8]),
        ("instance_group[1].kind", "KIND_GPU"),
        ("parameters.intra_op_thread_count", "2"),
        ("response_cache", {"enable": True}),
        ("dynamic_batching.preserve_ordering", True),
    ):
        field = config_field(path)
        stored = field.encode(value)
        model = mc.ModelConfig()
        assert field.read(model) is None, "unset"
        field.apply(model, stored)
        assert field.read(model) == stored and field.decode(stored) == value


def test_a_gpu_config_is_served_on_the_cpu_and_its_gpu_fields_given_back():
    from sweeper.triton_config import for_cpu, restore_gpu_fields
    from tests.repositories import GPU_CONFIG

    user = parse_pbtxt(GPU_CONFIG)
    served, changes = for_cpu(user)
    assert changes == (
        "instance_group[0].kind: KIND_GPU -> KIND_CPU",
        "instance_group[0].gpus: [0] dropped",
        "optimization.execution_accelerators.gpu_execution_accelerator ['tensorrt'] dropped (GPU only)",
    )
    assert served.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and not served.instance_group[0].gpus
    assert user.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU, "the user's config is not touched"
    assert for_cpu(served)[1] == (), "a CPU config needs no change"
    served.instance_group[0].count = 4  # a knob: it stays
    restore_gpu_fields(served, user)
    assert served.instance_group[0].count == 4 and served.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(served.instance_group[0].gpus) == [0]
    assert served.optimization.execution_accelerators == user.optimization.execution_accelerators
