"""Per-view geometry for the review page: the crop on the hand, the fitted mesh's outline, and the crops themselves.

Convention:
    Pixels ``(u, v)`` = (column, row), pixel (0, 0) the centre of the top-left pixel (DESIGN.md).
    A crop is a square :class:`handanno.data.freihand.CropBox` ``(x0, y0, size_px)`` of the
    image drawn at ``out_px x out_px``; a point maps into it as
    :func:`handanno.data.freihand.crop_affine` says: ``u' = s (u - x0) - 0.5``,
    ``s = out_px / size_px`` (the page does the same). Everything sent to the page is in
    image pixels; the page maps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from handanno.annotate.segment import fill_faces
from handanno.calibration.camera import Camera
from handanno.check import check_shape
from handanno.data.freihand import CropBox, crop_affine, crop_image, hand_crop_box

CROP_PX = 320  # side of a view's crop on the page, px
BOX_ENLARGE = 1.3  # the crop's side over the hand's extent
MIN_BOX_PX = 48.0  # the crop never zooms in further than this many image pixels
NEAR_FIT = 0.7  # detections this many fit-crop sides from its centre widen the crop; those further do not
_FAR_PX = 1e5  # projections further out than this are not drawn


def whole_image_box(image_size: tuple[int, int]) -> CropBox:
    """The square box that holds the whole ``(W, H)`` image, centred (the longer side fills it).

    Example:
        >>> whole_image_box((640, 480))
        CropBox(x0=-0.5, y0=-80.5, size_px=640.0)
    """
    W, H = image_size
    side = float(max(W, H))
    return CropBox(-0.5 - (side - W) / 2, -0.5 - (side - H) / 2, side)


def hand_box(points_uv: np.ndarray, image_size: tuple[int, int]) -> CropBox:
    """A square crop on the hand: around ``points_uv`` (the fitted mesh, the detections), else the whole image.

    Args:
        points_uv: ``(N, 2)`` pixels; rows that are not finite or lie absurdly far out are ignored.
        image_size: ``(W, H)``.

    Returns:
        :data:`BOX_ENLARGE` times the points' extent, at least :data:`MIN_BOX_PX` and at most
        1.5 times the longer image side; :func:`whole_image_box` when no point is usable.

    Example:
        >>> hand_box(np.array([[100.0, 100.0], [200.0, 150.0]]), (640, 480))
        CropBox(x0=85.0, y0=60.0, size_px=130.0)
    """
    check_shape(points_uv, ("N", 2), "points_uv")
    ok = np.all(np.isfinite(points_uv) & (np.abs(points_uv) < _FAR_PX), axis=1)
    if not ok.any():
        return whole_image_box(image_size)
    box = hand_crop_box(points_uv[ok], enlarge=BOX_ENLARGE, min_size_px=MIN_BOX_PX)
    side_max = 1.5 * max(image_size)
    if box.size_px <= side_max:
        return box
    cx, cy = box.x0 + box.size_px / 2, box.y0 + box.size_px / 2
    return CropBox(cx - side_max / 2, cy - side_max / 2, side_max)


def mesh_outline(uv_px: np.ndarray, in_front: np.ndarray, faces: np.ndarray, box: CropBox,
                 out_px: int = CROP_PX) -> list[np.ndarray]:  # fmt: skip
    """The outline of a projected mesh as polylines, traced at the crop's resolution.

    The triangles are filled one by one (as :func:`handanno.annotate.segment.mesh_mask`) into
    an ``out_px`` square raster of ``box``; the raster's outer contours are mapped back.

    Args:
        uv_px: ``(V, 2)`` the mesh's vertices projected into the image, pixels.
        in_front: ``(V,)`` bool, vertices in front of the camera (faces with one behind are skipped).
        faces: ``(F, 3)`` vertex indices.
        box: the crop.
        out_px: the raster's side.

    Returns:
        Closed polylines ``(N, 2)`` in image pixels (the centres of the silhouette's border
        pixels of the raster), longest first; empty when no face is seen.
    """
    check_shape(uv_px, ("V", 2), "uv_px")
    check_shape(faces, ("F", 3), "faces")
    A = crop_affine(box, out_px)  # (3, 3) image px -> crop px
    uv_crop = uv_px @ A[:2, :2].T + A[:2, 2]  # (V, 2)
    keep = np.all(in_front[faces], axis=1) & np.all(np.abs(uv_crop[faces]) < _FAR_PX, axis=(1, 2))  # (F,)
    raster = fill_faces(uv_crop, faces[keep], (out_px, out_px))
    contours, _ = cv2.findContours(raster, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    A_inv = np.linalg.inv(A)
    out = [c.reshape(-1, 2).astype(np.float64) @ A_inv[:2, :2].T + A_inv[:2, 2] for c in contours if len(c) >= 3]
    return sorted(out, key=len, reverse=True)


@dataclass(frozen=True)
class ViewGeometry:
    """What the page draws over one view.

    Attributes:
        camera: the camera's name.
        box: the crop on the hand (image pixels).
        joints_uv: ``(21, 2)`` the fitted keypoints projected, pixels; None without a fit.
        outline: the fitted mesh's outline, polylines ``(N, 2)`` in pixels (empty without a fit).
    """

    camera: str
    box: CropBox
    joints_uv: np.ndarray | None
    outline: tuple[np.ndarray, ...]


def view_geometry(
    camera: Camera, vertices: np.ndarray | None, joints: np.ndarray | None, faces: np.ndarray,
    detections: np.ndarray | None, min_conf: float = 0.2, out_px: int = CROP_PX,
) -> ViewGeometry:
    """Crop box, projected skeleton and mesh outline of one view.

    The crop holds the fitted mesh and the confident detections in the image near it (within
    :data:`NEAR_FIT` crop sides of the mesh's own crop centre: a detection a little off the fit
    shows, a far outlier does not zoom the view out), or the confident detections alone without
    a fit.

    Args:
        camera: the view's camera.
        vertices: ``(V, 3)`` the fitted mesh, world metres; None without a fit.
        joints: ``(21, 3)`` the fitted keypoints, world metres; None without a fit.
        faces: ``(F, 3)``.
        detections: ``(21, 3)`` ``[u, v, conf]`` pixels; None without a keypoint file.
        min_conf: detections under this confidence do not frame the crop.
        out_px: the crop's side on the page.
    """
    W, H = camera.image_size
    points = [np.zeros((0, 2))]
    uv = in_front = joints_uv = None
    if vertices is not None and joints is not None:
        uv = camera.project(vertices)  # (V, 2)
        in_front = camera.to_camera(vertices)[:, 2] > 1e-3  # (V,)
        points.append(uv[in_front])
        joints_uv = camera.project(joints)  # (21, 2)
    if detections is not None:
        u, v, conf = detections.T  # (21,) each
        inside = (conf >= min_conf) & (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)
        if uv is not None and in_front.any():
            fit_box = hand_box(uv[in_front], (W, H))
            centre = np.array([fit_box.x0, fit_box.y0]) + fit_box.size_px / 2
            inside &= np.abs(detections[:, :2] - centre).max(axis=1) <= NEAR_FIT * fit_box.size_px
        points.append(detections[inside, :2])
    box = hand_box(np.concatenate(points), (W, H))
    outline = () if uv is None else tuple(mesh_outline(uv, in_front, faces, box, out_px))
    return ViewGeometry(camera.name, box, joints_uv, outline)


def crop_view(image: np.ndarray, box: CropBox, out_px: int = CROP_PX) -> np.ndarray:
    """The ``(out_px, out_px, 3)`` crop of a BGR image (dark grey outside the image, antialiased when shrinking)."""
    return crop_image(image, box, out_px, border_value=40.0)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of a BGR uint8 image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode this image as JPEG")
    return buf.tobytes()
