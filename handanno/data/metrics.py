"""Hand pose metrics, defined exactly as the FreiHAND evaluation computes them.

One module for fit reports, trainers and benchmarks. The 3D definitions follow
lmb-freiburg/freihand ``eval.py`` (``align_w_scale``, ``calculate_fscore``, ``main``) and
``utils/eval_util.py`` (``EvalUtil``); the 2D AUC range follows ``EvalUtil`` as used by
lmb-freiburg/hand3d ``eval2d.py``.

Convention:
    - Inputs are metres (3D) and pixels (2D), as everywhere in handanno; 3D errors are
      returned in millimetres (``* 1000``, stated in every name or docstring).
    - ``pred`` and ``gt`` have shape ``(*, N, D)``: any leading dimensions are samples
      (flattened to ``B``), ``N`` points (21 keypoints or 778 vertices), ``D`` = 3 or 2.
    - Averaging (FreiHAND's ``EvalUtil``): a mean error is the mean over points of each
      point's mean over the samples where it is visible; points never visible are left out.
      With every point visible this is the plain mean over all (sample, point) pairs.
    - PCK counts an error as correct when ``error <= threshold``; AUC is the trapezoidal
      area under each point's PCK curve divided by the area under a curve of ones, then
      averaged over points. 3D: 100 thresholds over 0-50 mm. 2D: 20 thresholds over 0-30 px.
    - PA (Procrustes-aligned): per sample, the prediction is mapped onto the ground truth by
      the similarity transform of FreiHAND's ``align_w_scale`` (centre, normalise by the
      Frobenius norm + 1e-8, ``scipy.linalg.orthogonal_procrustes``). As in FreiHAND, no
      reflection is excluded (the orthogonal matrix may have determinant -1), and vertices
      are aligned on their own (not with the keypoints' transform).
    - F-score: per sample, nearest-neighbour distances both ways between the vertex clouds
      (open3d ``compute_point_cloud_distance``; here ``scipy.spatial.cKDTree``, the same
      exact Euclidean distances); a distance counts when ``< threshold``. FreiHAND's naming is
      kept: ``precision`` = fraction of ground-truth points near the prediction, ``recall`` =
      fraction of predicted points near the ground truth (swapped with respect to the usual
      naming; the F-score, their harmonic mean, is the same). Scores are averaged over samples.

Torch tensors are accepted anywhere an array is (detached and converted to float64 numpy);
these metrics carry no gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from handanno.check import as_float64, check_shape
from handanno.errors import HandannoError

M_TO_MM = 1000.0

# FreiHAND eval.py: ``get_measures(0.0, 0.05, 100)`` in metres, i.e. 0-50 mm, 100 thresholds.
AUC_3D_THRESHOLDS_MM = np.linspace(0.0, 50.0, 100)
# FreiHAND eval.py: ``f_threshs = [0.005, 0.015]``.
FSCORE_THRESHOLDS_M = (0.005, 0.015)
# hand3d eval2d.py: ``get_measures(0.0, 30.0, 20)`` in pixels.
AUC_2D_THRESHOLDS_PX = np.linspace(0.0, 30.0, 20)
# FreiHAND align_w_scale: added to each Frobenius norm.
_PROCRUSTES_EPS = 1e-8


# --------------------------------------------------------------------------- helpers


def _points_pair(pred: Any, gt: Any, dim: int, name: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """Check and flatten ``pred``/``gt`` of shape ``(*, N, dim)`` to ``(B, N, dim)``."""
    pred_a, gt_a = as_float64(pred, f"pred {name}"), as_float64(gt, f"gt {name}")
    check_shape(gt_a, ("*", "N", dim), f"gt {name}")
    check_shape(pred_a, ("*", "N", dim), f"pred {name}")
    if pred_a.shape != gt_a.shape:
        raise HandannoError(f"pred {name} has shape {pred_a.shape} but gt {name} has {gt_a.shape}")
    N = gt_a.shape[-2]
    return pred_a.reshape(-1, N, dim), gt_a.reshape(-1, N, dim)  # (B, N, dim)


def _mask_for(mask: Any | None, B: int, N: int, name: str = "mask") -> np.ndarray:
    """``(B, N)`` bool visibility; ``None`` means all visible. Non-zero entries are visible."""
    if mask is None:
        return np.ones((B, N), dtype=bool)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    check_shape(m, ("*", N), name)
    m = m.reshape(-1, N)
    if m.shape[0] != B:
        raise HandannoError(f"{name} covers {m.shape[0]} samples but there are {B}")
    return m != 0


def _per_point_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """FreiHAND EvalUtil mean: per-point mean over visible samples, then mean over points.

    Args:
        values: ``(B, N)``.
        mask: ``(B, N)`` bool.

    Returns:
        The mean, or NaN when nothing is visible.
    """
    count = mask.sum(axis=0)  # (N,)
    seen = count > 0
    if not np.any(seen):
        return float("nan")
    per_point = np.where(mask, values, 0.0).sum(axis=0)[seen] / count[seen]
    return float(per_point.mean())


def _per_point_pck(errors: np.ndarray, mask: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """PCK curve of each point that is visible at least once (EvalUtil ``_get_pck``).

    Args:
        errors: ``(B, N)``.
        mask: ``(B, N)`` bool.
        thresholds: ``(T,)``.

    Returns:
        ``(N', T)`` for the ``N'`` points with data.
    """
    count = mask.sum(axis=0)  # (N,)
    seen = count > 0
    hit = (errors[:, :, None] <= thresholds[None, None, :]) & mask[:, :, None]  # (B, N, T)
    return hit.sum(axis=0)[seen] / count[seen, None]  # (N', T)


def _thresholds(thresholds: Any, name: str) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    check_shape(t, ("T",), name)
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise HandannoError(f"{name}: need at least 2 strictly increasing thresholds, got {t.tolist()}")
    return t


# --------------------------------------------------------------------------- 3D errors


def joint_errors_mm(pred: Any, gt: Any) -> np.ndarray:
    """Euclidean error of every point, in millimetres.

    Args:
        pred: ``(*, N, 3)`` predicted points, metres.
        gt: ``(*, N, 3)`` ground-truth points, metres.

    Returns:
        ``(B, N)`` errors in mm, ``B`` the product of the leading dimensions.

    Example:
        >>> joint_errors_mm(np.zeros((1, 2, 3)), np.array([[[0.003, 0, 0], [0, 0.004, 0]]]))
        array([[3., 4.]])
    """
    p, g = _points_pair(pred, gt, 3)
    return np.linalg.norm(p - g, axis=-1) * M_TO_MM  # (B, N), m -> mm


def mpjpe(pred: Any, gt: Any, mask: Any | None = None) -> float:
    """Mean per-joint position error in millimetres (FreiHAND ``xyz_mean3d``, there in cm).

    Args:
        pred: ``(*, J, 3)`` predicted keypoints, metres (camera frame).
        gt: ``(*, J, 3)`` ground-truth keypoints, metres, same frame.
        mask: optional ``(*, J)`` visibility; invisible keypoints are left out (EvalUtil).

    Returns:
        The error in mm (NaN if no keypoint is visible).

    Example:
        >>> gt = np.zeros((2, 21, 3)); mpjpe(gt + [0.003, 0, 0], gt)
        3.0
    """
    err = joint_errors_mm(pred, gt)
    return _per_point_mean(err, _mask_for(mask, *err.shape))


def mpvpe(pred: Any, gt: Any, mask: Any | None = None) -> float:
    """Mean per-vertex position error in millimetres (FreiHAND ``mesh_mean3d``, there in cm).

    Args:
        pred: ``(*, V, 3)`` predicted vertices, metres.
        gt: ``(*, V, 3)`` ground-truth vertices, metres.
        mask: optional ``(*, V)`` selection of vertices.

    Returns:
        The error in mm.
    """
    return mpjpe(pred, gt, mask)


class SimilarityTransform(NamedTuple):
    """Per-sample similarity transform found by :func:`procrustes_transform`.

    ``aligned = ((pred - t_pred) / norm_pred) @ R.T * scale * norm_gt + t_gt``, FreiHAND's
    ``align_w_scale`` written out. All arrays have a leading batch dimension ``B``.
    """

    R: np.ndarray  # (B, 3, 3) orthogonal, det may be -1 (as FreiHAND)
    scale: np.ndarray  # (B,) sum of singular values of the normalised cross-covariance
    norm_gt: np.ndarray  # (B,) Frobenius norm of centred gt + 1e-8, metres
    norm_pred: np.ndarray  # (B,) Frobenius norm of centred pred + 1e-8, metres
    t_gt: np.ndarray  # (B, 3) gt centroid, metres
    t_pred: np.ndarray  # (B, 3) pred centroid, metres

    def apply(self, points: Any) -> np.ndarray:
        """Map ``(B, M, 3)`` points given in the prediction's frame onto the ground truth."""
        x = as_float64(points, "points")
        check_shape(x, (self.R.shape[0], "M", 3), "points")
        centred = (x - self.t_pred[:, None, :]) / self.norm_pred[:, None, None]
        rotated = np.einsum("bmj,bij->bmi", centred, self.R)  # x @ R.T, (B, M, 3)
        return rotated * (self.scale * self.norm_gt)[:, None, None] + self.t_gt[:, None, :]


def procrustes_transform(pred: Any, gt: Any, mask: Any | None = None) -> SimilarityTransform:
    """Similarity transform aligning ``pred`` to ``gt`` per sample, as FreiHAND ``align_w_scale``.

    Args:
        pred: ``(*, N, 3)`` points, metres.
        gt: ``(*, N, 3)`` points, metres.
        mask: optional ``(*, N)``: only visible points enter the centroids, norms and
            rotation (with no mask: FreiHAND's computation exactly).

    Returns:
        The transform, batched over ``B`` = product of the leading dimensions.

    Convention:
        ``scipy.linalg.orthogonal_procrustes(A, B)`` with ``A`` the normalised gt and ``B``
        the normalised prediction returns ``R`` minimising ``|A R - B|``; the prediction is
        mapped back with ``R.T``, scaled by ``scale * norm_gt``. No reflection check.
    """
    p, g = _points_pair(pred, gt, 3)
    B, N, _ = g.shape
    w = _mask_for(mask, B, N).astype(np.float64)[:, :, None]  # (B, N, 1)
    n = np.maximum(w.sum(axis=1), 1.0)  # (B, 1)
    t_gt = (g * w).sum(axis=1) / n  # (B, 3)
    t_pred = (p * w).sum(axis=1) / n  # (B, 3)
    g_c = (g - t_gt[:, None]) * w  # (B, N, 3)
    p_c = (p - t_pred[:, None]) * w  # (B, N, 3)
    norm_gt = np.sqrt((g_c**2).sum(axis=(1, 2))) + _PROCRUSTES_EPS  # (B,)
    norm_pred = np.sqrt((p_c**2).sum(axis=(1, 2))) + _PROCRUSTES_EPS  # (B,)
    a = g_c / norm_gt[:, None, None]
    b = p_c / norm_pred[:, None, None]
    # scipy orthogonal_procrustes(a, b): u, w, vt = svd((b.T @ a).T) = svd(a.T @ b)
    cross = np.einsum("bni,bnj->bij", a, b)  # a.T @ b, (B, 3, 3)
    u, sv, vt = np.linalg.svd(cross)
    R = u @ vt  # (B, 3, 3)
    scale = sv.sum(axis=-1)  # (B,)
    return SimilarityTransform(R, scale, norm_gt, norm_pred, t_gt, t_pred)


def procrustes_align(pred: Any, gt: Any, mask: Any | None = None) -> np.ndarray:
    """Align ``pred`` onto ``gt`` per sample with FreiHAND's similarity Procrustes.

    Args:
        pred: ``(*, N, 3)`` points, metres.
        gt: ``(*, N, 3)`` points, metres.
        mask: optional ``(*, N)`` visibility; the transform is found from visible points
            only and applied to all.

    Returns:
        ``(*, N, 3)`` aligned prediction, metres, same shape as ``pred``.

    Example:
        >>> gt = np.random.default_rng(0).normal(size=(1, 21, 3))
        >>> pred = 2.0 * gt[..., ::-1] + 1.0  # scaled, mirrored, shifted
        >>> bool(np.allclose(procrustes_align(pred, gt), gt, atol=1e-6))
        True
    """
    p, _ = _points_pair(pred, gt, 3)
    aligned = procrustes_transform(pred, gt, mask).apply(p)
    return aligned.reshape(np.shape(pred))


def pa_mpjpe(pred: Any, gt: Any, mask: Any | None = None) -> float:
    """MPJPE after per-sample similarity Procrustes, mm (FreiHAND ``xyz_al_mean3d``, there in cm).

    Args:
        pred: ``(*, J, 3)`` keypoints, metres.
        gt: ``(*, J, 3)`` keypoints, metres.
        mask: optional ``(*, J)`` visibility (alignment and error on visible keypoints).

    Returns:
        The error in mm.
    """
    return mpjpe(procrustes_align(pred, gt, mask), gt, mask)


def pa_mpvpe(pred: Any, gt: Any, mask: Any | None = None) -> float:
    """MPVPE after aligning the vertices on their own, mm (FreiHAND ``mesh_al_mean3d``).

    Args:
        pred: ``(*, V, 3)`` vertices, metres.
        gt: ``(*, V, 3)`` vertices, metres.
        mask: optional ``(*, V)`` selection of vertices.

    Returns:
        The error in mm.
    """
    return pa_mpjpe(pred, gt, mask)


# --------------------------------------------------------------------------- F-score


class FScore(NamedTuple):
    """F-score at one threshold, averaged over samples (FreiHAND naming of P and R)."""

    f: float
    precision: float  # fraction of gt points within the threshold of the prediction
    recall: float  # fraction of predicted points within the threshold of the gt


def _cloud_batch(x: Any, name: str) -> np.ndarray:
    a = as_float64(x, name)
    check_shape(a, ("*", "N", 3), name)
    return a.reshape(-1, a.shape[-2], 3)  # (B, N, 3)


def fscores_per_sample(pred_verts: Any, gt_verts: Any, thresholds_m: Sequence[float]) -> np.ndarray:
    """F-score, precision and recall of every sample at several thresholds (FreiHAND ``calculate_fscore``).

    Args:
        pred_verts: ``(*, V, 3)`` predicted points, metres (``V`` may differ from ``W``).
        gt_verts: ``(*, W, 3)`` ground-truth points, metres, same leading dimensions.
        thresholds_m: ``T`` distance thresholds in metres.

    Returns:
        ``(B, T, 3)``: ``[..., 0]`` F-score, ``[..., 1]`` precision, ``[..., 2]`` recall.
    """
    from scipy.spatial import cKDTree

    pr, gt = _cloud_batch(pred_verts, "pred verts"), _cloud_batch(gt_verts, "gt verts")
    if pr.shape[0] != gt.shape[0]:
        raise HandannoError(f"pred verts hold {pr.shape[0]} samples but gt verts hold {gt.shape[0]}")
    th = np.asarray(thresholds_m, dtype=np.float64).reshape(-1)  # (T,)
    out = np.zeros((gt.shape[0], th.size, 3))
    for b in range(gt.shape[0]):
        if pr.shape[1] == 0 or gt.shape[1] == 0:
            continue  # FreiHAND: f = precision = recall = 0
        d1 = cKDTree(pr[b]).query(gt[b], k=1)[0]  # closest pred for each gt point
        d2 = cKDTree(gt[b]).query(pr[b], k=1)[0]  # closest gt for each pred point
        recall = (d2[:, None] < th[None]).mean(axis=0)  # (T,)
        precision = (d1[:, None] < th[None]).mean(axis=0)  # (T,)
        denom = recall + precision
        f = np.where(denom > 0, 2 * recall * precision / np.where(denom > 0, denom, 1.0), 0.0)
        out[b] = np.stack([f, precision, recall], axis=-1)
    return out


def fscore(pred_verts: Any, gt_verts: Any, threshold_m: float) -> FScore:
    """F-score at ``threshold_m`` (FreiHAND F@5 mm: 0.005, F@15 mm: 0.015), mean over samples.

    Args:
        pred_verts: ``(*, V, 3)`` predicted vertices (or any point cloud), metres.
        gt_verts: ``(*, W, 3)`` ground-truth vertices, metres.
        threshold_m: distance threshold in metres; a distance counts when strictly below.

    Returns:
        :class:`FScore` (f, precision, recall), each the mean over samples.

    Example:
        >>> gt = np.eye(3)[None]; fscore(gt + [0.004, 0, 0], gt, 0.005).f
        1.0
    """
    s = fscores_per_sample(pred_verts, gt_verts, [threshold_m])[:, 0, :].mean(axis=0)  # (3,)
    return FScore(float(s[0]), float(s[1]), float(s[2]))


# --------------------------------------------------------------------------- 3D PCK / AUC


def pck_curve_3d(errors_mm: Any, thresholds_mm: Any = AUC_3D_THRESHOLDS_MM, mask: Any | None = None) -> np.ndarray:
    """3D PCK curve: fraction of errors ``<=`` each threshold, as FreiHAND's EvalUtil.

    Args:
        errors_mm: ``(B, N)`` errors in mm (e.g. :func:`joint_errors_mm`).
        thresholds_mm: ``(T,)`` increasing thresholds in mm (default 0-50 mm, 100 steps).
        mask: optional ``(B, N)`` visibility.

    Returns:
        ``(T,)`` PCK per threshold: each point's curve, averaged over points.

    Example:
        >>> pck_curve_3d(np.array([[1.0, 2.0, 3.0, 4.0]]), [0.0, 1.0, 2.5, 4.0])
        array([0.  , 0.25, 0.5 , 1.  ])
    """
    err = as_float64(errors_mm, "errors_mm")
    check_shape(err, ("B", "N"), "errors_mm")
    curves = _per_point_pck(err, _mask_for(mask, *err.shape), _thresholds(thresholds_mm, "thresholds_mm"))
    return curves.mean(axis=0) if curves.size else np.full(len(np.atleast_1d(thresholds_mm)), np.nan)


def _auc(errors: np.ndarray, mask: np.ndarray, thresholds: np.ndarray) -> float:
    """EvalUtil AUC: per point ``trapz(pck, t) / trapz(1, t)``, then mean over points."""
    curves = _per_point_pck(errors, mask, thresholds)  # (N', T)
    if curves.size == 0:
        return float("nan")
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    return float((np.trapezoid(curves, thresholds, axis=-1) / norm).mean())


def auc_3d(errors_mm: Any, thresholds_mm: Any = AUC_3D_THRESHOLDS_MM, mask: Any | None = None) -> float:
    """Area under the 3D PCK curve over 0-50 mm with 100 thresholds, normalised to [0, 1].

    Args:
        errors_mm: ``(B, N)`` errors in mm.
        thresholds_mm: ``(T,)`` thresholds in mm (default FreiHAND's ``linspace(0, 50, 100)``).
        mask: optional ``(B, N)`` visibility.

    Returns:
        The AUC (FreiHAND ``xyz_auc3d``), NaN if nothing is visible.

    Example:
        >>> auc_3d(np.zeros((3, 21)))
        1.0
    """
    err = as_float64(errors_mm, "errors_mm")
    check_shape(err, ("B", "N"), "errors_mm")
    return _auc(err, _mask_for(mask, *err.shape), _thresholds(thresholds_mm, "thresholds_mm"))


# --------------------------------------------------------------------------- 2D


def _errors_2d(pred: Any, gt: Any, visible: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, g = _points_pair(pred, gt, 2, "keypoints 2D")
    B, J, _ = g.shape
    vis = _mask_for(visible, B, J, "visible") & np.all(np.isfinite(g), axis=-1)
    err = np.linalg.norm(p - g, axis=-1)  # (B, J), px
    return err, vis, g


def epe_2d(pred: Any, gt: Any, visible: Any | None = None) -> float:
    """Mean 2D end-point error in pixels over visible keypoints (EvalUtil averaging).

    Args:
        pred: ``(*, J, 2)`` predicted ``uv`` in pixels.
        gt: ``(*, J, 2)`` ground-truth ``uv`` in pixels (NaN = missing).
        visible: optional ``(*, J)``; non-zero means visible (e.g. ``conf > 0``).

    Returns:
        The EPE in px (NaN if nothing is visible).

    Example:
        >>> epe_2d(np.array([[[3.0, 4.0], [0.0, 0.0]]]), np.zeros((1, 2, 2)), [[1, 0]])
        5.0
    """
    err, vis, _ = _errors_2d(pred, gt, visible)
    return _per_point_mean(err, vis)


def bbox_normaliser_px(gt: Any, visible: Any | None = None) -> np.ndarray:
    """Larger side of the bounding box of each sample's visible ground-truth keypoints.

    Args:
        gt: ``(*, J, 2)`` ground-truth ``uv`` in pixels.
        visible: optional ``(*, J)``.

    Returns:
        ``(B,)`` normaliser in pixels; NaN for a sample with no visible keypoint.

    Example:
        >>> bbox_normaliser_px(np.array([[[10.0, 10.0], [50.0, 110.0]]]))
        array([100.])
    """
    _, vis, g = _errors_2d(gt, gt, visible)
    lo = np.where(vis[..., None], g, np.inf).min(axis=1)  # (B, 2)
    hi = np.where(vis[..., None], g, -np.inf).max(axis=1)  # (B, 2)
    side = (hi - lo).max(axis=-1)  # (B,)
    return np.where(vis.any(axis=1), side, np.nan)


class PCK2D(NamedTuple):
    """2D PCK and the per-sample normaliser it used (to state in reports)."""

    pck: float  # fraction in [0, 1]
    normaliser_px: np.ndarray  # (B,) larger side of the gt keypoints' bounding box, px
    alpha: float


def pck_2d(pred: Any, gt: Any, visible: Any | None = None, alpha: float = 0.2) -> PCK2D:
    """PCK@alpha: a keypoint is correct when its error ``<= alpha * normaliser``.

    Args:
        pred: ``(*, J, 2)`` predicted ``uv`` in pixels.
        gt: ``(*, J, 2)`` ground-truth ``uv`` in pixels.
        visible: optional ``(*, J)`` visibility.
        alpha: fraction of the normaliser (default 0.2).

    Returns:
        :class:`PCK2D`. Samples whose normaliser is not positive (fewer than two distinct
        visible keypoints) are left out; PCK is averaged per keypoint, then over keypoints.

    Example:
        >>> gt = np.array([[[0.0, 0.0], [100.0, 40.0]]])
        >>> r = pck_2d(gt + [[[19.0, 0.0], [21.0, 0.0]]], gt); (r.pck, r.normaliser_px)
        (0.5, array([100.]))
    """
    err, vis, _ = _errors_2d(pred, gt, visible)
    norm = bbox_normaliser_px(gt, visible)
    ok = np.isfinite(norm) & (norm > 0)
    vis = vis & ok[:, None]
    rel = err / np.where(ok, norm, 1.0)[:, None]  # (B, J)
    curves = _per_point_pck(rel, vis, np.array([float(alpha)]))
    pck = float(curves.mean()) if curves.size else float("nan")
    return PCK2D(pck, norm, float(alpha))


def pck_curve_2d(
    pred: Any, gt: Any, visible: Any | None = None, thresholds_px: Any = AUC_2D_THRESHOLDS_PX
) -> np.ndarray:
    """2D PCK curve over pixel thresholds (EvalUtil).

    Args:
        pred: ``(*, J, 2)`` px.
        gt: ``(*, J, 2)`` px.
        visible: optional ``(*, J)``.
        thresholds_px: ``(T,)`` thresholds in pixels (default 0-30 px, 20 steps).

    Returns:
        ``(T,)`` PCK per threshold.
    """
    err, vis, _ = _errors_2d(pred, gt, visible)
    curves = _per_point_pck(err, vis, _thresholds(thresholds_px, "thresholds_px"))
    return curves.mean(axis=0) if curves.size else np.full(len(np.atleast_1d(thresholds_px)), np.nan)


def auc_2d(pred: Any, gt: Any, visible: Any | None = None, thresholds_px: Any = AUC_2D_THRESHOLDS_PX) -> float:
    """Area under the 2D PCK curve over 0-30 px (20 thresholds) by default, normalised to [0, 1].

    Args:
        pred: ``(*, J, 2)`` px.
        gt: ``(*, J, 2)`` px.
        visible: optional ``(*, J)``.
        thresholds_px: ``(T,)`` thresholds in pixels; state them in reports when changed.

    Returns:
        The AUC (NaN if nothing is visible).
    """
    err, vis, _ = _errors_2d(pred, gt, visible)
    return _auc(err, vis, _thresholds(thresholds_px, "thresholds_px"))


# --------------------------------------------------------------------------- summary


@dataclasses.dataclass(frozen=True)
class Metrics3D:
    """FreiHAND's 3D scores of a set of predictions (lengths in mm, AUC and F in [0, 1]).

    Mesh fields are None when no vertices were given, or (aligned ones) when prediction and
    ground truth have different vertex counts.
    """

    num_samples: int
    mpjpe_mm: float
    pa_mpjpe_mm: float
    auc_3d: float  # 3D PCK AUC over 0-50 mm, 100 thresholds
    pa_auc_3d: float
    mpvpe_mm: float | None = None
    pa_mpvpe_mm: float | None = None
    mesh_auc_3d: float | None = None
    pa_mesh_auc_3d: float | None = None
    f5: float | None = None  # F-score at 5 mm (unaligned vertices)
    f15: float | None = None
    pa_f5: float | None = None  # F-score at 5 mm after aligning the vertices
    pa_f15: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain dictionary of the fields (JSON-ready)."""
        return dataclasses.asdict(self)

    def to_freihand_scores(self) -> dict[str, float]:
        """The keys and units of FreiHAND's ``scores.txt`` (mean errors in cm); None fields left out."""
        pairs = {
            "xyz_mean3d": self.mpjpe_mm / 10.0, "xyz_auc3d": self.auc_3d,
            "xyz_al_mean3d": self.pa_mpjpe_mm / 10.0, "xyz_al_auc3d": self.pa_auc_3d,
            "mesh_mean3d": None if self.mpvpe_mm is None else self.mpvpe_mm / 10.0,
            "mesh_auc3d": self.mesh_auc_3d,
            "mesh_al_mean3d": None if self.pa_mpvpe_mm is None else self.pa_mpvpe_mm / 10.0,
            "mesh_al_auc3d": self.pa_mesh_auc_3d,
            "f_score_5": self.f5, "f_al_score_5": self.pa_f5,
            "f_score_15": self.f15, "f_al_score_15": self.pa_f15,
        }  # fmt: skip
        return {k: float(v) for k, v in pairs.items() if v is not None}

    def format(self) -> str:
        """Report text: one line per group, units and definitions stated."""

        def fmt(v: float | None, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        lines = [
            f"3D metrics over {self.num_samples} samples (FreiHAND definitions: PA = per-sample similarity "
            "Procrustes; AUC of PCK over 0-50 mm, 100 thresholds)",
            f"  keypoints: MPJPE {self.mpjpe_mm:.2f} mm, PA-MPJPE {self.pa_mpjpe_mm:.2f} mm, "
            f"AUC {self.auc_3d:.3f}, PA-AUC {self.pa_auc_3d:.3f}",
            f"  mesh:      MPVPE {fmt(self.mpvpe_mm, '.2f')} mm, PA-MPVPE {fmt(self.pa_mpvpe_mm, '.2f')} mm, "
            f"AUC {fmt(self.mesh_auc_3d, '.3f')}, PA-AUC {fmt(self.pa_mesh_auc_3d, '.3f')}",
            f"  F-score:   F@5mm {fmt(self.f5, '.3f')}, F@15mm {fmt(self.f15, '.3f')}, "
            f"PA-F@5mm {fmt(self.pa_f5, '.3f')}, PA-F@15mm {fmt(self.pa_f15, '.3f')}",
        ]
        return "\n".join(lines)


def evaluate_3d(pred_xyz: Any, gt_xyz: Any, pred_verts: Any | None = None, gt_verts: Any | None = None) -> Metrics3D:
    """All of FreiHAND's 3D scores at once, as its ``eval.py`` ``main`` computes them.

    Args:
        pred_xyz: ``(B, 21, 3)`` predicted keypoints, metres.
        gt_xyz: ``(B, 21, 3)`` ground-truth keypoints, metres.
        pred_verts: optional ``(B, V, 3)`` predicted vertices, metres.
        gt_verts: optional ``(B, W, 3)`` ground-truth vertices, metres (needed with
            ``pred_verts``).

    Returns:
        :class:`Metrics3D`. When ``V != W``, only the unaligned F-scores are given:
        FreiHAND's fallback there (``align_by_trafo``, keypoint transform applied to the
        vertices) drops the prediction's norm from the scale, so it is not reproduced.
    """
    err = joint_errors_mm(pred_xyz, gt_xyz)  # (B, J)
    B = err.shape[0]
    ones = np.ones_like(err, dtype=bool)
    err_al = joint_errors_mm(procrustes_align(pred_xyz, gt_xyz), gt_xyz)
    fields: dict[str, Any] = dict(
        num_samples=B,
        mpjpe_mm=_per_point_mean(err, ones), pa_mpjpe_mm=_per_point_mean(err_al, ones),
        auc_3d=_auc(err, ones, AUC_3D_THRESHOLDS_MM), pa_auc_3d=_auc(err_al, ones, AUC_3D_THRESHOLDS_MM),
    )  # fmt: skip
    if (pred_verts is None) != (gt_verts is None):
        raise HandannoError("evaluate_3d: give both pred_verts and gt_verts, or neither")
    if pred_verts is not None:
        pv, gv = _cloud_batch(pred_verts, "pred verts"), _cloud_batch(gt_verts, "gt verts")
        if pv.shape[0] != B or gv.shape[0] != B:
            raise HandannoError(f"evaluate_3d: {B} keypoint samples but {pv.shape[0]} / {gv.shape[0]} vertex samples")
        f = fscores_per_sample(pv, gv, FSCORE_THRESHOLDS_M).mean(axis=0)  # (T, 3)
        fields.update(f5=float(f[0, 0]), f15=float(f[1, 0]))
        if pv.shape == gv.shape:
            verr = joint_errors_mm(pv, gv)
            vones = np.ones_like(verr, dtype=bool)
            pv_al = procrustes_align(pv, gv)
            verr_al = joint_errors_mm(pv_al, gv)
            fa = fscores_per_sample(pv_al, gv, FSCORE_THRESHOLDS_M).mean(axis=0)
            fields.update(
                mpvpe_mm=_per_point_mean(verr, vones), pa_mpvpe_mm=_per_point_mean(verr_al, vones),
                mesh_auc_3d=_auc(verr, vones, AUC_3D_THRESHOLDS_MM),
                pa_mesh_auc_3d=_auc(verr_al, vones, AUC_3D_THRESHOLDS_MM),
                pa_f5=float(fa[0, 0]), pa_f15=float(fa[1, 0]),
            )  # fmt: skip
    return Metrics3D(**fields)
