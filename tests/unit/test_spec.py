"""The spec: what it means (off and 0, kept knobs, baselines), and every bad input refused with
one message naming the file and the key, exit status 2, nothing written, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeper.cli import main
from sweeper.spec import StudySpec, load_spec
from sweeper.vocabulary import TrialConfig
from tests.conftest import REPO, child_processes, fixed_axis_onnx, refused, run_refused, write_spec

VALID = """
study: {name: s1, trials: 2}
model:
  name: mlp
  source: {onnx: MODEL}
search_space:
  max_batch_size: [1, 8]
  max_queue_delay_us: [off, 0, 100]
  instance_count: [1]
  protocol: [http, grpc]
  precision: [fp32]
baseline: {max_batch_size: 8, max_queue_delay_us: 100, instance_count: 1, protocol: http}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""


def _spec(folder: Path, model: Path, body: str = VALID) -> Path:
    return write_spec(folder, body.replace("MODEL", str(model)))


def test_valid_spec_loads_and_resolves_the_baseline(tmp_path, mlp_file):
    loaded = load_spec(_spec(tmp_path, mlp_file))
    assert loaded.name == "s1"
    assert loaded.baseline == TrialConfig(8, 100, 1, "http", "fp32")
    assert loaded.spec.study.seed == 0 and loaded.spec.load.concurrency == [1]
    assert loaded.space["max_queue_delay_us"] == ["off", 0, 100]
    assert loaded.space_size == (2 + 3) * 2, "mbs 1: off and one delay (every delay serves alike); mbs 8: three"


def test_a_baseline_outside_the_space_joins_it_and_is_trial_0(tmp_path, mlp_file):
    body = VALID.replace(
        "baseline: {max_batch_size: 8, max_queue_delay_us: 100",
        "baseline: {max_batch_size: 16, max_queue_delay_us: 100",
    )
    body = body.replace("max_queue_delay_us: [off, 0, 100]", "max_queue_delay_us: [0, 500]")
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    assert loaded.baseline == TrialConfig(16, 100, 1, "http", "fp32")
    assert loaded.space["max_batch_size"] == [1, 8, 16] and loaded.space["max_queue_delay_us"] == [0, 500, 100]
    assert loaded.added_to_space == {"max_batch_size": 16, "max_queue_delay_us": 100}
    assert loaded.space_size == (1 + 3 + 3) * 2, "with mbs 1 the two delays serve alike"
    assert load_spec(_spec(tmp_path, mlp_file)).added_to_space == {}, "a baseline inside the space adds nothing"


def test_a_trial_metric_is_named_without_a_level(tmp_path, mlp_file):
    body = VALID.replace(
        "- {metric: p50_ms, concurrency: 1, direction: minimize}",
        "- {metric: p50_ms, concurrency: 1, direction: minimize}\n  - {metric: server_memory_mb, direction: minimize}\n"
        "constraints:\n  - {metric: server_memory_mb, max: 4000}",
    )
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    assert loaded.ranking.columns == ["p50_ms@c1", "server_memory_mb"]
    assert [b.label for b in loaded.ranking.constraints] == ["server_memory_mb<=4000"]


def test_off_is_a_word_and_zero_is_a_delay(tmp_path, mlp_file):
    """YAML 1.2 booleans: a bare off (and on, yes, no) stays a string; false is refused."""
    loaded = load_spec(_spec(tmp_path, mlp_file))
    off, zero = loaded.space["max_queue_delay_us"][:2]
    assert off == "off" and isinstance(zero, int) and zero == 0
    assert not TrialConfig(8, "off", 1, "http", "fp32").dynamic_batching
    assert TrialConfig(8, 0, 1, "http", "fp32").dynamic_batching


def test_shipped_examples_are_valid():
    for name in ("demo.yaml", "seed-case.yaml", "docker-gpu.yaml"):
        loaded = load_spec(REPO / "search_spaces" / name)
        assert loaded.baseline is not None
        assert {"off", 0} <= set(loaded.space["max_queue_delay_us"]), name


@pytest.mark.parametrize(
    "block, delay",
    [("dynamic_batching { max_queue_delay_microseconds: 100 }", 100), ("dynamic_batching { }", 0), ("", "off")],
)
def test_baseline_from_an_existing_config_pbtxt(tmp_path, mlp_file, block, delay):
    (tmp_path / "config.pbtxt").write_text(
        f'name: "mlp"\nmax_batch_size: 8\n{block}\ninstance_group {{ count: 1 kind: KIND_CPU }}\n'
    )
    body = VALID.replace(
        "baseline: {max_batch_size: 8, max_queue_delay_us: 100, instance_count: 1, protocol: http}",
        "baseline: {config_pbtxt: config.pbtxt, protocol: grpc}",
    )
    assert load_spec(_spec(tmp_path, mlp_file, body)).baseline == TrialConfig(8, delay, 1, "grpc", "fp32")


def test_a_knob_left_out_keeps_the_baselines_value(tmp_path, mlp_file):
    body = VALID.replace("  instance_count: [1]\n", "").replace("  precision: [fp32]\n", "")
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    assert loaded.space["instance_count"] == [1] and loaded.space["precision"] == ["fp32"]


