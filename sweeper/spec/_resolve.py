"""A spec resolved: the model loaded (a PyTorch factory called and exported), its samples, the
search space with every knob's choices, and the baseline. ``load_spec`` turns every problem
into one ``SpecError`` naming the file, the key path and what is allowed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.artifacts import PRECISIONS, REFERENCE_PRECISIONS, score_outputs
from sweeper.data import DataError, Samples, generate_samples, read_samples
from sweeper.errors import SpecError
from sweeper.samplers import SAMPLERS, missing_requirement
from sweeper.server_options import check_option_value, option_name
from sweeper.source import InputsError, ModelSource, SourceError, from_onnx, from_pytorch, from_repository
from sweeper.spec._messages import describe
from sweeper.spec._schema import ExampleInputsSpec, Spec
from sweeper.spec._yaml import read_yaml
from sweeper.tensors import TensorSpec, batch_axis_fix
from sweeper.triton_config import config_field, knobs_from_config, parse_pbtxt
from sweeper.vocabulary import (
    BATCHING_OFF,
    CONFIG_FIELD,
    KNOBS,
    MODEL_DEFAULT,
    SERVER_OPTION,
    Ranking,
    TrialConfig,
    distinct_configurations,
)


@dataclasses.dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and what was resolved from it: the model, its samples, the search
    space (every knob's choices) and the baseline."""

    spec: Spec
    path: Path
    model: ModelSource
    samples: Samples
    space: dict[str, list]
    baseline: TrialConfig | None
    added_to_space: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Baseline values the spec's space left out, added so the baseline is measured."""

    @property
    def name(self) -> str:
        """The study's name."""
        return self.spec.study.name

    @property
    def ranking(self) -> Ranking:
        """The spec's objectives and constraints."""
        return self.spec.ranking

    @property
    def score_outputs(self) -> tuple[str, ...]:
        """The outputs top-1 agreement is measured on (``accuracy.top1_outputs``, or each
        float output whose last axis is scores)."""
        named = self.spec.accuracy.top1_outputs
        return tuple(named) if named is not None else score_outputs(self.model.outputs)

    @property
    def space_size(self) -> int:
        """How many configurations of the search space serve differently (with max_batch_size 1
        every queue delay serves alike: ``sweeper.vocabulary.serving_key``)."""
        return distinct_configurations(self.space)


