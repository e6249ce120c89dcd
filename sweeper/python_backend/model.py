"""Triton python-backend model that serves ``model.onnx`` (beside this file) with ONNX Runtime.

Written into a model repository by triton-sweeper for servers without the onnxruntime backend
(the tritonserver in the nvidia-pytriton wheel). Tensors cross the stub through DLPack (the
stub's numpy bridge returns empty outputs under numpy 2) or, under numpy 1, through the numpy
bridge (numpy 1's DLPack capsules are rejected by the stub). String tensors always take the
numpy bridge: DLPack has no strings.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def _to_numpy(tensor):
    if _NUMPY2 and tensor.triton_dtype != "TYPE_STRING":
        return np.from_dlpack(tensor)
    array = tensor.as_numpy()
    return array.astype(str) if array.dtype == np.object_ else array


def _to_tensor(name, array):
    if array.dtype.kind in "OUS":
        return pb_utils.Tensor(
            name, np.array([str(v).encode() for v in array.ravel()], dtype=np.object_).reshape(array.shape)
        )
    array = np.ascontiguousarray(array)
    return pb_utils.Tensor.from_dlpack(name, array) if _NUMPY2 else pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
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
        if not self.batched:  # no batch axis to join requests on
            return [self._respond(self._run(self._feed(request))) for request in requests]
        # The dynamic batcher hands over several requests at once: run them as one batch.
        feeds = [self._feed(request) for request in requests]
        sizes = [feed[self.input_names[0]].shape[0] for feed in feeds]
        joined = {
            name: np.concatenate([feed[name] for feed in feeds]) if len(feeds) > 1 else feeds[0][name]
            for name in self.input_names
        }
        outputs = self._run(joined)
        responses, start = [], 0
        for size in sizes:
            responses.append(self._respond([output[start : start + size] for output in outputs]))
            start += size
        return responses

    def _feed(self, request):
        return {name: _to_numpy(pb_utils.get_input_tensor_by_name(request, name)) for name in self.input_names}

    def _run(self, feed):
        return self.session.run(self.output_names, feed)

    def _respond(self, outputs):
        tensors = [_to_tensor(name, output) for name, output in zip(self.output_names, outputs)]
        return pb_utils.InferenceResponse(output_tensors=tensors)
