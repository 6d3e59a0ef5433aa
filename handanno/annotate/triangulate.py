"""The triangulate stage: robust 3D keypoints per frame from the views' 2D keypoints (in memory).

They initialise the fit (:func:`handanno.annotate.fit_mano.initial_pose`), drive its 3D
stage, and are the reference of the acceptance's triangulation-gap check. The geometry is
:func:`handanno.calibration.triangulate.triangulate_robust` (weighted DLT, dropping the
worst view until every view reprojects within ``max_reproj_px``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handanno.calibration.camera import CameraRig
from handanno.calibration.triangulate import triangulate_robust


@dataclass(frozen=True)
class Triangulated:
    """Per-frame robust triangulation of the keypoints."""

    joints3d: np.ndarray  # (B, 21, 3) metres, NaN where unknown
    inliers: np.ndarray  # (B, C, 21) bool
    views_with_keypoints: np.ndarray  # (B,) int

    def select(self, frames: slice | np.ndarray | list[int]) -> Triangulated:
        """The same for some of the ``B`` frames."""
        return Triangulated(self.joints3d[frames], self.inliers[frames], self.views_with_keypoints[frames])


def triangulate_frames(
    rig: CameraRig, kp: np.ndarray, min_keypoint_conf: float = 0.2, max_reproj_px: float = 15.0
) -> Triangulated:
    """Robust DLT of ``(B, C, 21, 3)`` keypoints ``[u, v, conf]`` (px): all frames in one vectorised call.

    Keypoints under ``min_keypoint_conf`` are left out.
    """
    B, C, J, _ = kp.shape
    conf = np.where(kp[..., 2] >= min_keypoint_conf, kp[..., 2], 0.0)  # (B, C, J)
    uv = kp[..., :2].transpose(1, 0, 2, 3).reshape(C, B * J, 2)  # (C, B*J, 2)
    cf = conf.transpose(1, 0, 2).reshape(C, B * J)  # (C, B*J)
    res = triangulate_robust(uv, cf, rig, max_reproj_px=max_reproj_px)
    joints = res.points.reshape(B, J, 3)
    inl = res.inlier_mask.reshape(C, B, J).transpose(1, 0, 2)
    views = (conf > 0).any(axis=2).sum(axis=1)
    return Triangulated(joints, inl, views)
