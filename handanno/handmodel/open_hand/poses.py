"""The open hand's articulations: flexion axes, plausible poses and their PCA, poses to look at it with.

:func:`pose_space` gives the model's ``hands_mean``, ``hands_components`` and
``hands_coeffs``: the mean and principal axes of a synthetic distribution of plausible
poses around a relaxed hand (:func:`sample_articulations`). :func:`curl_pose` and
:func:`preview_poses` build full poses from flexion angles.

Convention:
    Axis-angle in radians, relative to the parent joint in the rest frame (MANO's
    convention), MANO joint order. A finger joint flexes (curls towards the palm) by a
    positive rotation about its lateral axis ``cross(dorsal, bone)`` (about +z for the right
    hand's fingers); the left hand's axes are the right's times
    :data:`~handanno.handmodel.open_hand.skeleton.MIRROR_AXIS_ANGLE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from handanno.data.conventions import NUM_BETAS, NUM_MANO_JOINTS
from handanno.handmodel.lbs_reference import lbs
from handanno.handmodel.open_hand.skeleton import (
    FINGER_JOINTS,
    LONG_FINGERS,
    MIRROR_AXIS_ANGLE,
    Finger,
    Skeleton,
    skeleton,
)
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle

# ---------------------------------------------------------------------------------------
# Flexion axes of the skeleton.
# ---------------------------------------------------------------------------------------


def flexion_axes(sk: Skeleton | None = None) -> np.ndarray:
    """``(16, 3)`` unit axis about which each joint flexes (right hand; row 0, the wrist, is zero).

    A positive rotation about it curls the bone the joint drives towards the palm (for the
    thumb: towards its pad). It is the bone's lateral axis ``cross(dorsal, bone)``.
    """
    sk = skeleton() if sk is None else sk
    out = np.zeros((NUM_MANO_JOINTS, 3))
    for name, ids in FINGER_JOINTS.items():
        out[list(ids)] = sk.fingers[name].lateral
    return out


# ---------------------------------------------------------------------------------------
# The articulation space: a relaxed mean and a PCA basis of plausible poses.
# ---------------------------------------------------------------------------------------

POSE_SAMPLES = 1554  # as many as MANO's hands_coeffs rows
POSE_SEED = 20240611


def _joint_rotation(f: Finger, k: int, flex: np.ndarray, abd: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """``(N, 3)`` axis-angle of bone k of digit f from flexion, abduction and twist angles.

    Flexion is about the bone's lateral axis, abduction about its dorsal axis, twist
    about itself, composed in that order (flexion outermost).
    """
    R = (
        axis_angle_to_matrix(flex[:, None] * f.lateral[k])
        @ axis_angle_to_matrix(abd[:, None] * f.dorsal[k])
        @ axis_angle_to_matrix(twist[:, None] * f.dirs[k])
    )
    return matrix_to_axis_angle(R)


def sample_articulations(sk: Skeleton, n: int = POSE_SAMPLES, seed: int = POSE_SEED) -> np.ndarray:
    """``(n, 45)`` plausible articulations (absolute axis-angle of joints 1..15, MANO order).

    A synthetic distribution standing in for captured hands: a grasp synergy closing all
    fingers together, per-finger variation (sometimes a pointing index), flexion coupled
    along each finger (DIP ~ 0.7 PIP) within joint ranges, knuckle spread shrinking with
    flexion, small twists, and a thumb that opposes as the hand closes. Its mean is a
    relaxed, slightly curled hand.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n, NUM_MANO_JOINTS, 3))
    g = rng.uniform(-0.25, 0.85, n)  # grasp closure
    spread = rng.normal(0.0, 0.10, n)
    spread_gain = {"index": 1.0, "middle": 0.2, "ring": -0.6, "pinky": -1.0}
    abd_mean = {"index": -0.05, "middle": 0.0, "ring": 0.04, "pinky": 0.10}
    curl_bias = {"index": -0.05, "middle": 0.0, "ring": 0.05, "pinky": 0.10}
    pointing = rng.uniform(size=n) < 0.15
    for name in LONG_FINGERS:
        f = sk.fingers[name]
        c = np.clip(g + curl_bias[name] + rng.normal(0.0, 0.22, n), -0.5, 1.5)
        if name == "index":
            c = np.where(pointing, rng.uniform(-0.35, 0.15, n), c)
        mcp = np.clip(0.35 + 0.9 * (c - 0.3) + rng.normal(0.0, 0.10, n), -0.45, 1.60)
        pip = np.clip(0.50 + 1.1 * (c - 0.3) + rng.normal(0.0, 0.12, n), -0.05, 1.90)
        dip = np.clip(0.25 + 0.7 * (pip - 0.5) + rng.normal(0.0, 0.10, n), -0.10, 1.40)
        abd = (abd_mean[name] + spread_gain[name] * spread + rng.normal(0.0, 0.04, n)) * (
            1.0 - 0.5 * np.clip(mcp / 1.5, 0.0, 1.0)
        )
        j1, j2, j3 = FINGER_JOINTS[name]
        out[:, j1] = _joint_rotation(f, 0, mcp, abd, rng.normal(0.0, 0.03, n))
        out[:, j2] = _joint_rotation(f, 1, pip, rng.normal(0.0, 0.02, n), rng.normal(0.0, 0.03, n))
        out[:, j3] = _joint_rotation(f, 2, dip, rng.normal(0.0, 0.02, n), rng.normal(0.0, 0.03, n))
    th = sk.fingers["thumb"]
    o = rng.uniform(-0.2, 1.0, n)  # opposition
    ct = np.clip(0.5 * g + rng.normal(0.0, 0.3, n), -0.3, 1.2)
    cmc = np.clip(0.30 + 0.5 * (o - 0.4) + rng.normal(0.0, 0.08, n), -0.3, 1.0)
    out[:, 13] = _joint_rotation(th, 0, cmc, rng.normal(0.0, 0.20, n), 0.15 * (o - 0.4) + rng.normal(0.0, 0.05, n))
    tmcp = np.clip(0.15 + 0.35 * ct + rng.normal(0.0, 0.10, n), -0.2, 1.0)
    tip = np.clip(0.20 + 0.50 * ct + rng.normal(0.0, 0.12, n), -0.3, 1.4)
    out[:, 14] = _joint_rotation(th, 1, tmcp, rng.normal(0.0, 0.05, n), rng.normal(0.0, 0.03, n))
    out[:, 15] = _joint_rotation(th, 2, tip, rng.normal(0.0, 0.03, n), rng.normal(0.0, 0.03, n))
    return out[:, 1:].reshape(n, 45)


