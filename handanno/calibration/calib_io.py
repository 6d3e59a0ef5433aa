"""File side of ``handanno calibrate``: reading CALIB_DIR, detecting boards, writing rig.json and the report.

Layout read: ``CALIB_DIR/<cam>/<any>.jpg|jpeg|png``; the same file stem in several camera
folders means the same instant. Or ``CALIB_DIR/<cam>.mp4|avi|mov|mkv|m4v``, one board video per
camera, synchronized (frame ``i`` of every video is the same instant): this module only finds
them (:func:`find_calibration_videos`); :mod:`handanno.capture.board_videos` decodes them,
picks the frames and hands the detections to :func:`calibrate_detections`. Written: the rig (``rig.json``, through
:func:`handanno.calibration.rig_io.write_rig`) and, with a report folder::

    REPORT/report.json            per-camera RMS, views used/dropped/refused, coverage, tree, outlier views,
                                  bundle adjustment (evaluation limit hit, views holding the error), warnings;
                                  from board videos also ``videos``: frames decoded, searched, with the board
                                  and chosen per camera
    REPORT/views.json             per (camera, view) residuals
    REPORT/board_poses.json       board poses in the world frame
    REPORT/coverage_<cam>.png     used corners over the image, coloured by residual, with the coverage grid
    REPORT/rig_3d.png             camera frusta and board poses in 3D

Convention:
    Errors are true RMS, ``sqrt(mean |projected - detected|^2)`` over corners, pixels;
    poses as in :mod:`handanno.calibration.calibrate` (world to camera, metres).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from handanno.calibration.board import BoardSpec, Detection, detect_board, diagnose_board, read_detector_params
from handanno.calibration.calibrate import CalibrateSettings, CalibrationResult, calibrate_rig, error_shares
from handanno.calibration.camera import natural_key
from handanno.data.files_io import atomic_write, read_image, write_json
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


def _camera_folders(calib_dir: Path) -> list[Path]:
    """The folders of ``calib_dir`` that stand for cameras (not hidden), in natural name order."""
    if not calib_dir.is_dir():
        raise HandannoError(f"{calib_dir}: not a folder; expected CALIB_DIR/<cam>/<image>.jpg|png")
    return sorted((p for p in calib_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))  # fmt: skip


def empty_camera_folders(calib_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Camera folders of ``calib_dir`` without images, each with a sentence for the user.

    Returns:
        ``(folder, message)`` pairs in natural name order; the message names the folder,
        says what it holds instead and that the camera is left out of the rig.
    """
    out = []
    for sub in _camera_folders(Path(calib_dir)):
        files = [f for f in sub.iterdir() if f.is_file() and not f.name.startswith(".")]
        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
            continue
        suffixes = sorted({f.suffix.lower() or "(none)" for f in files})
        holds = f"it holds {len(files)} other file(s) ({', '.join(suffixes[:5])})" if files else "it is empty"
        out.append((sub, (
            f"{sub}: no images ({'/'.join(IMAGE_SUFFIXES)}) in this camera folder ({holds}), so camera {sub.name!r} "
            "is left out of the rig; add its board images, or remove the folder if it is not a camera"
        )))  # fmt: skip
    return out


