"""Tests of handanno.calibration.triangulate: weighted DLT (numpy, torch), robust variants, reprojection."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from handanno.calibration.camera import Camera, CameraRig
from handanno.calibration.triangulate import (
    TriangulationResult,
    reprojection_errors,
    triangulate_dlt,
    triangulate_dlt_torch,
    triangulate_robust,
    undistort_normalized_torch,
)
from handanno.errors import HandannoError


def look_at(center: np.ndarray, target: np.ndarray, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera (R, t) of a camera at ``center`` looking at ``target`` (OpenCV axes)."""
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    Rz = cv2.Rodrigues(np.array([0.0, 0.0, roll]))[0]
    R = Rz @ R
    return R, -R @ center


def random_rig(seed: int, n_cams: int | None = None, distortion: bool = True) -> CameraRig:
    """4-8 cameras 1.2-2.5 m from the origin, looking near it, with random intrinsics and distortion."""
    rng = np.random.default_rng(seed)
    C = n_cams or int(rng.integers(4, 9))
    cams = []
    for c in range(C):
        d = rng.normal(size=3)
        center = d / np.linalg.norm(d) * rng.uniform(1.2, 2.5)
        R, t = look_at(center, rng.uniform(-0.05, 0.05, 3), rng.uniform(-np.pi, np.pi))
        f = rng.uniform(800, 1400)
        K = [[f, 0.0, 640 + rng.uniform(-20, 20)], [0.0, f * rng.uniform(0.98, 1.02), 360 + rng.uniform(-20, 20)],
             [0.0, 0.0, 1.0]]
        dist = ([rng.uniform(-0.3, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(-1e-3, 1e-3), rng.uniform(-1e-3, 1e-3),
                 rng.uniform(-0.02, 0.02)] if distortion else np.zeros(5))
        cams.append(Camera(f"cam{c}", K, dist, R, t, (1280, 720)))
    return CameraRig(tuple(cams))


def random_points(seed: int, n: int = 21) -> np.ndarray:
    return np.random.default_rng(seed + 1000).uniform(-0.12, 0.12, (n, 3))


def oracle_dlt(uv_px: np.ndarray, conf: np.ndarray, rig: CameraRig) -> np.ndarray:
    """Slow, obvious reference: per point, per view, build the rows and solve (OpenCV undistortion)."""
    C, N, _ = uv_px.shape
    out = np.full((N, 3), np.nan)
    for n in range(N):
        rows = []
        for c, cam in enumerate(rig):
            if not (conf[c, n] > 0) or np.any(np.isnan(uv_px[c, n])):
                continue
            x, y = cv2.undistortPoints(uv_px[c, n].reshape(1, 1, 2), cam.K, cam.dist,
                                       criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)).ravel()
            P = np.hstack([cam.R, cam.t[:, None]])
            rows += [conf[c, n] * (x * P[2] - P[0]), conf[c, n] * (y * P[2] - P[1])]
        if len(rows) >= 4:
            v = np.linalg.svd(np.array(rows))[2][-1]
            out[n] = v[:3] / v[3]
    return out


# ----------------------------------------------------------------------------- DLT


@pytest.mark.parametrize("seed", range(6))
def test_project_then_triangulate_recovers_points(seed):
    rig = random_rig(seed)
    X = random_points(seed)
    uv = rig.project(X)
    X_hat = triangulate_dlt(uv, None, rig)
    np.testing.assert_allclose(X_hat, X, atol=1e-6)  # noise-free: float64 round-off (~1e-12 m)
    np.testing.assert_allclose(reprojection_errors(X_hat, uv, rig), 0.0, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_batched_dlt_matches_per_point_oracle_with_noise_and_weights(seed):
    rig = random_rig(seed)
    X = random_points(seed)
    rng = np.random.default_rng(seed)
    uv = rig.project(X) + rng.normal(scale=2.0, size=(len(rig), len(X), 2))
    conf = rng.uniform(0.1, 1.0, (len(rig), len(X)))
    conf[rng.random(conf.shape) < 0.2] = 0.0
    # Same algebra, different code paths; agreement to 1e-9 m (round-off of two SVD routes).
    np.testing.assert_allclose(triangulate_dlt(uv, conf, rig), oracle_dlt(uv, conf, rig), atol=1e-9)


def test_two_views_match_opencv_triangulate_points():
    rig = random_rig(7, n_cams=2)
    X = random_points(7)
    uv = rig.project(X) + np.random.default_rng(7).normal(scale=1.0, size=(2, len(X), 2))
    xy = [cv2.undistortPoints(uv[c].reshape(-1, 1, 2), cam.K, cam.dist,
                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)).reshape(-1, 2).T
          for c, cam in enumerate(rig)]
    P = [np.hstack([cam.R, cam.t[:, None]]) for cam in rig]
    h = cv2.triangulatePoints(P[0], P[1], xy[0], xy[1])
    np.testing.assert_allclose(triangulate_dlt(uv, None, rig), (h[:3] / h[3]).T, atol=1e-9)


