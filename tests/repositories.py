"""Triton model folders written by the tests themselves, shared by every test module: the test
MLP served through the python backend (and one request to it), an ONNX model with INT32 inputs
and two outputs, python-backend models (no batching; a STRING input of variable length), an INT8
ONNX model, and folders the sweeper must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sweeper.examples import mlp_onnx
from sweeper.repository import write_model
from sweeper.source import from_onnx
from sweeper.triton_config import apply_trial
from sweeper.vocabulary import TrialConfig
from tests.conftest import add_sub_onnx


def make_repository(root: Path, onnx_path: Path, config: TrialConfig, name: str = "mlp") -> Path:
    """A model repository serving ``onnx_path`` through the python backend with ``config``."""
    source = from_onnx(onnx_path, name)
    write_model(root, source, apply_trial(source.template, config, serve_with="python"), onnx_path)
    return root


def infer_mlp(client_module, url: str, x: np.ndarray, model: str = "mlp") -> np.ndarray:
    """One request to the test MLP with tritonclient's http or grpc module."""
    client = client_module.InferenceServerClient(url)
    tensor = client_module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    try:
        return client.infer(model, [tensor]).as_numpy("y")
    finally:
        client.close()


ECHO_NUMPY = """
import json
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        delay = self.config.get("parameters", {}).get("seconds_per_request", {"string_value": "0"})
        self.seconds = float(delay["string_value"])

    def execute(self, requests):
        time.sleep(self.seconds)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x * 2).astype(np.float32))]))
        return responses
"""

LENGTHS = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
            lengths = np.array([len(item) for item in text.ravel()], dtype=np.int32).reshape(text.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("lengths", lengths)]))
        return responses
"""


def _folder(root: Path, name: str, config: str, files: dict[str, str | bytes] | None = None) -> Path:
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    for relative, content in (files or {}).items():
        target = folder / relative
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    return folder


def add_sub_repository(root: Path) -> Path:
    """An ONNX model (INT32 a, b -> sum, difference) with a config full of fields to keep."""
    folder = _folder(
        root,
        "add_sub",
        """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{ name: "a" data_type: TYPE_INT32 dims: [4] }, { name: "b" data_type: TYPE_INT32 dims: [4] }]
output [{ name: "sum" data_type: TYPE_INT32 dims: [4] }, { name: "difference" data_type: TYPE_INT32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_CPU }]
dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 100 }
parameters { key: "intra_op_thread_count" value { string_value: "1" } }
version_policy { latest { num_versions: 1 } }
""",
    )
    add_sub_onnx(folder / "1" / "model.onnx")
    return folder


def unbatched_python_repository(root: Path, seconds_per_request: float = 0.0, length: int = 16) -> Path:
    """A python-backend model without batching: x FP32 [length] -> y = 2x (-1: any length), taking
    at least ``seconds_per_request``."""
    value = f'value {{ string_value: "{seconds_per_request}" }}'
    delay = f'parameters {{ key: "seconds_per_request" {value} }}\n' if seconds_per_request else ""
    return _folder(
        root,
        "doubler",
        """
name: "doubler"
backend: "python"
max_batch_size: 0
input [{ name: "x" data_type: TYPE_FP32 dims: [LENGTH] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [LENGTH] }]
instance_group [{ count: 1 kind: KIND_CPU }]
""".replace("LENGTH", str(length))
        + delay,
        {"1/model.py": ECHO_NUMPY},
    )


def string_python_repository(root: Path) -> tuple[Path, Path]:
    """A python-backend model with a STRING input of variable length, and request data for it."""
    folder = _folder(
        root,
        "lengths",
        """
name: "lengths"
backend: "python"
max_batch_size: 4
input [{ name: "text" data_type: TYPE_STRING dims: [-1] }]
output [{ name: "lengths" data_type: TYPE_INT32 dims: [-1] }]
dynamic_batching { }
""",
        {"1/model.py": LENGTHS},
    )
    data = root / "requests.json"
    data.write_text(
        json.dumps(
            {
                "data": [
                    {"text": {"content": ["triton", "sweeper", "measures"], "shape": [3]}},
                    {"text": {"content": ["hello", "world", "again"], "shape": [3]}},
                ]
            }
        )
    )
    return folder, data


def int8_onnx_repository(root: Path) -> Path:
    """A quantized (INT8 weights, ONNX Runtime's dynamic quantization) MLP served as it is."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root.mkdir(parents=True, exist_ok=True)
    fp32 = mlp_onnx(root / "mlp-fp32.onnx")
    folder = _folder(
        root,
        "mlp_int8",
        """
name: "mlp_int8"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
""",
    )
    quantize_dynamic(str(fp32), str(folder / "1" / "model.onnx"), weight_type=QuantType.QInt8)
    return folder


GPU_CONFIG = """
name: "mlp_gpu"
backend: "onnxruntime"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 2 kind: KIND_GPU gpus: [0] }]
dynamic_batching { max_queue_delay_microseconds: 100 }
optimization { execution_accelerators { gpu_execution_accelerator: [{
  name: "tensorrt"
  parameters { key: "precision_mode" value: "FP16" }
}] } }
"""


def gpu_onnx_repository(root: Path) -> Path:
    """The test MLP as a GPU user's repository has it: two KIND_GPU instances on GPU 0 and ONNX
    Runtime's TensorRT accelerator."""
    root.mkdir(parents=True, exist_ok=True)
    folder = _folder(root, "mlp_gpu", GPU_CONFIG)
    mlp_onnx(folder / "1" / "model.onnx")
    return folder


REFUSED = {
    "torchscript": (
        'platform: "pytorch_libtorch" max_batch_size: 8 input [{ name: "x" data_type: TYPE_FP32 dims: [4] }] '
        'output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]',
        "needs Triton's pytorch backend, which the local launcher's server",
    ),
    "decoupled": (
        'backend: "python" max_batch_size: 0 model_transaction_policy { decoupled: true } '
        'input [{ name: "x" data_type: TYPE_FP32 dims: [4] }] output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]',
        "decoupled models are not supported",
    ),
    "sequence": (
        'backend: "python" max_batch_size: 8 sequence_batching { } '
        'input [{ name: "x" data_type: TYPE_FP32 dims: [4] }] output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]',
        "sequence models (sequence_batching) are not supported",
    ),
    "ensemble": (
        'platform: "ensemble" max_batch_size: 8 input [{ name: "x" data_type: TYPE_FP32 dims: [4] }] '
        'output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]',
        "ensembles are not supported",
    ),
    "no-inputs": ('backend: "python" max_batch_size: 8', "declares no inputs or no outputs"),
    "variable-shape": (
        'backend: "python" max_batch_size: 8 input [{ name: "x" data_type: TYPE_FP32 dims: [-1] }] '
        'output [{ name: "y" data_type: TYPE_FP32 dims: [-1] }]',
        "input 'x' has a variable shape [-1]: give its shape in model.inputs or real samples in model.input_data",
    ),
}


def refused_repository(root: Path, case: str) -> Path:
    config, _ = REFUSED[case]
    return _folder(root, "refused", f'name: "refused"\n{config}\n', {"1/model.py": ECHO_NUMPY})
