"""Axis-angle <-> rotation matrix, in numpy and in torch: the package's one copy of Rodrigues' formula.

Convention:
    - Axis-angle ``r`` (radians): the rotation by the angle ``|r|`` about the unit axis
      ``r / |r|``, right-handed (counter-clockwise looking down the axis). The zero vector
      is the identity.
    - Matrices act on column vectors, ``x_rotated = R @ x`` (row vectors: ``x @ R.T``).
    - Shapes: any leading batch shape, ``(*, 3)`` <-> ``(*, 3, 3)``.
    - numpy functions compute in float64 whatever the input dtype; the torch functions
      keep the input's dtype and device and are differentiable.
    - :func:`matrix_to_axis_angle` returns angles in ``[0, pi]``; at exactly ``pi`` the
      two opposite axes are the same rotation and either may come back.

The numpy :func:`axis_angle_to_matrix` is the arithmetic of the numpy LBS oracle
(:mod:`handanno.handmodel.lbs_reference`), so the shipped model files it generates stay
byte-identical; it agrees with ``scipy.spatial.transform.Rotation`` to a few ulps.
:func:`axis_angle_to_matrix_torch` is smplx's ``batch_rodrigues`` (the angle is
``|r + 1e-8|``, which keeps the gradient finite at zero rotation and moves the result by
about 1e-8 there), so :class:`handanno.handmodel.mano.ManoLayer` matches smplx exactly.

The inverses expect a rotation matrix: a matrix ``d`` off orthonormal gives an axis-angle
off by about ``d``. Pass a matrix read from a file or estimated by a fit through
:func:`nearest_rotation` first (as OpenCV's ``Rodrigues`` and scipy's ``from_matrix`` do).

Example:
    >>> import numpy as np
    >>> R = axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))  # 90 deg about z
    >>> (R @ np.array([1.0, 0.0, 0.0])).round(12).tolist()
    [0.0, 1.0, 0.0]
    >>> matrix_to_axis_angle(R).round(12).tolist()
    [0.0, 0.0, 1.570796326795]
    >>> axis_angle_to_matrix(np.zeros((4, 2, 3))).shape
    (4, 2, 3, 3)
"""

from __future__ import annotations

import numpy as np
import torch

# Below this cosine (angles above ~154 deg) the axis comes from the symmetric part of R:
# there the antisymmetric part, 2 sin(angle) axis, is too small to give it accurately.
_NEAR_PI_COS = -0.9


def _check_last(x, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape[x.ndim - len(shape) :]) != shape or x.ndim < len(shape):
        raise ValueError(f"{name} must have shape (*, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------
# numpy, float64
# ---------------------------------------------------------------------------------------


def axis_angle_to_matrix(axis_angle) -> np.ndarray:
    """``(*, 3)`` axis-angle (radians) to ``(*, 3, 3)`` rotation matrices, float64 (Rodrigues' formula).

    ``R = I + sin(a) K + (1 - cos(a)) K^2`` with ``a = |r|`` and ``K`` the cross-product
    matrix of the unit axis ``r / a``.

    Example:
        >>> axis_angle_to_matrix([np.pi, 0.0, 0.0]).round(12).tolist()
        [[1.0, 0.0, 0.0], [0.0, -1.0, -0.0], [0.0, 0.0, -1.0]]
    """
    aa = np.asarray(axis_angle, dtype=np.float64)
    _check_last(aa, (3,), "axis_angle")
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)  # (*, 1)
    k = aa / np.where(theta > 0, theta, 1.0)  # (*, 3) unit axis, 0 for the zero rotation
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1.0 - c) * K @ K


def matrix_to_axis_angle(R) -> np.ndarray:
    """``(*, 3, 3)`` rotation matrices to ``(*, 3)`` axis-angle, radians, angle in ``[0, pi]``, float64.

    The angle comes from the trace and the axis from the antisymmetric part
    ``R - R^T = 2 sin(a) K``; near ``pi``, where that part vanishes, the axis comes from the
    symmetric part ``(R + R^T) / 2 - cos(a) I = (1 - cos(a)) k k^T`` instead.

    Example:
        >>> matrix_to_axis_angle(axis_angle_to_matrix([0.0, 3.0, 0.0])).round(12).tolist()
        [0.0, 3.0, 0.0]
        >>> matrix_to_axis_angle(np.diag([1.0, -1.0, -1.0])).round(12).tolist()  # pi about x
        [3.14159265359, 0.0, 0.0]
    """
    R = np.asarray(R, dtype=np.float64)
    _check_last(R, (3, 3), "R")
    lead = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    cos_raw = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0  # (M,)
    cos = np.clip(cos_raw, -1.0, 1.0)
    theta = np.arccos(cos)
    w = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    s = np.sin(theta)
    scale = np.where(s > 1e-9, theta / np.maximum(2.0 * s, 1e-300), 0.5)
    out = w * scale[..., None]  # (M, 3)
    near = cos < _NEAR_PI_COS
    if near.any():
        out[near] = _near_pi(R[near], w[near], cos_raw[near])
    return out.reshape(*lead, 3)


