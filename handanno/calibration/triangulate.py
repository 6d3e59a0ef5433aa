"""Multi-view triangulation: confidence-weighted DLT (numpy and torch) and robust variants.

The robust triangulation here is the baseline the MANO fitter has to beat: per point, it
keeps the views that agree (reprojection within a threshold) and triangulates from them.

Convention:
    - World to camera ``x_cam = R @ x_world + t`` (metres); OpenCV pinhole ``K`` with
      distortion ``[k1, k2, p1, p2, k3]``; pixel (0, 0) is the centre of the top-left pixel.
    - Observations are dense: ``uv_px[c, n]`` is point ``n`` seen in camera ``c`` (pixels,
      distorted, as detected); ``conf[c, n]`` its confidence. ``conf`` 0 or NaN, or a NaN
      pixel, means missing.
    - The DLT works in undistorted normalised coordinates ``(x/z, y/z)``: each view gives
      two rows ``x P3 - P1`` and ``y P3 - P2`` of ``A`` (``P = [R | t]``, ``Pi`` its rows),
      both multiplied by the view's confidence, and the point is the right singular vector
      of ``A`` with the smallest singular value (Hartley & Zisserman, Sec. 12.2). Its
      residual per view is ``z * (x - x_proj)``: the normalised reprojection error scaled by
      depth, weighted by confidence.
    - A point seen by fewer than ``min_views`` (2) views, or at infinity, is NaN.
    - Camera order is the rig's (natural name order); ``C`` cameras, ``N`` points, ``B``
      batch, ``J`` joints.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from handanno.calibration.camera import CameraRig, distort_normalized, project_points, undistort_points, world_to_camera
from handanno.check import check_shape
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

CameraArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Cameras = CameraRig | Sequence[np.ndarray]

_UNDISTORT_TOL = 1e-6  # normalised units (~1e-3 px at f = 1000): undistortion that misses this failed


@dataclass(frozen=True)
class TriangulationResult:
    """What :func:`triangulate_robust` found.

    Attributes:
        points: ``(N, 3)`` world points, metres; NaN where fewer than 2 views agree.
        inlier_mask: ``(C, N)`` bool, the views each point was triangulated from.
        reproj_err_px: ``(C, N)`` reprojection error of every observed view (inlier or
            not) against ``points``, pixels; NaN where the view has no observation or the
            point is NaN; inf where the point lies behind that camera.
    """

    points: np.ndarray
    inlier_mask: np.ndarray
    reproj_err_px: np.ndarray

    @property
    def num_inliers(self) -> np.ndarray:
        """``(N,)`` number of views each point used."""
        return self.inlier_mask.sum(axis=0)


# ----------------------------------------------------------------------------- inputs


def camera_arrays(cameras: Cameras) -> CameraArrays:
    """Stacked float64 ``K (C, 3, 3)``, ``dist (C, 5)``, ``R (C, 3, 3)``, ``t (C, 3)``.

    Args:
        cameras: a :class:`CameraRig`, or a ``(K, dist, R, t)`` sequence of stacked arrays.
    """
    if isinstance(cameras, CameraRig):
        s = cameras.stacked()
        return s["K"], s["dist"], s["R"], s["t"]
    if len(cameras) != 4:
        raise HandannoError("cameras must be a CameraRig or a (K, dist, R, t) tuple of stacked arrays")
    K, dist, R, t = (np.asarray(a, dtype=np.float64) for a in cameras)
    check_shape(K, ("C", 3, 3), "K")
    C = K.shape[0]
    check_shape(dist, (C, 5), "dist")
    check_shape(R, (C, 3, 3), "R")
    check_shape(t, (C, 3), "t")
    return K, dist, R, t


def observation_weights(uv_px: np.ndarray, conf: np.ndarray | None) -> np.ndarray:
    """``(C, N)`` row weights: ``conf`` where the observation exists, else 0.

    Args:
        uv_px: ``(C, N, 2)`` pixels, NaN where missing.
        conf: ``(C, N)`` confidences >= 0 (NaN = missing), or None for all ones.
    """
    check_shape(uv_px, ("C", "N", 2), "uv_px")
    C, N, _ = uv_px.shape
    finite = np.all(np.isfinite(uv_px), axis=-1)  # (C, N)
    if conf is None:
        return finite.astype(np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    check_shape(conf, (C, N), "conf")
    if np.any(conf < 0):
        raise HandannoError("conf must be >= 0 (0 or NaN means missing)")
    return np.where(finite & np.isfinite(conf), conf, 0.0)


def _inputs(
    uv_px: np.ndarray, conf: np.ndarray | None, cameras: Cameras
) -> tuple[np.ndarray, np.ndarray, CameraArrays]:
    uv_px = np.asarray(uv_px, dtype=np.float64)
    w = observation_weights(uv_px, conf)
    cams = camera_arrays(cameras)
    if cams[0].shape[0] != uv_px.shape[0]:
        raise HandannoError(f"uv_px has {uv_px.shape[0]} cameras but the rig has {cams[0].shape[0]}")
    return uv_px, w, cams


def undistort_views(uv_px: np.ndarray, w: np.ndarray, cams: CameraArrays) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalised coordinates ``(C, N, 2)`` and weights with failures zeroed.

    Uses :func:`~handanno.calibration.camera.undistort_points` (OpenCV) per camera; a point
    whose undistortion does not re-distort to its pixel (OpenCV's iteration diverged, far
    outside the calibrated field) counts as missing.
    """
    K, dist, _, _ = cams
    C, N, _ = uv_px.shape
    xy = np.full((C, N, 2), np.nan)
    for c in range(C):  # a loop over cameras, vectorised over points
        xy[c] = undistort_points(np.where(w[c, :, None] > 0, uv_px[c], np.nan), K[c], dist[c])
    y_d = (uv_px[..., 1] - K[:, 1, 2, None]) / K[:, 1, 1, None]
    x_d = (uv_px[..., 0] - K[:, 0, 2, None] - K[:, 0, 1, None] * y_d) / K[:, 0, 0, None]
    redistorted = distort_normalized(xy, dist)  # (C, N, 2)
    ok = np.linalg.norm(redistorted - np.stack([x_d, y_d], axis=-1), axis=-1) < _UNDISTORT_TOL
    failed = (w > 0) & ~ok
    if failed.any():
        log.debug("%d observation(s) could not be undistorted; treated as missing", int(failed.sum()))
    return np.where((w > 0)[..., None] & ok[..., None], xy, 0.0), np.where(ok, w, 0.0)


