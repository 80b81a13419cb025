"""`jointcredit serve --workers N`: each uvicorn worker process builds its own app.

uvicorn starts workers from an import string, so the verified start-up arguments travel in an
environment variable. Each worker runs the same start-up checks (signature, probes, policy)
on its own; the audit log is shared safely (appends lock the database: service/audit.py,
service/sqlite.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from jointcredit.service.app import create_app
from jointcredit.service.loader import load_service
from jointcredit.service.middleware import MAX_BODY

ENV = "JOINTCREDIT_SERVE_ARGS"
_PATHS = ("model_dir", "trust_file", "policy_file", "api_keys", "exposure_registry",
          "federation_key")  # fmt: skip


def export_args(args: dict[str, Any]) -> None:
    """Put `load_service` keyword arguments where the workers will find them."""
    os.environ[ENV] = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in args.items()})


def app_from_env() -> FastAPI:
    """The uvicorn factory each worker calls."""
    raw = os.environ.get(ENV)
    if raw is None:
        raise RuntimeError(f"{ENV} is not set: start workers with `jointcredit serve --workers`")
    args: dict[str, Any] = json.loads(raw)
    for key in _PATHS:
        if args.get(key) is not None:
            args[key] = Path(args[key])
    model_dir, trust_file = args.pop("model_dir"), args.pop("trust_file")
    max_body = int(args.pop("max_body", MAX_BODY))
    return create_app(load_service(model_dir, trust_file, **args), max_body=max_body)
