"""Batched multi-view fitting of the hand model (MANO or the open model) to 2D keypoints and masks.

All frames of a batch are fitted at once on one device: per frame a global rotation,
a translation and 45 articulation parameters; one shape for the whole session (one
subject). The schedule is staged:

1. ``3d``: align to triangulated 3D keypoints (fast and robust: no projection).
2. ``2d``: robust confidence-weighted reprojection of the 21 keypoints in every view.
3. ``sil``: the same plus soft silhouettes against masks, when masks are given.

Priors on pose and shape and a temporal smoothness term act in every stage.

Convention:
    - B frames, C cameras, J = 21 keypoints (FreiHAND order), V vertices.
    - World coordinates in metres, pixels in the image (pixel (0, 0) is the centre of the
      top-left pixel); cameras as in :mod:`handanno.calibration.camera`.
    - Parameters as FreiHAND stores them: ``pose (B, 48)`` = 3 global axis-angle + 45
      articulation relative to ``hands_mean``; ``betas (10,)``; ``trans (B, 3)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from handanno.annotate import losses
from handanno.calibration.camera import CameraTensors
from handanno.check import check_shape
from handanno.data.conventions import NUM_BETAS, NUM_JOINTS
from handanno.errors import HandannoError
from handanno.rotations import matrix_to_axis_angle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    """How to fit. Loss weights are relative; units are given per term."""

    iters_3d: int = 80
    iters_2d: int = 250
    iters_sil: int = 30
    lr: float = 0.03  # radians per Adam step for rotations and articulation, at the start
    lr_trans_m: float = 0.003
    lr_betas: float = 0.05
    lr_final_fraction: float = 0.01  # cosine decay to this fraction within each stage
    lr_sil_fraction: float = 0.5  # the silhouette stage starts from a converged fit: smaller steps
    sigma_px: float = 10.0  # Geman-McClure scale of the reprojection term
    sigma_3d_m: float = 0.015
    w_kp2d: float = 1.0  # on px^2
    w_kp3d: float = 1e6  # on m^2 (so 1 mm^2 counts like 1 px^2)
    w_sil: float = 1000.0  # on 1 - soft IoU
    # In the silhouette stage the keypoint term is scaled by (sil_ref_noise_px / s)^2, s the
    # keypoints' per-axis noise estimated from the residuals of the keypoint fit (robustly:
    # median squared residual / 1.386, the median of chi^2 with 2 dof), clamped to
    # sil_kp_scale_range: precise keypoints keep the lead, noisy ones hand it to the masks.
    sil_ref_noise_px: float = 3.0
    sil_kp_scale_range: tuple[float, float] = (0.25, 16.0)
    w_pose_prior: float = 0.02
    # "anatomical": a Gaussian on each joint's [twist, flex, side] axes (handanno.handmodel.hand_axes):
    # pose_prior_std_rad for flexion and spread (and the thumb's CMC), pose_prior_twist_std_rad
    # for rotation about the joint's own bone and sideways at hinges (PIP, DIP, thumb IP).
    # Measured on synth sessions with varied postures (3 px + 10 % outliers, 20 frames, exact
    # masks): the isotropic prior left the thumb twisted by ~20 deg (thumb vertices 3.9 mm off,
    # PA-MPVPE 1.57 mm). "isotropic": pose_prior_std_rad on all 45 numbers.
    pose_prior: str = "anatomical"
    pose_prior_std_rad: float = 0.6
    pose_prior_twist_std_rad: float = 0.1
    w_shape_prior: float = 0.2
    w_temporal: float = 0.0  # on m^2 of keypoint velocity x 1e6 (mm^2); 0 = off
    fit_shape: bool = True
    # Silhouettes are rendered at sil_size x sil_size around the hand. A soft union over the
    # faces meeting at the outline puts its 0.5 level sqrt(sigma ln(1 / (1 - 0.5^(1/k)))) px
    # outside the true one, so a large sigma biases the fit: measured on an 8-camera synth
    # session with exact masks, sigma 1 px^2 at 64 px turned MPJPE 1.16 -> 2.25 mm, while
    # sigma 0.02 at 128 px gives 1.16 -> 0.73 mm (GrabCut masks: 0.76 mm).
    sil_size: int = 128
    sil_sigma: float = 0.02  # SoftRas sharpness, squared render pixels (handanno.annotate.render)
    sil_box_scale: float = 1.3
    # render only the faces turned towards the camera: the hand models are closed (MANO but for
    # its wrist opening) and counter-clockwise, so the silhouette is the same from half the work
    sil_cull_back_faces: bool = True


@dataclass(frozen=True)
class FitInputs:
    """What the fitter sees for one batch of frames.

    Attributes:
        uv_px: ``(B, C, J, 2)`` 2D keypoints, pixels.
        conf: ``(B, C, J)`` confidences, 0 = missing.
        cams: the ``C`` cameras (:meth:`handanno.calibration.camera.CameraRig.tensors`).
        joints3d: ``(B, J, 3)`` triangulated keypoints, metres, NaN where unknown (for
            the initialisation and the ``3d`` stage).
        neighbour: ``(B - 1,)`` True where frame b + 1 directly follows frame b.
        masks: optional ``(B, C, H, W)`` crops of the masks in ``mask_boxes``.
        mask_boxes: optional ``(B, C, 4)`` ``(x0, y0, width, height)`` of each crop, image pixels.
        mask_valid: optional ``(B, C)`` views that have a mask.
    """

    uv_px: torch.Tensor
    conf: torch.Tensor
    cams: CameraTensors
    joints3d: torch.Tensor
    neighbour: torch.Tensor
    masks: torch.Tensor | None = None
    mask_boxes: torch.Tensor | None = None
    mask_valid: torch.Tensor | None = None


@dataclass(frozen=True)
class FitResult:
    """The fitted parameters and what they give, on the CPU as float64 numpy.

    Attributes:
        pose: ``(B, 48)``; betas: ``(10,)``; trans: ``(B, 3)`` metres.
        joints: ``(B, 21, 3)`` world, metres; vertices: ``(B, V, 3)`` world, metres.
        history: loss per stage and iteration (total over frames), for plots and tests.
    """

    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    joints: np.ndarray
    vertices: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)


def kabsch(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rigid transform (no scale) that best maps ``source`` onto ``target``.

    Args:
        source: ``(N, 3)``.
        target: ``(N, 3)``.
        weights: ``(N,)`` or None (equal weights).

    Returns:
        ``R (3, 3)``, ``t (3,)`` with ``target ~ source @ R.T + t``.
    """
    w = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    if not w.sum() > 0:
        raise HandannoError("kabsch: the weights sum to zero (no point to align)")
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    H = (source - mu_s).T @ ((target - mu_t) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return R, mu_t - R @ mu_s


def initial_pose(
    layer: torch.nn.Module, joints3d: np.ndarray, betas: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Global rotation and translation that align the model's mean-pose keypoints to triangulated ones.

    Args:
        layer: a :class:`handanno.handmodel.mano.ManoLayer`.
        joints3d: ``(B, 21, 3)`` metres, NaN where unknown.
        betas: ``(10,)`` or None for the mean shape.

    Returns:
        ``pose (B, 48)`` (global axis-angle, articulation 0 = the model's mean pose) and
        ``trans (B, 3)`` metres. Frames with fewer than 3 known keypoints keep identity
        and a translation that puts the model's root at their mean known keypoint (or 0).

    Convention:
        MANO rotates about its root joint ``J0``: posed = ``R (x - J0) + J0 + trans``. A
        Kabsch fit ``x_target ~ R x + t`` therefore gives ``trans = t + R J0 - J0``.
    """
    B = joints3d.shape[0]
    check_shape(joints3d, (B, NUM_JOINTS, 3), "joints3d")
    dev, dt = layer.device, layer.dtype
    if betas is None:
        beta_t = torch.zeros(1, NUM_BETAS, device=dev, dtype=dt)
    else:
        beta_t = torch.as_tensor(betas, device=dev, dtype=dt)[None]
    with torch.no_grad():
        out = layer(torch.zeros(1, 48, device=dev, dtype=dt), beta_t, torch.zeros(1, 3, device=dev, dtype=dt))
        model_j = out.joints[0].double().cpu().numpy()  # (21, 3)
        root = out.mano_joints[0, 0].double().cpu().numpy()  # (3,) J0
    pose = np.zeros((B, 48))
    trans = np.zeros((B, 3))
    for b in range(B):
        ok = np.all(np.isfinite(joints3d[b]), axis=1)
        if ok.sum() >= 3:
            R, t = kabsch(model_j[ok], joints3d[b, ok])
            pose[b, :3] = matrix_to_axis_angle(R)
            trans[b] = t + R @ root - root
        elif ok.any():
            trans[b] = joints3d[b, ok].mean(0) - model_j[0]
    return pose, trans


def keypoint_noise_px(joints_world: torch.Tensor, inputs: FitInputs) -> torch.Tensor:
    """Robust per-axis noise of each frame's 2D keypoints around a fit, pixels.

    ``sqrt(median(r^2) / 1.386)`` over the frame's keypoints with confidence > 0, ``r`` the
    reprojection error: for Gaussian noise of std ``s`` per axis ``r^2 / s^2`` is chi^2 with
    2 degrees of freedom, whose median is 1.386; the median ignores outliers. Per frame, so
    that a frame's fit never depends on the other frames of its batch.

    Args:
        joints_world: ``(B, 21, 3)`` the fitted keypoints, metres.
        inputs: the observations.

    Returns:
        ``(B,)`` the noise estimates in pixels (0 for a frame without keypoints).
    """
    proj = losses.project_to_views(joints_world, inputs.cams)  # (B, C, J, 2)
    r2 = ((proj - inputs.uv_px) ** 2).sum(-1)  # (B, C, J)
    r2 = torch.where(inputs.conf > 0, r2, torch.nan).flatten(1)  # (B, C * J)
    return torch.sqrt(torch.nan_to_num(torch.nanmedian(r2, dim=1).values, nan=0.0) / 1.386)


def _as_dtype(inputs: FitInputs, dtype: torch.dtype) -> FitInputs:
    """``inputs`` with every floating tensor (cameras included) in ``dtype``."""

    def cast(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    changes = {f.name: cast(getattr(inputs, f.name)) for f in dataclasses.fields(inputs) if f.name != "cams"}
    return dataclasses.replace(inputs, cams=inputs.cams.to(dtype=dtype), **changes)


def _cosine_lr(step: int, total: int, final_fraction: float) -> float:
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


SilhouetteFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(vertices (B, V, 3), cams, boxes (B, C, 4)) -> silhouettes (B, C, H, W)``."""


def pose_prior_basis(layer: torch.nn.Module, betas: np.ndarray,
                     settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The articulation prior's ``components (45, 45)`` and ``stddev (45,)`` on the layer's device.

    ``"anatomical"``: axes from the hand's flat rest keypoints with ``betas``
    (:func:`handanno.handmodel.hand_axes.anatomical_pose_prior`); ``"isotropic"``: the identity.

    Args:
        layer: the hand model layer.
        betas: ``(10,)`` the shape to take the rest keypoints from.
        settings: ``pose_prior`` and its standard deviations.
    """
    dev, dtype = layer.pose_mean.device, layer.dtype
    if settings.pose_prior == "isotropic":
        return (torch.eye(45, device=dev, dtype=dtype),
                torch.full((45,), settings.pose_prior_std_rad, device=dev, dtype=dtype))  # fmt: skip
    if settings.pose_prior != "anatomical":
        raise HandannoError(f"pose_prior {settings.pose_prior!r}: use anatomical or isotropic")
    from handanno.handmodel.hand_axes import PriorStd, anatomical_pose_prior, hand_axes

    flat = -layer.pose_mean[None]  # (1, 48): every joint at articulation 0 (the flat hand)
    with torch.no_grad():
        rest = layer.keypoints(flat, torch.as_tensor(np.asarray(betas)[None], dtype=dtype, device=dev),
                               torch.zeros(1, 3, dtype=dtype, device=dev))[0]  # fmt: skip
    sd = settings.pose_prior_std_rad
    std = PriorStd(flex=sd, spread=sd, free=sd, twist=settings.pose_prior_twist_std_rad,
                   hinge_side=settings.pose_prior_twist_std_rad)  # fmt: skip
    comps, stddev = anatomical_pose_prior(hand_axes(rest.double().cpu().numpy(), layer.side), std)
    return torch.as_tensor(comps, dtype=dtype, device=dev), torch.as_tensor(stddev, dtype=dtype, device=dev)


def fit_batch(
    layer: torch.nn.Module,
    inputs: FitInputs,
    settings: FitSettings = FitSettings(),
    init_pose: np.ndarray | None = None,
    init_trans: np.ndarray | None = None,
    init_betas: np.ndarray | None = None,
    render_silhouettes: SilhouetteFn | None = None,
) -> FitResult:
    """Fit the hand model to a batch of frames seen by C cameras.

    Args:
        layer: a :class:`handanno.handmodel.mano.ManoLayer` on the device to use.
        inputs: observations (see :class:`FitInputs`), on the same device.
        settings: the schedule, learning rates and loss weights.
        init_pose: ``(B, 48)``; None = from ``inputs.joints3d``.
        init_trans: ``(B, 3)`` metres; None = from ``inputs.joints3d``.
        init_betas: ``(10,)``; None = the mean shape.
        render_silhouettes: the soft silhouette renderer; the silhouette stage runs only
            when it and ``inputs.masks`` are given.

    Returns:
        :class:`FitResult`.
    """
    B, C, J, _ = inputs.uv_px.shape
    dev = inputs.uv_px.device
    dtype = layer.dtype
    inputs = _as_dtype(inputs, dtype)  # float32 observations work with a float64 layer
    if init_pose is None or init_trans is None:
        init_pose, init_trans = initial_pose(layer, inputs.joints3d.detach().cpu().double().numpy(), init_betas)
    glob = torch.tensor(init_pose[:, :3], dtype=dtype, device=dev, requires_grad=True)
    art = torch.tensor(init_pose[:, 3:], dtype=dtype, device=dev, requires_grad=True)
    trans = torch.tensor(init_trans, dtype=dtype, device=dev, requires_grad=True)
    betas0 = np.zeros(NUM_BETAS) if init_betas is None else np.asarray(init_betas)
    betas = torch.tensor(betas0, dtype=dtype, device=dev, requires_grad=settings.fit_shape)
    components, std = pose_prior_basis(layer, betas0, settings)

    def params():
        return torch.cat([glob, art], dim=1), betas[None].expand(B, NUM_BETAS), trans

    kp_scale = 1.0

    def frame_losses(stage: str) -> torch.Tensor:
        total = settings.w_pose_prior * losses.pose_prior_loss(art, components, std)
        if stage == "sil":  # the only stage that needs the mesh
            out = layer(*params())
            joints = out.joints
            sil = render_silhouettes(out.vertices, inputs.cams, inputs.mask_boxes)
            total = total + settings.w_sil * losses.silhouette_loss(sil, inputs.masks, inputs.mask_valid)
        else:
            joints = layer.keypoints(*params())
        if stage == "3d":
            total = total + settings.w_kp3d * losses.keypoint_3d_loss(joints, inputs.joints3d, settings.sigma_3d_m)
        else:
            total = total + settings.w_kp2d * kp_scale * losses.keypoint_reprojection_loss(
                joints, inputs.uv_px, inputs.conf, inputs.cams, settings.sigma_px
            )
        if settings.w_temporal > 0:
            total = total + settings.w_temporal * 1e6 * losses.temporal_loss(joints, inputs.neighbour)
        return total

    stages = [("3d", settings.iters_3d), ("2d", settings.iters_2d)]
    if render_silhouettes is not None and inputs.masks is not None and settings.iters_sil > 0:
        stages.append(("sil", settings.iters_sil))
    history: dict[str, list[float]] = {}
    for stage, iters in stages:
        if iters <= 0:
            continue
        if stage == "sil":
            with torch.no_grad():
                noise_px = keypoint_noise_px(layer.keypoints(*params()), inputs)  # (B,)
            lo, hi = settings.sil_kp_scale_range
            kp_scale = ((settings.sil_ref_noise_px / noise_px.clamp(min=1e-3)) ** 2).clamp(lo, hi)  # (B,)
            log.debug("keypoint noise ~%.2f px per axis (median over frames): keypoint term x %.2f in the "
                      "silhouette stage", float(noise_px.median()), float(kp_scale.median()))
        f = settings.lr_sil_fraction if stage == "sil" else 1.0
        groups = [
            {"params": [glob, art], "lr": settings.lr * f},
            {"params": [trans], "lr": settings.lr_trans_m * f},
        ]
        if settings.fit_shape and stage != "3d":
            groups.append({"params": [betas], "lr": settings.lr_betas * f})
        opt = torch.optim.Adam(groups)
        base = [g["lr"] for g in groups]
        hist = history.setdefault(stage, [])
        for it in range(iters):
            scale = _cosine_lr(it, iters, settings.lr_final_fraction)
            for g, lr0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr0 * scale
            opt.zero_grad(set_to_none=True)
            loss = frame_losses(stage).sum()
            if settings.fit_shape and stage != "3d":
                loss = loss + settings.w_shape_prior * B * losses.shape_prior_loss(betas)
            loss.backward()
            opt.step()
            hist.append(float(loss.detach()))
        log.debug("stage %s: loss %.4g -> %.4g over %d iterations", stage, hist[0], hist[-1], iters)

    with torch.no_grad():
        pose, betas_b, trans_b = params()
        out = layer(pose, betas_b, trans_b)
    return FitResult(
        pose=pose.detach().double().cpu().numpy(),
        betas=betas.detach().double().cpu().numpy(),
        trans=trans.detach().double().cpu().numpy(),
        joints=out.joints.double().cpu().numpy(),
        vertices=out.vertices.double().cpu().numpy(),
        history=history,
    )
