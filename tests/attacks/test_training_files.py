"""Hostile training files (issue 19, item 16): odd file names, a file too large to read, a
schema bound of `nan` or `inf`, a column named twice. `data check` and `simulate` apply the
same rules (data/files.py, one function for both) and refuse with exit 2, naming the file,
the key or the column."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SCHEMA_TOML, make_institution
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import parse_schema

ODD_NAMES = ["bank d.csv", ".hidden.csv", "bänk-ü.csv", "-rf.csv", "bank\nd.csv",
             "b" * 196 + ".csv", "x;rm -rf ~.csv"]  # fmt: skip


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _directory(root: Path, odd: str | None = None) -> Path:
    d = root / "data"
    d.mkdir()
    (d / "schema.toml").write_text(SCHEMA_TOML)
    make_institution(1).to_csv(d / "bank-a.csv", index=False)
    make_institution(2).to_csv(d / (odd or "bank-b.csv"), index=False)
    return d


def _both(d: Path, *extra: str) -> list[tuple[str, int, str]]:
    """`data check` and `simulate` on directory `d`: (command, exit code, output) each."""
    out = d.parent / "out"
    check = _run("data", "check", str(d), *extra)
    simulate = _run("simulate", "--dataset", str(d), "--rounds", "1", "--no-baselines",
                    "--no-audit", "--out", str(out), *extra)  # fmt: skip
    assert not out.exists()  # refused before anything started
    return [("data check", *check), ("simulate", *simulate)]


@pytest.mark.parametrize("name", ODD_NAMES, ids=range(len(ODD_NAMES)))
def test_an_odd_file_name_is_refused_by_both_commands_naming_the_file(
    tmp_path: Path, name: str
) -> None:
    d = _directory(tmp_path, name)
    for command, code, out in _both(d):
        assert code == 2, (command, out)
        assert repr(name) in out and "not a valid institution id" in out, (command, out)


def test_a_file_name_that_is_an_institution_id_is_accepted(tmp_path: Path) -> None:
    code, out = _run("data", "check", str(_directory(tmp_path, "Bank_B.v2.csv")))
    assert code == 0 and "Bank_B.v2: 300 rows" in out, out


def test_a_file_above_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    d = _directory(tmp_path)
    big = pd.concat([make_institution(3)] * 150)  # ~1.5 MiB of CSV
    big.to_csv(d / "bank-big.csv", index=False)
    for command, code, out in _both(d, "--max-file-mb", "1"):
        assert code == 2, (command, out)
        assert "bank-big.csv" in out and "above the limit of 1 MiB" in out, (command, out)
        assert "max-file-mb" in out
    code, out = _run("data", "check", str(d), "--max-file-mb", "2")
    assert code == 0 and "bank-big: 45000 rows" in out, out


def test_validation_in_chunks_is_the_whole_files(tmp_path: Path) -> None:
    from jointcredit.data.files import read_chunks
    from jointcredit.data.frames import validate_chunks

    path = tmp_path / "bank.csv"
    frame = make_institution(1)
    frame.loc[frame.index[-1], "defaulted"] = 2  # a third label value, in the last chunk only
    frame.to_csv(path, index=False)
    schema = parse_schema(tomllib.loads(SCHEMA_TOML))
    with pytest.raises(DataValidationError, match=r"not binary: 3 distinct values \(0, 1, 2\)"):
        validate_chunks(read_chunks(path, chunk_rows=50), schema, source=str(path))
    frame = make_institution(1)
    frame["age"] = frame["age"].astype(object)
    frame.loc[frame.index[-1], "age"] = "old"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"'old'.*first at line\(s\) 301\)"):
        validate_chunks(read_chunks(path, chunk_rows=50), schema, source=str(path))
    make_institution(4).to_csv(path, index=False)
    whole = validate_chunks(read_chunks(path, chunk_rows=64), schema, source=str(path))
    assert len(whole) == 300 and list(whole.x.index) == list(range(300))


@pytest.mark.e2e
def test_reading_a_large_csv_takes_a_bounded_multiple_of_its_size(tmp_path: Path) -> None:
    d = _directory(tmp_path)
    block = make_institution(5, rows=20_000).to_csv(index=False)
    header, body = block.split("\n", 1)
    with (d / "bank-big.csv").open("w") as fh:
        fh.write(header + "\n" + body * 60)  # ~60 MiB, 1.2 M rows
    size = (d / "bank-big.csv").stat().st_size
    # The process's own high-water mark (VmHWM starts afresh at exec; ru_maxrss would carry
    # this test process's). The split's scikit-learn is imported first: its ~90 MB are code,
    # not the file's rows (data.frames imports it only when it splits).
    probe = (
        "import json, sys\n"
        "import sklearn.model_selection\n"
        "from jointcredit.data.catalog import DataConfig, load_federation\n"
        "def kib(key):\n"
        "    line = next(x for x in open('/proc/self/status') if x.startswith(key))\n"
        "    return int(line.split()[1]) * 1024\n"
        "before = kib('VmRSS')\n"
        "fed = load_federation(DataConfig(dataset=sys.argv[1]))\n"
        "print(json.dumps([before, kib('VmHWM'), len(fed.institutions['bank-big'].train)]))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(d)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after, train_rows = json.loads(done.stdout)
    assert train_rows > 900_000
    assert after - before < 6 * size, f"reading {size:,} bytes grew the peak by {after - before:,}"


@pytest.mark.parametrize("bound", ["min = nan", "max = inf", "min = -inf"])
def test_a_bound_that_is_not_a_finite_number_is_refused_naming_the_key(
    tmp_path: Path, bound: str
) -> None:
    d = _directory(tmp_path)
    schema = SCHEMA_TOML.replace('age = "numeric"', f'age = {{ type = "numeric", {bound} }}')
    (d / "schema.toml").write_text(schema)
    key = "features.age." + bound.split()[0]
    for command, code, out in _both(d):
        assert code == 2 and key in out and "finite" in out, (command, out)


@pytest.mark.parametrize("column", ["defaulted", "sector", "note"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_column_named_twice_is_refused_naming_it(
    tmp_path: Path, column: str, suffix: str
) -> None:
    d = _directory(tmp_path)
    frame = make_institution(3).assign(note="x")
    names = [*frame.columns, column]
    table = pa.Table.from_arrays([*(pa.array(frame[c]) for c in frame.columns),
                                  pa.array(frame[column])], names=names)  # fmt: skip
    if suffix == ".csv":
        table.to_pandas().to_csv(d / "bank-c.csv", index=False, header=names)
    else:
        pq.write_table(table, d / "bank-c.parquet")
    code, out = _run("data", "check", str(d))
    assert code == 2 and f"bank-c{suffix}, column {column!r}" in out, out
    assert "named more than once in the header" in out
