"""Batched multi-view fitting of the hand model (MANO or the open model) to 2D keypoints and masks.

All frames of a batch are fitted at once on one device: per frame a global rotation,
a translation and 45 articulation parameters; one shape for the whole session (one
subject). The schedule is staged:

1. ``3d``: align to triangulated 3D keypoints (fast and robust: no projection).
2. ``2d``: robust confidence-weighted reprojection of the 21 keypoints in every view.
3. ``sil``: the same plus soft silhouettes against masks, when masks are given.

Priors on pose and shape act in every stage, weighted by the evidence: per frame, the keypoints'
noise estimated from the fit's residuals and their number (precise keypoints in many views
outweigh the priors, noisy or few ones leave them the lead). A temporal smoothness term
(acceleration of the keypoints of consecutive frames) joins once each frame is nearly fitted.

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
    # The keypoint stage is cheap (0.045 s per frame at 500 iterations, one CPU thread) and was
    # stopped short at 250: on realistic postures (8 cameras x 50 frames, seed 0, GrabCut masks)
    # 500 iterations lowered MPVPE 0.875 -> 0.825 mm (3 px + 10 %) and 0.731 -> 0.667 (1 px);
    # 1000 added under 0.01 mm (docs/performance.md, "The temporal term's weight, settled").
    iters_2d: int = 500
    iters_sil: int = 30
    lr: float = 0.03  # radians per Adam step for rotations and articulation, at the start
    lr_trans_m: float = 0.003
    lr_betas: float = 0.05
    lr_final_fraction: float = 0.01  # cosine decay to this fraction within each stage
    # Adam divides each step by the gradient's running RMS + adam_eps. At torch's 1e-8 a direction
    # the data hardly see (a finger's twist, with exact keypoints and a prior that rightly yields)
    # moves ~lr per step on rounding noise: started at the truth with exact keypoints, the fit left
    # it by 0.43 mm MPVPE; at 0.1 it stays within 0.22 mm, and noisy fits do not change (gradients
    # that matter are far larger).
    adam_eps: float = 0.1
    # The silhouette stage starts from a converged fit: smaller steps. Adam's first steps move every
    # parameter by about the learning rate, whatever its gradient: at 0.5 the stage undid the
    # keypoints' precision (during development, realistic postures, 1 px, 3 x 20 frames: MPJPE
    # 0.29 -> 0.45 mm; at 0.15-0.2 0.30-0.33 mm, and 3 px + 10 % outliers 0.60 mm instead of 0.75).
    lr_sil_fraction: float = 0.15
    sigma_px: float = 10.0  # Geman-McClure scale of the reprojection term
    sigma_3d_m: float = 0.015
    w_kp2d: float = 1.0  # on px^2
    w_kp3d: float = 1e6  # on m^2 (so 1 mm^2 counts like 1 px^2)
    w_sil: float = 1000.0  # on 1 - soft IoU
    # In the silhouette stage the keypoint term is scaled by (sil_ref_noise_px / s)^2, s the
    # keypoints' per-axis noise estimated from the residuals of the keypoint fit (robustly:
    # median squared residual / 1.386, the median of chi^2 with 2 dof), clamped to
    # sil_kp_scale_range: precise keypoints keep the lead, noisy ones hand it to the masks.
    # 4.5 px rather than 3: the keypoint fit the masks are weighed against is smoothed over
    # neighbouring frames by the temporal term, more precise than one frame's keypoints. Measured
    # (realistic postures, 8 x 50 frames, seeds 0 and 1, GrabCut masks): 3 px + 10 % MPJPE
    # 0.685 / 0.635 -> 0.634 / 0.607 mm, PA-MPVPE 0.779 / 0.624 -> 0.772 / 0.617; 1 px MPJPE
    # 0.318 / 0.309 -> 0.285 / 0.298, MPVPE 0.701 / 0.535 -> 0.686 / 0.520 (6 px: 3 px MPJPE
    # 0.602 / 0.618, PA-MPVPE 0.770 / 0.627). Without the temporal term 4.5 is better too.
    sil_ref_noise_px: float = 4.5
    sil_kp_scale_range: tuple[float, float] = (0.25, 16.0)
    w_pose_prior: float = 0.02  # with prior_weighting "fixed"; else until the keypoints' noise is known
    # The articulation prior (see pose_prior_basis):
    # "anatomical": a Gaussian on each joint's [twist, flex, side] axes (handanno.handmodel.hand_axes):
    # pose_prior_std_rad for flexion and spread (and the thumb's CMC), pose_prior_twist_std_rad
    # for rotation about the joint's own bone and sideways at hinges (PIP, DIP, thumb IP).
    # Measured on synth sessions with varied postures (3 px + 10 % outliers, 20 frames, exact
    # masks): the isotropic prior left the thumb twisted by ~20 deg (thumb vertices 3.9 mm off,
    # PA-MPVPE 1.57 mm). "isotropic": pose_prior_std_rad on all 45 numbers.
    # "model": the model's own pose statistics (hands_coeffs of MANO's scans, or of the open
    # model's distribution; handanno.handmodel.pose_prior.model_statistics), falling back to
    # "realistic" where the model file has none. "realistic": the statistics of the realistic
    # posture generator (handanno.handmodel.pose_prior.generator_statistics). Both widened by
    # pose_prior_min_std_rad in every direction. "auto" (default): "model" for MANO, "realistic"
    # for other models (see pose_prior_basis and docs/performance.md for the measurements).
    pose_prior: str = "auto"
    pose_prior_std_rad: float = 0.6
    pose_prior_twist_std_rad: float = 0.1
    pose_prior_min_std_rad: float = 0.1
    # How much the priors count against the keypoints. "fixed": w_pose_prior and w_temporal as
    # given. "evidence": per frame, the Gaussian-noise MAP balance e = s^2 / sum(conf), s the
    # keypoints' per-axis noise estimated from the fit's residuals (keypoint_noise_px, corrected
    # for the parameters fitted) and sum(conf) the frame's keypoint observations (every view,
    # every keypoint): the pose prior gets evidence_gain * e, the temporal term w_temporal * e /
    # e_ref and the shape prior (below) follows e too; e_ref = w_pose_prior / evidence_gain is the
    # balance the fixed weights stand for (s ~ 1.8 px over 8 views). Precise keypoints seen by many
    # views outweigh the priors; noisy or few ones leave them the lead. The estimate is made after
    # evidence_after of the 2d iterations (until then e = e_ref), again at the start of the
    # silhouette stage (where e follows the keypoint term's scale), and kept within evidence_range;
    # with evidence_at_start also at the start of the 3d and 2d stages, where it may only lower e
    # (a rough start's residuals overstate the noise; a start at the truth must stay there).
    # Measured during development (realistic postures, 3 x 20 frames, keypoints only): 1 px MPJPE
    # 0.443 -> 0.362 mm with the anatomical prior, mostly from the shape prior, which at 0.2 per
    # frame held the shape ~1000x more firmly than 168 observations of 1 px call for. All of issue
    # 20's changes together: docs/performance.md, "Fitting on realistic postures".
    prior_weighting: str = "evidence"
    evidence_gain: float = 1.0
    evidence_after: float = 0.4
    evidence_at_start: bool = True
    # The upper end is e_ref (0.02 with the default weights): the priors may yield to precise
    # keypoints seen in many views, but never weigh more than the fixed weights do. A prior learnt
    # from a posture generator is right by construction on that generator's sessions and only
    # roughly right on real hands; with few views the MAP balance (up to 25 x e_ref with two views)
    # let it pull real fits off their keypoints. Measured on the real two-camera capture
    # (../shared/data/real_2view, MediaPipe, 30 frames, 10 of 21 keypoints held out in one view per
    # frame; benchmarks/bench_heldout_keypoints.py): the held-out keypoints' median error falls
    # 8.87 -> 6.29 px (keypoints only), 8.02 -> 5.94 px (with silhouettes) from upper end 0.5 to
    # 0.02 (fixed weights: 6.65 / 6.32); on synthetic realistic postures, 30 frames: 2 views 3 px +
    # 5 % MPJPE 1.46 -> 1.38 mm, 8 views 3 px + 10 % with silhouettes 0.65 -> 0.71 mm (PA-MPVPE
    # 0.71 -> 0.72), 1 px unchanged (e < e_ref there).
    evidence_range: tuple[float, float] = (1e-5, 0.02)
    # The shape prior (betas ~ N(0, 1)): w_shape_prior per frame with "fixed" weighting; with
    # "evidence", evidence_gain_shape times the harmonic mean of the frames' e, once for the
    # batch (the shape is shared: more frames, more evidence), but at least w_shape_min x
    # min(1, s / w_shape_min_noise_px): at the MAP weight alone (~0.01 at 1 px over 8 views) the
    # shape wandered along directions the keypoints hardly see (anatomical postures, 1 px, 6 x 20
    # frames, keypoints only: MPVPE 1.10 mm, 0.78 with the floor at 0.3; 3 px: 1.23 -> 1.09); the
    # floor vanishes for exact keypoints, where nothing should hold the shape.
    w_shape_prior: float = 0.2
    evidence_gain_shape: float = 1.0
    w_shape_min: float = 0.3
    w_shape_min_noise_px: float = 1.0
    # Temporal smoothness of consecutive frames (FitInputs.neighbour): temporal_order 2 penalises
    # the keypoints' acceleration (mm per frame^2, squared, mean over keypoints), 1 their
    # velocity; 0 = off. Weight w_temporal at e_ref (see above). It is switched on at the 2d
    # stage's re-weighting point. Measured (realistic postures at 15 fps, keypoints only): 3 x 20
    # frames, 3 px + 10 % outliers MPJPE 1.09 -> 0.72 mm (w 0.3; 1: 0.76, 10: 1.03: the coupled
    # frames converge slowly); bench_fit, 50 frames: 3 px 1.22 -> 0.80, 1 px 0.40 -> 0.33 mm (with
    # silhouettes the gain is smaller: 0.79 -> 0.69, 0.38 -> 0.35). With 500 keypoint iterations
    # and sil_ref_noise_px 4.5, on synthetic smooth motion (8 x 50 frames, realistic postures,
    # seeds 0 / 1, GrabCut masks, MPJPE gain over w_temporal 0): 0.3 gives 15 / 21 % at 3 px + 10 %
    # but 12 / 10 % at 1 px, 0.5 gives 16 / 24 and 17 / 16 %, 1.0 gives 17 / 25 and 23 / 24 %. On
    # the real two-camera capture (benchmarks/bench_heldout_keypoints.py) larger weights cost:
    # held-out keypoints' median 6.16 px (0.3), 6.39 (0.5), 7.31 (1.0) keypoints only; 6.19, 6.26,
    # 6.50 with silhouettes. Of these, 0.5 is the weight that meets the synthetic bound and costs least
    # on real video (docs/performance.md, "The temporal term's weight, settled").
    w_temporal: float = 0.5
    temporal_order: int = 2
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


# initial_pose: Cauchy-reweighted rounds of the rigid alignment and the scale of their weights (at
# least; else 1.5 x the median distance): the mean hand differs from a curled one by centimetres, a
# wrongly triangulated keypoint by decimetres (measured: a wrist 283 mm off, from outliers in 3 of 8
# views, turned the unweighted alignment and left the fit's wrist 39 mm off).
INIT_ROBUST_ROUNDS = 3
INIT_ROBUST_SCALE_M = 0.01


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
        The alignment is robust (:data:`INIT_ROBUST_ROUNDS` Cauchy-reweighted rounds): a
        keypoint triangulated decimetres off does not turn the hand.

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
            for _ in range(INIT_ROBUST_ROUNDS):  # a triangulation can be far off (outliers agreeing in 2 views)
                r = np.linalg.norm(model_j[ok] @ R.T + t - joints3d[b, ok], axis=1)
                c = max(1.5 * float(np.median(r)), INIT_ROBUST_SCALE_M)
                R, t = kabsch(model_j[ok], joints3d[b, ok], 1.0 / (1.0 + (r / c) ** 2))
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


POSE_PRIORS = ("auto", "anatomical", "isotropic", "model", "realistic")


def pose_prior_basis(layer: torch.nn.Module, betas: np.ndarray,
                     settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The articulation prior's ``mean (45,)``, ``components (45, 45)`` and ``stddev (45,)`` on the layer's device.

    ``"anatomical"``: axes from the hand's flat rest keypoints with ``betas``
    (:func:`handanno.handmodel.hand_axes.anatomical_pose_prior`), mean 0; ``"isotropic"``: the
    identity, mean 0; ``"model"``: the model's own pose statistics
    (:func:`handanno.handmodel.pose_prior.model_statistics`), or where its file has none those of
    the ``realistic`` generator (:func:`handanno.handmodel.pose_prior.generator_statistics`),
    which ``"realistic"`` always uses; ``"auto"``: ``"model"`` for MANO (statistics of its
    scans of real hands), ``"realistic"`` for any other model (the open model's own
    ``hands_coeffs`` come from a narrow synthetic distribution that measured worse on realistic
    postures: 1 px, 3 x 20 frames, keypoints only, MPVPE 1.26 mm against 0.92).

    Args:
        layer: the hand model layer.
        betas: ``(10,)`` the shape to take the rest keypoints from (``"anatomical"``).
        settings: ``pose_prior`` and its standard deviations.
    """
    dev, dtype = layer.pose_mean.device, layer.dtype

    def out(mean, comps, std):
        return tuple(torch.as_tensor(np.asarray(a), dtype=dtype, device=dev) for a in (mean, comps, std))

    if settings.pose_prior not in POSE_PRIORS:
        raise HandannoError(f"pose_prior {settings.pose_prior!r}: use one of {', '.join(POSE_PRIORS)}")
    if settings.pose_prior == "isotropic":
        return out(np.zeros(45), np.eye(45), np.full(45, settings.pose_prior_std_rad))
    if settings.pose_prior in ("auto", "model", "realistic"):
        from handanno.handmodel import pose_prior

        stats = None
        if settings.pose_prior == "model" or (settings.pose_prior == "auto" and getattr(layer, "is_mano", False)):
            stats = pose_prior.model_statistics(layer.pose_mean[3:].detach().cpu().numpy(), layer.side,
                                                settings.pose_prior_min_std_rad, getattr(layer, "source", None))
        if stats is None:
            stats = pose_prior.generator_statistics(layer, "realistic", settings.pose_prior_min_std_rad)
        log.debug("pose prior: %s", stats.source)
        return out(stats.mean, stats.components, stats.stddev)
    from handanno.handmodel.hand_axes import PriorStd, anatomical_pose_prior, hand_axes

    rest = layer.flat_keypoints(betas)  # (21, 3) the flat hand of this shape
    sd = settings.pose_prior_std_rad
    std = PriorStd(flex=sd, spread=sd, free=sd, twist=settings.pose_prior_twist_std_rad,
                   hinge_side=settings.pose_prior_twist_std_rad)  # fmt: skip
    comps, stddev = anatomical_pose_prior(hand_axes(rest, layer.side), std)
    return out(np.zeros(45), comps, stddev)