def find_calibration_images(calib_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """Camera name -> stem -> image path, from ``calib_dir/<cam>/<stem>.jpg|jpeg|png``.

    A folder without images is left out with a warning naming it
    (:func:`empty_camera_folders`); a stem present twice in one camera (``a.jpg`` and
    ``a.png``) keeps the first in name order, with a warning.

    Raises:
        HandannoError: no camera folder with images, or folders without images that leave
            fewer than two cameras (named, with what to do).
    """
    calib_dir = Path(calib_dir)
    cameras: dict[str, dict[str, Path]] = {}
    for sub in _camera_folders(calib_dir):
        images: dict[str, Path] = {}
        for f in sorted(sub.iterdir(), key=lambda p: natural_key(p.name)):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                if f.stem in images:
                    log.warning("%s: stem %r also in %s; using %s", f, f.stem, images[f.stem].name, images[f.stem].name)
                    continue
                images[f.stem] = f
        if images:
            cameras[sub.name] = images
    if not cameras:
        raise HandannoError(
            f"{calib_dir}: no camera folders with images; expected CALIB_DIR/<cam>/<image>.jpg|png "
            "(one folder per camera, the same file stem for the same instant) or one board video per camera, "
            f"CALIB_DIR/<cam>{'|'.join(VIDEO_SUFFIXES)}"
        )
    empty = empty_camera_folders(calib_dir)
    if empty and len(cameras) < 2:
        raise HandannoError(
            f"{calib_dir}: only camera {', '.join(cameras)} has images; "
            f"{', '.join(str(folder) for folder, _ in empty)} hold(s) no {'/'.join(IMAGE_SUFFIXES)} images, and a "
            "rig needs at least two cameras: add those cameras' board images, or remove the empty folders to "
            "calibrate one camera"
        )
    for _, message in empty:
        log.warning("%s", message)
    return cameras


def find_calibration_videos(calib_dir: str | os.PathLike) -> dict[str, Path]:
    """Camera name -> board video, from ``calib_dir/<cam>.mp4|avi|mov|mkv|m4v`` (empty: no videos there).

    Hidden files are ignored; camera folders without images may sit beside the videos (a
    report folder, say) and are ignored too.

    Raises:
        HandannoError: ``calib_dir`` is not a folder; two videos for one camera (both named);
            videos beside camera folders that hold images (the cameras of each kind named:
            one layout per calibration).
    """
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise HandannoError(
            f"{calib_dir}: not a folder; expected CALIB_DIR/<cam>/<image>.jpg|png or CALIB_DIR/<cam>.mp4"
        )
    videos: dict[str, Path] = {}
    for f in sorted(calib_dir.iterdir(), key=lambda p: natural_key(p.name)):
        if not (f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES and not f.name.startswith(".")):
            continue
        if f.stem in videos:
            raise HandannoError(
                f"camera {f.stem!r}: two board videos, {videos[f.stem]} and {f}; keep one video per camera in "
                f"{calib_dir}"
            )
        videos[f.stem] = f
    if not videos:
        return {}
    with_images = [
        sub.name for sub in _camera_folders(calib_dir)
        if any(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in sub.iterdir())
    ]  # fmt: skip
    if with_images:
        raise HandannoError(
            f"{calib_dir}: holds board videos for camera(s) {', '.join(videos)} "
            f"({', '.join(p.name for p in videos.values())}) and image folders for camera(s) {', '.join(with_images)}; "
            "use one layout: a video per camera (CALIB_DIR/<cam>.mp4) or a folder of images per camera "
            "(CALIB_DIR/<cam>/<image>.png), and move the other out"
        )
    return dict(sorted(videos.items(), key=lambda kv: natural_key(kv[0])))


def _detect_one(path: Path, spec: BoardSpec, detector_params) -> Detection | None:
    try:
        image = read_image(path, grey=True)
    except HandannoError as exc:
        log.warning("%s; skipping this image", exc)
        return None
    return detect_board(image, spec, detector_params)


def detect_calibration_images(
    images: Mapping[str, Mapping[str, Path]], spec: BoardSpec, workers: int = 2, detector_params=None
) -> dict[str, dict[str, Detection]]:
    """Detect the board in every image, ``workers`` threads at a time (OpenCV releases the GIL).

    Unreadable images are skipped with a warning naming the file.

    Args:
        images: camera -> stem -> path (:func:`find_calibration_images`).
        spec: the board.
        workers: detection threads.
        detector_params: optional ``cv2.aruco.DetectorParameters``.

    Returns:
        camera -> stem -> :class:`Detection` (empty where the board was not found).

    Raises:
        HandannoError: a camera where the board was found in no image: names each such
            camera with the number of images tried and what the images seem to hold
            (:func:`handanno.calibration.board.diagnose_board`).
    """
    jobs = [(cam, stem, path) for cam, stems in images.items() for stem, path in stems.items()]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = list(pool.map(lambda job: _detect_one(job[2], spec, detector_params), jobs))
    out: dict[str, dict[str, Detection]] = {cam: {} for cam in images}
    for (cam, stem, path), det in zip(jobs, found, strict=True):
        if det is not None:
            out[cam][stem] = det
            if det.refused:
                log.warning("%s (camera %s): %s", path, cam, det.refused)
    failed = [cam for cam in images if not any(d.num_corners > 0 for d in out[cam].values())]
    if failed:
        lines = []
        for cam in failed:
            tried = len(out[cam])
            unreadable = len(images[cam]) - tried
            note = f" ({unreadable} more unreadable)" if unreadable else ""
            refused = [s for s, d in out[cam].items() if d.refused]
            if refused:
                note += f" ({len(refused)} refused because {out[cam][refused[0]].refused}: {', '.join(refused)})"
            lines.append(f"camera {cam!r}: no board found in any of its {tried} image(s){note}")
        hint = ""
        for cam in failed:
            readable = [images[cam][s] for s in out[cam]]
            for path in readable[:3]:
                hint = diagnose_board(read_image(path, grey=True), spec, detector_params)
                if hint:
                    hint = f" In {path}: {hint}"
                    break
            if hint:
                break
        raise HandannoError(
            "; ".join(lines) + f". Check the board spec (--board {spec}{' --legacy' if spec.legacy else ''}) "
            "against the printed board." + hint
        )
    total = sum(len(v) for v in out.values())
    log.info("board found in %d of %d images", sum(d.num_corners > 0 for v in out.values() for d in v.values()), total)
    return out


Intrinsics = dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]  # name -> (K, dist, image_size)


