"""``handanno fit``: from a session folder to accepted hand fits and FreiHAND labels.

This module only orders the stages, each a module of its own; each stage is skipped where
its outputs already exist (``force`` redoes handanno's own), so a user can bring their own
keypoints or masks and an interrupted run resumes:

1. detect       :mod:`~handanno.annotate.detect`       keypoints2d/<cam>/<frame>.json (given | cpm | mediapipe)
2. triangulate  :mod:`~handanno.annotate.triangulate`  in memory: robust DLT per frame, the fit's start
3. fit          :mod:`~handanno.annotate.fit`          batched hand-model fit to the keypoints, then
   segment      :mod:`~handanno.annotate.segment`      masks/<cam>/<frame>.png, GrabCut seeded by that fit's
                                                       meshes (in memory to the next step), then the
                                                       silhouette fit (keypoints and masks together)
4. quality      :mod:`~handanno.annotate.quality`      fits/<frame>.json with its acceptance checks
5. re-detect    :mod:`~handanno.annotate.redetect`     keypoints2d/ again where the fit says the detector missed
                                                       or misread the hand (cpm, mediapipe), those frames fitted
                                                       once more (steps 2-4)
6. export       :mod:`~handanno.annotate.export_freihand`  labels/ (FreiHAND layout, accepted frames only)

One subject, one shape: before steps 2-5 the shape pass fits the shape on up to
``shape_frames`` frames spread over the session (steps 2-3 on those frames, the shape free)
and keeps it in ``shape.json``; every frame's fit then holds it. Frames are fitted in batches
of whole blocks of ``batch_frames`` consecutive frames (:func:`frame_batches`), so a sharded
run (:mod:`handanno.scale.ray_fit`: :func:`detect_stretch`, :func:`fit_session_shape`,
:func:`fit_stretch`, :func:`finish_session`) writes the same fits as this one.

``report.json`` in the session sums it up (per-frame quality, skipped frames with reasons,
timings, and, for synthetic sessions with ``ground_truth/``, the accuracy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from handanno.annotate import grabcut
from handanno.annotate.detect import DETECTORS, DetectSettings, RunDetectors, run_detect
from handanno.annotate.fit import finite_frames, fit_frames
from handanno.annotate.fit_mano import FitResult, FitSettings
from handanno.annotate.quality import (
    AcceptSettings,
    evaluate_against_ground_truth,
    frame_quality,
    frame_summary,
    rejudge_fits,
)
from handanno.annotate.redetect import (
    RedetectSettings,
    agreeing_keypoints,
    box_on_image,
    fit_boxes,
    hand_found,
    nearest_fitted,
    project_fits,
    replaces,
    views_to_redetect,
    widen_boxes,
)
from handanno.annotate.segment import Masks, load_masks, segment_from_fit
from handanno.annotate.session_io import (
    Session,
    fit_record,
    fit_up_to_date,
    keypoints_made_by_handanno,
    mask_made_by_handanno,
    open_session,
    read_session_keypoints,
    readable_fit,
    write_keypoints_file,
)
from handanno.annotate.session_shape import SHAPE_FILE, SessionShape, choose_shape_frames, read_shape, write_shape
from handanno.annotate.triangulate import Triangulated, triangulate_frames
from handanno.data.files_io import read_image, write_json
from handanno.data.lock_io import FolderLock
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["DETECTORS", "AcceptSettings", "FramesResult", "PipelineReport", "PipelineSettings", "RedetectSettings",
           "SessionShape", "detect_stretch", "finish_session", "fit_session_shape", "fit_stretch", "found_inputs",
           "read_shape", "run_pipeline"]  # fmt: skip


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
    redetect: bool = True  # look again where the fit says the detector missed the hand (not with "given")
    redetection: RedetectSettings = field(default_factory=RedetectSettings)
    progress: bool = True
    # The shape pass (one subject, one shape): the shape is fitted on up to this many frames, evenly spread
    # over the session and, within each stretch, the one seen in the most views; every frame then fits its
    # articulation with that shape held (SESSION/shape.json; see fit_session_shape). Measured on a 40-frame
    # session (8 cameras, 3 px + 10 % outliers, full fit), MPJPE / MPVPE / rest shape in mm: the shape fitted
    # with all frames' articulation in one batch (before the shape pass) 0.769 / 1.110 / 0.780; shape pass on
    # 16 frames 0.841 / 1.232 / 0.927, on 32 frames 0.735 / 1.111 / 0.750, on all 40 0.759 / 1.128 / 0.780.
    shape_frames: int = 32

    def detect_settings(self) -> DetectSettings:
        """The detect stage's settings."""
        return DetectSettings(self.detector, self.detector_weights, self.detector_flip_test, self.hand, self.device,
                              self.force, self.progress)  # fmt: skip


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
    # views of this run's fitted frames (views_total) with the hand (RedetectSettings.min_keypoints confident
    # keypoints), before and after re-detection, and the views whose keypoint file re-detection rewrote
    views_total: int = 0
    views_found_before: int = 0
    views_found_after: int = 0
    views_redetected: int = 0
    shape_frames: tuple[str, ...] = ()  # the frames the session's shape was fitted on (SESSION/shape.json)
    failed: dict[str, str] = field(default_factory=dict)  # frames a sharded run could not fit, with why


