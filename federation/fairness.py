"""`fairness` in metrics.json: group fairness of the final model across the schema's protected
attributes (computed by `jointcredit.models.fairness` from the federation's summed counts).

Decisions are the policy's: a test applicant is *approved* when the final model's score is at
or above the approve cut-off, *declined* below the decline cut-off, *referred* in between. The
confusion counts are the model's as a default detector at the approve cut-off: a *positive* is a
defaulted applicant (the schema's positive label), *predicted positive* is not approved.

    attributes                      [attribute, ...]
    groups                          {attribute: {group: GroupCounts}}
    adverse_impact_ratio            {attribute: {group: approval rate / the most-approved
                                     group's}}  (the 4/5 rule: below 0.8 is adverse impact)
    demographic_parity_difference   {attribute: largest - smallest approval rate}
    equal_opportunity_difference    {attribute: largest - smallest approval rate among
                                     applicants who repaid}  (null: fewer than two groups with
                                     a repaid applicant)
    auc_by_group                    {attribute: {group: AUC | null}}
    calibration_by_group            {attribute: {group: Calibration | null}}
    cutoffs                         the approve and decline scores the decisions used

A rate or AUC that is undefined for a group (no applicant, no repaid or no defaulted applicant
in it) is null, and `groups[a][g].undefined` says why.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class GroupCounts(_Shape):
    """One group's counts on the pooled test rows of every institution, and its rates."""

    applicants: int
    defaulted: int
    approved: int
    referred: int
    declined: int
    tp: int = Field(description="defaulted and not approved")
    fp: int = Field(description="repaid and not approved")
    tn: int = Field(description="repaid and approved")
    fn: int = Field(description="defaulted and approved")
    approval_rate: float | None
    true_positive_rate: float | None = Field(description="tp / defaulted")
    false_positive_rate: float | None = Field(description="fp / repaid")
    repaid_approval_rate: float | None = Field(description="tn / repaid: equal opportunity")
    undefined: dict[str, str] = Field(
        default_factory=dict, description="metric -> why it is null for this group"
    )


class CalibrationBand(_Shape):
    scores: tuple[int, int] = Field(description="score band [from, to], both included")
    applicants: int
    predicted_default_rate: float | None
    observed_default_rate: float | None


class Calibration(_Shape):
    """Predicted (the model's PD at each applicant's score) against observed default rates."""

    predicted_default_rate: float
    observed_default_rate: float
    observed_over_predicted: float | None
    bands: list[CalibrationBand]


class Cutoffs(_Shape):
    approve: int
    decline: int
    source: str = Field(description="where the cut-offs came from")


class Fairness(_Shape):
    attributes: list[str]
    groups: dict[str, dict[str, GroupCounts]]
    adverse_impact_ratio: dict[str, dict[str, float | None]]
    equal_opportunity_difference: dict[str, float | None]
    demographic_parity_difference: dict[str, float | None]
    auc_by_group: dict[str, dict[str, float | None]]
    calibration_by_group: dict[str, dict[str, Calibration | None]]
    cutoffs: Cutoffs
    secure_sum: bool = Field(
        False, description="the counts were summed by SecAgg+ (the coordinator saw only sums)"
    )

    def worst(self) -> dict[str, float | None]:
        """The least fair figure of each kind over every attribute (a sweep's columns)."""

        def pick(values: list[float | None], best: bool) -> float | None:
            present = [v for v in values if v is not None]
            return (min(present) if best else max(present)) if present else None

        return {
            "min_adverse_impact_ratio": pick(
                [v for r in self.adverse_impact_ratio.values() for v in r.values()], True
            ),
            "max_demographic_parity_difference": pick(
                list(self.demographic_parity_difference.values()), False
            ),
            "max_equal_opportunity_difference": pick(
                list(self.equal_opportunity_difference.values()), False
            ),
            "min_group_auc": pick(
                [v for r in self.auc_by_group.values() for v in r.values()], True
            ),
        }