def evidence_per_observation(joints_world: torch.Tensor, inputs: FitInputs, params_per_frame: int = 51) -> torch.Tensor:
    """``(B,)`` the MAP balance ``e = s^2 / sum(conf)`` of each frame's keypoints, px^2.

    With Gaussian keypoint noise of std ``s`` px per axis, the keypoint term (the
    confidence-weighted mean of squared reprojection errors) plus ``e`` times a prior in units
    of its standard deviations is the negative log posterior up to a factor. ``s`` comes from
    :func:`keypoint_noise_px` around the current fit, scaled by ``sqrt(n / (n - p))`` (``n``
    the frame's 2D observations, ``p`` = ``params_per_frame``, at most halving ``n``), because a
    fit's residuals are smaller than the noise by the parameters it fitted.

    Args:
        joints_world: ``(B, 21, 3)`` the current fit's keypoints, metres.
        inputs: the observations.
        params_per_frame: fitted parameters per frame (48 pose + 3 translation).
    """
    s = keypoint_noise_px(joints_world, inputs)  # (B,)
    n_obs = 2.0 * (inputs.conf > 0).flatten(1).sum(1).to(s.dtype)  # (B,)
    dof = n_obs / (n_obs - params_per_frame).clamp(min=n_obs / 2).clamp(min=1.0)
    return s**2 * dof / inputs.conf.flatten(1).sum(1).clamp(min=1e-6)


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
    prior_mean, components, std = pose_prior_basis(layer, betas0, settings)
    if settings.prior_weighting not in ("fixed", "evidence"):
        raise HandannoError(f"prior_weighting {settings.prior_weighting!r}: use fixed or evidence")
    evidence = settings.prior_weighting == "evidence"

    def params():
        return torch.cat([glob, art], dim=1), betas[None].expand(B, NUM_BETAS), trans

    kp_scale = 1.0
    # e: the weight of one standard deviation of prior against the keypoints' mean px^2 (per frame)
    e_fixed = settings.w_pose_prior / settings.evidence_gain
    e = torch.full((B,), e_fixed, dtype=dtype, device=dev)
    shape_floor = settings.w_shape_min  # until the keypoints' noise is known

    def estimate_evidence() -> tuple[torch.Tensor, float]:
        """``e (B,)`` and the shape prior's floor from the current fit's residuals."""
        with torch.no_grad():
            joints = layer.keypoints(*params())
            est = evidence_per_observation(joints, inputs).clamp(*settings.evidence_range)
            noise = float(keypoint_noise_px(joints, inputs).mean())
        log.debug("evidence: pose prior weight %.3g (median over frames; fixed: %.3g), keypoint noise %.2f px",
                  float(est.median() * settings.evidence_gain), settings.w_pose_prior, noise)
        return est.to(dtype), settings.w_shape_min * min(1.0, noise / settings.w_shape_min_noise_px)

    def frame_losses(stage: str) -> torch.Tensor:
        # the silhouette stage scales the keypoint term; with "evidence" weighting the priors follow
        e_stage = e * kp_scale if evidence else e
        total = settings.evidence_gain * e_stage * losses.pose_prior_loss(art, components, std, prior_mean)
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
        if settings.w_temporal > 0 and temporal_on and has_runs:
            # on keypoints of the shape held fixed: else shrinking the hand is a cheap way to slow it down
            # (a shape that is not fitted, as after the session's shape pass, is held already: no second pass)
            pose_b, betas_b, trans_b = params()
            moving = layer.keypoints(pose_b, betas_b.detach(), trans_b) if betas_b.requires_grad else joints
            w_t = settings.w_temporal * (e_stage / e_fixed if evidence else 1.0)
            total = total + w_t * 1e6 * losses.temporal_loss(moving, inputs.neighbour, settings.temporal_order)
        return total

    # The temporal term couples the frames: switched on once each frame's fit is close (at the
    # 2d stage's re-weighting point). From the start, its large early gradients inflate Adam's
    # second moments and stall the per-frame fits (measured: 3 px, 20 frames, 3d stage MPJPE
    # 2.66 mm alone, 3.95 mm with an acceleration term of weight 0.1). Adam's state is kept
    # there: a fresh one kicks every parameter by ~lr (3 px: MPJPE 0.696 -> 0.721 mm).
    temporal_on = False
    nb = inputs.neighbour.bool()
    # frames the temporal term couples at all (the shape pass's frames are spread out: none, so no term)
    has_runs = bool(nb.any()) if settings.temporal_order == 1 else bool((nb[:-1] & nb[1:]).any())
    reweight = evidence or settings.w_temporal > 0

    def make_optimizer(stage: str) -> tuple[torch.optim.Optimizer, list[float]]:
        f = settings.lr_sil_fraction if stage == "sil" else 1.0
        groups = [
            {"params": [glob, art], "lr": settings.lr * f},
            {"params": [trans], "lr": settings.lr_trans_m * f},
        ]
        if settings.fit_shape and stage != "3d":
            groups.append({"params": [betas], "lr": settings.lr_betas * f})
        return torch.optim.Adam(groups, eps=settings.adam_eps), [g["lr"] for g in groups]

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
            if evidence:
                e, shape_floor = estimate_evidence()
            temporal_on = True
        opt, base = make_optimizer(stage)
        hist = history.setdefault(stage, [])
        reweight_at = int(round(settings.evidence_after * iters)) if reweight and stage == "2d" else -1
        for it in range(iters):
            if evidence and stage in ("3d", "2d") and settings.evidence_at_start and it == 0:
                # the start is rough (the mean hand, the 3d stage's fit): its residuals may only relax
                # the priors (a start at the truth stays there), never tighten them
                e_start, floor_start = estimate_evidence()
                e, shape_floor = e_start.clamp(max=e_fixed), min(floor_start, settings.w_shape_min)
            if it == reweight_at:
                if evidence:
                    e, shape_floor = estimate_evidence()
                temporal_on = True
            scale = _cosine_lr(it, iters, settings.lr_final_fraction)
            for g, lr0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr0 * scale
            opt.zero_grad(set_to_none=True)
            loss = frame_losses(stage).sum()
            if settings.fit_shape and stage != "3d":
                if evidence:  # one shape for the batch: the harmonic mean of the frames' balances
                    e_stage = e * kp_scale
                    w_shape = (settings.evidence_gain_shape * B / (1.0 / e_stage).sum()).clamp(min=shape_floor)
                else:
                    w_shape = settings.w_shape_prior * B
                loss = loss + w_shape * losses.shape_prior_loss(betas)
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
