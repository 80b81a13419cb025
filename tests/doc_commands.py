"""The command lines the README and docs/*.md quote, and what the real CLI says about them.

Commands are taken from fenced code blocks (line continuations joined, pipes, `&&`, `;` and
comments split off, environment assignments and `.venv/bin/` dropped) and from inline code,
where a jointcredit command is often written without the program's name (`link run --resume
RUN_DIR`, `serve --workers 2`).
Each one is checked in process against the typer app's click tree: the subcommand path
resolves, every `--flag` exists on that command, and a value that is written out (not a
placeholder such as RUN_DIR, <dir>, ... or $VAR) parses with the option's own type;
`--run-config` pairs name real run-config keys.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("jointcredit", "make", "flwr")

_FENCE = re.compile(r"^\s*```")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SPLIT = re.compile(r"\s(?:\|\|?|&&|;)\s")
# Words a doc writes in place of a value: RUN_DIR, OUT/model, <dir>, $VAR, KEY=..., a.b.c.d.
_PLACEHOLDER = re.compile(r"(^[A-Z][A-Z0-9_-]*(?:[/.=].*)?$)|[<>$]|\.\.\.|^\[|\]$")
# Types whose conversion needs no file system and no network.
_CHEAP = (
    click.Choice,
    click.types.IntParamType,
    click.types.FloatParamType,
    click.types.BoolParamType,
)


@dataclass(frozen=True)
class Quoted:
    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _segments(text: str) -> list[str]:
    """The simple commands of one shell line, each without its environment assignments."""
    out = []
    # `[--a | --b]` is notation for alternatives, not a pipe.
    text = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace(" | ", " "), text)
    for part in _SPLIT.split(text):
        words = part.strip().removeprefix("$ ").split()
        while words and (_ENV.match(words[0]) or words[0] in ("nice", "-n", "5", "time", "sudo")):
            words = words[1:]
        if words:
            words[0] = words[0].rsplit("/", 1)[-1] if "/bin/" in words[0] else words[0]
            out.append(" ".join(words))
    return out


def _strip_comment(line: str) -> str:
    # A `#` that starts a word outside quotes starts a comment.
    quote = ""
    for i, ch in enumerate(line):
        if ch in "'\"" and (not quote or quote == ch):
            quote = "" if quote else ch
        elif ch == "#" and not quote and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _shorthand(span: str, commands: Mapping[str, frozenset[str]]) -> str | None:
    """Inline code such as `link run --resume RUN_DIR` or `serve --workers 2`: a jointcredit
    command written without the program's name (a command's bare name is prose)."""
    words = span.split()
    if words and words[0] == "--run-config":  # `--run-config "max-file-mb=4096"`: its keys
        return f"jointcredit simulate {span}"
    if len(words) < 2 or words[0] not in commands:
        return None
    subcommands = commands[words[0]]
    if subcommands and words[1] not in subcommands:
        return None
    if not subcommands and not any(w.startswith("--") for w in words[1:]):
        return None
    return f"jointcredit {span}"


def quoted_commands(doc: Path, commands: Mapping[str, frozenset[str]]) -> list[Quoted]:
    """Every command line of PROGRAMS quoted in one Markdown file; `commands` (jointcredit's
    top-level commands, each with its subcommands) finds the shorthand in inline code."""
    name = doc.relative_to(ROOT).as_posix()
    found: list[Quoted] = []
    lines = doc.read_text().splitlines()
    in_block, i = False, 0
    while i < len(lines):
        line, start = lines[i], i + 1
        i += 1
        if _FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            text = _strip_comment(line)
            while text.rstrip().endswith("\\") and i < len(lines):
                text = text.rstrip()[:-1] + " " + _strip_comment(lines[i])
                i += 1
            found += [Quoted(name, start, s) for s in _segments(text) if s.split()[0] in PROGRAMS]
            continue
        for span in _INLINE.findall(line):
            for text in _segments(span):
                text = _shorthand(text, commands) or text
                if text.split()[0] in PROGRAMS:
                    found.append(Quoted(name, start, text))
    return found


def prose_flags(doc: Path) -> list[Quoted]:
    """Flags named alone in inline code (`--secagg-clipping-range` (8)), outside code blocks:
    which command they belong to is in the prose, so they are checked against every command's
    flags."""
    name = doc.relative_to(ROOT).as_posix()
    found, in_block = [], False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if _FENCE.match(line):
            in_block = not in_block
        elif not in_block:
            for span in _INLINE.findall(line):
                words = words_of(span)
                if words and words[0].startswith("--"):
                    found += [Quoted(name, number, w.split("=")[0]) for w in words if w[:2] == "--"]
    return found


def all_prose_flags() -> list[Quoted]:
    return [q for doc in DOCS for q in prose_flags(doc)]


def click_flags(command: click.Command) -> set[str]:
    """Every long flag of a command and its subcommands."""
    if isinstance(command, click.Group):
        return {f for sub in command.commands.values() for f in click_flags(sub)}
    return {f for p in command.params for f in (*p.opts, *p.secondary_opts) if f[:2] == "--"}


def script_flags() -> set[str]:
    """The flags the scripts under scripts/ declare (argparse)."""
    found: set[str] = set()
    for script in (ROOT / "scripts").glob("*.py"):
        found.update(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", script.read_text()))
    return found


def all_quoted(commands: Mapping[str, frozenset[str]]) -> list[Quoted]:
    return [q for doc in DOCS for q in quoted_commands(doc, commands)]


def top_level(root: click.Group) -> dict[str, frozenset[str]]:
    """Each top-level command's name with its subcommands' (none for a command)."""
    return {
        name: frozenset(c.commands) if isinstance(c, click.Group) else frozenset()
        for name, c in root.commands.items()
    }


def words_of(text: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote in prose: plain words are enough
        words = text.split()
    out = []
    for word in words:
        # `[--input FILE]` and `--a | --b`: the brackets and bars are notation.
        for piece in word.strip("[]|").split("|"):
            if piece:
                out.append(piece)
    return out


def _placeholder(word: str) -> bool:
    return bool(_PLACEHOLDER.search(word)) or word in ("...", "…")


def _options(command: click.Command) -> dict[str, click.Parameter]:
    names: dict[str, click.Parameter] = {"--help": click.Option(["--help"], is_flag=True)}
    for param in command.params:
        for flag in (*param.opts, *param.secondary_opts):
            if flag.startswith("-"):
                names[flag] = param
    return names


def _run_config_problems(value: str, keys: set[str]) -> list[str]:
    problems = []
    for pair in value.split():
        key = pair.split("=", 1)[0]
        if "=" in pair and not _placeholder(key) and key not in ("key", "key2") and key not in keys:
            problems.append(f"--run-config names {key!r}, which is no run-config key")
    return problems


def cli_problems(root: click.Group, words: list[str], run_keys: set[str]) -> list[str]:
    """What is wrong with a quoted command line (program name first) against the program's
    click tree ([] if nothing)."""
    command: click.Command = root
    rest = list(words[1:])
    path = [words[0]]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        if _placeholder(word):
            return []  # `jointcredit ...`: no command named
        sub = command.commands.get(word)
        if sub is None:
            return [f"{' '.join(path)} has no subcommand {word!r}"]
        command, path = sub, [*path, word]
    options = _options(command)
    ctx = click.Context(command, info_name=path[-1])
    problems = []
    while rest:
        word = rest.pop(0)
        if not word.startswith("--"):
            continue
        flag, _, inline = word.partition("=")
        param = options.get(flag)
        if param is None:
            problems.append(f"{' '.join(path)} has no option {flag}")
            continue
        if isinstance(param, click.Option) and (param.is_flag or param.count):
            continue
        if inline:
            value = inline
        elif rest and not rest[0].startswith("--"):
            value = rest.pop(0)
        else:
            continue  # a flag named in prose without its value
        if _placeholder(value):
            continue
        if flag == "--run-config":
            problems += _run_config_problems(value, run_keys)
        elif isinstance(param.type, _CHEAP) or type(param.type).__name__ == "_AutoOr":
            try:
                param.type.convert(value, param, ctx)
            except click.BadParameter as exc:
                problems.append(f"{' '.join(path)} {flag} {value!r}: {exc.format_message()}")
    return problems


def make_targets(makefile: Path) -> set[str]:
    targets = set()
    for line in makefile.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets
