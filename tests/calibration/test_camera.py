"""Tests of handanno.calibration.camera: projection, undistortion, the Camera value object, the rig."""

from __future__ import annotations

import dataclasses
import doctest

import cv2
import numpy as np
import pytest
import torch

from handanno.calibration import camera as camera_module
from handanno.calibration.camera import (
    Camera,
    CameraRig,
    CameraTensors,
    distort_normalized,
    natural_key,
    project_points,
    undistort_points,
    world_to_camera,
)
from handanno.errors import HandannoError

DIST = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.015])


def _rot(rvec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, np.float64))[0]


def _camera(name="cam0", skew=0.0, dist=DIST, rvec=(0.1, -0.2, 0.05), t=(0.05, -0.02, 1.5)) -> Camera:
    K = np.array([[900.0, skew, 640.0], [0.0, 880.0, 360.0], [0.0, 0.0, 1.0]])
    return Camera(name, K, dist, _rot(rvec), np.array(t), (1280, 720))


def _points(n=50, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.25, 0.25, (n, 3))


# ----------------------------------------------------------------------------- projection


def test_project_points_matches_opencv():
    cam = _camera()
    pts = _points()
    ref, _ = cv2.projectPoints(pts, cam.rvec, cam.t, cam.K, cam.dist)
    np.testing.assert_allclose(cam.project(pts), ref.reshape(-1, 2), atol=1e-9)  # float64 round-off only


def test_project_points_torch_equals_numpy():
    cam = _camera(skew=2.0)
    pts = _points()
    ref = cam.project(pts)
    out = project_points(*(torch.tensor(a, dtype=torch.float64) for a in (pts, cam.K, cam.dist, cam.R, cam.t)))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)


def test_project_points_batched_broadcast_equals_per_camera():
    rig = CameraRig((_camera("a"), _camera("b", rvec=(0.3, 0.1, 0.0)), _camera("c", t=(0.1, 0.1, 2.0))))
    s = rig.stacked()
    pts = np.stack([_points(seed=1), _points(seed=2)])  # (B=2, N, 3)
    pts_bc = np.broadcast_to(pts[:, None], (2, 3, *pts.shape[1:]))  # (B, C, N, 3)
    out = project_points(pts_bc, s["K"][None], s["dist"][None], s["R"][None], s["t"][None])
    for b in range(2):
        for c, cam in enumerate(rig):
            np.testing.assert_allclose(out[b, c], cam.project(pts[b]), atol=1e-12)


def test_project_points_with_skew_follows_K():
    cam = _camera(skew=3.0, dist=np.zeros(5))
    x_cam = cam.to_camera(_points())
    x, y = x_cam[:, 0] / x_cam[:, 2], x_cam[:, 1] / x_cam[:, 2]
    expected = np.stack([900 * x + 3.0 * y + 640, 880 * y + 360], axis=-1)
    np.testing.assert_allclose(cam.project(_points()), expected, atol=1e-9)


def test_points_behind_camera_give_finite_pixels():
    cam = _camera(rvec=(0, 0, 0), t=(0, 0, 0))
    assert np.all(np.isfinite(cam.project(np.array([[0.1, 0.1, -1.0], [0.0, 0.0, 0.0]]))))


# ----------------------------------------------------------------------------- undistortion


@pytest.mark.parametrize("skew", [0.0, 4.0])
def test_undistort_points_inverts_projection(skew):
    # With skew, cv2.undistortPoints alone ignores K[0, 1]; undistort_points must not.
    cam = _camera(skew=skew)
    pts = _points(200)
    x_cam = cam.to_camera(pts)
    xy = x_cam[:, :2] / x_cam[:, 2:]
    np.testing.assert_allclose(cam.undistort(cam.project(pts)), xy, atol=1e-12)


def test_undistort_points_keeps_nan_rows():
    cam = _camera()
    uv = np.array([[600.0, 300.0], [np.nan, 1.0], [700.0, 400.0]])
    out = undistort_points(uv, cam.K, cam.dist)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))


def test_distort_normalized_matches_opencv_formula():
    xy = np.random.default_rng(3).uniform(-0.5, 0.5, (30, 2))
    pts = np.concatenate([xy, np.ones((30, 1))], axis=1)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), np.eye(3), DIST)
    np.testing.assert_allclose(distort_normalized(xy, DIST), ref.reshape(-1, 2), atol=1e-12)


