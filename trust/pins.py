"""The coordinator keys this user has seen created: the default pin for every tool that loads
a signed model (`verify`, `serve`, `score`, `decide`), like SSH's known_hosts.

A trust store names its federation and its coordinator key, and its signature proves only
that whoever holds that key wrote it: anyone who can write a run's directory can re-sign a
changed model with a new key and put a matching new trust.json beside it. So the coordinator
key id is recorded when a federation's root is created (`create_key_set`, `trust init`,
`provision`), in `$JOINTCREDIT_HOME/pins.json` (default `~/.jointcredit/pins.json`, 0600),
outside any run's directory; the tools then expect that key for that federation's name. A
trust store whose federation has no pin is refused unless the caller pins a key id itself or
opts out explicitly (`--trust-any-coordinator`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jointcredit.trust.errors import TrustError
from jointcredit.trust.files import locked, replace_file

HOME_ENV = "JOINTCREDIT_HOME"
PINS = "pins.json"


def pins_file() -> Path:
    home = os.environ.get(HOME_ENV)
    return (Path(home) if home else Path.home() / ".jointcredit") / PINS


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise TrustError(f"{path}: not a pins file ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise TrustError(f"{path}: not a pins file (expected federation -> key id)")
    return data


def record_pin(federation: str, key_id: str) -> None:
    """Pin `federation` to its coordinator key. Re-creating a federation under the same name
    on this machine re-pins it: models signed by its old coordinator are then refused."""
    path = pins_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(path):
        pins = _read(path)
        pins[federation] = key_id
        replace_file(path, (json.dumps(pins, indent=1, sort_keys=True) + "\n").encode())


def pinned_key(federation: str) -> str | None:
    """The coordinator key id pinned for `federation`, if any."""
    return _read(pins_file()).get(federation)


def federation_of(trust_file: Path) -> str:
    """The federation name a trust store claims (unverified: only to look its pin up)."""
    try:
        data = json.loads(trust_file.read_bytes())
        name = data["federation"]
    except FileNotFoundError as exc:
        raise TrustError(f"{trust_file}: trust store not found") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustError(f"{trust_file}: not a trust store") from exc
    if not isinstance(name, str):
        raise TrustError(f"{trust_file}: not a trust store")
    return name


def expected_key(
    trust_file: Path, *, key_id: str | None = None, trust_any: bool = False
) -> str | None:
    """The coordinator key id to require of `trust_file`: the caller's `key_id`, else None
    with `trust_any` (no pin at all), else the recorded pin for its federation."""
    if key_id is not None:
        return key_id
    if trust_any:
        return None
    federation = federation_of(trust_file)
    recorded = pinned_key(federation)
    if recorded is not None:
        return recorded
    raise TrustError(
        f"{trust_file}: no pinned coordinator key for federation {federation!r} in "
        f"{pins_file()}: pass --coordinator-key-id with the key id you expect (the run "
        "printed it; it is in OUT/metrics.json, security.coordinator_key_id), or "
        "--trust-any-coordinator to accept whatever key this trust store names (unsafe: "
        "anyone who can write it can re-sign a model)"
    )
