"""Multi-view guided re-detection: look again where the fit says the hand is.

After a batch of frames is fitted, the fit (held up by the other views) says where the hand
is in every view. A view where the detector did not find the hand, or whose detection
disagrees with the fit, is detected again in a crop around the fit's projection (the
detector's :data:`handanno.annotate.detect.BoxDetector`). The new keypoints are kept only
where they agree with the fit, and the new detection replaces the old one only when it
agrees better; the pipeline (:mod:`handanno.annotate.pipeline`) then fits the changed frames
once more.

This module is the pure part (numpy in, numpy out); the pipeline reads the images, runs the
detector and writes the files (never one the user brought).

Convention:
    The hand's size in a view is the longer side of the box around the fitted joints'
    projection there (at least 1 px), as in the acceptance's relative error
    (:func:`handanno.annotate.quality.frame_quality`); errors are relative to it, so one
    threshold holds for near and far cameras and any resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handanno.calibration.camera import CameraRig
from handanno.check import check_shape
from handanno.data.conventions import NUM_JOINTS


@dataclass(frozen=True)
class RedetectSettings:
    """When a view is detected again, and when its new detection is kept.

    Attributes:
        min_keypoints: a view shows the hand when at least this many keypoints have
            ``conf >= min_keypoint_conf`` (fewer: the detector missed it, the view is redone).
        max_view_err_rel: a view is redone when the median over its confident keypoints of
            the distance to the fit's projection is above this fraction of the hand's size.
        max_keypoint_err_rel: a keypoint agrees with the fit when it lies within this
            fraction of the hand's size of the fit's projection; a re-detected keypoint that
            does not gets conf 0.
        max_outlier_frac: a view is also redone when more than this fraction of its
            confident keypoints disagree (a finger misread while the median is fine).
        min_agreeing: a new detection replaces the old one only with at least this many
            agreeing keypoints, and only when its median error to the fit is smaller than
            the old detection's (or the old one did not show the hand).
        neighbour_frames: a frame seen in one view only (no fit of its own) is looked at
            again in the other views around the fit of the nearest fitted frame at most this
            many frames away (in the session's order; 0: never).
        neighbour_box_scale: that fit's box is widened by this factor about its centre (the
            hand moved between the frames).
    """

    min_keypoints: int = 4
    neighbour_frames: int = 2
    neighbour_box_scale: float = 1.3
    max_view_err_rel: float = 0.10
    max_keypoint_err_rel: float = 0.15
    max_outlier_frac: float = 0.25
    min_agreeing: int = 6


def project_fits(joints: np.ndarray, rig: CameraRig) -> tuple[np.ndarray, np.ndarray]:
    """The fitted joints seen by every camera.

    Args:
        joints: ``(B, 21, 3)`` fitted joints, world metres.
        rig: the ``C`` cameras.

    Returns:
        ``proj (B, C, 21, 2)`` pixels and ``in_front (B, C)`` bool: every joint in front of
        the camera (elsewhere ``proj`` means nothing).
    """
    check_shape(joints, ("B", NUM_JOINTS, 3), "joints")
    proj = np.stack([cam.project(joints) for cam in rig], axis=1)  # (B, C, 21, 2)
    depth = np.stack([cam.to_camera(joints)[..., 2] for cam in rig], axis=1)  # (B, C, 21)
    return proj, (depth > 1e-3).all(axis=-1)


def hand_sizes(proj: np.ndarray) -> np.ndarray:
    """``(...)`` the hand's size in px: the longer side of the box around ``(..., 21, 2)`` projected joints (>= 1).

    Example:
        >>> hand_sizes(np.array([[10.0, 20.0], [50.0, 30.0], [30.0, 25.0]])).item()
        40.0
    """
    return np.maximum(np.ptp(proj, axis=-2).max(axis=-1), 1.0)


def fit_boxes(proj: np.ndarray) -> np.ndarray:
    """``(..., 4)`` ``[x0, y0, x1, y1]``: the box of the ``(..., 21, 2)`` projected fitted joints, pixels.

    The detectors frame their crops around it as around a detection's keypoint box.

    Example:
        >>> fit_boxes(np.array([[10.0, 20.0], [50.0, 30.0], [30.0, 25.0]])).tolist()
        [10.0, 20.0, 50.0, 30.0]
    """
    return np.concatenate([proj.min(axis=-2), proj.max(axis=-2)], axis=-1)


def keypoint_errors_rel(kp: np.ndarray, proj: np.ndarray, min_conf: float) -> np.ndarray:
    """``(..., 21)`` each keypoint's distance to the fit's projection over the hand's size; NaN under ``min_conf``.

    Args:
        kp: ``(..., 21, 3)`` detections ``[u, v, conf]``, pixels.
        proj: ``(..., 21, 2)`` the fitted joints' projection, pixels.
        min_conf: keypoints under it are not compared.
    """
    err = np.linalg.norm(kp[..., :2] - proj, axis=-1) / hand_sizes(proj)[..., None]
    return np.where(kp[..., 2] >= min_conf, err, np.nan)


def hand_found(kp: np.ndarray, settings: RedetectSettings, min_conf: float) -> np.ndarray:
    """``(...)`` bool: the ``(..., 21, 3)`` keypoints show the hand (``min_keypoints`` of them confident)."""
    return (kp[..., 2] >= min_conf).sum(axis=-1) >= settings.min_keypoints


def median_error_rel(kp: np.ndarray, proj: np.ndarray, min_conf: float) -> np.ndarray:
    """``(...)`` median over the confident keypoints of :func:`keypoint_errors_rel`; NaN where none is."""
    err = keypoint_errors_rel(kp, proj, min_conf)
    out = np.full(err.shape[:-1], np.nan)
    some = ~np.isnan(err).all(axis=-1)
    out[some] = np.nanmedian(err[some], axis=-1)
    return out


def views_to_redetect(
    kp: np.ndarray, proj: np.ndarray, in_front: np.ndarray, image_sizes: np.ndarray, settings: RedetectSettings,
    min_conf: float,
) -> np.ndarray:
    """Which views to detect again: the hand not found, or its detection off the fit.

    A view is chosen when the fit is in front of its camera with at least ``min_agreeing``
    projected joints inside the image (else no detection could agree with it), and

    - fewer than ``min_keypoints`` keypoints are confident (the detector missed the hand), or
    - the median relative error of its confident keypoints is above ``max_view_err_rel``, or
    - more than ``max_outlier_frac`` of them are above ``max_keypoint_err_rel``.

    Args:
        kp: ``(B, C, 21, 3)`` the detections ``[u, v, conf]`` the fit used, pixels.
        proj: ``(B, C, 21, 2)`` the fitted joints' projection (:func:`project_fits`).
        in_front: ``(B, C)`` bool, from :func:`project_fits`.
        image_sizes: ``(C, 2)`` each camera's ``(W, H)``.
        settings: the thresholds.
        min_conf: the pipeline's ``min_keypoint_conf``.

    Returns:
        ``(B, C)`` bool.
    """
    check_shape(kp, ("B", "C", NUM_JOINTS, 3), "kp")
    check_shape(proj, ("B", "C", NUM_JOINTS, 2), "proj")
    wh = np.asarray(image_sizes, np.float64)[None, :, None, :]  # (1, C, 1, 2)
    inside = ((proj >= -0.5) & (proj <= wh - 0.5)).all(axis=-1).sum(axis=-1)  # (B, C)
    can = in_front & (inside >= settings.min_agreeing)
    err = keypoint_errors_rel(kp, proj, min_conf)  # (B, C, 21)
    confident = ~np.isnan(err)
    n = confident.sum(axis=-1)
    outliers = (np.nan_to_num(err, nan=0.0) > settings.max_keypoint_err_rel).sum(axis=-1)
    med = median_error_rel(kp, proj, min_conf)
    off = (np.nan_to_num(med, nan=0.0) > settings.max_view_err_rel) | (outliers > settings.max_outlier_frac * n)
    return can & (~hand_found(kp, settings, min_conf) | off)


def agreeing_keypoints(kp: np.ndarray, proj: np.ndarray, settings: RedetectSettings, min_conf: float) -> np.ndarray:
    """A re-detection with conf 0 wherever it disagrees with the fit (and conf clipped to [0, 1]).

    Args:
        kp: ``(..., 21, 3)`` the new detection ``[u, v, conf]``, pixels.
        proj: ``(..., 21, 2)`` the fitted joints' projection in that view.
        settings: ``max_keypoint_err_rel`` is the bound.
        min_conf: keypoints under it are missing already (kept as they are, but clipped).

    Returns:
        ``(..., 21, 3)`` a copy.

    Example:
        >>> proj = np.stack([np.arange(21.0) * 5, np.zeros(21)], axis=1)  # a 100 px hand
        >>> kp = np.concatenate([proj, np.ones((21, 1))], axis=1)
        >>> kp[3, 1] = 30.0  # 30 % of the hand's size off
        >>> agreeing_keypoints(kp, proj, RedetectSettings(), 0.2)[2:5, 2].tolist()
        [1.0, 0.0, 1.0]
    """
    out = np.array(kp, np.float64)
    out[..., 2] = np.clip(np.nan_to_num(out[..., 2]), 0.0, 1.0)
    err = keypoint_errors_rel(out, proj, min_conf)
    out[..., 2] = np.where(err > settings.max_keypoint_err_rel, 0.0, out[..., 2])  # NaN (not confident) stays
    return out


def replaces(new: np.ndarray, old: np.ndarray, proj: np.ndarray, settings: RedetectSettings, min_conf: float) -> bool:
    """Whether a view's re-detection replaces its old detection.

    Args:
        new: ``(21, 3)`` the re-detection as the detector gave it (before
            :func:`agreeing_keypoints`).
        old: ``(21, 3)`` the detection the fit used (conf 0 everywhere where there was none).
        proj: ``(21, 2)`` the fitted joints' projection in that view.
        settings: ``min_agreeing`` and the agreement bound.
        min_conf: the pipeline's ``min_keypoint_conf``.

    Returns:
        True when at least ``min_agreeing`` of the new keypoints agree with the fit and the
        new detection's median error (over its confident keypoints, both as detected) is
        below the old one's, or the old one did not show the hand.
    """
    agreeing = int((agreeing_keypoints(new, proj, settings, min_conf)[:, 2] >= min_conf).sum())
    if agreeing < settings.min_agreeing:
        return False
    if not hand_found(old, settings, min_conf):
        return True
    return bool(median_error_rel(new, proj, min_conf) < median_error_rel(old, proj, min_conf))


def nearest_fitted(frame: int, fitted: Sequence[int], max_gap: int) -> int | None:
    """The fitted frame index nearest ``frame`` at most ``max_gap`` away (the earlier one on a tie), or None.

    Example:
        >>> nearest_fitted(5, [1, 3, 8], 2), nearest_fitted(5, [1, 8], 2), nearest_fitted(0, [1], 1)
        (3, None, 1)
    """
    best = None
    for f in fitted:
        gap = abs(int(f) - frame)
        if 0 < gap <= max_gap and (best is None or gap < abs(best - frame) or gap == abs(best - frame) and f < best):
            best = int(f)
    return best


def widen_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """``(..., 4)`` ``[x0, y0, x1, y1]`` boxes scaled by ``scale`` about their centres.

    Example:
        >>> widen_boxes(np.array([10.0, 20.0, 30.0, 60.0]), 1.5).tolist()
        [5.0, 10.0, 35.0, 70.0]
    """
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]) / 2 * scale
    return np.concatenate([centre - half, centre + half], axis=-1)


def box_on_image(box: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether ``box`` ``[x0, y0, x1, y1]`` (px) overlaps the ``(W, H)`` image.

    >>> box_on_image(np.array([-50.0, 10, -5, 40]), (640, 480))
    False
    >>> box_on_image(np.array([600.0, 400, 700, 500]), (640, 480))
    True
    """
    w, h = size
    return bool(box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h)
