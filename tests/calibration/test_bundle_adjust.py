"""Bundle adjustment: packing, the pure residual function, the Jacobian pattern, and recovery of a rig."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from handanno.calibration.board import parse_board_spec
from handanno.calibration.bundle_adjust import (
    BundleAdjustSettings,
    BundleLayout,
    BundleState,
    Observations,
    block_jacobi_preconditioner,
    bundle_adjust,
    intrinsics_matrices,
    intrinsics_vector,
    jacobian,
    jacobian_sparsity,
    matrix_to_rotvec,
    pack,
    parameter_blocks,
    project_observations,
    residuals,
    rotvec_to_matrix,
    structured_jacobian,
    unpack,
)
from handanno.calibration.camera import Camera, CameraRig, look_at
from handanno.calibration.extrinsics import rotation_angle_deg
from handanno.errors import HandannoError
from handanno.synth.boards import BoardPoseSample, SyntheticViewSettings, random_board_poses, synthetic_detections

SPEC = parse_board_spec("charuco:7x5:0.05:0.035:DICT_4X4_50")


def ring_rig(C: int, rng: np.random.Generator, radius: float = 0.9, size=(1280, 720)) -> CameraRig:
    """C cameras on a ring around the origin, alternately above and below, looking at it."""
    cams = []
    for c in range(C):
        a = 2 * np.pi * c / C + rng.normal(0, 0.05)
        center = np.array([radius * np.cos(a), radius * np.sin(a), 0.25 * (-1) ** c])
        R, t = look_at(center)
        f = rng.uniform(900, 1100)
        K = np.array([[f, 0, size[0] / 2 + rng.normal(0, 10)], [0, f * 1.002, size[1] / 2 + rng.normal(0, 10)],
                      [0, 0, 1]])  # fmt: skip
        dist = [rng.uniform(-0.2, 0.0), rng.uniform(0.0, 0.08), rng.normal(0, 5e-4), rng.normal(0, 5e-4), 0.0]
        cams.append(Camera(f"cam{c}", K, dist, R, t, size))
    return CameraRig.from_cameras(cams)


def simulate(rig: CameraRig, V: int, rng: np.random.Generator, noise_px: float = 0.0):
    """Board poses facing a point between two neighbouring cameras; dense ``(C, V, N, 2)`` detections.

    NaN where a camera does not see a corner.
    """
    dirs = np.stack([c.center / np.linalg.norm(c.center) for c in rig])  # (C, 3)
    i, w = rng.integers(0, len(rig), V), rng.uniform(0, 1, (V, 1))
    facing = w * dirs[i] + (1 - w) * dirs[(i + 1) % len(rig)]
    R_wb, t_wb = random_board_poses(SPEC, facing, BoardPoseSample(spread_m=0.1, max_tilt_deg=60), rng)
    uv = np.full((len(rig), V, SPEC.num_corners, 2), np.nan)
    for c, cam in enumerate(rig):
        for v, det in enumerate(synthetic_detections(cam, SPEC, R_wb, t_wb, SyntheticViewSettings(noise_px), rng)):
            uv[c, v, det.corner_ids] = det.corners_px
    return R_wb, t_wb, uv


def true_state(rig: CameraRig, R_wb: np.ndarray, t_wb: np.ndarray) -> BundleState:
    s = rig.stacked()
    return BundleState(matrix_to_rotvec(s["R"]), s["t"], intrinsics_vector(s["K"], s["dist"]),
                       matrix_to_rotvec(R_wb), t_wb)  # fmt: skip


@pytest.fixture(scope="module")
def problem():
    """6 cameras x 15 board poses, noise-free, with the true state expressed in cam0's frame."""
    rng = np.random.default_rng(3)
    rig = ring_rig(6, rng)
    R_wb, t_wb, uv = simulate(rig, 15, rng)
    obs = Observations.from_dense(uv)
    return rig, true_state(rig, R_wb, t_wb), obs


