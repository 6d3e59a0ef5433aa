"""The review page's decisions, checked against the session before anything is written to ``review.json``.

The page sends two kinds of change (JSON bodies of ``POST /api/decision`` and
``POST /api/ignore``):

- ``{"frame": "000012", "decision": "accept" | "reject" | null, "reason": "..."}``
- ``{"frame": "000012", "camera": "cam3", "ignored": true | false}``

Each is refused (:class:`BadDecision`, the page shows the message) unless the frame and
camera are the session's, the decision one of those allowed and the reason short text;
then it is merged into ``review.json`` under its lock (:func:`handanno.data.review_io.update_review`).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from handanno.data.review_io import FrameReview, check_decision, check_reason, update_review
from handanno.errors import HandannoError


class BadDecision(HandannoError):
    """A change the page sent that does not fit the session (unknown frame or camera, bad value)."""


def _fields(body: Any, need: set[str], optional: set[str]) -> dict:
    if not isinstance(body, dict):
        raise BadDecision("expected a JSON object")
    missing = sorted(need - set(body))
    unknown = sorted(set(body) - need - optional)
    if missing or unknown:
        raise BadDecision(", ".join([f"missing field(s) {', '.join(missing)}"] * bool(missing)
                                    + [f"unknown field(s) {', '.join(unknown)}"] * bool(unknown)))  # fmt: skip
    return body


def _known(value: Any, known: Collection[str], what: str) -> str:
    if not isinstance(value, str) or value not in known:
        raise BadDecision(f"{what} {str(value)[:80]!r} is not in this session")
    return value


def decision_change(body: Any, frames: Collection[str]) -> tuple[str, dict]:
    """Check a ``POST /api/decision`` body; return ``(frame, keywords of apply_change)``.

    Example:
        >>> decision_change({"frame": "000001", "decision": "reject", "reason": " blurred "}, {"000001"})
        ('000001', {'decision': 'reject', 'reason': 'blurred'})
    """
    d = _fields(body, {"frame", "decision"}, {"reason"})
    frame = _known(d["frame"], frames, "frame")
    where = f"frame {frame}"
    try:
        return frame, {"decision": check_decision(d["decision"], where), "reason": check_reason(d.get("reason"), where)}
    except HandannoError as exc:
        raise BadDecision(str(exc)) from exc


def ignore_change(body: Any, frames: Collection[str], cameras: Collection[str]) -> tuple[str, dict]:
    """Check a ``POST /api/ignore`` body; return ``(frame, keywords of apply_change)``.

    Example:
        >>> ignore_change({"frame": "000001", "camera": "cam2", "ignored": True}, {"000001"}, {"cam2"})
        ('000001', {'ignore': ('cam2', True)})
    """
    d = _fields(body, {"frame", "camera", "ignored"}, set())
    frame = _known(d["frame"], frames, "frame")
    camera = _known(d["camera"], cameras, "camera")
    if not isinstance(d["ignored"], bool):
        raise BadDecision(f"frame {frame} camera {camera}: 'ignored' must be true or false")
    return frame, {"ignore": (camera, d["ignored"])}


def save_change(session_root: str | os.PathLike, frame: str, change: dict) -> FrameReview:
    """Merge a checked change into ``review.json`` (atomically, under its lock); return the frame's entry."""
    return update_review(session_root, frame, **change)
