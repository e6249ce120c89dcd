"""Triton python-backend model that serves ``model.onnx`` (beside this file) with ONNX Runtime.

Written into a model repository by triton-sweeper for servers without the onnxruntime backend
(the tritonserver in the nvidia-pytriton wheel). Tensors cross the stub through DLPack, which
(the stub's numpy bridge returns empty outputs under numpy 2) or, under numpy 1, through the
numpy bridge (numpy 1's DLPack capsules are rejected by the stub).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def _to_numpy(tensor):
    return np.from_dlpack(tensor) if _NUMPY2 else tensor.as_numpy()


def _to_tensor(name, array):
    array = np.ascontiguousarray(array)
    return pb_utils.Tensor.from_dlpack(name, array) if _NUMPY2 else pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            device = {"device_id": int(args["model_instance_device_id"])}
            providers.insert(0, ("CUDAExecutionProvider", device))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=providers)

    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: run them as one batch.
        parts = {name: [] for name in self.input_names}
        sizes = []
        for request in requests:
            for name in self.input_names:
                parts[name].append(_to_numpy(pb_utils.get_input_tensor_by_name(request, name)))
            sizes.append(parts[self.input_names[0]][-1].shape[0])
        feed = {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for name, arrays in parts.items()}
        outputs = self.session.run(self.output_names, feed)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                _to_tensor(name, output[start : start + size]) for name, output in zip(self.output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