def read_intrinsics_file(path: str | os.PathLike) -> tuple[Intrinsics, bool]:
    """Intrinsics to hold fixed, from a rig (any format :func:`rig_io.load_any_rig` reads) or OpenCV YAML.

    An OpenCV FileStorage file with ``camera_matrix`` and ``distortion_coefficients`` (and
    ``image_width`` / ``image_height``), as OpenCV's calibration samples write, is one
    camera's intrinsics applied to every camera.

    Returns:
        ``(intrinsics, shared)``: name -> ``(K (3, 3), dist (5,), image_size)`` (name ``"*"``
        when ``shared``), and whether one set applies to all cameras.
    """
    import cv2

    from handanno.calibration.rig_io import load_any_rig

    path = Path(path)
    if not path.exists():
        raise HandannoError(f"{path}: intrinsics file not found")
    if path.suffix.lower() in (".yml", ".yaml", ".xml"):
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        if fs.isOpened() and not fs.getNode("camera_matrix").empty():
            K = fs.getNode("camera_matrix").mat()
            dist = fs.getNode("distortion_coefficients").mat()
            w, h = fs.getNode("image_width").real(), fs.getNode("image_height").real()
            fs.release()
            if K is None or K.shape != (3, 3) or dist is None:
                raise HandannoError(f"{path}: camera_matrix must be 3x3 and distortion_coefficients present")
            d = np.asarray(dist, np.float64).ravel()
            if d.size > 5 and np.any(d[5:] != 0):
                raise HandannoError(f"{path}: {d.size} distortion coefficients; handanno uses [k1, k2, p1, p2, k3]")
            d = np.concatenate([d, np.zeros(5)])[:5]
            return {"*": (np.asarray(K, np.float64), d, (int(w), int(h)))}, True
        fs.release()
    rig = load_any_rig(path)
    return {c.name: (c.K, c.dist, c.image_size) for c in rig}, False


