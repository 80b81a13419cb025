"""The adverse-action notice's body (`GET /v1/decisions/{id}/notice`, service/notices.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from jointcredit.service.languages import Language


class NoticeReason(BaseModel):
    rank: int = Field(description="1 = the principal reason")
    code: str
    text: str
    kind: Literal["policy", "model"]
    rule: str | None = Field(
        None, description="the policy rule that gave this reason (a policy reason's code)"
    )
    decided: bool = Field(description="this rule itself declined or referred the application")
    feature: str | None = None
    contribution: float | None = Field(
        None, description="log-odds this feature added toward default vs the average applicant"
    )


class ScoreMeaning(BaseModel):
    score: int = Field(description="350-950; higher: lower estimated risk of default")
    band_min: int = Field(description="the lowest score of the band this score is in")
    band_max: int = Field(description="the highest score of that band")
    text: str = Field(description="what the score means, in plain words")


class Option(BaseModel):
    action: Literal["manual_review", "correct_data"]
    text: str


class ReviewStage(BaseModel):
    stage: Literal["received", "scored", "under_review", "decided"]
    at: str


class ReviewStatus(BaseModel):
    requested_by_applicant: bool = Field(
        description="the applicant asked for a person to decide (`human_review_requested`)"
    )
    status: Literal["decided", "under_review"]
    final_decision: Literal["approve", "decline"] | None = Field(
        None, description="a reviewer's decision, or the automated one when nobody reviews it"
    )
    reviewed: bool = Field(description="a loan officer has decided")
    text: str
    history: list[ReviewStage]


class NoticeOut(BaseModel):
    """What an applicant is told about a decision against them (ECOA/Reg B adverse-action
    notice; PIPL Art. 24 explanation), in one language."""

    decision_id: str
    language: Language
    decision: Literal["decline", "refer", "approve"] = Field(
        description="the automated decision (`approve` only when a person is to decide)"
    )
    decided_by: list[str] = Field(
        description="the policy rules that declined or referred the application; empty: the "
        "model's score and the cut-offs decided"
    )
    principal_reasons: list[NoticeReason] = Field(max_length=4)
    score: ScoreMeaning | None = Field(
        description="null only when not scored: a vertical model's feature party gave no "
        "routing for the applicant (the principal reasons name it)"
    )
    human_review: str | None = Field(
        None, description="said when the applicant asked for a person to decide"
    )
    options: list[Option] = Field(description="what the applicant can do")
    review: ReviewStatus
    created_at: str
