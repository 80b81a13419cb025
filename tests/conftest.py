"""Shared fixtures. The Flower-internal bit (TaskIdentity) is isolated here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jointcredit.trust.pins import HOME_ENV

_HOME = pytest.StashKey[str]()
TIERS = ("unit", "integration", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    """Coordinator pins (trust/pins.py) go to a directory of this session's, inherited by
    every subprocess, not to the user's ~/.jointcredit."""
    # pytest-xdist's workers start with COLUMNS=80, which the CLI's rich consoles (made when
    # its modules are imported) would keep for good; a test that wants a width sets it itself.
    os.environ.pop("COLUMNS", None)
    home = tempfile.mkdtemp(prefix="jointcredit-home-")
    config.stash[_HOME] = home
    os.environ[HOME_ENV] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_HOME, ""), ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test has exactly one tier; without a marker it is a unit test. Integration and
    e2e tests are also `slow`, so `-m "not slow"` keeps meaning the fast tier. The files with
    the longest tests are run first."""
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t) is not None]
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier marker {tiers}")
        if not tiers:
            item.add_marker(pytest.mark.unit)
        elif tiers[0] != "unit":
            item.add_marker(pytest.mark.slow)
    # Files with the longest tests first (e2e, then integration, then unit; a file keeps its
    # own order): under `make test`'s `-n 2 --dist loadfile --no-loadscope-reorder` the short
    # files then fill in around them instead of one worker running the longest files alone at
    # the end (xdist's own order, most tests per file first, put the one-test e2e files last).
    rank = {"e2e": 0, "integration": 1}
    first: dict[str, int] = {}
    for item in items:
        tier = next((t for t in rank if item.get_closest_marker(t) is not None), None)
        path = item.nodeid.split("::", 1)[0]
        first[path] = min(first.get(path, 2), rank.get(tier or "", 2))
    items.sort(key=lambda i: first[i.nodeid.split("::", 1)[0]])


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Building a Flower `Message` outside a runtime needs a task identity (internal API)."""
    from flwr.supercore.task_identity import TaskIdentity

    names = ("_run_id", "_node_id", "_task_id")
    saved = [getattr(TaskIdentity, n) for n in names]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield
    for name, value in zip(names, saved, strict=True):
        setattr(TaskIdentity, name, value)


SCHEMA_TOML = """\
label = "defaulted"
positive = 1
id = "applicant_id"

[features]
age = "numeric"
income = { type = "numeric", missing = "impute" }
sector = "categorical"
"""


def make_institution(seed: int, rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(21, 70, rows)
    income = rng.lognormal(8 + 0.1 * seed, 0.5, rows)
    sector = rng.choice(["retail", "education", "manufacturing"], rows)
    logit = -1.0 - 0.03 * (age - 40) - 0.5 * (np.log(income) - 8) + (sector == "retail") * 0.8
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "applicant_id": [f"a{seed}-{i}" for i in range(rows)],
            "age": age,
            "income": income.round(2),
            "sector": sector,
            "defaulted": y,
        }
    )
    frame.loc[rng.random(rows) < 0.05, "income"] = np.nan
    return frame


@pytest.fixture
def byod_dir(tmp_path: Path) -> Path:
    """A valid bring-your-own-data directory: three institutions, CSV and Parquet."""
    d = tmp_path / "byod"
    d.mkdir()
    (d / "schema.toml").write_text(SCHEMA_TOML)
    make_institution(1).to_csv(d / "bank-a.csv", index=False)
    make_institution(2).to_csv(d / "bank-b.csv", index=False)
    make_institution(3).to_parquet(d / "lender-c.parquet", index=False)
    return d


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server's URL (tests/pg_server.py); skips without the binaries."""
    from pg_server import pg_server

    yield from pg_server()
