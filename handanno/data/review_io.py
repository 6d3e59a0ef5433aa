"""``review.json``: a person's decisions on a session's fits (``handanno review``), read and written safely.

Format (DESIGN.md, "The session folder")::

    {"version": 1,
     "frames": {"000012": {"decision": "reject",          # "accept" | "reject" | null (undecided)
                           "reason": "thumb tip on the index",  # "" when none was given
                           "time": "2025-01-31T12:00:05Z",      # UTC, ISO 8601, last change
                           "ignored_views": ["cam3"]}}}         # views the fit must leave out

A frame without an entry is undecided with no ignored view. The file lives in the session
root; it is written atomically (temp file + rename) under an ``flock`` on
``SESSION/.review.lock``, and each change is merged into what the file holds at that moment
(one frame's decision, or one view's ignore flag), so two writers at once (two browser tabs,
two servers) lose nothing.

The readers here are pure functions of the session folder: ``handanno export`` keeps the
frames :meth:`Review.keeps` keeps, ``handanno fit`` treats :func:`ignored_views` as views
without the hand, ``handanno bootstrap`` trains on the frames export keeps. This module sits
in the data layer so that every stage can read the file; the web page is
:mod:`handanno.review`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from handanno.data.files_io import atomic_write_bytes
from handanno.errors import HandannoError

REVIEW_FILE = "review.json"
REVIEW_LOCK = ".review.lock"
REVIEW_VERSION = 1
DECISIONS = ("accept", "reject")
MAX_REASON_CHARS = 500
_NAME = re.compile(r"[^/\\\x00-\x1f]{1,200}")  # a frame stem or camera name: no path separator, no control char
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class FrameReview:
    """One frame's entry of ``review.json``.

    Attributes:
        decision: ``"accept"``, ``"reject"`` or None (no decision yet).
        reason: why, as the reviewer wrote it ("" for none), at most :data:`MAX_REASON_CHARS`.
        time: when the entry last changed, UTC ISO 8601 (``"2025-01-31T12:00:05Z"``), or None.
        ignored_views: cameras whose view the fit leaves out, sorted.
    """

    decision: str | None = None
    reason: str = ""
    time: str | None = None
    ignored_views: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """No decision and no ignored view: the entry says nothing."""
        return self.decision is None and not self.ignored_views

    def to_json(self) -> dict:
        """The entry as stored."""
        return {"decision": self.decision, "reason": self.reason, "time": self.time,
                "ignored_views": list(self.ignored_views)}  # fmt: skip


@dataclass(frozen=True)
class Review:
    """All the decisions of a session: ``frames`` maps a frame stem to its :class:`FrameReview`."""

    frames: Mapping[str, FrameReview]

    def get(self, frame: str) -> FrameReview:
        """The frame's entry (an empty one when it has none)."""
        return self.frames.get(frame, FrameReview())

    def keeps(self, frame: str, accepted_by_thresholds: bool) -> bool:
        """Whether the frame's fit goes into the labels: the reviewer's decision, else the thresholds'.

        Example:
            >>> r = Review({"a": FrameReview("reject"), "b": FrameReview("accept")})
            >>> [r.keeps("a", True), r.keeps("b", False), r.keeps("c", True), r.keeps("c", False)]
            [False, True, True, False]
        """
        decision = self.get(frame).decision
        return accepted_by_thresholds if decision is None else decision == "accept"

    def to_json(self) -> dict:
        """The whole file's content, frames in sorted order."""
        return {"version": REVIEW_VERSION,
                "frames": {f: e.to_json() for f, e in sorted(self.frames.items()) if not e.empty}}  # fmt: skip


