"""The request data of a sweep: the user's samples or generated ones, checked against the model.

One ``Samples`` feeds everything that sends data: both load generators (requests cycle through
the samples, ``batch_size`` consecutive samples a request), the FP16/INT8 accuracy check and
INT8 calibration. It is read from perf_analyzer's ``--input-data`` JSON (``content``, ``shape``
and ``b64`` forms) or an ``.npz`` (one array per input, first axis = samples), or generated
(uniform numbers, random short strings). Problems raise ``DataError`` naming the input.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.tensors import TensorSpec, dtype_of


class DataError(ValueError):
    """Request data that does not fit the model's inputs; the message names the input."""


@dataclasses.dataclass(frozen=True)
class Samples:
    """``count`` samples of every input; each sample has its own (per-sample) shape."""

    inputs: tuple[TensorSpec, ...]
    arrays: dict[str, tuple[np.ndarray, ...]]

    @property
    def count(self) -> int:
        """How many samples there are."""
        return len(next(iter(self.arrays.values())))

    def batch(self, start: int, size: int, *, batched: bool) -> dict[str, np.ndarray]:
        """``size`` consecutive samples from ``start`` (cycling) as one request's tensors.

        ``batched`` adds the batch axis; a model without batching takes one sample as it is."""
        picks = [(start + offset) % self.count for offset in range(size)]
        request = {}
        for tensor in self.inputs:
            parts = [self.arrays[tensor.name][i] for i in picks]
            if not batched:
                request[tensor.name] = parts[0]
                continue
            shapes = {part.shape for part in parts}
            if len(shapes) > 1:
                raise DataError(
                    f"input '{tensor.name}': samples {picks} have different shapes {sorted(shapes)} and cannot "
                    "share one request; give samples of one shape or batch_size 1"
                )
            request[tensor.name] = np.stack(parts)
        return request

    def requests(self, batch_size: int, *, batched: bool) -> list[dict[str, np.ndarray]]:
        """The distinct requests of a cycle through every sample, ``batch_size`` samples each."""
        count = self.count // math.gcd(self.count, batch_size)
        return [self.batch(k * batch_size, batch_size, batched=batched) for k in range(count)]

    def perf_analyzer_json(self) -> dict[str, Any]:
        """The samples in perf_analyzer's ``--input-data`` JSON (base64 content, explicit shapes)."""
        entries = []
        for index in range(self.count):
            entry = {}
            for tensor in self.inputs:
                array = self.arrays[tensor.name][index]
                content = base64.b64encode(to_wire_bytes(array, tensor.datatype)).decode()
                entry[tensor.name] = {"content": {"b64": content}, "shape": list(array.shape)}
            entries.append(entry)
        return {"data": entries}


def to_wire_bytes(array: np.ndarray, datatype: str) -> bytes:
    """Triton's binary tensor layout: raw little-endian values; BYTES elements each prefixed
    with their 4-byte little-endian length."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in (_as_bytes(v) for v in array.ravel()))
    return np.ascontiguousarray(array, dtype=dtype_of(datatype).newbyteorder("<")).tobytes()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _from_wire_bytes(raw: bytes, datatype: str, where: str) -> np.ndarray:
    if datatype != "BYTES":
        itemsize = dtype_of(datatype).itemsize
        if len(raw) % itemsize:
            raise DataError(
                f"{where}: {len(raw)} bytes is not a whole number of {datatype} values ({itemsize} bytes each)"
            )
        return np.frombuffer(raw, dtype=dtype_of(datatype).newbyteorder("<")).astype(dtype_of(datatype))
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise DataError(f"{where}: truncated BYTES element length at byte {offset}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise DataError(f"{where}: a BYTES element of {length} bytes runs past the end of the data")
        items.append(raw[offset : offset + length])
        offset += length
    return np.array(items, dtype=np.object_)


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(d == -1 or d == s for s, d in zip(shape, declared))


def _check_sample(tensor: TensorSpec, array: np.ndarray, where: str) -> None:
    if not _fits(array.shape, tensor.shape):
        raise DataError(
            f"{where}: input '{tensor.name}' has shape {list(array.shape)} but the model expects "
            f"{list(tensor.shape)} per sample (-1 = any size)"
        )


def _content_array(tensor: TensorSpec, content: Any, shape: list[int] | None, where: str) -> np.ndarray:
    if isinstance(content, dict):
        if set(content) != {"b64"} or not isinstance(content["b64"], str):
            raise DataError(f'{where}: input \'{tensor.name}\': content must be a list or {{"b64": "..."}}')
        try:
            raw = base64.b64decode(content["b64"], validate=True)
        except ValueError:
            raise DataError(f"{where}: input '{tensor.name}': b64 is not valid base64") from None
        flat = _from_wire_bytes(raw, tensor.datatype, f"{where}: input '{tensor.name}'")
    elif isinstance(content, list):
        flat = _list_values(tensor, _flatten(content), where)
    else:
        raise DataError(f"{where}: input '{tensor.name}': expected a list of values, b64 or content/shape")
    if shape is None:
        if tensor.variable:
            raise DataError(
                f"{where}: input '{tensor.name}' has a variable shape {list(tensor.shape)}: "
                'give "shape" with its content'
            )
        shape = list(tensor.shape)
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise DataError(f"{where}: input '{tensor.name}': shape must be a list of non-negative integers")
    if flat.size != math.prod(shape):
        raise DataError(
            f"{where}: input '{tensor.name}' has {flat.size} values but shape {shape} needs {math.prod(shape)}"
        )
    return flat.reshape(shape)


def _flatten(values: list) -> list:
    flat: list = []
    for value in values:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


def _list_values(tensor: TensorSpec, values: list, where: str) -> np.ndarray:
    what = f"{where}: input '{tensor.name}' ({tensor.datatype})"
    if tensor.datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{what}: expected strings")
        return np.array([v.encode() for v in values], dtype=np.object_)
    if tensor.datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise DataError(f"{what}: expected true/false values")
        return np.array(values, dtype=np.bool_)
    dtype = dtype_of(tensor.datatype)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{what}: expected numbers")
    if np.issubdtype(dtype, np.integer):
        if not all(isinstance(v, int) or float(v).is_integer() for v in values):
            raise DataError(f"{what}: expected integers")
        info = np.iinfo(dtype)
        if values and (min(values) < info.min or max(values) > info.max):
            raise DataError(f"{what}: values outside [{info.min}, {info.max}]")
    return np.array(values, dtype=dtype)


def read_perf_analyzer_json(path: Path, inputs: list[TensorSpec]) -> Samples:
    """Samples from perf_analyzer's ``--input-data`` JSON: ``{"data": [{"INPUT": ...}, ...]}``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: its JSON is nested too deep to be request data (a tensor has a few axes)") from None
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f'{path}: expected {{"data": [ {{"<input>": ...}}, ... ]}} with at least one entry')
    if any(isinstance(entry, list) for entry in entries):
        raise DataError(f"{path}: data streams (lists of lists) are for sequence models, which are not supported")
    names = {t.name for t in inputs}
    arrays: dict[str, list[np.ndarray]] = {t.name: [] for t in inputs}
    for index, entry in enumerate(entries):
        where = f"{path}: data[{index}]"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object of input names")
        _check_names(set(entry), names, where)
        for tensor in inputs:
            value = entry[tensor.name]
            if isinstance(value, dict) and "content" in value:
                extra = set(value) - {"content", "shape"}
                if extra:
                    raise DataError(
                        f"{where}: input '{tensor.name}': unknown keys {sorted(extra)} (allowed: content, shape)"
                    )
                array = _content_array(tensor, value["content"], value.get("shape"), where)
            else:
                array = _content_array(tensor, value, None, where)
            _check_sample(tensor, array, where)
            arrays[tensor.name].append(array)
    return Samples(tuple(inputs), {name: tuple(values) for name, values in arrays.items()})


