"""The calibration pipeline: board detections in, a calibrated rig and a report out (no file I/O).

Steps: per-camera intrinsics (``cv2.calibrateCamera`` with outlier-view rejection, or
given intrinsics), leaving out views of a board seen too obliquely -> per-view board poses
(PnP) -> initial camera poses along a maximum spanning tree of the co-visibility graph (the
oblique views are taken back if a camera is cut off without them) -> sparse bundle adjustment of all camera and
board poses (and optionally intrinsics) -> world frame -> per-camera and per-view errors,
coverage and warnings.

Convention:
    - The output rig maps world to camera, ``x_cam = R @ x_world + t`` (metres); units come
      from the board's square size.
    - ``world="cam0"``: the first camera in natural name order is the world
      (``R = I, t = 0``). ``world="board"``: the board at the first view (natural stem
      order) is the world, in the board frame of :mod:`handanno.calibration.board`.
    - Errors are true RMS over corners, ``sqrt(mean |residual|^2)``, in pixels.
    - Coverage: the image is cut into a ``coverage_grid = (gx, gy)`` grid of cells; a
      camera's coverage is the fraction of cells holding at least one used corner.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from handanno.calibration.board import BoardSpec, Detection, chessboard_is_symmetric
from handanno.calibration.bundle_adjust import (
    INTRINSIC_NAMES,
    BundleAdjustSettings,
    BundleState,
    Observations,
    bundle_adjust,
    intrinsics_matrices,
    intrinsics_vector,
    matrix_to_rotvec,
    rotvec_to_matrix,
)
from handanno.calibration.camera import Camera, CameraRig, natural_key
from handanno.calibration.extrinsics import (
    ExtrinsicsInit,
    compose,
    covisibility,
    initialize_extrinsics,
    invert,
    maximum_spanning_tree,
)
from handanno.calibration.intrinsics import (
    IntrinsicsResult,
    IntrinsicsSettings,
    calibrate_intrinsics,
    fixed_intrinsics,
)
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

WORLD_FRAMES = ("cam0", "board")

# Intrinsics held in bundle adjustment when calibrateCamera held them (flag -> names).
_FLAG_FIXES = {
    "FIX_K1": ("k1",), "FIX_K2": ("k2",), "FIX_K3": ("k3",), "ZERO_TANGENT_DIST": ("p1", "p2"),
    "FIX_PRINCIPAL_POINT": ("cx", "cy"), "FIX_FOCAL_LENGTH": ("fx", "fy"),
}  # fmt: skip


@dataclass(frozen=True)
class CalibrateSettings:
    """Everything :func:`calibrate_rig` needs besides the detections.

    Attributes:
        board: the board.
        world: ``"cam0"`` or ``"board"`` (see the module convention).
        intrinsics: per-camera intrinsics estimation.
        bundle: loss and solver settings (its ``free_intrinsics`` is set from
            ``refine_intrinsics``).
        refine_intrinsics: also refine the cameras' intrinsics in bundle adjustment (those
            held by ``intrinsics.flags`` stay held, and cameras in ``fixed_intrinsics`` keep
            theirs).
        fixed_intrinsics: camera name -> ``(K (3, 3), dist (5,))`` kept as given; cameras
            not listed are estimated.
        coverage_grid: ``(gx, gy)`` cells for the coverage measure.
        weak_coverage: warn when a camera's coverage is below this fraction.
        outlier_camera_factor: warn when a camera's RMS exceeds this multiple of the median
            camera RMS (and 0.5 px).
        outlier_view_factor: name a view (camera, stem) whose RMS exceeds this multiple of
            the median view RMS ...
        outlier_view_min_px: ... and this many pixels (so that a good calibration, whose
            views all sit far below a pixel, names none).
    """

    board: BoardSpec
    world: str = "cam0"
    intrinsics: IntrinsicsSettings = IntrinsicsSettings()
    bundle: BundleAdjustSettings = BundleAdjustSettings()
    refine_intrinsics: bool = False
    fixed_intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    coverage_grid: tuple[int, int] = (8, 6)
    weak_coverage: float = 0.3
    outlier_camera_factor: float = 2.0
    outlier_view_factor: float = 5.0
    outlier_view_min_px: float = 1.0

    def __post_init__(self) -> None:
        if self.world not in WORLD_FRAMES:
            raise HandannoError(f"world must be one of {WORLD_FRAMES}, got {self.world!r}")


@dataclass(frozen=True)
class CameraReport:
    """How one camera's calibration went.

    Attributes:
        name: camera name.
        rms_px: reprojection RMS after bundle adjustment, px.
        intrinsics_rms_px: RMS of the single-camera stage (calibrateCamera / PnP), px.
        images: images given (with or without the board).
        views_with_board: images where corners were found.
        views_used: views used in bundle adjustment.
        corners_used: corners used in bundle adjustment.
        dropped_views: stems dropped as outliers in the intrinsics stage.
        skipped_views: stems with too few or collinear corners, then stems left out as seen
            too obliquely (``IntrinsicsSettings.max_view_angle_deg``).
        coverage: fraction of the coverage grid's cells holding a used corner.
        coverage_counts: ``(gy, gx)`` used corners per cell (row = image row band).
        intrinsics_fixed: intrinsics were given.
        refused_views: stems whose corners were found but refused (:attr:`Detection.refused`:
            a chessboard whose corner order the image does not tell).
    """

    name: str
    rms_px: float
    intrinsics_rms_px: float
    images: int
    views_with_board: int
    views_used: int
    corners_used: int
    dropped_views: tuple[str, ...]
    skipped_views: tuple[str, ...]
    coverage: float
    coverage_counts: np.ndarray
    intrinsics_fixed: bool
    refused_views: tuple[str, ...] = ()


@dataclass(frozen=True)
class ViewReport:
    """Residuals of one view in one camera after bundle adjustment.

    Attributes:
        camera: camera name. stem: the view. num_corners: corners.
        rms_px: RMS, px. max_px: largest residual norm, px.
    """

    camera: str
    stem: str
    num_corners: int
    rms_px: float
    max_px: float


@dataclass(frozen=True)
class CalibrationResult:
    """A calibrated rig and everything the report shows.

    Attributes:
        rig: the cameras, world to camera.
        board: the board used.
        world: ``"cam0"`` or ``"board"``.
        stems: ``V`` view stems with a board pose.
        R_world_from_board: ``(V, 3, 3)``; t_world_from_board: ``(V, 3)`` metres.
        cameras: per-camera reports, rig order.
        views: per (camera, view) residuals.
        tree: spanning-tree edges ``(parent, child, shared views)``.
        covisibility: ``(C, C)`` shared view counts.
        observations: the corners used (indices into rig cameras, ``stems``, board corners).
        residuals_px: ``(M, 2)`` their residuals after adjustment, px.
        initial_rms_px: RMS after initialisation, px. rms_px: RMS after adjustment, px.
        bundle_message: the solver's message. bundle_seconds: its wall time.
        warnings: messages for the user (weak coverage, outlier cameras and views, ...).
        outlier_views: views whose RMS stands far above the rest
            (:attr:`CalibrateSettings.outlier_view_factor`), worst first.
        bundle_hit_limit: bundle adjustment stopped on its evaluation limit
            (:attr:`BundleAdjustSettings.max_nfev`) before converging.
    """

    rig: CameraRig
    board: BoardSpec
    world: str
    stems: tuple[str, ...]
    R_world_from_board: np.ndarray
    t_world_from_board: np.ndarray
    cameras: tuple[CameraReport, ...]
    views: tuple[ViewReport, ...]
    tree: tuple[tuple[str, str, int], ...]
    covisibility: np.ndarray
    observations: Observations
    residuals_px: np.ndarray
    initial_rms_px: float
    rms_px: float
    bundle_message: str
    bundle_seconds: float
    warnings: tuple[str, ...]
    outlier_views: tuple[ViewReport, ...] = ()
    bundle_hit_limit: bool = False


def coverage_counts(corners_px: np.ndarray, image_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """``(gy, gx)`` number of corners in each cell of a ``(gx, gy)`` grid over the image.

    Args:
        corners_px: ``(K, 2)`` pixels ``(u, v)``.
        image_size: ``(width, height)``.
        grid: ``(gx, gy)`` cells across and down.

    Example:
        >>> coverage_counts(np.array([[1.0, 1.0], [99.0, 49.0]]), (100, 50), (2, 2)).tolist()
        [[1, 0], [0, 1]]
    """
    W, H = image_size
    gx, gy = grid
    uv = np.asarray(corners_px, np.float64).reshape(-1, 2)
    col = np.clip((uv[:, 0] + 0.5) * gx // W, 0, gx - 1).astype(np.int64)
    row = np.clip((uv[:, 1] + 0.5) * gy // H, 0, gy - 1).astype(np.int64)
    counts = np.zeros((gy, gx), np.int64)
    np.add.at(counts, (row, col), 1)
    return counts


def outlier_views(views: Sequence[ViewReport], factor: float = 5.0, min_px: float = 1.0) -> tuple[ViewReport, ...]:
    """Views whose RMS stands far above the rest: over ``factor`` times the median view RMS and over ``min_px``.

    Args:
        views: per (camera, view) residuals.
        factor: multiple of the median view RMS.
        min_px: floor, px.

    Returns:
        The outlier views, worst first.

    Example:
        >>> vs = [ViewReport("a", f"{i}", 54, 0.3, 0.6) for i in range(5)] + [ViewReport("b", "9", 54, 40.0, 80.0)]
        >>> [(v.camera, v.stem) for v in outlier_views(vs)]
        [('b', '9')]
    """
    if not views:
        return ()
    med = float(np.median([v.rms_px for v in views]))
    out = [v for v in views if v.rms_px > factor * med and v.rms_px > min_px]
    return tuple(sorted(out, key=lambda v: -v.rms_px))


def error_shares(views: Sequence[ViewReport]) -> list[tuple[ViewReport, float]]:
    """Each view with its share of the total squared error (``num_corners * rms_px**2``), largest first.

    Example:
        >>> vs = [ViewReport("a", "1", 10, 1.0, 1.0), ViewReport("b", "1", 10, 3.0, 4.0)]
        >>> [(v.camera, round(s, 2)) for v, s in error_shares(vs)]
        [('b', 0.9), ('a', 0.1)]
    """
    sse = np.array([v.num_corners * v.rms_px**2 for v in views])  # (views,)
    total = float(sse.sum()) or 1.0
    order = np.argsort(-sse, kind="stable")
    return [(views[i], float(sse[i] / total)) for i in order]


def _outlier_views_warning(outliers: Sequence[ViewReport], views: Sequence[ViewReport]) -> str:
    med = float(np.median([v.rms_px for v in views]))
    named = "; ".join(f"camera {v.camera}, image {v.stem}: RMS {v.rms_px:.2f} px (max {v.max_px:.1f})"
                      for v in outliers)  # fmt: skip
    cams_per_stem: dict[str, list[str]] = {}
    for v in outliers:
        cams_per_stem.setdefault(v.stem, []).append(v.camera)
    shared = [s for s, cams in cams_per_stem.items() if len(cams) > 1]
    hint = (
        f"; at {', '.join(shared)} the cameras disagree on where the board was: the board was misread, or a "
        "chessboard's corner order reversed, in one of them"
        if shared else "; the board may be misread there (blur, glare, a wrong corner order)"
    )  # fmt: skip
    return (
        f"{len(outliers)} view(s) far above the rest (median view RMS {med:.2f} px): {named}{hint}; check those "
        "images and remove the bad ones from CALIB_DIR"
    )


def _free_intrinsics(settings: CalibrateSettings) -> tuple[str, ...]:
    if not settings.refine_intrinsics:
        return ()
    held = {n for flag in settings.intrinsics.flags for n in _FLAG_FIXES.get(flag.upper().removeprefix("CALIB_"), ())}
    return tuple(n for n in INTRINSIC_NAMES if n not in held)


def _camera_intrinsics(
    names: list[str], detections: Mapping[str, Mapping[str, Detection]], settings: CalibrateSettings
) -> list[IntrinsicsResult]:
    fixed = settings.fixed_intrinsics or {}
    results = []
    for name in names:
        dets = detections[name]
        with_board = sum(d.num_corners > 0 for d in dets.values())
        if with_board == 0:
            refused = [s for s, d in dets.items() if d.refused]
            note = (
                f" ({len(refused)} refused because {dets[refused[0]].refused}: {', '.join(refused)})"
                if refused else ""
            )  # fmt: skip
            raise HandannoError(
                f"camera {name!r}: no board found in any of its {len(dets)} image(s){note}; check the board spec "
                f"(--board {settings.board}) and that the board is in view"
            )
        if name in fixed:
            K, dist = fixed[name]
            results.append(fixed_intrinsics(name, dets, settings.board, K, dist, settings.intrinsics))
        else:
            results.append(calibrate_intrinsics(name, dets, settings.board, settings.intrinsics))
    return results


def _dense_observations(
    intr: list[IntrinsicsResult], detections: Mapping[str, Mapping[str, Detection]], stems: tuple[str, ...], N: int
) -> np.ndarray:
    C, V = len(intr), len(stems)
    index = {s: v for v, s in enumerate(stems)}
    uv = np.full((C, V, N, 2), np.nan)  # (C, V, N, 2), NaN = not seen / not used
    for c, res in enumerate(intr):
        for view in res.views:
            det = detections[res.camera][view.stem]
            uv[c, index[view.stem], det.corner_ids] = det.corners_px
    return uv


def _initial_extrinsics(
    names: list[str], intr: list[IntrinsicsResult]
) -> tuple[ExtrinsicsInit, list[IntrinsicsResult], list[str]]:
    """Camera and board poses along the co-visibility tree (:func:`initialize_extrinsics`).

    Oblique views (:attr:`IntrinsicsResult.oblique`) are taken back, in every camera, when
    some cameras share no view with cam0's group without them.

    Returns:
        ``(init, intr, cut_off)``: the initial poses, the intrinsics results (with their
        oblique views among ``views`` when they were needed) and the cameras that needed them
        (empty when none did).
    """
    W = covisibility([{v.stem for v in r.views} for r in intr])
    reached = {0} | {child for _, child in maximum_spanning_tree(W, 0)}
    cut_off = [n for c, n in enumerate(names) if c not in reached]
    if cut_off and any(r.oblique for r in intr):
        intr = [r.with_oblique_views() for r in intr]
    else:
        cut_off = []
    poses = [{v.stem: (v.R_cam_from_board, v.t_cam_from_board) for v in r.views} for r in intr]
    return initialize_extrinsics(names, poses, root=0), intr, cut_off


def calibrate_rig(
    detections: Mapping[str, Mapping[str, Detection]], settings: CalibrateSettings
) -> CalibrationResult:
    """Calibrate a multi-camera rig from board detections.

    Args:
        detections: camera name -> view stem -> :class:`Detection` (views without the board
            may be present as empty detections; they count as images tried).
        settings: the board, world frame and solver settings.

    Returns:
        The :class:`CalibrationResult`.

    Raises:
        HandannoError: a camera without board views (named, with the number of images
            tried), too few views for intrinsics, or cameras not connected to the rest.
    """
    names = sorted(detections, key=natural_key)
    if not names:
        raise HandannoError("no cameras to calibrate")
    spec = settings.board
    obj = spec.object_points()  # (N, 3)
    intr = _camera_intrinsics(names, detections, settings)

    init, intr, taken_back = _initial_extrinsics(names, intr)
    uv = _dense_observations(intr, detections, init.stems, spec.num_corners)
    obs = Observations.from_dense(uv)

    state0 = BundleState(
        matrix_to_rotvec(init.R_cam_from_root),
        init.t_cam_from_root,
        np.stack([intrinsics_vector(r.K, r.dist) for r in intr]),
        matrix_to_rotvec(init.R_root_from_board),
        init.t_root_from_board,
    )
    bundle_settings = dataclasses.replace(
        settings.bundle,
        free_intrinsics=_free_intrinsics(settings),
        intrinsics_cameras=tuple(c for c, r in enumerate(intr) if not r.fixed),  # given intrinsics stay held
    )
    ba = bundle_adjust(state0, obs, obj, bundle_settings, fixed_camera=0)
    state = ba.state

    # World frame.
    R_cam, t_cam = rotvec_to_matrix(state.cam_rvec), state.cam_t  # cam from root
    R_board, t_board = rotvec_to_matrix(state.board_rvec), state.board_t  # root from board
    if settings.world == "board":
        R_rw, t_rw = R_board[0], t_board[0]  # root from world(board 0)
        R_cam, t_cam = compose(R_cam, t_cam, R_rw, t_rw)  # cam from world
        R_board, t_board = compose(*invert(R_rw, t_rw), R_board, t_board)  # world from board
    K, dist = intrinsics_matrices(state.intrinsics)
    cameras = [Camera(n, K[c], dist[c], R_cam[c], t_cam[c], intr[c].image_size) for c, n in enumerate(names)]
    rig = CameraRig.from_cameras(cameras)

    # Reports.
    res = ba.residuals_px  # (M, 2)
    sq = np.sum(res * res, axis=1)  # (M,)
    cam_reports, view_reports, warnings = [], [], []
    for c, name in enumerate(names):
        in_cam = obs.cam_idx == c
        counts = coverage_counts(obs.uv_px[in_cam], intr[c].image_size, settings.coverage_grid)
        coverage = float(np.mean(counts > 0))
        dets = detections[name]
        cam_reports.append(CameraReport(
            name=name, rms_px=float(np.sqrt(sq[in_cam].mean())), intrinsics_rms_px=intr[c].rms_px,
            images=len(dets), views_with_board=sum(d.num_corners > 0 for d in dets.values()),
            views_used=len(intr[c].views), corners_used=int(in_cam.sum()), dropped_views=intr[c].dropped,
            skipped_views=intr[c].skipped + tuple(v.stem for v in intr[c].oblique), coverage=coverage,
            coverage_counts=counts, intrinsics_fixed=intr[c].fixed,
            refused_views=tuple(sorted((s for s, d in dets.items() if d.refused), key=natural_key)),
        ))  # fmt: skip
        views_c, inverse = np.unique(obs.view_idx[in_cam], return_inverse=True)
        n = np.bincount(inverse, minlength=len(views_c))  # corners per view
        sse = np.bincount(inverse, weights=sq[in_cam], minlength=len(views_c))
        worst = np.zeros(len(views_c))
        np.maximum.at(worst, inverse, sq[in_cam])
        view_reports.extend(
            ViewReport(name, init.stems[v], int(n[i]), float(np.sqrt(sse[i] / n[i])), float(np.sqrt(worst[i])))
            for i, v in enumerate(views_c)
        )
        if cam_reports[-1].refused_views:
            refused = cam_reports[-1].refused_views
            warnings.append(f"camera {name}: image(s) {', '.join(refused)} left out: {dets[refused[0]].refused}")
        if coverage < settings.weak_coverage:
            warnings.append(
                f"camera {name}: weak coverage, corners in only {coverage:.0%} of the image grid "
                f"({settings.coverage_grid[0]}x{settings.coverage_grid[1]}); move the board into the empty "
                "areas (edges and corners) so the distortion is constrained there"
            )
        if len(intr[c].dropped) > 0.1 * (len(intr[c].views) + len(intr[c].dropped)):
            warnings.append(
                f"camera {name}: {len(intr[c].dropped)} of {len(intr[c].views) + len(intr[c].dropped)} views dropped "
                f"as outliers ({', '.join(intr[c].dropped)}); check them for blur, motion or a misread board"
            )
        elif intr[c].dropped:
            log.info("camera %s: %d view(s) dropped as outliers: %s", name, len(intr[c].dropped),
                     ", ".join(intr[c].dropped))  # fmt: skip
    if taken_back:
        warnings.append(
            f"camera(s) {', '.join(taken_back)} share board views with the rest of the rig only where the board is "
            f"turned more than {settings.intrinsics.max_view_angle_deg:g} deg from a camera, so those views were used, "
            "though their corners are less accurate; add views that the cameras share while seeing the board more "
            "squarely"
        )
    if chessboard_is_symmetric(spec) and len(names) > 1:
        warnings.append(
            f"board {spec} looks the same turned by 180 degrees (inner corners {spec.size_x}+{spec.size_y} even), so "
            "cameras may disagree on its corner order; prefer a board with one odd and one even count (e.g. 9x6)"
        )
    cam_rms = np.array([r.rms_px for r in cam_reports])
    if len(names) >= 3:
        med = float(np.median(cam_rms))
        for r in cam_reports:
            if r.rms_px > max(settings.outlier_camera_factor * med, 0.5):
                warnings.append(
                    f"camera {r.name}: RMS {r.rms_px:.2f} px stands out (median over cameras {med:.2f} px); "
                    "check its focus, motion blur and synchronisation"
                )
    outliers = outlier_views(view_reports, settings.outlier_view_factor, settings.outlier_view_min_px)
    if outliers:
        warnings.append(_outlier_views_warning(outliers, view_reports))
    if ba.hit_limit:
        shares = error_shares(view_reports)[:3]
        worst = ", ".join(f"camera {v.camera}, image {v.stem} ({share:.0%})" for v, share in shares)
        warnings.append(
            f"bundle adjustment stopped at its limit of {ba.nfev} evaluations before converging (RMS "
            f"{ba.rms_px:.2f} px); the views holding most of the squared error: {worst}; check those images (a "
            "misread board, or a chessboard's corner order reversed in one camera) and remove them from CALIB_DIR"
        )
    elif not ba.success:
        warnings.append(f"bundle adjustment stopped early: {ba.message}")
    for w in warnings:
        log.warning("%s", w)

    return CalibrationResult(
        rig=rig, board=spec, world=settings.world, stems=init.stems, R_world_from_board=R_board,
        t_world_from_board=t_board, cameras=tuple(cam_reports), views=tuple(view_reports),
        tree=tuple((names[p], names[c], n) for p, c, n in init.tree), covisibility=init.covisibility,
        observations=obs, residuals_px=res, initial_rms_px=ba.initial_rms_px, rms_px=ba.rms_px,
        bundle_message=ba.message, bundle_seconds=ba.seconds, warnings=tuple(warnings), outlier_views=outliers,
        bundle_hit_limit=ba.hit_limit,
    )  # fmt: skip
