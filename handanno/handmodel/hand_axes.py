"""Anatomical axes of the hand model's joints, and a pose prior built on them.

The 15 articulated MANO joints rotate relative to ``hands_mean``; in the flat rest pose every
joint's local frame is the model's frame, so a joint's anatomical axes follow from the rest
keypoints: the bone it moves (**twist** about it), **flexion** towards the palm and the
sideways **spread**. :func:`hand_axes` computes them (used by ``handanno synth`` to pose
hands), :func:`anatomical_pose_prior` turns them into the fitter's prior: finger joints
hardly rotate about their own bone, and PIP, DIP and the thumb's IP are hinges.

Convention: MANO joint order (1..15 = index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb
13-15; 0 is the wrist), keypoints in FreiHAND order (``handanno.data.conventions``), metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import NUM_JOINTS


@dataclass(frozen=True)
class HandAxes:
    """Articulation axes of the 15 MANO joints, from the hand's flat rest pose.

    Attributes:
        flex: ``(15, 3)`` unit axes (MANO joints 1..15) about which a positive angle curls
            the finger towards the palm.
        spread: ``(15, 3)`` unit axes about which a positive angle moves the finger
            towards the pinky side (in the palm plane).
        palm_normal: ``(3,)`` unit normal pointing out of the palm.
        thumb_side: ``(3,)`` unit direction from the pinky knuckle to the index knuckle.
        bone: ``(15, 3)`` unit direction of the bone each joint moves (towards its child).
    """

    flex: np.ndarray
    spread: np.ndarray
    palm_normal: np.ndarray
    thumb_side: np.ndarray
    bone: np.ndarray


# MANO joint (1..15) -> (this keypoint, its child keypoint) in FreiHAND order.
MANO_JOINT_BONES = {1: (5, 6), 2: (6, 7), 3: (7, 8), 4: (9, 10), 5: (10, 11), 6: (11, 12),
                    7: (17, 18), 8: (18, 19), 9: (19, 20), 10: (13, 14), 11: (14, 15), 12: (15, 16),
                    13: (1, 2), 14: (2, 3), 15: (3, 4)}  # fmt: skip


def hand_axes(rest_joints: np.ndarray, side: str) -> HandAxes:
    """Flexion and spread axes of every MANO joint from the flat rest pose's keypoints.

    Args:
        rest_joints: ``(21, 3)`` FreiHAND keypoints of the flat hand (articulation 0).
        side: ``"right"`` or ``"left"``.

    Returns:
        :class:`HandAxes` in the rest frame (which is every MANO joint's local frame).

    Convention:
        ``s`` = index knuckle - pinky knuckle (towards the thumb), ``f`` = middle knuckle -
        wrist (along the fingers). The palm faces ``s x f`` for a right hand and ``f x s``
        for a left one. A rotation about axis ``a`` moves a bone ``d`` towards ``a x d``, so
        flexion uses ``a = d x n`` (towards the palm) and spread ``a = s x d`` (towards the
        pinky). The thumb curls towards ``n - s`` (across the palm).
    """
    check_shape(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    j = np.asarray(rest_joints, np.float64)
    s = unit(j[5] - j[17])
    f = unit(j[9] - j[0])
    n = unit(np.cross(s, f) if side == "right" else np.cross(f, s))
    n_thumb = unit(n - 0.8 * s)
    flex = np.zeros((15, 3))
    spread = np.zeros((15, 3))
    bone = np.zeros((15, 3))
    for mano_j, (a, b) in MANO_JOINT_BONES.items():
        d = unit(j[b] - j[a])
        bone[mano_j - 1] = d
        flex[mano_j - 1] = unit(np.cross(d, n_thumb if mano_j >= 13 else n))
        spread[mano_j - 1] = unit(np.cross(s, d))
    return HandAxes(flex, spread, n, s, bone)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` divided by its norm along the last axis."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


HINGE_JOINTS = (2, 3, 5, 6, 8, 9, 11, 12, 15)  # PIP and DIP of the four fingers, the thumb's IP (MANO ids)
FREE_JOINTS = (13,)  # the thumb's CMC (a saddle joint whose opposition comes with axial rotation)


@dataclass(frozen=True)
class PriorStd:
    """Standard deviations (radians) of the articulation about the joints' anatomical axes.

    Attributes:
        flex: flexion, every joint.
        spread: sideways, MCP joints (fingers and thumb).
        twist: about the joint's own bone, every joint but the thumb's CMC.
        hinge_side: sideways at a hinge (PIP, DIP, thumb IP).
        free: every axis of the thumb's CMC.
    """

    flex: float = 0.6
    spread: float = 0.6
    twist: float = 0.1
    hinge_side: float = 0.1
    free: float = 0.6


def joint_bases(axes: HandAxes) -> np.ndarray:
    """``(15, 3, 3)`` orthonormal rows per MANO joint 1..15: ``[twist (bone), flex, side]``.

    ``side = twist x flex``; flexion is made orthogonal to the bone first.
    """
    out = np.zeros((15, 3, 3))
    for mano_j in range(1, 16):
        d = axes.bone[mano_j - 1]
        f = unit(axes.flex[mano_j - 1] - (axes.flex[mano_j - 1] @ d) * d)
        out[mano_j - 1] = [d, f, np.cross(d, f)]
    return out


def anatomical_pose_prior(axes: HandAxes, std: PriorStd = PriorStd()) -> tuple[np.ndarray, np.ndarray]:
    """Components and standard deviations of a Gaussian articulation prior on anatomical axes.

    For :func:`handanno.annotate.losses.pose_prior_loss`: the 45 articulation numbers are
    read per joint in its ``[twist, flex, side]`` frame (:func:`joint_bases`); the small
    ``twist`` std holds fingers from rotating about their own bones (which keypoints cannot
    see, and which lets a fit trade a wrong thumb twist for wrong flexion further down the
    chain), the small ``hinge_side`` std makes PIP, DIP and the thumb's IP hinges, and the
    thumb's CMC is left free.

    Args:
        axes: the hand's axes (:func:`hand_axes` of the rest keypoints).
        std: the standard deviations.

    Returns:
        ``components (45, 45)`` orthonormal rows, ``stddev (45,)`` radians.
    """
    bases = joint_bases(axes)
    comps = np.zeros((45, 45))
    sd = np.zeros(45)
    for mano_j in range(1, 16):
        k = 3 * (mano_j - 1)
        comps[k : k + 3, k : k + 3] = bases[mano_j - 1]
        if mano_j in FREE_JOINTS:
            sd[k : k + 3] = std.free
        elif mano_j in HINGE_JOINTS:
            sd[k : k + 3] = [std.twist, std.flex, std.hinge_side]
        else:
            sd[k : k + 3] = [std.twist, std.flex, std.spread]
    return comps, sd


__all__ = ["HandAxes", "hand_axes", "unit", "MANO_JOINT_BONES", "HINGE_JOINTS", "FREE_JOINTS", "PriorStd",
           "joint_bases", "anatomical_pose_prior"]  # fmt: skip
