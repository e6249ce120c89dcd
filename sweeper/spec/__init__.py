"""Stage 1: the YAML spec, validated whole before anything is written or started.

In three parts: the schema (``_schema``: pydantic models, the contract docs/spec.md documents),
the strict YAML reader (``_yaml``) with its messages (``_messages``), and the resolution
(``_resolve``: the model loaded, the space and the baseline). ``load_spec`` is the entry.
"""

from sweeper.spec._resolve import LoadedSpec, load_spec, request_samples
from sweeper.spec._schema import (
    AccuracySpec,
    BaselineSpec,
    CapacitySearchSpec,
    ConstraintSpec,
    DockerSpec,
    ExampleInputsSpec,
    LoadSpec,
    ModelSpec,
    ObjectiveSpec,
    PerfAnalyzerImageSpec,
    SearchSpaceSpec,
    ServerSpec,
    Spec,
    StudySpec,
)
from sweeper.spec._yaml import read_yaml

__all__ = [
    "AccuracySpec",
    "BaselineSpec",
    "CapacitySearchSpec",
    "ConstraintSpec",
    "DockerSpec",
    "ExampleInputsSpec",
    "LoadSpec",
    "LoadedSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "PerfAnalyzerImageSpec",
    "SearchSpaceSpec",
    "ServerSpec",
    "Spec",
    "StudySpec",
    "load_spec",
    "read_yaml",
    "request_samples",
]
