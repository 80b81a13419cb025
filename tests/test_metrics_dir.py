"""`serve --workers N` with an operator's PROMETHEUS_MULTIPROC_DIR: the metric files an earlier
run left there are removed before the workers start, or they would be counted again."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointcredit.service.workers import MULTIPROC_ENV, multiprocess_metrics


def test_an_operators_directory_starts_empty_of_old_metric_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counter_4242.db").write_bytes(b"an earlier run's counts")
    (tmp_path / "gauge_livesum_4243.db").write_bytes(b"a dead worker's gauge")
    (tmp_path / "README").write_text("the operator's own file stays")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with multiprocess_metrics() as directory:
        assert directory == tmp_path
        assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]


def test_without_one_a_private_directory_is_made_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_metrics() as directory:
        assert directory.is_dir()
    assert not directory.exists()
