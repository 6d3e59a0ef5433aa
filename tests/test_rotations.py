"""handanno.rotations: round trips, numpy vs torch vs scipy, small and pi angles, gradients at zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handanno.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_matrix_torch,
    matrix_to_axis_angle,
    matrix_to_axis_angle_torch,
    nearest_rotation,
)

F64 = torch.float64


def _axis_angles(n: int, seed: int, max_angle: float = np.pi) -> np.ndarray:
    """``(n, 3)`` random axes times angles uniform in ``[0, max_angle)``."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0, max_angle, (n, 1))


def _unit_axes(n: int, seed: int) -> np.ndarray:
    axis = np.random.default_rng(seed).normal(size=(n, 3))
    return axis / np.linalg.norm(axis, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# numpy


def test_numpy_round_trip_any_batch_shape():
    r = _axis_angles(600, 0, max_angle=np.pi - 1e-6).reshape(4, 5, 30, 3)
    R = axis_angle_to_matrix(r)
    assert R.shape == (4, 5, 30, 3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-14)
    back = matrix_to_axis_angle(R)
    assert back.shape == r.shape
    np.testing.assert_allclose(back, r, rtol=0, atol=1e-12)


def test_numpy_single_vector_and_lists():
    R = axis_angle_to_matrix([0.0, 0.0, np.pi / 2])
    assert R.shape == (3, 3)
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    assert matrix_to_axis_angle(R.tolist()).shape == (3,)
    assert axis_angle_to_matrix(np.zeros((0, 3))).shape == (0, 3, 3)
    assert matrix_to_axis_angle(np.zeros((0, 3, 3))).shape == (0, 3)


def test_numpy_agrees_with_scipy():
    r = _axis_angles(2000, 1)
    want = Rotation.from_rotvec(r).as_matrix()
    np.testing.assert_allclose(axis_angle_to_matrix(r), want, rtol=0, atol=2e-15)
    inner = r[np.linalg.norm(r, axis=1) < np.pi - 1e-3]  # away from pi, where the sign is arbitrary
    got = matrix_to_axis_angle(Rotation.from_rotvec(inner).as_matrix())
    np.testing.assert_allclose(got, Rotation.from_rotvec(inner).as_rotvec(), rtol=0, atol=1e-13)


def test_small_angles():
    axes = _unit_axes(50, 2)
    for angle in (1e-15, 1e-12, 1e-9, 1e-6, 1e-3):
        r = axes * angle
        R = axis_angle_to_matrix(r)
        np.testing.assert_allclose(R, Rotation.from_rotvec(r).as_matrix(), rtol=0, atol=3e-16 + angle * 1e-12)
        np.testing.assert_allclose(matrix_to_axis_angle(R), r, rtol=1e-9, atol=angle * 1e-9)
        np.testing.assert_allclose(matrix_to_axis_angle_torch(torch.tensor(R)).numpy(), r, rtol=1e-9, atol=0)
    assert np.array_equal(axis_angle_to_matrix(np.zeros(3)), np.eye(3))
    assert np.array_equal(matrix_to_axis_angle(np.eye(3)), np.zeros(3))


@pytest.mark.parametrize("gap", [0.0, 1e-12, 1e-8, 1e-4, 0.3])
def test_angles_at_and_near_pi(gap):
    """Near pi the axis comes from R's symmetric part; the old antisymmetric-only inverse returned 0 at pi."""
    axes = np.concatenate([np.eye(3), -np.eye(3), _unit_axes(60, 3)])
    r = axes * (np.pi - gap)
    R = axis_angle_to_matrix(r)
    for back in (matrix_to_axis_angle(R), matrix_to_axis_angle_torch(torch.tensor(R)).numpy()):
        np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.pi - gap, rtol=0, atol=1e-12)
        np.testing.assert_allclose(axis_angle_to_matrix(back), R, rtol=0, atol=1e-12)  # the same rotation
        if gap > 0:  # below pi the vector is unique
            np.testing.assert_allclose(back, r, rtol=0, atol=1e-11)