def test_accepts_stacked_arrays_like_the_rig():
    rig = random_rig(1)
    uv = rig.project(random_points(1))
    s = rig.stacked()
    np.testing.assert_array_equal(triangulate_dlt(uv, None, (s["K"], s["dist"], s["R"], s["t"])),
                                  triangulate_dlt(uv, None, rig))


def test_conf_weights_matter():
    rig = random_rig(2, n_cams=5)
    X = random_points(2, n=200)
    uv = rig.project(X)
    rng = np.random.default_rng(2)
    uv[0] += rng.normal(scale=25.0, size=uv[0].shape)  # one badly detected view
    uv[1:] += rng.normal(scale=0.5, size=uv[1:].shape)
    equal = np.ones((5, 200))
    low = equal.copy()
    low[0] = 0.05
    err_equal = np.linalg.norm(triangulate_dlt(uv, equal, rig) - X, axis=1).mean()
    err_low = np.linalg.norm(triangulate_dlt(uv, low, rig) - X, axis=1).mean()
    assert err_low < 0.5 * err_equal
    # Scaling every confidence by the same factor changes nothing.
    np.testing.assert_allclose(triangulate_dlt(uv, 3.0 * low, rig), triangulate_dlt(uv, low, rig), atol=1e-12)


def test_conf_zero_equals_removing_the_view():
    rig = random_rig(3, n_cams=5)
    X = random_points(3)
    uv = rig.project(X) + np.random.default_rng(3).normal(scale=1.0, size=(5, len(X), 2))
    conf = np.ones((5, len(X)))
    conf[2] = 0.0
    sub = rig.subset([n for n in rig.names if n != rig.names[2]])
    np.testing.assert_allclose(triangulate_dlt(uv, conf, rig), triangulate_dlt(np.delete(uv, 2, axis=0), None, sub),
                               atol=1e-12)


def test_missing_observations_nan_and_single_view():
    rig = random_rig(4, n_cams=4)
    X = random_points(4, n=5)
    uv = rig.project(X)
    conf = np.ones((4, 5))
    uv[:, 0] = np.nan  # point 0: seen nowhere
    uv[1:, 1] = np.nan  # point 1: seen by one view
    conf[1:, 2] = 0.0  # point 2: one view by confidence
    conf[:2, 3] = np.nan  # point 3: two views by NaN confidence, two remain
    uv[0, 4] = np.nan  # point 4: one NaN view, three remain
    out = triangulate_dlt(uv, conf, rig)
    assert np.all(np.isnan(out[:3]))
    np.testing.assert_allclose(out[3:], X[3:], atol=1e-6)
    # NaN pixels and conf 0 are the same thing.
    uv2 = rig.project(X)
    conf2 = np.ones((4, 5))
    conf2[0, 4] = 0.0
    np.testing.assert_array_equal(triangulate_dlt(uv2, conf2, rig)[4], out[4])


def test_single_camera_rig_gives_nan():
    rig = random_rig(5, n_cams=1)
    assert np.all(np.isnan(triangulate_dlt(rig.project(random_points(5)), None, rig)))