def _fixed_for_cameras(
    intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]],
    shared: bool,
    detections: Mapping[str, Mapping[str, Detection]],
    source: Path,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not shared and not set(intrinsics) & set(detections):
        raise HandannoError(
            f"{source} gives intrinsics for camera(s) {', '.join(sorted(intrinsics, key=natural_key))} but the "
            f"board views are of camera(s) {', '.join(sorted(detections, key=natural_key))}: no camera name matches; "
            "rename the camera folders or videos to the rig's names"
        )
    fixed = {}
    for cam, dets in detections.items():
        entry = intrinsics.get("*" if shared else cam)
        if entry is None:
            log.warning("%s has no intrinsics for camera %s; estimating them", source, cam)
            continue
        K, dist, size = entry
        sizes = {d.image_size for d in dets.values()}
        if size[0] > 0 and sizes and sizes != {tuple(size)}:
            raise HandannoError(
                f"camera {cam!r}: images are {sorted(sizes)} but {source} gives intrinsics for {tuple(size)}; "
                "intrinsics only hold at the resolution they were made for"
            )
        fixed[cam] = (K, dist)
    return fixed


def calibrate_directory(
    calib_dir: str | os.PathLike,
    settings: CalibrateSettings,
    out: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    fix_intrinsics: str | os.PathLike | None = None,
    detector_params: str | os.PathLike | None = None,
    workers: int = 2,
) -> CalibrationResult:
    """``handanno calibrate``: detect, calibrate, write rig.json and (optionally) the report.

    Args:
        calib_dir: ``CALIB_DIR/<cam>/<image>``.
        settings: the pipeline settings (``fixed_intrinsics`` is filled from ``fix_intrinsics``).
        out: the rig.json to write.
        report_dir: where the report goes (None: no report).
        fix_intrinsics: a rig or OpenCV YAML whose intrinsics are held.
        detector_params: OpenCV YAML of ``cv2.aruco.DetectorParameters``.
        workers: detection threads.

    Returns:
        The :class:`CalibrationResult`; its warnings start with the camera folders left out
        for holding no images (:func:`empty_camera_folders`).
    """
    images = find_calibration_images(calib_dir)
    params = read_detector_params(str(detector_params)) if detector_params else None
    detections = detect_calibration_images(images, settings.board, workers, params)
    empty = tuple(message for _, message in empty_camera_folders(calib_dir))
    return calibrate_detections(detections, settings, out, report_dir, fix_intrinsics, warnings=empty)


def calibrate_detections(
    detections: Mapping[str, Mapping[str, Detection]],
    settings: CalibrateSettings,
    out: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    fix_intrinsics: str | os.PathLike | None = None,
    warnings: tuple[str, ...] = (),
    extra_report: Mapping | None = None,
) -> CalibrationResult:
    """The part of ``handanno calibrate`` after detection: calibrate, write rig.json and the report.

    Args:
        detections: camera -> stem -> :class:`Detection` (from images, or from frames of
            board videos).
        settings: the pipeline settings (``fixed_intrinsics`` is filled from ``fix_intrinsics``).
        out: the rig.json to write.
        report_dir: where the report goes (None: no report).
        fix_intrinsics: a rig or OpenCV YAML whose intrinsics are held.
        warnings: messages put first among the result's warnings (what the input stage saw).
        extra_report: more top-level entries of ``report.json`` (e.g. ``{"videos": ...}``).

    Returns:
        The :class:`CalibrationResult`.
    """
    import dataclasses

    from handanno.calibration.rig_io import write_rig

    if fix_intrinsics is not None:
        intrinsics, shared = read_intrinsics_file(fix_intrinsics)
        settings = dataclasses.replace(
            settings, fixed_intrinsics=_fixed_for_cameras(intrinsics, shared, detections, Path(fix_intrinsics))
        )
    result = calibrate_rig(detections, settings)
    if warnings:
        result = dataclasses.replace(result, warnings=tuple(warnings) + result.warnings)
    write_rig(result.rig, out)
    log.info("wrote %s (%d cameras, RMS %.3f px)", out, len(result.rig), result.rms_px)
    if report_dir is not None:
        write_report(result, report_dir, extra_report)
    return result