def read_npz(path: Path, inputs: list[TensorSpec]) -> Samples:
    """Samples from an ``.npz``: one array per input, its first axis the samples."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            loaded = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None
    _check_names(set(loaded), {t.name for t in inputs}, str(path))
    counts = {name: (array.shape[0] if array.ndim else 0) for name, array in loaded.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise DataError(f"{path}: every input needs the same number (>= 1) of samples on its first axis; got {counts}")
    arrays = {}
    for tensor in inputs:
        array = loaded[tensor.name]
        where = f"{path}: input '{tensor.name}'"
        if tensor.datatype == "BYTES":
            if array.dtype.kind not in "SU":
                raise DataError(f"{where}: BYTES needs a string array, got {array.dtype}")
            array = np.vectorize(_as_bytes, otypes=[np.object_])(array) if array.size else array.astype(np.object_)
        elif array.dtype != dtype_of(tensor.datatype):
            raise DataError(
                f"{where}: dtype {array.dtype} does not match the model's {tensor.datatype} "
                f"({dtype_of(tensor.datatype)})"
            )
        samples = tuple(array[i] for i in range(array.shape[0]))
        _check_sample(tensor, samples[0], str(path))
        arrays[tensor.name] = samples
    return Samples(tuple(inputs), arrays)


def _check_names(given: set[str], expected: set[str], where: str) -> None:
    missing, unknown = sorted(expected - given), sorted(given - expected)
    if missing or unknown:
        parts = ([f"missing input(s) {missing}"] if missing else []) + (
            [f"unknown input(s) {unknown}"] if unknown else []
        )
        raise DataError(f"{where}: {'; '.join(parts)}; the model's inputs are {sorted(expected)}")


def read_samples(path: Path, inputs: list[TensorSpec]) -> Samples:
    """Samples from a ``.json`` (perf_analyzer's format) or ``.npz`` file."""
    if path.suffix == ".npz":
        return read_npz(path, inputs)
    if path.suffix == ".json":
        return read_perf_analyzer_json(path, inputs)
    raise DataError(f"{path}: input data must be a .json (perf_analyzer's --input-data format) or an .npz file")


def generate_samples(
    inputs: list[TensorSpec],
    count: int,
    *,
    low: float,
    high: float,
    seed: int,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Samples:
    """``count`` random samples: uniform numbers in [low, high) (integers clipped to their type;
    ``ranges`` gives an input its own low and high), random booleans, random 16-letter strings
    for BYTES."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in inputs:
        lowest, highest = (ranges or {}).get(tensor.name, (low, high))
        if tensor.variable:
            raise DataError(
                f"input '{tensor.name}' has a variable shape {list(tensor.shape)}: give its shape in model.inputs "
                "or real samples in model.input_data"
            )
        shape = (count, *tensor.shape)
        if tensor.datatype == "BYTES":
            letters = rng.integers(ord("a"), ord("z") + 1, (*shape, 16), dtype=np.uint8)
            batch = np.array([row.tobytes() for row in letters.reshape(-1, 16)], dtype=np.object_).reshape(shape)
        elif tensor.datatype == "BOOL":
            batch = rng.random(shape) < 0.5
        else:
            dtype = dtype_of(tensor.datatype)
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                first = max(int(lowest), info.min)
                last = min(max(int(highest), int(lowest) + 1), info.max)
                batch = rng.integers(first, max(last, first + 1), shape).astype(dtype)
            else:
                batch = rng.uniform(lowest, highest, shape).astype(dtype)
        arrays[tensor.name] = tuple(batch[i] for i in range(count))
    return Samples(tuple(inputs), arrays)