def test_bad_inputs_raise():
    rig = random_rig(6, n_cams=4)
    uv = rig.project(random_points(6))
    with pytest.raises(HandannoError, match="conf must be >= 0"):
        triangulate_dlt(uv, -np.ones(uv.shape[:2]), rig)
    with pytest.raises(HandannoError, match="conf must have shape"):
        triangulate_dlt(uv, np.ones((4, 3)), rig)
    with pytest.raises(HandannoError, match="uv_px must have shape"):
        triangulate_dlt(uv[..., 0], None, rig)
    with pytest.raises(HandannoError, match="uv_px has 3 cameras but the rig has 4"):
        triangulate_dlt(uv[:3], None, rig)


# ----------------------------------------------------------------------------- reprojection


def test_reprojection_errors_missing_nan_and_behind_camera_inf():
    rig = random_rig(8, n_cams=3)
    X = random_points(8, n=4)
    uv = rig.project(X)
    uv[0, 0] += [3.0, 4.0]
    uv[1, 1] = np.nan
    X_query = X.copy()
    X_query[3] = np.nan
    err = reprojection_errors(X_query, uv, rig)
    assert err.shape == (3, 4)
    assert err[0, 0] == pytest.approx(5.0, abs=1e-9)
    assert np.isnan(err[1, 1]) and np.all(np.isnan(err[:, 3]))
    conf = np.ones((3, 4))
    conf[2, 2] = 0.0
    assert np.isnan(reprojection_errors(X, uv, rig, conf)[2, 2])
    behind = (2 * rig[0].center - X[2])[None]  # the point mirrored through camera 0's centre
    assert np.isinf(reprojection_errors(behind, uv[:, 2:3], rig)[0, 0])


# ----------------------------------------------------------------------------- robust