# --------------------------------------------------------------------------- report


def report_dict(result: CalibrationResult) -> dict:
    """The content of ``report.json``."""
    cams = {}
    for rep, cam in zip(result.cameras, result.rig, strict=True):
        cams[rep.name] = {
            "rms_px": rep.rms_px, "intrinsics_rms_px": rep.intrinsics_rms_px, "images": rep.images,
            "views_with_board": rep.views_with_board, "views_used": rep.views_used, "corners_used": rep.corners_used,
            "dropped_views": list(rep.dropped_views), "skipped_views": list(rep.skipped_views),
            "coverage": rep.coverage, "coverage_counts": rep.coverage_counts, "intrinsics_fixed": rep.intrinsics_fixed,
            "refused_views": list(rep.refused_views),
            "fx": cam.K[0, 0], "fy": cam.K[1, 1], "cx": cam.K[0, 2], "cy": cam.K[1, 2], "dist": cam.dist,
            "center_m": cam.center,
        }  # fmt: skip
    return {
        "board": str(result.board),
        "world": result.world,
        "rms_definition": "sqrt(mean over corners of |projected - detected|^2), pixels",
        "rms_px": result.rms_px,
        "initial_rms_px": result.initial_rms_px,
        "cameras": cams,
        "tree": [{"parent": p, "child": c, "shared_views": n} for p, c, n in result.tree],
        "covisibility": {"cameras": result.rig.names, "shared_views": result.covisibility},
        "bundle_adjustment": {
            "message": result.bundle_message,
            "seconds": result.bundle_seconds,
            "hit_evaluation_limit": result.bundle_hit_limit,
            "largest_error_shares": [
                {"camera": v.camera, "stem": v.stem, "share": share} for v, share in error_shares(result.views)[:5]
            ],
        },
        "outlier_views": [
            {"camera": v.camera, "stem": v.stem, "rms_px": v.rms_px, "max_px": v.max_px} for v in result.outlier_views
        ],
        "warnings": list(result.warnings),
    }


def write_report(result: CalibrationResult, report_dir: str | os.PathLike, extra: Mapping | None = None) -> list[Path]:
    """Write the report files (module docstring) into ``report_dir``; returns their paths.

    ``extra``: more top-level entries of ``report.json`` (the board videos' sampling, say).
    """
    report_dir = Path(report_dir)
    paths = [
        write_json(report_dir / "report.json", {**report_dict(result), **(extra or {})}, indent=1),
        write_json(report_dir / "views.json", {"rms_definition": "sqrt(mean |residual|^2) over the view's corners, px",
                                               "views": [v.__dict__ for v in result.views]}, indent=1),
        write_json(report_dir / "board_poses.json", {
            "convention": "x_world = R @ p_board + t (metres)", "world": result.world,
            "views": {s: {"R": result.R_world_from_board[v], "t": result.t_world_from_board[v]}
                      for v, s in enumerate(result.stems)}}, indent=1),
    ]  # fmt: skip
    for c, rep in enumerate(result.cameras):
        paths.append(_save_figure(report_dir / f"coverage_{rep.name}.png", coverage_figure(result, c)))
    paths.append(_save_figure(report_dir / "rig_3d.png", rig_figure(result)))
    log.info("report in %s (%d files)", report_dir, len(paths))
    return paths


def _save_figure(path: Path, fig) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, dpi=110))


