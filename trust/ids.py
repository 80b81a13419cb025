"""What an institution id is: the one rule for every place an id comes from (a data file's
name, the trust store, API keys, provisioning kits).

Ids become file names (signing keys, kit directories), log fields and HTTP values, so they are
plain ASCII that no shell, path or terminal reads as anything but a name."""

from __future__ import annotations

import re

_INSTITUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RULE = "use letters, digits, '.', '_' or '-' (at most 128, starting with a letter or digit)"


def is_institution_id(name: str) -> bool:
    return _INSTITUTION_ID.fullmatch(name) is not None
