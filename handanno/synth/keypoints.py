"""2D keypoints of a synthetic capture.

Which keypoints a camera sees (ray casting against the posed mesh), and noisy detections of them.
"""

from __future__ import annotations

import logging

import numpy as np

from handanno.calibration.camera import Camera
from handanno.check import check_shape
from handanno.data.conventions import (
    FREIHAND_FROM_EXTENDED,
    MANO_PARENTS,
    NUM_MANO_JOINTS,
)
from handanno.synth import raycast

log = logging.getLogger(__name__)


# Keypoint visibility: any surface less than this (m) in front of a joint does not hide it...
OCCLUSION_TOLERANCE_M = 0.01
# ... nor does the joint's own skin (the bones meeting at it) less than this in front of it.
OWN_SURFACE_DEPTH_M = 0.03


# --------------------------------------------------------------------------- keypoints


def keypoint_parts() -> tuple[frozenset[int], ...]:
    """For each FreiHAND keypoint, the MANO joints whose skin is "its own" surface.

    A joint's own surface is the skin of the bones that meet at it: MANO joint ``m`` and its
    parent (e.g. the index PIP owns the proximal and middle phalanges; an MCP owns the palm
    and the proximal phalanx); a fingertip owns its distal phalanx.
    """
    distal = {16: 15, 17: 3, 18: 6, 19: 12, 20: 9}  # extended tip index -> distal MANO joint
    parts = []
    for e in FREIHAND_FROM_EXTENDED:
        e = int(e)
        if e >= NUM_MANO_JOINTS:
            parts.append(frozenset({distal[e]}))
        else:
            parts.append(frozenset({e, max(int(MANO_PARENTS[e]), 0)}))
    return tuple(parts)


_KEYPOINT_PARTS = keypoint_parts()


def keypoint_visibility(joints_world: np.ndarray, camera: Camera, hits: raycast.RayHits,
                        face_part: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Projections of the keypoints and which are inside the image / visible / occluded.

    Joints lie inside the hand, so "visible" means: the first surface on the keypoint's
    pixel ray is its own skin (see :func:`keypoint_parts`) less than
    :data:`OWN_SURFACE_DEPTH_M` in front of it, or any surface less than
    :data:`OCCLUSION_TOLERANCE_M` in front of it (or nothing at all).

    Args:
        joints_world: ``(21, 3)`` metres.
        camera: the camera.
        hits: the hand's ray cast in this camera.
        face_part: ``(F,)`` MANO joint that dominates each face's skinning weights; None
            uses the depth test alone.

    Returns:
        ``uv_px (21, 2)`` and ``state (21,)`` int: 0 outside the image (or behind the
        camera), 1 inside but occluded, 2 visible.
    """
    W, H = camera.image_size
    uv = camera.project(joints_world)  # (21, 2)
    z = camera.to_camera(joints_world)[:, 2]
    inside = (z > 1e-3) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
    px = np.clip(np.round(uv).astype(np.int64), 0, [W - 1, H - 1])
    in_front = z - hits.depth_m[px[:, 1], px[:, 0]]  # (21,) how far the first hit is in front (m); -inf: none
    visible = in_front < OCCLUSION_TOLERANCE_M
    if face_part is not None:
        f = hits.face_ids[px[:, 1], px[:, 0]]
        part = np.where(f >= 0, face_part[np.maximum(f, 0)], -1)
        own = np.array([int(part[j]) in _KEYPOINT_PARTS[j] for j in range(len(part))])
        visible |= own & (in_front < OWN_SURFACE_DEPTH_M)
    state = np.where(inside, np.where(visible, 2, 1), 0)
    return uv, state


def face_parts(weights: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F,)`` the MANO joint with the largest skinning weight summed over each face's vertices."""
    check_shape(weights, ("V", 16), "weights")
    return np.argmax(weights[faces].sum(axis=1), axis=1)  # (F, 16) -> (F,)


def noisy_keypoints(uv_px: np.ndarray, state: np.ndarray, image_size: tuple[int, int], noise_px: float,
                    outlier_rate: float, rng: np.random.Generator) -> np.ndarray:
    """A detector-like ``(21, 3)`` ``[u, v, conf]`` array from ground-truth projections.

    Visible keypoints get conf in [0.75, 1.0], occluded ones [0.25, 0.55] (a detector
    still guesses them); both get Gaussian noise of ``noise_px``. With probability
    ``outlier_rate`` an in-image keypoint becomes a uniformly random position in the image
    with conf in [0.3, 0.9]. Keypoints outside the image are ``[0, 0, 0]`` (missing).
    """
    W, H = image_size
    J = len(uv_px)
    out = np.zeros((J, 3))
    conf = np.where(state == 2, rng.uniform(0.75, 1.0, J), rng.uniform(0.25, 0.55, J))
    noisy = uv_px + rng.normal(0, 1, (J, 2)) * noise_px
    outlier = rng.random(J) < outlier_rate
    wrong = rng.uniform([0, 0], [W - 1, H - 1], (J, 2))
    conf = np.where(outlier, rng.uniform(0.3, 0.9, J), conf)
    noisy = np.where(outlier[:, None], wrong, noisy)
    keep = state > 0
    out[keep, :2] = noisy[keep]
    out[keep, 2] = conf[keep]
    return out
