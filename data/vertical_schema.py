"""The schema of a vertical federation: the TOML schema language plus one table per party.

Several parties hold different columns of the same applicants, joined by an identifier column
every party's file has (a hashed national id, a phone number); exactly one party, the label
party (a bank), holds the label::

    label = "defaulted"
    positive = 1
    id = "customer_id"            # required: the column the parties' rows are matched on
    [features]                    # every party's features, typed as in any schema
    term = "numeric"
    sector = "categorical"
    [parties.bank]
    label = true
    features = ["term"]
    [parties.platform]
    features = ["sector"]

Refused, naming the key: no `id`; fewer than two parties; no label party or two; a party with
no features; a feature claimed by two parties, by none, or a party's feature that `[features]`
does not type; a party id outside the institution id rule. `time = "column"` names a column
of the label party's file (never a feature; `--split time` tests on the latest aligned rows).

Protected attributes (fairness across borrower groups) are the label party's only, in its
table: `[parties.bank] protected = ["sex", "age_band"]`, columns of its file read as group
labels, never features, never sent to another party, never in the model (as in a horizontal
schema, `base.protected` lists them). Refused, naming the column: a schema-level `protected`
(whose party would it be?) or `protected = true` in `[features]`, `protected` in a feature
party's table, a protected column that is also a feature, the label, the id or the time
column, or listed twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import FeatureSpec, Schema, parse_schema, read_schema_toml
from jointcredit.trust.ids import RULE, is_institution_id


class PartySpec(BaseModel):
    """One party's table: whether it holds the label, and its features (in schema order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: bool = False
    features: tuple[str, ...]
    protected: tuple[str, ...] = ()  # the label party's only (checked in `_protected`)


@dataclass(frozen=True)
class VerticalSchema:
    """`base`: label, positive, id and every feature's type; `parties`: who holds what."""

    base: Schema
    parties: dict[str, PartySpec]

    @property
    def id(self) -> str:
        assert self.base.id is not None  # checked when parsed
        return str(self.base.id)

    @property
    def label_party(self) -> str:
        return next(name for name, spec in self.parties.items() if spec.label)

    @property
    def protected(self) -> tuple[str, ...]:
        """The label party's protected attributes (its table's `protected`)."""
        return self.base.protected

    def to_toml(self) -> str:
        """The hand-written TOML form (`load_vertical_schema` reads it back)."""
        # The protected attributes are written in the label party's table, not at the top.
        lines = [self.base.model_copy(update={"protected": ()}).to_toml()]
        for name, spec in self.parties.items():
            lines.append(f"[parties.{name}]")
            if spec.label:
                lines.append("label = true")
            lines.append(f"features = {json.dumps(list(spec.features))}")  # a TOML array too
            if spec.protected:
                lines.append(f"protected = {json.dumps(list(spec.protected))}")
            lines.append("")
        return "\n".join(lines)

    def party_features(self, party: str) -> dict[str, FeatureSpec]:
        """A party's own features and their types, in the order its table lists them."""
        return {name: self.base.features[name] for name in self.parties[party].features}


def load_vertical_schema(path: str | Path) -> VerticalSchema:
    """Read and check a vertical schema file; every problem is a `DataValidationError`."""
    return parse_vertical_schema(read_schema_toml(path), source=str(Path(path)))


def parse_vertical_schema(raw: dict[str, object], *, source: str = "<schema>") -> VerticalSchema:
    def refuse(problem: str) -> DataValidationError:
        return DataValidationError(f"invalid vertical schema: {problem}", source=source)

    tables = raw.get("parties")
    if not isinstance(tables, dict) or not tables:
        raise refuse("parties: a vertical schema needs a [parties.<id>] table per party")
    if "protected" in raw:
        raise refuse(
            "protected: in a vertical schema the label party's table lists them "
            "([parties.<label party>] protected = [...]); feature parties hold none"
        )
    if not raw.get("id"):
        raise refuse("id: required (the identifier column every party's file has)")
    parties: dict[str, PartySpec] = {}
    for name, table in tables.items():
        if not is_institution_id(name):
            raise refuse(f"parties.{name}: not a valid party id: {RULE}")
        try:
            parties[name] = PartySpec.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(
                f"parties.{name}.{'.'.join(str(x) for x in err['loc']) or '<table>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise refuse(problems) from exc
    protected = _protected(parties, refuse)
    # The base schema's own rules refuse a protected column that is a feature, the label,
    # the id or the time column, or one listed twice, naming it.
    base = parse_schema(
        {k: v for k, v in raw.items() if k != "parties"} | {"protected": list(protected)},
        source=source,
    )
    if marked := [name for name in base.protected if name not in protected]:
        # `name = { ..., protected = true }` in [features]: no party's table would hold it.
        raise refuse(
            f"features.{marked[0]}.protected: in a vertical schema the label party's table "
            "lists protected attributes"
        )
    _check_parties(parties, base, refuse)
    return VerticalSchema(base=base, parties=parties)


def _protected(
    parties: dict[str, PartySpec], refuse: Callable[[str], DataValidationError]
) -> tuple[str, ...]:
    """The label party's protected attributes; a feature party listing any is refused: the
    bank measures fairness on its own rows, and no platform learns a borrower's group."""
    for name, spec in parties.items():
        if spec.protected and not spec.label:
            raise refuse(
                f"parties.{name}.protected: {', '.join(map(repr, spec.protected))} held by a "
                "feature party; protected attributes are the label party's only"
            )
    return next((spec.protected for spec in parties.values() if spec.label), ())


def _check_parties(
    parties: dict[str, PartySpec], base: Schema, refuse: Callable[[str], DataValidationError]
) -> None:
    if len(parties) < 2:
        raise refuse("parties: a vertical federation needs at least two parties")
    holders = [name for name, spec in parties.items() if spec.label]
    if len(holders) != 1:
        found = ", ".join(holders) if holders else "none"
        raise refuse(f"parties.*.label: exactly one party holds the label (found: {found})")
    owner: dict[str, str] = {}
    for name, spec in parties.items():
        if not spec.features:
            raise refuse(f"parties.{name}.features: a party with no features")
        for feature in spec.features:
            if feature in owner:
                who = "twice" if owner[feature] == name else f"by {owner[feature]} and {name}"
                raise refuse(f"parties.{name}.features: {feature!r} is claimed {who}")
            if feature not in base.features:
                raise refuse(f"parties.{name}.features: {feature!r} is not typed in [features]")
            owner[feature] = name
    unclaimed = [f for f in base.features if f not in owner]
    if unclaimed:
        raise refuse(f"features: no party holds {', '.join(map(repr, unclaimed))}")