def _perturbed(state: BundleState, rng: np.random.Generator, fixed_camera: int = 0) -> BundleState:
    cam_rvec = state.cam_rvec + rng.normal(0, np.deg2rad(1.0), state.cam_rvec.shape)
    cam_t = state.cam_t + rng.normal(0, 0.01, state.cam_t.shape)
    cam_rvec[fixed_camera], cam_t[fixed_camera] = state.cam_rvec[fixed_camera], state.cam_t[fixed_camera]
    board_rvec = state.board_rvec + rng.normal(0, 0.02, state.board_rvec.shape)
    board_t = state.board_t + rng.normal(0, 0.01, state.board_t.shape)
    return BundleState(cam_rvec, cam_t, state.intrinsics, board_rvec, board_t)


def test_observations_from_dense_skip_nan_and_sort_by_camera(problem):
    _, _, obs = problem
    assert np.all(np.diff(obs.cam_idx) >= 0) and np.all(np.isfinite(obs.uv_px))
    ranges = obs.camera_ranges(6)
    assert ranges[0, 0] == 0 and ranges[-1, 1] == len(obs) and np.all(ranges[1:, 0] == ranges[:-1, 1])
    with pytest.raises(HandannoError, match="sorted by camera"):
        Observations(np.array([1, 0]), np.array([0, 0]), np.array([0, 1]), np.zeros((2, 2)))


def test_intrinsics_vector_round_trip():
    K = np.array([[900.0, 0, 641], [0, 905, 359], [0, 0, 1]])
    dist = np.array([-0.1, 0.02, 1e-3, -2e-3, 0.001])
    K2, d2 = intrinsics_matrices(intrinsics_vector(K, dist))
    np.testing.assert_array_equal(K2, K)
    np.testing.assert_array_equal(d2, dist)


@pytest.mark.parametrize(("free", "cams"), [((), None), (tuple(range(9)), None), ((0, 1, 4), None), ((0, 4), (1, 5))])
def test_pack_unpack_round_trip(problem, free, cams):
    _, state, _ = problem
    layout = BundleLayout(6, 15, fixed_camera=2, free_intrinsics=free, intrinsics_cameras=cams)
    x = pack(layout, state)
    n_refined = 6 if cams is None else len(cams)
    assert x.shape == (layout.size,) == (6 * 5 + n_refined * len(free) + 6 * 15,)
    back = unpack(layout, x, state)
    for f in dataclasses.fields(BundleState):
        np.testing.assert_array_equal(getattr(back, f.name), getattr(state, f.name))
    # fixed values come from base, not from x
    moved = unpack(layout, x + 1.0, state)
    np.testing.assert_array_equal(moved.cam_rvec[2], state.cam_rvec[2])


def test_residuals_are_zero_at_the_truth_and_pure(problem):
    _, state, obs = problem
    layout = BundleLayout(6, 15)
    x = pack(layout, state)
    x_before, base_before = x.copy(), state.cam_t.copy()
    r = residuals(x, layout, obs, SPEC.object_points(), state)
    assert r.shape == (2 * len(obs),)
    assert np.abs(r).max() < 1e-6  # noise-free detections are exact projections
    np.testing.assert_array_equal(x, x_before)  # nothing mutated
    np.testing.assert_array_equal(state.cam_t, base_before)
    assert not state.cam_t.flags.writeable


def test_convention_residual_order_is_u_then_v_per_observation(problem):
    _, state, obs = problem
    layout = BundleLayout(6, 15)
    x = pack(layout, state)
    shift = dataclasses.replace(obs, uv_px=obs.uv_px + np.array([1.0, -2.0]))
    r = residuals(x, layout, shift, SPEC.object_points(), state).reshape(-1, 2)
    np.testing.assert_allclose(r, np.tile([-1.0, 2.0], (len(obs), 1)), atol=1e-6)


