"""Every module imports only what ARCHITECTURE.md's "Parts" table says its part may import
(the "may import" column, read from the document itself, so the two cannot drift apart):
e.g. `deploy` never imports `client` or `server` (it starts the processes that load the app),
the service never imports training code, `client` and `server` never import each other.
Imports under `TYPE_CHECKING` and inside functions count too: a dependency is a dependency."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "jointcredit"
EVERYTHING = "everything"


def allowed_imports(architecture: str) -> dict[str, set[str]]:
    """Part -> the `jointcredit.` module prefixes it may import besides its own part, from
    the table's rows `| \\`part/\\` | \\`jointcredit.part\\` | job | may import |`."""
    allowed: dict[str, set[str]] = {}
    for line in architecture.splitlines():
        row = re.match(r"\| `(\w+)/` \| `jointcredit\.\1` \|", line)
        if row is None:
            continue
        may = line.rstrip().rstrip("|").rsplit("|", 1)[1].strip()
        may = re.sub(r"\([^)]*\)", "", may)  # "(never `client`, ...)": commentary, not a grant
        if may == EVERYTHING:
            allowed[row.group(1)] = {EVERYTHING}
        elif may == "nothing of ours":
            allowed[row.group(1)] = set()
        else:
            names = set(re.findall(r"`([\w.]+)`", may))
            if not names:
                raise ValueError(f"cannot read the 'may import' column of: {line[:80]}")
            allowed[row.group(1)] = names
    return allowed


def _imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every `jointcredit.` module `path` (module `module`) imports,
    relative imports resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith(f"{PACKAGE}.")]


def _grants(name: str, part: str, allowed: set[str]) -> bool:
    target = name.removeprefix(f"{PACKAGE}.")
    if EVERYTHING in allowed or target.split(".")[0] == part:
        return True
    return any(target == a or target.startswith(f"{a}.") for a in allowed)


def violations(root: Path, allowed: dict[str, set[str]]) -> list[str]:
    """Every import under `root/<part>/` that the table does not grant its part."""
    found: list[str] = []
    for part, grants in sorted(allowed.items()):
        for path in sorted((root / part).rglob("*.py")):
            relative = path.relative_to(root / part).with_suffix("").parts
            module = ".".join((PACKAGE, part, *relative))
            for line, name in _imported(path, module):
                if not _grants(name, part, grants):
                    where = path.relative_to(root)
                    found.append(f"{where}:{line} imports {name} ({part} may import: {grants})")
    return found


def _table() -> dict[str, set[str]]:
    return allowed_imports((ROOT / "ARCHITECTURE.md").read_text())


def test_the_table_lists_every_part() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(_table()) == set(tool["package-dir"].values())
    assert _table()["deploy"] == {"trust", "federation"}
    assert _table()["data"] == {"trust.ids"}  # a module, not the whole part
    assert _table()["service"] == {"data", "models", "trust"}


def test_every_import_follows_the_table() -> None:
    assert violations(ROOT, _table()) == []


def test_the_check_finds_a_forbidden_import(tmp_path: Path) -> None:
    """deploy -> client (absolute, lazy, under TYPE_CHECKING), data -> trust beyond `ids`,
    and a relative import climbing out of its part are each found; an allowed one is not."""
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "ok.py").write_text("from jointcredit.federation.session_socket import SOCKET_ENV\n")
    (deploy / "host.py").write_text("from jointcredit.client.vertical_channel import forward\n")
    (deploy / "lazy.py").write_text("def f():\n    import jointcredit.server.app\n")
    (deploy / "typing_only.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from jointcredit.client.vertical_app import Request\n"
    )
    (deploy / "climb.py").write_text("from ..client import vertical_host\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "ids.py").write_text("from jointcredit.trust.ids import RULE\n")
    (data / "keys.py").write_text("from jointcredit.trust import keys\n")
    found = violations(tmp_path, _table() | {"data": {"trust.ids"}})
    assert [f.split(" (")[0] for f in found] == [
        "data/keys.py:1 imports jointcredit.trust.keys",
        "deploy/climb.py:1 imports jointcredit.client.vertical_host",
        "deploy/host.py:1 imports jointcredit.client.vertical_channel.forward",
        "deploy/lazy.py:2 imports jointcredit.server.app",
        "deploy/typing_only.py:3 imports jointcredit.client.vertical_app.Request",
    ]


def test_the_table_is_read_as_written() -> None:
    row = "| `x/` | `jointcredit.x` | a job (with `y` in it) | `a`, `b.c` (never `d`) |"
    assert allowed_imports(row) == {"x": {"a", "b.c"}}
    assert allowed_imports(row.replace("`a`, `b.c` (never `d`)", "everything")) == {
        "x": {EVERYTHING}
    }
