"""Pydantic's validation errors as the user wrote the spec: one line per problem, with the key
path, what is allowed there (and the closest key for a typo), bounded in length and count."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sweeper.spec._schema import Spec
from sweeper.spec._yaml import echo

_MAX_PROBLEMS = 12


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for listing the allowed keys)."""
    model: Any = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        model = _inner_model(field.annotation)
        if model is None:
            return None
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _key_path(loc: tuple[Any, ...], unknown_key: bool) -> tuple[Any, ...]:
    """An error's location as the user wrote it: the keys of a mapping (an option
    ``--http-thread-count``, a field path ``instance_group[0].kind``) kept as written, without the
    names pydantic gives the alternatives of a union (``str``, ``list[str]``,
    ``PerfAnalyzerImageSpec``)."""
    model: Any = Spec
    path: list[Any] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path.append(part)
            continue
        if typing.get_origin(model) is dict:
            path.append(part)  # a key the user wrote; below it only values (and union names)
            model = typing.get_args(model)[1]
            continue
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        if fields is not None and part in fields:
            path.append(part)
            annotation = fields[part].annotation
            model = annotation if typing.get_origin(annotation) is dict else _inner_model(annotation) or annotation
        elif unknown_key and index == len(loc) - 1:
            path.append(part)  # the unknown key the user wrote
    return tuple(path)


def describe(path: Path, exc: ValidationError) -> str:
    first: dict[str, tuple[tuple[Any, ...], dict]] = {}
    wanted: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = _key_path(tuple(error["loc"]), error["type"] == "extra_forbidden")
        key = ".".join(str(p) for p in loc)
        # A union reports each alternative at one key: one line that names them all.
        alternative = error["msg"].removeprefix("Input should be ")
        if key not in first:
            first[key], wanted[key] = (loc, error), [alternative]
        elif alternative != error["msg"] and alternative not in wanted[key]:
            wanted[key].append(alternative)
    lines = [_line(key, loc, error, wanted[key]) for key, (loc, error) in first.items()]
    more = len(lines) - _MAX_PROBLEMS
    lines = lines[:_MAX_PROBLEMS] + ([f"... and {more} more problem(s)"] if more > 0 else [])
    return f"{path}: invalid spec:\n  " + "\n  ".join(lines)


def _line(key: str, loc: tuple[Any, ...], error: dict, wanted: list[str]) -> str:
    """One problem as the user wrote the spec; ``wanted``: what each alternative of a union takes."""
    if error["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        allowed = list(owner.model_fields) if owner else []
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else "."
        return f"{echo(key)[1:-1]}: unknown key{hint} Allowed here: {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = (
        "should be " + " or ".join(wanted) if len(wanted) > 1 else error["msg"].removeprefix("Value error, ")[:300]
    )
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {echo(given)})"
    # A check across keys (no location of its own) names its keys in its message.
    return f"{key}: {message}{shown}" if key else f"{message}{shown}"
