"""Tensor descriptions and sample data shared by the artifact, config and load stages."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

# Triton datatype name -> numpy dtype, and ONNX element type -> Triton datatype name.
NUMPY_DTYPES: dict[str, type] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
_FROM_ONNX = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: Triton datatype and per-sample shape (-1 = variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def onnx_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph whose first axis is the batch axis."""
    initializers = {i.name for i in model.graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        datatype = _FROM_ONNX.get(tensor.elem_type)
        if datatype is None:
            raise ValueError(f"tensor '{value.name}' has an unsupported ONNX element type {tensor.elem_type}")
        return TensorSpec(value.name, datatype, tuple(dims[1:]))

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model.graph.output]
    return inputs, outputs


def generate_inputs(
    inputs: list[TensorSpec], batch_size: int, *, low: float, high: float, seed: int
) -> dict[str, np.ndarray]:
    """Random inputs of shape [batch_size, *shape]: uniform floats, integers in [low, high)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in inputs:
        shape = (batch_size, *tensor.shape)
        dtype = NUMPY_DTYPES[tensor.datatype]
        if tensor.datatype == "BOOL":
            arrays[tensor.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arrays[tensor.name] = rng.integers(int(low), max(int(high), int(low) + 1), shape).astype(dtype)
        else:
            arrays[tensor.name] = rng.uniform(low, high, shape).astype(dtype)
    return arrays
