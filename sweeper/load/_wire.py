"""Requests encoded once, in Triton's wire formats, and the check of a response's outputs.

HTTP uses the binary tensor extension (a JSON header, then the raw tensors); gRPC a
serialized ``ModelInferRequest`` in its 5-byte message frame. Both are built once per sample
before the load starts, so sending a request costs no encoding.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from tritonclient.grpc import service_pb2

from sweeper.data import to_wire_bytes
from sweeper.tensors import TensorSpec, dtype_of


class InferenceError(Exception):
    """The server answered a request with an error, or with outputs that are not the model's."""


def http_request(
    model_name: str, inputs: list[TensorSpec], tensors: dict[str, np.ndarray], outputs: list[str], authority: str
) -> bytes:
    """A complete HTTP/1.1 infer request (headers and body), binary tensors both ways."""
    raw = [to_wire_bytes(tensors[t.name], t.datatype) for t in inputs]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": t.name,
                    "shape": list(tensors[t.name].shape),
                    "datatype": t.datatype,
                    "parameters": {"binary_data_size": len(data)},
                }
                for t, data in zip(inputs, raw)
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        },
        separators=(",", ":"),
    ).encode()
    body_length = len(header) + sum(len(data) for data in raw)
    head = (
        f"POST /v2/models/{model_name}/infer HTTP/1.1\r\nHost: {authority}\r\n"
        "Content-Type: application/octet-stream\r\n"
        # Uncompressed responses, as perf_analyzer asks: compressing a 28.8 MB output costs the
        # server ~0.9 s on 2 cores and would be charged to "HTTP".
        "Accept-Encoding: identity\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode()
    return b"".join([head, header, *raw])


def grpc_message(
    model_name: str, inputs: list[TensorSpec], tensors: dict[str, np.ndarray], outputs: list[str]
) -> bytes:
    """A ``ModelInferRequest`` in gRPC's length-prefixed message frame."""
    request = service_pb2.ModelInferRequest(model_name=model_name)
    for tensor in inputs:
        array = tensors[tensor.name]
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(array.shape))
        request.raw_input_contents.append(to_wire_bytes(array, tensor.datatype))
    for name in outputs:
        request.outputs.add(name=name)
    payload = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def _expected_size(datatype: str, shape: list[int]) -> int | None:
    return None if datatype == "BYTES" else math.prod(shape) * dtype_of(datatype).itemsize


def check_outputs(found: list[tuple[str, str, list[int], int]], declared: list[TensorSpec], batch: int | None) -> None:
    """Compare a response's outputs ``(name, datatype, shape, bytes)`` with the model's declared
    outputs (``batch`` is the request's batch size, None for a model without batching); raise
    InferenceError naming the first mismatch. An empty or mis-shaped output would otherwise
    produce fast-looking numbers."""
    by_name = {name: (datatype, shape, size) for name, datatype, shape, size in found}
    for tensor in declared:
        if tensor.name not in by_name:
            raise InferenceError(f"the response lacks output '{tensor.name}' (it has {sorted(by_name) or 'none'})")
        datatype, shape, size = by_name[tensor.name]
        expected = ([batch] if batch is not None else []) + list(tensor.served_shape)
        if datatype != tensor.datatype:
            raise InferenceError(f"output '{tensor.name}' is {datatype}, the model declares {tensor.datatype}")
        if len(shape) != len(expected) or any(e not in (-1, s) for s, e in zip(shape, expected)):
            raise InferenceError(f"output '{tensor.name}' has shape {shape}, expected {expected} (-1 = any size)")
        wanted = _expected_size(datatype, shape)
        if (wanted is not None and size != wanted) or (wanted is None and math.prod(shape) and not size):
            expected_bytes = wanted if wanted is not None else "some"
            raise InferenceError(
                f"output '{tensor.name}' {shape} {datatype} carries {size} bytes, expected {expected_bytes}"
                " (an empty output: the numpy 2 trap of the python backend's numpy bridge is one cause)"
            )


def http_outputs(body: bytes, header_length: int) -> list[tuple[str, str, list[int], int]]:
    """The outputs an HTTP infer response describes: (name, datatype, shape, binary bytes)."""
    try:
        document = json.loads(body[:header_length] if header_length else body)
    except ValueError as exc:
        raise InferenceError(f"the response header is not JSON: {exc}") from None
    found = []
    for output in document.get("outputs", []):
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:  # a JSON output: count its values
            size = len(json.dumps(output.get("data", [])))
        found.append((output["name"], output["datatype"], list(output["shape"]), int(size)))
    return found


def grpc_outputs(message: bytes) -> list[tuple[str, str, list[int], int]]:
    """The outputs a gRPC ``ModelInferResponse`` (without its 5-byte frame) describes."""
    response = service_pb2.ModelInferResponse()
    response.ParseFromString(message)
    raw = list(response.raw_output_contents)
    return [
        (output.name, output.datatype, list(output.shape), len(raw[index]) if index < len(raw) else 0)
        for index, output in enumerate(response.outputs)
    ]
