"""Each precision is built for real with ONNX Runtime's converters and checked against FP32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from sweeper.artifacts import ArtifactBuilder
from sweeper.errors import TrialError
from sweeper.spec import load_spec
from tests.conftest import write_spec

SPEC = """
study: {name: a}
model:
  name: mlp
  source: {SOURCE}
INPUTS
search_space: {max_batch_size: [1], max_queue_delay_us: [0], instance_count: [1], protocol: [http], precision: [fp32, fp16, int8]}
objectives: [{metric: p50_ms, concurrency: 1, direction: minimize}]
ACCURACY
"""


def _builder(tmp_path, source: str, inputs: str = "", accuracy: str = "") -> ArtifactBuilder:
    body = SPEC.replace("SOURCE", source).replace("INPUTS", inputs).replace("ACCURACY", accuracy)
    return ArtifactBuilder(load_spec(write_spec(tmp_path, body)), tmp_path / "models", gpu=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mlp_onnx):
    folder = tmp_path_factory.mktemp("artifacts")
    builder = _builder(folder, f"onnx: {mlp_onnx}")
    return builder, {p: builder.build(p) for p in ("fp32", "fp16", "int8")}


def test_each_precision_is_a_loadable_model_close_to_fp32(built):
    builder, artifacts = built
    assert artifacts["fp32"].max_abs_error == 0 and artifacts["fp32"].cosine_similarity == 1
    for precision in ("fp16", "int8"):
        artifact = artifacts[precision]
        assert artifact.path.name == "model.onnx" and artifact.path.parent.name == precision
        assert 0 < artifact.max_abs_error < 0.5
        assert artifact.cosine_similarity > 0.99
        assert builder.outside_tolerance(precision, artifact.max_abs_error, artifact.cosine_similarity) is None
    session = ort.InferenceSession(str(artifacts["fp16"].path), providers=["CPUExecutionProvider"])
    # keep_io_types: the FP16 model still takes and returns FP32.
    assert session.get_inputs()[0].type == "tensor(float)"
    assert session.get_outputs()[0].type == "tensor(float)"
    int8_ops = {node.op_type for node in __import__("onnx").load(str(artifacts["int8"].path)).graph.node}
    assert int8_ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DynamicQuantizeMatMul"}


def test_artifacts_are_cached_per_study(built, tmp_path):
    builder, artifacts = built
    stamp = artifacts["int8"].path.stat().st_mtime_ns
    again = ArtifactBuilder(builder._loaded, artifacts["int8"].path.parent.parent, gpu=False).build("int8")
    assert again.path.stat().st_mtime_ns == stamp
    assert again.cosine_similarity == artifacts["int8"].cosine_similarity


def test_precision_outside_tolerance_is_flagged_not_raised(tmp_path, mlp_onnx):
    builder = _builder(tmp_path, f"onnx: {mlp_onnx}", accuracy="accuracy: {max_abs_error: 1.0e-9}")
    artifact = builder.build("int8")
    failure = builder.outside_tolerance("int8", artifact.max_abs_error, artifact.cosine_similarity)
    assert failure is not None and "max abs error" in failure


def test_pytorch_factory_is_exported_with_a_dynamic_batch_axis(tmp_path):
    builder = _builder(
        tmp_path, "pytorch: 'sweeper.examples:mlp'", inputs="  inputs: [{name: features, datatype: FP32, shape: [256]}]"
    )
    artifact = builder.build("fp32")
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"features": np.zeros((5, 256), np.float32)})
    assert scores.shape == (5, 1000)


def test_a_failing_conversion_is_a_trial_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx file")
    builder = _builder(tmp_path, f"onnx: {tmp_path / 'broken.onnx'}")
    with pytest.raises(TrialError, match="building the fp32 model failed"):
        builder.build("fp32")