# Bad inputs: (what to change in VALID, or a whole file), the words the message must have.
BAD_SPECS = {
    "memory-at-a-level": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: server_memory_mb, concurrency: 1, direction: minimize}",
        ),
        "objectives.0: server_memory_mb is the peak over the whole trial: give no concurrency",
    ),
    "latency-without-level": (
        ("- {metric: p50_ms, concurrency: 1, direction: minimize}", "- {metric: p50_ms, direction: minimize}"),
        "p50_ms is measured per level: give the concurrency (or request_rate) it is taken at",
    ),
    "gpu-memory-without-gpu": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: p50_ms, concurrency: 1, direction: minimize}\nconstraints:\n  - {metric: gpu_memory_mb, max: 4000}",
        ),
        "constraints.0.metric: gpu_memory_mb needs a GPU; the local launcher's server",
    ),
    "capacity-negative-budget": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: capacity, percentile: p99_ms, budget_ms: -5, direction: maximize}",
        ),
        "objectives.0.budget_ms: Input should be greater than 0",
    ),
    "capacity-unmeasured-percentile": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: capacity, percentile: p999_ms, budget_ms: 20, direction: maximize}",
        ),
        "objectives.0.percentile: Input should be 'p50_ms', 'p90_ms', 'p95_ms' or 'p99_ms'",
    ),
    "capacity-without-budget": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: capacity, percentile: p99_ms, direction: maximize}",
        ),
        "objectives.0: capacity needs the latency 'percentile' (p99_ms, ...) and its 'budget_ms'",
    ),
    "capacity-at-a-level": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: capacity, percentile: p99_ms, budget_ms: 20, concurrency: 8, direction: maximize}",
        ),
        "objectives.0: capacity searches the load itself (load.capacity): give no concurrency or rate",
    ),
    "budget-on-a-latency": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: p50_ms, concurrency: 1, budget_ms: 20, direction: minimize}",
        ),
        "objectives.0: 'percentile' and 'budget_ms' belong to metric capacity, not p50_ms",
    ),
    "rate-zero": (
        ("objectives:", "load: {mode: request_rate, request_rates: [0]}\nobjectives:"),
        "load.request_rates.0: Input should be greater than 0",
    ),
    "rate-mode-without-rates": (
        ("objectives:", "load: {mode: request_rate}\nobjectives:"),
        "load: request_rates: mode request_rate needs the rates to measure at (requests/s)",
    ),
    "rates-in-concurrency-mode": (
        ("objectives:", "load: {request_rates: [100]}\nobjectives:"),
        "load: request_rates: rates are measured in mode request_rate (load.mode)",
    ),
    "concurrency-objective-in-rate-mode": (
        ("objectives:", "load: {mode: request_rate, request_rates: [100]}\nobjectives:"),
        "objectives.0.concurrency: load.mode is request_rate; name a level of load.request_rates ['r100']",
    ),
    "rate-not-measured": (
        (
            "objectives:\n  - {metric: p50_ms, concurrency: 1, direction: minimize}",
            "load: {mode: request_rate, request_rates: [100]}\nobjectives:\n"
            "  - {metric: p50_ms, request_rate: 200, direction: minimize}",
        ),
        "objectives.0: p50_ms@r200 is measured at r200, which load.request_rates [100.0] does not include",
    ),
    "capacity-bounds-reversed": (
        ("objectives:", "load: {capacity: {low: 8, high: 4}}\nobjectives:"),
        "load: capacity: high (4) must be greater than low (8)",
    ),
    "capacity-fractional-concurrency": (
        ("objectives:", "load: {capacity: {resolution: 0.5}}\nobjectives:"),
        "load: capacity: low, high and resolution are whole numbers of requests in flight",
    ),
    "unknown-arrival": (("objectives:", "load: {arrival: bursty}\nobjectives:"), "load.arrival"),
    "typo": (
        ("max_queue_delay_us: [off, 0, 100]", "max_queue_delay: [0, 100]"),
        "search_space.max_queue_delay: unknown key; did you mean 'max_queue_delay_us'?",
    ),
    "wrong-type": (("trials: 2", "trials: many"), "study.trials"),
    "negative-delay": (("[off, 0, 100]", "[-5, 100]"), "search_space.max_queue_delay_us.0"),
    "delay-typo": (("[off, 0, 100]", "[of, 100]"), "search_space.max_queue_delay_us.0"),
    "delay-false": (("[off, 0, 100]", "[false, 100]"), "search_space.max_queue_delay_us.0"),
    "empty-list": (("instance_count: [1]", "instance_count: []"), "search_space.instance_count"),
    "bool-instances": (("instance_count: [1]", "instance_count: [true]"), "search_space.instance_count.0"),
    "float-batch": (("max_batch_size: [1, 8]", "max_batch_size: [1.5, 8]"), "search_space.max_batch_size.0"),
    "beyond-int32": (("max_batch_size: [1, 8]", "max_batch_size: [1, 4294967296]"), "search_space.max_batch_size.1"),
    "repeated-choice": (("protocol: [http, grpc]", "protocol: [http, http]"), "protocol lists a value twice"),
    "bad-precision": (("precision: [fp32]", "precision: [fp32, int4]"), "search_space.precision.1"),
    "native-for-onnx": (("precision: [fp32]", "precision: [fp32, native]"), "'native' is not available"),
    "missing-model": (("source: {onnx: MODEL}", "source: {onnx: nowhere.onnx}"), "model.source.onnx: no such file"),
    "no-factory-module": (
        (
            "source: {onnx: MODEL}",
            "source: {pytorch: 'no_such_module:make'}\n  inputs: [{name: x, datatype: FP32, shape: [16]}]",
        ),
        "model.source.pytorch: cannot import module 'no_such_module'",
    ),
    "factory-not-callable": (
        (
            "source: {onnx: MODEL}",
            "source: {pytorch: 'sweeper.examples:TAGS'}\n  inputs: [{name: x, datatype: FP32, shape: [16]}]",
        ),
        "model.source.pytorch: 'sweeper.examples' has no callable 'TAGS'",
    ),
    "pytorch-without-inputs": (
        ("source: {onnx: MODEL}", "source: {pytorch: 'sweeper.examples:mlp'}"),
        "model.inputs is required",
    ),
    "both-sources": (
        ("source: {onnx: MODEL}", "source: {onnx: MODEL, pytorch: 'a:b'}"),
        "model.source: give exactly one",
    ),
    "no-name": (("  name: mlp\n", ""), "model.name is required"),
    "objective-level": (
        ("concurrency: 1, direction", "concurrency: 4, direction"),
        "which load.concurrency [1] does not include",
    ),
    "objectives-repeat": (
        (
            "  - {metric: p50_ms, concurrency: 1, direction: minimize}\n",
            "  - {metric: p50_ms, concurrency: 1, direction: minimize}\n  - {metric: p50_ms, concurrency: 1, direction: maximize}\n",
        ),
        "objectives repeat a metric",
    ),
    "missing-key": (
        ("  - {metric: p50_ms, concurrency: 1, direction: minimize}\n", "  - {metric: p50_ms, concurrency: 1}\n"),
        "objectives.0.direction: required key is missing",
    ),
    "bad-metric": (("metric: p50_ms", "metric: p42_ms"), "objectives.0.metric"),
    "yaml": (("study: {name: s1, trials: 2}", "study: {name: s1, trials: 2"), "the YAML does not parse"),
    "duplicate-key": (
        ("study: {name: s1, trials: 2}", "study: {name: s1, trials: 2}\nstudy: {name: s2}"),
        "duplicated key 'study'",
    ),
    "tensorrt-on-python": (
        ("precision: [fp32]", "precision: [fp32, fp16_trt]\nserver: {backend: python}"),
        "runs TensorRT inside Triton's onnxruntime backend",
    ),
    "concurrency-zero": (("objectives:", "load: {concurrency: [0]}\nobjectives:"), "load.concurrency.0"),
    "window-zero": (("objectives:", "load: {window_s: 0}\nobjectives:"), "load.window_s"),
    "heartbeat-float": (("trials: 2}", "trials: 2, heartbeat_s: 0.5}"), "study.heartbeat_s"),
    "batch-above-max": (
        ("  name: mlp\n", "  name: mlp\n  example_inputs: {batch_size: 4}\n"),
        "model.example_inputs.batch_size: 4 samples a request exceed max_batch_size 1",
    ),
    "unknown-input": (
        ("  name: mlp\n", "  name: mlp\n  inputs: [{name: z, datatype: FP32, shape: [16]}]\n"),
        "the model has no input 'z'",
    ),
    "input-datatype": (
        ("  name: mlp\n", "  name: mlp\n  inputs: [{name: x, datatype: INT32, shape: [16]}]\n"),
        "'x' is INT32 [16] but the model declares FP32 [16]",
    ),
    "docker-block": (
        ("objectives:", "server: {docker: {image: x}}\nobjectives:"),
        "a 'docker' block needs 'launcher: docker'",
    ),
    "perf-analyzer-empty": (("objectives:", "load: {perf_analyzer: []}\nobjectives:"), "load"),
    "unknown-generator": (("objectives:", "load: {generator: locust}\nobjectives:"), "load.generator"),
    "unknown-sampler": (("trials: 2}", "trials: 2, sampler: cmaes}"), "study.sampler"),
    "bad-reuse": (("objectives:", "server: {reuse: sometimes}\nobjectives:"), "server.reuse"),
    "config-field-misspelt": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    dynamic_batching.prefered_batch_size: [[4]]"),
        "search_space.config.dynamic_batching.prefered_batch_size: dynamic_batching has no field "
        "'prefered_batch_size'; closest: dynamic_batching.preferred_batch_size",
    ),
    "config-field-at-the-wrong-level": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    preferred_batch_size: [[4]]"),
        "closest: max_batch_size, dynamic_batching.preferred_batch_size",
    ),
    "config-field-needs-an-index": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group.kind: [KIND_CPU]"),
        "search_space.config.instance_group.kind: instance_group is a list of ModelInstanceGroup: "
        "name one element, instance_group[0]",
    ),
    "config-field-wrong-type": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [4]"),
        "search_space.config.dynamic_batching.preferred_batch_size: 4 is not a list of integers",
    ),
    "config-parameter-unquoted": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    parameters.intra_op_thread_count: [1, 2]"),
        'search_space.config.parameters.intra_op_thread_count: 1 is not a string (quote numbers: "2")',
    ),
    "config-enum-value": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group[0].kind: [CPU]"),
        "'CPU' is not a Kind (KIND_AUTO, KIND_GPU, KIND_CPU, KIND_MODEL)",
    ),
    "config-field-a-knob-sets": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group[0].count: [2]"),
        "search_space.config.instance_group[0].count: instance_group[0].count is set by search_space.instance_count",
    ),
    "config-batching-field-without-batching": (
        (
            "max_queue_delay_us: [off, 0, 100]",
            "max_queue_delay_us: [off]\n  config:\n    dynamic_batching.preferred_batch_size: [[4]]",
        ),
        "applies only with dynamic batching on",
    ),
    "config-value-twice": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    response_cache: [{enable: true}, {enable: true}]"),
        "search_space: config.response_cache lists a value twice",
    ),
    "server-option-misspelt": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --buffer-manager-threads: [2]"),
        "search_space.server.--buffer-manager-threads: --buffer-manager-threads is not an option of tritonserver "
        "2.51; closest: --buffer-manager-thread-count",
    ),
    "server-option-the-sweeper-sets": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --http-port: [8000]"),
        "--http-port is set by the launcher",
    ),
    "server-option-wrong-type": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    pinned-memory-pool-byte-size: ['1g']"),
        "search_space.server.pinned-memory-pool-byte-size: --pinned-memory-pool-byte-size takes an integer, not '1g'",
    ),
    "capacity-high-infinite-rate": (
        (
            "objectives:\n",
            "load:\n  mode: request_rate\n  request_rates: [100]\n  capacity: {high: .inf}\nobjectives:\n",
        ),
        "load.capacity.high: Input should be a finite number",
    ),
    "capacity-high-beyond-any-rate": (
        (
            "objectives:\n",
            "load:\n  mode: request_rate\n  request_rates: [100]\n  capacity: {high: 1.0e+12}\nobjectives:\n",
        ),
        "capacity.high: at most 1e+07 requests/s",
    ),
    "capacity-low-not-a-number": (
        ("objectives:\n", "load:\n  capacity: {low: .nan}\nobjectives:\n"),
        "load.capacity.low: Input should be a finite number",
    ),
    "request-rate-infinite": (
        ("objectives:\n", "load:\n  mode: request_rate\n  request_rates: [.inf]\nobjectives:\n"),
        "load.request_rates.0: Input should be",
    ),
    "window-infinite": (
        ("objectives:\n", "load:\n  window_s: .inf\nobjectives:\n"),
        "load.window_s: Input should be a finite number",
    ),
    "budget-infinite": (
        (
            "- {metric: p50_ms, concurrency: 1, direction: minimize}",
            "- {metric: capacity, percentile: p99_ms, budget_ms: .inf, direction: maximize}",
        ),
        "objectives.0.budget_ms: Input should be a finite number",
    ),
    "config-sequence-batching": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    sequence_batching: [{}]"),
        "sequence_batching changes what is served",
    ),
    "config-sequence-batching-field": (
        (
            "precision: [fp32]",
            "precision: [fp32]\n  config:\n    sequence_batching.max_sequence_idle_microseconds: [1000]",
        ),
        "changes what is served, not how",
    ),
    "config-decoupled": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    model_transaction_policy.decoupled: [true]"),
        "scheduling kind (decoupled responses)",
    ),
    "config-ensemble": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    ensemble_scheduling: [{}]"),
        "scheduling kind (an ensemble's steps)",
    ),
    "config-batch-input": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    batch_input: [[]]"),
        "search_space.config.batch_input: batch_input changes what",
    ),
    "config-batch-output": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    batch_output[0].target_name: [[x]]"),
        "the model's outputs (batch outputs)",
    ),
    "config-cc-model-filenames": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    cc_model_filenames.8.0: [other.onnx]"),
        "the model's own files",
    ),
    "config-repository-agents": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    model_repository_agents: [{}]"),
        "repository agents",
    ),
    "config-version-policy": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    version_policy: [{all: {}}]"),
        "which versions of the model are served",
    ),
    "config-execution-env-path": (
        ("precision: [fp32]", 'precision: [fp32]\n  config:\n    parameters.EXECUTION_ENV_PATH: ["/tmp/env.tar.gz"]'),
        "an archive loaded from a path",
    ),
    "config-execution-env-path-any-case": (
        (
            "precision: [fp32]",
            'precision: [fp32]\n  config:\n    parameters.Execution_Env_Path: ["$$TRITON_MODEL_DIRECTORY/e.tar.gz"]',
        ),
        "changes what is served",
    ),
    "config-warmup-file-outside": (
        (
            "precision: [fp32]",
            'precision: [fp32]\n  config:\n    model_warmup: [[{name: w, batch_size: 1, inputs: {x: {data_type: TYPE_FP32, dims: [4], input_data_file: "../../../../../etc/shadow"}}}]]',
        ),
        "search_space.config.model_warmup: model_warmup input 'x': input_data_file '../../../../../etc/shadow' lies outside",
    ),
    "config-warmup-file-absolute": (
        (
            "precision: [fp32]",
            "precision: [fp32]\n  config:\n    model_warmup[0].inputs.x: [{data_type: TYPE_FP32, dims: [4], input_data_file: /etc/passwd}]",
        ),
        "lies outside the model's warmup folder",
    ),
    "config-instance-group-beyond-the-baseline": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group[999].kind: [KIND_CPU]"),
        "search_space.config.instance_group[999].kind: the baseline has 1 instance group(s)",
    ),
    "config-second-instance-group": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group[1].gpus: [[0]]"),
        "the baseline has 1 instance group(s), instance_group[0]",
    ),
    "config-preferred-batch-size-zero": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [[0]]"),
        "preferred batch sizes are from 1 to max_batch_size, not [0]",
    ),
    "config-preferred-batch-size-negative": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [[2], [-1]]"),
        "not [-1]",
    ),
    "config-preferred-batch-size-above-every-max": (
        (
            "precision: [fp32]",
            "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [[4], [4, 64]]",
        ),
        "[4, 64] exceeds every max_batch_size of the space (at most 8)",
    ),
    "server-thread-count-negative": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --http-thread-count: [-4]"),
        "search_space.server.--http-thread-count: --http-thread-count takes an integer from 1 to 4096, not -4",
    ),
    "server-exit-timeout-negative": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --exit-timeout-secs: [-1]"),
        "--exit-timeout-secs takes an integer from 0",
    ),
    "server-log-verbose-negative": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --log-verbose: [-1]"),
        "--log-verbose takes an integer from 0 to 10",
    ),
    "server-metrics-interval-negative": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --metrics-interval-ms: [-5]"),
        "--metrics-interval-ms takes an integer from 0",
    ),
    "server-byte-size-beyond-64-bits": (
        (
            "precision: [fp32]",
            "precision: [fp32]\n  server:\n    --pinned-memory-pool-byte-size: [1208925819614629174706176]",
        ),
        "takes an integer from 0 to 9223372036854775807",
    ),
    "server-compute-capability-nan": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --min-supported-compute-capability: [.nan]"),
        "search_space.server.--min-supported-compute-capability.0: should be a valid boolean or a valid integer or a finite number",
    ),
    "server-option-with-spaces": (
        (
            "precision: [fp32]",
            'precision: [fp32]\n  server:\n    --backend-config: ["python,x=1 --model-repository=/etc"]',
        ),
        "takes one word without spaces or line breaks",
    ),
    "server-option-with-a-line-break": (
        (
            "precision: [fp32]",
            'precision: [fp32]\n  server:\n    --cache-config: ["local,size=1\\n--model-repository=/etc"]',
        ),
        "without spaces or line breaks",
    ),
    "server-option-empty": (
        ("precision: [fp32]", 'precision: [fp32]\n  server:\n    --rate-limit: [""]'),
        "--rate-limit takes one word",
    ),
    "server-value-null-names-the-option": (
        ("precision: [fp32]", "precision: [fp32]\n  server:\n    --buffer-manager-thread-count: [4, null]"),
        "search_space.server.--buffer-manager-thread-count.1: should be a valid boolean or",
    ),
    "example-seed-negative": (
        ("  name: mlp\n", "  name: mlp\n  example_inputs: {seed: -3}\n"),
        "model.example_inputs.seed: Input should be greater than or equal to 0 (got -3)",
    ),
    "study-seed-too-large": (
        ("study: {name: s1, trials: 2}", "study: {name: s1, trials: 2, seed: 4294967296}"),
        "study.seed: Input should be less than or equal to 4294967295",
    ),
    "primary-yes-is-a-word": (
        ("direction: minimize}", "direction: minimize, primary: yes}"),
        "objectives.0.primary: Input should be a valid boolean (got 'yes')",
    ),
    "config-not-a-list-names-the-field": (
        ("precision: [fp32]", "precision: [fp32]\n  config:\n    instance_group[0].kind: KIND_CPU"),
        "search_space.config.instance_group[0].kind: Input should be a valid list",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_exits_2_naming_file_and_key(case, tmp_path, mlp_file, capsys):
    (old, new), expected = BAD_SPECS[case]
    assert old in VALID, case
    spec = _spec(tmp_path, mlp_file, VALID.replace(old, new))
    run_refused(spec, capsys, str(spec), expected)


def _module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


FACTORIES = {
    "raises": (
        "def make():\n    raise RuntimeError('weights not found')\n",
        "make() raised RuntimeError: weights not found",
    ),
    "not-a-module": ("def make():\n    return 42\n", "returned int, not a torch.nn.Module"),
    "exits-on-import": ("import sys\nsys.exit(5)\ndef make():\n    pass\n", "called sys.exit(5)"),
    "forward-fails": (
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        raise ValueError('bad shape')\n"
        "def make():\n    return M()\n",
        "model.inputs: factory_forward_fails:make() does not run on the inputs described "
        "(model.inputs.0 x FP32 [16]): ValueError: bad shape",
    ),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_pytorch_factory_problems_are_found_while_validating(case, tmp_path, capsys):
    body, expected = FACTORIES[case]
    module = f"factory_{case.replace('-', '_')}"
    _module(tmp_path, module, body)
    spec = write_spec(
        tmp_path,
        VALID.replace(
            "source: {onnx: MODEL}",
            f"source: {{pytorch: '{module}:make'}}\n  inputs: [{{name: x, datatype: FP32, shape: [16]}}]",
        ),
    )
    err = run_refused(spec, capsys, expected)
    assert "model.source.pytorch" in err or case == "forward-fails", "a factory that ran is not the source's fault"


EMBEDDING = """
import torch


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)

    def forward(self, ids, mask):
        hidden = self.embed(ids) * mask.unsqueeze(-1)
        return hidden.sum(1), hidden.mean(1)


def make():
    return Tagger()
"""


def _embedding_spec(folder: Path, model: str = "", outputs: str = "") -> Path:
    _module(folder, "tagger", EMBEDDING)
    source = (
        "source: {pytorch: 'tagger:make'}\n"
        "  inputs: [{name: ids, datatype: INT64, shape: [5]}, {name: mask, datatype: FP32, shape: [5]}]\n" + model
    )
    return write_spec(
        folder, VALID.replace("name: mlp\n  source: {onnx: MODEL}", "name: tagger\n  " + source + outputs)
    )


@pytest.mark.parametrize(
    "model, words",
    [
        (
            "  example_inputs: {low: 0, high: 50}\n",
            "model.example_inputs: tagger:make() on the generated inputs (model.inputs.0 ids INT64 [5], "
            "model.inputs.1 mask FP32 [5]) raised IndexError: index out of range in self",
        ),
        (
            "  example_inputs: {ranges: {input_id: {low: 0, high: 10}}}\n",
            "model.example_inputs.ranges: the model has no input 'input_id' (its inputs: ids, mask)",
        ),
        ("  outputs: [pooled]\n", "model.outputs: tagger:make() returns 2 output(s); the spec names 1"),
    ],
)
def test_a_factorys_inputs_and_outputs_are_named_where_they_go_wrong(tmp_path, capsys, model, words):
    run_refused(_embedding_spec(tmp_path, model), capsys, words)


def test_each_input_has_its_own_range_and_a_factorys_outputs_their_names(tmp_path):
    model = "  example_inputs: {low: 0, high: 50, ranges: {ids: {low: 0, high: 10}}}\n  outputs: [pooled, mean]\n"
    loaded = load_spec(_embedding_spec(tmp_path, model))
    ids = np.stack(loaded.samples.arrays["ids"])
    assert ids.min() >= 0 and ids.max() < 10, "token ids below the embedding's size"
    mask = np.stack(loaded.samples.arrays["mask"])
    assert mask.max() > 10, "the other input keeps the general range"
    assert [t.name for t in loaded.model.outputs] == ["pooled", "mean"]


def test_a_datatype_the_factory_cannot_take_names_model_inputs(tmp_path, capsys):
    spec = write_spec(
        tmp_path,
        VALID.replace(
            "source: {onnx: MODEL}",
            "source: {pytorch: 'sweeper.examples:mlp'}\n  inputs: [{name: features, datatype: INT64, shape: [256]}]",
        ),
    )
    run_refused(
        spec,
        capsys,
        "model.inputs: sweeper.examples:mlp() does not run on the inputs described "
        "(model.inputs.0 features INT64 [256])",
    )


def test_outputs_belong_to_a_pytorch_source(tmp_path, mlp_file, capsys):
    body = VALID.replace("  source: {onnx: MODEL}\n", "  source: {onnx: MODEL}\n  outputs: [y]\n")
    run_refused(_spec(tmp_path, mlp_file, body), capsys, "model.outputs names a PyTorch factory's outputs")


RAW_FILES = {
    "binary": (b"\x7fELF\x00\x00\x01", "is a binary file"),
    "not-utf8": ("study: {name: caf\u00e9}\n".encode("latin-1"), "is not UTF-8 text"),
    "empty": (b"", "must be a YAML mapping"),
    "a-list": (b"- study\n- model\n", "must be a YAML mapping"),
    "alias-bomb": (
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        b"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n",
        "expands to more than",
    ),
    "too-large": (b"# " + b"x" * (2 << 20) + b"\n", "too large for a spec"),
    "nested-5000-deep": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "the YAML is nested too deep to be a spec"),
}


@pytest.mark.parametrize("case", sorted(RAW_FILES))
def test_a_file_that_is_no_spec_is_refused(case, tmp_path, capsys):
    content, expected = RAW_FILES[case]
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    run_refused(spec, capsys, expected)


ONNX_FILES = {
    "garbage": (lambda path: path.write_bytes(b"not an onnx file at all"), "not a valid ONNX model"),
    "truncated": (
        lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
        "not a valid ONNX model",
    ),
}


@pytest.mark.parametrize("case", sorted(ONNX_FILES))
def test_a_broken_onnx_file_is_refused_while_validating(case, tmp_path, mlp_file, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(mlp_file.read_bytes())
    ONNX_FILES[case][0](broken)
    spec = _spec(tmp_path, broken)
    run_refused(spec, capsys, "model.source.onnx", ONNX_FILES[case][1])


def test_command_line_problems_exit_2(tmp_path, mlp_file, capsys):
    spec = _spec(tmp_path, mlp_file)
    results = tmp_path / "results"
    refused(
        ["run", str(spec), "--trials", "0", "--results-dir", str(results)],
        capsys,
        results,
        "--trials must be at least 1",
    )
    refused(
        ["run", str(spec), "--results-dir", str(results), "--storage", "not a url"],
        capsys,
        results,
        "not a database URL: 'not a url'",
    )
    refused(
        ["run", str(spec), "--results-dir", str(results), "--storage", "foodb://me@host/db"],
        capsys,
        results,
        "unknown database kind 'foodb'",
    )
    (tmp_path / "a-file").write_text("x")
    refused(["run", str(spec), "--results-dir", str(tmp_path / "a-file")], capsys, results, "is a file, not a folder")
    refused(
        ["run", str(tmp_path / "absent.yaml"), "--results-dir", str(results)], capsys, results, "cannot read the spec"
    )
    refused(["run", str(tmp_path), "--results-dir", str(results)], capsys, results, "is a folder, not a spec file")
    refused(["report", str(tmp_path / "nowhere")], capsys, results, "no such study folder")
    refused(["init", str(mlp_file), "-o", str(tmp_path), "--force"], capsys, results, "is a folder; -o names the spec")


# Storage URLs that do not parse or name no database: refused, and no message prints the password.
BAD_STORAGE_URLS = {
    "postgresql://me:hunter2@host:abc/db": "its port is not a number: 'postgresql://me:***@host:abc/db'",
    "postgresql://me:hunter2@[::1/db": "its port is not a number",
    "postgresql//me:hunter2@host/db": "not a database URL: 'postgresql//me:***@host/db'",
    "postgresql:me:hunter2@host/db": "not a database URL",
    "foodb://me:hunter2@host/db": "unknown database kind 'foodb' in foodb://me:***@host/db",
}


@pytest.mark.parametrize("url", sorted(BAD_STORAGE_URLS))
def test_a_storage_url_that_names_no_database_is_refused_without_its_password(url, tmp_path, mlp_file, capsys):
    results = tmp_path / "results"
    argv = ["run", str(_spec(tmp_path, mlp_file)), "--results-dir", str(results), "--storage", url]
    err = refused(argv, capsys, results, BAD_STORAGE_URLS[url])
    assert "hunter2" not in err


def test_request_data_nested_far_deeper_than_a_tensor_is_refused(tmp_path, mlp_file, capsys):
    (tmp_path / "deep.json").write_text('{"data": [{"x": ' + "[" * 5000 + "1.0" + "]" * 5000 + "}]}")
    spec = _spec(tmp_path, mlp_file, VALID.replace("  name: mlp\n", "  name: mlp\n  input_data: deep.json\n"))
    run_refused(spec, capsys, "model.input_data", "its JSON is nested too deep to be request data")


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "spec.yaml", "--trails", "3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --trails" in capsys.readouterr().err


def test_unknown_key_lists_what_is_allowed(tmp_path, mlp_file, capsys):
    spec = _spec(tmp_path, mlp_file, VALID + "lod: {concurrency: [1]}\n")
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "lod: unknown key; did you mean 'load'?" in err
    assert "Allowed here: study, model, server, search_space" in err


def test_console_script_reports_a_missing_spec_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "run", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'absent.yaml'}: cannot read the spec" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_input_data_shapes_come_from_the_file(tmp_path, mlp_file):
    np.savez(tmp_path / "requests.npz", x=np.ones((5, 16), np.float32))
    body = VALID.replace("  name: mlp\n", "  name: mlp\n  input_data: requests.npz\n")
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    assert loaded.samples.count == 5


def test_check_runs_every_check_and_starts_and_writes_nothing(tmp_path, mlp_file, capsys):
    spec = _spec(tmp_path, mlp_file)
    children = set(child_processes())
    assert main(["check", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "valid; nothing was started or written" in out and "study 's1': 2 trials over a space of 10" in out
    assert not (tmp_path / "results").exists() and set(child_processes()) <= children
    bad = _spec(tmp_path, mlp_file, VALID.replace("objectives:", "server: {backend: onnxruntime}\nobjectives:"))
    refused(
        ["check", str(bad), "--results-dir", str(tmp_path / "results")],
        capsys,
        tmp_path / "results",
        "server.backend: onnxruntime",
    )


@pytest.mark.parametrize(
    "address, warned", [("0.0.0.0", True), ("192.168.1.4", True), ("::1", False), ("localhost", False)]
)
def test_a_server_address_beyond_loopback_is_warned_of(tmp_path, mlp_file, capsys, address, warned):
    spec = _spec(tmp_path, mlp_file, VALID.replace("objectives:", f'server: {{address: "{address}"}}\nobjectives:'))
    assert main(["check", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    err = capsys.readouterr().err
    assert ("Triton has no authentication" in err) is warned, err
    if warned:
        assert f"server.address {address}" in err and len(err.strip().splitlines()) == 1


def test_version_and_help_read_as_plain_text(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("sweeper (triton-sweeper) ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_cheap_checks_run_before_the_model_is_loaded(tmp_path, capsys):
    """A factory that fails on import is never reached: the misspelt field, the unavailable
    precision and the reserved server option are found from the spec alone."""
    _module(tmp_path, "slow_factory", "raise RuntimeError('imported')\n")
    base = (
        "study: {name: cheap}\nmodel:\n  name: m\n  source: {pytorch: 'slow_factory:make'}\n"
        "  inputs: [{name: x, datatype: FP32, shape: [4]}]\nsearch_space:\n  SPACE\n"
        "objectives:\n  - {metric: p50_ms, concurrency: 1, direction: minimize}\n"
    )
    for space, expected in (
        ("config: {dynamic_batching.prefered_batch_size: [[4]]}", "closest: dynamic_batching.preferred_batch_size"),
        ("precision: [native]", "search_space.precision: 'native' is not available"),
        ("server: {--model-control-mode: [poll]}", "--model-control-mode is set by server.reuse"),
    ):
        spec = write_spec(tmp_path, base.replace("SPACE", space), "cheap.yaml")
        err = run_refused(spec, capsys, expected)
        assert "imported" not in err


def test_config_fields_and_server_options_are_categorical_parameters_with_the_baselines_values(tmp_path, mlp_file):
    body = VALID.replace(
        "precision: [fp32]",
        "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [[4], [4, 8]]\n"
        "    parameters.intra_op_thread_count: ['1', '2']\n  server:\n    --buffer-manager-thread-count: [2, 4]",
    )
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    space = loaded.space
    assert space["config.dynamic_batching.preferred_batch_size"] == ["[4]", "[4, 8]", None]
    assert space["config.parameters.intra_op_thread_count"] == ["1", "2", None]
    assert space["server.buffer-manager-thread-count"] == [2, 4, None]
    assert loaded.baseline.config_fields == {
        "dynamic_batching.preferred_batch_size": None,
        "parameters.intra_op_thread_count": None,
    }
    # mbs 1: off + one batched; mbs 8: off, 0, 100. Without batching the preferred sizes are not
    # applied; with mbs 1, [4] and [4, 8] both serve as no preferred size: one configuration.
    off, batched, batched_mbs1 = 1 * 3 * 3, 3 * 3 * 3, 2 * 3 * 3
    assert loaded.space_size == 2 * ((off + batched_mbs1) + (off + 2 * batched)), "two protocols"


def test_the_baselines_own_field_values_come_from_its_config(tmp_path, mlp_file):
    pbtxt = tmp_path / "today.pbtxt"
    pbtxt.write_text(
        "max_batch_size: 8\ndynamic_batching { preferred_batch_size: [8] }\n"
        'parameters { key: "intra_op_thread_count" value { string_value: "3" } }\n'
    )
    body = VALID.replace(
        "baseline: {max_batch_size: 8, max_queue_delay_us: 100, instance_count: 1, protocol: http}",
        f"baseline: {{config_pbtxt: {pbtxt}, protocol: http}}",
    ).replace(
        "precision: [fp32]",
        "precision: [fp32]\n  config:\n    dynamic_batching.preferred_batch_size: [[4]]\n"
        "    parameters.intra_op_thread_count: ['1']",
    )
    loaded = load_spec(_spec(tmp_path, mlp_file, body))
    assert loaded.baseline.config_fields == {
        "dynamic_batching.preferred_batch_size": "[8]",
        "parameters.intra_op_thread_count": "3",
    }
    assert loaded.added_to_space == {
        "config.dynamic_batching.preferred_batch_size": "[8]",
        "config.parameters.intra_op_thread_count": "3",
    }


def _spec_block(page: Path) -> str:
    return next(b for b in page.read_text().split("```yaml\n")[1:] if b.startswith("study:")).split("```")[0]


def test_the_readmes_and_the_spec_references_specs_are_valid(tmp_path, mlp_file):
    """README.md's sweep by hand runs on a model with its input; the annotated spec of
    docs/spec.md is one that runs, with its config and server knobs."""
    readme = load_spec(
        write_spec(tmp_path, _spec_block(REPO / "README.md").replace("models/my_model.onnx", str(mlp_file)))
    )
    assert readme.ranking.primary == "capacity@p99_ms<=10" and readme.space["precision"] == ["fp32", "fp16", "int8"]
    loaded = load_spec(write_spec(tmp_path, _spec_block(REPO / "docs" / "spec.md")))
    assert loaded.space["config.dynamic_batching.preferred_batch_size"][:3] == ["[4]", "[8]", "[4, 8]"]
    assert loaded.space["server.buffer-manager-thread-count"] == [0, 4, None]


def test_the_knees_neighbours_take_a_quarter_of_the_trials_unless_the_spec_says():
    assert StudySpec(name="s", trials=20).neighbour_trials == 5
    assert StudySpec(name="s", trials=3).neighbour_trials == 0
    assert StudySpec(name="s", trials=4, neighbours=10).neighbour_trials == 3, "the baseline's trial stays"
    assert StudySpec(name="s", trials=20, neighbours=0).neighbour_trials == 0
    assert StudySpec(name="s", trials=20, sampler="grid").neighbour_trials == 0, "a grid measures them all"


def test_batching_knobs_over_a_model_with_a_fixed_batch_axis_are_refused(tmp_path, capsys):
    spec = _spec(tmp_path, fixed_axis_onnx(tmp_path / "fixed.onnx"))
    run_refused(
        spec, capsys, "search_space.max_batch_size", "first axis is fixed at 1", "dynamic_axes={'x': {0: 'batch'}}"
    )
