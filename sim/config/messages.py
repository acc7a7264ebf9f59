"""A pydantic validation failure as one line a user can act on: the field as they wrote it
(no union tags or type labels), and what is allowed there."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from sim.config.policy import PLUGIN, PluginPolicyConfig
from sim.config.schema import (
    FileStage,
    InlineProfile,
    InlineStage,
    ProfileFile,
    Scenario,
    StagedProfile,
)

_UNION_FIELDS = frozenset({"profile", "workload", "policy"})


def _visible_loc(loc: tuple[Any, ...]) -> list[Any]:
    """The field path as the user wrote it: without the union tag pydantic inserts after
    profile/workload/policy (policy.dynamic), the labels of union members it tried
    (latency_ms.0.constrained-float, list[constrained-float]) and its [key] marker."""
    if len(loc) > 1 and loc[0] in _UNION_FIELDS:
        tags = {_tag_of(c) for c in _model_classes(Scenario.model_fields[loc[0]].annotation)}
        if loc[1] in tags | {"file_path"}:
            loc = (loc[0], *loc[2:])
    if loc[:2] == ("profile", "stages") and len(loc) > 3 and loc[3] in ("file", "inline"):
        loc = (*loc[:3], *loc[4:])  # the stage's own union tag
    return [p for p in loc if not (isinstance(p, str) and re.search(r"[\[\]()-]", p))]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose fields an error location points into (to list the allowed keys)."""
    model: Any = Scenario
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            i += 1
            continue
        if model is None or part not in model.model_fields:
            return None
        candidates = _model_classes(model.model_fields[part].annotation)
        if len(candidates) > 1 and i + 1 < len(parts):
            tagged = [c for c in candidates if _tag_of(c) == parts[i + 1]]
            if tagged:
                candidates = tagged
                i += 1
        model = candidates[0] if candidates else None
        i += 1
    return model


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in typing.get_args(annotation) for c in _model_classes(arg)]


def _tag_of(cls: type[BaseModel]) -> str | None:
    if cls is PluginPolicyConfig:
        return "plugin"
    field = cls.model_fields.get("kind")
    if field is not None:
        return typing.get_args(field.annotation)[0]
    return {
        ProfileFile: "file",
        InlineProfile: "inline",
        StagedProfile: "staged",
        FileStage: "file",
        InlineStage: "inline",
    }.get(cls)


def format_error(exc: ValidationError) -> tuple[str, str]:
    """(dotted field, message) for the first error, in words a user can act on."""
    errors = exc.errors()
    # a misspelt key often also leaves a required one missing: name the typo first
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in _visible_loc(loc))
    etype = err["type"]
    if len(loc) > 1 and loc[-1] == "[key]":  # a mapping key of the wrong type: name the key
        field = ".".join(str(p) for p in _visible_loc(loc[:-2]))
        return field, f"key {loc[-2]!r}: {err['msg']}"
    if etype == "extra_forbidden":
        model = _model_at(loc)
        allowed = ", ".join(model.model_fields) if model else "see docs/semantics.md"
        return field, f"unknown field; allowed here: {allowed}"
    if etype == "missing":
        return field, "required field is missing"
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        kinds = _model_classes(Scenario.model_fields[loc[0]].annotation) if loc else []
        expected = ctx.get("expected_tags") or ", ".join(repr(_tag_of(c)) for c in kinds)
        expected = expected.replace("'plugin'", f"or {PLUGIN} (a plug-in policy)")
        if etype == "union_tag_not_found":
            return f"{field}.kind", f"required field is missing; one of {expected}"
        return f"{field}.kind", f"unknown kind {ctx.get('tag')!r}; one of {expected}"
    message = err["msg"].removeprefix("Value error, ")
    if etype != "value_error" and not isinstance(err.get("input"), dict | list):
        message += f" (got {repr(err.get('input'))[:60]})"
    return field, message