def pose_space(sk: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hands_mean (45,)``, ``hands_components (45, 45)`` and ``hands_coeffs (n, 45)``.

    The mean of :func:`sample_articulations`, the principal axes of the samples about it
    (rows, unit length, by decreasing variance, each with its largest entry positive) and
    the samples' coordinates in that basis, as in MANO's file.
    """
    X = sample_articulations(sk)
    mean = X.mean(axis=0)
    Y = X - mean
    _, vecs = np.linalg.eigh(Y.T @ Y)  # ascending eigenvalues
    Vt = vecs[:, ::-1].T  # (45, 45) rows by decreasing variance
    sign = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
    comps = Vt * sign[:, None]
    return mean, comps, Y @ comps.T


# ---------------------------------------------------------------------------------------
# Poses for previews and checks.
# ---------------------------------------------------------------------------------------


def model_flexion_axes(side: str = "right") -> np.ndarray:
    """:func:`flexion_axes` of the mean hand for ``side`` (the left's mirrored as axis-angle)."""
    axes = flexion_axes()
    return axes if side == "right" else axes * MIRROR_AXIS_ANGLE


def curl_pose(side: str, flex: dict[str, Sequence[float]]) -> np.ndarray:
    """``(16, 3)`` full pose (absolute axis-angle) flexing each named digit's 3 joints by the given radians."""
    axes = model_flexion_axes(side)
    pose = np.zeros((NUM_MANO_JOINTS, 3))
    for name, angles in flex.items():
        for j, a in zip(FINGER_JOINTS[name], angles, strict=True):
            pose[j] = a * axes[j]
    return pose


def preview_poses(model: dict, side: str) -> dict[str, np.ndarray]:
    """Named ``(16, 3)`` full poses (absolute axis-angle) to look at the model with.

    ``open``: the flat rest pose; ``relaxed``: pose zeros in the layer (``hands_mean``);
    ``fist``: every finger curled (MCP 85, PIP 95, DIP 55 degrees) with the thumb over
    them; ``pinch``: thumb tip on index tip (solved by least squares on both digits).
    """
    from scipy.optimize import least_squares

    rest = np.zeros((NUM_MANO_JOINTS, 3))
    relaxed = rest.copy()
    relaxed[1:] = np.asarray(model["hands_mean"]).reshape(15, 3)
    fist = curl_pose(side, {f: np.deg2rad([85, 95, 55]) for f in LONG_FINGERS} | {"thumb": np.deg2rad([40, 35, 40])})
    tips = np.asarray(model["tip_vertex_ids"])
    zeros = np.zeros((1, NUM_BETAS)), np.zeros((1, 3))

    def pinch(x: np.ndarray) -> np.ndarray:
        curls = {
            "thumb": x[:3],
            "index": x[3:6],
            "middle": np.deg2rad([25, 30, 15]),
            "ring": np.deg2rad([30, 35, 15]),
            "pinky": np.deg2rad([35, 35, 15]),
        }
        return curl_pose(side, curls)

    def residual(x: np.ndarray) -> np.ndarray:
        v, _ = lbs(model, pinch(x)[None], *zeros)
        gap = v[0, tips[0]] - v[0, tips[1]]
        prior = 0.02 * (x - np.deg2rad([45, 20, 20, 45, 50, 30]))  # stay near a natural pinch
        return np.concatenate([gap / 0.01, prior])

    x = least_squares(residual, np.deg2rad([45, 20, 20, 45, 50, 30]), bounds=(np.deg2rad(-10), np.deg2rad(100))).x
    return {"open": rest, "relaxed": relaxed, "fist": fist, "pinch": pinch(x)}
