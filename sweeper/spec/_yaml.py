"""The spec file read strictly: YAML 1.2's booleans (only ``true``/``false``: ``off``, ``on``,
``yes`` and ``no`` are strings), no duplicated keys, bounded size and alias expansion, text only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SpecError

_MAX_SPEC_BYTES = 1 << 20
_MAX_YAML_NODES = 20_000
_MAX_ECHO = 80


def echo(value: Any) -> str:
    """A bounded repr of something the user wrote."""
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans and no duplicated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicated key {echo(key)}", key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes the document has once its aliases are expanded (an alias bomb has billions)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def read_yaml(path: Path) -> Any:
    """A spec file's YAML, read strictly (see the module docstring); SpecError on any problem."""
    try:
        if path.is_dir():
            raise SpecError(f"{path}: is a folder, not a spec file")
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    if len(data) > _MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {len(data)} bytes is too large for a spec (at most {_MAX_SPEC_BYTES})")
    if b"\x00" in data:
        raise SpecError(f"{path}: is a binary file, not a YAML spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: is not UTF-8 text (byte {exc.start})") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > _MAX_YAML_NODES:
            raise SpecError(
                f"{path}: the YAML expands to more than {_MAX_YAML_NODES} values (aliases?); a spec is far smaller"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}{line}: the YAML does not parse: {problem[:200]}") from None
    except RecursionError:
        raise SpecError(f"{path}: the YAML is nested too deep to be a spec (a spec is a few levels deep)") from None
    finally:
        loader.dispose()
