"""Stage 3: config.pbtxt, built and parsed with Triton's own protobuf schema.

A trial's config is its model's *template* (the user's config.pbtxt, or one generated from
an ONNX graph) with only the swept fields rewritten: every other field is kept as it was.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.tensors import TensorSpec
from sweeper.vocabulary import BATCHING_OFF, TrialConfig

# Backends that a platform string stands for (config.pbtxt may name either).
_PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
}


def template_from_io(model_name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> mc.ModelConfig:
    """A config for a model known by its tensors alone (an ONNX file): name, inputs, outputs."""
    model = mc.ModelConfig(name=model_name)
    for tensors, target in ((inputs, model.input), (outputs, model.output)):
        for tensor in tensors:
            datatype = "STRING" if tensor.datatype == "BYTES" else tensor.datatype
            added = target.add(
                name=tensor.name, data_type=mc.DataType.Value(f"TYPE_{datatype}"), dims=tensor.served_shape
            )
            if not tensor.shape:  # only the batch axis: the model sees [N], Triton [N, 1]
                added.reshape.SetInParent()
    return model


def model_backend(model: mc.ModelConfig) -> str:
    """The Triton backend a config needs (``backend``, or the one its ``platform`` implies)."""
    return model.backend or _PLATFORM_BACKENDS.get(model.platform, model.platform)


def apply_trial(
    template: mc.ModelConfig,
    config: TrialConfig,
    *,
    serve_with: str | None = None,
    instance_kind: int | None = None,
    tensorrt_precision: str | None = None,
) -> mc.ModelConfig:
    """The template with one trial's knobs.

    ``serve_with`` (``onnxruntime`` or ``python``) sets the backend of an ONNX model;
    ``instance_kind`` the kind of an instance group the template lacks. ``dynamic_batching``
    keeps its other fields (preferred sizes above ``max_batch_size`` are dropped: Triton
    refuses them); ``off`` removes the block."""
    model = mc.ModelConfig()
    model.CopyFrom(template)
    model.max_batch_size = config.max_batch_size
    if config.max_queue_delay_us == BATCHING_OFF:
        model.ClearField("dynamic_batching")
    else:
        model.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
        kept = [size for size in model.dynamic_batching.preferred_batch_size if size <= config.max_batch_size]
        del model.dynamic_batching.preferred_batch_size[:]
        model.dynamic_batching.preferred_batch_size.extend(kept)
    if not model.instance_group:
        group = model.instance_group.add(count=config.instance_count)
        if instance_kind is not None:
            group.kind = instance_kind
    for group in model.instance_group:
        group.count = config.instance_count
    if serve_with is not None:
        serve_as(model, serve_with, template)
    if tensorrt_precision is not None:
        # ONNX Runtime's TensorRT execution provider builds the engine in this precision.
        model.optimization.execution_accelerators.ClearField("gpu_execution_accelerator")
        trt = model.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = tensorrt_precision
    for path, value in config.config_fields.items():
        if value is None or (path.startswith("dynamic_batching.") and not config.dynamic_batching):
            continue  # the model's own value; a batching field without batching is not applied
        config_field(path).apply(model, value)
    return model


# Fields a named knob (or another key of the spec) sets: ``search_space.config`` points there.
_COVERED = {
    "max_batch_size": "search_space.max_batch_size",
    "dynamic_batching": "search_space.max_queue_delay_us (no block is 'off'; its other fields are "
    "dynamic_batching.<field>)",
    "dynamic_batching.max_queue_delay_microseconds": "search_space.max_queue_delay_us",
    "instance_group": "search_space.instance_count (and instance_group[N].<field> for its other fields)",
    "instance_group[N]": "search_space.instance_count (and instance_group[N].<field> for its other fields)",
    "instance_group[N].count": "search_space.instance_count",
    "name": "model.name",
    "input.*": "the model's inputs (model.inputs)",
    "output.*": "the model's own outputs",
    "backend": "server.backend",
    "platform": "server.backend",
    "runtime": "server.backend",
    "default_model_filename": "the model's own files",
}
# Fields that change what is served, not how: a sweep may not change them (the model's own
# config.pbtxt, the baseline, is where they belong).
_CHANGES_SERVING = {
    "sequence_batching": "the scheduling kind (a sequence model's scheduler)",
    "ensemble_scheduling": "the scheduling kind (an ensemble's steps)",
    "model_transaction_policy": "the scheduling kind (decoupled responses)",
    "batch_input": "the model's inputs (batch inputs)",
    "batch_output": "the model's outputs (batch outputs)",
    "cc_model_filenames": "the model's own files",
    "model_repository_agents": "how the model's files are read (repository agents)",
    "version_policy": "which versions of the model are served",
    "parameters.EXECUTION_ENV_PATH": "the python backend's environment (an archive loaded from a path)",
}
_STEP = re.compile(r"([A-Za-z_]\w*)(?:\[(\d+)\])?")
_INTEGERS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


@dataclasses.dataclass(frozen=True)
class _Step:
    name: str
    index: int | None = None
    """The element of a list of messages (``instance_group[0]``)."""
    key: str | None = None
    """The entry of a map (``parameters.intra_op_thread_count``)."""


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """A field of Triton's ModelConfig named by a path (``dynamic_batching.preferred_batch_size``,
    ``instance_group[0].kind``, ``parameters.intra_op_thread_count``), checked against
    model_config_pb2's descriptor. Values are stored as Optuna parameters: scalars as they are
    (an enum by its name), lists and messages as JSON text."""

    path: str
    steps: tuple[_Step, ...]
    leaf: FieldDescriptor
    """The field the value sets (a map's value field for a map entry)."""

    @property
    def whole_list(self) -> bool:
        """Whether the value is a whole repeated field (a list)."""
        return self.leaf.is_repeated and self.steps[-1].key is None and self.steps[-1].index is None

    @property
    def parameter(self) -> bool:
        """A ``parameters`` map entry: Triton's ModelParameter, whose value is its string_value."""
        return self.leaf.containing_type is mc.ModelParameter.DESCRIPTOR and self.steps[-1].key is not None

    def type_name(self) -> str:
        """The value's type in words (``a list of integers``, ``one of KIND_AUTO, KIND_GPU, ...``)."""
        element = _type_name(self.leaf)
        return f"a list of {element}s" if self.whole_list else f"{_article(element)} {element}"

    def encode(self, value: Any) -> Any:
        """``value`` as a stored parameter; ValueError naming the path and the type it needs, or
        what Triton's meaning of the field allows."""
        try:
            scratch = mc.ModelConfig()
            self._set(scratch, value)
        except (TypeError, ValueError, json_format.ParseError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise ValueError(f"{value!r} is not {self.type_name()}" + (f" ({detail})" if detail else "")) from None
        _check_meaning(scratch)
        return json.dumps(value) if isinstance(value, (list, dict)) else value

    def decode(self, stored: Any) -> Any:
        """A stored parameter as the value it stands for."""
        return json.loads(stored) if self.whole_list or self.leaf.message_type is not None else stored

    def apply(self, model: mc.ModelConfig, stored: Any) -> None:
        """Set the field in ``model`` to a stored parameter's value."""
        self._set(model, self.decode(stored))

    def read(self, model: mc.ModelConfig) -> Any:
        """The field's value in ``model`` as a stored parameter; None where it is unset (or at
        its default)."""
        target: Any = model
        for step in self.steps[:-1]:
            target = _existing(target, step)
            if target is None:
                return None
        last = self.steps[-1]
        if last.key is not None:
            entries = getattr(target, last.name)
            if last.key not in entries:
                return None
            if self.leaf.message_type is not None:
                return self._stored(entries[last.key])
            value = entries[last.key].string_value if self.parameter else entries[last.key]
            return value or None
        if last.index is not None:
            element = _existing(target, last)
            return None if element is None else self._stored(element)
        if self.leaf.message_type is not None and not self.whole_list:
            return self._stored(getattr(target, last.name)) if target.HasField(last.name) else None
        value = getattr(target, last.name)
        if self.whole_list:
            items = [self._item(item) for item in value]
            return json.dumps(items) if items else None
        return None if value == self.leaf.default_value else self._item(value)

    def _item(self, value: Any) -> Any:
        if self.leaf.enum_type is not None:
            return self.leaf.enum_type.values_by_number[value].name
        if self.leaf.message_type is not None:
            return json_format.MessageToDict(value, preserving_proto_field_name=True)
        return value

    def _stored(self, message: Any) -> str:
        return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))

    def _set(self, model: mc.ModelConfig, value: Any) -> None:
        target: Any = model
        for step in self.steps[:-1]:
            target = _descend(target, step)
        last = self.steps[-1]
        if last.key is not None:
            entries = getattr(target, last.name)
            if self.leaf.message_type is not None:
                entries[last.key].Clear()
                json_format.ParseDict(_mapping(value), entries[last.key])
            elif self.parameter:
                _check_scalar(self.leaf, value)
                entries[last.key].string_value = value
            else:
                entries[last.key] = _scalar(self.leaf, value)
        elif last.index is not None:
            element = _descend(target, last)
            element.Clear()
            json_format.ParseDict(_mapping(value), element)
        elif self.whole_list:
            if not isinstance(value, list):
                raise TypeError("")
            items = getattr(target, last.name)
            del items[:]
            for item in value:
                if self.leaf.message_type is not None:
                    json_format.ParseDict(_mapping(item), items.add())
                else:
                    items.append(_scalar(self.leaf, item))
        elif self.leaf.message_type is not None:
            message = getattr(target, last.name)
            message.Clear()
            message.SetInParent()
            json_format.ParseDict(_mapping(value), message)
        else:
            setattr(target, last.name, _scalar(self.leaf, value))