def _near_pi(R: np.ndarray, w: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Axis-angle ``(M, 3)`` of rotations ``(M, 3, 3)`` by more than ~154 deg."""
    S = 0.5 * (R + np.swapaxes(R, -1, -2))
    kk = (S - cos[:, None, None] * np.eye(3)) / (1.0 - cos)[:, None, None]  # (M, 3, 3) = k k^T
    i = np.argmax(np.diagonal(kk, axis1=-2, axis2=-1), axis=-1)  # the axis' largest component
    col = np.take_along_axis(kk, i[:, None, None], axis=-1)[..., 0]  # (M, 3) = k k_i
    k = col / np.linalg.norm(col, axis=-1, keepdims=True)
    k = np.where(np.sum(k * w, axis=-1, keepdims=True) < 0, -k, k)  # w = 2 sin(a) k fixes the sign
    theta = np.arctan2(np.linalg.norm(w, axis=-1) / 2.0, cos)
    return k * theta[:, None]


def nearest_rotation(M) -> np.ndarray:
    """``(*, 3, 3)`` matrices to the nearest rotations (Frobenius norm, det +1), float64.

    ``U diag(1, 1, det(U V^T)) V^T`` from the SVD ``M = U S V^T``; a rotation comes back
    unchanged up to rounding.

    Example:
        >>> nearest_rotation(np.diag([1.001, 0.999, 1.0])).round(12).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    M = np.asarray(M, dtype=np.float64)
    _check_last(M, (3, 3), "M")
    U, _, Vt = np.linalg.svd(M)
    U[..., :, 2] *= np.sign(np.linalg.det(U @ Vt))[..., None]
    return U @ Vt


# ---------------------------------------------------------------------------------------
# torch, batched and differentiable
# ---------------------------------------------------------------------------------------


def axis_angle_to_matrix_torch(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(*, 3)`` axis-angle (radians) to ``(*, 3, 3)`` rotation matrices, as smplx's ``batch_rodrigues``.

    The angle is ``|r + 1e-8|`` (smplx's guard: the gradient stays finite at zero rotation,
    and the result moves by about 1e-8 rad there), so a MANO layer built on it matches
    ``smplx.lbs.batch_rodrigues`` exactly. Same dtype and device as the input.

    Example:
        >>> R = axis_angle_to_matrix_torch(torch.tensor([[0.0, 0.0, torch.pi / 2]]))
        >>> torch.allclose(R[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
        True
    """
    _check_last(axis_angle, (3,), "axis_angle")
    lead = axis_angle.shape[:-1]
    aa = axis_angle.reshape(-1, 3)  # (N, 3)
    N = aa.shape[0]
    angle = torch.norm(aa + 1e-8, dim=1, keepdim=True)  # (N, 1)
    axis = aa / angle  # (N, 3)
    cos = torch.cos(angle)[:, :, None]  # (N, 1, 1)
    sin = torch.sin(angle)[:, :, None]  # (N, 1, 1)
    rx, ry, rz = axis.unbind(dim=1)  # (N,) each
    zeros = torch.zeros_like(rx)
    K = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(N, 3, 3)  # cross-product matrix
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)[None]  # (1, 3, 3)
    R = eye + sin * K + (1 - cos) * torch.bmm(K, K)  # (N, 3, 3)
    return R.reshape(*lead, 3, 3)


def matrix_to_axis_angle_torch(R: torch.Tensor) -> torch.Tensor:
    """``(*, 3, 3)`` rotation matrices to ``(*, 3)`` axis-angle, radians, angle in ``[0, pi]``.

    The arithmetic of :func:`matrix_to_axis_angle`, in the input's dtype and on its device.
    Differentiable for angles strictly between 0 and pi; the gradient at exactly 0 or pi
    is not defined (``arccos`` at +-1).

    Example:
        >>> r = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, 3.1]], dtype=torch.float64)
        >>> torch.allclose(matrix_to_axis_angle_torch(axis_angle_to_matrix_torch(r)), r, atol=1e-7)
        True
    """
    _check_last(R, (3, 3), "R")
    lead = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    cos_raw = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0  # (M,)
    cos = cos_raw.clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    w = torch.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], dim=-1)
    tiny = torch.finfo(R.dtype).tiny
    s = torch.sin(theta)
    scale = torch.where(s > 1e-9, theta / (2.0 * s).clamp(min=tiny), torch.full_like(s, 0.5))
    out = w * scale[:, None]  # (M, 3)
    # near pi: the axis from the symmetric part (see matrix_to_axis_angle)
    near = cos < _NEAR_PI_COS
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    c = torch.where(near, cos_raw, torch.full_like(cos_raw, -1.0))  # keeps 1 - c away from 0 off the branch
    kk = (0.5 * (R + R.transpose(-1, -2)) - c[:, None, None] * eye) / (1.0 - c)[:, None, None]
    i = kk.diagonal(dim1=-2, dim2=-1).argmax(-1)
    col = torch.take_along_dim(kk, i[:, None, None], dim=-1)[..., 0]  # (M, 3)
    k = col / col.norm(dim=-1, keepdim=True).clamp(min=tiny)
    k = torch.where((k * w).sum(-1, keepdim=True) < 0, -k, k)
    from_symmetric = k * torch.atan2(w.norm(dim=-1) / 2.0, c)[:, None]
    out = torch.where(near[:, None], from_symmetric, out)
    return out.reshape(*lead, 3)
