"""Each precision is built for real with ONNX Runtime's converters and checked against FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sweeper.artifacts import (
    PRECISIONS,
    REFERENCE_PRECISIONS,
    ArtifactBuilder,
    Drift,
    outside_tolerance,
    score_outputs,
    top1_agreement,
)
from sweeper.data import generate_samples
from sweeper.errors import TrialError
from sweeper.tensors import TensorSpec

SAMPLES = generate_samples([TensorSpec("x", "FP32", (16,))], 8, low=0, high=1, seed=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mlp_file):
    folder = tmp_path_factory.mktemp("artifacts") / "models"
    builder = ArtifactBuilder(mlp_file, SAMPLES, folder, gpu=False, score_outputs=("y",))
    return builder, {p: builder.build(p) for p in ("fp32", "fp16", "int8")}


def test_each_precision_is_a_loadable_model_close_to_fp32(built):
    builder, artifacts = built
    assert artifacts["fp32"].drift == Drift(0.0, 1.0, 1.0)
    for precision in ("fp16", "int8"):
        artifact, drift = artifacts[precision], artifacts[precision].drift
        assert artifact.path.name == "model.onnx" and artifact.path.parent.name == precision
        assert 0 < drift.max_abs_error < 0.5 and drift.cosine_similarity > 0.99
        assert 0.5 <= drift.top1_agreement <= 1, "the MLP's 4 outputs as scores: most picks kept"
        assert outside_tolerance(precision, drift, min_cosine=0.99) is None
    session = ort.InferenceSession(str(artifacts["fp16"].path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)", "keep_io_types: FP32 in and out"
    int8_ops = {node.op_type for node in onnx.load(str(artifacts["int8"].path)).graph.node}
    assert int8_ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DynamicQuantizeMatMul"}


def test_artifacts_are_cached_per_study(built, mlp_file):
    builder, artifacts = built
    stamp = artifacts["int8"].path.stat().st_mtime_ns
    again = ArtifactBuilder(mlp_file, SAMPLES, artifacts["int8"].path.parent.parent, gpu=False).build("int8")
    assert again.path.stat().st_mtime_ns == stamp
    assert again.drift == artifacts["int8"].drift


def test_tolerance_names_what_failed():
    assert "cosine similarity 0.900000 < 0.999" in outside_tolerance("int8", Drift(0.1, 0.9), min_cosine=0.999)
    assert "max abs error 0.1 > 0.01" in outside_tolerance("fp16", Drift(0.1, 1.0), min_cosine=0.9, max_error=0.01)
    top1 = {"min_cosine": 0.9, "min_top1": 0.99}
    assert "top-1 agreement 0.9500 < 0.99" in outside_tolerance("int8", Drift(0.1, 0.9999, 0.95), **top1)
    assert outside_tolerance("int8", Drift(0.1, 0.9999, None), **top1) is None, "no score output: nothing to hold"


def test_top1_agreement_counts_each_score_vector_over_samples_and_positions():
    """A language model's logits [1, positions, vocabulary]: each position's pick counts."""
    expected = [np.array([[[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]]]), np.array([[[0.0, 0.0, 1.0], [0.3, 0.3, 0.4]]])]
    served = [np.array([[[0.1, 0.8, 0.1], [0.2, 0.5, 0.3]]]), np.array([[[0.0, 0.1, 0.9], [0.3, 0.3, 0.4]]])]
    assert top1_agreement(expected, served) == 0.75
    assert top1_agreement([np.array([[0.2]])], [np.array([[0.9]])]) == 1.0, "one entry: no pick to keep"


def test_score_outputs_are_float_outputs_with_a_last_axis_of_scores():
    outputs = (
        TensorSpec("logits", "FP32", (-1, 50257)),
        TensorSpec("probabilities", "FP16", (10,)),
        TensorSpec("label", "INT64", (1,)),
        TensorSpec("value", "FP32", (1,)),
        TensorSpec("pooled", "FP32", ()),
    )
    assert score_outputs(outputs) == ("logits", "probabilities")


def test_a_failing_conversion_is_a_trial_error_remembered(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx file")
    builder = ArtifactBuilder(tmp_path / "broken.onnx", SAMPLES, tmp_path / "models", gpu=False)
    builder.build("fp32")  # a copy: no conversion
    for _ in range(2):
        with pytest.raises(TrialError, match="building the fp16 model failed"):
            builder.build("fp16")


def test_precision_table_is_the_one_place_precisions_live():
    assert {"fp32", "native", "fp16", "int8", "fp16_trt", "int8_trt"} == set(PRECISIONS)
    assert PRECISIONS["fp16_trt"].tensorrt == "FP16" and PRECISIONS["int8"].tensorrt is None
    assert PRECISIONS["fp32"].reference and not PRECISIONS["int8"].reference
    conversions = [name for name, recipe in PRECISIONS.items() if not recipe.reference]
    assert sorted(conversions) == ["fp16", "int8", "int8_trt"], "fp16_trt: TensorRT converts the FP32 file itself"
    untouched = {name for name, recipe in PRECISIONS.items() if recipe.reference and recipe.tensorrt is None}
    assert untouched == set(REFERENCE_PRECISIONS)


def test_run_onnx_answers_every_feed_from_one_session(mlp_file, monkeypatch):
    import sweeper.artifacts as artifacts

    opened = []
    real = artifacts._session
    monkeypatch.setattr(artifacts, "_session", lambda path: opened.append(path) or real(path))
    feeds = [SAMPLES.batch(i, 1, batched=True) for i in range(SAMPLES.count)]
    outputs = artifacts.run_onnx(mlp_file, feeds)
    assert len(opened) == 1 and len(outputs) == SAMPLES.count
    assert outputs[0][0].shape == (1, 4) and outputs[0][0].dtype == np.float64
    assert not np.allclose(outputs[0][0], outputs[1][0]), "each feed answered on its own"


def test_a_conversion_that_changes_no_operator_is_refused_once_and_a_doubled_opset_is_quantized(tmp_path):
    """A skl2onnx pipeline (scaler, forest) lists its default domain twice, which ONNX Runtime's
    quantizer cannot read: the sweeper merges the entries. A forest has nothing to quantize, and
    FP16 only wraps it in casts: both precisions are refused as the same computation, each with
    the words the study says once."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    pipeline = make_pipeline(StandardScaler(), forest).fit(features, labels)
    model = to_onnx(
        pipeline, features[:1], options={id(forest): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    assert [entry.domain for entry in model.opset_import].count("") == 2, "skl2onnx's doubled entry"
    path = tmp_path / "forest.onnx"
    onnx.save(model, str(path))
    samples = generate_samples([TensorSpec("X", "FP32", (4,))], 8, low=0, high=8, seed=0)
    builder = ArtifactBuilder(path, samples, tmp_path / "models", gpu=False)
    for precision in ("int8", "fp16"):
        with pytest.raises(TrialError, match=f"{precision} changes no operator of this model"):
            builder.build(precision)
    assert builder.build("fp32").drift.max_abs_error == 0
    assert not list((tmp_path / "models").glob("int8/*.onnx")), "nothing is left for a trial to serve"


def test_a_quantization_that_only_drops_identities_changes_no_operator(tmp_path):
    """A LightGBM ensemble exported by onnxmltools sits between Identity nodes, which the quantizer's
    preprocessing drops while it quantizes nothing: INT8 is refused as the same computation (it
    was measured, and exported, as INT8). FP16 casts the weight: a computation of its own."""
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "scale")
    nodes = [
        helper.make_node("Identity", ["input"], ["a"]),
        helper.make_node("Mul", ["a", "scale"], ["b"]),
        helper.make_node("Identity", ["b"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "identities",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])],
        [scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "identities.onnx"
    onnx.save(model, str(path))
    samples = generate_samples([TensorSpec("input", "FP32", (4,))], 8, low=0, high=8, seed=0)
    builder = ArtifactBuilder(path, samples, tmp_path / "models", gpu=False)
    with pytest.raises(TrialError, match="int8 changes no operator of this model"):
        builder.build("int8")
    assert builder.build("fp16").drift.max_abs_error == 0