def _bar(it, settings: PipelineSettings, desc: str, total: int | None = None):
    return tqdm(it, desc=desc, total=total, disable=not settings.progress, leave=False, unit="it")


def _existing_betas(session: Session) -> np.ndarray | None:
    fits = sorted(session.fits_dir.glob("*.json"))
    recs = [r for r in (readable_fit(p) for p in fits[:50]) if r is not None]
    return np.mean([r["betas"] for r in recs], axis=0) if recs else None


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


# ----------------------------------------------------------------------------------------
# the whole run
# ----------------------------------------------------------------------------------------
def run_pipeline(settings: PipelineSettings) -> PipelineReport:
    """Run detect → triangulate → segment → fit → re-detect → export on a session folder.

    The session is locked for the run (:class:`handanno.data.lock_io.FolderLock`): a second
    run on the same session stops at once with a message naming this one.
    """
    if not Path(settings.session).is_dir():
        raise HandannoError(f"session folder {settings.session} does not exist")
    with FolderLock(settings.session, f"handanno fit --session {settings.session}"):
        return _run_pipeline(settings)


def _lap(timings: dict[str, float], name: str, t0: float) -> float:
    """Add the seconds since ``t0`` to ``timings[name]``; return now."""
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - t0
    return now


@dataclass(frozen=True)
class _Run:
    """What every part of a run shares: the session (or a stretch of its frames), the device, the hand model."""

    session: Session
    device: torch.device
    model_name: str
    layer: ManoLayer


def _open_run(settings: PipelineSettings, session: Session | None = None) -> _Run:
    if settings.hand not in ("right", "left"):
        raise HandannoError(f"--hand {settings.hand!r}: choose right or left")
    if settings.shape_frames < 1:
        raise HandannoError(f"shape_frames {settings.shape_frames}: the shape needs at least one frame")
    session = open_session(settings.session, settings.frames) if session is None else session
    device = resolve_device(settings.device)
    model = load_hand_model(settings.hand, settings.model_dir)
    return _Run(session, device, model.name, ManoLayer(model).to(device))


@dataclass(frozen=True)
class FramesResult:
    """What fitting a stretch of a session's frames did (a whole single-process run, or one shard of a sharded one).

    Attributes:
        records: ``{frame: its fit record}`` of the frames fitted (and written to ``fits/``) now.
        skipped: ``{frame: why}`` frames not fitted: seen in too few views, or their fit diverged.
        timings_s: seconds per step.
        views: ``total``, ``found_before``, ``found_after``, ``redetected`` (see :class:`PipelineReport`).
        notes: warnings about the input (keypoints ignored, ...).
        found: :func:`found_inputs` of the stretch, when this part counted them.
    """

    records: dict[str, dict]
    skipped: dict[str, str]
    timings_s: dict[str, float]
    views: dict[str, int]
    notes: tuple[str, ...] = ()
    found: dict[str, int] | None = None


VIEW_COUNTS = ("total", "found_before", "found_after", "redetected")


def _run_pipeline(settings: PipelineSettings) -> PipelineReport:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    run = _open_run(settings)
    session = run.session
    t = _lap(timings, "load", t_start)

    # 1. detect
    found = found_inputs(session)
    if found["masks_given"] or found["keypoints_given"]:
        log.info("using what the session holds: %d keypoint file(s) and %d mask(s) not made by handanno",
                 found["keypoints_given"], found["masks_given"])  # fmt: skip
    detectors = RunDetectors(settings.detect_settings())  # made once, when first needed (MediaPipe is slow to start)
    run_detect(session, settings.detect_settings(), detectors)
    t = _lap(timings, "detect", t)
    input_notes: list[str] = []
    kp_all = read_session_keypoints(session, notes=input_notes)
    _lap(timings, "read", t)

    skipped, todo = _frames_to_fit(session, kp_all, settings)
    # the shape pass (one subject, one shape), then every frame's articulation with that shape held
    shape = _session_shape(run, settings, kp_all, skipped, timings)
    part = _fit_stretch(run, settings, kp_all, todo, shape, detectors, timings, skipped)
    return _finish(run, settings, [part], found, tuple(session.skipped) + tuple(input_notes), shape, timings, t_start)