def coverage_figure(result: CalibrationResult, cam_index: int):
    """A matplotlib Figure: used corners of one camera over its image, coloured by residual, with the coverage grid."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rep = result.cameras[cam_index]
    cam = result.rig[cam_index]
    W, H = cam.image_size
    obs = result.observations
    sel = obs.cam_idx == cam_index
    uv = obs.uv_px[sel]
    err = np.linalg.norm(result.residuals_px[sel], axis=1)
    gy, gx = rep.coverage_counts.shape
    fig = Figure(figsize=(7.5, 7.5 * H / W + 0.9))
    ax = fig.add_subplot(1, 1, 1)
    for r in range(gy):
        for c in range(gx):
            filled = rep.coverage_counts[r, c] > 0
            ax.add_patch(Rectangle((c * W / gx, r * H / gy), W / gx, H / gy, edgecolor="#999999", linewidth=0.5,
                                   facecolor="#d8f0d8" if filled else "#f6d6d6", zorder=0))  # fmt: skip
    vmax = max(float(np.percentile(err, 99)) if len(err) else 1.0, 1e-3)
    sc = ax.scatter(uv[:, 0], uv[:, 1], c=err, s=4, cmap="viridis", vmin=0, vmax=vmax, zorder=2)
    fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.02, label="residual |projected - detected| (px)")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("u (px)")
    ax.set_ylabel("v (px)")
    ax.set_title(
        f"{rep.name}: {rep.views_used} views, {rep.corners_used} corners, RMS {rep.rms_px:.3f} px\n"
        f"coverage {rep.coverage:.0%} of the {gx}x{gy} grid (green: has corners, red: empty)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _frustum_world(cam, depth_m: float) -> np.ndarray:
    """``(5, 3)`` camera centre and the four image corners at ``depth_m``, world metres."""
    W, H = cam.image_size
    px = np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], np.float64)
    xy = cam.undistort(px)  # (4, 2) normalised
    pts_cam = np.concatenate([xy, np.ones((4, 1))], axis=1) * depth_m  # (4, 3)
    pts_world = (pts_cam - cam.t) @ cam.R  # R^T (x - t), row form
    return np.concatenate([cam.center[None], pts_world], axis=0)


def rig_figure(result: CalibrationResult):
    """A matplotlib Figure: camera frusta (named) and board outlines in the world frame, equal axes."""
    from matplotlib.figure import Figure

    rig = result.rig
    centers = np.stack([c.center for c in rig])  # (C, 3)
    obj = result.board.object_points()
    nx, ny = result.board.inner_corners
    outline_ids = [0, nx - 1, nx * ny - 1, nx * (ny - 1), 0]
    boards = obj[outline_ids] @ np.swapaxes(result.R_world_from_board, 1, 2) + result.t_world_from_board[:, None]
    span_pts = np.concatenate([centers, boards.reshape(-1, 3)])
    span = float(np.max(np.ptp(span_pts, axis=0))) or 1.0
    depth = 0.12 * span
    fig = Figure(figsize=(8, 7))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    for b in boards:
        ax.plot(b[:, 0], b[:, 1], b[:, 2], color="#888888", linewidth=0.6, alpha=0.6)
    ax.scatter(boards[:, 0, 0], boards[:, 0, 1], boards[:, 0, 2], color="#555555", s=3, label="board origin")
    colors = [f"C{i % 10}" for i in range(len(rig))]
    for cam, color in zip(rig, colors, strict=True):
        f = _frustum_world(cam, depth)
        for k in range(1, 5):
            ax.plot(*np.stack([f[0], f[k]]).T, color=color, linewidth=1.0)
        ring = f[[1, 2, 3, 4, 1]]
        ax.plot(ring[:, 0], ring[:, 1], ring[:, 2], color=color, linewidth=1.2)
        ax.plot(*np.stack([f[1], f[2]]).T, color=color, linewidth=2.5)  # top edge of the image
        ax.text(*f[0], f" {cam.name}", color=color, fontsize=8)
    lo, hi = span_pts.min(axis=0) - depth, span_pts.max(axis=0) + depth
    mid, half = (lo + hi) / 2, float(np.max(hi - lo)) / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_zlabel("z (m)")
    ax.set_title(
        f"{len(rig)} cameras (thick edge: image top), {len(result.stems)} board poses; world = {result.world}; "
        f"RMS {result.rms_px:.3f} px",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
