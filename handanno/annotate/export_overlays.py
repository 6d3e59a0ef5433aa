"""Overlay pictures of the fits for a person to check (``handanno fit --overlays``).

One PNG per fitted frame, ``DIR/overlays/<frame>.png``: every camera's image in a grid, each
with the fitted mesh's projected outline (yellow), the fitted skeleton (coloured per
finger), the given 2D keypoints drawn faintly under it, and in its corner the camera's
median reprojection error (px) and mask IoU from the fit's ``quality``; a header strip
above the grid gives the frame's name, whether it was accepted and why not.

Convention:
    Images are BGR uint8; cameras, keypoints and fits as in DESIGN.md. Nothing here changes
    a fit: the numbers printed are those stored in ``fits/<frame>.json``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate.overlay import contact_sheet, draw_outline, draw_skeleton, put_label
from handanno.annotate.segment import mesh_mask
from handanno.annotate.session_io import Session, read_fit, read_keypoints_file
from handanno.data.files_io import read_image, write_image

log = logging.getLogger(__name__)

GIVEN_KEYPOINT_ALPHA = 0.55  # weight of the given keypoints' drawing over the image
MESH_OUTLINE_BGR = (0, 255, 255)
TILE_WIDTH = 320  # px, width of each view in the grid
_BATCH = 32  # frames per call of the hand model layer


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _scale_uv(uv: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Pixel coordinates ``(*, 2+)`` under a resize by ``(sx, sy)`` (pixel-centre convention; extra columns kept)."""
    out = np.array(uv, np.float64)
    out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5
    return out


def view_tile(
    image: np.ndarray,
    camera_name: str,
    mask: np.ndarray,
    joints_uv: np.ndarray,
    given_kp: np.ndarray | None,
    reproj_px: float | None,
    iou: float | None,
    tile_width: int = TILE_WIDTH,
) -> np.ndarray:
    """One camera's picture: outline, skeleton, faint given keypoints and the view's errors.

    The image is first resized to ``tile_width`` wide and everything is drawn at that size,
    so strokes and text look the same whatever the cameras' resolution.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        camera_name: printed in the corner.
        mask: ``(H, W)`` bool projected mesh silhouette.
        joints_uv: ``(21, 2)`` the fitted keypoints projected into this camera, image px.
        given_kp: ``(21, 3)`` ``[u, v, conf]`` the keypoints the fit was given (image px), or None.
        reproj_px: the view's median reprojection error, px (None: no keypoints).
        iou: the view's mask IoU (None: no mask).
        tile_width: width of the returned picture, px.

    Returns:
        ``(round(H * tile_width / W), tile_width, 3)`` BGR uint8.
    """
    H, W = image.shape[:2]
    size = (tile_width, max(1, int(round(H * tile_width / W))))
    sx, sy = size[0] / W, size[1] / H
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    if given_kp is not None:
        faint = draw_skeleton(out, _scale_uv(given_kp, sx, sy), min_conf=1e-6, thickness=1)
        out = (GIVEN_KEYPOINT_ALPHA * faint.astype(np.float32) + (1 - GIVEN_KEYPOINT_ALPHA) * out).astype(np.uint8)
    out = draw_outline(out, small_mask, MESH_OUTLINE_BGR)
    out = draw_skeleton(out, _scale_uv(joints_uv, sx, sy))
    return put_label(out, [camera_name, f"reproj {_fmt(reproj_px, '.1f')} px", f"IoU {_fmt(iou, '.2f')}"])


def _frame_lines(frame: str, quality: dict) -> list[str]:
    accepted = quality.get("accepted")
    verdict = "no quality record" if accepted is None else "accepted" if accepted else "not accepted"
    lines = [f"frame {frame}: {verdict}"]
    lines += [str(r) for r in quality.get("reasons", [])]
    return lines


def write_overlays(session: Session, layer: torch.nn.Module, progress: bool = True, folder: str = "overlays") -> int:
    """Write ``DIR/<folder>/<frame>.png`` for every frame of the session that has a fit.

    Args:
        session: the opened session.
        layer: the :class:`handanno.handmodel.mano.ManoLayer` the fits were made with.
        progress: show a progress bar.
        folder: the output folder inside the session.

    Returns:
        The number of pictures written.
    """
    frames = [f for f in session.frames if session.fit_path(f).is_file()]
    if not frames:
        log.warning("%s: no fits to draw overlays of", session.fits_dir)
        return 0
    faces = layer.faces.cpu().numpy()
    written = 0
    bar = tqdm(total=len(frames), desc="overlays", disable=not progress, leave=False, unit="frame")
    for start in range(0, len(frames), _BATCH):
        chunk = frames[start : start + _BATCH]
        recs = [read_fit(session.fit_path(f)) for f in chunk]
        params = [
            torch.as_tensor(np.stack([r[k] for r in recs]), dtype=layer.dtype, device=layer.device)
            for k in ("pose", "betas", "trans")
        ]  # (B, 48), (B, 10), (B, 3)
        with torch.no_grad():
            out = layer(*params)
        verts = out.vertices.double().cpu().numpy()  # (B, V, 3)
        joints = out.joints.double().cpu().numpy()  # (B, 21, 3)
        for b, (frame, rec) in enumerate(zip(chunk, recs, strict=True)):
            quality = rec.get("quality", {}) or {}
            reproj = quality.get("reproj_err_px", {}) or {}
            ious = quality.get("mask_iou", {}) or {}
            tiles = []
            for cam in session.rig:
                kp_path = session.keypoints_path(cam.name, frame)
                given = read_keypoints_file(kp_path) if kp_path.is_file() else None
                image_path = session.image_path(cam.name, frame)
                w, h = cam.image_size
                tiles.append(
                    view_tile(
                        read_image(image_path) if image_path is not None else np.zeros((h, w, 3), np.uint8),
                        cam.name,
                        mesh_mask(verts[b], faces, cam),
                        cam.project(joints[b]),
                        given,
                        reproj.get(cam.name),
                        ious.get(cam.name),
                    )
                )
            grid = contact_sheet(tiles, TILE_WIDTH)
            lines = _frame_lines(frame, quality)
            header = put_label(np.zeros((16 * len(lines) + 8, grid.shape[1], 3), np.uint8), lines)
            sheet = np.concatenate([header, grid], axis=0)
            write_image(session.root / folder / f"{frame}.png", sheet)
            written += 1
            bar.update(1)
    bar.close()
    return written
