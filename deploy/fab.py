"""The app directory `flwr run` packs into a FAB, staged without what .gitignore excludes.

`flwr run APP` walks every file under APP before it applies .gitignore (Flower's
`collect_files` resolves each path), so a checkout with its virtualenv inside spends seconds
per run on tens of thousands of files the FAB never contains. `staged_app` walks the same
tree but skips the directories .gitignore excludes whole, copies the files that survive
Flower's own publish filter into a temporary directory and hands that to `flwr run`: the
FAB it builds there is byte for byte the one it would have built from APP
(tests/test_deploy_fab.py), Flower's include/exclude rules untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.cli.utils import build_pathspec, filter_paths_for_publish, load_gitignore_patterns

GITIGNORE = ".gitignore"


def app_files(root: Path) -> dict[str, Path]:
    """What Flower's `collect_files(root)` then `filter_paths_for_publish` keep, without
    entering directories .gitignore excludes entirely (a pattern that matches the directory
    itself, e.g. `.venv/`). With a negated pattern (`!keep`) nothing is pruned: git's rules
    for re-including below an excluded directory are not worth reimplementing here."""
    root = root.expanduser().resolve()
    patterns = load_gitignore_patterns(root / GITIGNORE)
    prune = build_pathspec(patterns) if not any(p.startswith("!") for p in patterns) else None
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        if prune is not None:
            prefix = "" if rel_dir == "." else f"{rel_dir}/"
            dirnames[:] = [d for d in dirnames if not prune.match_file(f"{prefix}{d}/")]
        for name in filenames:
            path = here / name
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                continue  # as Flower's collect_files: no symlinks, nothing outside the app
            found[path.relative_to(root).as_posix()] = path
    kept = filter_paths_for_publish(found)
    return {rel: path for rel, path in kept.items() if isinstance(path, Path)}


@contextmanager
def staged_app(root: Path) -> Iterator[Path]:
    """A temporary copy of the app's publishable files (and its .gitignore), removed after."""
    files = app_files(root)
    with tempfile.TemporaryDirectory(prefix="jointcredit-app-") as tmp:
        staged = Path(tmp)
        ignore = root.expanduser().resolve() / GITIGNORE
        if ignore.is_file():
            files.setdefault(GITIGNORE, ignore)
        for rel, path in files.items():
            target = staged / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        yield staged