def _fit_stretch(
    run: _Run, settings: PipelineSettings, kp_all: np.ndarray, todo: list[int], shape: SessionShape | None,
    detectors: RunDetectors, timings: dict[str, float], skipped: dict[str, str], offset: int = 0,
) -> FramesResult:
    """Steps 2-5 for the frames ``todo`` of ``run.session``, in batches of :func:`frame_batches`.

    ``offset``: the place of ``run.session``'s first frame in the whole run's frames (a shard's
    start), so that a shard's batches are those the single-process run makes.
    """
    session = run.session
    fitter = _Fitter(session, settings, run.layer, run.model_name, timings, skipped,
                     None if shape is None else shape.betas)  # fmt: skip
    views = dict.fromkeys(VIEW_COUNTS, 0)

    def views_found(frame_index: np.ndarray) -> int:
        return int(hand_found(kp_all[frame_index], settings.redetection, settings.min_keypoint_conf).sum())

    # fits kept as they are, but judged with other thresholds than now: judged again (no refit)
    t = time.perf_counter()
    kept = sorted(set(range(len(session.frames))) - set(todo) - {session.frames.index(f) for f in skipped
                                                                   if f in session.frames})  # fmt: skip
    rejudged = rejudge_fits(session, kept, kp_all, settings.accept, run.layer, settings.min_keypoint_conf,
                            settings.triangulation_max_px)  # fmt: skip
    if rejudged:
        log.info("%d fit(s) judged again with the thresholds of this run (the fits themselves kept)", len(rejudged))
        _lap(timings, "quality+write", t)

    batch = settings.batch_frames or (1024 if run.device.type == "cuda" else 64)
    batches = frame_batches(todo, batch, offset)
    fitted_joints: dict[int, np.ndarray] = {}  # {frame index: fitted joints} of this run
    for sel in _bar(batches, settings, "fit", total=len(batches)):
        # 2-4. triangulate, fit (+ segment), quality and the fit's record
        joints = fitter.fit(sel, kp_all)  # {frame index: fitted joints}
        fitted_joints.update(joints)
        fitted = np.array(sorted(joints), dtype=int)
        views["total"] += len(fitted) * len(session.cameras)
        views["found_before"] += views_found(fitted)
        # 5. re-detect where the fit says the detector missed or misread the hand; fit those frames once more
        if settings.redetect and settings.detector != "given" and len(fitted):
            t = time.perf_counter()
            redone = redetect_views(session, fitted, kp_all, np.stack([joints[b] for b in fitted]), detectors,
                                    settings)  # fmt: skip
            _lap(timings, "redetect", t)
            views["redetected"] += int(redone.sum())
            if redone.any():
                fitted_joints.update(fitter.fit(fitted[redone.any(axis=1)], kp_all, refit=True))
        views["found_after"] += views_found(fitted)
    # 6. frames seen in one view only: look in the other views around the nearest fitted frame's hand
    if settings.redetect and settings.detector != "given" and settings.redetection.neighbour_frames > 0:
        # frame by frame outwards from the fitted ones (the hand entering: each newly fitted frame guides the next)
        tried: set[tuple[int, int]] = set()  # (frame, guide) pairs looked at: not again in the next round
        while True:
            t = time.perf_counter()
            lone = guide_lone_frames(session, kp_all, fitted_joints, skipped, detectors, settings, tried)
            _lap(timings, "redetect", t)
            if not lone.size:
                break
            for b in lone:
                skipped.pop(session.frames[b], None)
            new = fitter.fit(lone, kp_all)
            if not new:
                break
            fitted_joints.update(new)
            again = np.array(sorted(new), dtype=int)
            views["total"] += len(again) * len(session.cameras)
            views["found_before"] += len(again)  # one view each before
            views["found_after"] += views_found(again)
            views["redetected"] += views_found(again) - len(again)
            log.info("%d frame(s) seen in one view were found in more around a neighbouring fit and fitted", len(again))
    return FramesResult(records=fitter.records, skipped=skipped, timings_s=timings, views=views)