def config_field(path: str) -> ConfigField:
    """The ModelConfig field ``path`` names; ValueError naming what is wrong with the closest
    names, a field that needs an index, or the key of the spec that sets it."""
    _refuse_fields_set_elsewhere(path)
    segments = path.split(".")
    descriptor: Descriptor = mc.ModelConfig.DESCRIPTOR
    steps: list[_Step] = []
    position = 0
    while True:
        walked = segments[:position]
        match = _STEP.fullmatch(segments[position])
        if match is None:
            raise ValueError(f"'{segments[position]}' is not a field name (write name or name[N])")
        name, index = match.group(1), match.group(2)
        field = descriptor.fields_by_name.get(name)
        if field is None:
            where = ".".join(walked) or "ModelConfig"
            raise ValueError(f"{where} has no field '{name}'{_closest(descriptor, name, walked)}")
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if index is not None or position == len(segments) - 1:
                raise ValueError(f"{name} is a map: name one entry, {name}.<key>")
            steps.append(_Step(name, key=segments[position + 1]))
            field = field.message_type.fields_by_name["value"]
            position += 2
            if position == len(segments):  # a ModelParameter's value is its string_value
                parameter = field.message_type is mc.ModelParameter.DESCRIPTOR
                return ConfigField(path, tuple(steps), field.message_type.fields[0] if parameter else field)
        else:
            steps.append(_check_step(field, name, index, last=position == len(segments) - 1))
            position += 1
            if position == len(segments):
                return ConfigField(path, tuple(steps), field)
        if field.message_type is None:
            kind = _type_name(field)
            raise ValueError(
                f"{'.'.join(segments[:position])} is {_article(kind)} {kind}: it has no field '{segments[position]}'"
            )
        descriptor = field.message_type


