"""The segment stage: hand masks, written to ``masks/<cam>/<frame>.png``.

Each view without a mask is segmented once, after the keypoint fit: GrabCut
(:mod:`handanno.annotate.grabcut`) seeded by the fitted mesh's silhouette
(:func:`mesh_mask`: its outline probable hand, its eroded inside sure hand), with the
keypoints as the fallback seeds. The masks made are handed on in memory to the silhouette
fit and written once. A mask already in the session is kept: the user's always (a mask
without handanno's mark inside the PNG), an earlier run's unless ``force``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from handanno.annotate import grabcut
from handanno.annotate.session_io import Session, mask_made_by_handanno, read_mask, write_mask
from handanno.calibration.camera import Camera
from handanno.check import check_shape
from handanno.data.files_io import read_image

_SUBPIXEL = 4  # cv2 drawing with 4 fractional bits

Masks = list[list["np.ndarray | None"]]
"""Masks of a batch of frames: ``[frame][camera]`` ``(H, W)`` bool, None where a view has none."""


def mesh_mask(vertices_world: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """Hard silhouette ``(H, W)`` bool of a mesh by filling its projected triangles.

    Vertices are projected with distortion; triangle edges are straight between the
    projected vertices (the error is far below a pixel for hand-sized faces). Faces with
    a vertex behind the camera, or projected absurdly far (beyond 1e6 px), are skipped.

    Each triangle is filled on its own: ``cv2.fillPoly`` over several polygons uses the
    even-odd rule, so overlapping faces (front and back of a closed mesh) would cancel out.

    Convention:
        A pixel is filled when its centre lies inside a projected triangle or less than
        about half a pixel outside it (OpenCV's fill rule), so the mask is up to half a
        pixel wider along the outline than the exact ray-cast silhouette
        (:func:`handanno.synth.raycast.render_mask`).
    """
    check_shape(vertices_world, ("V", 3), "vertices_world")
    w, h = camera.image_size
    uv = camera.project(vertices_world)  # (V, 2)
    z = camera.to_camera(vertices_world)[:, 2]
    keep = np.all(z[faces] > 1e-3, axis=1) & np.all(np.abs(uv[faces]) < 1e6, axis=(1, 2))  # (F,)
    return fill_faces(uv, faces[keep], (w, h)) > 0


def fill_faces(uv_px: np.ndarray, faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8, 1 inside the projected triangles ``faces`` of the ``(V, 2)`` points ``uv_px``.

    Each triangle is filled on its own (``cv2.fillConvexPoly``, 4 fractional bits; see
    :func:`mesh_mask` for why not ``fillPoly``); ``size`` is ``(W, H)`` in pixels.
    """
    w, h = size
    out = np.zeros((h, w), np.uint8)
    for tri in np.round(uv_px[faces] * (1 << _SUBPIXEL)).astype(np.int32):  # (F, 3, 2)
        cv2.fillConvexPoly(out, tri, 1, cv2.LINE_8, _SUBPIXEL)
    return out


def segment_from_fit(
    session: Session,
    frames: list[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    kp: np.ndarray,
    settings: grabcut.GrabCutSettings,
    min_keypoint_conf: float = 0.2,
    force: bool = False,
    progress: bool = True,
) -> dict[tuple[str, str], np.ndarray]:
    """GrabCut the views that need a mask (:func:`needs_mask`), seeded by the fitted meshes; write each.

    Views run in a thread per core (OpenCV releases the GIL).

    Args:
        session: the session.
        frames: the batch's ``B`` frames.
        vertices: ``(B, V, 3)`` the keypoint fit's meshes, world metres.
        faces: ``(F, 3)``.
        kp: ``(B, C, 21, 3)`` the views' keypoints ``[u, v, conf]`` (the fallback seeds).
        settings: GrabCut's settings.
        min_keypoint_conf: keypoints under it are no seeds.
        force: make again the masks an earlier run of handanno made.
        progress: show a progress bar.

    Returns:
        ``{(camera, frame): (H, W) bool}``: the masks made (and written) now.
    """
    check_shape(vertices, ("B", "V", 3), "vertices")
    jobs = [(b, c) for b in range(len(frames)) for c in range(len(session.cameras))
            if (session.cameras[c], frames[b]) not in session.bad_views
            and needs_mask(session.mask_path(session.cameras[c], frames[b]), force)]  # fmt: skip

    def one(job: tuple[int, int]) -> tuple[tuple[str, str], np.ndarray] | None:
        b, c = job
        cam, frame = session.rig[c], frames[b]
        ok = kp[b, c, :, 2] >= min_keypoint_conf
        image = read_image(session.images[(cam.name, frame)])
        seeds_kp = kp[b, c] if ok.sum() >= 4 else None
        sil = mesh_mask(vertices[b], faces, cam)
        mask = grabcut.segment_hand(image, keypoints=seeds_kp, silhouette=sil, settings=settings)
        if mask is None:
            return None
        write_mask(session.mask_path(cam.name, frame), mask)
        return (cam.name, frame), mask > 0

    with ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8))) as pool:
        bar = tqdm(pool.map(one, jobs), desc="segment", total=len(jobs), disable=not progress, leave=False, unit="it")
        return dict(d for d in bar if d is not None)


def needs_mask(path: Path, force: bool) -> bool:
    """A missing mask is made; with ``force`` one handanno made is made again; the user's never."""
    return not path.is_file() or force and mask_made_by_handanno(path)


def load_masks(session: Session, frames: list[str], made: dict[tuple[str, str], np.ndarray] | None = None) -> Masks:
    """The masks of ``frames`` (:data:`Masks`): ``made`` in memory, the others read from the session."""
    made = made or {}
    out = []
    for f in frames:
        row = []
        for cam in session.rig:
            if (cam.name, f) in made:
                row.append(made[(cam.name, f)])
                continue
            p = session.mask_path(cam.name, f)
            ok = p.is_file() and (cam.name, f) not in session.bad_views
            row.append(read_mask(p, cam.image_size) if ok else None)
        out.append(row)
    return out
