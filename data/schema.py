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
range: rows outside it are rejected by data validation, and so are scoring requests);
`special = [96, 98]` on a numeric feature (codes that mean "unknown" or "not applicable", not
magnitudes: they must lie outside `min`/`max`, which therefore has to be declared on the side
they are on); `monotone = "increasing" | "decreasing"` on a numeric feature (the direction risk
may move in as the value grows, for models that honour it); schema-level `time = "column"`
(the column that orders rows in time, a year or a date: required in every data file, never a
feature, the label or the id; `--split time` tests on each institution's latest rows);
schema-level `protected = ["sex", "age_band"]`, or `protected = true` on a feature's table
(`sex = { type = "categorical", protected = true }`): protected attributes, required in every
data file, read as group labels and used only to measure fairness across groups (never a model
feature: a column both listed as protected and kept as a feature is refused).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
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

    @field_validator("min", "max")
    @classmethod
    def _finite_bound(cls, value: float | None) -> float | None:
        # TOML has `nan` and `inf`: a nan bound compares false with everything (no row would
        # ever be outside it) and an infinite one is no bound; leave the key out instead.
        if value is not None and not math.isfinite(value):
            raise ValueError(
                f"must be a finite number, not {value!r}; leave the key out for no bound"
            )
        return value

    @model_validator(mode="after")
    def _numeric_options(self) -> FeatureSpec:
        if self.type == "categorical":
            given = [
                key
                for key, value, default in (
                    ("transform", self.transform, "none"),
                    ("min", self.min, None),
                    ("max", self.max, None),
                    ("special", self.special, ()),
                    ("monotone", self.monotone, "none"),
                )
                if value != default
            ]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(f"{', '.join(given)} {verb} to numeric features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        for code in self.special:
            if not math.isfinite(code):
                raise ValueError(f"special value {code!r} must be a finite number")
            # A code inside the valid range could not be told from a real value of the same
            # size: it would be read as "unknown" where the borrower really has that value.
            if (self.min is None or code >= self.min) and (self.max is None or code <= self.max):
                raise ValueError(
                    f"special value {code:g} lies inside the valid range "
                    f"[{_bound(self.min, '-inf')}, {_bound(self.max, 'inf')}]: special values "
                    "are codes, not magnitudes; declare min/max so that they fall outside it"
                )
        if len(set(self.special)) != len(self.special):
            raise ValueError("special lists a value twice")
        return self

    def is_special(self, values: np.ndarray) -> np.ndarray:
        """Which of `values` (float64) are one of this feature's special codes."""
        out: np.ndarray = np.isin(values, np.asarray(self.special, dtype="float64"))
        return out


def _bound(value: float | None, absent: str) -> str:
    return absent if value is None else f"{value:g}"


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
    time: str | None = None
    protected: tuple[str, ...] = ()
    features: dict[str, FeatureSpec]

    @model_validator(mode="before")
    @classmethod
    def _protected_features(cls, value: object) -> object:
        # `name = { ..., protected = true }` declares a protected attribute where its column is
        # described; it is moved out of the features, since it must never be one.
        if not isinstance(value, dict) or not isinstance(value.get("features"), dict):
            return value
        features, marked = {}, []
        for name, spec in value["features"].items():
            if isinstance(spec, dict) and "protected" in spec:
                flag = spec["protected"]
                if not isinstance(flag, bool):
                    raise ValueError(f"features.{name}.protected must be true or false")
                spec = {k: v for k, v in spec.items() if k != "protected"}
                if flag:
                    marked.append(name)
                    continue
            features[name] = spec
        if not marked:
            return {**value, "features": features}
        listed = value.get("protected", [])
        if not isinstance(listed, list | tuple):
            return value  # the field's own validation names the problem
        return {**value, "features": features, "protected": [*listed, *marked]}

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
        if self.time is not None and (
            not self.time or self.time in self.features or self.time in (self.label, self.id)
        ):
            # A time column used as a feature is hindsight (the model learns which periods
            # went bad, which nobody knew when deciding) and live applicants would all carry a
            # period the model never saw.
            raise ValueError(f"time column {self.time!r} cannot be a feature, the label or the id")
        for name in self.protected:
            # A protected attribute is measured, never used: as a feature the model could
            # score applicants by it (disparate treatment).
            if name in self.features:
                raise ValueError(
                    f"protected attribute {name!r} cannot also be a model feature: remove it "
                    "from [features] (or mark it `protected = true` there)"
                )
            if not name or name in (self.label, self.id, self.time):
                raise ValueError(
                    f"protected attribute {name!r} cannot be the label, the id or the time column"
                )
        if len(set(self.protected)) != len(self.protected):
            raise ValueError("protected lists an attribute twice")
        return self

    @property
    def columns(self) -> list[str]:
        """The label and feature columns every data file must have (the id is optional in files;
        the time column, when the schema names one, is required and checked on its own)."""
        return [self.label, *self.features]

    def to_toml(self) -> str:
        """Serialise back to the hand-written TOML form."""

        def q(v: int | str) -> str:
            return str(v) if isinstance(v, int) else f'"{v}"'

        lines = [f'label = "{self.label}"', f"positive = {q(self.positive)}"]
        if self.id is not None:
            lines.append(f'id = "{self.id}"')
        if self.time is not None:
            lines.append(f'time = "{self.time}"')
        if self.protected:
            names = ", ".join(f'"{name}"' for name in self.protected)
            lines.append(f"protected = [{names}]")
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
            if spec.special:
                extra.append(f"special = [{', '.join(repr(float(v)) for v in spec.special)}]")
            if spec.monotone != "none":
                extra.append(f'monotone = "{spec.monotone}"')
            if extra:
                inner = ", ".join([f'type = "{spec.type}"', *extra])
                lines.append(f'"{name}" = {{ {inner} }}')
            else:
                lines.append(f'"{name}" = "{spec.type}"')
        return "\n".join(lines) + "\n"


def read_schema_toml(path: str | Path) -> dict[str, object]:
    """A schema file's TOML (horizontal or vertical); a missing, unreadable or malformed file
    is a `DataValidationError` naming it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataValidationError("schema file not found", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read schema file: {exc}", source=str(p)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataValidationError(f"not valid TOML: {exc}", source=str(p)) from exc


def load_schema(path: str | Path) -> Schema:
    """Read and validate a schema file; every problem becomes a `DataValidationError`."""
    return parse_schema(read_schema_toml(path), source=str(Path(path)))


def parse_schema(raw: dict[str, object], *, source: str = "<schema>") -> Schema:
    try:
        return Schema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '<top>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DataValidationError(f"invalid schema: {problems}", source=source) from exc