def _refuse_fields_set_elsewhere(path: str) -> None:
    """ValueError for a field a named knob or another spec key sets, or one that changes what is
    served rather than how."""
    general = re.sub(r"\[\d+\]", "[N]", path)
    covered = _COVERED.get(general) or _COVERED.get(general.split("[")[0].split(".")[0] + ".*")
    if covered is not None:
        raise ValueError(f"{path} is set by {covered}")
    top = path.split(".")[0].split("[")[0]
    # A whole field, or a parameter entry (whose key Triton reads in any case).
    changed = next((why for key, why in _CHANGES_SERVING.items() if key == top or key.lower() == path.lower()), None)
    if changed is not None:
        raise ValueError(f"{path} changes what is served, not how: {changed}; set it in the model's own config.pbtxt")


def _check_step(field: FieldDescriptor, name: str, index: str | None, last: bool) -> _Step:
    """One step of a path through a field that is no map: an element of a list needs its index."""
    if field.is_repeated and index is None and not last:
        raise ValueError(f"{name} is a list of {field.message_type.name}: name one element, {name}[0]")
    if not field.is_repeated and index is not None:
        raise ValueError(f"{name} is not a list: write {name}, not {name}[{index}]")
    if field.is_repeated and index is not None and field.message_type is None:
        raise ValueError(f"{name} is a list of {_type_name(field)}s: give the whole list, not one element")
    return _Step(name, int(index) if index is not None else None)