# ----------------------------------------------------------------------------- conventions


def test_convention_world_to_camera_is_R_x_plus_t():
    R, t = _rot((0.2, 0.4, -0.1)), np.array([0.3, -0.1, 2.0])
    x = _points(5)
    np.testing.assert_allclose(world_to_camera(x, R, t), x @ R.T + t, atol=1e-15)


def test_convention_optical_axis_hits_principal_point_and_y_points_down():
    cam = Camera("c", [[800.0, 0, 300.0], [0, 700.0, 200.0], [0, 0, 1]], np.zeros(5),
                 np.eye(3), np.zeros(3), (640, 480))
    uv = cam.project(np.array([[0.0, 0.0, 2.0], [0.0, 0.1, 2.0], [0.1, 0.0, 2.0]]))
    np.testing.assert_allclose(uv[0], [300.0, 200.0])  # (u, v) order, principal point (cx, cy)
    assert uv[1, 1] > 200.0 and uv[1, 0] == 300.0  # +y is down in the image
    assert uv[2, 0] > 300.0  # +x is right


def test_convention_pixel_origin_is_top_left_pixel_centre():
    # A ray through normalised (-cx/fx, -cy/fy) lands on pixel (0, 0): no half-pixel shift.
    cam = Camera("c", [[800.0, 0, 300.0], [0, 700.0, 200.0], [0, 0, 1]], np.zeros(5),
                 np.eye(3), np.zeros(3), (640, 480))
    np.testing.assert_allclose(cam.project(np.array([[-300 / 800, -200 / 700, 1.0]])), [[0.0, 0.0]], atol=1e-12)


def test_convention_center_is_minus_Rt_t():
    cam = _camera()
    np.testing.assert_allclose(cam.center, -cam.R.T @ cam.t)
    np.testing.assert_allclose(cam.to_camera(cam.center[None]), [[0, 0, 0]], atol=1e-14)


# ----------------------------------------------------------------------------- Camera value object


