"""Per-camera intrinsics from board views (``cv2.calibrateCamera``), leaving out oblique and outlier views.

Convention:
    - ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` pixels; ``dist = [k1, k2, p1, p2, k3]``
      (OpenCV); ``image_size = (width, height)``.
    - Board poses are camera-from-board: ``x_cam = R_cam_from_board @ x_board + t`` (metres).
    - Reprojection errors are true RMS over corners: ``sqrt(mean_k |uv_k - proj_k|^2)`` in
      pixels (the norm of the 2D residual, not per coordinate and not a mean of norms).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from handanno.calibration.board import BoardSpec, Detection
from handanno.calibration.camera import natural_key, project_points
from handanno.check import check_shape
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

INTRINSIC_FLAG_NAMES = (
    "FIX_K1",
    "FIX_K2",
    "FIX_K3",
    "ZERO_TANGENT_DIST",
    "FIX_ASPECT_RATIO",
    "FIX_PRINCIPAL_POINT",
    "FIX_FOCAL_LENGTH",
)


def calibration_flags(names: tuple[str, ...]) -> int:
    """OR of ``cv2.CALIB_<name>`` for names in :data:`INTRINSIC_FLAG_NAMES` (``"FIX_K3"``...)."""
    import cv2

    flags = 0
    for name in names:
        key = name.upper().removeprefix("CALIB_")
        if key not in INTRINSIC_FLAG_NAMES:
            raise HandannoError(f"unknown intrinsics flag {name!r}; use any of {', '.join(INTRINSIC_FLAG_NAMES)}")
        flags |= int(getattr(cv2, "CALIB_" + key))
    return flags


@dataclass(frozen=True)
class IntrinsicsSettings:
    """How intrinsics are estimated.

    Attributes:
        flags: names of ``cv2.CALIB_*`` flags (see :data:`INTRINSIC_FLAG_NAMES`); the default
            estimates fx, fy, cx, cy, k1, k2, p1, p2, k3.
        min_corners: views with fewer corners, or with all corners on one line, are skipped.
        outlier_k: a view is an outlier when its RMS exceeds
            ``median + outlier_k * 1.4826 * MAD`` of the per-view RMS (1.4826 MAD estimates a
            standard deviation) and ``outlier_floor_px``.
        outlier_floor_px: views under this RMS are never rejected (stops a tight, clean
            calibration from shedding good views over a fraction of a pixel).
        max_rounds: calibrate / reject rounds at most.
        min_views: fewer usable views than this is an error.
        max_view_angle_deg: views whose board is seen more obliquely than this (the angle
            between the board's normal and the ray to the centre of its found corners, from
            the view's pose) are left out, the most oblique first, while ``min_views``
            remain; None keeps them. Corners of a steeply turned board are found with errors
            of a few tenths of a pixel that do not average out (OpenCV's ChArUco detector on
            ``handanno synth`` views, against the true projections: 0.03-0.04 px per axis up
            to 60 deg, 0.16 px at 60-75 deg, 0.3 px beyond); they pull the intrinsics and,
            through the shared board poses, every camera's pose (synth's 8-camera dome, 120
            views, seeds 0-5: worst rotation 0.085 deg with them, 0.057 deg without).
    """

    flags: tuple[str, ...] = ()
    min_corners: int = 6
    outlier_k: float = 3.0
    outlier_floor_px: float = 0.5
    max_rounds: int = 3
    min_views: int = 3
    max_view_angle_deg: float | None = 65.0


@dataclass(frozen=True)
class ViewPose:
    """The board's pose in one view of one camera.

    Attributes:
        stem: the view's file stem (the instant).
        R_cam_from_board: ``(3, 3)``.
        t_cam_from_board: ``(3,)`` metres.
        rms_px: reprojection RMS of this view with the camera's intrinsics, px.
        num_corners: corners used.
    """

    stem: str
    R_cam_from_board: np.ndarray
    t_cam_from_board: np.ndarray
    rms_px: float
    num_corners: int


@dataclass(frozen=True)
class IntrinsicsResult:
    """One camera's intrinsics and the board poses seen on the way.

    Attributes:
        camera: camera name.
        K: ``(3, 3)`` pixels. dist: ``(5,)``. image_size: ``(width, height)``.
        rms_px: true RMS over all corners of the kept views, px.
        views: kept views, in natural stem order.
        dropped: stems rejected as outliers (per-view RMS), in rejection order.
        skipped: stems with too few corners or collinear corners.
        fixed: the intrinsics were given, not estimated.
        oblique: views left out as seen more obliquely than
            ``IntrinsicsSettings.max_view_angle_deg``, in natural stem order, with their
            poses under ``K`` and ``dist`` (the rig pipeline takes them back when a camera
            would be cut off from the rest without them).
    """

    camera: str
    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float
    views: tuple[ViewPose, ...]
    dropped: tuple[str, ...]
    skipped: tuple[str, ...]
    fixed: bool = False
    oblique: tuple[ViewPose, ...] = ()

    def with_oblique_views(self) -> IntrinsicsResult:
        """The same result with the oblique views taken back among ``views`` (natural stem order)."""
        views = tuple(sorted(self.views + self.oblique, key=lambda v: natural_key(v.stem)))
        return dataclasses.replace(self, views=views, rms_px=_total_rms(list(views)), oblique=())


def rms_px(residuals_px: np.ndarray) -> float:
    """True RMS of ``(*, 2)`` residuals: ``sqrt(mean of squared residual norms)``, px.

    Example:
        >>> rms_px(np.array([[3.0, 4.0], [0.0, 0.0]]))  # norms 5 and 0
        3.5355339059327378
    """
    r = np.asarray(residuals_px, np.float64).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(r * r, axis=1)))) if len(r) else float("nan")


def is_degenerate(object_points: np.ndarray, min_corners: int) -> bool:
    """True when ``(K, 3)`` planar board points are too few or all on one line."""
    check_shape(object_points, ("K", 3), "object_points")
    if object_points.shape[0] < max(min_corners, 4):
        return True
    xy = object_points[:, :2] - object_points[:, :2].mean(axis=0)
    s = np.linalg.svd(xy, compute_uv=False)
    return bool(s[1] < 1e-6 * max(s[0], 1e-12))


def board_pose_pnp(
    object_points: np.ndarray, corners_px: np.ndarray, K: np.ndarray, dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose of a planar board from its corners (IPPE, then Levenberg-Marquardt refinement).

    Args:
        object_points: ``(K, 3)`` board-frame metres, ``z = 0``.
        corners_px: ``(K, 2)`` pixels.
        K: ``(3, 3)``.
        dist: ``(5,)``.

    Returns:
        ``R_cam_from_board (3, 3)``, ``t_cam_from_board (3,)`` metres and the RMS error, px.
    """
    import cv2

    check_shape(object_points, ("K", 3), "object_points")
    check_shape(corners_px, (object_points.shape[0], 2), "corners_px")
    obj = object_points.astype(np.float64).reshape(-1, 1, 3)
    img = corners_px.astype(np.float64).reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise HandannoError("solvePnP failed on a board view")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    err = rms_px(project_points(object_points, K, dist, R, t) - corners_px)
    return R, t, err


