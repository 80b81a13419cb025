"""`jointcredit serve --workers N`: each uvicorn worker process builds its own app (a vertical
model's too: `vertical_app_from_env`).

uvicorn starts workers from an import string, so the verified start-up arguments travel in an
environment variable. Each worker runs the same start-up checks (signature, probes, policy)
on its own; the audit log is shared safely (appends lock the database: service/audit.py,
service/sqlite.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from jointcredit.service.app import create_app
from jointcredit.service.loader import load_service
from jointcredit.service.metrics import MULTIPROC_ENV
from jointcredit.service.middleware import MAX_BODY

ENV = "JOINTCREDIT_SERVE_ARGS"


def export_args(args: dict[str, Any]) -> None:
    """Put `load_service` keyword arguments where the workers will find them; which of them
    are paths travels with them, so every path argument comes back a Path."""
    paths = sorted(k for k, v in args.items() if isinstance(v, Path))
    values = {k: str(v) if k in paths else v for k, v in args.items()}
    os.environ[ENV] = json.dumps({"paths": paths, "args": values})


def import_args() -> dict[str, Any]:
    """The arguments `export_args` put in the environment, paths as Paths."""
    raw = os.environ.get(ENV)
    if raw is None:
        raise RuntimeError(f"{ENV} is not set: start workers with `jointcredit serve --workers`")
    exported: dict[str, Any] = json.loads(raw)
    args: dict[str, Any] = exported["args"]
    for key in exported["paths"]:
        args[key] = Path(args[key])
    return args


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[Path]:
    """prometheus_client's multiprocess mode for the workers started inside: a fresh private
    directory for their metric files (unless the operator named one), removed afterwards.
    Set before any worker starts, since each picks its mode when it imports the library."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        # prometheus_client adds up every file there: ones left by an earlier run or by dead
        # workers would count again (its documentation: wipe the directory between runs).
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield Path(given)
        return
    directory = Path(tempfile.mkdtemp(prefix="jointcredit-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def app_from_env() -> FastAPI:
    """The uvicorn factory each worker calls."""
    args = import_args()
    model_dir, trust_file = args.pop("model_dir"), args.pop("trust_file")
    max_body = int(args.pop("max_body", MAX_BODY))
    return create_app(load_service(model_dir, trust_file, **args), max_body=max_body)


def vertical_app_from_env() -> FastAPI:
    """The uvicorn factory each worker of a vertical model calls."""
    # Imported here: a horizontal model's workers start without the vertical modules, so both
    # are ready about as soon as each other (tests/test_monitoring_workers.py).
    from jointcredit.service.vertical_service import create_vertical_app, load_vertical_service

    args = import_args()
    where = [args.pop(k) for k in ("model_dir", "trust_file", "kit_dir", "endpoints")]
    max_body = int(args.pop("max_body"))
    service = load_vertical_service(*where, **args)
    return create_vertical_app(service, max_body=max_body)
