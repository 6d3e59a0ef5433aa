"""Checks of a fitted hand that do not trust the 2D detections alone: pure functions, numpy in, numbers out.

A fit can reproject well onto biased detections (a detector whose keypoints sit a few pixels
off, differently in each view, or whose keypoint definitions differ from the hand model's):
the fit then compromises between the views and the median reprojection error stays small
while the hand is millimetres off. These checks look where such a fit shows:

- **view agreement**: every view but the few allowed to fail must agree with the fit
  (:func:`view_bound` of the per-view errors), and the fit must agree with the robust
  triangulation of the detections (:func:`triangulation_gap_m`), which follows views that
  agree with each other where the hand model cannot;
- **the image's own segmentation**: every view's mask but the few allowed to fail must
  overlap the fitted mesh's silhouette (:func:`view_bound` of the per-view IoU);
- **plausibility of the hand itself**: bone proportions against the model's rest skeleton
  (:func:`bone_length_deviation`) and joint angles against anatomical ranges
  (:func:`joint_limit_excess`).

:func:`handanno.annotate.pipeline.frame_quality` applies them with the thresholds of
:class:`handanno.annotate.pipeline.AcceptSettings`; ``benchmarks/bench_acceptance.py``
measures what they catch.

Convention:
    - 3D points in metres (world or any one frame), keypoints in FreiHAND order
      (:data:`handanno.data.conventions.JOINT_NAMES`), angles in radians unless a name says
      ``_deg``.
    - Articulation: the 15 MANO joints' full axis-angles (relative to the flat hand, that is
      ``pose[3:] + hands_mean``), MANO joint order 1..15 (index 1-3, middle 4-6, pinky 7-9,
      ring 10-12, thumb 13-15), read on each joint's ``[twist, flex, side]`` axes
      (:func:`handanno.models.hand_axes.joint_bases`): twist about the bone, flexion towards
      the palm (positive), side = twist x flex.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import BONES, NUM_JOINTS
from handanno.models.hand_axes import hand_axes, joint_bases

# The 15 articulated MANO joints (1..15), anatomical names.
MANO_JOINT_NAMES = (
    "index MCP", "index PIP", "index DIP", "middle MCP", "middle PIP", "middle DIP",
    "pinky MCP", "pinky PIP", "pinky DIP", "ring MCP", "ring PIP", "ring DIP",
    "thumb CMC", "thumb MCP", "thumb IP",
)  # fmt: skip
AXIS_NAMES = ("twist", "flexion", "sideways")

_MCP = [[-20, 20], [-35, 100], [-30, 30]]
_PIP = [[-20, 20], [-15, 120], [-20, 20]]
_DIP = [[-20, 20], [-30, 95], [-20, 20]]
_FREE = [[-180, 180]] * 3
# Anatomical ranges, degrees, ``[joint, axis, (low, high)]`` for MANO joints 1..15 on their
# [twist, flex, side] axes. Active ranges of motion of adult hands (MCP flexion to ~90 deg,
# hyperextension to ~30-45; PIP to ~110-120; DIP to ~80-90, hyperextension ~20-30; finger
# abduction ~20-30 deg; axial rotation a few degrees). Measured with the open hand model:
# the postures of ``handanno synth`` (300 seeds) stay 15 deg or more inside every range, fits
# to clean keypoints (3 px noise + 10 % outliers, 80 frames) 9 deg or more. The thumb's CMC,
# a saddle joint whose opposition comes with axial rotation, is left free.
_THUMB_MCP = [[-30, 30], [-30, 80], [-30, 30]]
_THUMB_IP = [[-20, 20], [-35, 95], [-20, 20]]
JOINT_LIMITS_DEG = np.array(
    [_MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _FREE, _THUMB_MCP, _THUMB_IP], np.float64
)  # (15, 3, 2)


def view_bound(values: Sequence[float | None], outlier_views: int, worst: str = "high") -> float | None:
    """The worst per-view value once the ``outlier_views`` worst views are set aside.

    Every view but ``outlier_views`` is at least as good as the returned value, so a
    threshold on it says "all views but ``outlier_views`` pass".

    Args:
        values: one number per view, None (or NaN) where a view has none.
        outlier_views: views allowed to fail (a detector's or a segmentation's miss).
        worst: ``"high"`` when larger is worse (errors), ``"low"`` when smaller is worse (IoU).

    Returns:
        The ``(outlier_views + 1)``-th worst value, or None when there are no more than
        ``outlier_views`` values (nothing left to check).

    Example:
        >>> view_bound([0.02, 0.30, None, 0.03], outlier_views=1)
        0.03
        >>> view_bound([0.9, 0.5, 0.8], outlier_views=1, worst="low")
        0.8
    """
    v = np.array([x for x in values if x is not None], np.float64)
    v = np.sort(v[np.isfinite(v)])
    if worst not in ("high", "low"):
        raise ValueError(f"worst must be 'high' or 'low', got {worst!r}")
    if outlier_views < 0 or len(v) <= outlier_views:
        return None
    return float(v[-1 - outlier_views] if worst == "high" else v[outlier_views])


def triangulation_gap_m(joints: np.ndarray, joints_tri: np.ndarray, min_points: int = 3) -> float | None:
    """Median distance between the fitted keypoints and the robust triangulation of the detections.

    Where the views agree with each other (the triangulation keeps inliers only) but the
    fitted hand cannot follow them, or where the views disagree (the triangulation then
    follows some of them), the two part.

    Args:
        joints: ``(21, 3)`` the fit's keypoints, metres.
        joints_tri: ``(21, 3)`` triangulated keypoints, same frame, metres; NaN where a
            keypoint could not be triangulated.
        min_points: fewer triangulated keypoints give None.

    Returns:
        The median over triangulated keypoints of ``|joints - joints_tri|``, metres, or None.

    Example:
        >>> j = np.zeros((21, 3)); t = np.full((21, 3), np.nan); t[:5] = [0.0, 0.0, 0.004]
        >>> round(triangulation_gap_m(j, t), 6)
        0.004
    """
    check_shape(joints, (NUM_JOINTS, 3), "joints")
    check_shape(joints_tri, (NUM_JOINTS, 3), "joints_tri")
    ok = np.all(np.isfinite(joints_tri), axis=1)  # (21,)
    if ok.sum() < min_points:
        return None
    return float(np.median(np.linalg.norm(joints[ok] - joints_tri[ok], axis=1)))


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """``(*, 21, 3)`` keypoints to ``(*, 20)`` bone lengths, in the order of :data:`handanno.data.conventions.BONES`."""
    check_shape(joints, ("*", NUM_JOINTS, 3), "joints")
    parent = np.array([p for p, _ in BONES])
    child = np.array([c for _, c in BONES])
    return np.linalg.norm(joints[..., child, :] - joints[..., parent, :], axis=-1)


def bone_length_deviation(joints: np.ndarray, rest_joints: np.ndarray) -> tuple[float, float, int]:
    """How far the hand's bone proportions are from the model's rest skeleton, its size set aside.

    Bone lengths do not change with pose (the tips move a little with skinning), so this
    checks the fitted shape: each bone's length over the same bone of the model's mean
    hand, divided by the median of those ratios (the hand's overall scale).

    Args:
        joints: ``(21, 3)`` the fitted keypoints, metres.
        rest_joints: ``(21, 3)`` the model's mean-shape keypoints (any pose), metres.

    Returns:
        ``(scale, deviation, bone)``: the median ratio, the largest ``|ratio / scale - 1|``
        and the index of that bone in :data:`handanno.data.conventions.BONES`.

    Example:
        >>> rest = np.cumsum(np.full((21, 3), 0.01), axis=0)
        >>> j = rest.copy(); j[6:9] += j[6] - j[5]  # bone 5-6 twice as long, the index finger moved along
        >>> scale, dev, bone = bone_length_deviation(2 * j, rest)
        >>> round(scale, 3), round(dev, 3), BONES[bone]
        (2.0, 1.0, (5, 6))
    """
    check_shape(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    ratio = bone_lengths(np.asarray(joints, np.float64)) / bone_lengths(np.asarray(rest_joints, np.float64))  # (20,)
    scale = float(np.median(ratio))
    dev = np.abs(ratio / scale - 1.0)
    bone = int(np.argmax(dev))
    return scale, float(dev[bone]), bone


def articulation_angles(articulation: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """The joints' axis-angles read on their anatomical ``[twist, flex, side]`` axes.

    Args:
        articulation: ``(15, 3)`` full axis-angle of MANO joints 1..15 (``pose[3:] +
            hands_mean``, reshaped), radians.
        bases: ``(15, 3, 3)`` orthonormal rows ``[twist, flex, side]`` per joint
            (:func:`handanno.models.hand_axes.joint_bases`).

    Returns:
        ``(15, 3)`` radians; for a rotation about one of the axes, the angle about it.
    """
    check_shape(articulation, (15, 3), "articulation")
    check_shape(bases, (15, 3, 3), "bases")
    return np.einsum("jab,jb->ja", bases, articulation)  # (15, 3): row a of joint j's basis . its axis-angle


def anatomical_bases(rest_joints: np.ndarray, side: str) -> np.ndarray:
    """The joints' ``[twist, flex, side]`` rows from the flat rest keypoints, ``(15, 3, 3)``.

    :func:`handanno.models.hand_axes.joint_bases` of :func:`handanno.models.hand_axes.hand_axes`
    (the fitter's anatomical prior uses the same axes), remembered for the last few
    skeletons: every frame of a session has the same one.

    Args:
        rest_joints: ``(21, 3)`` keypoints of the flat hand (articulation 0), metres.
        side: ``"right"`` or ``"left"``.
    """
    check_shape(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    return _anatomical_bases(np.asarray(rest_joints, np.float64).tobytes(), side).copy()


@functools.lru_cache(maxsize=8)
def _anatomical_bases(rest_bytes: bytes, side: str) -> np.ndarray:
    rest = np.frombuffer(rest_bytes, np.float64).reshape(NUM_JOINTS, 3)
    return joint_bases(hand_axes(rest, side))


def joint_limit_excess(angles: np.ndarray, limits_deg: np.ndarray = JOINT_LIMITS_DEG) -> np.ndarray:
    """How far each joint angle is beyond its anatomical range (0 inside it).

    Args:
        angles: ``(15, 3)`` radians on ``[twist, flex, side]`` (:func:`articulation_angles`).
        limits_deg: ``(15, 3, 2)`` ``(low, high)`` in degrees.

    Returns:
        ``(15, 3)`` degrees, >= 0.

    Example:
        >>> a = np.zeros((15, 3)); a[1, 1] = np.deg2rad(130)  # index PIP flexed 130 deg (range -15..120)
        >>> round(float(joint_limit_excess(a).max()), 6)
        10.0
    """
    check_shape(angles, (15, 3), "angles")
    check_shape(limits_deg, (15, 3, 2), "limits_deg")
    deg = np.rad2deg(angles)
    return np.maximum(limits_deg[..., 0] - deg, 0.0) + np.maximum(deg - limits_deg[..., 1], 0.0)


__all__ = ["MANO_JOINT_NAMES", "AXIS_NAMES", "JOINT_LIMITS_DEG", "view_bound", "triangulation_gap_m", "bone_lengths",
           "bone_length_deviation", "articulation_angles", "anatomical_bases", "joint_limit_excess"]  # fmt: skip
