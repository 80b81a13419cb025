"""`jointcredit report`: the validation report's sections from a run's outputs, and the HTML
page rendered by a real headless Chromium, offline: every figure decodes, nothing is fetched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from report_helpers import FAIRNESS, run_dir
from typer.testing import CliRunner

from jointcredit.cli.main import app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip
FIGURES = {"roc", "ks", "calibration", "scores", "institutions"}


def _report(out: Path) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["report", str(out), "--trust-any-coordinator"])
    assert result.exit_code == 0, result.output
    return (out / "report.html").read_text(), (out / "report.md").read_text()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    out = run_dir(tmp_path_factory.mktemp("report"), fairness=FAIRNESS)
    return (out, *_report(out))


def test_every_section_and_figure_is_there(full: tuple[Path, str, str]) -> None:
    out, page, markdown = full
    for title in ("Summary", "Data and split", "Discrimination", "Calibration",
                  "Score distribution per institution", "Per-institution AUC",
                  "Fairness per group", "Privacy settings and epsilon spent",
                  "Membership-inference audit", "Signed provenance"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page and f"## {title}" in markdown
    assert set(re.findall(r"data-figure='(\w+)'", page)) == FIGURES
    for name in FIGURES:  # the Markdown's figures are files beside it
        assert f"(report_files/{name}.png)" in markdown
        assert (out / "report_files" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "The signed model verifies" in page and "Gains table" in page
    # The hand-made fairness block's groups, as the fairness metrics write them.
    assert "| female | 0.720 | -0.110 | -0.080 | 0.790 | 0.012 |" in markdown
    assert "Not promoted" in markdown


def test_the_page_references_nothing_outside_itself(full: tuple[Path, str, str]) -> None:
    _, page, _ = full
    assert "<script" not in page
    assert re.findall(r"\b(?:src|href)\s*=", page) == ["src="] * len(FIGURES)
    assert not re.search(r"\b(?:src|href)\s*=\s*(?!'data:image/png;base64,)", page)
    assert not re.search(r"https?://", page)


def test_a_run_without_protected_attributes_or_band_counts_says_so(tmp_path: Path) -> None:
    _, markdown = _report(run_dir(tmp_path, hist=False))
    assert "Not measured: the schema names no protected attribute." in markdown
    assert markdown.count("Not recorded by this run") == 3  # discrimination, calibration, scores
    assert "![ROC" not in markdown and "![Per-institution AUC" in markdown


@pytest.mark.e2e
def test_chromium_renders_every_figure_offline(full: tuple[Path, str, str], tmp_path: Path) -> None:
    """A real headless Chromium (Debian's; .ci/run installs it) loads the page with the network
    refused: no request leaves the page, every <img> decodes, and the screenshot is not blank
    where the figures are."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    from PIL import Image
    from playwright.sync_api import Route, sync_playwright

    out, _, _ = full
    requested: list[str] = []

    def refuse(route: Route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            requested.append(url)
            route.abort("internetdisconnected")

    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        try:
            context.route("**/*", refuse)
            page = context.new_page()
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "() => [...document.images].map(i => ({name: i.dataset.figure, complete: "
                "i.complete, w: i.naturalWidth, h: i.naturalHeight, "
                "box: [i.getBoundingClientRect().left + scrollX, "
                "i.getBoundingClientRect().top + scrollY, i.getBoundingClientRect().width, "
                "i.getBoundingClientRect().height]}))"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    assert requested == []
    assert {i["name"] for i in images} == FIGURES
    for i in images:  # decoded: matplotlib's 6 x 4 in at 100 dpi
        assert i["complete"] and (i["w"], i["h"]) == (600, 400), i
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page
    for i in images:  # each figure's region holds a drawing: dark lines on white
        x, y, w, h = (int(v) for v in i["box"])
        region = pixels[y : y + h, x : x + w]
        assert region.shape[0] > 100 and region.shape[1] > 100, i
        assert region.std() > 20 and (region < 128).mean() > 0.01, i["name"]


def test_a_model_that_does_not_verify_is_reported_as_such(tmp_path: Path) -> None:
    out = run_dir(tmp_path)
    weights = out / "model" / "weights.npz"
    weights.write_bytes(weights.read_bytes() + b"\0")
    _, markdown = _report(out)
    assert "The signed model does NOT verify" in markdown and "weights.npz" in markdown
    assert "The model did not verify: no provenance can be vouched for." in markdown


def test_the_privacy_section_of_a_dp_record_run() -> None:
    from jointcredit.federation.metrics import RunMetrics
    from jointcredit.simulations.report_document import Table
    from jointcredit.simulations.report_trust import privacy_sections

    m = RunMetrics.read(Path(__file__).parent / "fixtures" / "metrics-dp-record.json")
    privacy, _ = privacy_sections(m)
    settings, per_institution = (b for b in privacy.blocks if isinstance(b, Table))
    rows = dict((r[0], r[1]) for r in settings.rows)
    assert rows["setting"] == "dp-record" and rows["epsilon spent"] != "-"
    assert rows["record-level DP"].startswith(m.privacy.record_dp.mechanism)  # type: ignore[union-attr]
    assert [r[0] for r in per_institution.rows] == sorted(m.privacy.epsilon_per_institution or {})


def test_test_splits_of_one_class_are_named_not_a_traceback(tmp_path: Path) -> None:
    import json

    out = run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    for row in metrics["per_institution"].values():
        hist = row["score_histogram"]
        hist["good"] = [g + b for g, b in zip(hist["good"], hist["bad"], strict=True)]
        hist["bad"] = [0] * len(hist["bad"])
    (out / "metrics.json").write_text(json.dumps(metrics))
    _, markdown = _report(out)
    assert markdown.count("Not computable: the test splits hold one class only") == 3
