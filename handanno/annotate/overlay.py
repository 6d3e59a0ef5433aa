"""Pictures a person checks at a glance: skeletons, mesh outlines, contact sheets.

Convention:
    Images are ``(H, W, 3)`` BGR uint8 (OpenCV). Pixels ``(u, v)`` = (column, row); pixel
    (0, 0) is the centre of the top-left pixel. Cameras as in
    :mod:`handanno.calibration.camera`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from handanno.data.conventions import BONES

# BGR colour per finger (thumb, index, middle, ring, pinky); the wrist is white.
FINGER_COLOURS = ((60, 60, 230), (60, 200, 60), (230, 140, 40), (40, 200, 230), (200, 60, 200))
_SUBPIXEL = 4  # cv2 drawing with 4 fractional bits


def _finger_of(joint: int) -> int:
    return (joint - 1) // 4 if joint > 0 else -1


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, min_conf: float = 0.05, thickness: int = 2) -> np.ndarray:
    """Draw the 21-keypoint skeleton, coloured per finger, on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        keypoints: ``(21, 2)`` pixels or ``(21, 3)`` ``[u, v, conf]`` (joints under
            ``min_conf``, not finite or more than 1e6 px away are not drawn).
        min_conf: confidence below which a joint is left out.
        thickness: line width, pixels.
    """
    out = image.copy()
    kp = np.asarray(keypoints, np.float64)
    conf = kp[:, 2] if kp.shape[1] == 3 else np.ones(len(kp))
    # non-finite or absurdly far points (beyond OpenCV's int32 fixed-point range) are not drawn
    ok = (conf >= min_conf) & np.all(np.abs(kp[:, :2]) < 1e6, axis=1)
    s = 1 << _SUBPIXEL
    pts = np.round(np.nan_to_num(kp[:, :2]) * s).astype(np.int64)
    for a, b in BONES:
        if ok[a] and ok[b]:
            colour = FINGER_COLOURS[_finger_of(b)]
            pa, pb = tuple(int(x) for x in pts[a]), tuple(int(x) for x in pts[b])
            cv2.line(out, pa, pb, colour, thickness, cv2.LINE_AA, _SUBPIXEL)
    for j in np.nonzero(ok)[0]:
        colour = (255, 255, 255) if j == 0 else FINGER_COLOURS[_finger_of(int(j))]
        cv2.circle(out, tuple(int(x) for x in pts[j]), (thickness + 1) * s, colour, -1, cv2.LINE_AA, _SUBPIXEL)
    return out


def draw_outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 255)) -> np.ndarray:
    """Draw the outline of a bool ``(H, W)`` mask on a copy of ``image``."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1, cv2.LINE_AA)
    return out


def put_label(image: np.ndarray, lines: Sequence[str], corner: str = "tl", scale: float | None = None) -> np.ndarray:
    """Write lines of text with a dark backing box in a corner of a copy of ``image``.

    ``scale``: OpenCV font scale (None: from the image's smaller side, at least 0.35).
    """
    out = image.copy()
    scale = max(0.35, min(image.shape[:2]) / 600) if scale is None else scale
    th = max(1, int(round(scale * 1.5)))
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, th)[0] for t in lines]
    lh = int(max((s[1] for s in sizes), default=10) * 1.6)
    bw = max((s[0] for s in sizes), default=0) + 8
    bh = lh * len(lines) + 6
    x0 = 0 if corner in ("tl", "bl") else out.shape[1] - bw
    y0 = 0 if corner in ("tl", "tr") else out.shape[0] - bh
    roi = out[y0 : y0 + bh, x0 : x0 + bw]
    roi[:] = (roi * 0.35).astype(np.uint8)
    for i, t in enumerate(lines):
        org = (x0 + 4, y0 + lh * (i + 1))
        cv2.putText(out, t, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), th, cv2.LINE_AA)
    return out


