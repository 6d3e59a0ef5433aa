"""``handanno fit``: from a session folder to accepted hand fits and FreiHAND labels.

Stages, each skipped where its outputs already exist (``force`` redoes them), so a user can
bring their own keypoints or masks and an interrupted run resumes:

1. detect      keypoints2d/<cam>/<frame>.json   (given | cpm | mediapipe)
2. triangulate (in memory) robust DLT per frame; the fit's initialisation
3. fit         fits/<frame>.json                batched MANO fit to the keypoints, then
   segment     masks/<cam>/<frame>.png          GrabCut seeded by that fit's mesh, then
               the silhouette stage (keypoints and masks together)
4. export      labels/                          FreiHAND layout, accepted frames only

``report.json`` in the session sums it up (per-frame quality, skipped frames with reasons,
timings, and, for synthetic sessions with ``ground_truth/``, the accuracy).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate import grabcut
from handanno.annotate.fit_mano import FitInputs, FitResult, FitSettings, fit_batch, initial_pose
from handanno.annotate.overlay import mesh_mask
from handanno.annotate.session_io import (
    Session,
    fit_record,
    json_float,
    keypoints_made_by_handanno,
    mask_made_by_handanno,
    open_session,
    read_fit,
    read_mask,
    read_session_keypoints,
    write_keypoints_file,
    write_mask,
)
from handanno.calibration.camera import CameraRig
from handanno.calibration.triangulate import triangulate_robust
from handanno.data.files_io import read_image, write_json
from handanno.data.lock_io import FolderLock
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.models.hand_model_io import load_hand_model
from handanno.models.mano import ManoLayer

log = logging.getLogger(__name__)

DETECTORS = ("given", "cpm", "mediapipe")


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
    max_joint_limit_excess_deg: float = 0.0  # beyond the anatomical ranges of quality.JOINT_LIMITS_DEG

    @classmethod
    def accept_all(cls) -> AcceptSettings:
        """Thresholds that accept every fitted frame seen in ``min_views`` views (to look at every fit)."""
        return cls(**{f.name: 1e9 if f.name.startswith("max_") else 0.0
                      for f in fields(cls) if f.name.startswith(("max_", "min_")) and f.name != "min_views"},
                   outlier_views=1_000_000)  # fmt: skip


@dataclass(frozen=True)
class PipelineSettings:
    """Everything ``handanno fit`` needs."""

    session: Path
    model_dir: Path | None = None
    hand: str = "right"
    detector: str = "given"
    detector_weights: Path | None = None
    detector_flip_test: bool = False
    device: str = "auto"
    silhouette: bool = True
    export: bool = True
    overlays: bool = False
    frames: str | None = None
    force: bool = False
    batch_frames: int | None = None  # None: 64 on the CPU, 1024 on CUDA
    min_keypoint_conf: float = 0.2
    triangulation_max_px: float = 15.0
    fit: FitSettings = field(default_factory=FitSettings)
    accept: AcceptSettings = field(default_factory=AcceptSettings)
    grabcut: grabcut.GrabCutSettings = field(default_factory=grabcut.GrabCutSettings)
    progress: bool = True


@dataclass(frozen=True)
class PipelineReport:
    """What a run did."""

    frames_total: int
    frames_fitted: int
    frames_accepted: int
    skipped: dict[str, str]
    timings_s: dict[str, float]
    labels_written: int  # samples in labels/ when this run rewrote it, else 0
    accuracy: dict | None
    report_path: Path
    inputs_found: dict[str, int] = field(default_factory=dict)  # see found_inputs
    notes: tuple[str, ...] = ()  # damaged images, ignored keypoints, ... (also in report.json)


def _bar(it, settings: PipelineSettings, desc: str, total: int | None = None):
    return tqdm(it, desc=desc, total=total, disable=not settings.progress, leave=False, unit="it")


# ----------------------------------------------------------------------------------------
# 1. detect
# ----------------------------------------------------------------------------------------
def run_detect(session: Session, settings: PipelineSettings) -> int:
    """Write keypoints2d/ for every view that lacks it (or all with ``force``); return how many were written."""
    if settings.detector not in DETECTORS:
        raise HandannoError(f"--detector {settings.detector!r}: choose one of {', '.join(DETECTORS)}")
    todo = [(c, f) for f in session.frames for c in session.cameras
            if (c, f) not in session.bad_views and _needs_keypoints(session.keypoints_path(c, f), settings)]
    if settings.detector == "given":
        have = sum(session.keypoints_path(c, f).is_file() for f in session.frames for c in session.cameras)
        if have == 0:
            raise HandannoError(
                f"{session.root / 'keypoints2d'}: no keypoint files for the selected frames; with --detector given "
                "bring keypoints2d/<camera>/<frame>.json, or use --detector cpm --weights CKPT or --detector mediapipe"
            )
        if todo:
            log.info("%d view(s) have no keypoint file: treated as views where the hand is not seen", len(todo))
        return 0
    detect = _make_detector(settings)
    written = 0
    for cam, frame in _bar(todo, settings, f"detect ({settings.detector})"):
        image = read_image(session.images[(cam, frame)])
        kp_path = session.keypoints_path(cam, frame)
        kp = detect(image, cam)
        if kp is not None:
            write_keypoints_file(kp_path, kp, settings.detector)
            written += 1
        elif kp_path.is_file():  # --force, and the hand is no longer found: the earlier detection goes
            kp_path.unlink()
    return written


def _needs_keypoints(path: Path, settings: PipelineSettings) -> bool:
    """Whether the detector must (re)write this keypoint file.

    A missing file is detected. With ``force``, a file one of handanno's detectors wrote is
    detected again; a file the user brought (source "given", or any source that is not a
    detector of handanno's) is never overwritten.
    """
    if not path.is_file():
        return True
    return settings.force and settings.detector != "given" and keypoints_made_by_handanno(path)


def _make_detector(settings: PipelineSettings) -> Callable[[np.ndarray, str], np.ndarray | None]:
    """``detect(image, camera) -> (21, 3) keypoints or None``; called frame by frame, in order."""
    if settings.detector == "mediapipe":
        from handanno.annotate.detect_mediapipe import MediaPipeDetector

        mediapipe = MediaPipeDetector(hand=settings.hand)
        return lambda image, camera: mediapipe(image)
    if settings.detector_weights is None:
        raise HandannoError("--detector cpm needs --weights CKPT (train one with `handanno train cpm` or `unet`)")
    from handanno.models.cpm_detector import CPMDetector, HandTracker

    device = resolve_device(settings.device)
    flip = True if settings.detector_flip_test else None  # off: as the checkpoint says
    return HandTracker(CPMDetector.from_checkpoint(settings.detector_weights, device, flip_test=flip))


# ----------------------------------------------------------------------------------------
# 2. triangulate
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Triangulated:
    """Per-frame robust triangulation of the keypoints."""

    joints3d: np.ndarray  # (B, 21, 3) metres, NaN where unknown
    inliers: np.ndarray  # (B, C, 21) bool
    views_with_keypoints: np.ndarray  # (B,) int


def run_triangulate(rig: CameraRig, kp: np.ndarray, settings: PipelineSettings) -> Triangulated:
    """Robust DLT of ``(B, C, 21, 3)`` keypoints: all frames' keypoints in one vectorised call."""
    B, C, J, _ = kp.shape
    conf = np.where(kp[..., 2] >= settings.min_keypoint_conf, kp[..., 2], 0.0)  # (B, C, J)
    uv = kp[..., :2].transpose(1, 0, 2, 3).reshape(C, B * J, 2)  # (C, B*J, 2)
    cf = conf.transpose(1, 0, 2).reshape(C, B * J)  # (C, B*J)
    res = triangulate_robust(uv, cf, rig, max_reproj_px=settings.triangulation_max_px)
    joints = res.points.reshape(B, J, 3)
    inl = res.inlier_mask.reshape(C, B, J).transpose(1, 0, 2)
    views = (conf > 0).any(axis=2).sum(axis=1)
    return Triangulated(joints, inl, views)


# ----------------------------------------------------------------------------------------
# 3. segment
# ----------------------------------------------------------------------------------------
def segment_from_fit(
    session: Session, frames: list[str], vertices: np.ndarray, faces: np.ndarray, kp: np.ndarray,
    settings: PipelineSettings,
) -> set[tuple[str, str]]:
    """GrabCut the views without a mask, seeded by the fitted mesh's silhouette (keypoints as fallback).

    The mesh of the keypoint fit seeds GrabCut better than the keypoints do (its outline is
    probable hand, its eroded inside sure hand), so each view is segmented once, after that
    fit. Masks already there are kept: the user's always, an earlier run's (marked inside the
    PNG, :func:`handanno.annotate.session_io.mask_made_by_handanno`) unless ``--force``.
    Views run in a thread per core (OpenCV releases the GIL).

    Args:
        session: the session.
        frames: the batch's ``B`` frames.
        vertices: ``(B, V, 3)`` the keypoint fit's meshes, world metres.
        faces: ``(F, 3)``.
        kp: ``(B, C, 21, 3)`` the views' keypoints (the fallback seeds).
        settings: ``force``, GrabCut settings, the keypoint confidence threshold.

    Returns:
        The ``(camera, frame)`` masks written by this run.
    """
    jobs = [(b, c) for b in range(len(frames)) for c in range(len(session.cameras))
            if (session.cameras[c], frames[b]) not in session.bad_views
            and _needs_mask(session.mask_path(session.cameras[c], frames[b]), settings.force)]  # fmt: skip

    def one(job: tuple[int, int]) -> tuple[str, str] | None:
        b, c = job
        cam, frame = session.rig[c], frames[b]
        ok = kp[b, c, :, 2] >= settings.min_keypoint_conf
        image = read_image(session.images[(cam.name, frame)])
        seeds_kp = kp[b, c] if ok.sum() >= 4 else None
        sil = mesh_mask(vertices[b], faces, cam)
        mask = grabcut.segment_hand(image, keypoints=seeds_kp, silhouette=sil, settings=settings.grabcut)
        if mask is None:
            return None
        write_mask(session.mask_path(cam.name, frame), mask)
        return cam.name, frame

    with ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8))) as pool:
        done = list(_bar(pool.map(one, jobs), settings, "segment", total=len(jobs)))
    return {d for d in done if d is not None}


