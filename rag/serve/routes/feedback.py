"""POST /v1/feedback: a thumbs up or down (and a comment) on an answer /v1/ask gave."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from rag.errors import RagError
from rag.serve.deps import ReadCaller, ServiceDep
from rag.serve.feedback import Rating
from rag.serve.schemas import ERROR_RESPONSES, Rated

log = logging.getLogger(__name__)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(min_length=1, max_length=64, description="The `id` /v1/ask returned with the answer.")
    rating: Rating
    comment: str | None = Field(default=None, max_length=2000, description="What was right or wrong with it.")


router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERROR_RESPONSES)


@router.post("/feedback")
def feedback(body: FeedbackRequest, service: ServiceDep, caller: ReadCaller) -> Rated:
    """Rate an answer this key (and person) was given (one rating per answer; a second replaces the first).
    Kept with the question, the answer and its cited document ids, for `rag feedback export`.
    An id of a chat completion may be sent with or without its `chatcmpl-` prefix."""
    try:
        rated = service.feedback.rate(body.answer_id.removeprefix("chatcmpl-"), body.rating, body.comment,
                                      caller.owner)
    except RagError as exc:  # its message names a path on the server
        log.error("feedback not stored: %s", exc)
        raise HTTPException(503, "the rating could not be stored; the server's log says why") from None
    if rated is None:
        raise HTTPException(404, f"no answer {body.answer_id!r} to rate: send the `id` that /v1/ask returned "
                                 f"to this same key, within serve.feedback_hours "
                                 f"({service.settings.serve.feedback_hours:g}) of the answer")
    stored, replaced = rated
    return Rated(answer_id=stored.answer_id, rating=stored.rating, replaced=replaced)
