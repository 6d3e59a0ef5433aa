"""Frame statuses and quality figures for the review page, from ``fits/<frame>.json`` and ``review.json``.

A frame's status is the reviewer's decision when there is one, else what the fit's
acceptance thresholds said (:mod:`handanno.annotate.quality`), else "not fitted":

============================  =================================================================
``accepted``                  the fit passed the thresholds; no reviewer decision
``rejected``                  the fit failed a threshold (its ``reasons`` say which)
``reviewer-accepted``         the reviewer accepted it (exported whatever the thresholds said)
``reviewer-rejected``         the reviewer rejected it (never exported, not trained on)
``not-fitted``                no fit record (or one that cannot be read)
============================  =================================================================
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from handanno.annotate.quality import frame_summary
from handanno.annotate.session_io import read_fit
from handanno.data.review_io import FrameReview
from handanno.errors import HandannoError

STATUSES = ("accepted", "rejected", "reviewer-accepted", "reviewer-rejected", "not-fitted")


def frame_status(accepted_by_thresholds: bool | None, decision: str | None) -> str:
    """One of :data:`STATUSES`; ``accepted_by_thresholds`` None means the frame has no fit.

    Example:
        >>> [frame_status(True, None), frame_status(False, None), frame_status(None, None),
        ...  frame_status(False, "accept"), frame_status(True, "reject")]
        ['accepted', 'rejected', 'not-fitted', 'reviewer-accepted', 'reviewer-rejected']
    """
    if decision == "accept":
        return "reviewer-accepted"
    if decision == "reject":
        return "reviewer-rejected"
    if accepted_by_thresholds is None:
        return "not-fitted"
    return "accepted" if accepted_by_thresholds else "rejected"


def quality_figures(quality: dict) -> dict:
    """The figures the page shows and sorts by, from a fit's ``quality`` record.

    Returns:
        :func:`handanno.annotate.quality.frame_summary`'s keys plus ``worst_reproj_err_px``
        (the largest per-view median error, px) and ``min_mask_iou`` (the smallest per-view
        IoU); None where no view has the value.

    Example:
        >>> q = quality_figures({"reproj_err_px": {"a": 1.0, "b": 3.0, "c": None}, "mask_iou": {"a": 0.9, "b": 0.7},
        ...                      "accepted": False, "reasons": ["x"]})
        >>> q["worst_reproj_err_px"], q["min_mask_iou"], q["median_reproj_err_px"]
        (3.0, 0.7, 2.0)
    """
    errs = [v for v in (quality.get("reproj_err_px") or {}).values() if v is not None]
    ious = [v for v in (quality.get("mask_iou") or {}).values() if v is not None]
    return {**frame_summary(quality), "worst_reproj_err_px": max(errs) if errs else None,
            "min_mask_iou": min(ious) if ious else None}  # fmt: skip


def frame_row(frame: str, fit: dict | None, fit_error: str | None, review: FrameReview) -> dict:
    """One line of the frame list: status, decision, the figures and the views the reviewer ignores."""
    quality = (fit or {}).get("quality") or {}
    accepted = None if fit is None else bool(quality.get("accepted"))
    figures = quality_figures(quality) if fit is not None else {}
    return {"frame": frame, "status": frame_status(accepted, review.decision), "fitted": fit is not None,
            "fit_error": fit_error, "accepted": accepted, "decision": review.decision, "reason": review.reason,
            "time": review.time, "ignored_views": list(review.ignored_views),
            **{k: figures.get(k) for k in ("median_reproj_err_px", "worst_reproj_err_px", "median_mask_iou",
                                           "min_mask_iou", "views", "triangulation_gap_mm")},
            "reasons": list(quality.get("reasons", []))}  # fmt: skip


@dataclass(frozen=True)
class FitEntry:
    """A fit file as last read: ``record`` (None: no file, or ``error`` says why it cannot be read)."""

    stamp: tuple[int, int] | None  # (mtime_ns, size) of the file, None when there is none
    record: dict | None
    error: str | None


class FitReader:
    """Reads ``fits/<frame>.json`` again only when the file changed (its mtime or size); thread-safe.

    Args:
        fits_dir: the session's ``fits/``.
    """

    def __init__(self, fits_dir: Path) -> None:
        self.fits_dir = Path(fits_dir)
        self._entries: dict[str, FitEntry] = {}
        self._lock = threading.Lock()

    def read(self, frame: str) -> FitEntry:
        """The frame's fit (checked by :func:`handanno.annotate.session_io.read_fit`), or why there is none."""
        path = self.fits_dir / f"{frame}.json"
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            entry = self._entries.get(frame)
        if entry is not None and entry.stamp == stamp:
            return entry
        if stamp is None:
            entry = FitEntry(None, None, None)
        else:
            try:
                entry = FitEntry(stamp, read_fit(path), None)
            except HandannoError as exc:
                entry = FitEntry(stamp, None, str(exc))
        with self._lock:
            self._entries[frame] = entry
        return entry
