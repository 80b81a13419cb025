"""Bring-your-own-data: every documented bad input is a clear error before training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCHEMA_TOML, make_institution

from jointcredit.data.catalog import DataConfig, load_federation, resolve
from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import load_schema, parse_schema


def _load(d: Path, **kw: object) -> object:
    return load_federation(DataConfig(dataset=str(d), **kw))  # type: ignore[arg-type]


def test_valid_directory_loads_all_institutions(byod_dir: Path) -> None:
    fed = load_federation(DataConfig(dataset=str(byod_dir)))
    assert fed.ids == ["bank-a", "bank-b", "lender-c"]
    a = fed.institutions["bank-a"]
    assert len(a.train) + len(a.test) == 300
    assert len(a.test) == 60  # 20 % test split
    # Stratified: the default rate is nearly the same on both sides.
    assert abs(a.train.y.mean() - a.test.y.mean()) < 0.03
    assert list(a.train.x.columns) == ["age", "income", "sector"]  # id and label are not features


def test_split_is_seeded(byod_dir: Path) -> None:
    one = load_federation(DataConfig(dataset=str(byod_dir), seed=1)).institutions["bank-a"]
    same = load_federation(DataConfig(dataset=str(byod_dir), seed=1)).institutions["bank-a"]
    other = load_federation(DataConfig(dataset=str(byod_dir), seed=2)).institutions["bank-a"]
    pd.testing.assert_frame_equal(one.test.x, same.test.x)
    assert not one.test.x.equals(other.test.x)


def test_schema_shorthand_and_table_forms() -> None:
    schema = parse_schema(
        {
            "label": "y",
            "positive": "bad",
            "features": {"a": "numeric", "b": {"type": "numeric", "missing": "impute"}},
        }
    )
    assert schema.features["a"].missing == "error"
    assert schema.features["b"].missing == "impute"
    assert parse_schema(schema.model_dump()) == schema


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('label = "y"\npositive = 1\n[features]\na = "text"\n', "features.a"),
        ('label = "y"\npositive = 1.0\n[features]\na = "numeric"\n', "positive"),
        ('label = "y"\npositive = 1\n[features]\ny = "numeric"\n', "cannot also be a feature"),
        ('label = "y"\npositive = 1\ncolour = "red"\n[features]\na = "numeric"\n', "colour"),
        (
            'label = "y"\npositive = 1\n[features]\na = { type = "numeric", missing = "zero" }\n',
            "missing",
        ),
        ("label = \n", "not valid TOML"),
        (
            'label = "y"\npositive = 1\n[features]\na = { type = "numeric", min = 2, max = 1 }\n',
            "above max",
        ),
        (
            'label = "y"\npositive = 1\n[features]\na = { type = "categorical", min = 0 }\n',
            "numeric features only",
        ),
    ],
)
def test_bad_schema_is_named(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(toml)
    with pytest.raises(DataValidationError, match=needle) as info:
        load_schema(path)
    assert str(path) in str(info.value)


def test_missing_schema_column(byod_dir: Path) -> None:
    make_institution(4).drop(columns="sector").to_csv(byod_dir / "bank-a.csv", index=False)
    with pytest.raises(DataValidationError) as info:
        _load(byod_dir)
    msg = str(info.value)
    assert "bank-a.csv" in msg and "sector" in msg and "missing from the file" in msg


def test_non_numeric_value_names_file_column_and_line(byod_dir: Path) -> None:
    frame = make_institution(5).astype({"age": object})
    frame.loc[7, "age"] = "forty"
    frame.to_csv(byod_dir / "bank-b.csv", index=False)
    with pytest.raises(DataValidationError) as info:
        _load(byod_dir)
    msg = str(info.value)
    assert "bank-b.csv" in msg and "'age'" in msg and "'forty'" in msg and "line(s) 9" in msg


def test_value_outside_the_schema_range_names_file_column_and_line(byod_dir: Path) -> None:
    schema = (byod_dir / "schema.toml").read_text()
    (byod_dir / "schema.toml").write_text(
        schema.replace('age = "numeric"', 'age = { type = "numeric", min = 18, max = 120 }')
    )
    frame = make_institution(5)
    frame.loc[4, "age"] = 7
    frame.to_csv(byod_dir / "bank-b.csv", index=False)
    with pytest.raises(DataValidationError) as info:
        _load(byod_dir)
    msg = str(info.value)
    assert "bank-b.csv" in msg and "'age'" in msg and "7.0 below the schema's min 18" in msg
    assert "line(s) 6" in msg


def test_missing_value_where_schema_says_error(byod_dir: Path) -> None:
    frame = make_institution(6).astype({"age": float})
    frame.loc[3, "age"] = np.nan
    frame.to_parquet(byod_dir / "lender-c.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"lender-c.parquet, column 'age': 1 missing"):
        _load(byod_dir)


def test_missing_allowed_with_impute(byod_dir: Path) -> None:
    fed = load_federation(DataConfig(dataset=str(byod_dir)))
    assert fed.institutions["bank-a"].train.x["income"].isna().any()


def test_label_not_binary(byod_dir: Path) -> None:
    frame = make_institution(7)
    frame.loc[0, "defaulted"] = 2
    frame.to_csv(byod_dir / "bank-a.csv", index=False)
    with pytest.raises(DataValidationError, match="label is not binary"):
        _load(byod_dir)


def test_label_type_must_match_positive(byod_dir: Path) -> None:
    frame = make_institution(8).astype({"defaulted": object})
    frame.loc[0, "defaulted"] = "yes"
    frame.to_csv(byod_dir / "bank-a.csv", index=False)
    with pytest.raises(DataValidationError, match="positive = 1"):
        _load(byod_dir)


def test_a_string_positive_with_numeric_labels_is_a_type_mismatch(byod_dir: Path) -> None:
    schema = byod_dir / "schema.toml"
    schema.write_text(SCHEMA_TOML.replace("positive = 1", 'positive = "yes"'))
    with pytest.raises(DataValidationError, match=r"positive = 'yes' \(a string\) but the label"):
        _load(byod_dir)
    schema.write_text(SCHEMA_TOML.replace("positive = 1", 'positive = "1"'))
    assert _load(byod_dir)  # the file's own spelling of its numbers, as text, is fine


def test_the_schemas_id_column_must_exist(byod_dir: Path) -> None:
    (byod_dir / "schema.toml").write_text(SCHEMA_TOML.replace("applicant_id", "applicant_no"))
    with pytest.raises(DataValidationError, match=r"id column \(id = 'applicant_no'\) is missing"):
        _load(byod_dir)


def test_one_class_in_whole_federation(byod_dir: Path) -> None:
    for name in ("bank-a.csv", "bank-b.csv"):
        make_institution(9).assign(defaulted=0).to_csv(byod_dir / name, index=False)
    make_institution(9).assign(defaulted=0).to_parquet(byod_dir / "lender-c.parquet", index=False)
    with pytest.raises(DataValidationError, match="one class in the whole federation"):
        _load(byod_dir)


def test_one_class_in_one_institution_is_fine(byod_dir: Path) -> None:
    make_institution(9).assign(defaulted=0).to_csv(byod_dir / "bank-a.csv", index=False)
    fed = load_federation(DataConfig(dataset=str(byod_dir)))
    assert fed.institutions["bank-a"].train.y.sum() == 0


def test_too_few_rows(byod_dir: Path) -> None:
    make_institution(10, rows=40).to_csv(byod_dir / "bank-b.csv", index=False)
    with pytest.raises(DataValidationError, match=r"'bank-b' has 40 rows; at least 100"):
        _load(byod_dir)


def test_unreadable_file(byod_dir: Path) -> None:
    (byod_dir / "lender-c.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match=r"lender-c.parquet: cannot read file"):
        _load(byod_dir)


def test_extra_columns_ignored_with_warning(
    byod_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_institution(11).assign(notes="x").to_csv(byod_dir / "bank-a.csv", index=False)
    with caplog.at_level(logging.WARNING):
        fed = load_federation(DataConfig(dataset=str(byod_dir)))
    assert "notes" not in fed.institutions["bank-a"].train.x.columns
    assert any("ignoring columns not in the schema: notes" in r.message for r in caplog.records)


def test_empty_directory_and_missing_schema(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no institution files"):
        resolve(DataConfig(dataset=str(tmp_path))).ids  # noqa: B018
    make_institution(1).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataValidationError, match="schema file not found"):
        _load(tmp_path)


def test_largest_institutions_are_selected(byod_dir: Path) -> None:
    make_institution(12, rows=500).to_csv(byod_dir / "bank-b.csv", index=False)
    fed = load_federation(DataConfig(dataset=str(byod_dir), institutions=1))
    assert fed.ids == ["bank-b"]
    with pytest.raises(DataValidationError, match="asked for 5 institutions"):
        _load(byod_dir, institutions=5)


def test_schema_round_trips_through_toml(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCHEMA_TOML)
    schema = load_schema(tmp_path / "s.toml")
    (tmp_path / "t.toml").write_text(schema.to_toml())
    assert load_schema(tmp_path / "t.toml") == schema


def test_shipped_sba_sample_is_valid_and_leak_free() -> None:
    fed = load_federation(DataConfig(dataset="sba"))
    assert len(fed.ids) == 20
    features = set(fed.schema.features)
    for leak in ("term", "Term", "disbursement_gross", "chg_off_date", "balance_gross"):
        assert leak not in features
    rate = np.mean(np.concatenate([d.train.y for d in fed.institutions.values()]))
    assert 0.15 < rate < 0.35
