"""A deployed node validates its one file once (its worker, before any message); each
message's read reuses those rows only while the file is the one that was read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from jointcredit.client import data as client_data
from jointcredit.data import catalog
from jointcredit.data.schema import load_schema

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sba_sample"


@pytest.fixture
def node_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(catalog, "_VALIDATED_FILES", {})
    path = tmp_path / "bbcn-bank.parquet"
    shutil.copyfile(SAMPLE / "bbcn-bank.parquet", path)
    return path


def _count_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = catalog.validate_chunks

    def spy(*args: object, **kwargs: object) -> catalog.Split:
        seen.append(str(kwargs.get("source")))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog, "validate_chunks", spy)
    return seen


def test_a_preloaded_file_is_not_validated_again(
    node_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema_path = SAMPLE / "schema.toml"
    seen = _count_validations(monkeypatch)
    client_data.preload_node_file(str(node_file), str(schema_path))
    assert len(seen) == 1
    schema = load_schema(schema_path)
    first = catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    again = catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    assert len(seen) == 1
    assert first.train.x.equals(again.train.x)
    # Another size limit is another read (its refusal must be the file's own).
    catalog.load_institution_file(node_file, schema, catalog.DataConfig(max_file_mb=7))
    assert len(seen) == 2


def test_a_changed_file_is_read_again(node_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = load_schema(SAMPLE / "schema.toml")
    seen = _count_validations(monkeypatch)
    before = catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    rows = pd.read_parquet(node_file)
    replaced = node_file.with_suffix(".new")
    rows.iloc[: len(rows) // 2].to_parquet(replaced)
    os.replace(replaced, node_file)  # a new file under the same name
    after = catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    assert len(seen) == 2
    assert len(after.train) + len(after.test) < len(before.train) + len(before.test)
    # Rewritten in place with a new modification time: read again too.
    rows.to_parquet(node_file)
    os.utime(node_file, ns=(1, 1))
    catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    assert len(seen) == 3


def test_a_same_size_rewrite_with_its_old_times_is_read_again(
    node_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same inode, the same size, its modification time put back (`touch -r`, `cp -p`):
    still another file's rows."""
    schema = load_schema(SAMPLE / "schema.toml")
    seen = _count_validations(monkeypatch)
    catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    before = node_file.stat()
    content = bytearray(node_file.read_bytes())
    with node_file.open("r+b") as fh:  # same inode, same length
        fh.write(bytes(content))
    os.utime(node_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = node_file.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip
    catalog.load_institution_file(node_file, schema, catalog.DataConfig())
    assert len(seen) == 2


def test_a_file_that_cannot_be_read_ahead_is_left_to_the_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jointcredit.deploy import clientapp_worker

    clientapp_worker.preload_data(
        clientapp_worker.PRELOAD_DATA, str(tmp_path / "none.parquet"), str(SAMPLE / "schema.toml")
    )
    assert "not read ahead" in capsys.readouterr().out


def test_a_vertical_partys_file_is_not_read_as_an_institutions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A vertical node's schema has `[parties.*]`: its rows are read by the party's session,
    so the worker neither validates them as a horizontal file nor reports a failure."""
    from jointcredit.deploy import clientapp_worker

    schema = tmp_path / "schema.toml"
    schema.write_text(
        'id = "customer_id"\n[parties.bank]\nlabel = "default"\nfeatures = ["a"]\n'
        '[parties.platform]\nfeatures = ["b"]\n'
    )
    clientapp_worker.preload_data(
        clientapp_worker.PRELOAD_DATA, str(tmp_path / "bank.parquet"), str(schema)
    )
    assert "not read ahead" not in capsys.readouterr().out
