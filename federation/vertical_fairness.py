"""The fairness figures in a vertical run's `done` reply, and their checks.

The label party (the bank) holds the protected attributes and the held-out rows' labels; it
computes the figures itself (`models.fairness`, as a horizontal run computes them from the
federation's counts) and sends only them: per attribute and group, counts at the policy's
cut-offs, rates, AUC and calibration in 50-point score bands (a coarse score histogram per
group); no row, no row's group. The coordinator reads them as a possibly hostile message:
bounded in bytes, attributes, groups and names, every map keyed by the same attributes and
groups, counts that add up, rates, AUCs and calibration finite and in [0, 1], at the cut-offs
of the run's own settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from jointcredit.federation.fairness import Calibration, Cutoffs, Fairness, GroupCounts
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings

MAX_BYTES: Final = 4 * 2**20  # about 2 KiB a group: 64 groups of each of 8 attributes fit
MAX_ATTRIBUTES: Final = 8
MAX_GROUPS: Final = 64  # models.fairness.MAX_GROUPS (kept equal by a test)
MAX_NAME: Final = 128  # characters of an attribute's or a group's name
MAX_BANDS: Final = 12  # 50-point bands of 350-950, the top score in the last
SCORE_MIN, SCORE_MAX = 350, 950  # the score scale's (models.scorecard.ScoreScale)
CUTOFFS_SOURCE: Final = (
    "run settings fairness-approve / fairness-decline (the service policy's cut-offs)"
)


def cutoffs(settings: VerticalSettings) -> Cutoffs:
    return Cutoffs(
        approve=settings.fairness_approve, decline=settings.fairness_decline, source=CUTOFFS_SOURCE
    )


def encode(figures: Fairness) -> str:
    return figures.model_dump_json()


def decode(value: object, settings: VerticalSettings) -> Fairness:
    """The figures a `done` reply carries, checked; `ProtocolError` naming the problem."""
    if not isinstance(value, str):
        raise ProtocolError("fairness: not a JSON text")
    if len(value) > MAX_BYTES or len(value.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ProtocolError(f"fairness: more than {MAX_BYTES} bytes")
    try:
        figures = Fairness.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "<top>"
        raise ProtocolError(f"fairness: {where}: {first['msg']}") from exc
    check(figures, settings)
    return figures


def check(f: Fairness, settings: VerticalSettings) -> None:
    """Shape, bounds and consistency of the figures (they are rendered and gated on)."""
    attrs = f.attributes
    if not 0 < len(attrs) <= MAX_ATTRIBUTES or len(set(attrs)) != len(attrs):
        raise ProtocolError(f"fairness: 1 to {MAX_ATTRIBUTES} distinct attributes expected")
    if f.secure_sum:
        raise ProtocolError("fairness: a vertical run has no secure sum")
    if f.cutoffs != cutoffs(settings):
        raise ProtocolError("fairness: measured at other cut-offs than the run's")
    per_attribute: dict[str, dict[str, Any]] = {
        "groups": f.groups,
        "adverse_impact_ratio": f.adverse_impact_ratio,
        "equal_opportunity_difference": f.equal_opportunity_difference,
        "demographic_parity_difference": f.demographic_parity_difference,
        "auc_by_group": f.auc_by_group,
        "calibration_by_group": f.calibration_by_group,
    }
    for key, table in per_attribute.items():
        if list(table) != attrs:
            raise ProtocolError(f"fairness: {key} is not keyed by the attributes {attrs}")
    check_names(attrs, {name: list(f.groups[name]) for name in attrs})
    for name in attrs:
        groups = f.groups[name]
        for key in ("adverse_impact_ratio", "auc_by_group", "calibration_by_group"):
            if list(per_attribute[key][name]) != list(groups):
                raise ProtocolError(f"fairness: {key}[{name!r}] is not keyed by its groups")
        for group, counts in groups.items():
            _counts(counts, f"{name}/{group}")
            _unit(f.adverse_impact_ratio[name][group], f"adverse_impact_ratio {name}/{group}")
            _unit(f.auc_by_group[name][group], f"auc_by_group {name}/{group}")
            _calibration(f.calibration_by_group[name][group], f"{name}/{group}")
        _unit(f.demographic_parity_difference[name], f"demographic_parity_difference {name}")
        _unit(f.equal_opportunity_difference[name], f"equal_opportunity_difference {name}")


def check_names(attributes: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
    """The bounds the coordinator holds names and counts to: the bank checks them before
    training, the coordinator on `done`."""
    if not 0 < len(attributes) <= MAX_ATTRIBUTES or len(set(attributes)) != len(attributes):
        raise ProtocolError(f"fairness: 1 to {MAX_ATTRIBUTES} distinct attributes expected")
    for name in attributes:
        if not 0 < len(groups[name]) <= MAX_GROUPS:
            raise ProtocolError(f"fairness: {name!r}: 1 to {MAX_GROUPS} groups expected")
        for text in (name, *groups[name]):
            if not 0 < len(text) <= MAX_NAME or not text.isprintable():
                raise ProtocolError(f"fairness: a name of 1 to {MAX_NAME} printable characters")


def _calibration(c: Calibration | None, what: str) -> None:
    """Finite rates in [0, 1] (metrics.json is strict JSON), bands within the score scale."""
    if c is None:
        return
    if len(c.bands) > MAX_BANDS:
        raise ProtocolError(f"fairness: more than {MAX_BANDS} calibration bands")
    _unit(c.predicted_default_rate, f"calibration {what}")
    _unit(c.observed_default_rate, f"calibration {what}")
    ratio = c.observed_over_predicted
    if ratio is not None and not (math.isfinite(ratio) and ratio >= 0):
        raise ProtocolError(f"fairness: calibration {what}: a ratio that is not finite")
    for band in c.bands:
        low, high = band.scores
        if band.applicants < 0 or not SCORE_MIN <= low <= high <= SCORE_MAX:
            raise ProtocolError(f"fairness: calibration {what}: a band outside the score scale")
        _unit(band.predicted_default_rate, f"calibration {what}")
        _unit(band.observed_default_rate, f"calibration {what}")


def _unit(value: float | None, what: str) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ProtocolError(f"fairness: {what} is not in [0, 1]")


def _counts(c: GroupCounts, what: str) -> None:
    whole = (c.applicants, c.defaulted, c.approved, c.referred, c.declined, c.tp, c.fp, c.tn, c.fn)
    if min(whole) < 0 or c.approved + c.referred + c.declined != c.applicants:
        raise ProtocolError(f"fairness: {what}: counts that do not add up")
    if c.tp + c.fp + c.tn + c.fn != c.applicants or c.tp + c.fn != c.defaulted:
        raise ProtocolError(f"fairness: {what}: confusion counts that do not add up")
    for rate in (c.approval_rate, c.true_positive_rate, c.false_positive_rate):
        _unit(rate, f"{what} rates")
    _unit(c.repaid_approval_rate, f"{what} rates")
    if len(c.undefined) > 8 or any(len(k) + len(x) > 200 for k, x in c.undefined.items()):
        raise ProtocolError(f"fairness: {what}: undefined reasons too long or too many")
