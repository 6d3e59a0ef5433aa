"""Hand motion of a synthetic capture.

Smooth articulation and global rotation trajectories, posed by the hand model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from handanno.data.conventions import (
    NUM_BETAS,
)
from handanno.errors import HandannoError
from handanno.handmodel.articulations import (
    POSTURES,
    articulation_trajectory,
    realistic_articulation_trajectory,
    smooth_signal,
)
from handanno.handmodel.hand_axes import HandAxes, hand_axes
from handanno.handmodel.hand_axes import unit as _unit
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from handanno.synth.streams import (
    _MOTION,
    _SHAPE,
)
from handanno.synth.streams import (
    rng as _rng,
)

log = logging.getLogger(__name__)

# Palm-centre keypoints (wrist and the four finger knuckles), FreiHAND order.
_PALM_KEYPOINTS = (0, 5, 9, 13, 17)

# --------------------------------------------------------------------------- motion


def global_rotation_trajectory(axes: HandAxes, rest_joints: np.ndarray, num_frames: int, fps: float,
                               rng: np.random.Generator) -> np.ndarray:
    """Wrist orientation over time, ``(T, 3, 3)`` world-from-rest rotations.

    The base orientation points the fingers up (world +z, tilted by 10-30 deg) with the
    palm towards a random horizontal direction; on top, a smooth rotation of up to about
    50 deg about the vertical and 20 deg about the horizontal axes.
    """
    f = _unit(rest_joints[9] - rest_joints[0])
    n = axes.palm_normal
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(10, 30))
    palm_dir = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    finger_dir = _unit(np.array([0.0, 0.0, 1.0]) * np.cos(tilt) - palm_dir * np.sin(tilt))
    palm_dir = _unit(palm_dir - finger_dir * (palm_dir @ finger_dir))
    n_rest = _unit(n - f * (n @ f))
    src = np.stack([f, n_rest, np.cross(f, n_rest)], 1)  # columns: rest axes
    dst = np.stack([finger_dir, palm_dir, np.cross(finger_dir, palm_dir)], 1)
    R_base = dst @ src.T  # (3, 3): rest -> world
    rotvec = np.stack([
        np.deg2rad(20) * smooth_signal(rng, num_frames, fps, (0.05, 0.3)),
        np.deg2rad(20) * smooth_signal(rng, num_frames, fps, (0.05, 0.3)),
        np.deg2rad(50) * smooth_signal(rng, num_frames, fps, (0.05, 0.25)),
    ], 1)  # (T, 3) world axes
    return axis_angle_to_matrix(rotvec) @ R_base  # (T, 3, 3)


@dataclass(frozen=True)
class HandMotion:
    """A hand sequence in the model's parameter space and its posed meshes.

    Attributes:
        pose: ``(T, 48)`` 3 global axis-angle + 45 articulation relative to ``hands_mean``.
        betas: ``(10,)`` shape, fixed over the session.
        trans: ``(T, 3)`` metres.
        vertices: ``(T, V, 3)`` world metres (float64 copies of the layer's output).
        joints: ``(T, 21, 3)`` FreiHAND keypoints, world metres.
        faces: ``(F, 3)`` int64.
        rest_vertices: ``(V, 3)`` the flat hand (articulation 0, no global rotation), palm
            centre at the origin (for albedo patterns).
        axes: the articulation axes the motion was built with.
    """

    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    faces: np.ndarray
    rest_vertices: np.ndarray
    axes: HandAxes


def _run_layer(layer, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray):
    import torch

    T = pose.shape[0]
    with torch.no_grad():
        out = layer(
            torch.as_tensor(pose, dtype=torch.float32),
            torch.as_tensor(np.broadcast_to(betas, (T, NUM_BETAS)).copy(), dtype=torch.float32),
            torch.as_tensor(trans, dtype=torch.float32),
        )
    return out.vertices.double().numpy(), out.joints.double().numpy()


def make_motion(layer, hands_mean: np.ndarray, side: str, num_frames: int, fps: float, seed: int,
                postures: str = "realistic") -> HandMotion:  # fmt: skip
    """Draw a shape and a smooth motion and pose the hand model for every frame.

    Betas are ``N(0, 1)`` clipped to [-2, 2]. The articulation comes from
    :func:`realistic_articulation_trajectory` (``postures="realistic"``) or
    :func:`articulation_trajectory` (``"anatomical"``), the wrist rotation from
    :func:`global_rotation_trajectory`; the translation keeps the palm centre within a
    few cm of the origin (smooth drift of up to 3 cm per axis).

    Args:
        layer: a ``ManoLayer`` (``layer(pose (B,48), betas (B,10), trans (B,3))`` ->
            ``vertices (B,V,3)``, ``joints (B,21,3)``; ``layer.faces (F,3)``).
        hands_mean: ``(45,)`` the model's mean articulation (pose is relative to it).
        side: ``"right"`` or ``"left"``.
        num_frames: T.
        fps: frames per second of the motion.
        seed: random seed.
        postures: ``"realistic"`` or ``"anatomical"`` (:data:`POSTURES`).

    Returns:
        :class:`HandMotion`. The pose and betas are exactly what was fed to the layer (float32
        values), so the layer reproduces the ground truth.
    """
    if postures not in POSTURES:
        raise HandannoError(f"postures must be one of {', '.join(POSTURES)}, got {postures!r}")
    hands_mean = np.asarray(hands_mean, np.float64).reshape(45)
    betas = np.clip(_rng(seed, _SHAPE).normal(size=NUM_BETAS), -2.0, 2.0).astype(np.float32).astype(np.float64)
    flat = np.concatenate([np.zeros(3), -hands_mean])[None]  # (1, 48): full articulation 0
    rest_v, rest_j = _run_layer(layer, flat, betas, np.zeros((1, 3)))
    rest_v, rest_j = rest_v[0], rest_j[0]
    axes = hand_axes(rest_j, side)
    rng = _rng(seed, _MOTION)
    trajectory = realistic_articulation_trajectory if postures == "realistic" else articulation_trajectory
    full = trajectory(axes, num_frames, fps, rng)  # (T, 15, 3)
    R = global_rotation_trajectory(axes, rest_j, num_frames, fps, rng)  # (T, 3, 3)
    pose = np.concatenate([matrix_to_axis_angle(R), full.reshape(num_frames, 45) - hands_mean], 1)
    pose = pose.astype(np.float32).astype(np.float64)  # (T, 48): what the layer sees
    drift = 0.03 * np.stack([smooth_signal(rng, num_frames, fps, (0.05, 0.3)) for _ in range(3)], 1)  # (T, 3)
    _, j0 = _run_layer(layer, pose, betas, np.zeros((num_frames, 3)))
    palm = j0[:, list(_PALM_KEYPOINTS)].mean(1)  # (T, 3)
    trans = (drift - palm).astype(np.float32).astype(np.float64)
    verts, joints = _run_layer(layer, pose, betas, trans)
    faces = np.asarray(layer.faces.cpu().numpy() if hasattr(layer.faces, "cpu") else layer.faces, np.int64)
    return HandMotion(pose, betas, trans, verts, joints, faces, rest_v - rest_j[list(_PALM_KEYPOINTS)].mean(0), axes)
