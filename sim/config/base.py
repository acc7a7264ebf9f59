"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every configuration section: unknown keys are errors, values never change, types are
    strict (`'8'` and `true` are not numbers, `8.0` is not an integer) and numbers are
    finite (`.inf` and `.nan` are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
