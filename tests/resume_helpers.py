"""The resume tests share the reliability script's checks (`scripts/reliability_resume.py`):
its trial, each institution's ledger read from its durable state, and the independent
accountant."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reliability_resume.py"


def reliability_script() -> ModuleType:
    name = "reliability_resume"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
