"""The dataset schema users write by hand (TOML), validated by pydantic.

Shape (kept exactly as documented in the README)::

    label = "defaulted"
    positive = 1
    id = "applicant_id"          # optional, never a feature
    [features]
    age = "numeric"
    income = { type = "numeric", missing = "impute" }
    sector = "categorical"

Additions over that shape (all optional): `transform = "log1p"` on a numeric feature
(signed log, for heavy-tailed money amounts); `min` / `max` on a numeric feature (the valid
range: rows outside it are rejected by data validation, and so are scoring requests).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jointcredit.data.errors import DataValidationError

FeatureType = Literal["numeric", "categorical"]
MissingPolicy = Literal["error", "impute"]
Transform = Literal["none", "log1p"]


class FeatureSpec(BaseModel):
    """One feature column: its type and how missing values are handled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FeatureType
    missing: MissingPolicy = "error"
    transform: Transform = "none"
    min: float | None = None
    max: float | None = None
    special: tuple[float, ...] = ()
    monotone: Literal["none", "increasing", "decreasing"] = "none"

    @model_validator(mode="after")
    def _numeric_options(self) -> FeatureSpec:
        if self.type == "categorical" and (
            self.transform != "none" or self.min is not None or self.max is not None
        ):
            raise ValueError("transform, min and max apply to numeric features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


def _expand_shorthand(value: object) -> object:
    # `age = "numeric"` is shorthand for `age = { type = "numeric" }`.
    if isinstance(value, str):
        return {"type": value}
    return value


class Schema(BaseModel):
    """Label, positive class, optional id column and ordered features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Annotated[str, Field(min_length=1)]
    positive: int | str
    id: str | None = None
    features: dict[str, FeatureSpec]

    @field_validator("features", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _expand_shorthand(v) for k, v in value.items()}
        return value

    @field_validator("positive", mode="before")
    @classmethod
    def _no_bool_or_float(cls, value: object) -> object:
        # TOML `true` or `1.0` as a class label is almost always a mistake; refuse it.
        if isinstance(value, bool | float):
            raise ValueError("positive must be an integer or a string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        if not self.features:
            raise ValueError("[features] must list at least one feature")
        if self.label in self.features:
            raise ValueError(f"label column {self.label!r} cannot also be a feature")
        if self.id is not None and (self.id in self.features or self.id == self.label):
            raise ValueError(f"id column {self.id!r} cannot be a feature or the label")
        return self

    @property
    def columns(self) -> list[str]:
        """Every column a data file must have (id excluded: it is optional in files)."""
        return [self.label, *self.features]

    def to_toml(self) -> str:
        """Serialise back to the hand-written TOML form."""

        def q(v: int | str) -> str:
            return str(v) if isinstance(v, int) else f'"{v}"'

        lines = [f'label = "{self.label}"', f"positive = {q(self.positive)}"]
        if self.id is not None:
            lines.append(f'id = "{self.id}"')
        lines.append("")
        lines.append("[features]")
        for name, spec in self.features.items():
            extra = []
            if spec.missing != "error":
                extra.append(f'missing = "{spec.missing}"')
            if spec.transform != "none":
                extra.append(f'transform = "{spec.transform}"')
            bounds = (("min", spec.min), ("max", spec.max))
            extra += [f"{k} = {v!r}" for k, v in bounds if v is not None]
            if extra:
                inner = ", ".join([f'type = "{spec.type}"', *extra])
                lines.append(f'"{name}" = {{ {inner} }}')
            else:
                lines.append(f'"{name}" = "{spec.type}"')
        return "\n".join(lines) + "\n"


def load_schema(path: str | Path) -> Schema:
    """Read and validate a schema file; every problem becomes a `DataValidationError`."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataValidationError("schema file not found", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read schema file: {exc}", source=str(p)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataValidationError(f"not valid TOML: {exc}", source=str(p)) from exc
    return parse_schema(raw, source=str(p))


def parse_schema(raw: dict[str, object], *, source: str = "<schema>") -> Schema:
    try:
        return Schema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '<top>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DataValidationError(f"invalid schema: {problems}", source=source) from exc