def load_spec(path: Path, *, study_name: str | None = None, trials: int | None = None) -> LoadedSpec:
    """Read, validate and resolve a spec file; raise ``SpecError`` on any problem."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping with keys {', '.join(Spec.model_fields)}")
    if study_name is not None:
        if not isinstance(raw.get("study"), dict):
            raw["study"] = {}
        raw["study"]["name"] = study_name
    if trials is not None:
        if trials < 1:
            raise SpecError(f"--trials must be at least 1, got {trials}")
        if isinstance(raw.get("study"), dict):
            raw["study"]["trials"] = trials
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(describe(path, exc)) from None
    spec = _resolve_paths(spec, path.parent.resolve())
    # What the spec alone decides is checked before the model is loaded (a PyTorch export takes seconds).
    _check_paths(spec, path)
    _check_precision_names(spec, path)
    _check_request_size(spec, spec.search_space.max_batch_size, path)
    fields = _swept_fields(spec, path)
    model = _model_source(spec, path)
    _check_top1(spec, model, path)
    samples = _samples(spec, model, path)
    config = _baseline_config(spec, model, path)
    known = _model_knobs(spec, model, config, path)
    space = _space(spec, model, known, path)
    _check_request_size(spec, space["max_batch_size"] if model.batched else [0], path)
    _check_batching_fields(fields, space, path)
    _check_config_reach(fields, space, config, path)
    space.update(fields)
    baseline = _baseline(spec, model, known, config, fields, path)
    added = _with_baseline(space, baseline)
    return LoadedSpec(spec, path.resolve(), model, samples, space, baseline, added)


def _check_top1(spec: Spec, model: ModelSource, path: Path) -> None:
    """``accuracy.top1_outputs`` names outputs of the model; ``min_top1_agreement`` needs one."""
    accuracy, names = spec.accuracy, [t.name for t in model.outputs]
    unknown = [name for name in accuracy.top1_outputs or () if name not in names]
    if unknown:
        raise SpecError(
            f"{path}: accuracy.top1_outputs: {unknown[0]!r} is not an output of the model (its outputs: "
            f"{', '.join(names)})"
        )
    if accuracy.min_top1_agreement is not None and not (accuracy.top1_outputs or score_outputs(model.outputs)):
        raise SpecError(
            f"{path}: accuracy.min_top1_agreement: no output of the model is scores over classes (a float output "
            f"whose last axis has more than one entry; its outputs: {', '.join(names)})",
            hint="name the score outputs in accuracy.top1_outputs, or leave min_top1_agreement out",
        )


def _check_request_size(spec: Spec, sizes: list[int] | None, path: Path) -> None:
    size = spec.model.example_inputs.batch_size
    if size > 1 and sizes and size > min(sizes):
        raise SpecError(
            f"{path}: model.example_inputs.batch_size: {size} samples a request exceed max_batch_size "
            f"{min(sizes)}, which the search space includes"
        )


def _swept_fields(spec: Spec, path: Path) -> dict[str, list]:
    """``search_space.config`` and ``search_space.server`` as parameters (name -> stored values),
    each path checked against ModelConfig's descriptor and each option against Triton's."""
    space: dict[str, list] = {}
    for key, values in spec.search_space.config.items():
        try:
            field = config_field(key)
            space[CONFIG_FIELD + key] = [field.encode(value) for value in values]
        except ValueError as exc:
            raise SpecError(f"{path}: search_space.config.{key}: {exc}") from None
    for key, values in spec.search_space.server.items():
        try:
            name = option_name(key)
            for value in values:
                check_option_value(name, value)
        except ValueError as exc:
            raise SpecError(f"{path}: search_space.server.{key}: {exc}") from None
        if SERVER_OPTION + name in space:
            raise SpecError(f"{path}: search_space.server.{key}: --{name} is listed twice")
        space[SERVER_OPTION + name] = list(values)
    return space


def _check_batching_fields(fields: dict[str, list], space: dict[str, list], path: Path) -> None:
    """A swept dynamic_batching field needs a delay that turns batching on."""
    batching = [name for name in fields if name.startswith(CONFIG_FIELD + "dynamic_batching.")]
    if batching and all(delay == BATCHING_OFF for delay in space["max_queue_delay_us"]):
        raise SpecError(
            f"{path}: search_space.{batching[0]}: applies only with dynamic batching on, and every "
            f"max_queue_delay_us of the space is off",
            hint="add a delay (0 turns batching on without waiting) to search_space.max_queue_delay_us",
        )


def _check_config_reach(
    fields: dict[str, list], space: dict[str, list], config: mc.ModelConfig | None, path: Path
) -> None:
    """A swept field reaches only what the baseline serves: its own instance groups (one where
    it has none), preferred batch sizes some max_batch_size of the space allows."""
    groups = max(1, len(config.instance_group) if config is not None else 0)
    largest = max(space.get("max_batch_size") or [0])
    for name, values in fields.items():
        key = name.removeprefix(CONFIG_FIELD)
        if not name.startswith(CONFIG_FIELD):
            continue
        index = re.match(r"instance_group\[(\d+)\]", key)
        if index and int(index.group(1)) >= groups:
            raise SpecError(
                f"{path}: search_space.config.{key}: the baseline has {groups} instance group(s), "
                f"instance_group[0]{'' if groups == 1 else f' to [{groups - 1}]'}",
                hint="a sweep tunes the groups the model is served with; add groups in its own config.pbtxt",
            )
        for value in values:
            sizes = config_field(key).decode(value) if key == "dynamic_batching.preferred_batch_size" else []
            if any(size > largest for size in sizes):
                raise SpecError(
                    f"{path}: search_space.config.{key}: {sizes} exceeds every max_batch_size of the space "
                    f"(at most {largest})"
                )


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p).resolve()

    source = spec.model.source
    source = source.model_copy(update={"onnx": absolute(source.onnx), "repository": absolute(source.repository)})
    model = spec.model.model_copy(update={"source": source, "input_data": absolute(spec.model.input_data)})
    server = spec.server.model_copy(
        update={
            "tritonserver": absolute(spec.server.tritonserver),
            "backend_directory": absolute(spec.server.backend_directory),
        }
    )
    update: dict[str, Any] = {"model": model, "server": server}
    if spec.baseline is not None:
        update["baseline"] = spec.baseline.model_copy(update={"config_pbtxt": absolute(spec.baseline.config_pbtxt)})
    return spec.model_copy(update=update)


def _check_paths(spec: Spec, path: Path) -> None:
    source = spec.model.source
    for key, value, kind in (
        ("model.source.onnx", source.onnx, "file"),
        ("model.source.repository", source.repository, "folder"),
        ("model.input_data", spec.model.input_data, "file"),
        ("baseline.config_pbtxt", spec.baseline.config_pbtxt if spec.baseline else None, "file"),
        ("server.tritonserver", spec.server.tritonserver, "file"),
        ("server.backend_directory", spec.server.backend_directory, "folder"),
    ):
        if value is None:
            continue
        present = value.is_file() if kind == "file" else value.is_dir()
        if not present:
            raise SpecError(f"{path}: {key}: no such {kind}: {value}")
    missing = missing_requirement(spec.study.sampler)
    if missing is not None:
        raise SpecError(
            f"{path}: study.sampler: '{spec.study.sampler}' needs {missing}, which is not installed",
            hint="pip install scipy torch, or choose another sampler: " + ", ".join(SAMPLERS),
        )


def _given_inputs(spec: Spec) -> list[TensorSpec] | None:
    given = spec.model.inputs
    return None if given is None else [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in given]


def _model_source(spec: Spec, path: Path) -> ModelSource:
    source, given = spec.model.source, _given_inputs(spec)
    key = "model.source." + next(k for k in ("onnx", "pytorch", "repository") if getattr(source, k) is not None)
    try:
        if source.pytorch is not None:
            data = spec.model.example_inputs
            _check_ranges(given, data.ranges, path)
            example = generate_samples(
                given, 1, low=data.low, high=data.high, seed=data.seed, ranges=data.input_ranges
            ).batch(0, 1, batched=True)
            model = from_pytorch(
                source.pytorch, spec.model.name, given, path.parent.resolve(), example, spec.model.outputs
            )
        elif source.onnx is not None:
            model = from_onnx(source.onnx, spec.model.name)
        else:
            model = from_repository(source.repository, spec.model.name)
    except InputsError as exc:
        raise SpecError(f"{path}: {exc.key}: {exc}") from None
    except (SourceError, DataError) as exc:
        raise SpecError(f"{path}: {key}: {exc}") from None
    if given is None or source.pytorch is not None:
        return model
    declared = {t.name: t for t in model.inputs}
    inputs = []
    for tensor in given:
        known = declared.get(tensor.name)
        if known is None:
            raise SpecError(
                f"{path}: model.inputs: the model has no input '{tensor.name}' (its inputs: {', '.join(declared)})"
            )
        if (
            known.datatype != tensor.datatype
            or len(known.shape) != len(tensor.shape)
            or any(d != -1 and d != s for s, d in zip(tensor.shape, known.shape))
        ):
            raise SpecError(
                f"{path}: model.inputs: '{tensor.name}' is {tensor.datatype} {list(tensor.shape)} but the model "
                f"declares {known.datatype} {list(known.shape)} (-1 = any size)"
            )
        inputs.append(tensor)
    missing = [name for name in declared if name not in {t.name for t in given}]
    if missing:
        raise SpecError(f"{path}: model.inputs: give every input of the model; missing {missing}")
    return dataclasses.replace(model, inputs=tuple(inputs))


def _check_ranges(inputs: list[TensorSpec], ranges: dict[str, Any], path: Path) -> None:
    unknown = sorted(set(ranges) - {t.name for t in inputs})
    if unknown:
        raise SpecError(
            f"{path}: model.example_inputs.ranges: the model has no input {', '.join(map(repr, unknown))} "
            f"(its inputs: {', '.join(t.name for t in inputs)})"
        )


def request_samples(inputs: list[TensorSpec], input_data: Path | None, examples: ExampleInputsSpec) -> Samples:
    """The requests a sweep sends: its ``model.input_data`` file, or ``model.example_inputs``
    generated (the same every time: seeded); DataError when the data does not fit ``inputs``."""
    if input_data is not None:
        return read_samples(input_data, inputs)
    return generate_samples(
        inputs, examples.samples, low=examples.low, high=examples.high, seed=examples.seed, ranges=examples.input_ranges
    )


def _samples(spec: Spec, model: ModelSource, path: Path) -> Samples:
    inputs = list(model.inputs)
    try:
        if spec.model.input_data is None:
            _check_ranges(inputs, spec.model.example_inputs.ranges, path)
        return request_samples(inputs, spec.model.input_data, spec.model.example_inputs)
    except DataError as exc:
        key = "model.input_data" if spec.model.input_data is not None else "model.inputs"
        raise SpecError(f"{path}: {key}: {exc}") from None


def _baseline_config(spec: Spec, model: ModelSource, path: Path) -> mc.ModelConfig | None:
    """The config the baseline runs: ``baseline.config_pbtxt``, or a model folder's own."""
    base = spec.baseline
    if base is not None and base.config_pbtxt is not None:
        try:
            return parse_pbtxt(base.config_pbtxt.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SpecError(f"{path}: baseline.config_pbtxt: {str(exc)[:300]}") from None
    return model.template if model.kind == "repository" else None


def _model_knobs(spec: Spec, model: ModelSource, config: mc.ModelConfig | None, path: Path) -> dict[str, Any]:
    """The baseline's knobs as far as its config (``_baseline_config``) or the spec give them."""
    knobs: dict[str, Any] = {}
    base = spec.baseline
    if config is not None:
        try:
            knobs.update(knobs_from_config(config))
        except ValueError as exc:
            raise SpecError(
                f"{path}: {'baseline.config_pbtxt' if base and base.config_pbtxt else 'model.source.repository'}: {exc}"
            ) from None
    if base is not None:
        knobs.update({k: getattr(base, k) for k in KNOBS if getattr(base, k) is not None})
    # Protocol and precision are no part of a config.pbtxt: by default the space's first protocol
    # (http when it names none) and the model as given.
    given = spec.search_space
    knobs.setdefault("protocol", given.protocol[0] if given.protocol else "http")
    reference = model.reference_precision
    knobs.setdefault(
        "precision", reference if not given.precision or reference in given.precision else given.precision[0]
    )
    if not model.batched:  # requests without a batch axis: nothing to batch, whatever the config says
        knobs.update(max_batch_size=0, max_queue_delay_us=BATCHING_OFF)
    return knobs


def _space(spec: Spec, model: ModelSource, known: dict[str, Any], path: Path) -> dict[str, list]:
    given = spec.search_space
    if not model.batched:
        fixed = [k for k in ("max_batch_size", "max_queue_delay_us") if getattr(given, k) is not None]
        if fixed:
            why = (
                "the model has max_batch_size 0 (no batching)"
                if model.fixed_batch is None
                else f"the ONNX model's first axis is fixed at {model.fixed_batch} (exported with no batch axis)"
            )
            raise SpecError(
                f"{path}: search_space.{fixed[0]}: {why}: its requests have no batch axis, so max_batch_size and "
                "max_queue_delay_us cannot be swept",
                hint="sweep instance_count and protocol (and precision for an ONNX model)"
                + (
                    ""
                    if model.fixed_batch is None
                    else f"; to let Triton batch, {batch_axis_fix([t.name for t in model.inputs])}"
                ),
            )
    space: dict[str, list] = {}
    for knob in KNOBS:
        choices = getattr(given, knob)
        if choices is None:
            if knob not in known:
                raise SpecError(
                    f"{path}: search_space.{knob}: required for a {model.kind} source (the model has no config to keep "
                    "it from); or give it in baseline"
                )
            choices = [known[knob]]
        space[knob] = list(choices)
    _check_precisions(space["precision"], model.kind, model.convertible, path)
    return space


def _check_precision_names(spec: Spec, path: Path) -> None:
    """The precisions a source of this kind can have at all (a folder's conversions wait until
    it is known whether it holds ONNX)."""
    source = spec.model.source
    kind = "repository" if source.repository is not None else "onnx"
    _check_precisions(spec.search_space.precision or [], kind, kind != "repository", path, early=True)
    if spec.baseline is not None and spec.baseline.precision is not None:
        _check_precisions([spec.baseline.precision], kind, kind != "repository", path, early=True, key="baseline")


def _check_precisions(
    precisions: list[str], kind: str, convertible: bool, path: Path, *, early: bool = False, key: str = "search_space"
) -> None:
    reference = "native" if kind == "repository" else "fp32"
    conversions = [p for p in PRECISIONS if p not in REFERENCE_PRECISIONS]
    allowed = [reference, *(conversions if convertible or early else [])]
    for precision in precisions:
        if precision not in allowed:
            raise SpecError(
                f"{path}: {key}.precision: '{precision}' is not available for this model; "
                f"allowed: {', '.join([reference, *conversions] if early else allowed)}",
                hint="a model folder is swept as it is ('native'); FP16/INT8 versions can be made of ONNX models only"
                if kind == "repository"
                else "'native' is for a repository source; an ONNX or PyTorch source's reference is 'fp32'",
            )


def _baseline(
    spec: Spec,
    model: ModelSource,
    knobs: dict[str, Any],
    config: mc.ModelConfig | None,
    fields: dict[str, list],
    path: Path,
) -> TrialConfig | None:
    """The baseline's knobs, and its value of each swept field (from its config; None where the
    config leaves it unset) and server option (None: Triton's default)."""
    if spec.baseline is None and model.kind != "repository":
        return None
    missing = [k for k in KNOBS if k not in knobs]
    if missing:
        raise SpecError(f"{path}: baseline: give {', '.join(missing)} (or config_pbtxt: PATH)")
    extra = []
    for name in fields:
        value = MODEL_DEFAULT
        if name.startswith(CONFIG_FIELD) and config is not None:
            value = config_field(name[len(CONFIG_FIELD) :]).read(config)
        extra.append((name, value))
    return TrialConfig(**{k: knobs[k] for k in KNOBS}, extra=tuple(extra))


def _with_baseline(space: dict[str, list], baseline: TrialConfig | None) -> dict[str, Any]:
    """The configuration a team runs today is always measured (trial 0): a baseline value the
    space leaves out (``off`` beside ``[0, 100]``) joins that knob's choices. Returns what joined."""
    added = {}
    if baseline is not None:
        for knob, value in baseline.as_dict().items():
            if value not in space[knob]:
                space[knob].append(value)
                added[knob] = value
    return added
