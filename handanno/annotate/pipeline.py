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

``report.json`` in the session sums it up (per-frame quality, skipped frames with reasons,
timings, and, for synthetic sessions with ``ground_truth/``, the accuracy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handanno.annotate import grabcut
from handanno.annotate.detect import DETECTORS, DetectSettings, RunDetectors, run_detect
from handanno.annotate.fit import finite_frames, fit_frames
from handanno.annotate.fit_mano import FitResult, FitSettings
from handanno.annotate.quality import AcceptSettings, evaluate_against_ground_truth, frame_quality, frame_summary
from handanno.annotate.redetect import (
    RedetectSettings,
    agreeing_keypoints,
    fit_boxes,
    hand_found,
    project_fits,
    replaces,
    views_to_redetect,
)
from handanno.annotate.segment import Masks, load_masks, segment_from_fit
from handanno.annotate.session_io import (
    Session,
    fit_record,
    keypoints_made_by_handanno,
    mask_made_by_handanno,
    open_session,
    read_session_keypoints,
    readable_fit,
    write_keypoints_file,
)
from handanno.annotate.triangulate import Triangulated, triangulate_frames
from handanno.data.files_io import read_image, write_json
from handanno.data.lock_io import FolderLock
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model

log = logging.getLogger(__name__)

__all__ = ["DETECTORS", "AcceptSettings", "PipelineReport", "PipelineSettings", "RedetectSettings", "found_inputs",
           "run_pipeline"]  # fmt: skip


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


def _run_pipeline(settings: PipelineSettings) -> PipelineReport:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        return _lap(timings, name, t0)

    if settings.hand not in ("right", "left"):
        raise HandannoError(f"--hand {settings.hand!r}: choose right or left")
    session = open_session(settings.session, settings.frames)
    device = resolve_device(settings.device)
    model = load_hand_model(settings.hand, settings.model_dir)
    layer = ManoLayer(model).to(device)
    t = lap("load", t_start)

    # 1. detect
    found = found_inputs(session)
    if found["masks_given"] or found["keypoints_given"]:
        log.info("using what the session holds: %d keypoint file(s) and %d mask(s) not made by handanno",
                 found["keypoints_given"], found["masks_given"])  # fmt: skip
    detectors = RunDetectors(settings.detect_settings())  # made once, when first needed (MediaPipe is slow to start)
    run_detect(session, settings.detect_settings(), detectors)
    t = lap("detect", t)
    input_notes: list[str] = []
    kp_all = read_session_keypoints(session, notes=input_notes)
    t = lap("read", t)

    skipped, todo = _frames_to_fit(session, kp_all, settings)
    fitter = _Fitter(session, settings, layer, model.name, timings, skipped,
                     None if settings.force else _existing_betas(session))  # fmt: skip
    views = {"total": 0, "found_before": 0, "found_after": 0, "redetected": 0}

    def views_found(frame_index: np.ndarray) -> int:
        return int(hand_found(kp_all[frame_index], settings.redetection, settings.min_keypoint_conf).sum())

    batch = settings.batch_frames or (1024 if device.type == "cuda" else 64)
    for start in _bar(range(0, len(todo), batch), settings, "fit", total=(len(todo) + batch - 1) // batch):
        # 2-4. triangulate, fit (+ segment), quality and the fit's record
        joints = fitter.fit(np.asarray(todo[start : start + batch]), kp_all)  # {frame index: fitted joints}
        fitted = np.array(sorted(joints), dtype=int)
        views["total"] += len(fitted) * len(session.cameras)
        views["found_before"] += views_found(fitted)
        # 5. re-detect where the fit says the detector missed or misread the hand; fit those frames once more
        if settings.redetect and settings.detector != "given" and len(fitted):
            t = time.perf_counter()
            redone = redetect_views(session, fitted, kp_all, np.stack([joints[b] for b in fitted]), detectors,
                                    settings)  # fmt: skip
            lap("redetect", t)
            views["redetected"] += int(redone.sum())
            if redone.any():
                fitter.fit(fitted[redone.any(axis=1)], kp_all, refit=True)
        views["found_after"] += views_found(fitted)
    records = fitter.records  # this run's fits, kept for the report
    t = time.perf_counter()

    # 6. export
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

    accuracy = evaluate_against_ground_truth(session, layer) if session.ground_truth_dir.is_dir() else None
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
        accuracy=accuracy, report_path=session.report_path, inputs_found=found,
        notes=tuple(session.skipped) + tuple(input_notes), views_total=views["total"],
        views_found_before=views["found_before"], views_found_after=views["found_after"],
        views_redetected=views["redetected"],
    )  # fmt: skip
    write_json(session.report_path, {**asdict(report), "report_path": str(session.report_path),
                                     "session_notes": list(report.notes), "frames": summaries,
                                     "settings": _settings_dict(settings)}, indent=1)  # fmt: skip
    return report


def _frames_to_fit(
    session: Session, kp_all: np.ndarray, settings: PipelineSettings
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
        elif settings.force or readable_fit(session.fit_path(f)) is None:
            todo.append(b)
    for f, why in skipped.items():
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
            rec = fit_record(s.hand, self.model_name, r.pose[row], r.betas, r.trans[row], r.joints[row], q)
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


