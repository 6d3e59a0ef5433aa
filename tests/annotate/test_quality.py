"""Per-frame acceptance: absolute and hand-size-relative reprojection thresholds, mask IoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handanno.annotate.pipeline import AcceptSettings, PipelineSettings, frame_quality, frame_summary
from handanno.calibration.camera import Camera, CameraRig


def _rig(distances_m: tuple[float, ...]) -> CameraRig:
    """Cameras on the optical axis at the given distances, all looking at the origin along +z."""
    K = [[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]]
    return CameraRig.from_cameras(
        Camera(f"cam{i}", K, np.zeros(5), np.eye(3), [0.0, 0.0, d], (640, 480)) for i, d in enumerate(distances_m)
    )


def _hand_joints() -> np.ndarray:
    """21 points spread over a hand-sized 0.1 m square (the quality check needs no real hand)."""
    rng = np.random.default_rng(0)
    j = rng.uniform(-0.05, 0.05, (21, 3))
    j[:, 2] *= 0.2
    j[0, :2] = (-0.05, -0.05)
    j[1, :2] = (0.05, 0.05)
    return j


def _keypoints(rig: CameraRig, joints: np.ndarray, offset_px: float) -> np.ndarray:
    """``(C, 21, 3)`` the joints' projections shifted by ``offset_px`` along u, conf 1."""
    uv = np.stack([cam.project(joints) for cam in rig])
    uv[..., 0] += offset_px
    return np.concatenate([uv, np.ones(uv.shape[:2] + (1,))], axis=-1)


def _quality(rig, joints, kp, **accept):
    settings = PipelineSettings(session=Path("."), accept=AcceptSettings(**accept))
    return frame_quality(joints, np.zeros((0, 3)), np.zeros((0, 3), np.int64), rig, kp, [None] * len(rig), settings)


def test_exact_keypoints_are_accepted_with_zero_error():
    rig, j = _rig((0.5, 0.6)), _hand_joints()
    q = _quality(rig, j, _keypoints(rig, j, 0.0))
    assert q["accepted"] and q["reasons"] == []
    assert all(v == pytest.approx(0, abs=1e-6) for v in q["reproj_err_px"].values())
    assert q["mask_iou"] == {"cam0": None, "cam1": None}


def test_relative_threshold_scales_with_the_hand_in_the_image():
    """Far cameras (a 64 px hand at 1.25 m): a 4 px error is 6 % of the hand, rejected by the
    relative bound though under the 8 px absolute one; near cameras (a 160 px hand): accepted."""
    j = _hand_joints()
    far, near = _rig((1.25, 1.25)), _rig((0.5, 0.5))
    q_far = _quality(far, j, _keypoints(far, j, 4.0))
    q_near = _quality(near, j, _keypoints(near, j, 4.0))
    assert not q_far["accepted"] and "of the hand's size" in q_far["reasons"][0]
    assert q_near["accepted"], q_near["reasons"]
    # the absolute bound still applies on its own
    q_abs = _quality(near, j, _keypoints(near, j, 9.0), max_reproj_rel=1.0)
    assert not q_abs["accepted"] and "> 8.0 px" in q_abs["reasons"][0]


def test_too_few_views_is_a_reason():
    rig, j = _rig((0.5, 0.6)), _hand_joints()
    kp = _keypoints(rig, j, 0.0)
    kp[1, :, 2] = 0.0
    q = _quality(rig, j, kp)
    assert not q["accepted"] and q["reasons"] == ["keypoints in 1 view(s), fewer than 2"]
    assert q["reproj_err_px"]["cam1"] is None
    assert frame_summary(q) == {"accepted": False, "reasons": q["reasons"], "median_reproj_err_px": 0.0,
                                "median_mask_iou": None, "views": 1}
