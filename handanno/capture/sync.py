"""Integer frame offsets between cameras from the hand itself (``handanno import videos --sync hand``).

Cameras that were started by hand, not by a common trigger, begin their videos a few frames
apart. A moving hand tells by how much: detected in a sample of frames of every camera, its
keypoints triangulate consistently (small reprojection error) only when the views show the
same instant.

Method:
    1. Sample ``samples`` timeline frames ``t_s`` evenly over the frames the cameras share
       (with zero offsets), away from the ends by the search range where there is room;
       detect the hand in the first (reference) camera at each, and in every other camera at
       each of its frames within ``search`` of ``t_s`` (each decoded frame detected once).
    2. Pairs: for every other camera ``c`` and offset ``k`` in ``[-search, search]``,
       triangulate the reference's and ``c``'s keypoints of each sample
       (:func:`handanno.annotate.triangulate.triangulate_frames`, no view dropped) and take
       the median, over samples, of the per-sample error (the mean over the two views of the
       median keypoint reprojection error, px). The offset with the least median error wins
       among those with enough samples (at least ``min_samples`` and half the most any
       offset has).
    3. With three or more cameras, refine: in turn for each non-reference camera, redo the
       search with every camera's keypoints at the current offsets (all views triangulated
       together), until no offset changes (at most ``passes`` rounds).

The result's residual is the median multi-view error at the chosen offsets; the runner-up
(the best offset more than one frame from the chosen one) says how clear the choice was:
a hand that barely moves gives a runner-up almost as good (a warning).

The detector is any callable ``image_bgr (H, W, 3) uint8 -> (21, 3) [u, v, conf] | None``
(MediaPipe by default; tests use an oracle).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from handanno.annotate.triangulate import triangulate_frames
from handanno.calibration.camera import CameraRig, project_points
from handanno.data.conventions import NUM_JOINTS
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

HandDetector = Callable[[np.ndarray], "np.ndarray | None"]

#: A runner-up offset whose error is under this many times the winner's makes the choice doubtful.
CLEAR_MARGIN = 1.5


@dataclass(frozen=True)
class SyncSettings:
    """How the offsets are searched.

    Attributes:
        search: offsets from ``-search`` to ``+search`` frames are tried for every camera.
        samples: reference frames sampled.
        min_samples: fewest samples with the hand found in both (all) views for an offset to count.
        min_joints: fewest keypoints triangulated for a sample to count.
        min_keypoint_conf: keypoints under this confidence are left out.
        passes: most multi-view refinement rounds (three or more cameras).
    """

    search: int = 30
    samples: int = 30
    min_samples: int = 5
    min_joints: int = 8
    min_keypoint_conf: float = 0.2
    passes: int = 3

    def __post_init__(self) -> None:
        if self.search < 0 or self.samples < 1 or self.min_samples < 1 or self.passes < 0:
            raise HandannoError(f"sync settings out of range: {self}")


@dataclass(frozen=True)
class SyncResult:
    """What :func:`estimate_offsets` found.

    Attributes:
        offsets: ``{camera: frames}``, the reference camera's 0; session frame ``t`` shows frame
            ``t + offset`` of a camera's video (same frame rates).
        residual_px: median (over samples) multi-view reprojection error at ``offsets``, px.
        cameras: per non-reference camera ``{"offset", "error_px", "runner_up",
            "runner_up_px", "samples"}`` of its last search.
        samples: reference samples with the hand found.
        warnings: doubtful choices.
        detections: frames the detector ran on, per camera.
        seconds: wall time (decoding and detection included when :func:`sync_videos` ran it).
    """

    offsets: dict[str, int]
    residual_px: float
    cameras: dict[str, dict]
    samples: int
    warnings: tuple[str, ...] = ()
    detections: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The record of ``import.json``."""
        return {"offsets": dict(self.offsets), "residual_px": _finite_or_none(self.residual_px),
                "cameras": self.cameras, "samples": self.samples, "warnings": list(self.warnings),
                "detections": dict(self.detections), "seconds": round(self.seconds, 3)}  # fmt: skip

    def summary(self) -> str:
        """One line for the user."""
        offs = ", ".join(f"{c} {k:+d}" for c, k in self.offsets.items())
        return (f"sync (hand): offsets {offs} frames; median multi-view reprojection error "
                f"{self.residual_px:.2f} px over {self.samples} sampled frames")  # fmt: skip


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def sample_errors(rig: CameraRig, kp: np.ndarray, min_keypoint_conf: float = 0.2, min_joints: int = 8) -> np.ndarray:
    """Per sample, the views' mean of their median keypoint reprojection error (px) after triangulation.

    Args:
        rig: the cameras, in the order of ``kp``'s second axis (natural name order).
        kp: ``(B, C, 21, 3)`` ``[u, v, conf]`` pixels; conf 0 where missing.
        min_keypoint_conf: keypoints under this are left out.
        min_joints: a sample with fewer keypoints triangulated (seen in two views or more) is NaN.

    Returns:
        ``(B,)`` errors in pixels, NaN where a sample has too few keypoints.
    """
    B, C = kp.shape[:2]
    if B == 0:
        return np.zeros(0)
    tri = triangulate_frames(rig, kp, min_keypoint_conf=min_keypoint_conf, max_reproj_px=1e12)
    X = tri.joints3d  # (B, J, 3)
    s = rig.stacked()
    uv = np.stack([project_points(X, s["K"][c], s["dist"][c], s["R"][c], s["t"][c]) for c in range(C)], axis=1)
    err = np.linalg.norm(uv - kp[..., :2], axis=-1)  # (B, C, J)
    seen = (kp[..., 2] >= min_keypoint_conf) & np.isfinite(X).all(axis=-1)[:, None, :] & np.isfinite(err)
    err = np.where(seen, err, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are the NaN answer
        per_view = np.nanmedian(err, axis=2)  # (B, C)
        out = np.nanmean(per_view, axis=1)
    joints = np.isfinite(X).all(axis=-1).sum(axis=1)
    out[joints < min_joints] = np.nan
    return out


def _stack(dets: Mapping[int, np.ndarray], frames: np.ndarray) -> np.ndarray:
    """``(len(frames), 21, 3)`` keypoints of those frames; zeros (missing) where none was found."""
    out = np.zeros((len(frames), NUM_JOINTS, 3))
    for i, f in enumerate(frames.tolist()):
        kp = dets.get(int(f))
        if kp is not None:
            out[i] = kp
    return out


def _score(errors: np.ndarray, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``errors (K, S)`` -> per candidate the median error (inf where too few samples) and the sample count."""
    counts = np.isfinite(errors).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(errors, axis=1)
    need = max(min_samples, math.ceil(0.5 * counts.max())) if counts.size else min_samples
    med = np.where((counts >= need) & np.isfinite(med), med, np.inf)
    return med, counts


def estimate_offsets(
    rig: CameraRig,
    cameras: Sequence[str],
    sample_frames: Mapping[str, np.ndarray],
    detections: Mapping[str, Mapping[int, np.ndarray]],
    settings: SyncSettings = SyncSettings(),
) -> SyncResult:
    """Choose every camera's offset from detections (module docstring); pure.

    Args:
        rig: holds every camera of ``cameras``.
        cameras: camera names; the first is the reference (offset 0).
        sample_frames: per camera, ``(S,)`` its video frame at each sample with offset 0.
        detections: per camera, ``{video frame: (21, 3) keypoints}`` (frames without the hand absent).
        settings: search range and thresholds.

    Returns:
        The :class:`SyncResult`.

    Raises:
        HandannoError: fewer than two cameras, or fewer than ``min_samples`` samples with the
            hand found in the reference camera.
    """
    t0 = time.perf_counter()
    cameras = list(cameras)
    if len(cameras) < 2:
        raise HandannoError("--sync hand needs two cameras or more")
    sub = rig.subset(cameras)
    order = sub.names  # natural order: the keypoints' camera axis
    ref = cameras[0]
    ref_frames = np.asarray(sample_frames[ref], np.int64)
    ref_kp = _stack(detections[ref], ref_frames)
    keep = ref_kp[:, :, 2].max(axis=1) >= settings.min_keypoint_conf
    if keep.sum() < settings.min_samples:
        raise HandannoError(f"--sync hand: the hand was found in {int(keep.sum())} of {len(ref_frames)} sampled "
                            f"frames of {ref!r}, fewer than the {settings.min_samples} needed; give the offsets with "
                            "--offsets instead")  # fmt: skip
    base = {c: np.asarray(sample_frames[c], np.int64)[keep] for c in cameras}
    ref_kp = ref_kp[keep]
    S = int(keep.sum())
    ks = np.arange(-settings.search, settings.search + 1)
    offsets = {c: 0 for c in cameras}
    per_cam: dict[str, dict] = {}

    def search(c: str, views: list[str]) -> int:
        """Best offset of ``c`` with the cameras of ``views`` (in natural order) at their current offsets."""
        rig_v = sub.subset(views)
        names = rig_v.names
        kp = np.zeros((len(ks), S, len(names), NUM_JOINTS, 3))
        for vi, v in enumerate(names):
            if v == c:
                for ki, k in enumerate(ks):
                    kp[ki, :, vi] = _stack(detections[c], base[c] + k)
            elif v == ref:
                kp[:, :, vi] = ref_kp[None]
            else:
                kp[:, :, vi] = _stack(detections[v], base[v] + offsets[v])[None]
        errors = sample_errors(rig_v, kp.reshape(len(ks) * S, len(names), NUM_JOINTS, 3),
                               settings.min_keypoint_conf, settings.min_joints).reshape(len(ks), S)
        # a sample counts only where camera c itself sees the hand: without it the other views agree anyway
        seen = (kp[:, :, names.index(c), :, 2] >= settings.min_keypoint_conf).sum(axis=-1) >= settings.min_joints
        errors[~seen] = np.nan
        med, counts = _score(errors, settings.min_samples)
        if not np.isfinite(med).any():
            raise HandannoError(f"--sync hand: no offset of {c!r} within +-{settings.search} frames has the hand "
                                f"found in both views in {settings.min_samples} sampled frames or more; give the "
                                "offsets with --offsets instead")  # fmt: skip
        best = int(np.argmin(med))
        far = np.abs(ks - ks[best]) > 1
        runner = int(np.argmin(np.where(far, med, np.inf))) if far.any() else best
        per_cam[c] = {"offset": int(ks[best]), "error_px": _finite_or_none(med[best]),
                      "runner_up": int(ks[runner]), "runner_up_px": _finite_or_none(med[runner]),
                      "samples": int(counts[best])}  # fmt: skip
        return int(ks[best])

    others = cameras[1:]
    for c in others:
        offsets[c] = search(c, [ref, c])
    if len(cameras) > 2:
        for _ in range(settings.passes):
            changed = False
            for c in others:
                k = search(c, cameras)
                changed |= k != offsets[c]
                offsets[c] = k
            if not changed:
                break

    kp_all = np.zeros((S, len(order), NUM_JOINTS, 3))
    for vi, v in enumerate(order):
        kp_all[:, vi] = ref_kp if v == ref else _stack(detections[v], base[v] + offsets[v])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        residual = float(np.nanmedian(sample_errors(sub, kp_all, settings.min_keypoint_conf, settings.min_joints)))
    notes = []
    for c in others:
        rec = per_cam[c]
        if rec["runner_up"] == rec["offset"]:
            continue
        err, alt = rec["error_px"], rec["runner_up_px"]
        if err is not None and alt is not None and alt < CLEAR_MARGIN * max(err, 1e-9):
            notes.append(f"sync: {c}'s offset {rec['offset']:+d} is not clear-cut: offset {rec['runner_up']:+d} "
                         f"gives {alt:.2f} px against {err:.2f} px (does the hand move in the sampled frames?); "
                         "check the result, or give --offsets")  # fmt: skip
    return SyncResult(offsets, residual, per_cam, S, tuple(notes), seconds=time.perf_counter() - t0)


def sync_videos(
    rig: CameraRig,
    videos: Mapping[str, tuple],
    sample_frames: Mapping[str, np.ndarray],
    detector: HandDetector,
    settings: SyncSettings = SyncSettings(),
    progress: bool = False,
) -> SyncResult:
    """Decode the frames the search needs, detect the hand in them and :func:`estimate_offsets`.

    Args:
        rig: the cameras.
        videos: per camera (in order, the first is the reference) ``(path, frames, size)``:
            its video, decoded frame count and frame size.
        sample_frames: per camera, ``(S,)`` its video frame at each sample with offset 0.
        detector: ``image -> (21, 3) | None``.
        settings: the search.
        progress: show a tqdm bar per camera.
    """
    from handanno.capture.video_io import FrameReader

    t0 = time.perf_counter()
    cameras = list(videos)
    ref = cameras[0]
    detections: dict[str, dict[int, np.ndarray]] = {}
    counts: dict[str, int] = {}
    for c in cameras:
        path, n, size = videos[c]
        base = np.asarray(sample_frames[c], np.int64)
        if c == ref:
            wanted = np.unique(base)
        else:
            wanted = np.unique((base[:, None] + np.arange(-settings.search, settings.search + 1)[None]).ravel())
        wanted = wanted[(wanted >= 0) & (wanted < n)]
        counts[c] = len(wanted)
        found: dict[int, np.ndarray] = {}
        frames = wanted.tolist()
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, desc=f"sync: detecting in {c}", unit="frame")
        with FrameReader(path, c, size) as reader:
            for f in frames:
                kp = detector(reader.read(int(f)))
                if kp is None:
                    continue
                kp = np.asarray(kp, np.float64)
                if kp.shape != (NUM_JOINTS, 3):
                    raise HandannoError(f"the sync detector returned keypoints of shape {kp.shape} for {c!r} frame "
                                        f"{f}; expected ({NUM_JOINTS}, 3) [u, v, conf]")  # fmt: skip
                found[int(f)] = kp
        detections[c] = found
        log.info("sync: hand found in %d of %d frames of %s", len(found), len(wanted), c)
    result = estimate_offsets(rig, cameras, sample_frames, detections, settings)
    return SyncResult(result.offsets, result.residual_px, result.cameras, result.samples, result.warnings,
                      counts, time.perf_counter() - t0)  # fmt: skip


def choose_samples(lo: int, hi: int, count: int, margin: int) -> np.ndarray:
    """``count`` timeline frames spread evenly over ``[lo, hi)``, ``margin`` away from both ends where there is room.

    Example:
        >>> choose_samples(0, 100, 5, 10).tolist()
        [10, 30, 50, 69, 89]
    """
    if hi - lo > 2 * margin + count:
        lo, hi = lo + margin, hi - margin
    if hi <= lo:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(lo, hi - 1, min(count, hi - lo))).astype(np.int64))