def test_camera_arrays_are_read_only_and_frozen():
    cam = _camera()
    with pytest.raises(ValueError):
        cam.K[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.name = "other"


def test_camera_wrong_K_shape_names_camera_and_field():
    with pytest.raises(HandannoError, match=r"camera 'left'.*field K.*\(3, 3\)"):
        Camera("left", np.eye(2), DIST, np.eye(3), np.zeros(3), (10, 10))


@pytest.mark.parametrize("R", [np.diag([1.0, 1.0, -1.0]), np.eye(3) * 1.1, np.ones((3, 3))])
def test_camera_rejects_non_rotation(R):
    with pytest.raises(HandannoError, match=r"camera 'left'.*not a rotation"):
        Camera("left", np.eye(3), DIST, R, np.zeros(3), (10, 10))


def test_camera_rejects_bad_K_nan_and_non_numeric():
    with pytest.raises(HandannoError, match="field K"):
        Camera("c", [[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]], DIST, np.eye(3), np.zeros(3), (10, 10))
    with pytest.raises(HandannoError, match="field t has NaN"):
        Camera("c", np.eye(3), DIST, np.eye(3), [0, np.nan, 0], (10, 10))
    with pytest.raises(HandannoError, match="field R is not numeric"):
        Camera("c", np.eye(3), DIST, "abc", np.zeros(3), (10, 10))


def test_camera_dist_lengths():
    assert Camera("c", np.eye(3), [0.1, 0.2, 0.0, 0.0], np.eye(3), np.zeros(3), (1, 1)).dist.tolist() == [
        0.1, 0.2, 0.0, 0.0, 0.0]
    assert Camera("c", np.eye(3), [0.1, 0, 0, 0, 0.3, 0, 0, 0], np.eye(3), np.zeros(3), (1, 1)).dist.shape == (5,)
    with pytest.raises(HandannoError, match="field dist"):
        Camera("c", np.eye(3), [0.1, 0, 0, 0, 0.3, 0.5, 0, 0], np.eye(3), np.zeros(3), (1, 1))
    with pytest.raises(HandannoError, match="field dist"):
        Camera("c", np.eye(3), [0.1, 0.2, 0.3], np.eye(3), np.zeros(3), (1, 1))


@pytest.mark.parametrize("size", [(1280, 720.5), (0, 720), "ab", 5, (1, 2, 3), (None, 3)])
def test_camera_rejects_bad_image_size(size):
    with pytest.raises(HandannoError, match="camera 'c': field image_size"):
        Camera("c", np.eye(3), DIST, np.eye(3), np.zeros(3), size)


def test_camera_image_size_accepts_integral_floats():
    assert Camera("c", np.eye(3), DIST, np.eye(3), np.zeros(3), [1280.0, 720]).image_size == (1280, 720)


def test_camera_params_round_trip():
    cam = _camera()
    back = Camera.from_params(cam.name, cam.to_params(), cam.image_size)
    for f in ("K", "dist", "R", "t"):
        np.testing.assert_allclose(getattr(back, f), getattr(cam, f), atol=1e-12)
    np.testing.assert_allclose(_rot(cam.rvec), cam.R, atol=1e-12)


def test_camera_dict_round_trip_and_missing_field():
    cam = _camera()
    back = Camera.from_dict(cam.name, cam.to_dict())
    assert back.image_size == cam.image_size
    np.testing.assert_array_equal(back.R, cam.R)
    d = cam.to_dict()
    del d["dist"]
    with pytest.raises(HandannoError, match=r"camera 'cam0': missing field\(s\) dist"):
        Camera.from_dict("cam0", d)


def test_projection_matrix_matches_project_without_distortion():
    cam = _camera(dist=np.zeros(5))
    pts = _points()
    h = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ cam.projection_matrix().T
    np.testing.assert_allclose(h[:, :2] / h[:, 2:], cam.project(pts), atol=1e-9)


def test_with_pose_keeps_intrinsics():
    cam = _camera()
    moved = cam.with_pose(np.eye(3), np.array([0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(moved.K, cam.K)
    np.testing.assert_array_equal(moved.t, [0, 0, 1])


# ----------------------------------------------------------------------------- rig


def test_natural_key_orders_numbers_numerically():
    names = ["cam10", "cam2", "cam1", "cam_b", "cam02x", "cam9"]
    assert sorted(names, key=natural_key) == ["cam1", "cam2", "cam02x", "cam9", "cam10", "cam_b"]
    assert sorted(names) != sorted(names, key=natural_key)  # a string sort would put cam10 before cam2


def test_rig_orders_naturally_and_looks_up():
    rig = CameraRig((_camera("cam10"), _camera("cam2"), _camera("cam1")))
    assert rig.names == ["cam1", "cam2", "cam10"]
    assert rig["cam2"].name == "cam2" and rig[2].name == "cam10" and len(rig) == 3
    assert rig.subset(["cam10", "cam1"]).names == ["cam1", "cam10"]
    with pytest.raises(HandannoError, match=r"camera 'cam3' is not in the rig \(cameras: cam1, cam2, cam10\)"):
        rig["cam3"]


def test_rig_rejects_duplicates():
    with pytest.raises(HandannoError, match="duplicate camera names: cam1"):
        CameraRig((_camera("cam1"), _camera("cam1")))


def test_rig_stacked_tensors_and_project():
    rig = CameraRig.from_cameras([_camera("a"), _camera("b", rvec=(0.0, 0.3, 0.0))])
    s = rig.stacked()
    assert s["K"].shape == (2, 3, 3) and s["dist"].shape == (2, 5) and s["t"].shape == (2, 3)
    assert s["image_size"].tolist() == [[1280, 720], [1280, 720]]
    t = rig.tensors(dtype=torch.float64)
    assert isinstance(t, CameraTensors)
    assert t.R.dtype == torch.float64 and t.image_size.dtype == torch.int64
    for k in ("K", "dist", "R", "t", "image_size"):
        np.testing.assert_array_equal(getattr(t, k).numpy(), s[k])
    t32 = t.to(dtype=torch.float32)
    assert t32.K.dtype == torch.float32 and t32.image_size.dtype == torch.int64 and t.K.dtype == torch.float64
    assert torch.equal(t.to("cpu").t, t.t)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.K = t.R
    pts = _points()
    uv = rig.project(pts)
    assert uv.shape == (2, len(pts), 2)
    np.testing.assert_allclose(uv[1], rig["b"].project(pts), atol=1e-12)


def test_camera_module_doctests():
    assert doctest.testmod(camera_module).failed == 0
