"""The API documentation on a machine without internet (issue 19, item 18): a real headless
Chromium loads `/docs` and `/redoc` from `jointcredit serve` on loopback, with every request
that is not to 127.0.0.1 blocked, and the pages must render the API's operations.

Chromium is Debian's (`apt-get install chromium chromium-driver`; .ci/run installs it), driven
by Playwright's Python package; Playwright's own browser download is never used. Without
Chromium the test is skipped, except in CI (`CI` set), where it fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from service_helpers import free_port, serve_process, signed_artifact, wait_ready

from jointcredit.service.auth import new_key

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
# No first-run, sync, update or background traffic of the browser's own.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs chromium and chromium-driver")
    pytest.skip(f"no {CHROMIUM}: apt-get install chromium chromium-driver (CI installs them)")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("docs")
    model_dir = signed_artifact(root)
    new_key(root / "keys.json", "bank-a")
    port = free_port()
    proc = serve_process(["--model", str(model_dir), "--trust", str(root / "trust.json"),
                          "--api-keys", str(root / "keys.json"),
                          "--db", f"sqlite:///{root / 'audit.sqlite'}"], port)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _render(base: str, path: str, selector: str, profile: Path) -> tuple[list[str], list[str]]:
    """Load `base + path` offline; wait for `selector`; return the texts it matches and every
    URL the page tried to reach outside loopback."""
    from playwright.sync_api import Route, sync_playwright

    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    profile.mkdir()  # an empty profile: nothing cached from an earlier, online visit
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(_chromium()), args=ARGS, headless=True
        )
        try:
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.goto(base + path)
            try:
                page.wait_for_selector(selector, timeout=20_000)
            except Exception as exc:
                raise AssertionError(f"{path} rendered no operation; blocked: {outside}") from exc
            texts = [t.strip() for t in page.locator(selector).all_inner_texts()]
        finally:
            context.close()
    return texts, outside


def test_swagger_ui_renders_the_operations_offline(base: str, tmp_path: Path) -> None:
    _chromium()
    paths, outside = _render(base, "/docs", ".opblock-post .opblock-summary-path", tmp_path / "p")
    assert "/v1/decisions" in paths and "/v1/decisions:batch" in paths, paths
    assert outside == []


def test_redoc_renders_the_operations_offline(base: str, tmp_path: Path) -> None:
    _chromium()
    paths, outside = _render(base, "/redoc", "[data-section-id^='operation/']", tmp_path / "p")
    assert len(paths) >= 5, paths  # every route of the API has its section
    assert outside == []
