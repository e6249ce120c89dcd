"""Tensor descriptions shared by the artifact, config and load stages.

A model's inputs and outputs come from its ONNX graph or its config.pbtxt; both are turned
into ``TensorSpec`` (Triton datatype names, per-sample shape, -1 for a variable dimension).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from tritonclient.grpc import model_config_pb2 as mc

# Triton datatype name -> numpy dtype. BYTES (config.pbtxt's TYPE_STRING) holds byte strings.
NUMPY_DTYPES: dict[str, type] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT64": np.uint64,
    "UINT32": np.uint32,
    "UINT16": np.uint16,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
    "BYTES": np.object_,
}
DATATYPES = tuple(NUMPY_DTYPES)

_FROM_ONNX = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: Triton datatype and per-sample shape (-1 = variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def served_shape(self) -> tuple[int, ...]:
        """The per-sample shape Triton declares and sends: a tensor with only the batch axis (an
        ONNX ``[N]``) is ``dims: [1]`` with ``reshape { shape: [] }``, Triton's convention."""
        return self.shape or (1,)

    @property
    def variable(self) -> bool:
        """Whether some dimension is only known from the data (-1)."""
        return -1 in self.shape

    def as_dict(self) -> dict:
        """JSON-ready form, as stored on the study."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        """The inverse of ``as_dict``."""
        return cls(data["name"], data["datatype"], tuple(data["shape"]))


def onnx_io(model: onnx.ModelProto, *, batched: bool = True) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph; with ``batched`` its first axis is the batch axis."""
    initializers = {i.name for i in model.graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> TensorSpec:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ValueError(_not_a_tensor(value.name, kind, value.type))
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        datatype = _FROM_ONNX.get(tensor.elem_type)
        if datatype is None:
            raise ValueError(f"tensor '{value.name}' has an unsupported ONNX element type {tensor.elem_type}")
        return TensorSpec(value.name, datatype, tuple(dims[1:] if batched else dims))

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model.graph.output]
    for tensor in inputs:
        if batched and not tensor.shape:
            raise ValueError(
                f"input '{tensor.name}' has only the batch axis ([N]): the sweeper's request data cannot feed it yet; "
                "export the input as [N, 1] (outputs of this shape are served: dims [1], reshape [])"
            )
    return inputs, outputs


def fixed_batch_axis(model: onnx.ModelProto) -> tuple[str, int] | None:
    """The first input whose leading dimension the graph fixes (an export without a dynamic
    batch axis: ``[1, 3, 64, 64]``) and that dimension; None where every input leaves it open."""
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or value.type.WhichOneof("value") != "tensor_type":
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            return value.name, dims[0].dim_value
    return None


def batch_axis_fix(tensors: list[str]) -> str:
    """How to export a model with a dynamic batch axis, for the tensors named."""
    axes = ", ".join(f"'{name}': {{0: 'batch'}}" for name in tensors)
    return (
        f"export it with a dynamic batch axis: torch.onnx.export(..., dynamic_axes={{{axes}}}), "
        "or with the newer exporter (dynamo=True) dynamic_shapes={<argument>: {0: torch.export.Dim('batch')}}"
    )


_KINDS = {
    "sequence_type": "a sequence",
    "map_type": "a map",
    "optional_type": "an optional value",
    "sparse_tensor_type": "a sparse tensor",
}


def _not_a_tensor(name: str, kind: str | None, value_type: onnx.TypeProto) -> str:
    """Why a graph input or output Triton cannot carry is refused, and how exporters avoid it."""
    words = _KINDS.get(kind or "", f"an ONNX {kind or 'untyped'} value")
    if kind == "sequence_type" and value_type.sequence_type.elem_type.WhichOneof("value") == "map_type":
        words = "a sequence of maps (a ZipMap)"
    return (
        f"tensor '{name}' is {words}, not a tensor: Triton serves tensors only. skl2onnx writes a classifier's "
        "probabilities as a ZipMap unless converted with options={id(model): {'zipmap': False}}; other "
        "exporters: return tensors from the model"
    )


def config_datatype(data_type: int) -> str:
    """config.pbtxt's ``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES`` (the wire name)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def config_io(model: mc.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as config.pbtxt declares them (per-sample dims when it batches)."""

    def describe(tensor) -> TensorSpec:
        return TensorSpec(tensor.name, config_datatype(tensor.data_type), tuple(tensor.dims))

    return [describe(t) for t in model.input], [describe(t) for t in model.output]


def dtype_of(datatype: str) -> np.dtype:
    """The numpy dtype that carries a Triton datatype."""
    return np.dtype(NUMPY_DTYPES[datatype])