def test_nearest_rotation():
    rng = np.random.default_rng(4)
    R = axis_angle_to_matrix(_axis_angles(20, 4))
    np.testing.assert_allclose(nearest_rotation(R), R, atol=1e-15)
    M = R + rng.normal(scale=1e-4, size=R.shape)
    P = nearest_rotation(M)
    np.testing.assert_allclose(P @ np.swapaxes(P, -1, -2), np.broadcast_to(np.eye(3), P.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(P), 1.0, atol=1e-14)
    np.testing.assert_allclose(P, Rotation.from_matrix(M).as_matrix(), atol=1e-14)  # scipy projects the same way
    assert np.linalg.det(nearest_rotation(np.diag([1.0, 1.0, -1.0]))) == pytest.approx(1.0)


def test_shape_errors():
    with pytest.raises(ValueError, match="axis_angle"):
        axis_angle_to_matrix(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="R"):
        matrix_to_axis_angle(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="axis_angle"):
        axis_angle_to_matrix_torch(torch.zeros(2))
    with pytest.raises(ValueError, match="R"):
        matrix_to_axis_angle_torch(torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# torch


def test_torch_round_trip_and_batch_shapes():
    r = torch.tensor(_axis_angles(120, 5, max_angle=np.pi - 1e-3), dtype=F64).reshape(2, 3, 20, 3)
    R = axis_angle_to_matrix_torch(r)
    assert R.shape == (2, 3, 20, 3, 3) and R.dtype == F64
    back = matrix_to_axis_angle_torch(R)
    assert back.shape == r.shape
    torch.testing.assert_close(back, r, rtol=0, atol=1e-6)  # the 1e-8 angle guard (R off orthonormal by ~1e-8)
    r32 = r.float()
    torch.testing.assert_close(matrix_to_axis_angle_torch(axis_angle_to_matrix_torch(r32)), r32, rtol=0, atol=1e-5)
    assert axis_angle_to_matrix_torch(r32).dtype == torch.float32


def test_numpy_torch_scipy_agree():
    r = _axis_angles(500, 6)
    R_np = axis_angle_to_matrix(r)
    R_t = axis_angle_to_matrix_torch(torch.tensor(r)).numpy()
    R_sp = Rotation.from_rotvec(r).as_matrix()
    np.testing.assert_allclose(R_t, R_sp, rtol=0, atol=1e-7)  # the 1e-8 angle guard
    np.testing.assert_allclose(R_t, R_np, rtol=0, atol=1e-7)
    # the inverses share their arithmetic
    np.testing.assert_allclose(matrix_to_axis_angle_torch(torch.tensor(R_sp)).numpy(), matrix_to_axis_angle(R_sp),
                               rtol=0, atol=1e-14)


def test_torch_matches_smplx_bit_for_bit():
    smplx_lbs = pytest.importorskip("smplx.lbs")
    r = torch.tensor(_axis_angles(64, 7), dtype=F64)
    assert torch.equal(axis_angle_to_matrix_torch(r), smplx_lbs.batch_rodrigues(r))


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-4])
def test_torch_gradient_finite_near_zero(angle):
    axes = torch.tensor(_unit_axes(8, 8), dtype=F64)
    r = (axes * angle).requires_grad_(True)
    G = torch.randn(8, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    (axis_angle_to_matrix_torch(r) * G).sum().backward()
    assert torch.isfinite(r.grad).all()
    # dR/dr_i at zero is the cross-product matrix of e_i (so(3)'s generators)
    gen = torch.zeros(3, 3, 3, dtype=F64)
    gen[0, 2, 1], gen[0, 1, 2], gen[1, 0, 2], gen[1, 2, 0], gen[2, 1, 0], gen[2, 0, 1] = 1, -1, 1, -1, 1, -1
    want = torch.einsum("nab,iab->ni", G, gen)
    torch.testing.assert_close(r.grad, want, rtol=0, atol=1e-3)


def test_torch_gradient_matches_finite_differences():
    r = torch.tensor(_axis_angles(4, 9, max_angle=3.0), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix_torch, (r,))
    assert torch.autograd.gradcheck(lambda x: matrix_to_axis_angle_torch(axis_angle_to_matrix_torch(x)), (r,))