def _with_outlier_views(seed: int, n_outlier_views: int, noise_px: float = 0.5):
    rig = random_rig(seed, n_cams=7)
    X = random_points(seed, n=100)
    rng = np.random.default_rng(seed)
    uv = rig.project(X) + rng.normal(scale=noise_px, size=(7, 100, 2))
    bad = np.zeros((7, 100), bool)
    for n in range(100):
        bad[rng.choice(7, n_outlier_views, replace=False), n] = True
    angle = rng.uniform(0, 2 * np.pi, bad.sum())
    uv[bad] += rng.uniform(60, 150, bad.sum())[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return rig, X, uv, bad


@pytest.mark.parametrize("method", ["drop_worst", "ransac"])
def test_robust_drops_the_outlier_view(method):
    rig, X, uv, bad = _with_outlier_views(11, n_outlier_views=1)
    res = triangulate_robust(uv, None, rig, max_reproj_px=15.0, method=method)
    assert isinstance(res, TriangulationResult)
    assert not np.any(res.inlier_mask & bad)  # every outlier view rejected
    assert np.all(res.num_inliers == 6)  # and every good view kept
    # 0.5 px noise at f ~1000 px and 1-2.5 m is ~1 mm per view; 6 views average it down.
    assert np.linalg.norm(res.points - X, axis=1).max() < 5e-3
    assert np.linalg.norm(triangulate_dlt(uv, None, rig) - X, axis=1).max() > 2e-2  # plain DLT is hurt
    assert np.all(res.reproj_err_px[res.inlier_mask] <= 15.0)
    assert np.all(res.reproj_err_px[bad] > 15.0)  # errors are reported for rejected views too


def test_ransac_handles_several_outlier_views():
    rig, X, uv, bad = _with_outlier_views(12, n_outlier_views=3)
    res = triangulate_robust(uv, None, rig, method="ransac")
    assert not np.any(res.inlier_mask & bad)
    assert np.linalg.norm(res.points - X, axis=1).max() < 5e-3


@pytest.mark.parametrize("method", ["drop_worst", "ransac"])
def test_robust_without_outliers_equals_weighted_dlt(method):
    rig = random_rig(13)
    X = random_points(13)
    rng = np.random.default_rng(13)
    uv = rig.project(X) + rng.normal(scale=0.5, size=(len(rig), len(X), 2))
    conf = rng.uniform(0.2, 1.0, (len(rig), len(X)))
    conf[0, :5] = 0.0
    res = triangulate_robust(uv, conf, rig, method=method)
    np.testing.assert_array_equal(res.inlier_mask, conf > 0)
    np.testing.assert_allclose(res.points, triangulate_dlt(uv, conf, rig), atol=1e-12)


@pytest.mark.parametrize("method", ["drop_worst", "ransac"])
def test_robust_two_disagreeing_views_give_nan(method):
    rig = random_rig(14, n_cams=3)
    X = random_points(14, n=3)
    uv = rig.project(X)
    uv[2, :] = np.nan  # only two views left
    uv[0, 1] += [0.0, 80.0]  # point 1: the two views disagree (an epipolar error)
    res = triangulate_robust(uv, None, rig, method=method)
    assert np.all(np.isnan(res.points[1])) and not res.inlier_mask[:, 1].any()
    np.testing.assert_allclose(res.points[[0, 2]], X[[0, 2]], atol=1e-6)


def test_robust_result_is_frozen_and_bad_args_raise():
    rig = random_rig(15, n_cams=3)
    uv = rig.project(random_points(15))
    res = triangulate_robust(uv, None, rig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.points = None
    with pytest.raises(HandannoError, match="unknown method"):
        triangulate_robust(uv, None, rig, method="lmeds")
    with pytest.raises(HandannoError, match="max_reproj_px"):
        triangulate_robust(uv, None, rig, max_reproj_px=0.0)


# ----------------------------------------------------------------------------- torch


def _torch_cams(rig: CameraRig, dtype=torch.float64, device="cpu"):
    t = rig.tensors(device=device, dtype=dtype)
    return t.K, t.dist, t.R, t.t


def test_torch_equals_numpy():
    rig = random_rig(20)
    C = len(rig)
    rng = np.random.default_rng(20)
    B, J = 3, 21
    X = rng.uniform(-0.12, 0.12, (B, J, 3))
    uv = np.stack([rig.project(X[b]) for b in range(B)]) + rng.normal(scale=2.0, size=(B, C, J, 2))
    conf = rng.uniform(0.1, 1.0, (B, C, J))
    conf[rng.random(conf.shape) < 0.15] = 0.0
    uv[0, :, 0] = np.nan  # a point seen nowhere
    conf[1, 1:, 1] = np.nan  # a point seen once
    out = triangulate_dlt_torch(torch.tensor(uv), torch.tensor(conf), *_torch_cams(rig)).numpy()
    ref = np.stack([triangulate_dlt(uv[b], conf[b], rig) for b in range(B)])
    assert out.shape == (B, J, 3)
    np.testing.assert_allclose(out, ref, atol=1e-9, equal_nan=True)  # Newton vs OpenCV undistortion, both ~1e-15
    assert np.isnan(out[0, 0]).all() and np.isnan(out[1, 1]).all()


def test_torch_per_batch_cameras_equal_shared_cameras():
    rig = random_rig(21, n_cams=4)
    X = random_points(21)
    uv = torch.tensor(np.stack([rig.project(X)] * 2))
    K, dist, R, t = _torch_cams(rig)
    shared = triangulate_dlt_torch(uv, None, K, dist, R, t)
    per_batch = triangulate_dlt_torch(uv, None, *(x.expand(2, *x.shape) for x in (K, dist, R, t)))
    np.testing.assert_array_equal(shared.numpy(), per_batch.numpy())
    np.testing.assert_allclose(shared[0].numpy(), X, atol=1e-6)


def test_torch_undistortion_matches_opencv():
    xy = np.random.default_rng(22).uniform(-0.5, 0.5, (500, 2))
    dist = np.array([-0.3, 0.1, 1e-3, -1e-3, -0.02])
    pts = np.concatenate([xy, np.ones((500, 1))], axis=1)
    distorted = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), np.eye(3), dist)[0].reshape(-1, 2)
    out = undistort_normalized_torch(torch.tensor(distorted), torch.tensor(dist))
    np.testing.assert_allclose(out.numpy(), xy, atol=1e-12)


