"""Hand segmentation with OpenCV's GrabCut, seeded automatically by keypoints or by a fitted mesh.

Two seedings:

- :func:`seeds_from_keypoints`: the skeleton drawn between the keypoints is sure hand, a
  dilated convex hull of the keypoints is probable hand, the rest of an enlarged box is
  probable background and everything outside it is background.
- :func:`seeds_from_silhouette`: the fitted mesh's projected silhouette, eroded, is sure
  hand; the silhouette is probable hand; a ring around it is probable background.

GrabCut runs on a crop around the hand, downscaled so its longer side is at most
``work_size`` pixels, and the result is scaled back: the cost does not grow with the image.

Convention:
    Pixels: ``(u, v)`` = (column, row); pixel (0, 0) is the centre of the top-left pixel.
    Masks are ``(H, W)`` bool, True = hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import BONES


@dataclass(frozen=True)
class GrabCutSettings:
    """GrabCut parameters."""

    iterations: int = 4
    work_size: int = 192  # longer side of the crop GrabCut runs on, pixels
    box_margin: float = 0.35  # the crop extends this fraction of the hand's size beyond it
    bone_width: float = 0.05  # skeleton stroke width as a fraction of the hand's size
    hull_dilate: float = 0.06  # probable-hand hull dilation, fraction of the hand's size
    min_conf: float = 0.3
    ring_width: float = 0.12  # silhouette seeding: probable-background ring, fraction of size


def _crop_box(points_uv: np.ndarray, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` (exclusive end) around points, enlarged, clipped to the image."""
    w, h = image_size
    lo, hi = points_uv.min(0), points_uv.max(0)
    size = float(max(hi - lo))
    lo = lo - margin * size
    hi = hi + margin * size
    x0, y0 = int(max(0, np.floor(lo[0]))), int(max(0, np.floor(lo[1])))
    x1, y1 = int(min(w, np.ceil(hi[0]) + 1)), int(min(h, np.ceil(hi[1]) + 1))
    return x0, y0, x1, y1


def seeds_from_keypoints(
    keypoints: np.ndarray, image_size: tuple[int, int], settings: GrabCutSettings = GrabCutSettings()
) -> np.ndarray | None:
    """GrabCut label image ``(H, W)`` uint8 (``cv2.GC_*``) seeded by 2D keypoints.

    Args:
        keypoints: ``(21, 3)`` ``[u, v, conf]`` in FreiHAND order.
        image_size: ``(width, height)``.
        settings: ``min_conf`` (which keypoints count) and the seed sizes.

    Returns:
        The seed labels, or None when fewer than 4 keypoints are confident.
    """
    check_shape(keypoints, (21, 3), "keypoints")
    w, h = image_size
    ok = keypoints[:, 2] >= settings.min_conf
    if ok.sum() < 4:
        return None
    uv = keypoints[ok, :2]
    size = float(max(uv.max(0) - uv.min(0)))
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    x0, y0, x1, y1 = _crop_box(uv, image_size, settings.box_margin)
    labels[y0:y1, x0:x1] = cv2.GC_PR_BGD
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    hull_mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull_mask, hull, 1)
    k = max(1, int(round(settings.hull_dilate * size)))
    hull_mask = cv2.dilate(hull_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    labels[hull_mask > 0] = cv2.GC_PR_FGD
    width = max(1, int(round(settings.bone_width * size)))
    for a, b in BONES:
        if ok[a] and ok[b]:
            pa = tuple(int(round(x)) for x in keypoints[a, :2])
            pb = tuple(int(round(x)) for x in keypoints[b, :2])
            cv2.line(labels, pa, pb, int(cv2.GC_FGD), width)
    return labels


def seeds_from_silhouette(silhouette: np.ndarray, settings: GrabCutSettings = GrabCutSettings()) -> np.ndarray | None:
    """GrabCut label image ``(H, W)`` seeded by a projected mesh silhouette ``(H, W)`` bool."""
    sil = np.asarray(silhouette, bool)
    if sil.sum() < 16:
        return None
    ys, xs = np.nonzero(sil)
    size = float(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    h, w = sil.shape
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    ring = max(2, int(round(settings.ring_width * size)))
    kr = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    labels[cv2.dilate(sil.astype(np.uint8), kr) > 0] = cv2.GC_PR_BGD
    labels[sil] = cv2.GC_PR_FGD
    e = max(1, int(round(0.03 * size)))
    ke = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * e + 1, 2 * e + 1))
    labels[cv2.erode(sil.astype(np.uint8), ke) > 0] = cv2.GC_FGD
    return labels