# ----------------------------------------------------------------------------- DLT core


def _extrinsic_rows(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(*, 3, 4)`` ``[R | t]``."""
    return np.concatenate([R, t[..., None]], axis=-1)


def dlt_normalized(xy: np.ndarray, w: np.ndarray, Rt: np.ndarray, min_views: int = 2) -> np.ndarray:
    """Weighted DLT from undistorted normalised coordinates, batched.

    Args:
        xy: ``(*, V, N, 2)`` normalised coordinates (any finite value where ``w`` is 0).
        w: ``(*, V, N)`` row weights, 0 for missing.
        Rt: ``(*, V, 3, 4)`` world-to-camera ``[R | t]``.
        min_views: fewer views with ``w > 0`` give NaN.

    Returns:
        ``(*, N, 3)`` world points, metres.
    """
    xy = np.where(w[..., None] > 0, xy, 0.0)
    P = Rt[..., None, :, :]  # (*, V, 1, 3, 4)
    rows_x = xy[..., 0, None] * P[..., 2, :] - P[..., 0, :]  # (*, V, N, 4)  x P3 - P1
    rows_y = xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]  # (*, V, N, 4)  y P3 - P2
    A = np.stack([rows_x, rows_y], axis=-2) * w[..., None, None]  # (*, V, N, 2, 4)
    A = np.moveaxis(A, -4, -3)  # (*, N, V, 2, 4)
    A = A.reshape(*A.shape[:-3], 2 * A.shape[-3], 4)  # (*, N, 2V, 4)
    if A.size == 0:
        return np.full((*A.shape[:-2], 3), np.nan)
    _, _, vh = np.linalg.svd(A, full_matrices=False)  # vh (*, N, 4, 4)
    X_h = vh[..., -1, :]  # (*, N, 4) right singular vector of the smallest singular value
    w_h = X_h[..., 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        X = X_h[..., :3] / w_h
    bad = ((w > 0).sum(axis=-2) < min_views) | (np.abs(w_h[..., 0]) < 1e-12)  # (*, N)
    return np.where(bad[..., None], np.nan, X)


def triangulate_dlt(
    uv_px: np.ndarray, conf: np.ndarray | None, cameras: Cameras, min_views: int = 2
) -> np.ndarray:
    """Confidence-weighted DLT triangulation of ``N`` points from ``C`` views.

    Args:
        uv_px: ``(C, N, 2)`` distorted pixel coordinates, NaN where missing.
        conf: ``(C, N)`` confidences (0 or NaN = missing), or None for equal weights.
        cameras: a :class:`CameraRig` or stacked ``(K (C,3,3), dist (C,5), R (C,3,3), t (C,3))``.
        min_views: points seen by fewer views are NaN.

    Returns:
        ``(N, 3)`` world points, metres.

    Convention:
        See the module docstring: undistort (OpenCV), then the weighted DLT on normalised
        coordinates; rows are scaled by ``conf``.

    Example:
        >>> import numpy as np
        >>> from handanno.calibration.camera import Camera, CameraRig
        >>> K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
        >>> Ry = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # the second camera looks along +x
        >>> rig = CameraRig((Camera("a", K, np.zeros(5), np.eye(3), [0, 0, 2.0], (640, 480)),
        ...                  Camera("b", K, np.zeros(5), Ry, [0, 0, 2.0], (640, 480))))
        >>> X = np.array([[0.1, -0.2, 0.3]])
        >>> triangulate_dlt(rig.project(X), None, rig).round(9).tolist()
        [[0.1, -0.2, 0.3]]
    """
    uv_px, w, cams = _inputs(uv_px, conf, cameras)
    xy, w = undistort_views(uv_px, w, cams)
    return dlt_normalized(xy, w, _extrinsic_rows(cams[2], cams[3]), min_views)


def reprojection_errors(
    points_world: np.ndarray, uv_px: np.ndarray, cameras: Cameras, conf: np.ndarray | None = None
) -> np.ndarray:
    """Pixel distance between each point's projection and its observation, per view.

    Args:
        points_world: ``(N, 3)`` metres (NaN rows allowed).
        uv_px: ``(C, N, 2)`` observed pixels, NaN where missing.
        cameras: a :class:`CameraRig` or stacked ``(K, dist, R, t)``.
        conf: optional ``(C, N)``; 0 or NaN marks an observation missing too.

    Returns:
        ``(C, N)`` errors in pixels: NaN where the observation is missing or the point is
        NaN, inf where the point is at or behind the camera (depth <= 0).
    """
    uv_px = np.asarray(uv_px, dtype=np.float64)
    w = observation_weights(uv_px, conf)
    K, dist, R, t = camera_arrays(cameras)
    points_world = np.asarray(points_world, dtype=np.float64)
    C, N, _ = uv_px.shape
    check_shape(points_world, (N, 3), "points_world")
    pts = np.broadcast_to(points_world, (C, N, 3))
    depth = world_to_camera(pts, R, t)[..., 2]  # (C, N)
    err = np.linalg.norm(project_points(pts, K, dist, R, t) - uv_px, axis=-1)  # (C, N)
    err = np.where(depth > 0, err, np.inf)
    missing = (w <= 0) | ~np.all(np.isfinite(points_world), axis=-1)[None, :]
    return np.where(missing, np.nan, err)


# ----------------------------------------------------------------------------- robust


def _drop_worst(
    xy: np.ndarray, w: np.ndarray, active: np.ndarray, uv_px: np.ndarray, cams: CameraArrays,
    max_reproj_px: float, min_views: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop each point's worst active view until all active views reproject within the threshold.

    Vectorised over points: every pass re-triangulates the points whose view set changed
    and, for each one still over the threshold, drops its single worst view; at most ``C``
    passes.

    Returns:
        ``points (N, 3)``, ``active (C, N)``, ``err (C, N)`` (see :class:`TriangulationResult`).
    """
    Rt = _extrinsic_rows(cams[2], cams[3])
    C, N = w.shape
    active = active & (w > 0)
    X = np.full((N, 3), np.nan)
    err = np.full((C, N), np.nan)
    idx = np.arange(N)  # points whose active views changed since they were last triangulated
    for _ in range(C + 1):
        X[idx] = dlt_normalized(xy[:, idx], np.where(active[:, idx], w[:, idx], 0.0), Rt, min_views)
        err[:, idx] = reprojection_errors(X[idx], uv_px[:, idx], cams, w[:, idx])  # every observed view
        err_active = np.where(active[:, idx] & ~np.isnan(err[:, idx]), err[:, idx], -np.inf)  # (C, n)
        worst = np.argmax(err_active, axis=0)  # (n,)
        worst_err = err_active[worst, np.arange(idx.size)]
        bad = (active[:, idx].sum(axis=0) >= min_views) & (worst_err > max_reproj_px)
        if not bad.any():
            break
        active[worst[bad], idx[bad]] = False
        idx = idx[bad]
    active &= (active.sum(axis=0) >= min_views)[None, :]
    return X, active, err


def _ray_midpoints(xy_a: np.ndarray, xy_b: np.ndarray, cams_a: tuple, cams_b: tuple) -> np.ndarray:
    """``(N, 3)`` midpoints of the closest approach of two views' rays; NaN if parallel or behind.

    ``xy_*`` are ``(N, 2)`` undistorted normalised coordinates; ``cams_* = (R (3, 3), t (3,))``.
    """
    (R_a, t_a), (R_b, t_b) = cams_a, cams_b
    c_a, c_b = -R_a.T @ t_a, -R_b.T @ t_b  # camera centres, world
    d_a = np.concatenate([xy_a, np.ones_like(xy_a[:, :1])], axis=1) @ R_a  # (N, 3) R^T [x, y, 1]
    d_b = np.concatenate([xy_b, np.ones_like(xy_b[:, :1])], axis=1) @ R_b
    w0 = c_a - c_b
    a, b, c = (d_a * d_a).sum(1), (d_a * d_b).sum(1), (d_b * d_b).sum(1)
    d, e = d_a @ w0, d_b @ w0
    denom = a * c - b * b  # |d_a x d_b|^2 >= 0
    ok = denom > 1e-12 * a * c
    denom = np.where(ok, denom, 1.0)
    s, u = (b * e - c * d) / denom, (a * e - b * d) / denom  # ray parameters (depths along d_a, d_b)
    ok &= (s > 0) & (u > 0)
    X = 0.5 * (c_a + s[:, None] * d_a + c_b + u[:, None] * d_b)
    return np.where(ok[:, None], X, np.nan)


def _ransac_initial_inliers(
    xy: np.ndarray, w: np.ndarray, cams: CameraArrays, max_reproj_px: float
) -> np.ndarray:
    """``(C, N)`` consensus of the best two-view hypothesis per point.

    Every pair of observing views proposes the midpoint of its two rays; a hypothesis is
    scored over all views by the truncated squared error (MSAC), measured in undistorted
    coordinates scaled by ``(fx, fy)`` (cheap, and close to pixels; the final inliers are
    checked in true pixels). A loop over the ``C (C - 1) / 2`` pairs, vectorised over points.
    """
    K, _, R, t = cams
    C, N = w.shape
    observed = w > 0
    f = np.stack([K[:, 0, 0], K[:, 1, 1]], axis=-1)[:, None, :]  # (C, 1, 2)
    best_cost = np.full(N, np.inf)
    best_inliers = np.zeros((C, N), bool)
    for i, j in itertools.combinations(range(C), 2):
        both = observed[i] & observed[j]
        if not both.any():
            continue
        X = _ray_midpoints(xy[i], xy[j], (R[i], t[i]), (R[j], t[j]))  # (N, 3)
        x_cam = world_to_camera(np.broadcast_to(X, (C, N, 3)), R, t)  # (C, N, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.linalg.norm((x_cam[..., :2] / x_cam[..., 2:] - xy) * f, axis=-1)  # (C, N) ~pixels
        err = np.where(x_cam[..., 2] > 0, err, np.inf)
        err = np.where(np.isnan(err), np.inf, err)
        cost = np.where(observed, np.minimum(err, max_reproj_px) ** 2, 0.0).sum(axis=0)  # (N,) MSAC
        better = both & np.all(np.isfinite(X), axis=1) & (cost < best_cost)
        best_cost = np.where(better, cost, best_cost)
        best_inliers[:, better] = (observed & (err <= max_reproj_px))[:, better]
    return best_inliers


def triangulate_robust(
    uv_px: np.ndarray,
    conf: np.ndarray | None,
    cameras: Cameras,
    max_reproj_px: float = 15.0,
    method: Literal["drop_worst", "ransac"] = "drop_worst",
    min_views: int = 2,
) -> TriangulationResult:
    """Triangulate while rejecting views that disagree (wrong detections, swapped hands).

    Args:
        uv_px: ``(C, N, 2)`` distorted pixels, NaN where missing.
        conf: ``(C, N)`` confidences (0 or NaN = missing), or None.
        cameras: a :class:`CameraRig` or stacked ``(K, dist, R, t)``.
        max_reproj_px: a view is an inlier when the point reprojects within this many pixels.
        method: ``"drop_worst"``: weighted DLT from all views, then repeatedly drop each
            point's worst view while it is over the threshold (fails when outliers are
            the majority). ``"ransac"``: every pair of views proposes the midpoint of its
            two rays (all ``C (C - 1) / 2`` pairs, so deterministic); the one with the
            lowest truncated squared reprojection cost (MSAC) over all views gives the
            inliers, which are refitted (weighted DLT), cleaned with ``drop_worst``, and
            views that then fall within the threshold are added back once.
        min_views: fewer agreeing views give NaN.

    Returns:
        A :class:`TriangulationResult`; every view in ``inlier_mask`` reprojects within
        ``max_reproj_px``.

    Convention:
        As :func:`triangulate_dlt`; points behind a camera count as infinitely far off in
        that view.
    """
    if method not in ("drop_worst", "ransac"):
        raise HandannoError(f"unknown method {method!r}; use 'drop_worst' or 'ransac'")
    if max_reproj_px <= 0:
        raise HandannoError(f"max_reproj_px must be > 0, got {max_reproj_px}")
    uv_px, w, cams = _inputs(uv_px, conf, cameras)
    xy, w = undistort_views(uv_px, w, cams)
    C, N = w.shape
    if C < 2:
        return TriangulationResult(np.full((N, 3), np.nan), np.zeros((C, N), bool), np.full((C, N), np.nan))
    active = w > 0
    if method == "ransac":
        active = _ransac_initial_inliers(xy, w, cams, max_reproj_px)
    X, active, err = _drop_worst(xy, w, active, uv_px, cams, max_reproj_px, min_views)
    if method == "ransac":
        add = (w > 0) & ~active & (err <= max_reproj_px)
        if add.any():
            X, active, err = _drop_worst(xy, w, active | add, uv_px, cams, max_reproj_px, min_views)
    return TriangulationResult(points=X, inlier_mask=active, reproj_err_px=err)


# ----------------------------------------------------------------------------- torch


def pixels_to_normalized_torch(uv_px: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(*, N, 2)`` pixels to distorted normalised coordinates with ``K (*, 3, 3)`` (skew honoured)."""
    y = (uv_px[..., 1] - K[..., 1, 2, None]) / K[..., 1, 1, None]
    x = (uv_px[..., 0] - K[..., 0, 2, None] - K[..., 0, 1, None] * y) / K[..., 0, 0, None]
    return torch.stack([x, y], dim=-1)


def undistort_normalized_torch(xy_d: torch.Tensor, dist: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Invert :func:`~handanno.calibration.camera.distort_normalized` by Newton's method.

    Args:
        xy_d: ``(*, N, 2)`` distorted normalised coordinates.
        dist: ``(*, 5)`` ``[k1, k2, p1, p2, k3]``, broadcast against ``xy_d``'s leading dims.
        iters: Newton steps from ``xy = xy_d`` (a fixed count, so it runs batched on GPU and
            autograd flows through the unrolled steps); 10 reaches float64 precision for
            ordinary lenses.

    Returns:
        ``(*, N, 2)`` undistorted normalised coordinates.

    Convention:
        Same polynomial as OpenCV; the 2x2 Jacobian ``d distort / d xy`` is analytic.
    """
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))  # each (*, 1)
    xd, yd = xy_d[..., 0], xy_d[..., 1]
    x, y = xd, yd
    for _ in range(iters):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        a = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x  # d fx / dx
        b = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y  # d fx / dy = d fy / dx
        d = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x  # d fy / dy
        det = a * d - b * b
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x, y = x - (d * fx - b * fy) / det, y - (a * fy - b * fx) / det
    return torch.stack([x, y], dim=-1)