def test_project_observations_matches_camera_project(problem):
    rig, state, obs = problem
    uv = project_observations(state, obs, SPEC.object_points())
    m = len(obs) // 2
    c, v, n = obs.cam_idx[m], obs.view_idx[m], obs.corner_idx[m]
    p_world = rotvec_to_matrix(state.board_rvec[v]) @ SPEC.object_points()[n] + state.board_t[v]
    np.testing.assert_allclose(uv[m], rig[int(c)].project(p_world[None])[0], atol=1e-9)


@pytest.mark.parametrize(("free", "cams"), [((), None), (tuple(range(9)), None), ((0, 1, 4), (0, 3))])
def test_jacobian_sparsity_covers_the_dense_finite_difference_jacobian(problem, free, cams):
    """Oracle: a plain dense forward-difference Jacobian, column by column (also for the analytic one)."""
    _, state, obs = problem
    layout = BundleLayout(6, 15, fixed_camera=0, free_intrinsics=free, intrinsics_cameras=cams)
    x = pack(layout, state)
    args = (layout, obs, SPEC.object_points(), state)
    r0 = residuals(x, *args)
    dense = np.zeros((r0.size, x.size))
    for j in range(x.size):
        h = 1e-6 * max(1.0, abs(x[j]))
        xp = x.copy()
        xp[j] += h
        dense[:, j] = (residuals(xp, *args) - r0) / h
    pattern = jacobian_sparsity(layout, obs).toarray().astype(bool)
    assert pattern.shape == dense.shape
    assert not np.any((np.abs(dense) > 1e-9) & ~pattern)  # nothing outside the pattern
    per_row = pattern.sum(axis=1)  # board (+ camera pose unless fixed) (+ intrinsics where refined)
    assert set(np.unique(per_row)) <= {6, 12, 6 + len(free), 12 + len(free)}
    structured = structured_jacobian(x, *args).toarray()
    np.testing.assert_allclose(structured, dense, rtol=1e-3, atol=1e-3 * np.abs(dense).max())
    analytic = jacobian(x, *args).toarray()
    np.testing.assert_allclose(analytic, dense, rtol=1e-3, atol=1e-4 * np.abs(dense).max())


def test_analytic_jacobian_matches_central_differences_away_from_identity(problem):
    """At perturbed poses (non-trivial rotations) and all intrinsics free, to 1e-6 of the largest entry."""
    _, state, obs = problem
    state = _perturbed(state, np.random.default_rng(5))
    layout = BundleLayout(6, 15, fixed_camera=1, free_intrinsics=tuple(range(9)))
    x = pack(layout, state)
    args = (layout, obs, SPEC.object_points(), state)
    central = np.zeros((2 * len(obs), x.size))
    for j in range(x.size):
        h = 1e-6 * max(1.0, abs(x[j]))
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        central[:, j] = (residuals(xp, *args) - residuals(xm, *args)) / (2 * h)
    np.testing.assert_allclose(jacobian(x, *args).toarray(), central, atol=1e-6 * np.abs(central).max())


def test_block_jacobi_preconditioner_whitens_each_block(problem):
    _, state, obs = problem
    layout = BundleLayout(6, 15, free_intrinsics=tuple(range(9)))
    args = (layout, obs, SPEC.object_points(), state)
    J = structured_jacobian(pack(layout, state), *args)
    blocks = parameter_blocks(layout)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(layout.size))
    D = block_jacobi_preconditioner(J, blocks)
    JD = (J @ D).toarray()
    for b in blocks:  # exact up to the ridge: 1e-10 / (smallest eigenvalue of the scaled block, ~1e-5 here)
        np.testing.assert_allclose(JD[:, b].T @ JD[:, b], np.eye(len(b)), atol=1e-4)