def grabcut(image_bgr: np.ndarray, seeds: np.ndarray, settings: GrabCutSettings = GrabCutSettings()) -> np.ndarray:
    """Run GrabCut from seed labels on a downscaled crop; return the ``(H, W)`` bool hand mask.

    The crop is the bounding box of the non-background seeds. The result keeps the
    connected components that touch a sure-hand seed (or the largest one), with holes filled.
    Deterministic: OpenCV's RNG of the calling thread is re-seeded (to 0) before GrabCut.
    """
    h, w = seeds.shape
    check_shape(image_bgr, (h, w, 3), "image_bgr")
    ys, xs = np.nonzero(seeds != cv2.GC_BGD)
    out = np.zeros((h, w), bool)
    if len(xs) == 0:
        return out
    pad = 2
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
    crop_img = image_bgr[y0:y1, x0:x1]
    crop_seeds = seeds[y0:y1, x0:x1]
    ch, cw = crop_seeds.shape
    scale = min(1.0, settings.work_size / max(ch, cw))
    if scale < 1.0:
        size = (max(8, int(round(cw * scale))), max(8, int(round(ch * scale))))
        small_img = cv2.resize(crop_img, size, interpolation=cv2.INTER_AREA)
        small_seeds = cv2.resize(crop_seeds, size, interpolation=cv2.INTER_NEAREST)
    else:
        small_img, small_seeds = np.ascontiguousarray(crop_img), crop_seeds.copy()
    labels = small_seeds.copy()
    if not np.any((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)) or not np.any(
        (labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)
    ):
        fg_small = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    else:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut's GMM initialisation (k-means) draws from OpenCV's per-thread RNG: seed it so
        # that a view's mask does not depend on what ran before it in this thread.
        cv2.setRNGSeed(0)
        cv2.grabCut(small_img, labels, None, bgd, fgd, settings.iterations, cv2.GC_INIT_WITH_MASK)
        fg_small = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if scale < 1.0:
        fg = cv2.resize(fg_small.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_LINEAR) > 0
    else:
        fg = fg_small
    fg = _clean(fg, crop_seeds == cv2.GC_FGD)
    out[y0:y1, x0:x1] = fg
    return out


def _clean(fg: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Keep components touching sure-hand pixels (or the largest), and fill holes."""
    n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return fg
    keep = np.unique(comp[sure & fg])
    keep = keep[keep > 0]
    if len(keep) == 0:
        counts = np.bincount(comp.ravel())[1:]
        keep = np.array([1 + int(np.argmax(counts))])
    fg = np.isin(comp, keep)
    # Fill holes: background components that do not touch the crop border.
    inv = (~fg).astype(np.uint8)
    n2, comp2 = cv2.connectedComponents(inv, connectivity=4)
    border = np.unique(np.concatenate([comp2[0], comp2[-1], comp2[:, 0], comp2[:, -1]]))
    holes = ~np.isin(comp2, border) & (inv > 0)
    return fg | holes


def segment_hand(
    image_bgr: np.ndarray,
    keypoints: np.ndarray | None = None,
    silhouette: np.ndarray | None = None,
    settings: GrabCutSettings = GrabCutSettings(),
) -> np.ndarray | None:
    """Segment the hand in one view; the silhouette seeding wins when both are given.

    Returns:
        ``(H, W)`` bool mask, or None when there is nothing to seed from.
    """
    h, w = image_bgr.shape[:2]
    seeds = None
    if silhouette is not None:
        seeds = seeds_from_silhouette(silhouette, settings)
    if seeds is None and keypoints is not None:
        seeds = seeds_from_keypoints(keypoints, (w, h), settings)
    if seeds is None:
        return None
    return grabcut(image_bgr, seeds, settings)
