"""The subject's shape of a session: ``SESSION/shape.json`` and the frames it is fitted on.

Per subject the shape is one: ``handanno fit`` (one process or sharded on Ray) first fits the
shape on a few frames spread over the session (:func:`choose_shape_frames`), keeps it in
``shape.json`` (:func:`write_shape`) and then fits every frame's articulation with it held; a
rerun or a shard reads it back (:func:`read_shape`). The pass itself is in
:mod:`handanno.annotate.pipeline`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handanno.data.conventions import NUM_BETAS
from handanno.data.files_io import read_json, write_json
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

SHAPE_FILE = "shape.json"


@dataclass(frozen=True)
class SessionShape:
    """The subject's shape, fitted once per session and kept in ``SESSION/shape.json``.

    Attributes:
        betas: ``(10,)`` the shape every frame's articulation is fitted with.
        frames: the frames it was fitted on (empty when it came from earlier fits).
        hand: ``"right"`` or ``"left"``.
        model: the hand model's name.
        source: ``"shape pass"`` (fitted on ``frames``) or ``"earlier fits"`` (the mean of the
            ``fits/`` a run before shape.json existed wrote).
    """

    betas: np.ndarray
    frames: tuple[str, ...]
    hand: str
    model: str
    source: str = "shape pass"


def read_shape(root: Path, hand: str, model: str) -> SessionShape | None:
    """``SESSION/shape.json`` when it holds a usable shape for this hand and model, else None (a warning says why)."""
    path = Path(root) / SHAPE_FILE
    if not path.is_file():
        return None
    try:
        d = read_json(path)
        betas = np.asarray(d["betas"], np.float64)
        if betas.shape != (NUM_BETAS,) or not np.isfinite(betas).all():
            raise ValueError(f"'betas' must be {NUM_BETAS} finite numbers")
        shape = SessionShape(betas, tuple(d.get("frames", ())), d["hand"], d["model"], d.get("source", "shape pass"))
    except (HandannoError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s cannot be used (%s); the shape is fitted again", path, exc)
        return None
    if (shape.hand, shape.model) != (hand, model):
        log.warning("%s holds the shape of a %s hand (model %s), not of a %s hand (model %s); it is fitted again",
                    path, shape.hand, shape.model, hand, model)  # fmt: skip
        return None
    return shape


def write_shape(root: Path, shape: SessionShape) -> Path:
    """Write ``SESSION/shape.json`` atomically (betas at full precision, so a reader gets the same numbers)."""
    return write_json(Path(root) / SHAPE_FILE, {"betas": [float(b) for b in shape.betas], "frames": list(shape.frames),
                                                "hand": shape.hand, "model": shape.model, "source": shape.source},
                      indent=1)  # fmt: skip


def choose_shape_frames(views_found: np.ndarray, conf_sum: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of ``candidates``, evenly spread, each the best seen of its stretch.

    The candidates (in frame order) are cut into ``n`` stretches of consecutive candidates
    (:func:`numpy.array_split`); from each, the frame seen in the most views, ties broken by
    the larger sum of keypoint confidences, then by the earlier frame.

    Args:
        views_found: ``(N,)`` views that show the hand, per frame of the session.
        conf_sum: ``(N,)`` sum of the frame's confident keypoints' confidences.
        candidates: ``(M,)`` int, indices of the frames that may be chosen, ascending.
        n: how many to choose at most.

    Returns:
        ``(min(n, M),)`` int, ascending.

    Example:
        >>> choose_shape_frames(np.array([2, 3, 3, 1, 4, 4]), np.zeros(6), np.arange(6), 2).tolist()
        [1, 4]
    """
    candidates = np.asarray(candidates, dtype=int)
    if len(candidates) <= n:
        return candidates
    picks = [c[np.lexsort((c, -conf_sum[c], -views_found[c]))[0]] for c in np.array_split(candidates, n)]
    return np.asarray(picks, dtype=int)
