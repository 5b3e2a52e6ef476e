"""Why a record could not be scored: a stable reason code plus a human message.

A failed record still gets score 0.0 (the original evaluator's contract); the reason is what lets
users tell a real low score from a failure, and count failures by kind. Standard library only.
"""

from __future__ import annotations

IMAGE_MISSING = "image_missing"
IMAGE_WRONG_TYPE = "image_wrong_type"
IMAGE_NOT_FOUND = "image_not_found"
IMAGE_UNREADABLE = "image_unreadable"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_UNDECODABLE = "image_undecodable"
# Remote reads: the deadline passed, or transient failures (HTTP 429/5xx, resets) outlasted the retries.
# Both may pass on a later try, unlike the others.
IMAGE_TIMEOUT = "image_timeout"
IMAGE_UNAVAILABLE = "image_unavailable"
# Outside `allowed_image_prefixes`, a redirect off http(s), or an address never fetched (cloud metadata).
IMAGE_NOT_ALLOWED = "image_not_allowed"
TEXT_MISSING = "text_missing"
TEXT_WRONG_TYPE = "text_wrong_type"
TEXT_EMPTY = "text_empty"
# Not the input's fault, but the same contract: the model gave NaN or infinity (e.g. fp16 overflow).
SCORE_NOT_FINITE = "score_not_finite"
# The model raised on this record even when it ran alone (its batch was retried in halves).
INFERENCE_FAILED = "inference_failed"

REASON_CODES = (
    IMAGE_MISSING,
    IMAGE_WRONG_TYPE,
    IMAGE_NOT_FOUND,
    IMAGE_UNREADABLE,
    IMAGE_TOO_LARGE,
    IMAGE_UNDECODABLE,
    IMAGE_TIMEOUT,
    IMAGE_UNAVAILABLE,
    IMAGE_NOT_ALLOWED,
    TEXT_MISSING,
    TEXT_WRONG_TYPE,
    TEXT_EMPTY,
    SCORE_NOT_FINITE,
    INFERENCE_FAILED,
)
# Failures that may pass when the same record is tried again later.
TRANSIENT_CODES = (IMAGE_TIMEOUT, IMAGE_UNAVAILABLE)


class InputError(Exception):
    """A record's image or text cannot be scored: its `reason` (one of `REASON_CODES`) and `message`; `str()`
    gives `"<reason>: <message>"`."""

    def __init__(self, reason: str, message: str):
        assert reason in REASON_CODES, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none), for one-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