def test_torch_gradients_match_finite_differences_float64():
    # A central-difference gradient check (torch.autograd.gradcheck's idea, without its slow first import).
    rig = random_rig(23, n_cams=3)
    cams = _torch_cams(rig)
    noise = np.random.default_rng(23).normal(scale=3.0, size=(3, 2, 2))  # so that the weights matter
    uv0 = torch.tensor(rig.project(random_points(23, n=2))[None] + noise)  # (1, 3, 2, 2)
    conf0 = torch.tensor([[[1.0, 0.7], [0.5, 1.0], [0.9, 0.3]]], dtype=torch.float64)
    probe = torch.tensor(np.random.default_rng(23).normal(size=(1, 2, 3)))

    def loss(uv, conf):
        return (triangulate_dlt_torch(uv, conf, *cams) * probe).sum()

    uv, conf = uv0.clone().requires_grad_(), conf0.clone().requires_grad_()
    loss(uv, conf).backward()
    for x0, grad, eps in ((uv0, uv.grad, 1e-4), (conf0, conf.grad, 1e-6)):
        numeric = torch.zeros_like(x0)
        for i in range(x0.numel()):
            d = torch.zeros(x0.numel(), dtype=x0.dtype)
            d[i] = eps
            d = d.view_as(x0)
            up, down = (loss(uv0 + d, conf0), loss(uv0 - d, conf0)) if x0 is uv0 else (loss(uv0, conf0 + d),
                                                                                      loss(uv0, conf0 - d))
            numeric.view(-1)[i] = (up - down) / (2 * eps)
        # Central differences are O(eps^2) accurate; 1e-6 relative to the gradient scale is ample.
        assert float(numeric.abs().max()) > 1e-5  # a gradient worth checking
        np.testing.assert_allclose(grad.numpy(), numeric.numpy(), atol=1e-6 * float(numeric.abs().max()))


def test_torch_missing_points_keep_gradients_finite():
    rig = random_rig(24, n_cams=3)
    uv_np = rig.project(random_points(24, n=4))[None]
    uv_np[0, :, 0] = np.nan  # unsolvable
    uv_np[0, 1:, 1] = np.nan  # unsolvable (one view)
    uv = torch.tensor(uv_np, requires_grad=True)
    out = triangulate_dlt_torch(uv, None, *_torch_cams(rig))
    assert torch.isnan(out[0, :2]).all() and torch.isfinite(out[0, 2:]).all()
    out.nan_to_num(0.0).sum().backward()
    assert torch.isfinite(uv.grad).all()
    assert (uv.grad[0, :, 0] == 0).all()


def test_torch_float32_close_to_float64():
    rig = random_rig(25)
    X = random_points(25)
    uv = torch.tensor(rig.project(X)[None])
    out = triangulate_dlt_torch(uv.float(), None, *_torch_cams(rig, torch.float32))
    # float32 SVD on normalised coordinates: ~1e-7 relative, well under 0.1 mm at 1-2.5 m.
    np.testing.assert_allclose(out[0].double().numpy(), X, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_equals_cpu():
    rig = random_rig(26)
    X = random_points(26)
    uv = torch.tensor(np.stack([rig.project(X)] * 4))
    cpu = triangulate_dlt_torch(uv, None, *_torch_cams(rig))
    gpu = triangulate_dlt_torch(uv.cuda(), None, *_torch_cams(rig, device="cuda"))
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-9, rtol=0)  # cuSOLVER vs LAPACK round-off


def test_empty_inputs_give_empty_outputs():
    rig = random_rig(27, n_cams=3)
    uv = np.zeros((3, 0, 2))
    assert triangulate_dlt(uv, None, rig).shape == (0, 3)
    for method in ("drop_worst", "ransac"):
        res = triangulate_robust(uv, None, rig, method=method)
        assert res.points.shape == (0, 3) and res.inlier_mask.shape == (3, 0)
    empty = torch.zeros(2, 3, 0, 2, dtype=torch.float64)
    assert triangulate_dlt_torch(empty, None, *_torch_cams(rig)).shape == (2, 0, 3)
