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
    """An error's location as the user wrote it: without the names pydantic gives the
    alternatives of a union (``str``, ``list[str]``, ``PerfAnalyzerImageSpec``)."""
    model: Any = Spec
    path: list[Any] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path.append(part)
            continue
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        if fields is not None and part in fields:
            path.append(part)
            model = _inner_model(fields[part].annotation) or fields[part].annotation
        elif (unknown_key and index == len(loc) - 1) or (fields is None and not any(c in part for c in "[-'")):
            path.append(part)  # the unknown key the user wrote, or a key of a mapping
    return tuple(path)


def describe(path: Path, exc: ValidationError) -> str:
    lines, seen = [], set()
    for error in exc.errors():
        # A union reports each alternative: name the key once.
        loc = _key_path(tuple(error["loc"]), error["type"] == "extra_forbidden")
        key = ".".join(str(p) for p in loc)
        if key in seen:
            continue
        seen.add(key)
        if error["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = list(owner.model_fields) if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else "."
            lines.append(f"{echo(key)[1:-1]}: unknown key{hint} Allowed here: {', '.join(allowed)}")
        elif error["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            given = error.get("input")
            shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {echo(given)})"
            # A check across keys (no location of its own) names its keys in its message.
            lines.append(f"{key}: {message[:300]}{shown}" if key else f"{message[:300]}{shown}")
    more = len(lines) - _MAX_PROBLEMS
    lines = lines[:_MAX_PROBLEMS] + ([f"... and {more} more problem(s)"] if more > 0 else [])
    return f"{path}: invalid spec:\n  " + "\n  ".join(lines)
