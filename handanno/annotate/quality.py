"""Checks of a fitted hand that do not trust the 2D detections alone: pure functions, numpy in, numbers out.

A fit can reproject well onto biased detections (a detector whose keypoints sit a few pixels
off, differently in each view, or whose keypoint definitions differ from the hand model's):
the fit then compromises between the views and the median reprojection error stays small
while the hand is millimetres off. These checks look where such a fit shows:

- **view agreement**: every view but the few allowed to fail must agree with the fit
  (:func:`view_bound` of the per-view errors), and the fit must agree with the robust
  triangulation of the detections (:func:`triangulation_gap_m`), which follows views that
  agree with each other where the hand model cannot;
- **the image's own segmentation**: every view's mask but the few allowed to fail must
  overlap the fitted mesh's silhouette (:func:`view_bound` of the per-view IoU);
- **plausibility of the hand itself**: bone proportions against the model's rest skeleton
  (:func:`bone_length_deviation`) and joint angles against anatomical ranges
  (:func:`joint_limit_excess`).

:func:`frame_quality` applies them, with the per-view reprojection error and mask IoU, under
the thresholds of :class:`AcceptSettings`, and writes the frame's ``quality`` record;
``benchmarks/bench_acceptance.py`` measures what they catch. :func:`evaluate_against_ground_truth`
scores a synthetic session's fits against its truth.

Convention:
    - 3D points in metres (world or any one frame), keypoints in FreiHAND order
      (:data:`handanno.data.conventions.JOINT_NAMES`), angles in radians unless a name says
      ``_deg``.
    - Articulation: the 15 MANO joints' full axis-angles (relative to the flat hand, that is
      ``pose[3:] + hands_mean``), MANO joint order 1..15 (index 1-3, middle 4-6, pinky 7-9,
      ring 10-12, thumb 13-15), read on each joint's ``[twist, flex, side]`` axes
      (:func:`handanno.handmodel.hand_axes.joint_bases`): twist about the bone, flexion towards
      the palm (positive), side = twist x flex.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from handanno.annotate.segment import load_masks, mesh_mask
from handanno.annotate.session_io import Session, json_float, readable_fit
from handanno.annotate.triangulate import triangulate_frames
from handanno.calibration.camera import CameraRig
from handanno.check import check_shape
from handanno.data import metrics
from handanno.data.conventions import BONES, JOINT_NAMES, NUM_JOINTS
from handanno.data.files_io import write_json
from handanno.errors import HandannoError
from handanno.handmodel.hand_axes import hand_axes, joint_bases
from handanno.handmodel.mano import ManoLayer

# The 15 articulated MANO joints (1..15), anatomical names.
MANO_JOINT_NAMES = (
    "index MCP", "index PIP", "index DIP", "middle MCP", "middle PIP", "middle DIP",
    "pinky MCP", "pinky PIP", "pinky DIP", "ring MCP", "ring PIP", "ring DIP",
    "thumb CMC", "thumb MCP", "thumb IP",
)  # fmt: skip
AXIS_NAMES = ("twist", "flexion", "sideways")

_MCP = [[-20, 20], [-35, 100], [-30, 30]]
_PIP = [[-20, 20], [-15, 120], [-20, 20]]
_DIP = [[-20, 20], [-30, 95], [-20, 20]]
_FREE = [[-180, 180]] * 3
# Anatomical ranges, degrees, ``[joint, axis, (low, high)]`` for MANO joints 1..15 on their
# [twist, flex, side] axes. Active ranges of motion of adult hands (MCP flexion to ~90 deg,
# hyperextension to ~30-45; PIP to ~110-120; DIP to ~80-90, hyperextension ~20-30; finger
# abduction ~20-30 deg; axial rotation a few degrees). Measured with the open hand model:
# the postures of ``handanno synth`` (300 seeds) stay 15 deg or more inside every range, fits
# to clean keypoints (3 px noise + 10 % outliers, 80 frames) 9 deg or more. The thumb's CMC,
# a saddle joint whose opposition comes with axial rotation, is left free.
_THUMB_MCP = [[-30, 30], [-30, 80], [-30, 30]]
_THUMB_IP = [[-20, 20], [-35, 95], [-20, 20]]
JOINT_LIMITS_DEG = np.array(
    [_MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _MCP, _PIP, _DIP, _FREE, _THUMB_MCP, _THUMB_IP], np.float64
)  # (15, 3, 2)


def view_bound(values: Sequence[float | None], outlier_views: int, worst: str = "high") -> float | None:
    """The worst per-view value once the ``outlier_views`` worst views are set aside.

    Every view but ``outlier_views`` is at least as good as the returned value, so a
    threshold on it says "all views but ``outlier_views`` pass".

    Args:
        values: one number per view, None (or NaN) where a view has none.
        outlier_views: views allowed to fail (a detector's or a segmentation's miss).
        worst: ``"high"`` when larger is worse (errors), ``"low"`` when smaller is worse (IoU).

    Returns:
        The ``(outlier_views + 1)``-th worst value, or None when there are no more than
        ``outlier_views`` values (nothing left to check).

    Example:
        >>> view_bound([0.02, 0.30, None, 0.03], outlier_views=1)
        0.03
        >>> view_bound([0.9, 0.5, 0.8], outlier_views=1, worst="low")
        0.8
    """
    v = np.array([x for x in values if x is not None], np.float64)
    v = np.sort(v[np.isfinite(v)])
    if worst not in ("high", "low"):
        raise ValueError(f"worst must be 'high' or 'low', got {worst!r}")
    if outlier_views < 0 or len(v) <= outlier_views:
        return None
    return float(v[-1 - outlier_views] if worst == "high" else v[outlier_views])


def triangulation_gap_m(joints: np.ndarray, joints_tri: np.ndarray, min_points: int = 3) -> float | None:
    """Median distance between the fitted keypoints and the robust triangulation of the detections.

    Where the views agree with each other (the triangulation keeps inliers only) but the
    fitted hand cannot follow them, or where the views disagree (the triangulation then
    follows some of them), the two part.

    Args:
        joints: ``(21, 3)`` the fit's keypoints, metres.
        joints_tri: ``(21, 3)`` triangulated keypoints, same frame, metres; NaN where a
            keypoint could not be triangulated.
        min_points: fewer triangulated keypoints give None.

    Returns:
        The median over triangulated keypoints of ``|joints - joints_tri|``, metres, or None.

    Example:
        >>> j = np.zeros((21, 3)); t = np.full((21, 3), np.nan); t[:5] = [0.0, 0.0, 0.004]
        >>> round(triangulation_gap_m(j, t), 6)
        0.004
    """
    check_shape(joints, (NUM_JOINTS, 3), "joints")
    check_shape(joints_tri, (NUM_JOINTS, 3), "joints_tri")
    ok = np.all(np.isfinite(joints_tri), axis=1)  # (21,)
    if ok.sum() < min_points:
        return None
    return float(np.median(np.linalg.norm(joints[ok] - joints_tri[ok], axis=1)))


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """``(*, 21, 3)`` keypoints to ``(*, 20)`` bone lengths, in the order of :data:`handanno.data.conventions.BONES`."""
    check_shape(joints, ("*", NUM_JOINTS, 3), "joints")
    parent = np.array([p for p, _ in BONES])
    child = np.array([c for _, c in BONES])
    return np.linalg.norm(joints[..., child, :] - joints[..., parent, :], axis=-1)


def bone_length_deviation(joints: np.ndarray, rest_joints: np.ndarray) -> tuple[float, float, int]:
    """How far the hand's bone proportions are from the model's rest skeleton, its size set aside.

    Bone lengths do not change with pose (the tips move a little with skinning), so this
    checks the fitted shape: each bone's length over the same bone of the model's mean
    hand, divided by the median of those ratios (the hand's overall scale).

    Args:
        joints: ``(21, 3)`` the fitted keypoints, metres.
        rest_joints: ``(21, 3)`` the model's mean-shape keypoints (any pose), metres.

    Returns:
        ``(scale, deviation, bone)``: the median ratio, the largest ``|ratio / scale - 1|``
        and the index of that bone in :data:`handanno.data.conventions.BONES`.

    Example:
        >>> rest = np.cumsum(np.full((21, 3), 0.01), axis=0)
        >>> j = rest.copy(); j[6:9] += j[6] - j[5]  # bone 5-6 twice as long, the index finger moved along
        >>> scale, dev, bone = bone_length_deviation(2 * j, rest)
        >>> round(scale, 3), round(dev, 3), BONES[bone]
        (2.0, 1.0, (5, 6))
    """
    check_shape(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    ratio = bone_lengths(np.asarray(joints, np.float64)) / bone_lengths(np.asarray(rest_joints, np.float64))  # (20,)
    scale = float(np.median(ratio))
    dev = np.abs(ratio / scale - 1.0)
    bone = int(np.argmax(dev))
    return scale, float(dev[bone]), bone


def articulation_angles(articulation: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """The joints' axis-angles read on their anatomical ``[twist, flex, side]`` axes.

    Args:
        articulation: ``(15, 3)`` full axis-angle of MANO joints 1..15 (``pose[3:] +
            hands_mean``, reshaped), radians.
        bases: ``(15, 3, 3)`` orthonormal rows ``[twist, flex, side]`` per joint
            (:func:`handanno.handmodel.hand_axes.joint_bases`).

    Returns:
        ``(15, 3)`` radians; for a rotation about one of the axes, the angle about it.
    """
    check_shape(articulation, (15, 3), "articulation")
    check_shape(bases, (15, 3, 3), "bases")
    return np.einsum("jab,jb->ja", bases, articulation)  # (15, 3): row a of joint j's basis . its axis-angle


def anatomical_bases(rest_joints: np.ndarray, side: str) -> np.ndarray:
    """The joints' ``[twist, flex, side]`` rows from the flat rest keypoints, ``(15, 3, 3)``.

    :func:`handanno.handmodel.hand_axes.joint_bases` of :func:`handanno.handmodel.hand_axes.hand_axes`
    (the fitter's anatomical prior uses the same axes), remembered for the last few
    skeletons: every frame of a session has the same one.

    Args:
        rest_joints: ``(21, 3)`` keypoints of the flat hand (articulation 0), metres.
        side: ``"right"`` or ``"left"``.
    """
    check_shape(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    return _anatomical_bases(np.asarray(rest_joints, np.float64).tobytes(), side).copy()


@functools.lru_cache(maxsize=8)
def _anatomical_bases(rest_bytes: bytes, side: str) -> np.ndarray:
    rest = np.frombuffer(rest_bytes, np.float64).reshape(NUM_JOINTS, 3)
    return joint_bases(hand_axes(rest, side))


def joint_limit_excess(angles: np.ndarray, limits_deg: np.ndarray = JOINT_LIMITS_DEG) -> np.ndarray:
    """How far each joint angle is beyond its anatomical range (0 inside it).

    Args:
        angles: ``(15, 3)`` radians on ``[twist, flex, side]`` (:func:`articulation_angles`).
        limits_deg: ``(15, 3, 2)`` ``(low, high)`` in degrees.

    Returns:
        ``(15, 3)`` degrees, >= 0.

    Example:
        >>> a = np.zeros((15, 3)); a[1, 1] = np.deg2rad(130)  # index PIP flexed 130 deg (range -15..120)
        >>> round(float(joint_limit_excess(a).max()), 6)
        10.0
    """
    check_shape(angles, (15, 3), "angles")
    check_shape(limits_deg, (15, 3, 2), "limits_deg")
    deg = np.rad2deg(angles)
    return np.maximum(limits_deg[..., 0] - deg, 0.0) + np.maximum(deg - limits_deg[..., 1], 0.0)


__all__ = ["MANO_JOINT_NAMES", "AXIS_NAMES", "JOINT_LIMITS_DEG", "view_bound", "triangulation_gap_m", "bone_lengths",
           "bone_length_deviation", "articulation_angles", "anatomical_bases", "joint_limit_excess"]  # fmt: skip


# --------------------------------------------------------------------------- the frame's record


@dataclass(frozen=True)
class AcceptSettings:
    """Thresholds that decide whether a frame's fit is accepted (all user-settable)."""

    max_reproj_px: float = 8.0  # median over views of each view's median keypoint error
    # the same error relative to the hand's size in each view (the longer side of the box
    # around its projected keypoints), so one threshold holds for near and far cameras and
    # any resolution: 0.05 is 5 px on a 100 px hand
    max_reproj_rel: float = 0.05
    min_mask_iou: float = 0.6  # median over views with a mask
    min_views: int = 2  # views with keypoints
    # Checks that do not trust the detections alone (handanno.annotate.quality): biased
    # detections can be reprojected well by a fit that is millimetres off. Chosen on synthetic
    # sessions read by MediaPipe so that no accepted frame is over 5 mm off while fits to clean
    # keypoints stay accepted (docs/performance.md, "Acceptance"; benchmarks/bench_acceptance.py).
    outlier_views: int = 1  # views that may fail the two per-view checks below (one detector or GrabCut miss)
    max_view_reproj_rel: float = 0.05  # each view's median keypoint error / the hand's size there, every view but those
    min_view_mask_iou: float = 0.85  # IoU of the fitted mesh and the view's mask, every view with a mask but those
    max_triangulation_gap_mm: float = 4.5  # median over keypoints of |fit - robust triangulation of the detections|
    max_bone_dev: float = 0.25  # bone lengths against the model's mean hand, its overall size set aside
    max_joint_limit_excess_deg: float = 0.0  # beyond the anatomical ranges of JOINT_LIMITS_DEG

    @classmethod
    def accept_all(cls) -> AcceptSettings:
        """Thresholds that accept every fitted frame seen in ``min_views`` views (to look at every fit)."""
        return cls(**{f.name: 1e9 if f.name.startswith("max_") else 0.0
                      for f in fields(cls) if f.name.startswith(("max_", "min_")) and f.name != "min_views"},
                   outlier_views=1_000_000)  # fmt: skip


def with_thresholds(accept: AcceptSettings, changes: dict, option: str = "thresholds") -> AcceptSettings:
    """``accept`` with some thresholds changed, by field name; a clear error for an unknown name or a bad value.

    >>> with_thresholds(AcceptSettings(), {"min_view_mask_iou": 0.7}).min_view_mask_iou
    0.7
    """
    names = {f.name for f in fields(AcceptSettings)}
    out = {}
    for key, value in changes.items():
        if key not in names:
            raise HandannoError(f"{option}: unknown threshold {key!r}; known: {', '.join(sorted(names))}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise HandannoError(f"{option}: {key} takes a number >= 0, got {value!r}")
        out[key] = int(value) if key in ("outlier_views", "min_views") else float(value)
    return replace(accept, **out)




def frame_quality(
    joints: np.ndarray, vertices: np.ndarray, faces: np.ndarray, rig: CameraRig, kp: np.ndarray,
    masks: list[np.ndarray | None], accept: AcceptSettings, min_keypoint_conf: float = 0.2,
    triangulation_max_px: float = 15.0, joints_tri: np.ndarray | None = None, pose: np.ndarray | None = None,
    layer: ManoLayer | None = None,
) -> dict:
    """One frame's quality record: per-view errors, the checks of :mod:`handanno.annotate.quality`, accepted + reasons.

    Args:
        joints: ``(21, 3)`` the fitted keypoints, world metres.
        vertices: ``(V, 3)`` the fitted mesh, world metres.
        faces: ``(F, 3)``.
        rig: the ``C`` cameras.
        kp: ``(C, 21, 3)`` the keypoints ``[u, v, conf]`` the fit used, pixels.
        masks: per camera the ``(H, W)`` bool mask from the image's segmentation, or None.
        accept: the thresholds.
        min_keypoint_conf: keypoints under it are not compared with the fit.
        triangulation_max_px: the robust triangulation's inlier bound (when it triangulates here).
        joints_tri: ``(21, 3)`` the robust triangulation of ``kp`` (world metres, NaN where
            unknown); None triangulates here.
        pose: ``(48,)`` the fitted pose (FreiHAND layout) and ``layer`` the hand model: with
            both, the hand's plausibility (bone proportions, joint ranges) is checked too.
        layer: see ``pose``.

    Returns:
        ``{"reproj_err_px": {cam: px | None}, "mask_iou": {cam: IoU | None}, "accepted": bool,
        "reasons": [str], "reproj_rel": {cam: error / hand size | None}, "view_reproj_rel",
        "view_mask_iou" (the per-view values once ``outlier_views`` worst views are set aside),
        "triangulation_gap_mm", "bone_length_dev", "joint_limit_excess_deg"}``; a value is
        None where it cannot be computed (its check is then not applied).
    """
    acc = accept
    reproj: dict[str, float | None] = {}
    rel: dict[str, float] = {}
    iou: dict[str, float | None] = {}
    for c, cam in enumerate(rig):
        ok = kp[c, :, 2] >= min_keypoint_conf
        if ok.any():
            uv = cam.project(joints)  # (21, 2)
            err = float(np.median(np.linalg.norm(uv[ok] - kp[c, ok, :2], axis=1)))
            reproj[cam.name] = json_float(err)
            rel[cam.name] = err / max(float(np.ptp(uv, axis=0).max()), 1.0)
        else:
            reproj[cam.name] = None
        if masks[c] is not None:
            sil = mesh_mask(vertices, faces, cam)
            union = (sil | masks[c]).sum()
            iou[cam.name] = json_float(float((sil & masks[c]).sum() / union) if union else 0.0)
        else:
            iou[cam.name] = None
    reasons = []
    errs = [v for v in reproj.values() if v is not None]
    rels = list(rel.values())
    if len(errs) < acc.min_views:
        reasons.append(f"keypoints in {len(errs)} view(s), fewer than {acc.min_views}")
    else:
        if float(np.median(errs)) > acc.max_reproj_px:
            reasons.append(f"median reprojection error {np.median(errs):.1f} px > {acc.max_reproj_px} px")
        median_rel = float(np.median(rels))
        if median_rel > acc.max_reproj_rel:
            reasons.append(f"median reprojection error {median_rel:.1%} of the hand's size in the image "
                           f"> {acc.max_reproj_rel:.1%}")
    ious = [v for v in iou.values() if v is not None]
    if ious and float(np.median(ious)) < acc.min_mask_iou:
        reasons.append(f"median mask IoU {np.median(ious):.2f} < {acc.min_mask_iou}")
    k = acc.outlier_views
    # view agreement: every view but k agrees with the fit (biased detections disagree between views)
    view_rel = view_bound(rels, k, "high")
    if view_rel is not None and view_rel > acc.max_view_reproj_rel:
        n_off = sum(v > acc.max_view_reproj_rel for v in rels)
        reasons.append(f"{n_off} of {len(rels)} views off the fit by more than {acc.max_view_reproj_rel:.1%} of "
                       f"the hand's size (worst but {k}: {view_rel:.1%}); at most {k} allowed")
    view_iou = view_bound(ious, k, "low")
    if view_iou is not None and view_iou < acc.min_view_mask_iou:
        n_off = sum(v < acc.min_view_mask_iou for v in ious)
        reasons.append(f"{n_off} of {len(ious)} views with mask IoU under {acc.min_view_mask_iou} "
                       f"(worst but {k}: {view_iou:.2f}); at most {k} allowed")
    # the fit against the robust triangulation of the same detections
    if joints_tri is None:
        joints_tri = triangulate_frames(rig, kp[None], min_keypoint_conf, triangulation_max_px).joints3d[0]
    gap_m = triangulation_gap_m(joints, joints_tri)
    gap_mm = None if gap_m is None else 1000.0 * gap_m
    if gap_mm is not None and gap_mm > acc.max_triangulation_gap_mm:
        reasons.append(f"fit {gap_mm:.1f} mm from the triangulated keypoints (median) > "
                       f"{acc.max_triangulation_gap_mm} mm")
    # plausibility of the hand itself: bone proportions, joint angles
    bone_dev = limit_deg = None
    if pose is not None and layer is not None:
        rest = layer.flat_keypoints()  # (21, 3) flat mean hand
        _, bone_dev, bone = bone_length_deviation(joints, rest)
        if bone_dev > acc.max_bone_dev:
            p, c = BONES[bone]
            reasons.append(f"bone {JOINT_NAMES[p]}-{JOINT_NAMES[c]} {bone_dev:.0%} off the model's proportions "
                           f"> {acc.max_bone_dev:.0%}")
        hands_mean = layer.pose_mean[3:].double().cpu().numpy()
        articulation = (np.asarray(pose, np.float64)[3:] + hands_mean).reshape(15, 3)  # (15, 3) full axis-angle
        angles = articulation_angles(articulation, anatomical_bases(rest, layer.side))
        excess = joint_limit_excess(angles)  # (15, 3) deg
        j, a = np.unravel_index(int(np.argmax(excess)), excess.shape)
        limit_deg = float(excess[j, a])
        if limit_deg > acc.max_joint_limit_excess_deg:
            lo, hi = JOINT_LIMITS_DEG[j, a]
            reasons.append(f"{MANO_JOINT_NAMES[j]} {AXIS_NAMES[a]} {np.rad2deg(angles[j, a]):.0f} deg, "
                           f"{limit_deg:.0f} deg beyond its anatomical range [{lo:.0f}, {hi:.0f}] "
                           f"> {acc.max_joint_limit_excess_deg} deg")

    def num(x: float | None) -> float | None:
        return None if x is None else json_float(float(x))

    return {"reproj_err_px": reproj, "mask_iou": iou, "accepted": not reasons, "reasons": reasons,
            "reproj_rel": {cam.name: num(rel.get(cam.name)) for cam in rig}, "view_reproj_rel": num(view_rel),
            "view_mask_iou": num(view_iou), "triangulation_gap_mm": num(gap_mm), "bone_length_dev": num(bone_dev),
            "joint_limit_excess_deg": num(limit_deg), "thresholds": asdict(accept)}  # fmt: skip


def rejudge_fits(
    session: Session, frame_index: Sequence[int], kp_all: np.ndarray, accept: AcceptSettings, layer: ManoLayer,
    min_keypoint_conf: float = 0.2, triangulation_max_px: float = 15.0,
) -> list[str]:
    """Judge again the fits that were judged with other thresholds; rewrite their ``quality`` only.

    A fit stays as it is when only the acceptance thresholds change (``handanno fit
    --min-view-mask-iou 0.75`` on a fitted session): its mesh is posed again from the record,
    its masks read from the session, and :func:`frame_quality` decides with ``accept``. A
    record without ``quality.thresholds`` (made before they were stored) is judged again too.

    Args:
        session: the session.
        frame_index: indices into ``session.frames`` of the frames to look at (fitted, up to date).
        kp_all: ``(N, C, 21, 3)`` the keypoints of all the session's frames.
        accept: the thresholds now.
        layer: the hand model the fits were made with.
        min_keypoint_conf: see :func:`frame_quality`.
        triangulation_max_px: see :func:`frame_quality`.

    Returns:
        The frames judged again.
    """
    wanted = asdict(accept)
    done = []
    faces = layer.faces.cpu().numpy()
    for b in frame_index:
        frame = session.frames[b]
        path = session.fit_path(frame)
        rec = readable_fit(path)
        if rec is None or rec.get("quality", {}).get("thresholds") == wanted:
            continue
        with torch.no_grad():
            out = layer(*(torch.as_tensor(np.asarray(rec[k], np.float64)[None], dtype=layer.dtype, device=layer.device)
                          for k in ("pose", "betas", "trans")))  # fmt: skip
        joints = np.asarray(rec["joints"], np.float64)
        vertices = out.vertices[0].double().cpu().numpy()
        masks = load_masks(session, [frame])[0]
        rec["quality"] = frame_quality(joints, vertices, faces, session.rig, kp_all[b], masks, accept,
                                       min_keypoint_conf, triangulation_max_px, pose=np.asarray(rec["pose"]),
                                       layer=layer)  # fmt: skip
        write_json(path, rec)
        done.append(frame)
    return done


def frame_summary(quality: dict) -> dict:
    """One frame's line in report.json: accepted, reasons, the medians over views and the other checks' values.

    Example:
        >>> q = {"reproj_err_px": {"a": 1.0, "b": 3.0, "c": None}, "mask_iou": {"a": 0.9},
        ...      "accepted": True, "reasons": [], "triangulation_gap_mm": 1.5}
        >>> frame_summary(q)  # doctest: +NORMALIZE_WHITESPACE
        {'accepted': True, 'reasons': [], 'median_reproj_err_px': 2.0, 'median_mask_iou': 0.9, 'views': 2,
         'view_reproj_rel': None, 'view_mask_iou': None, 'triangulation_gap_mm': 1.5, 'bone_length_dev': None,
         'joint_limit_excess_deg': None}
    """
    errs = [v for v in (quality.get("reproj_err_px") or {}).values() if v is not None]
    ious = [v for v in (quality.get("mask_iou") or {}).values() if v is not None]
    return {
        "accepted": bool(quality.get("accepted")),
        "reasons": list(quality.get("reasons", [])),
        "median_reproj_err_px": json_float(float(np.median(errs))) if errs else None,
        "median_mask_iou": json_float(float(np.median(ious))) if ious else None,
        "views": len(errs),
        **{key: quality.get(key) for key in ("view_reproj_rel", "view_mask_iou", "triangulation_gap_mm",
                                             "bone_length_dev", "joint_limit_excess_deg")},
    }


def evaluate_against_ground_truth(session: Session, layer: ManoLayer) -> dict | None:
    """MPJPE / MPVPE / PA-MPJPE / PA-MPVPE (mm) of fits/ against ground_truth/ over frames that have both."""
    pairs = [(session.fit_path(f), session.fit_path(f, "ground_truth")) for f in session.frames]
    pairs = [(readable_fit(a), readable_fit(b)) for a, b in pairs]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    fit = [a for a, _ in pairs]
    gt = [b for _, b in pairs]
    dev = layer.faces.device

    def verts(recs):
        pose = torch.as_tensor(np.stack([r["pose"] for r in recs]), dtype=torch.float32, device=dev)
        betas = torch.as_tensor(np.stack([r["betas"] for r in recs]), dtype=torch.float32, device=dev)
        trans = torch.as_tensor(np.stack([r["trans"] for r in recs]), dtype=torch.float32, device=dev)
        with torch.no_grad():
            out = layer(pose, betas, trans)
        return out.joints.double().cpu().numpy(), out.vertices.double().cpu().numpy()

    jf, vf = verts(fit)
    jg, vg = verts(gt)
    return {
        "frames": len(pairs),
        "mpjpe_mm": float(metrics.mpjpe(jf, jg)),
        "mpvpe_mm": float(metrics.mpvpe(vf, vg)),
        "pa_mpjpe_mm": float(metrics.pa_mpjpe(jf, jg)),
        "pa_mpvpe_mm": float(metrics.pa_mpvpe(vf, vg)),
        "accepted": int(sum(bool(r.get("quality", {}).get("accepted")) for r in fit)),
    }