def _existing(message: Any, step: _Step) -> Any:
    """The sub-message a step names where the message has it, else None (nothing is created)."""
    container = getattr(message, step.name)
    if step.key is not None:
        return container[step.key] if step.key in container else None
    if step.index is not None:
        return container[step.index] if step.index < len(container) else None
    return container if message.HasField(step.name) else None


def _descend(message: Any, step: _Step) -> Any:
    """The sub-message a step names, created where the message lacks it."""
    container = getattr(message, step.name)
    if step.key is not None:
        return container[step.key]
    if step.index is not None:
        while len(container) <= step.index:
            container.add()
        return container[step.index]
    return container


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError("")
    return value


def _check_meaning(model: mc.ModelConfig) -> None:
    """ValueError where a value has its type but no meaning to Triton: a batch size below 1, a
    warm-up data file outside the model's warmup folder."""
    sizes = list(model.dynamic_batching.preferred_batch_size)
    if any(size < 1 for size in sizes):
        raise ValueError(f"preferred batch sizes are from 1 to max_batch_size, not {sizes}")
    for warmup in model.model_warmup:
        if warmup.batch_size > 2**31 - 1:
            raise ValueError(f"model_warmup batch_size {warmup.batch_size} is no batch size")
        for name, data in warmup.inputs.items():
            file = data.input_data_file
            if file and (file.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", file)):
                raise ValueError(
                    f"model_warmup input '{name}': input_data_file {file!r} lies outside the model's warmup folder"
                )


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    _check_scalar(field, value)
    return field.enum_type.values_by_name[value].number if field.enum_type is not None else value


def _check_scalar(field: FieldDescriptor, value: Any) -> None:
    cpp = field.cpp_type
    if cpp in _INTEGERS:
        low, high = _INTEGERS[cpp]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise TypeError(f"from {low} to {high}")
    elif cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TypeError("a finite number")
    elif cpp == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise TypeError("")
    elif cpp == FieldDescriptor.CPPTYPE_ENUM:
        if value not in field.enum_type.values_by_name:
            raise TypeError("")
    elif cpp == FieldDescriptor.CPPTYPE_STRING and not isinstance(value, str):
        raise TypeError('quote numbers: "2"')


def _type_name(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        return f"{field.enum_type.name} ({', '.join(field.enum_type.values_by_name)})"
    if field.message_type is not None:
        return f"{field.message_type.name} message (a mapping of its fields)"
    cpp = field.cpp_type
    if cpp in _INTEGERS:
        return "integer"
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return "number"
    return "boolean" if cpp == FieldDescriptor.CPPTYPE_BOOL else "string"


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiouAEIOU" else "a"


def _closest(descriptor: Descriptor, name: str, walked: list[str]) -> str:
    """'; closest: ...' from the message's own fields, or fields of that name deeper in ModelConfig."""
    near = difflib.get_close_matches(name, list(descriptor.fields_by_name), n=3, cutoff=0.6)
    if not walked:
        near += [p for p in _deeper_paths() if difflib.get_close_matches(name, [p.rsplit(".", 1)[-1]], cutoff=0.8)]
    prefix = ".".join(walked) + "." if walked else ""
    names = [n if "." in n or not prefix else prefix + n for n in dict.fromkeys(near)][:4]
    if names:
        return "; closest: " + ", ".join(names)
    return f"; its fields: {', '.join(descriptor.fields_by_name)}"


def _deeper_paths(depth: int = 3) -> list[str]:
    """Dotted paths of ModelConfig's fields below the top level (lists as name[0])."""
    found: list[str] = []
    frontier = [("", mc.ModelConfig.DESCRIPTOR)]
    for _ in range(depth):
        deeper = []
        for prefix, descriptor in frontier:
            for field in descriptor.fields:
                if field.message_type is None or field.message_type.GetOptions().map_entry:
                    if prefix:
                        found.append(prefix + field.name)
                    continue
                step = f"{field.name}[0]" if field.is_repeated else field.name
                if prefix:
                    found.append(prefix + step)
                deeper.append((f"{prefix}{step}.", field.message_type))
        frontier = deeper
    return found


def copy_of(model: mc.ModelConfig) -> mc.ModelConfig:
    """A copy of a config, to change without touching the original."""
    copied = mc.ModelConfig()
    copied.CopyFrom(model)
    return copied


def for_cpu(template: mc.ModelConfig) -> tuple[mc.ModelConfig, tuple[str, ...]]:
    """A config written for a GPU, as a host without one can serve it: KIND_GPU instance groups
    on the CPU (their ``gpus`` dropped) and no GPU execution accelerators (TensorRT, CUDA
    graphs of ONNX Runtime). Returns the copy and each change in words; none for a CPU config."""
    model = copy_of(template)
    changes = []
    for index, group in enumerate(model.instance_group):
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
            changes.append(f"instance_group[{index}].kind: KIND_GPU -> KIND_CPU")
        if group.gpus:
            changes.append(f"instance_group[{index}].gpus: {list(group.gpus)} dropped")
            del group.gpus[:]
    accelerators = model.optimization.execution_accelerators
    if accelerators.gpu_execution_accelerator:
        names = [a.name for a in accelerators.gpu_execution_accelerator]
        changes.append(f"optimization.execution_accelerators.gpu_execution_accelerator {names} dropped (GPU only)")
        accelerators.ClearField("gpu_execution_accelerator")
    return model, tuple(changes)


def restore_gpu_fields(model: mc.ModelConfig, user: mc.ModelConfig) -> None:
    """Give a config measured on a CPU host back the GPU fields of the user's config
    (``for_cpu`` took them out): each instance group's kind and ``gpus``, and the GPU
    accelerators, unless a knob set its own (a ``_trt`` precision)."""
    for group, original in zip(model.instance_group, user.instance_group):
        group.kind = original.kind
        del group.gpus[:]
        group.gpus.extend(original.gpus)
    wanted = user.optimization.execution_accelerators.gpu_execution_accelerator
    accelerators = model.optimization.execution_accelerators
    if wanted and not accelerators.gpu_execution_accelerator:
        accelerators.gpu_execution_accelerator.extend(wanted)


def serve_as(model: mc.ModelConfig, backend: str, template: mc.ModelConfig) -> mc.ModelConfig:
    """Set (in place) the backend an ONNX model is served with: ``onnxruntime`` (Triton's
    backend), ``python`` (the sweeper's python-backend model) or ``original`` (the template's own
    backend, platform and model file name). Returns ``model``."""
    if backend == "onnxruntime":
        model.backend, model.platform = "onnxruntime", "onnxruntime_onnx"
        model.default_model_filename = "model.onnx"
    elif backend == "python":
        model.backend = "python"
        model.ClearField("platform")
        model.ClearField("default_model_filename")
    else:
        model.backend, model.platform = template.backend, template.platform
        model.default_model_filename = template.default_model_filename
    return model


def to_pbtxt(model: mc.ModelConfig) -> str:
    """config.pbtxt text."""
    return text_format.MessageToString(model)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; a syntax error becomes ValueError with Triton's field names."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model config: {exc}") from None


def knobs_from_config(model: mc.ModelConfig) -> dict[str, Any]:
    """The three server-side knobs of a config: ``dynamic_batching { }`` is delay 0, no block is
    ``off``; the instance count is the ``count`` of its instance groups (Triton's default 1)."""
    delay = model.dynamic_batching.max_queue_delay_microseconds if model.HasField("dynamic_batching") else BATCHING_OFF
    counts = {group.count or 1 for group in model.instance_group} or {1}
    if len(counts) > 1:
        raise ValueError(f"its instance groups have different counts {sorted(counts)}; instance_count sets them all")
    return {"max_batch_size": model.max_batch_size, "max_queue_delay_us": delay, "instance_count": counts.pop()}