def _needs_mask(path: Path, force: bool) -> bool:
    """A missing mask is made; with ``force`` one handanno made is made again; the user's never."""
    return not path.is_file() or force and mask_made_by_handanno(path)


# ----------------------------------------------------------------------------------------
# 4. fit
# ----------------------------------------------------------------------------------------
def hand_boxes(vertices: np.ndarray, rig: CameraRig, scale: float) -> np.ndarray:
    """Square integer boxes ``(B, C, 4)`` ``(x0, y0, side, side)`` around the projected mesh, image px."""
    B = vertices.shape[0]
    out = np.zeros((B, len(rig), 4))
    for c, cam in enumerate(rig):
        uv = cam.project(vertices)  # (B, V, 2)
        lo, hi = uv.min(1), uv.max(1)
        centre = (lo + hi) / 2
        side = np.ceil(np.maximum(hi - lo, 1).max(1) * scale)
        side = np.clip(side, 8, 4 * max(cam.image_size))
        out[:, c, 0] = np.floor(centre[:, 0] - side / 2)
        out[:, c, 1] = np.floor(centre[:, 1] - side / 2)
        out[:, c, 2] = side
        out[:, c, 3] = side
    return out


def crop_masks(masks: list[list[np.ndarray | None]], boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-resample each ``(H, W)`` bool mask's box to ``(size, size)`` floats in [0, 1].

    Returns:
        ``crops (B, C, size, size)`` float32 and ``valid (B, C)`` bool.
    """
    B, C = boxes.shape[:2]
    crops = np.zeros((B, C, size, size), np.float32)
    valid = np.zeros((B, C), bool)
    for b in range(B):
        for c in range(C):
            m = masks[b][c]
            if m is None:
                continue
            x0, y0, side = (int(v) for v in boxes[b, c, :3])
            h, w = m.shape
            pad = np.zeros((side, side), np.float32)
            sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
            if sx1 > sx0 and sy1 > sy0:
                pad[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = m[sy0:sy1, sx0:sx1]
            crops[b, c] = cv2.resize(pad, (size, size), interpolation=cv2.INTER_AREA)
            valid[b, c] = True
    return crops, valid


def _silhouette_renderer(faces: torch.Tensor, fit: FitSettings):
    from handanno.annotate.render import SilhouetteSettings, render_silhouettes

    rs = SilhouetteSettings(image_size=(fit.sil_size, fit.sil_size), sigma=fit.sil_sigma,
                            cull_back_faces=fit.sil_cull_back_faces)

    def render(vertices: torch.Tensor, cams: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        return render_silhouettes(vertices, faces, cams["K"], cams["dist"], cams["R"], cams["t"], rs, crop_box=boxes)

    return render


def frame_quality(
    joints: np.ndarray, vertices: np.ndarray, faces: np.ndarray, rig: CameraRig, kp: np.ndarray,
    masks: list[np.ndarray | None], settings: PipelineSettings, joints_tri: np.ndarray | None = None,
    pose: np.ndarray | None = None, layer: ManoLayer | None = None,
) -> dict:
    """One frame's quality record: per-view errors, the checks of :mod:`handanno.annotate.quality`, accepted + reasons.

    Args:
        joints: ``(21, 3)`` the fitted keypoints, world metres.
        vertices: ``(V, 3)`` the fitted mesh, world metres.
        faces: ``(F, 3)``.
        rig: the ``C`` cameras.
        kp: ``(C, 21, 3)`` the keypoints ``[u, v, conf]`` the fit used, pixels.
        masks: per camera the ``(H, W)`` bool mask from the image's segmentation, or None.
        settings: ``accept`` (the thresholds), ``min_keypoint_conf``, ``triangulation_max_px``.
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
    from handanno.annotate import quality
    from handanno.data.conventions import BONES, JOINT_NAMES

    acc = settings.accept
    reproj: dict[str, float | None] = {}
    rel: dict[str, float] = {}
    iou: dict[str, float | None] = {}
    for c, cam in enumerate(rig):
        ok = kp[c, :, 2] >= settings.min_keypoint_conf
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
    view_rel = quality.view_bound(rels, k, "high")
    if view_rel is not None and view_rel > acc.max_view_reproj_rel:
        n_off = sum(v > acc.max_view_reproj_rel for v in rels)
        reasons.append(f"{n_off} of {len(rels)} views off the fit by more than {acc.max_view_reproj_rel:.1%} of "
                       f"the hand's size (worst but {k}: {view_rel:.1%}); at most {k} allowed")
    view_iou = quality.view_bound(ious, k, "low")
    if view_iou is not None and view_iou < acc.min_view_mask_iou:
        n_off = sum(v < acc.min_view_mask_iou for v in ious)
        reasons.append(f"{n_off} of {len(ious)} views with mask IoU under {acc.min_view_mask_iou} "
                       f"(worst but {k}: {view_iou:.2f}); at most {k} allowed")
    # the fit against the robust triangulation of the same detections
    if joints_tri is None:
        joints_tri = run_triangulate(rig, kp[None], settings).joints3d[0]
    gap_m = quality.triangulation_gap_m(joints, joints_tri)
    gap_mm = None if gap_m is None else 1000.0 * gap_m
    if gap_mm is not None and gap_mm > acc.max_triangulation_gap_mm:
        reasons.append(f"fit {gap_mm:.1f} mm from the triangulated keypoints (median) > "
                       f"{acc.max_triangulation_gap_mm} mm")
    # plausibility of the hand itself: bone proportions, joint angles
    bone_dev = limit_deg = None
    if pose is not None and layer is not None:
        with torch.no_grad():
            zeros = torch.zeros(1, 10, dtype=layer.dtype, device=layer.device)
            rest = layer.keypoints(-layer.pose_mean[None], zeros, zeros[:, :3])[0]  # (21, 3) flat mean hand
        rest = rest.double().cpu().numpy()
        _, bone_dev, bone = quality.bone_length_deviation(joints, rest)
        if bone_dev > acc.max_bone_dev:
            p, c = BONES[bone]
            reasons.append(f"bone {JOINT_NAMES[p]}-{JOINT_NAMES[c]} {bone_dev:.0%} off the model's proportions "
                           f"> {acc.max_bone_dev:.0%}")
        hands_mean = layer.pose_mean[3:].double().cpu().numpy()
        articulation = (np.asarray(pose, np.float64)[3:] + hands_mean).reshape(15, 3)  # (15, 3) full axis-angle
        angles = quality.articulation_angles(articulation, quality.anatomical_bases(rest, layer.side))
        excess = quality.joint_limit_excess(angles)  # (15, 3) deg
        j, a = np.unravel_index(int(np.argmax(excess)), excess.shape)
        limit_deg = float(excess[j, a])
        if limit_deg > acc.max_joint_limit_excess_deg:
            lo, hi = quality.JOINT_LIMITS_DEG[j, a]
            reasons.append(f"{quality.MANO_JOINT_NAMES[j]} {quality.AXIS_NAMES[a]} {np.rad2deg(angles[j, a]):.0f} deg, "
                           f"{limit_deg:.0f} deg beyond its anatomical range [{lo:.0f}, {hi:.0f}] "
                           f"> {acc.max_joint_limit_excess_deg} deg")

    def num(x: float | None) -> float | None:
        return None if x is None else json_float(float(x))

    return {"reproj_err_px": reproj, "mask_iou": iou, "accepted": not reasons, "reasons": reasons,
            "reproj_rel": {cam.name: num(rel.get(cam.name)) for cam in rig}, "view_reproj_rel": num(view_rel),
            "view_mask_iou": num(view_iou), "triangulation_gap_mm": num(gap_mm), "bone_length_dev": num(bone_dev),
            "joint_limit_excess_deg": num(limit_deg)}  # fmt: skip


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


def _load_masks(session: Session, frames: list[str]) -> list[list[np.ndarray | None]]:
    out = []
    for f in frames:
        row = []
        for cam in session.rig:
            p = session.mask_path(cam.name, f)
            ok = p.is_file() and (cam.name, f) not in session.bad_views
            row.append(read_mask(p, cam.image_size) if ok else None)
        out.append(row)
    return out


def _readable_fit(path: Path) -> dict | None:
    """The record at ``path``, or None when there is none or it cannot be trusted (a warning says why)."""
    if not path.is_file():
        return None
    try:
        return read_fit(path)
    except HandannoError as exc:
        log.warning("%s; that frame is fitted again", exc)
        return None


def _existing_betas(session: Session) -> np.ndarray | None:
    fits = sorted((session.root / "fits").glob("*.json"))
    recs = [r for r in (_readable_fit(p) for p in fits[:50]) if r is not None]
    return np.mean([r["betas"] for r in recs], axis=0) if recs else None


def _finite_frames(res: FitResult) -> np.ndarray:
    """``(B,)`` bool: frames whose fitted parameters, joints and vertices are all finite."""
    B = res.pose.shape[0]
    ok = np.isfinite(res.pose).all(1) & np.isfinite(res.trans).all(1)
    ok &= np.isfinite(res.joints.reshape(B, -1)).all(1) & np.isfinite(res.vertices.reshape(B, -1)).all(1)
    return ok & bool(np.isfinite(res.betas).all())


def found_inputs(session: Session) -> dict[str, int]:
    """How many keypoint files and masks of the session's frames were not made by handanno's own stages.

    Keys: ``keypoints_given`` (files whose source is not one of handanno's detectors: the
    user's, or a synthetic session's), ``keypoints_detected_earlier`` (an earlier run's
    detections, reused), ``masks_given`` (masks without handanno's mark: the user's).
    """
    out = {"keypoints_given": 0, "keypoints_detected_earlier": 0, "masks_given": 0}
    for f in session.frames:
        for cam in session.cameras:
            kp = session.keypoints_path(cam, f)
            if kp.is_file():
                out["keypoints_detected_earlier" if keypoints_made_by_handanno(kp) else "keypoints_given"] += 1
            m = session.mask_path(cam, f)
            if m.is_file() and not mask_made_by_handanno(m):
                out["masks_given"] += 1
    return out


def fit_frames(
    layer: ManoLayer, session: Session, frames: list[str], kp: np.ndarray, tri: Triangulated,
    betas: np.ndarray | None, settings: PipelineSettings, device: torch.device, timings: dict[str, float] | None = None,
) -> tuple[FitResult, list[list[np.ndarray | None]]]:
    """Fit one batch of frames: keypoints, then GrabCut seeded by that fit, then silhouettes.

    Args:
        layer: the hand model on ``device``.
        session: the session.
        frames: the batch's ``B`` frames.
        kp: ``(B, C, 21, 3)`` keypoints ``[u, v, conf]``.
        tri: the robust triangulation of ``kp`` (initialisation and the 3D stage).
        betas: ``(10,)`` the session's shape, held; None to fit it.
        settings: everything else.
        device: where to fit.
        timings: seconds per step (``fit_keypoints``, ``segment``, ``fit_silhouettes``) are
            added here.

    Returns:
        The fit and the masks used (``[frame][camera]``, None where a view has none).
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    rig = session.rig
    cams = rig.tensors(device)
    conf = np.where(kp[..., 2] >= settings.min_keypoint_conf, kp[..., 2], 0.0)
    idx = np.array([session.frames.index(f) for f in frames])
    neighbour = torch.as_tensor(np.diff(idx) == 1, device=device)
    fs = settings.fit if betas is None else replace(settings.fit, fit_shape=False)
    inputs = FitInputs(
        uv_px=torch.as_tensor(kp[..., :2], dtype=torch.float32, device=device),
        conf=torch.as_tensor(conf, dtype=torch.float32, device=device),
        cams=cams,
        joints3d=torch.as_tensor(tri.joints3d, dtype=torch.float32, device=device),
        neighbour=neighbour,
    )
    init_pose, init_trans = initial_pose(layer, tri.joints3d, betas)
    res = fit_batch(layer, inputs, replace(fs, iters_sil=0), init_pose, init_trans, betas)
    t1 = time.perf_counter()
    timings["fit_keypoints"] = timings.get("fit_keypoints", 0.0) + t1 - t0
    if not settings.silhouette:
        return res, _load_masks(session, frames)
    segment_from_fit(session, frames, res.vertices, layer.faces.cpu().numpy(), kp, settings)
    masks = _load_masks(session, frames)
    t2 = time.perf_counter()
    timings["segment"] = timings.get("segment", 0.0) + t2 - t1
    if all(m is None for row in masks for m in row) or fs.iters_sil <= 0:
        return res, masks
    boxes = hand_boxes(res.vertices, rig, fs.sil_box_scale)
    crops, valid = crop_masks(masks, boxes, fs.sil_size)
    inputs = replace(
        inputs,
        masks=torch.as_tensor(crops, device=device),
        mask_boxes=torch.as_tensor(boxes, dtype=torch.float32, device=device),
        mask_valid=torch.as_tensor(valid, device=device),
    )
    refine = replace(fs, iters_3d=0, iters_2d=0)
    res = fit_batch(layer, inputs, refine, res.pose, res.trans, res.betas, _silhouette_renderer(layer.faces, fs))
    timings["fit_silhouettes"] = timings.get("fit_silhouettes", 0.0) + time.perf_counter() - t2
    return res, masks


# ----------------------------------------------------------------------------------------
# the whole run
# ----------------------------------------------------------------------------------------
def run_pipeline(settings: PipelineSettings) -> PipelineReport:
    """Run detect → triangulate → segment → fit → export on a session folder.

    The session is locked for the run (:class:`handanno.data.lock_io.FolderLock`): a second
    run on the same session stops at once with a message naming this one.
    """
    if not Path(settings.session).is_dir():
        raise HandannoError(f"session folder {settings.session} does not exist")
    with FolderLock(settings.session, f"handanno fit --session {settings.session}"):
        return _run_pipeline(settings)


def _run_pipeline(settings: PipelineSettings) -> PipelineReport:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t0
        return now

    if settings.hand not in ("right", "left"):
        raise HandannoError(f"--hand {settings.hand!r}: choose right or left")
    session = open_session(settings.session, settings.frames)
    device = resolve_device(settings.device)
    model = load_hand_model(settings.hand, settings.model_dir)
    layer = ManoLayer(model).to(device)
    t = lap("load", t_start)

    found = found_inputs(session)
    if found["masks_given"] or found["keypoints_given"]:
        log.info("using what the session holds: %d keypoint file(s) and %d mask(s) not made by handanno",
                 found["keypoints_given"], found["masks_given"])  # fmt: skip
    run_detect(session, settings)
    t = lap("detect", t)
    input_notes: list[str] = []
    kp_all = read_session_keypoints(session, notes=input_notes)
    t = lap("read", t)

    skipped: dict[str, str] = {}
    todo: list[int] = []
    for b, f in enumerate(session.frames):
        conf = kp_all[b, :, :, 2] >= settings.min_keypoint_conf
        views = int(conf.any(axis=1).sum())
        if views == 0:
            skipped[f] = "hand missing in every view (no confident keypoints)"
        elif views < 2:
            skipped[f] = f"keypoints in only {views} view; need at least two to triangulate"
        elif settings.force or _readable_fit(session.fit_path(f)) is None:
            todo.append(b)
    for f, why in skipped.items():
        log.warning("frame %s skipped: %s", f, why)

    betas = None if settings.force else _existing_betas(session)
    batch = settings.batch_frames or (1024 if device.type == "cuda" else 64)
    fitted = 0
    faces_np = layer.faces.cpu().numpy()
    for start in _bar(range(0, len(todo), batch), settings, "fit", total=(len(todo) + batch - 1) // batch):
        sel = todo[start : start + batch]
        frames = [session.frames[b] for b in sel]
        kp = kp_all[sel]
        tri = run_triangulate(session.rig, kp, settings)
        t = lap("triangulate", t)
        res, masks = fit_frames(layer, session, frames, kp, tri, betas, settings, device, timings)
        t = time.perf_counter()
        finite = _finite_frames(res)
        if betas is None and finite.all():
            betas = res.betas
        # (batch index, its fit, its row in that fit, its masks)
        per_frame = [(i, res, i, masks[i]) for i in range(len(frames)) if finite[i]]
        for i in np.flatnonzero(~finite):  # diverged (NaN poisons the shape a batch shares): refit alone
            tri_i = Triangulated(tri.joints3d[i : i + 1], tri.inliers[i : i + 1], tri.views_with_keypoints[i : i + 1])
            res_i, masks_i = fit_frames(layer, session, frames[i : i + 1], kp[i : i + 1], tri_i, betas, settings,
                                        device)  # fmt: skip
            if _finite_frames(res_i)[0]:
                per_frame.append((int(i), res_i, 0, masks_i[0]))
                continue
            skipped[frames[i]] = "the fit diverged (NaN or inf), also when fitted alone; check its keypoints and masks"
            log.warning("frame %s skipped: %s", frames[i], skipped[frames[i]])
        for i, r, row, frame_masks in sorted(per_frame, key=lambda x: x[0]):
            q = frame_quality(r.joints[row], r.vertices[row], faces_np, session.rig, kp[i], frame_masks, settings,
                              tri.joints3d[i], r.pose[row], layer)
            rec = fit_record(settings.hand, model.name, r.pose[row], r.betas, r.trans[row], r.joints[row], q)
            write_json(session.fit_path(frames[i]), rec)
            fitted += 1
        t = lap("quality+write", t)

    labels_written = 0
    if settings.export:
        from handanno.annotate.export_freihand import export_session, export_up_to_date

        # every frame's fit, not only this run's: labels of earlier runs over other frames stay
        whole = session if settings.frames is None else open_session(settings.session)
        if any(whole.fit_path(f).is_file() for f in whole.frames) and not export_up_to_date(whole):
            labels_written = export_session(whole, layer, source="fits", progress=settings.progress)
            t = lap("export", t)
    if settings.overlays:
        from handanno.annotate.export_overlays import write_overlays

        write_overlays(session, layer, progress=settings.progress)
        t = lap("overlays", t)

    accuracy = evaluate_against_ground_truth(session, layer) if (session.root / "ground_truth").is_dir() else None
    fits = {f: r for f in session.frames if (r := _readable_fit(session.fit_path(f))) is not None}
    accepted = sum(bool(d.get("quality", {}).get("accepted")) for d in fits.values())
    per_frame = {f: frame_summary(d.get("quality", {})) for f, d in fits.items()}
    for f, d in fits.items():
        for why in d.get("quality", {}).get("reasons", []):
            log.warning("frame %s not accepted: %s", f, why)
    timings["total"] = time.perf_counter() - t_start
    report_path = session.root / "report.json"
    report = PipelineReport(
        frames_total=len(session.frames), frames_fitted=fitted, frames_accepted=accepted, skipped=skipped,
        timings_s={k: round(v, 3) for k, v in timings.items()}, labels_written=labels_written,
        accuracy=accuracy, report_path=report_path, inputs_found=found,
        notes=tuple(session.skipped) + tuple(input_notes),
    )
    write_json(report_path, {**asdict(report), "report_path": str(report_path), "session_notes": list(report.notes),
                             "frames": per_frame, "settings": _settings_dict(settings)}, indent=1)  # fmt: skip
    return report


def _settings_dict(settings: PipelineSettings) -> dict:
    d = asdict(settings)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def evaluate_against_ground_truth(session: Session, layer: ManoLayer) -> dict | None:
    """MPJPE / MPVPE / PA-MPJPE / PA-MPVPE (mm) of fits/ against ground_truth/ over frames that have both."""
    from handanno.data import metrics

    pairs = [(session.fit_path(f), session.fit_path(f, "ground_truth")) for f in session.frames]
    pairs = [(_readable_fit(a), _readable_fit(b)) for a, b in pairs]
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