def guide_lone_frames(
    session: Session, kp_all: np.ndarray, fitted_joints: dict[int, np.ndarray], skipped: dict[str, str],
    detectors: RunDetectors, settings: PipelineSettings, tried: set[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Step 6: frames skipped for being seen in one view, detected again in the others around a neighbour's fit.

    The hand entering or leaving the capture, or the detector missing it in all views but one:
    the nearest fitted frame (at most ``redetection.neighbour_frames`` away, this run's fits or
    the session's) says where the hand was a moment before or after; each view without the
    hand is detected in that fit's box, widened (``neighbour_box_scale``). A detection that
    finds the hand is written (never over a file the user brought) and put in ``kp_all``; the
    frame's own fit and its acceptance then judge it.

    ``tried``: ``(frame, guide)`` pairs already looked at (updated): a frame is looked at again only
    when a nearer fitted frame guides it.

    Returns:
        ``(K,)`` int: the frames now seen in at least two views (to fit).
    """
    rs, min_conf = settings.redetection, settings.min_keypoint_conf
    seen = hand_found(kp_all, rs, min_conf)  # (N, C)
    lone = [b for b, f in enumerate(session.frames) if f in skipped and seen[b].sum() == 1]
    if not lone:
        return np.zeros(0, dtype=int)

    def joints_of(b: int) -> np.ndarray | None:
        if b in fitted_joints:
            return fitted_joints[b]
        rec = readable_fit(session.fit_path(session.frames[b]))
        return None if rec is None else np.asarray(rec["joints"], np.float64)

    fitted = sorted(set(fitted_joints) | {b for b, f in enumerate(session.frames)
                                          if f not in skipped and session.fit_path(f).is_file()})  # fmt: skip
    cam_sizes = [cam.image_size for cam in session.rig]
    found = []
    for b in lone:
        n = nearest_fitted(b, fitted, rs.neighbour_frames)
        guide = None if n is None or (tried is not None and (b, n) in tried) else joints_of(n)
        if guide is None:
            continue
        if tried is not None:
            tried.add((b, n))
        proj, in_front = project_fits(guide[None], session.rig)
        boxes = widen_boxes(fit_boxes(proj)[0], rs.neighbour_box_scale)  # (C, 4)
        frame = session.frames[b]
        for c, cam in enumerate(session.cameras):
            path = session.keypoints_path(cam, frame)
            image = session.images.get((cam, frame))
            users = path.is_file() and not keypoints_made_by_handanno(path)
            if seen[b, c] or not in_front[0, c] or image is None or users:
                continue
            if not box_on_image(boxes[c], cam_sizes[c]):  # the neighbour's hand is off this image
                continue
            new = detectors.in_box()(read_image(image), boxes[c])
            if new is None or not hand_found(new, rs, min_conf):
                continue
            write_keypoints_file(path, new, settings.detector)
            kp_all[b, c] = new
            seen[b, c] = True
        if seen[b].sum() >= 2:
            found.append(b)
    log.info("frames seen in one view: %d, found in more views around a neighbouring fit: %d", len(lone), len(found))
    return np.array(found, dtype=int)


def frame_batches(todo: list[int] | np.ndarray, batch: int, offset: int = 0) -> list[np.ndarray]:
    """The frames ``todo`` in batches of whole blocks of ``batch`` consecutive frames of the run.

    Frame ``b`` (at ``offset + b`` in the run) goes to block ``(offset + b) // batch``: the
    batches do not depend on which frames an earlier run fitted, and a shard that starts
    on a block boundary makes the same batches as the single-process run (the temporal term
    couples the frames of a batch, so this is what makes both give the same fits).

    Example:
        >>> [b.tolist() for b in frame_batches([0, 1, 3, 4, 5], 2)]
        [[0, 1], [3], [4, 5]]
        >>> [b.tolist() for b in frame_batches([0, 1, 2], 2, offset=1)]
        [[0], [1, 2]]
    """
    todo = np.asarray(todo, dtype=int)
    if batch < 1:
        raise HandannoError(f"batch_frames {batch}: need at least 1")
    keys = (todo + offset) // batch
    return [todo[keys == k] for k in np.unique(keys)]


def _session_shape(
    run: _Run, settings: PipelineSettings, kp_all: np.ndarray, skipped: dict[str, str], timings: dict[str, float]
) -> SessionShape | None:
    """The session's shape: ``shape.json`` (unless ``force``), else fitted on chosen frames and written there.

    Frames: :func:`choose_shape_frames` among those seen in at least two views. A session
    fitted before shape.json existed keeps the shape of its fits. None when no frame can be
    fitted, or the shape fit diverges (each batch then fits its own, with a warning).
    """
    session, root = run.session, Path(settings.session)
    if not settings.force:
        shape = read_shape(root, settings.hand, run.model_name)
        if shape is not None:
            return shape
        betas = _existing_betas(session)
        if betas is not None:  # fits of a run made before shape.json: keep their shape
            shape = SessionShape(betas, (), settings.hand, run.model_name, "earlier fits")
            write_shape(root, shape)
            return shape
    candidates = np.array([b for b, f in enumerate(session.frames) if f not in skipped], dtype=int)
    if not len(candidates):
        return None
    t = time.perf_counter()
    found = hand_found(kp_all, settings.redetection, settings.min_keypoint_conf).sum(axis=1)  # (N,)
    conf = np.where(kp_all[..., 2] >= settings.min_keypoint_conf, kp_all[..., 2], 0.0).sum(axis=(1, 2))  # (N,)
    sel = choose_shape_frames(found, conf, candidates, settings.shape_frames)
    betas = _fit_shape(run, settings, kp_all, sel)
    _lap(timings, "shape", t)
    if betas is None:
        log.warning("%s: the shape fit diverged on frames %s; each batch of frames fits its own shape",
                    root, ", ".join(session.frames[b] for b in sel))  # fmt: skip
        return None
    shape = SessionShape(betas, tuple(session.frames[b] for b in sel), settings.hand, run.model_name)
    write_shape(root, shape)
    log.info("shape fitted on %d frame(s) (%s ...), written to %s", len(sel), shape.frames[0], root / SHAPE_FILE)
    return shape


def _fit_shape(run: _Run, settings: PipelineSettings, kp_all: np.ndarray, sel: np.ndarray) -> np.ndarray | None:
    """``(10,)`` betas fitted (keypoints, masks, silhouettes as the run says) on the frames ``sel``; None: diverged.

    A frame whose fit diverges makes the shape the batch shares NaN: then each frame is fitted
    alone and the median of the finite shapes is taken.
    """
    session, s = run.session, settings
    frames, kp = [session.frames[b] for b in sel], kp_all[sel]
    tri = triangulate_frames(session.rig, kp, s.min_keypoint_conf, s.triangulation_max_px)
    res, _ = fit_and_segment(run.layer, session, frames, sel, kp, tri, None, s)
    if finite_frames(res).all():
        return res.betas
    alone = []
    for i in range(len(sel)):
        one = slice(i, i + 1)
        res_i, _ = fit_and_segment(run.layer, session, frames[one], sel[one], kp[one], tri.select(one), None, s)
        if finite_frames(res_i)[0]:
            alone.append(res_i.betas)
    return np.median(alone, axis=0) if alone else None


def _finish(
    run: _Run, settings: PipelineSettings, parts: list[FramesResult], found: dict[str, int], notes: tuple[str, ...],
    shape: SessionShape | None, timings: dict[str, float], t_start: float, failed: dict[str, str] | None = None,
) -> PipelineReport:
    """Step 6 and the report: export, overlays, accuracy (synthetic sessions), ``report.json``."""
    session = run.session
    records: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    views = dict.fromkeys(VIEW_COUNTS, 0)
    for part in parts:
        records.update(part.records)
        skipped.update(part.skipped)
        for k in VIEW_COUNTS:
            views[k] += part.views[k]
    t = time.perf_counter()

    # 6. export
    labels_written = 0
    if settings.export:
        from handanno.annotate.export_freihand import export_session, export_up_to_date

        # every frame's fit, not only this run's: labels of earlier runs over other frames stay
        whole = session if settings.frames is None else open_session(settings.session)
        if any(whole.fit_path(f).is_file() for f in whole.frames) and not export_up_to_date(whole):
            labels_written = export_session(whole, run.layer, source="fits", progress=settings.progress)
            t = _lap(timings, "export", t)
    if settings.overlays:
        from handanno.annotate.export_overlays import write_overlays

        write_overlays(session, run.layer, progress=settings.progress)
        t = _lap(timings, "overlays", t)

    accuracy = evaluate_against_ground_truth(session, run.layer) if session.ground_truth_dir.is_dir() else None
    fits = {f: r for f in session.frames if (r := records.get(f) or readable_fit(session.fit_path(f))) is not None}
    accepted = sum(bool(d["quality"].get("accepted")) for d in fits.values())
    summaries = {f: frame_summary(d["quality"]) for f, d in fits.items()}
    for f, d in fits.items():
        for why in d["quality"].get("reasons", []):
            log.warning("frame %s not accepted: %s", f, why)
    timings["total"] = time.perf_counter() - t_start
    report = PipelineReport(
        frames_total=len(session.frames), frames_fitted=len(records), frames_accepted=accepted, skipped=skipped,
        timings_s={k: round(v, 3) for k, v in timings.items()}, labels_written=labels_written,
        accuracy=accuracy, report_path=session.report_path, inputs_found=found, notes=notes,
        views_total=views["total"], views_found_before=views["found_before"], views_found_after=views["found_after"],
        views_redetected=views["redetected"], shape_frames=() if shape is None else shape.frames,
        failed=dict(failed or {}),
    )  # fmt: skip
    write_json(session.report_path, {**asdict(report), "report_path": str(session.report_path),
                                     "session_notes": list(report.notes), "frames": summaries,
                                     "settings": _settings_dict(settings)}, indent=1)  # fmt: skip
    return report


# ----------------------------------------------------------------------------------------
# the parts of a run, for a sharded run (handanno.scale): detect, the shape pass, a stretch of frames, the end
# ----------------------------------------------------------------------------------------
def session_stretch(session: Session, start: int, stop: int) -> Session:
    """The session with only its frames ``start:stop`` (positions in ``session.frames``); no notes repeated."""
    frames = session.frames[start:stop]
    keep = set(frames)
    return replace(session, frames=frames, images={k: v for k, v in session.images.items() if k[1] in keep},
                   bad_views={k: v for k, v in session.bad_views.items() if k[1] in keep}, skipped=(),
                   ignored_views={f: v for f, v in session.ignored_views.items() if f in keep})  # fmt: skip


def detect_stretch(settings: PipelineSettings, start: int, stop: int) -> dict[str, int]:
    """Step 1 for the frames ``start:stop`` of the run's frames (a detection shard).

    Returns:
        :func:`found_inputs` of those frames, counted before detecting.
    """
    session = session_stretch(open_session(settings.session, settings.frames), start, stop)
    found = found_inputs(session)
    run_detect(session, settings.detect_settings())
    return found


def fit_session_shape(settings: PipelineSettings) -> SessionShape | None:
    """The shape pass alone (a sharded run's first task per session): ``shape.json`` read or fitted and written.

    Reads the keypoints of every frame of the run (detected already). See :func:`_session_shape`.
    """
    run = _open_run(settings)
    kp_all = read_session_keypoints(run.session)
    skipped, _ = _frames_to_fit(run.session, kp_all, settings, warn=False)
    return _session_shape(run, settings, kp_all, skipped, {})


def fit_stretch(
    settings: PipelineSettings, start: int, stop: int, shape: SessionShape | None, count_inputs: bool = False
) -> FramesResult:
    """Steps 2-5 for the frames ``start:stop`` of the run's frames with the session's shape held (a fit shard).

    The keypoints are read as they are (detected already); the batches are those of the
    single-process run (:func:`frame_batches`) when ``start`` is a multiple of the batch size.

    Args:
        settings: the run's settings.
        start: the first frame's position in the run's frames.
        stop: one past the last.
        shape: the session's shape (:func:`fit_session_shape`); None: fitted per batch.
        count_inputs: count :func:`found_inputs` of the stretch first (when no detection ran before).
    """
    run = _open_run(settings, session_stretch(open_session(settings.session, settings.frames), start, stop))
    found = found_inputs(run.session) if count_inputs else None
    notes: list[str] = []
    kp_all = read_session_keypoints(run.session, notes=notes)
    skipped, todo = _frames_to_fit(run.session, kp_all, settings)
    detectors = RunDetectors(settings.detect_settings())
    part = _fit_stretch(run, settings, kp_all, todo, shape, detectors, {}, skipped, offset=start)
    return replace(part, notes=tuple(notes), found=found)


def finish_session(
    settings: PipelineSettings, parts: list[FramesResult], shape: SessionShape | None, failed: dict[str, str],
    started_s: float, timings: dict[str, float] | None = None, found: dict[str, int] | None = None,
) -> PipelineReport:
    """Step 6 and ``report.json`` of a sharded run, once its shards are done (one task per session).

    Args:
        settings: the run's settings.
        parts: the shards' results.
        shape: the session's shape.
        failed: ``{frame: why}`` frames whose shard failed.
        started_s: when the run started, ``time.time()`` (of the driver: the report's total time).
        timings: seconds of the driver's own (the shape task's), the shards' are added.
        found: :func:`found_inputs` counted by the detection shards (summed), if detection ran in shards.
    """
    run = _open_run(settings)
    timings = dict(timings or {})
    found = dict.fromkeys(("keypoints_given", "keypoints_detected_earlier", "masks_given"), 0) | dict(found or {})
    notes = list(run.session.skipped)
    for part in parts:
        for k, v in part.timings_s.items():  # seconds summed over the shards (they ran side by side)
            timings[k] = timings.get(k, 0.0) + v
        for k, v in (part.found or {}).items():
            found[k] += v
        notes += part.notes
    t_start = time.perf_counter() - (time.time() - started_s)  # the run's start on this process's clock
    return _finish(run, settings, parts, found, tuple(notes), shape, timings, t_start, failed)


def _frames_to_fit(
    session: Session, kp_all: np.ndarray, settings: PipelineSettings, warn: bool = True
) -> tuple[dict[str, str], list[int]]:
    """``(skipped {frame: why}, todo [frame index])``: frames seen in too few views, and those to fit now."""
    skipped: dict[str, str] = {}
    todo: list[int] = []
    for b, f in enumerate(session.frames):
        views = int((kp_all[b, :, :, 2] >= settings.min_keypoint_conf).any(axis=1).sum())
        if views == 0:
            skipped[f] = "hand missing in every view (no confident keypoints)"
        elif views < 2:
            skipped[f] = f"keypoints in only {views} view; need at least two to triangulate"
        elif settings.force or not fit_up_to_date(session, f):  # no fit, or review.json ignores other views now
            todo.append(b)
    for f, why in skipped.items() if warn else ():
        log.warning("frame %s skipped: %s", f, why)
    return skipped, todo


class _Fitter:
    """Steps 2-4 for batches of frames, and what the batches share: the session's shape, the records written."""

    def __init__(self, session: Session, settings: PipelineSettings, layer: ManoLayer, model_name: str,
                 timings: dict[str, float], skipped: dict[str, str], betas: np.ndarray | None):  # fmt: skip
        self.session, self.settings, self.layer, self.model_name = session, settings, layer, model_name
        self.timings, self.skipped, self.betas = timings, skipped, betas
        self.faces = layer.faces.cpu().numpy()
        self.records: dict[str, dict] = {}  # {frame: its fit record}

    def fit(self, sel: np.ndarray, kp_all: np.ndarray, refit: bool = False) -> dict[int, np.ndarray]:
        """Triangulate, fit (+ segment) and judge the frames ``sel``; write their fit records.

        A frame whose fit diverges is fitted alone; if that diverges too it is skipped with a
        reason (a ``refit`` keeps the frame's first fit instead). A ``refit`` (after
        re-detection) makes the masks handanno made for these frames again, seeded by the new fit.

        Args:
            sel: ``(B,)`` int, the frames' indices in the session.
            kp_all: ``(N, C, 21, 3)`` keypoints of all the session's frames.
            refit: these frames were fitted already in this run.

        Returns:
            ``{frame index: (21, 3) fitted joints, world metres}`` of the frames fitted.
        """
        s, session = self.settings, self.session
        frames, kp = [session.frames[b] for b in sel], kp_all[sel]
        t = time.perf_counter()
        tri = triangulate_frames(session.rig, kp, s.min_keypoint_conf, s.triangulation_max_px)
        _lap(self.timings, "triangulate", t)
        fs = replace(s, force=True) if refit else s
        per_frame = []  # (row in the batch, its fit, its row in that fit, its masks)
        res, masks = fit_and_segment(self.layer, session, frames, sel, kp, tri, self.betas, fs, self.timings)
        finite = finite_frames(res)
        if self.betas is None and finite.all():
            self.betas = res.betas
        per_frame += [(i, res, i, masks[i]) for i in np.flatnonzero(finite)]
        for i in np.flatnonzero(~finite):  # diverged (NaN poisons the shape a batch shares): refit alone
            one = slice(i, i + 1)
            res_i, masks_i = fit_and_segment(self.layer, session, frames[one], sel[one], kp[one], tri.select(one),
                                             self.betas, fs)  # fmt: skip
            if finite_frames(res_i)[0]:
                per_frame.append((int(i), res_i, 0, masks_i[0]))
            elif refit:
                log.warning("frame %s: its fit after re-detection diverged; it keeps its first fit", frames[i])
            else:
                self.skipped[frames[i]] = ("the fit diverged (NaN or inf), also when fitted alone; check its "
                                           "keypoints and masks")  # fmt: skip
                log.warning("frame %s skipped: %s", frames[i], self.skipped[frames[i]])
        t = time.perf_counter()
        fitted = {}
        for i, r, row, frame_masks in sorted(per_frame, key=lambda x: x[0]):
            q = frame_quality(r.joints[row], r.vertices[row], self.faces, session.rig, kp[i], frame_masks,
                              s.accept, s.min_keypoint_conf, s.triangulation_max_px, tri.joints3d[i], r.pose[row],
                              self.layer)  # fmt: skip
            rec = fit_record(s.hand, self.model_name, r.pose[row], r.betas, r.trans[row], r.joints[row], q,
                             session.ignored_views.get(frames[i], ()))  # fmt: skip
            write_json(session.fit_path(frames[i]), rec)
            self.records[frames[i]] = rec
            fitted[int(sel[i])] = r.joints[row]
        _lap(self.timings, "quality+write", t)
        return fitted


def redetect_views(
    session: Session, sel: np.ndarray, kp_all: np.ndarray, joints: np.ndarray, detectors: RunDetectors,
    settings: PipelineSettings,
) -> np.ndarray:
    """Step 5: detect again, in a crop around the fit, the views where the fit says the detector missed the hand.

    The views :func:`handanno.annotate.redetect.views_to_redetect` chooses, except those whose
    keypoint file the user brought (only files handanno's detectors wrote, or none, are
    written). A re-detection that :func:`~handanno.annotate.redetect.replaces` the old one is
    written with its keypoints off the fit at conf 0, and put in ``kp_all``.

    Args:
        session: the session.
        sel: ``(B,)`` int, the fitted frames' indices in the session.
        kp_all: ``(N, C, 21, 3)`` keypoints of all the session's frames, updated in place.
        joints: ``(B, 21, 3)`` the frames' fitted joints, world metres.
        detectors: the run's detectors (the box detector is made when first needed).
        settings: ``redetection`` and ``min_keypoint_conf``.

    Returns:
        ``(B, C)`` bool: the views whose keypoints were replaced.
    """
    rs, min_conf = settings.redetection, settings.min_keypoint_conf
    proj, in_front = project_fits(joints, session.rig)  # (B, C, 21, 2), (B, C)
    sizes = np.array([cam.image_size for cam in session.rig], np.float64)
    todo = views_to_redetect(kp_all[sel], proj, in_front, sizes, rs, min_conf)
    boxes = fit_boxes(proj)  # (B, C, 4)
    redone = np.zeros(todo.shape, bool)
    for b, c in zip(*np.nonzero(todo), strict=True):
        cam, frame = session.cameras[c], session.frames[sel[b]]
        path = session.keypoints_path(cam, frame)
        if (cam, frame) in session.bad_views or path.is_file() and not keypoints_made_by_handanno(path):
            continue  # a damaged image; a file the user brought
        new = detectors.in_box()(read_image(session.images[(cam, frame)]), boxes[b, c])
        if new is None or not replaces(new, kp_all[sel[b], c], proj[b, c], rs, min_conf):
            continue
        kept = agreeing_keypoints(new, proj[b, c], rs, min_conf)
        write_keypoints_file(path, kept, settings.detector)
        kp_all[sel[b], c] = kept
        redone[b, c] = True
    log.info("re-detection: %d of %d view(s) chosen were replaced", int(redone.sum()), int(todo.sum()))
    return redone


def fit_and_segment(
    layer: ManoLayer, session: Session, frames: list[str], frame_index: np.ndarray, kp: np.ndarray,
    tri: Triangulated, betas: np.ndarray | None, settings: PipelineSettings, timings: dict[str, float] | None = None,
) -> tuple[FitResult, Masks]:
    """One batch through :func:`handanno.annotate.fit.fit_frames`, the segment stage in between.

    Returns:
        The fit and the masks of the batch's views (:data:`handanno.annotate.segment.Masks`).
    """
    faces = layer.faces.cpu().numpy()

    def segment(vertices: np.ndarray):
        made = segment_from_fit(session, frames, vertices, faces, kp, settings.grabcut, settings.min_keypoint_conf,
                                settings.force, settings.progress)  # fmt: skip
        return load_masks(session, frames, made)

    res, masks = fit_frames(layer, session.rig, frame_index, kp, tri, betas, settings.fit,
                            segment if settings.silhouette else None, settings.min_keypoint_conf, timings)  # fmt: skip
    return res, (masks if masks is not None else load_masks(session, frames))


def _settings_dict(settings: PipelineSettings) -> dict:
    d = asdict(settings)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