def view_angle_deg(R_cam_from_board: np.ndarray, t_cam_from_board: np.ndarray, object_points: np.ndarray) -> float:
    """Angle between the board's normal and the ray from the camera to the centre of ``(K, 3)`` board points, deg.

    Example:
        >>> round(view_angle_deg(np.eye(3), np.array([0.0, 0.0, 1.0]), np.zeros((1, 3))), 6)  # board facing the camera
        0.0
    """
    centre = R_cam_from_board @ np.asarray(object_points, np.float64).mean(axis=0) + t_cam_from_board
    cos = abs(float(R_cam_from_board[:, 2] @ centre)) / max(float(np.linalg.norm(centre)), 1e-12)
    return float(np.degrees(np.arccos(min(cos, 1.0))))


def _oblique_views(
    views: list[ViewPose], detections: Mapping[str, Detection], spec: BoardSpec, settings: IntrinsicsSettings,
    keep_at_least: int,
) -> list[str]:
    """Stems of the views seen more obliquely than ``settings.max_view_angle_deg``, most oblique first.

    As many as can go while ``keep_at_least`` views stay.
    """
    if settings.max_view_angle_deg is None:
        return []
    obj = spec.object_points()
    angles = [view_angle_deg(v.R_cam_from_board, v.t_cam_from_board, obj[detections[v.stem].corner_ids]) for v in views]
    order = sorted((a, v.stem) for a, v in zip(angles, views, strict=True) if a > settings.max_view_angle_deg)[::-1]
    return [stem for _, stem in order[: max(len(views) - keep_at_least, 0)]]


