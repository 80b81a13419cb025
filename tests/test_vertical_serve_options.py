"""`jointcredit serve` of a vertical model honours the options it shares with the
horizontal service (the anchors, the lock timeout, the monitoring window) and refuses the
horizontal-only ones instead of silently serving without them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.service import vertical_service
from jointcredit.service.loader import StartupError

BASE = ["serve", "--model", "m", "--trust", "t.json", "--trust-any-coordinator",
        "--vertical-kit", "kit", "--party", "platform=https://127.0.0.1:9443"]  # fmt: skip


@pytest.mark.parametrize(
    "option",
    [["--require-promotion"], ["--allow-checkpoint"]],
    ids=["require-promotion", "allow-checkpoint"],
)
def test_horizontal_only_options_are_refused_for_a_vertical_model(
    option: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("the service must not be loaded")

    monkeypatch.setattr(vertical_service, "load_vertical_service", never)
    result = CliRunner().invoke(app, [*BASE, *option])
    assert result.exit_code == 2, result.output
    assert option[0] in result.output and "vertical" in result.output


def test_the_anchor_lock_and_monitoring_options_reach_the_vertical_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: dict[str, Any] = {}

    def capture(*_a: object, **kwargs: Any) -> None:
        got.update(kwargs)
        raise StartupError("stopped by the test")

    monkeypatch.setattr(vertical_service, "load_vertical_service", capture)
    result = CliRunner().invoke(app, [
        *BASE, "--anchors", str(tmp_path / "a.jsonl"), "--anchor-key", str(tmp_path / "a.key"),
        "--anchor-every", "7", "--anchor-seconds", "3", "--audit-lock-timeout", "1.5",
        "--monitoring-window", "50",
    ])  # fmt: skip
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert got["anchors_file"] == tmp_path / "a.jsonl"
    assert got["anchor_key"] == tmp_path / "a.key"
    assert (got["anchor_every"], got["anchor_seconds"], got["audit_lock_timeout"]) == (7, 3, 1.5)
    assert got["monitoring_window"] == 50


class _Started(Exception):
    pass


@pytest.mark.parametrize(
    ("given", "bytes_"), [([], 2 * 2**20), (["--max-body-mb", "4"], 4 * 2**20)]
)
def test_a_vertical_model_takes_bodies_of_2_mib_unless_told_otherwise(
    given: list[str], bytes_: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the horizontal service's 16 MiB: a vertical batch holds at most 1,000 applicants,
    and each worker would buffer whatever it is sent."""
    got: dict[str, int] = {}
    info = SimpleNamespace(version="v" * 16, signing_key="k")
    loaded = SimpleNamespace(model_info=info, audit=SimpleNamespace(url="sqlite:///x"))

    def started(_service: object, *, max_body: int) -> None:
        got["max_body"] = max_body
        raise _Started

    monkeypatch.setattr(vertical_service, "load_vertical_service", lambda *a, **k: loaded)
    monkeypatch.setattr(vertical_service, "create_vertical_app", started)
    result = CliRunner().invoke(app, [*BASE, *given])
    assert isinstance(result.exception, _Started), result.output
    assert got["max_body"] == bytes_


def test_more_workers_than_the_shared_query_bound_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers share the bound on applicants asked about at once (16): each needs at
    least one, so more than 16 would break it."""

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("the service must not be loaded")

    monkeypatch.setattr(vertical_service, "load_vertical_service", never)
    result = CliRunner().invoke(app, [*BASE, "--workers", "17"])
    assert result.exit_code == 2 and "at most 16 workers" in " ".join(result.output.split())
