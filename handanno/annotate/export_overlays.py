"""Overlay pictures of the fits for a person to check (``handanno fit --overlays``).

One PNG per fitted frame, ``DIR/overlays/<frame>.png``: every camera's view in a grid, each
zoomed onto the hand (a square crop around the fitted mesh's projection and keypoints, with a
margin, kept inside the image where it fits and padded black where it cannot), with the
fitted mesh's projected outline (yellow), the fitted skeleton (coloured per finger), the
given 2D keypoints drawn faintly under it, and in its corner the camera's median
reprojection error (px) and mask IoU from the fit's ``quality``; a header strip above the
grid gives the frame's name, whether it was accepted and why not. The same pictures make
the frames of ``overlays.mp4`` (:mod:`handanno.annotate.overlay_video`).

Convention:
    Images are BGR uint8; cameras, keypoints and fits as in DESIGN.md. Nothing here changes
    a fit: the numbers printed are those stored in ``fits/<frame>.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate.overlay import contact_sheet, crop_square, draw_outline, draw_skeleton, hand_crop_box, put_label
from handanno.annotate.segment import mesh_mask
from handanno.annotate.session_io import Session, read_fit, read_keypoints_file
from handanno.data.files_io import read_image, write_image

log = logging.getLogger(__name__)

GIVEN_KEYPOINT_ALPHA = 0.55  # weight of the given keypoints' drawing over the image
MESH_OUTLINE_BGR = (0, 255, 255)
TILE_WIDTH = 320  # px, width of each view in the grid
HEADER_LINE_PX = 22  # px per line of the header strip above the grid
ZOOM_MARGIN = 0.2  # zoomed views: margin around the hand, fraction of its larger extent
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
    zoom: bool = True,
) -> np.ndarray:
    """One camera's picture: outline, skeleton, faint given keypoints and the view's errors.

    With ``zoom``, the image is first cropped to a square around the hand
    (:func:`~handanno.annotate.overlay.hand_crop_box` of the mesh silhouette's outline and the
    fitted keypoints, margin :data:`ZOOM_MARGIN`; padded black past the image borders); then
    it is resized to ``tile_width`` wide and everything is drawn at that size, in the crop's
    coordinates, so strokes and text look the same whatever the cameras' resolution.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        camera_name: printed in the corner.
        mask: ``(H, W)`` bool projected mesh silhouette.
        joints_uv: ``(21, 2)`` the fitted keypoints projected into this camera, image px.
        given_kp: ``(21, 3)`` ``[u, v, conf]`` the keypoints the fit was given (image px), or None.
        reproj_px: the view's median reprojection error, px (None: no keypoints).
        iou: the view's mask IoU (None: no mask).
        tile_width: width of the returned picture, px.
        zoom: crop to the hand (else the whole image).

    Returns:
        ``(tile_width, tile_width, 3)`` with ``zoom``, else ``(round(H * tile_width / W),
        tile_width, 3)``; BGR uint8.
    """
    H, W = image.shape[:2]
    x0, y0 = 0, 0
    if zoom:
        ys, xs = np.nonzero(mask)
        hand = np.concatenate([np.column_stack([xs, ys]).astype(np.float64), np.asarray(joints_uv, np.float64)[:, :2]])
        x0, y0, side = hand_crop_box(hand, (W, H), ZOOM_MARGIN)
        image, mask = crop_square(image, (x0, y0, side)), crop_square(mask, (x0, y0, side))
        H, W = side, side
    size = (tile_width, max(1, int(round(H * tile_width / W))))
    sx, sy = size[0] / W, size[1] / H

    def to_tile(uv: np.ndarray) -> np.ndarray:  # image px (*, 2+) -> tile px, extra columns kept
        shifted = np.array(uv, np.float64)
        shifted[..., 0] -= x0
        shifted[..., 1] -= y0
        return _scale_uv(shifted, sx, sy)

    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if sx <= 1 else cv2.INTER_LINEAR)
    small_mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA if sx <= 1 else
                            cv2.INTER_LINEAR) >= 0.5  # fmt: skip
    if given_kp is not None:
        faint = draw_skeleton(out, to_tile(given_kp), min_conf=1e-6, thickness=1)
        out = (GIVEN_KEYPOINT_ALPHA * faint.astype(np.float32) + (1 - GIVEN_KEYPOINT_ALPHA) * out).astype(np.uint8)
    out = draw_outline(out, small_mask, MESH_OUTLINE_BGR)
    out = draw_skeleton(out, to_tile(joints_uv))
    return put_label(out, [camera_name, f"reproj {_fmt(reproj_px, '.1f')} px", f"IoU {_fmt(iou, '.2f')}"])


def _frame_lines(frame: str, quality: dict) -> list[str]:
    accepted = quality.get("accepted")
    verdict = "no quality record" if accepted is None else "accepted" if accepted else "not accepted"
    lines = [f"frame {frame}: {verdict}"]
    lines += [str(r) for r in quality.get("reasons", [])]
    return lines


def _header(lines: Sequence[str], width: int, num_lines: int | None) -> np.ndarray:
    """The strip above the grid: ``lines`` (cut or padded to ``num_lines``), :data:`HEADER_LINE_PX` each + 8 px."""
    if num_lines is not None:
        lines = list(lines[:num_lines])
        lines += [""] * (num_lines - len(lines))
    return put_label(np.zeros((HEADER_LINE_PX * len(lines) + 8, width, 3), np.uint8), lines, scale=0.55)


def overlay_sheets(
    session: Session,
    layer: torch.nn.Module,
    frames: Sequence[str],
    zoom: bool = True,
    header_lines: int | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(frame, picture)`` for each of ``frames`` (each must have a fit), in order: header strip over the views' grid.

    Args:
        session: the opened session.
        layer: the hand model layer the fits were made with.
        frames: frames with a ``fits/<frame>.json``.
        zoom: zoom every view onto the hand (:func:`view_tile`).
        header_lines: the header's number of text lines (frame, verdict, reasons), cut or
            padded, so that every picture has the same size (a video's frames); None: as many
            as there are.

    Yields:
        ``(frame, (h, w, 3) BGR uint8)``.
    """
    faces = layer.faces.cpu().numpy()
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
                        zoom=zoom,
                    )
                )
            grid = contact_sheet(tiles, TILE_WIDTH)
            yield frame, np.concatenate([_header(_frame_lines(frame, quality), grid.shape[1], header_lines), grid])


def fitted_frames(session: Session) -> list[str]:
    """The session's frames that have a fit, in the session's order."""
    return [f for f in session.frames if session.fit_path(f).is_file()]


def write_overlays(
    session: Session, layer: torch.nn.Module, progress: bool = True, folder: str = "overlays", zoom: bool = True
) -> int:
    """Write ``DIR/<folder>/<frame>.png`` for every frame of the session that has a fit.

    Args:
        session: the opened session.
        layer: the :class:`handanno.handmodel.mano.ManoLayer` the fits were made with.
        progress: show a progress bar.
        folder: the output folder inside the session.
        zoom: zoom every view onto the hand (:func:`view_tile`).

    Returns:
        The number of pictures written.
    """
    frames = fitted_frames(session)
    if not frames:
        log.warning("%s: no fits to draw overlays of", session.fits_dir)
        return 0
    written = 0
    bar = tqdm(total=len(frames), desc="overlays", disable=not progress, leave=False, unit="frame")
    for frame, sheet in overlay_sheets(session, layer, frames, zoom=zoom):
        write_image(session.root / folder / f"{frame}.png", sheet)
        written += 1
        bar.update(1)
    bar.close()
    return written
