"""Canonical JSON: the same object always gives the same bytes, so digests and signatures over
files are stable across runs and machines."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
