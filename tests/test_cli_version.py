"""`jointcredit --version`: the package's and Flower's versions, before any command runs."""

from __future__ import annotations

from importlib.metadata import version

import flwr
from typer.testing import CliRunner

from jointcredit.cli.main import app


def test_version_names_the_package_and_flower() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip() == f"jointcredit {version('jointcredit')} (Flower {flwr.__version__})"
    )
    # A command still runs with the option defined on the group.
    assert CliRunner().invoke(app, ["config", "--help"]).exit_code == 0
