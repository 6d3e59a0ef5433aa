"""Calibration from board videos (``handanno calibrate CALIB_DIR`` with ``CALIB_DIR/<cam>.mp4``).

One video per camera of the board waved through the capture volume, synchronized like the
capture (frame ``i`` of every video is the same instant). Each video is scanned once
(:func:`handanno.capture.video_io.scan_video`: frames counted, truncation caught), then read
forward (:class:`handanno.capture.video_io.FrameReader`) at evenly spaced frames, the same
frame indices in every camera, where the board is searched for
(:func:`handanno.calibration.board.detect_board`). Of the instants where the board was seen,
a diverse, co-visible subset is chosen (:func:`handanno.calibration.view_selection.select_views`)
and calibrated exactly as board images are
(:func:`handanno.calibration.calib_io.calibrate_detections`); the chosen frames keep their
index as stem (``000123``), so the report names them.

This sits in ``capture`` (above ``calibration``) because it decodes with capture's reader.

Convention:
    Frame indices are 0-based decoder order (never seeking); every error names the video
    file and its camera.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handanno.calibration.board import BoardSpec, Detection, detect_board, diagnose_board, read_detector_params
from handanno.calibration.calib_io import calibrate_detections, find_calibration_videos
from handanno.calibration.calibrate import CalibrateSettings, CalibrationResult
from handanno.calibration.view_selection import ViewSelectionSettings, select_views, view_features
from handanno.capture.video_io import FrameReader, VideoScan, scan_video
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

#: Videos whose frame counts differ by more than this many frames get a warning (frames are matched by index).
LENGTH_SLACK_FRAMES = 2


@dataclass(frozen=True)
class BoardVideoSettings:
    """How board videos are sampled.

    Attributes:
        max_search_frames: frames per video in which the board is searched for, evenly
            spaced over the longest video (every frame when the videos are shorter).
        selection: how the calibration views are chosen among the instants with the board
            (``max_views`` caps them).
        workers: videos read and searched at once (one thread each; OpenCV releases the GIL).
        progress: show a progress bar.
    """

    max_search_frames: int = 400
    selection: ViewSelectionSettings = field(default_factory=ViewSelectionSettings)
    workers: int = 2
    progress: bool = False

    def __post_init__(self) -> None:
        if self.max_search_frames < 1:
            raise HandannoError(f"max_search_frames must be at least 1, got {self.max_search_frames}")


@dataclass(frozen=True)
class BoardVideoReport:
    """One camera's board video.

    Attributes:
        camera: the camera. path: the video.
        frames: frames decoded (the scan's count, not the container's).
        fps: the container's frame rate (0: none stated).
        size: ``(width, height)``.
        searched: frames the board was searched for in.
        with_board: of those, frames where corners were found.
        chosen: chosen instants where this camera sees the board.
    """

    camera: str
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]
    searched: int
    with_board: int
    chosen: int

    def to_dict(self) -> dict:
        """The camera's entry in ``report.json``'s ``videos``."""
        return {"path": str(self.path), "frames_decoded": self.frames, "fps": self.fps, "size": list(self.size),
                "frames_searched": self.searched, "frames_with_board": self.with_board,
                "chosen_with_board": self.chosen}  # fmt: skip


@dataclass(frozen=True)
class BoardVideoSampling:
    """What was decoded, seen and chosen across the board videos.

    Attributes:
        videos: per camera, natural name order.
        stride: frames between two searched frames.
        instants_searched: frame indices searched (in at least one video).
        instants_with_board: of those, instants where at least one camera saw the board
            well enough to be chosen (:class:`ViewSelectionSettings` ``min_corners``, ``max_tilt_deg``).
        instants_covisible: ... where at least two cameras did.
        chosen: the chosen frame indices, increasing.
    """

    videos: tuple[BoardVideoReport, ...]
    stride: int
    instants_searched: int
    instants_with_board: int
    instants_covisible: int
    chosen: tuple[int, ...]

    def to_dict(self) -> dict:
        """``report.json``'s ``videos`` entry."""
        return {"stride_frames": self.stride, "instants_searched": self.instants_searched,
                "instants_with_board": self.instants_with_board, "instants_covisible": self.instants_covisible,
                "chosen": len(self.chosen), "chosen_frames": list(self.chosen),
                "cameras": {v.camera: v.to_dict() for v in self.videos}}  # fmt: skip

    def summary_lines(self) -> list[str]:
        """Lines for the user: per video, frames decoded / searched / with the board / chosen; then the totals."""
        lines = [f"{v.camera} ({v.path.name}): {v.frames} frames decoded, {v.searched} searched, board in "
                 f"{v.with_board}, in {v.chosen} of the chosen" for v in self.videos]  # fmt: skip
        lines.append(f"{len(self.chosen)} instants chosen of {self.instants_with_board} with the board "
                     f"({self.instants_covisible} seen by two cameras or more; every {self.stride} frame(s) searched)")
        return lines