def _outlier_threshold(per_view_rms: np.ndarray, settings: IntrinsicsSettings) -> float:
    med = float(np.median(per_view_rms))
    mad = float(np.median(np.abs(per_view_rms - med)))
    return max(med + settings.outlier_k * 1.4826 * mad, settings.outlier_floor_px)


def _homography_ok(object_points: np.ndarray, corners_px: np.ndarray) -> bool:
    """Whether a view has a usable homography (calibrateCamera starts from them and asserts on a failed one)."""
    import cv2

    H, _ = cv2.findHomography(object_points[:, :2].astype(np.float64), corners_px.astype(np.float64), 0)
    return H is not None and bool(np.all(np.isfinite(H))) and abs(float(np.linalg.det(H))) > 1e-12


def _usable(
    detections: Mapping[str, Detection], spec: BoardSpec, settings: IntrinsicsSettings
) -> tuple[list[str], list[str]]:
    obj = spec.object_points()
    usable, skipped = [], []
    for stem in sorted(detections, key=natural_key):
        det = detections[stem]
        if det.num_corners == 0:
            continue
        pts = obj[det.corner_ids]
        ok = not is_degenerate(pts, settings.min_corners) and _homography_ok(pts, det.corners_px)
        (usable if ok else skipped).append(stem)
    return usable, skipped


def _view_poses(
    stems: list[str], detections: Mapping[str, Detection], spec: BoardSpec, K: np.ndarray, dist: np.ndarray
) -> list[ViewPose]:
    obj = spec.object_points()
    poses = []
    for stem in stems:
        det = detections[stem]
        R, t, err = board_pose_pnp(obj[det.corner_ids], det.corners_px, K, dist)
        poses.append(ViewPose(stem, R, t, err, det.num_corners))
    return poses


def _total_rms(views: list[ViewPose]) -> float:
    n = np.array([v.num_corners for v in views], np.float64)
    e = np.array([v.rms_px for v in views], np.float64)
    return float(np.sqrt(np.sum(n * e * e) / np.sum(n))) if len(views) else float("nan")


def _check_sizes(camera: str, detections: Mapping[str, Detection]) -> tuple[int, int]:
    sizes = {det.image_size for det in detections.values()}
    if len(sizes) != 1:
        raise HandannoError(
            f"camera {camera!r}: its images have different sizes {sorted(sizes)}; one camera must keep one resolution"
        )
    return sizes.pop()


