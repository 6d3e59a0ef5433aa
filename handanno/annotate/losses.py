"""The fitter's loss terms: pure tensor-in, tensor-out functions.

Convention:
    - B frames, C cameras, J = 21 keypoints (FreiHAND order), V vertices.
    - 3D points in world coordinates, metres; 2D in image pixels (pixel (0, 0) is the
      centre of the top-left pixel); cameras as in :mod:`handanno.calibration.camera`.
    - Every loss returns a per-frame value ``(B,)`` so frames stay independent in a batch
      (a frame's loss never depends on another frame's data, except the temporal term,
      which couples neighbours on purpose). Callers sum or mean them.
"""

from __future__ import annotations

import torch

from handanno.calibration.camera import CameraTensors, project_points
from handanno.check import check_shape


def geman_mcclure(residual_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals.

    ``rho(r) = sigma^2 r^2 / (sigma^2 + r^2)``: quadratic (``~ r^2``) well below sigma,
    saturating at ``sigma^2`` for outliers (Geman & McClure 1987; SMPLify's GMoF).

    Args:
        residual_sq: ``(*)`` squared residuals, in the units of ``sigma`` squared.
        sigma: the scale where the penalty turns robust, same units as the residual.

    Returns:
        ``(*)`` the penalty.

    Example:
        >>> import torch
        >>> [round(v, 6) for v in geman_mcclure(torch.tensor([0.0, 1.0, 1e6]), sigma=1.0).tolist()]
        [0.0, 0.5, 0.999999]
    """
    s2 = sigma * sigma
    return s2 * residual_sq / (s2 + residual_sq)


def project_to_views(points_world: torch.Tensor, cams: CameraTensors) -> torch.Tensor:
    """Project ``(B, N, 3)`` world points into every camera: ``(B, C, N, 2)`` pixels.

    ``cams``: the ``C`` cameras (:meth:`handanno.calibration.camera.CameraRig.tensors`).
    """
    B, N, _ = points_world.shape
    C = cams.K.shape[0]
    pts = points_world[:, None].expand(B, C, N, 3)  # (B, C, N, 3)
    return project_points(pts, cams.K[None], cams.dist[None], cams.R[None], cams.t[None])


def keypoint_reprojection_loss(
    joints_world: torch.Tensor,
    uv_px: torch.Tensor,
    conf: torch.Tensor,
    cams: CameraTensors,
    sigma_px: float,
) -> torch.Tensor:
    """Confidence-weighted robust reprojection of the keypoints in every view.

    Args:
        joints_world: ``(B, J, 3)`` model keypoints, metres.
        uv_px: ``(B, C, J, 2)`` observed keypoints, pixels (any value where conf is 0).
        conf: ``(B, C, J)`` confidences in [0, 1]; 0 means missing.
        cams: the ``C`` cameras (see :func:`project_to_views`).
        sigma_px: Geman-McClure scale, pixels.

    Returns:
        ``(B,)`` the weighted mean penalty per frame, px^2 (0 where a frame has no keypoint).
    """
    B, J, _ = joints_world.shape
    check_shape(uv_px, (B, "C", J, 2), "uv_px")
    check_shape(conf, (B, "C", J), "conf")
    proj = project_to_views(joints_world, cams)  # (B, C, J, 2)
    uv = torch.where(conf[..., None] > 0, uv_px, proj.detach())  # missing: zero residual, no NaN
    r2 = ((proj - uv) ** 2).sum(-1)  # (B, C, J)
    rho = geman_mcclure(r2, sigma_px) * conf
    return rho.sum((1, 2)) / conf.sum((1, 2)).clamp(min=1e-6)


def keypoint_3d_loss(joints_world: torch.Tensor, target: torch.Tensor, sigma_m: float) -> torch.Tensor:
    """Robust distance to target 3D keypoints (triangulated), ignoring NaN targets.

    Args:
        joints_world: ``(B, J, 3)`` metres.
        target: ``(B, J, 3)`` metres, NaN where missing.
        sigma_m: Geman-McClure scale, metres.

    Returns:
        ``(B,)`` mean penalty over the valid keypoints, m^2.
    """
    check_shape(target, tuple(joints_world.shape), "target")
    valid = torch.isfinite(target).all(-1)  # (B, J)
    tgt = torch.where(valid[..., None], target, joints_world.detach())
    r2 = ((joints_world - tgt) ** 2).sum(-1)
    rho = geman_mcclure(r2, sigma_m) * valid
    return rho.sum(1) / valid.sum(1).clamp(min=1)


def silhouette_loss(silhouettes: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``1 - soft IoU`` between rendered soft silhouettes and target masks, averaged over valid views.

    Args:
        silhouettes: ``(B, C, H, W)`` in [0, 1].
        masks: ``(B, C, H, W)`` in [0, 1] (1 = hand).
        valid: ``(B, C)`` bool, views that have a mask.

    Returns:
        ``(B,)`` in [0, 1].
    """
    check_shape(masks, tuple(silhouettes.shape), "masks")
    B, C, _, _ = silhouettes.shape
    check_shape(valid, (B, C), "valid")
    inter = (silhouettes * masks).sum((2, 3))
    union = (silhouettes + masks - silhouettes * masks).sum((2, 3)).clamp(min=1e-6)
    per_view = 1 - inter / union  # (B, C)
    w = valid.to(per_view.dtype)
    return (per_view * w).sum(1) / w.sum(1).clamp(min=1)


def pose_prior_loss(hand_pose: torch.Tensor, components: torch.Tensor, stddev: torch.Tensor,
                    mean: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Mahalanobis-style prior on the 45 articulation parameters in the model's PCA space.

    Args:
        hand_pose: ``(B, 45)`` articulation relative to ``hands_mean``, radians.
        components: ``(P, 45)`` orthonormal principal directions of hand poses.
        stddev: ``(P,)`` the standard deviation along each direction, radians.
        mean: ``(45,)`` the prior's mean (relative to ``hands_mean``), or None for 0.

    Returns:
        ``(B,)`` ``sum_p (c_p / std_p)^2`` of ``c = (hand_pose - mean) @ components.T``, plus the
        squared norm of the part outside the span of the components (divided by the smallest std).
    """
    check_shape(hand_pose, ("B", 45), "hand_pose")
    x = hand_pose if mean is None else hand_pose - mean
    coeffs = x @ components.T  # (B, P)
    inside = ((coeffs / stddev) ** 2).sum(1)
    residual = x - coeffs @ components
    return inside + (residual**2).sum(1) / stddev.min() ** 2


def shape_prior_loss(betas: torch.Tensor) -> torch.Tensor:
    """``(*, 10)`` betas to ``(*)`` squared norm (betas are unit-variance shape coefficients)."""
    return (betas**2).sum(-1)


def temporal_loss(joints_world: torch.Tensor, neighbour: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Squared keypoint velocity (``order`` 1) or acceleration (``order`` 2) between consecutive frames, m^2.

    Args:
        joints_world: ``(B, J, 3)``.
        neighbour: ``(B - 1,)`` bool, True where frame ``b + 1`` directly follows frame ``b``.
        order: 1 penalises ``x[b+1] - x[b]`` of each neighbouring pair (holds the hand still);
            2 penalises ``x[b] - 2 x[b+1] + x[b+2]`` of each run of three consecutive frames
            (lets the hand move at constant speed: smooth motion costs little).

    Returns:
        ``(B,)`` the mean over keypoints of the squared difference, each pair's (triple's)
        penalty shared equally by its two (three) frames.
    """
    B = joints_world.shape[0]
    out = joints_world.new_zeros(B)
    if order not in (1, 2):
        raise ValueError(f"temporal_loss: order must be 1 or 2, got {order}")
    if B < 2:
        return out
    check_shape(neighbour, (B - 1,), "neighbour")
    if order == 1:
        vel2 = ((joints_world[1:] - joints_world[:-1]) ** 2).sum(-1).mean(-1) * neighbour  # (B-1,)
        out = out.index_add(0, torch.arange(B - 1, device=out.device), vel2 / 2)
        return out.index_add(0, torch.arange(1, B, device=out.device), vel2 / 2)
    if B < 3:
        return out
    run = neighbour[:-1] & neighbour[1:]  # (B-2,) frames b, b+1, b+2 consecutive
    acc2 = ((joints_world[:-2] - 2 * joints_world[1:-1] + joints_world[2:]) ** 2).sum(-1).mean(-1) * run
    for k in range(3):
        out = out.index_add(0, torch.arange(k, B - 2 + k, device=out.device), acc2 / 3)
    return out
