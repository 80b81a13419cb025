"""The field types every request body is built from: strict, bounded, printable.

A number is a JSON number, an integer a JSON integer, a text a JSON string (never coerced: no
`true` for 1, no `" 7e4 "` for 70,000). Integers stay within what every JSON reader holds
exactly (|n| < 2**53, RFC 7493), so nothing past validation meets an integer it cannot store or
serialise. Texts are bounded in length and hold no control or invisible formatting characters;
a lender is named by an institution id (trust/store.py's rule).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

# Integers every JSON reader holds exactly (RFC 7493, I-JSON).
SAFE_INT = 2**53 - 1


def _whole(value: float) -> int:
    if value.is_integer():
        return int(value)
    raise PydanticCustomError("int_from_float", "Input should be an integer")


def integer_branches(lo: int = -SAFE_INT, hi: int = SAFE_INT) -> tuple[Any, Any]:
    """A JSON integer in [lo, hi] as two strict union branches: an integer, or a whole number
    written with a fraction or exponent (`60.0`, `1e3`: JSON Schema's integers too), read as
    an int. Never a boolean or a string. Only the rare second form runs Python."""
    bounds = Field(ge=lo, le=hi)
    return (
        Annotated[int, Strict(), bounds],
        Annotated[float, Strict(), bounds, AfterValidator(_whole)],
    )


def integer(lo: int = -SAFE_INT, hi: int = SAFE_INT) -> Any:
    """`integer_branches` as one type, documented as a JSON Schema integer."""
    whole, written = integer_branches(lo, hi)
    return Annotated[
        whole | written,
        Field(union_mode="left_to_right"),
        WithJsonSchema({"type": "integer", "minimum": lo, "maximum": hi}),
    ]


# Text without control characters (C0, DEL, C1) or invisible formatting ones (zero-width,
# bidirectional overrides and isolates, BOM), which could hide or reorder what a reader sees.
_INVISIBLE = r"\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
TEXT = rf"^[^\x00-\x1f{_INVISIBLE}]*$"
# A free note may also hold tabs and line breaks.
NOTE = rf"^[^\x00-\x08\x0b\x0c\x0e-\x1f{_INVISIBLE}]*$"
TEXT_ERROR = "must not contain control characters or invisible formatting characters"


def text(max_length: int, *, min_length: int = 0, pattern: str = TEXT) -> Any:
    """A strict JSON string of at most `max_length` characters without control characters."""
    return Annotated[
        str, Strict(), Field(min_length=min_length, max_length=max_length, pattern=pattern)
    ]


# A lender, named as an institution id: trust's rule (`check_institution_id`) as a JSON Schema
# pattern (tests/attacks/test_hostile_input.py checks that the two agree).
INSTITUTION_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Institution = Annotated[str, Strict(), Field(pattern=INSTITUTION_ID)]