def calibrate_intrinsics(
    camera: str,
    detections: Mapping[str, Detection],
    spec: BoardSpec,
    settings: IntrinsicsSettings = IntrinsicsSettings(),
) -> IntrinsicsResult:
    """Estimate one camera's intrinsics with ``cv2.calibrateCamera``, dropping outlier views.

    Each round calibrates on the kept views, measures each view's RMS (PnP with the new
    intrinsics, so the figure does not depend on calibrateCamera's internals) and drops the
    views above :func:`_outlier_threshold`; the loop ends when nothing is dropped.

    Args:
        camera: name, for messages.
        detections: stem -> detection for this camera (empty detections are ignored).
        spec: the board.
        settings: flags and rejection rule.

    Returns:
        The :class:`IntrinsicsResult`.

    Raises:
        HandannoError: fewer than ``settings.min_views`` usable views, naming the camera.
    """
    import cv2

    check_min = settings.min_views
    size = _check_sizes(camera, detections)
    stems, skipped = _usable(detections, spec, settings)
    if len(stems) < check_min:
        raise HandannoError(
            f"camera {camera!r}: only {len(stems)} usable board view(s) of {len(detections)} image(s) "
            f"(at least {check_min} with >= {settings.min_corners} non-collinear corners are needed to estimate "
            "intrinsics); take more views or pass --fix-intrinsics"
        )
    obj = spec.object_points()
    flags = calibration_flags(settings.flags)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    dropped: list[str] = []
    oblique: list[str] = []
    kept = list(stems)
    K = dist = None
    views: list[ViewPose] = []
    round_, checked_angles = 0, False
    while True:
        obj_list = [obj[detections[s].corner_ids].astype(np.float32).reshape(-1, 1, 3) for s in kept]
        img_list = [detections[s].corners_px.astype(np.float32).reshape(-1, 1, 2) for s in kept]
        try:
            _, K, dist, _, _ = cv2.calibrateCamera(obj_list, img_list, size, None, None, flags=flags, criteria=criteria)
        except cv2.error as exc:
            raise HandannoError(
                f"camera {camera!r}: cv2.calibrateCamera failed on {len(kept)} views ({str(exc).strip()[-160:]}); "
                "check that the board spec matches the printed board, or pass --fix-intrinsics"
            ) from exc
        dist = np.asarray(dist, np.float64).reshape(-1)[:5]
        views = _view_poses(kept, detections, spec, K, dist)
        if not checked_angles:
            checked_angles = True
            steep = _oblique_views(views, detections, spec, settings, check_min)
            if steep:  # calibrate again without them (once, before outlier rounds)
                log.info("camera %s: %d view(s) seen more obliquely than %g deg left out: %s", camera, len(steep),
                         settings.max_view_angle_deg, ", ".join(steep))  # fmt: skip
                oblique = steep
                kept = [s for s in kept if s not in steep]
                continue
        per_view = np.array([v.rms_px for v in views])
        threshold = _outlier_threshold(per_view, settings)
        bad = [v.stem for v in views if v.rms_px > threshold]
        if not bad or len(kept) - len(bad) < check_min or round_ == settings.max_rounds - 1:
            break
        log.info("camera %s: dropping %d outlier view(s) over %.2f px: %s", camera, len(bad), threshold, ", ".join(bad))
        dropped.extend(bad)
        kept = [s for s in kept if s not in bad]
        round_ += 1
    K = np.asarray(K, np.float64)
    result = IntrinsicsResult(
        camera, K, dist, size, _total_rms(views), tuple(views), tuple(dropped), tuple(skipped),
        oblique=tuple(_view_poses(sorted(oblique, key=natural_key), detections, spec, K, dist)),
    )  # fmt: skip
    log.info(
        "camera %s: intrinsics from %d views (%d dropped, %d skipped), RMS %.3f px, fx %.1f fy %.1f",
        camera, len(views), len(dropped), len(skipped), result.rms_px, result.K[0, 0], result.K[1, 1],
    )  # fmt: skip
    return result


def fixed_intrinsics(
    camera: str,
    detections: Mapping[str, Detection],
    spec: BoardSpec,
    K: np.ndarray,
    dist: np.ndarray,
    settings: IntrinsicsSettings = IntrinsicsSettings(),
) -> IntrinsicsResult:
    """Board poses with given intrinsics (PnP per view), leaving out oblique views and dropping outlier views once.

    Args:
        camera: name.
        detections: stem -> detection.
        spec: the board.
        K: ``(3, 3)``, kept as given.
        dist: ``(5,)``, kept as given.
        settings: corner minimum and rejection rule.

    Returns:
        The :class:`IntrinsicsResult` with ``fixed=True``.
    """
    size = _check_sizes(camera, detections)
    stems, skipped = _usable(detections, spec, settings)
    if not stems:
        raise HandannoError(f"camera {camera!r}: no usable board view among {len(detections)} image(s)")
    K = np.asarray(K, np.float64)
    dist = np.asarray(dist, np.float64).reshape(5)
    views = _view_poses(stems, detections, spec, K, dist)
    steep = set(_oblique_views(views, detections, spec, settings, 1))
    oblique = tuple(v for v in views if v.stem in steep)
    views = [v for v in views if v.stem not in steep]
    dropped: tuple[str, ...] = ()
    if len(views) >= 3:
        threshold = _outlier_threshold(np.array([v.rms_px for v in views]), settings)
        dropped = tuple(v.stem for v in views if v.rms_px > threshold)
        views = [v for v in views if v.rms_px <= threshold]
    return IntrinsicsResult(camera, K, dist, size, _total_rms(views), tuple(views), dropped, tuple(skipped), True,
                            oblique)
