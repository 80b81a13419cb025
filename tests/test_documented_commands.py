"""Every `jointcredit`, `flwr` and `make` command line quoted in README.md and docs/*.md is
one the real CLI accepts (tests/doc_commands.py): a renamed or removed subcommand, flag,
choice or run-config key fails here, naming the doc and line. In process, on the click tree
of each program: no command is run."""

from __future__ import annotations

from pathlib import Path

import click
import doc_commands
import pytest
import typer
from doc_commands import Quoted, cli_problems, make_targets, quoted_commands, top_level, words_of

from jointcredit.federation.settings import RunSettings

RUN_KEYS = {f.alias or name for name, f in RunSettings.model_fields.items()}


@pytest.fixture(scope="module")
def programs() -> dict[str, click.Group]:
    from flwr.cli.app import app as flwr_app

    from jointcredit.cli.main import app

    trees = {"jointcredit": typer.main.get_command(app), "flwr": typer.main.get_command(flwr_app)}
    assert all(isinstance(t, click.Group) for t in trees.values())
    return trees  # type: ignore[return-value]


@pytest.fixture(scope="module")
def quoted(programs: dict[str, click.Group]) -> list[Quoted]:
    return doc_commands.all_quoted(top_level(programs["jointcredit"]))


def _problems(programs: dict[str, click.Group], line: str) -> list[str]:
    words = words_of(line)
    return cli_problems(programs[words[0]], words, RUN_KEYS)


def test_the_docs_quote_commands(quoted: list[Quoted]) -> None:
    """The extraction finds what the docs hold (finding nothing would pass everything)."""
    assert {q.text.split()[0] for q in quoted} == {"jointcredit", "make", "flwr"}
    assert sum(q.text.startswith("jointcredit ") for q in quoted) > 150
    texts = [q.text for q in quoted]
    assert any("trust add" in t and "--public-key keys/bank-a.pub" in t for t in texts)
    assert "jointcredit simulate --finetune-epochs 0" in texts
    assert "jointcredit serve --workers 2" in texts  # inline shorthand
    assert any(t.startswith("jointcredit simulate --run-config") for t in texts)


def test_every_quoted_command_exists(
    programs: dict[str, click.Group], quoted: list[Quoted]
) -> None:
    targets = make_targets(doc_commands.ROOT / "Makefile")
    wrong: list[str] = []
    for q in quoted:
        words = words_of(q.text)
        if words[0] == "make":
            wrong += [f"{q}: no make target {w!r}" for w in words[1:2] if w not in targets]
        else:
            wrong += [f"{q}: {p}" for p in _problems(programs, q.text)]
    assert not wrong, "\n".join(wrong)


# Flags the docs name of Flower's executables: flower-supernode's, and the option RELIABILITY.md
# says flwr-clientapp lacks.
OTHER_PROGRAMS = {"--isolation", "--run-once"}


def test_every_flag_named_in_prose_exists(programs: dict[str, click.Group]) -> None:
    """A flag written alone (`--secagg-clipping-range` (8)) belongs to some command."""
    known = {*doc_commands.script_flags(), *OTHER_PROGRAMS, "--help"}
    for tree in programs.values():
        known |= doc_commands.click_flags(tree)
    named = doc_commands.all_prose_flags()
    assert len(named) > 100
    wrong = [str(q) for q in named if q.text not in known]
    assert not wrong, "flags no command has:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "jointcredit trust add --public-key k.pub --coordinator-keyy c",
            "no option --coordinator-keyy",
        ),
        ("jointcredit trust adds --trust t.json", "has no subcommand 'adds'"),
        ("jointcredit simulate --privacy dp-everything", "'dp-everything'"),
        ("jointcredit simulate --rounds two", "'two'"),
        ("jointcredit simulate --trees many", "'many'"),
        ("jointcredit simulate --learning-rate fast", "'fast'"),
        ('jointcredit simulate --run-config "rounds=2 finetune-epoch=1"', "'finetune-epoch'"),
        ("flwr run . --run-confg x=1", "no option --run-confg"),
    ],
)
def test_a_wrong_line_is_named(programs: dict[str, click.Group], line: str, problem: str) -> None:
    found = _problems(programs, line)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize(
    "line",
    [
        "jointcredit score OUT/model [--input FILE] [--language zh]",
        "jointcredit serve ... --exposure-registry registry/ --federation-key fed.key",
        "jointcredit consent add --applicant-ref --purpose exposure --id [--expires]",
        "jointcredit simulate --rounds N --privacy <mode> --learning-rate auto",
        'jointcredit simulate --run-config "key=value ..."',
        "jointcredit ...",
    ],
)
def test_placeholders_pass(programs: dict[str, click.Group], line: str) -> None:
    assert _problems(programs, line) == []


def test_lines_are_joined_split_and_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `FOO=1 jointcredit verify OUT/model | jq .`, then `link run --resume D`;\n"
        "`serve` alone is prose, `trust` too, and `simulate --help`.\n"
        "```bash\n"
        "# jointcredit in a comment\n"
        ".venv/bin/jointcredit trust add --trust t.json \\\n"
        "    --institution a  # the key\n"
        "make demo && flwr run . --stream\n"
        "```\n"
    )
    monkeypatch.setattr(doc_commands, "ROOT", tmp_path)
    commands = {"link": frozenset({"run"}), "serve": frozenset(), "simulate": frozenset()}
    assert [q.text for q in quoted_commands(doc, commands)] == [
        "jointcredit verify OUT/model",
        "jointcredit link run --resume D",
        "jointcredit simulate --help",
        "jointcredit trust add --trust t.json --institution a",
        "make demo",
        "flwr run . --stream",
    ]