def contact_sheet(tiles: Sequence[np.ndarray], tile_width: int = 320, columns: int | None = None) -> np.ndarray:
    """Lay out images in a grid, each resized to ``tile_width`` wide (aspect kept, padded)."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    n = len(tiles)
    cols = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    tile_h = max(int(round(t.shape[0] * tile_width / t.shape[1])) for t in tiles)
    sheet = np.zeros((rows * tile_h, cols * tile_width, 3), np.uint8)
    for i, t in enumerate(tiles):
        th = int(round(t.shape[0] * tile_width / t.shape[1]))
        r, c = divmod(i, cols)
        img = cv2.resize(t, (tile_width, th), interpolation=cv2.INTER_AREA)
        sheet[r * tile_h : r * tile_h + th, c * tile_width : (c + 1) * tile_width] = img
    return sheet


def hand_crop_box(
    points_uv: np.ndarray, image_size: tuple[int, int], margin: float = 0.15, min_side_px: int = 48
) -> tuple[int, int, int]:
    """A square around the hand's projection, ``(x0, y0, side)`` in pixels, kept inside the image where it fits.

    Args:
        points_uv: ``(N, 2)`` pixels of the hand (projected mesh outline, keypoints);
            non-finite rows are ignored.
        image_size: ``(width, height)``.
        margin: added on every side, as a fraction of the points' larger extent.
        min_side_px: the square is at least this wide.

    Returns:
        ``(x0, y0, side)``: the crop covers pixel columns ``x0 .. x0 + side - 1`` and rows
        ``y0 .. y0 + side - 1``. It is moved (not shrunk) to lie inside the image when
        ``side`` fits; a square larger than the image (or points wholly outside it) reaches
        past the borders, which :func:`crop_square` pads. No finite point, or none near the
        image: the whole image, centred.

    Convention:
        Pixel ``(u, v)`` = (column, row), (0, 0) the centre of the top-left pixel.

    Example:
        >>> hand_crop_box(np.array([[100.0, 50.0], [140.0, 70.0]]), (640, 480))
        (94, 34, 52)
        >>> hand_crop_box(np.array([[630.0, 470.0], [639.0, 479.0]]), (640, 480))  # moved inside
        (592, 432, 48)
    """
    W, H = image_size
    uv = np.asarray(points_uv, np.float64).reshape(-1, 2)
    uv = uv[np.all(np.isfinite(uv), axis=1)]
    uv = uv[(uv[:, 0] > -W) & (uv[:, 0] < 2 * W) & (uv[:, 1] > -H) & (uv[:, 1] < 2 * H)]  # near the image
    if not len(uv):
        side = max(W, H)
        return (W - side) // 2, (H - side) // 2, side
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    extent = float(np.max(hi - lo))
    side = int(np.ceil(max(extent * (1 + 2 * margin), min_side_px)))
    centre = (lo + hi) / 2
    x0, y0 = int(np.floor(centre[0] - (side - 1) / 2)), int(np.floor(centre[1] - (side - 1) / 2))
    if side <= W:
        x0 = min(max(x0, 0), W - side)
    if side <= H:
        y0 = min(max(y0, 0), H - side)
    return x0, y0, side


def crop_square(image: np.ndarray, box: tuple[int, int, int], fill: int = 0) -> np.ndarray:
    """``image[y0 : y0 + side, x0 : x0 + side]``, padded with ``fill`` where the box leaves the image.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``.
        box: ``(x0, y0, side)`` from :func:`hand_crop_box`.
        fill: value of the padding.

    Returns:
        ``(side, side)`` or ``(side, side, 3)``, the dtype of ``image``.

    Example:
        >>> crop_square(np.arange(12).reshape(3, 4), (2, -1, 3)).tolist()
        [[0, 0, 0], [2, 3, 0], [6, 7, 0]]
    """
    x0, y0, side = box
    H, W = image.shape[:2]
    out = np.full((side, side) + image.shape[2:], fill, image.dtype)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + side, W), min(y0 + side, H)
    if xe > xs and ye > ys:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out
