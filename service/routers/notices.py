"""A decision's adverse-action notice (service/notices.py), for the horizontal and the vertical
service alike: what it reads is the audit log, whichever model decided."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from jointcredit.service import dependencies
from jointcredit.service.auth import ApiKey
from jointcredit.service.languages import LANGUAGES
from jointcredit.service.notice_models import NoticeOut
from jointcredit.service.notices import NoticeService, notice_language
from jointcredit.service.openapi import Message, responses
from jointcredit.service.routers.decisions import ACCEPT_LANGUAGE

router = APIRouter(tags=["decisions"])
Notices = Annotated[NoticeService, Depends(dependencies.notices)]

# A tag whose primary subtag is a supported language (service/languages.py `negotiate`).
LANGUAGE_TAG = (
    "^(" + "|".join("".join(f"[{c.upper()}{c}]" for c in lang) for lang in LANGUAGES)
    + ")(-[A-Za-z0-9]{1,8})*$"
)  # fmt: skip
NOTICE_LANGUAGE = {**ACCEPT_LANGUAGE, "description": "the notice's language when `lang` names "
                   f"none (RFC 9110 weights; supported: {', '.join(LANGUAGES)}; default "
                   "English); one that accepts none of them is a 422"}  # fmt: skip
NOTICE = {
    **responses(401, 404, 422, 429),
    409: {"model": Message, "description": "the decision was approved and nobody is to review "
          "it: there is nothing adverse to give notice of"},
}  # fmt: skip


@router.get(
    "/v1/decisions/{decision_id}/notice", response_model=NoticeOut, responses=NOTICE,
    openapi_extra={"parameters": [NOTICE_LANGUAGE]},
    summary="Get the adverse-action notice of a decision",
    response_description="the notice, in the language asked for",
)  # fmt: skip
async def notice(
    decision_id: Annotated[str, Path(max_length=128)],
    request: Request,
    key: Annotated[ApiKey, Depends(dependencies.api_key)],
    notices: Notices,
    lang: Annotated[
        str | None,
        Query(max_length=64, pattern=LANGUAGE_TAG,
              description="the notice's language, a language tag such as zh-CN, zh-Hans or "
              f"en (over Accept-Language; supported: {', '.join(LANGUAGES)}); another is a 422"),
    ] = None,
) -> Any:  # fmt: skip
    """The adverse-action notice of a declined or referred decision, or of one under the
    review its applicant asked for: at most 4 principal reasons, the score and what it means,
    what the applicant can do, and where the review stands."""
    language = notice_language(lang, request.headers.get("accept-language"))
    return await notices.notice(decision_id, key.institution, key.key_id, language)
