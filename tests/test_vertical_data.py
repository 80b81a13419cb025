"""Vertical layout (data/vertical.py, data/vertical_schema.py): a directory per party, a schema
with `[parties.<id>]` tables, and every malformed federation refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.data.errors import DataValidationError
from jointcredit.data.vertical import load_vertical
from jointcredit.data.vertical_schema import parse_vertical_schema

SCHEMA = """\
label = "defaulted"
positive = 1
id = "customer_id"
[features]
term = "numeric"
amount = { type = "numeric", min = 0 }
sector = "categorical"
employees = "numeric"
[parties.bank]
label = true
features = ["term", "amount"]
[parties.platform]
features = ["sector", "employees"]
"""


def write(tmp: Path, schema: str = SCHEMA) -> Path:
    (tmp / "bank").mkdir(parents=True)
    (tmp / "platform").mkdir()
    pd.DataFrame(
        {
            "customer_id": ["c01", "c02", "c03", "c04"],
            "term": [12, 24, 36, 60],
            "amount": [1.0, 2.0, 3.0, 4.0],
            "defaulted": [0, 1, 0, 0],
        }
    ).to_csv(tmp / "bank" / "loans.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": ["c03", "c01", "c09"],
            "sector": ["retail", "food", "retail"],
            "employees": [3, 10, 1],
            "defaulted": [1, 1, 1],  # a stray copy: never loaded at a feature party
        }
    ).to_parquet(tmp / "platform" / "users.parquet")
    (tmp / "schema.toml").write_text(schema)
    return tmp


def test_each_party_gets_its_id_and_own_columns_label_only_at_the_label_party(
    tmp_path: Path,
) -> None:
    data = load_vertical(write(tmp_path))
    assert data.schema.label_party == "bank"
    bank, platform = data.parties["bank"], data.parties["platform"]
    assert list(bank.frame.columns) == ["customer_id", "term", "amount", "defaulted"]
    assert list(platform.frame.columns) == ["customer_id", "sector", "employees"]
    assert bank.frame["defaulted"].tolist() == [0, 1, 0, 0]
    assert platform.ids.tolist() == ["c03", "c01", "c09"]
    assert platform.label_column is None and bank.label_column == "defaulted"


def edited(old: str, new: str) -> str:
    assert old in SCHEMA
    return SCHEMA.replace(old, new)


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (edited('features = ["sector", "employees"]', 'features = ["sector", "term"]'),
         "'term' is claimed by bank and platform"),
        (edited('features = ["sector", "employees"]', "features = []"),
         "parties.platform.features: a party with no features"),
        (edited("label = true\n", ""), "exactly one party holds the label (found: none)"),
        (edited('[parties.platform]\n', '[parties.platform]\nlabel = true\n'),
         "exactly one party holds the label (found: bank, platform)"),
        (edited('id = "customer_id"\n', ""), "id: required"),
        (edited('"sector", "employees"', '"sector", "employees", "age"'), "'age' is not typed"),
        (edited('"sector", "employees"', '"sector"'), "no party holds 'employees'"),
        (edited("[parties.platform]", "[parties.plat]"), "no directory for party 'plat'"),
        (edited("[parties.platform]", "[parties.platform]\nholds = 1"), "parties.platform.holds"),
        (SCHEMA.split("[parties.bank]")[0], "a [parties.<id>] table per party"),
    ],
)  # fmt: skip
def test_malformed_federations_are_refused_naming_the_key(
    tmp_path: Path, schema: str, says: str
) -> None:
    with pytest.raises(DataValidationError) as caught:
        load_vertical(write(tmp_path, schema))
    assert says in str(caught.value)


def test_a_single_party_is_not_a_vertical_federation() -> None:
    raw = {"label": "y", "positive": 1, "id": "i", "features": {"a": "numeric"},
           "parties": {"bank": {"label": True, "features": ["a"]}}}  # fmt: skip
    with pytest.raises(DataValidationError, match="at least two parties"):
        parse_vertical_schema(raw)


def test_missing_or_duplicate_ids_and_missing_id_column_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path)
    bank = root / "bank" / "loans.csv"
    frame = pd.read_csv(bank)
    frame.loc[2, "customer_id"] = "c01"
    frame.to_csv(bank, index=False)
    with pytest.raises(DataValidationError, match=r"'c01' appears more than once .*line\(s\) 2, 4"):
        load_vertical(root)
    frame.loc[2, "customer_id"] = ""
    frame.to_csv(bank, index=False)
    with pytest.raises(DataValidationError, match="1 missing identifier"):
        load_vertical(root)
    frame.drop(columns="customer_id").to_csv(bank, index=False)
    with pytest.raises(
        DataValidationError, match=r"identifier column .* missing from party 'bank'"
    ):
        load_vertical(root)


def test_stray_directory_and_two_files_in_a_party_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path)
    (root / "other").mkdir()
    with pytest.raises(DataValidationError, match=r"no \[parties.<id>\] table .*: other"):
        load_vertical(root)
    (root / "other").rmdir()
    (root / "bank" / "more.csv").write_text("customer_id\n")
    with pytest.raises(DataValidationError, match="exactly one data file"):
        load_vertical(root)


def test_data_check_vertical_exit_codes(tmp_path: Path) -> None:
    root = write(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", "--layout", "vertical", str(root), "--json"])
    assert result.exit_code == 0, result.stdout
    facts = json.loads(result.stdout)
    assert facts["shared_ids"] == 2 and facts["parties"]["bank"]["label"] is True
    assert facts["parties"]["platform"]["rows"] == 3
    (root / "schema.toml").write_text(edited("label = true\n", ""))
    result = CliRunner().invoke(app, ["data", "check", "--layout", "vertical", str(root)])
    assert result.exit_code == 2
    assert "exactly one party holds the label" in result.stderr


def test_the_label_partys_time_column_is_kept_as_sort_keys(tmp_path: Path) -> None:
    """`time = "column"` names a column of the label party's file: kept (as float64 sort keys,
    years or ISO dates) beside its features, required there, never a feature; a feature
    party's file needs none; a schema-level `protected` is refused."""
    schema = edited('id = "customer_id"\n', 'id = "customer_id"\ntime = "applied"\n')
    root = write(tmp_path, schema)
    bank = root / "bank" / "loans.csv"
    frame = pd.read_csv(bank)
    frame["applied"] = ["2019-03-01", "2020-01-15", "2021-06-30", "2021-07-01"]
    frame.to_csv(bank, index=False)
    data = load_vertical(root)
    keys = data.parties["bank"].frame["applied"]
    assert keys.dtype == "float64" and keys.is_monotonic_increasing
    assert "applied" not in data.parties["platform"].frame.columns
    assert "applied" not in data.schema.party_features("bank")
    frame.loc[1, "applied"] = "soon"
    frame.to_csv(bank, index=False)
    with pytest.raises(DataValidationError, match="neither a number"):
        load_vertical(root)
    frame.drop(columns="applied").to_csv(bank, index=False)
    with pytest.raises(DataValidationError, match=r"column\(s\) missing from its file: applied"):
        load_vertical(root)
    with pytest.raises(DataValidationError, match="cannot be a feature"):
        load_vertical(
            write(
                tmp_path / "f",
                edited('id = "customer_id"\n', 'id = "customer_id"\ntime = "term"\n'),
            )
        )
    # Protected attributes go in the label party's table (tests/test_vertical_fairness.py).
    with pytest.raises(DataValidationError, match="protected: in a vertical schema the label"):
        load_vertical(
            write(
                tmp_path / "p",
                edited('id = "customer_id"\n', 'id = "customer_id"\nprotected = ["x"]\n'),
            )
        )
