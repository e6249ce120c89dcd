"""The model a sweep starts from, checked before anything is written or started.

Three kinds of source: an ONNX file (parsed and run through ``onnx.checker``), a PyTorch
factory (imported, called and exported to ONNX here, into a temporary folder), or a Triton
model folder (config.pbtxt and version folders, any backend). Each becomes a plain
``ModelSource``; problems raise ``SourceError`` with what is wrong.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.tensors import TensorSpec, batch_axis_fix, config_io, fixed_batch_axis, onnx_io
from sweeper.triton_config import for_cpu, model_backend, parse_pbtxt, template_from_io, to_pbtxt

ONNX_PLATFORM = "onnxruntime_onnx"


class SourceError(ValueError):
    """The model source cannot be used; the message says why."""


class InputsError(SourceError):
    """The model ran but not on the inputs the spec describes (a datatype, a shape, a value
    outside what it accepts): ``model.inputs`` or ``model.example_inputs`` is to change."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What the later stages need to know of the model, whatever its kind."""

    kind: str
    """``onnx``, ``pytorch`` or ``repository``."""
    name: str
    template: mc.ModelConfig
    """The config every trial starts from (never modified: trials copy it)."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_file: Path | None
    """The reference ONNX model (the user's file, the export, or the folder's ONNX model);
    None for a folder of another format."""
    folder: Path | None = None
    version: str | None = None
    """The version folder Triton serves (the highest, as its default policy picks)."""
    fixed_batch: int | None = None
    """The leading dimension an ONNX graph fixes (exported without a dynamic batch axis): its
    requests carry the model's whole shape and Triton cannot batch them (max_batch_size 0)."""
    host_changes: tuple[str, ...] = ()
    """What was changed so that this host serves a config written for a GPU
    (``sweeper.triton_config.for_cpu``); ``user_template`` keeps the config as written."""
    user_template: mc.ModelConfig | None = None

    @property
    def batched(self) -> bool:
        """Whether requests carry a batch axis (``max_batch_size`` > 0)."""
        if self.kind == "repository":
            return self.template.max_batch_size > 0
        return self.fixed_batch is None

    @property
    def reference_precision(self) -> str:
        """The precision name of the model as given: ``native`` for a folder, else ``fp32``."""
        return "native" if self.kind == "repository" else "fp32"

    @property
    def convertible(self) -> bool:
        """Whether FP16/INT8 versions can be made (ONNX Runtime's converters need ONNX)."""
        return self.onnx_file is not None

    @property
    def backend(self) -> str | None:
        """The backend a folder's config names; None for an ONNX file (the server decides)."""
        return model_backend(self.template) if self.kind == "repository" else None

    def facts(self) -> dict:
        """JSON-ready form, stored on the study for report and export."""
        return {
            "kind": self.kind,
            "name": self.name,
            "template": to_pbtxt(self.template),
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "onnx_file": str(self.onnx_file) if self.onnx_file else None,
            "folder": str(self.folder) if self.folder else None,
            "version": self.version,
            "fixed_batch": self.fixed_batch,
            "host_changes": list(self.host_changes),
            "user_template": to_pbtxt(self.user_template) if self.user_template is not None else None,
        }

    @classmethod
    def from_facts(cls, facts: dict) -> ModelSource:
        """The source as ``facts`` recorded it."""
        return cls(
            facts["kind"],
            facts["name"],
            parse_pbtxt(facts["template"]),
            tuple(TensorSpec.from_dict(t) for t in facts["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in facts["outputs"]),
            Path(facts["onnx_file"]) if facts["onnx_file"] else None,
            Path(facts["folder"]) if facts["folder"] else None,
            facts["version"],
            facts.get("fixed_batch"),  # studies before it was recorded had only batched ONNX sources
            tuple(facts.get("host_changes", ())),
            parse_pbtxt(facts["user_template"]) if facts.get("user_template") else None,
        )

    def for_cpu(self) -> ModelSource:
        """The source as a host without a GPU serves it (``host_changes`` says what changed)."""
        template, changes = for_cpu(self.template)
        if not changes:
            return self
        return dataclasses.replace(self, template=template, host_changes=changes, user_template=self.template)


def check_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file (external data beside it is checked too)."""
    try:
        onnx.checker.check_model(str(path), full_check=False)
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf, checker and OS errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"not a valid ONNX model: {first[:300]}") from None


def from_onnx(path: Path, name: str) -> ModelSource:
    """An ONNX file whose first axis is the batch axis, or, where the graph fixes it (an export
    without a dynamic batch axis), a model Triton serves without batching."""
    model = check_onnx(path)
    fixed = fixed_batch_axis(model)
    try:
        inputs, outputs = onnx_io(model, batched=fixed is None)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    if not inputs or not outputs:
        raise SourceError("the graph has no inputs or no outputs")
    template = template_from_io(name, inputs, outputs)
    return ModelSource(
        "onnx", name, template, tuple(inputs), tuple(outputs), path, fixed_batch=None if fixed is None else fixed[1]
    )


_EXPORTS: list[Path] = []


@atexit.register
def _remove_exports() -> None:
    for folder in _EXPORTS:
        shutil.rmtree(folder, ignore_errors=True)


def from_pytorch(
    reference: str,
    name: str,
    inputs: list[TensorSpec],
    import_root: Path,
    example: dict,
    output_names: list[str] | None = None,
) -> ModelSource:
    """Import ``module:factory``, call it and export its module to ONNX (dynamic batch axis),
    its outputs named ``output_names`` (default ``output``, or ``output0``, ``output1``, ...)."""
    import torch  # only a pytorch source needs torch

    network = network_of(reference, import_root)
    folder = Path(tempfile.mkdtemp(prefix="sweeper-export-"))
    _EXPORTS.append(folder)
    path = folder / "model.onnx"
    args = tuple(torch.from_numpy(example[t.name]) for t in inputs)
    produced = _run_on_examples(network, args, reference, inputs)
    count = len(produced) if isinstance(produced, (tuple, list)) else 1
    if output_names is None:
        output_names = [f"output{i}" for i in range(count)] if count > 1 else ["output"]
    elif len(output_names) != count:
        raise InputsError(
            f"{reference}() returns {count} output(s); the spec names {len(output_names)}", "model.outputs"
        )
    names = [t.name for t in inputs] + output_names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                network,
                args,
                str(path),
                input_names=[t.name for t in inputs],
                output_names=output_names,
                dynamic_axes={name: {0: "batch"} for name in names},
                dynamo=False,
            )
    except SystemExit as exc:
        raise SourceError(f"exporting {reference}() to ONNX called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise SourceError(f"exporting {reference}() to ONNX failed: {type(exc).__name__}: {exc}"[:400]) from None
    source = from_onnx(path, name)
    return dataclasses.replace(source, kind="pytorch", inputs=tuple(inputs))


def network_of(reference: str, import_root: Path) -> Any:
    """The torch.nn.Module that ``module:factory`` makes."""
    import torch

    module_name, _, attribute = reference.partition(":")
    if str(import_root) not in sys.path:
        sys.path.insert(0, str(import_root))
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise SourceError(f"importing module '{module_name}' called sys.exit({exc.code!r})") from None
    except Exception as exc:  # any import-time error of user code is a spec problem
        raise SourceError(
            f"cannot import module '{module_name}' (from {import_root.resolve()} or the installed packages): "
            f"{type(exc).__name__}: {exc}"[:500]
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise SourceError(f"'{module_name}' has no callable '{attribute}'")
    try:
        network = factory()
    except SystemExit as exc:
        raise SourceError(f"{reference}() called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise SourceError(f"{reference}() raised {type(exc).__name__}: {exc}"[:400]) from None
    if not isinstance(network, torch.nn.Module):
        raise SourceError(f"{reference}() returned {type(network).__name__}, not a torch.nn.Module")
    return network


def _run_on_examples(network: Any, args: tuple, reference: str, inputs: list[TensorSpec]) -> Any:
    """The network's outputs on the example inputs; InputsError naming the spec's key when the
    inputs are not what it takes."""
    import torch

    described = ", ".join(f"model.inputs.{i} {t.name} {t.datatype} {list(t.shape)}" for i, t in enumerate(inputs))
    try:
        network.eval()
        with torch.no_grad():
            return network(*args)
    except SystemExit as exc:
        raise SourceError(f"running {reference}() on the example inputs called sys.exit({exc.code!r})") from None
    except IndexError as exc:  # an embedding's lookup of an id beyond its size
        raise InputsError(
            f"{reference}() on the generated inputs ({described}) raised IndexError: {exc}: a value is out of "
            "range for the model (token ids above an embedding's size?): give that input its own range in "
            "model.example_inputs.ranges ({name: {low: 0, high: N}})"[:600],
            "model.example_inputs",
        ) from None
    except Exception as exc:
        raise InputsError(
            f"{reference}() does not run on the inputs described ({described}): {type(exc).__name__}: {exc}"[:600],
            "model.inputs",
        ) from None


def _version_folder(folder: Path, model: mc.ModelConfig) -> str:
    versions = sorted((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    if not versions:
        raise SourceError("has no version folder (1/, 2/, ...)")
    policy = model.version_policy
    if policy.HasField("specific"):
        wanted = sorted(policy.specific.versions, reverse=True)
        missing = [v for v in wanted if v not in versions]
        if missing or not wanted:
            raise SourceError(f"version_policy names version(s) {missing or wanted} that have no folder")
        return str(wanted[0])
    return str(versions[0])


def from_repository(folder: Path, name: str | None) -> ModelSource:
    """A Triton model folder: its config.pbtxt is the template, its tensors the model's."""
    config_path = folder / "config.pbtxt"
    if not config_path.is_file():
        raise SourceError(f"{folder} has no config.pbtxt (a Triton model folder: config.pbtxt and 1/, 2/, ...)")
    try:
        model = parse_pbtxt(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{config_path}: {exc}") from None
    if model.platform == "ensemble" or model.HasField("ensemble_scheduling"):
        raise SourceError("ensembles are not supported: sweep each composing model on its own")
    if model.HasField("sequence_batching"):
        raise SourceError("sequence models (sequence_batching) are not supported: their requests carry state")
    if model.model_transaction_policy.decoupled:
        raise SourceError("decoupled models are not supported: one request may have any number of responses")
    if model.max_batch_size < 0:
        raise SourceError(f"max_batch_size is {model.max_batch_size}; it must be 0 (no batching) or more")
    if not model_backend(model):
        raise SourceError(f"{config_path} names neither a backend nor a platform")
    if model.name and model.name != folder.name:
        raise SourceError(
            f"{config_path} names the model '{model.name}' but its folder is '{folder.name}'; Triton needs them equal"
        )
    name = name or folder.name
    model.name = name
    version = _version_folder(folder, model)
    inputs, outputs = config_io(model)
    if not inputs or not outputs:
        raise SourceError(f"{config_path} declares no inputs or no outputs; the sweep needs both to send requests")
    onnx_file = None
    if model_backend(model) == "onnxruntime":
        onnx_file = folder / version / (model.default_model_filename or "model.onnx")
        if not onnx_file.is_file():
            raise SourceError(f"the onnxruntime model has no file {onnx_file}")
        _refuse_batching_over_a_fixed_axis(model, check_onnx(onnx_file))
    return ModelSource("repository", name, model, tuple(inputs), tuple(outputs), onnx_file, folder, version)


def _refuse_batching_over_a_fixed_axis(config: mc.ModelConfig, model: onnx.ModelProto) -> None:
    """A config that batches (max_batch_size > 0) over a graph whose leading axis is fixed: every
    batch of more than one request would fail, so it is said before anything starts."""
    fixed = fixed_batch_axis(model)
    if config.max_batch_size > 0 and fixed is not None:
        name, size = fixed
        raise SourceError(
            f"config.pbtxt has max_batch_size {config.max_batch_size} but the ONNX model's input '{name}' has a fixed "
            f"first axis of {size}: Triton cannot send it batches. Set max_batch_size: 0 with dims the model's whole "
            f"shape, or {batch_axis_fix([t.name for t in config.input])}"
        )