def test_bundle_adjust_recovers_perturbed_poses(problem):
    """6 cameras x 15 board poses from 1 deg / 1 cm perturbations: exact recovery on exact data."""
    rig, state, obs = problem
    init = _perturbed(state, np.random.default_rng(0))
    result = bundle_adjust(init, obs, SPEC.object_points(), BundleAdjustSettings(loss="linear"))
    assert result.initial_rms_px > 5 and result.rms_px < 1e-4
    angles = rotation_angle_deg(rotvec_to_matrix(result.state.cam_rvec), rotvec_to_matrix(state.cam_rvec))
    assert angles.max() < 1e-5
    np.testing.assert_allclose(result.state.cam_t, state.cam_t, atol=1e-7)
    np.testing.assert_array_equal(result.state.cam_rvec[0], state.cam_rvec[0])  # the gauge camera stays


def _centres(state: BundleState) -> np.ndarray:
    return -np.einsum("cji,cj->ci", rotvec_to_matrix(state.cam_rvec), state.cam_t)  # (C, 3) = -R^T t


def test_bundle_adjust_robust_loss_resists_outliers():
    """0.3 px noise plus 2 % gross outliers (+-30 px), intrinsics held: soft_l1 keeps the rig, linear loss does not."""
    rng = np.random.default_rng(7)
    rig = ring_rig(6, rng)
    R_wb, t_wb, uv = simulate(rig, 20, rng, noise_px=0.3)
    obs = Observations.from_dense(uv)
    bad = rng.random(len(obs)) < 0.02
    corrupted = dataclasses.replace(obs, uv_px=obs.uv_px + bad[:, None] * rng.uniform(-30, 30, (len(obs), 2)))
    state = true_state(rig, R_wb, t_wb)
    init = _perturbed(state, rng)
    robust = bundle_adjust(init, corrupted, SPEC.object_points(), BundleAdjustSettings())
    plain = bundle_adjust(init, corrupted, SPEC.object_points(), BundleAdjustSettings(loss="linear"))
    assert robust.success
    inlier_rms = np.sqrt(np.mean(np.sum(robust.residuals_px[~bad] ** 2, axis=1)))
    assert 0.35 < inlier_rms < 0.5  # 2D RMS of 0.3 px per-axis noise is 0.42
    robust_mm = np.linalg.norm(_centres(robust.state) - _centres(state), axis=1).max() * 1000
    plain_mm = np.linalg.norm(_centres(plain.state) - _centres(state), axis=1).max() * 1000
    assert robust_mm < 3.0
    assert plain_mm > 3 * robust_mm


def test_bundle_adjust_refines_intrinsics(problem):
    """Exact data, focal 1 % and principal point 5 px off, k1 off by 0.02: all recovered."""
    rig, state, obs = problem
    rng = np.random.default_rng(1)
    wrong = state.intrinsics + np.r_[0, 0, 5.0, -5.0, 0.02, 0, 0, 0, 0]
    wrong = wrong * np.r_[1.01, 1.01, np.ones(7)]
    init = dataclasses.replace(_perturbed(state, rng), intrinsics=wrong)
    held = bundle_adjust(init, obs, SPEC.object_points(), BundleAdjustSettings(loss="linear"))
    settings = BundleAdjustSettings(loss="linear", free_intrinsics=("fx", "fy", "cx", "cy", "k1"))
    free = bundle_adjust(init, obs, SPEC.object_points(), settings)
    assert held.rms_px > 0.1  # board poses absorb most of the wrong intrinsics, not all
    assert free.rms_px < 1e-4
    np.testing.assert_allclose(free.state.intrinsics[:, :5], state.intrinsics[:, :5], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(free.state.intrinsics[:, 5:], wrong[:, 5:])  # k2, p1, p2, k3 held


def test_bundle_adjust_rejects_unknown_intrinsic_names(problem):
    _, state, obs = problem
    with pytest.raises(HandannoError, match="free_intrinsics"):
        bundle_adjust(state, obs, SPEC.object_points(), BundleAdjustSettings(free_intrinsics=("f",)))
