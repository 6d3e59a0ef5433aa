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


def put_label(image: np.ndarray, lines: Sequence[str], corner: str = "tl") -> np.ndarray:
    """Write lines of text with a dark backing box in a corner of a copy of ``image``."""
    out = image.copy()
    scale = max(0.35, min(image.shape[:2]) / 600)
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