def review_path(session_root: str | os.PathLike) -> Path:
    """``SESSION/review.json``."""
    return Path(session_root) / REVIEW_FILE


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second with a ``Z`` (``"2025-01-31T12:00:05Z"``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_name(name: Any, what: str, where: str) -> str:
    """A frame stem or camera name as stored: a string without path separators or control characters.

    Raises:
        HandannoError: naming ``where`` and ``what``.

    Example:
        >>> check_name("cam0", "camera", "review.json")
        'cam0'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise HandannoError(f"{where}: {what} {name!r} is not a valid name (1-200 characters, no '/' or '\\\\')")
    return name


def check_reason(reason: Any, where: str) -> str:
    """A reason as stored: a string of at most :data:`MAX_REASON_CHARS` characters without control characters.

    Surrounding white space is dropped; None is "".

    Example:
        >>> check_reason("  thumb wrong ", "review.json")
        'thumb wrong'
    """
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise HandannoError(f"{where}: the reason must be text, got {type(reason).__name__}")
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise HandannoError(f"{where}: the reason has {len(reason)} characters, at most {MAX_REASON_CHARS} allowed")
    if _CONTROL.search(reason):
        raise HandannoError(f"{where}: the reason holds control characters")
    return reason


def check_decision(decision: Any, where: str) -> str | None:
    """``"accept"``, ``"reject"`` or None; anything else is an error naming ``where``."""
    if decision is not None and decision not in DECISIONS:
        raise HandannoError(f"{where}: decision {decision!r} is not one of accept, reject (or null: undecided)")
    return decision


def parse_review(data: Any, where: str = REVIEW_FILE) -> Review:
    """Check the content of ``review.json`` (see the module docstring) and build a :class:`Review`.

    Raises:
        HandannoError: naming ``where``, the frame and the field at fault.

    Example:
        >>> r = parse_review({"version": 1, "frames": {"000001": {"decision": "reject", "reason": "blurred",
        ...                   "time": "2025-01-31T12:00:05Z", "ignored_views": ["cam2"]}}})
        >>> r.get("000001").decision, r.get("000001").ignored_views, r.get("000002").decision
        ('reject', ('cam2',), None)
    """
    if not isinstance(data, dict) or not isinstance(data.get("frames", {}), dict):
        raise HandannoError(f"{where}: expected {{\"version\": 1, \"frames\": {{frame: entry}}}}; fix or delete it")
    version = data.get("version", REVIEW_VERSION)
    if version != REVIEW_VERSION:
        raise HandannoError(f"{where}: version {version!r}; this handanno reads version {REVIEW_VERSION}")
    frames: dict[str, FrameReview] = {}
    for frame, entry in data.get("frames", {}).items():
        at = f"{where}, frame {frame!r}"
        check_name(frame, "frame", where)
        if not isinstance(entry, dict):
            raise HandannoError(f"{at}: an entry must be an object with decision, reason, time, ignored_views")
        unknown = sorted(set(entry) - {"decision", "reason", "time", "ignored_views"})
        if unknown:
            raise HandannoError(f"{at}: unknown field(s) {', '.join(unknown)}")
        views = entry.get("ignored_views", [])
        if not isinstance(views, list):
            raise HandannoError(f"{at}: ignored_views must be a list of camera names")
        time = entry.get("time")
        if time is not None and not isinstance(time, str):
            raise HandannoError(f"{at}: time must be an ISO 8601 string")
        frames[frame] = FrameReview(
            decision=check_decision(entry.get("decision"), at),
            reason=check_reason(entry.get("reason"), at),
            time=time,
            ignored_views=tuple(sorted({check_name(v, "camera", at) for v in views})),
        )
    return Review(frames)


def read_review(session_root: str | os.PathLike) -> Review:
    """The session's ``review.json``; no file is an empty review.

    Raises:
        HandannoError: the file is not JSON or not a valid review (the message names it).
    """
    path = review_path(session_root)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return Review({})
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HandannoError(f"{path}: not valid JSON ({exc}); fix it, or delete it to drop the review") from exc
    return parse_review(data, str(path))


_KEEP = object()  # apply_change: leave this field as it is


def apply_change(
    review: Review, frame: str, decision: Any = _KEEP, reason: Any = _KEEP,
    ignore: tuple[str, bool] | None = None, time: str | None = None,
) -> Review:
    """A new :class:`Review` with one change to one frame (pure; fields not given stay as they are).

    Args:
        review: the review now.
        frame: the frame stem.
        decision: ``"accept"``, ``"reject"`` or None (undecided); not given: unchanged.
        reason: the reason ("" or None: none); not given: unchanged, but a new decision without a
            reason clears the old reason.
        ignore: ``(camera, True)`` adds the camera to the frame's ignored views, ``(camera, False)``
            takes it out.
        time: the entry's new time (default: now, :func:`utc_now`).

    Example:
        >>> r = apply_change(Review({}), "000001", ignore=("cam1", True), time="T")
        >>> r = apply_change(r, "000001", decision="reject", reason="blurred", time="T2")
        >>> r.get("000001")
        FrameReview(decision='reject', reason='blurred', time='T2', ignored_views=('cam1',))
    """
    where = f"{REVIEW_FILE} change of frame {frame!r}"
    check_name(frame, "frame", where)
    old = review.get(frame)
    new = old
    if decision is not _KEEP:
        new = replace(new, decision=check_decision(decision, where), reason="")
    if reason is not _KEEP:
        new = replace(new, reason=check_reason(reason, where))
    if ignore is not None:
        cam, on = ignore
        check_name(cam, "camera", where)
        views = set(new.ignored_views) | {cam} if on else set(new.ignored_views) - {cam}
        new = replace(new, ignored_views=tuple(sorted(views)))
    new = replace(new, time=time or utc_now())
    frames = dict(review.frames)
    if new.empty:
        frames.pop(frame, None)
    else:
        frames[frame] = new
    return Review(frames)


@contextlib.contextmanager
def review_lock(session_root: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive ``flock`` on ``SESSION/.review.lock`` (waits for the holder; review writes are short).

    Each call opens the lock file anew, so threads of one process exclude each other too.
    """
    fd = os.open(Path(session_root) / REVIEW_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def update_review(session_root: str | os.PathLike, frame: str, **change: Any) -> FrameReview:
    """Merge one change (:func:`apply_change`'s keywords) into ``review.json`` under the lock; return the entry.

    The file is read, changed and written atomically while the lock is held, so concurrent
    writers (threads or processes) each see the others' changes and none is lost.
    """
    with review_lock(session_root):
        review = apply_change(read_review(session_root), frame, **change)
        text = json.dumps(review.to_json(), indent=1, ensure_ascii=False) + "\n"
        atomic_write_bytes(review_path(session_root), text.encode())
    return review.get(frame)


def rejected_frames(session_root: str | os.PathLike) -> set[str]:
    """Frames the reviewer rejected."""
    return {f for f, e in read_review(session_root).frames.items() if e.decision == "reject"}


def reviewer_accepted_frames(session_root: str | os.PathLike) -> set[str]:
    """Frames the reviewer accepted (whatever the thresholds said)."""
    return {f for f, e in read_review(session_root).frames.items() if e.decision == "accept"}


def ignored_views(session_root: str | os.PathLike) -> dict[str, set[str]]:
    """``{frame: {camera}}``: the views the reviewer told the fit to leave out (frames with none are absent)."""
    return {f: set(e.ignored_views) for f, e in read_review(session_root).frames.items() if e.ignored_views}