def triangulate_dlt_torch(
    uv_px: torch.Tensor,
    conf: torch.Tensor | None,
    K: torch.Tensor,
    dist: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    min_views: int = 2,
    undistort_iters: int = 10,
) -> torch.Tensor:
    """Batched, differentiable confidence-weighted DLT (the torch twin of :func:`triangulate_dlt`).

    Args:
        uv_px: ``(B, C, J, 2)`` distorted pixels, NaN where missing.
        conf: ``(B, C, J)`` confidences (0 or NaN = missing), or None.
        K: ``(C, 3, 3)`` or ``(B, C, 3, 3)``; dist ``(C, 5)`` / ``(B, C, 5)``;
            R ``(C, 3, 3)`` / ``(B, C, 3, 3)``; t ``(C, 3)`` / ``(B, C, 3)`` (e.g. from
            :meth:`CameraRig.tensors`). Per-camera tensors are expanded over B explicitly.
        dist: see K.
        R: see K.
        t: see K.
        min_views: points seen by fewer views are NaN.
        undistort_iters: Newton steps of :func:`undistort_normalized_torch`.

    Returns:
        ``(B, J, 3)`` world points, metres, NaN where unsolvable. Gradients flow to the
        pixels, confidences and cameras through the SVD (well defined while the two
        smallest singular values differ, i.e. for any non-degenerate point); NaN points
        get zero gradient.

    Convention:
        As :func:`triangulate_dlt`, with Newton undistortion instead of OpenCV's.
    """
    check_shape(uv_px, ("B", "C", "J", 2), "uv_px")
    B, C, J, _ = uv_px.shape
    cams = []
    for name, x, shape in (("K", K, (3, 3)), ("dist", dist, (5,)), ("R", R, (3, 3)), ("t", t, (3,))):
        if x.dim() == len(shape) + 1:
            check_shape(x, (C, *shape), name)
            x = x.unsqueeze(0).expand(B, *x.shape)  # (B, C, ...)
        check_shape(x, (B, C, *shape), name)
        cams.append(x.to(uv_px.dtype))
    K, dist, R, t = cams
    finite = torch.isfinite(uv_px).all(dim=-1)  # (B, C, J)
    if conf is None:
        w = finite.to(uv_px.dtype)
    else:
        check_shape(conf, (B, C, J), "conf")
        ok = finite & torch.isfinite(conf)
        w = torch.where(ok, conf.to(uv_px.dtype), torch.zeros_like(uv_px[..., 0]))
    uv_clean = torch.where(finite[..., None], uv_px, torch.zeros_like(uv_px))  # NaN-free for autograd
    xy_d = pixels_to_normalized_torch(uv_clean, K)  # (B, C, J, 2)
    xy = undistort_normalized_torch(xy_d, dist, undistort_iters)
    converged = (distort_normalized(xy, dist) - xy_d).norm(dim=-1) < _UNDISTORT_TOL
    w = torch.where(converged, w, torch.zeros_like(w))
    xy = torch.where((w > 0)[..., None], xy, torch.zeros_like(xy))
    P = torch.cat([R, t[..., None]], dim=-1)[:, :, None]  # (B, C, 1, 3, 4)
    rows_x = xy[..., 0, None] * P[..., 2, :] - P[..., 0, :]  # (B, C, J, 4)  x P3 - P1
    rows_y = xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]  # (B, C, J, 4)  y P3 - P2
    A = torch.stack([rows_x, rows_y], dim=-2) * w[..., None, None]  # (B, C, J, 2, 4)
    A = A.permute(0, 2, 1, 3, 4).reshape(B, J, 2 * C, 4)  # (B, J, 2C, 4)
    if C < 2:
        return torch.full((B, J, 3), float("nan"), dtype=uv_px.dtype, device=uv_px.device)
    n_views = (w > 0).sum(dim=1)  # (B, J)
    solvable = n_views >= max(min_views, 2)
    # Unsolvable points get a well-conditioned stand-in so the SVD (and its backward) stays finite.
    dummy = torch.zeros(2 * C, 4, dtype=A.dtype, device=A.device)
    dummy[:4, :4] = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=A.dtype, device=A.device))
    A = torch.where(solvable[..., None, None], A, dummy)
    _, _, Vh = torch.linalg.svd(A, full_matrices=False)  # Vh (B, J, 4, 4)
    X_h = Vh[..., -1, :]  # (B, J, 4)
    w_h = X_h[..., 3:4]
    good = solvable & (w_h[..., 0].abs() >= 1e-12)
    w_safe = torch.where(good[..., None], w_h, torch.ones_like(w_h))
    X = X_h[..., :3] / w_safe
    return torch.where(good[..., None], X, torch.full_like(X, float("nan")))