def search_indices(frames: Sequence[int], max_search_frames: int) -> tuple[np.ndarray, int]:
    """Frame indices to search, the same for every camera: evenly spaced over the longest video.

    Args:
        frames: frames per video.
        max_search_frames: most indices.

    Returns:
        ``(indices (S,), stride)``.

    Example:
        >>> idx, stride = search_indices([100, 95], 30)
        >>> stride, idx[:3].tolist(), len(idx)
        (4, [0, 4, 8], 25)
    """
    n = max(frames)
    stride = max(1, math.ceil(n / max_search_frames))
    return np.arange(0, n, stride), stride


def _search_video(
    scan: VideoScan, indices: np.ndarray, spec: BoardSpec, params, bar
) -> tuple[dict[int, Detection], tuple[int, np.ndarray | None]]:
    """Detections at ``indices`` (those the video has) and ``(index, image)`` of the middle searched frame."""
    found: dict[int, Detection] = {}
    keep = indices[indices < scan.frames]
    middle = int(keep[len(keep) // 2]) if len(keep) else -1
    sample = None
    with FrameReader(scan.path, scan.camera, scan.size) as reader:
        for t in keep:
            image = reader.read(int(t))
            found[int(t)] = detect_board(image, spec, params)
            if t == middle:
                sample = image
            if bar is not None:
                bar.update(1)
    return found, (middle, sample)


def _no_board_error(scan: VideoScan, found: Mapping[int, Detection], sample: tuple[int, np.ndarray | None],
                    spec: BoardSpec, params, selection: ViewSelectionSettings) -> HandannoError:
    seen = [t for t, d in found.items() if d.num_corners > 0]
    where = f"{scan.path} (camera {scan.camera!r})"
    if seen:
        return HandannoError(
            f"{where}: the board is seen in {len(seen)} of {len(found)} searched frames, but never with "
            f"{selection.min_corners} corners or more turned less than {selection.max_tilt_deg:g} deg from the camera; "
            "film the board closer and facing the camera"
        )
    index, image = sample
    hint = diagnose_board(image, spec, params) if image is not None else ""
    return HandannoError(
        f"{where}: no board found in any of the {len(found)} frames searched (of {scan.frames} decoded). Check the "
        f"board spec (--board {spec}{' --legacy' if spec.legacy else ''}) against the printed board"
        + (f". In its frame {index}: {hint}" if hint else "")
    )


def sample_board_videos(
    videos: Mapping[str, Path],
    spec: BoardSpec,
    settings: BoardVideoSettings = BoardVideoSettings(),
    detector_params=None,
) -> tuple[dict[str, dict[str, Detection]], BoardVideoSampling, list[str]]:
    """Decode, search and choose: the detections to calibrate on.

    Args:
        videos: camera -> video (:func:`handanno.calibration.calib_io.find_calibration_videos`).
        spec: the board.
        settings: sampling and selection.
        detector_params: optional ``cv2.aruco.DetectorParameters``.

    Returns:
        ``(detections, sampling, warnings)``: camera -> stem (the frame index, 6 digits) ->
        :class:`Detection` at the chosen instants (empty where that camera does not see the
        board); what was decoded, seen and chosen; messages for the user (videos of
        different lengths).

    Raises:
        HandannoError: naming the file and camera: a video that cannot be opened, has no
            frame or is truncated; a video where the board is never seen (or never well
            enough); no instant with the board at all.
    """
    names = list(videos)
    if not names:
        raise HandannoError("no board videos to calibrate from")
    workers = max(1, min(settings.workers, len(names), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        scans = dict(zip(names, pool.map(lambda c: scan_video(videos[c], c), names), strict=True))
    frames = [scans[c].frames for c in names]
    warnings = []
    if max(frames) - min(frames) > LENGTH_SLACK_FRAMES:
        warnings.append(
            "board videos of different lengths (" + ", ".join(f"{c} {scans[c].frames}" for c in names) + " frames); "
            "frames are matched by index, so the videos must start at the same instant (synchronized like the capture)"
        )
    indices, stride = search_indices(frames, settings.max_search_frames)
    bar = None
    if settings.progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(int(np.sum(indices < f)) for f in frames), desc="board videos", unit="frame")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda c: _search_video(scans[c], indices, spec, detector_params, bar), names))
    finally:
        if bar is not None:
            bar.close()
    found = {c: r[0] for c, r in zip(names, results, strict=True)}

    grid = [[found[c].get(int(t)) for c in names] for t in indices]  # (S, C) Detection | None
    sel = settings.selection
    feats = view_features(grid, spec, sel)  # (S, C, F)
    counts = np.array([[0 if d is None else d.num_corners for d in row] for row in grid])  # (S, C)
    seen = np.all(np.isfinite(feats), axis=2)  # (S, C)
    for c, name in enumerate(names):
        if not seen[:, c].any():
            raise _no_board_error(scans[name], found[name], results[c][1], spec, detector_params, sel)
    selection = select_views(feats, sel, quality=counts / spec.num_corners)
    chosen = np.sort(selection.chosen)
    detections: dict[str, dict[str, Detection]] = {c: {} for c in names}
    for s in chosen:
        t = int(indices[s])
        for c, name in enumerate(names):
            det = grid[s][c]
            if det is not None:
                detections[name][f"{t:06d}"] = det if det.num_corners > 0 else Detection.empty(scans[name].size)
    reports = tuple(
        BoardVideoReport(name, scans[name].path, scans[name].frames, scans[name].fps, scans[name].size,
                         len(found[name]), sum(d.num_corners > 0 for d in found[name].values()),
                         int(seen[selection.chosen, c].sum()))
        for c, name in enumerate(names)
    )  # fmt: skip
    sampling = BoardVideoSampling(reports, stride, len(indices), int(seen.any(axis=1).sum()),
                                  int((seen.sum(axis=1) >= 2).sum()), tuple(int(indices[s]) for s in chosen))
    return detections, sampling, warnings  # the caller prints sampling.summary_lines() (the CLI does)


def calibrate_board_videos(
    calib_dir: str | os.PathLike,
    settings: CalibrateSettings,
    out: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    fix_intrinsics: str | os.PathLike | None = None,
    detector_params: str | os.PathLike | None = None,
    video_settings: BoardVideoSettings = BoardVideoSettings(),
) -> tuple[CalibrationResult, BoardVideoSampling]:
    """``handanno calibrate`` on ``CALIB_DIR/<cam>.mp4``: sample, choose, calibrate, write rig.json and the report.

    Args:
        calib_dir: the folder of board videos.
        settings: the calibration settings (as for images).
        out: the rig.json to write.
        report_dir: where the report goes (None: none); its ``report.json`` gets a
            ``videos`` entry (:meth:`BoardVideoSampling.to_dict`).
        fix_intrinsics: a rig or OpenCV YAML whose intrinsics are held.
        detector_params: OpenCV YAML of ``cv2.aruco.DetectorParameters``.
        video_settings: sampling and selection.

    Returns:
        ``(result, sampling)``.

    Raises:
        HandannoError: no videos in ``calib_dir``, and those of :func:`sample_board_videos`.
    """
    videos = find_calibration_videos(calib_dir)
    if not videos:
        raise HandannoError(f"{calib_dir}: no board videos (CALIB_DIR/<cam>.mp4)")
    params = read_detector_params(str(detector_params)) if detector_params else None
    detections, sampling, warnings = sample_board_videos(videos, settings.board, video_settings, params)
    result = calibrate_detections(detections, settings, out, report_dir, fix_intrinsics, warnings=tuple(warnings),
                                  extra_report={"videos": sampling.to_dict()})  # fmt: skip
    return result, sampling
