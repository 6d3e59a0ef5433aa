"""The fit stage: the hand model fitted to a batch of frames, all views at once.

Two passes of :func:`handanno.annotate.fit_mano.fit_batch`: the keypoint fit (3D stage on
the triangulated keypoints, then 2D reprojection), then, when the views have masks, the
silhouette fit, whose soft silhouettes are rendered in square crops around the hand
(:func:`hand_boxes`, :func:`crop_masks`). The masks come in between from a ``segment``
callable (the segment stage, seeded by the keypoint fit's meshes), so they stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
import torch

from handanno.annotate.fit_mano import FitInputs, FitResult, FitSettings, fit_batch, initial_pose
from handanno.annotate.segment import Masks
from handanno.annotate.triangulate import Triangulated
from handanno.calibration.camera import CameraRig, CameraTensors
from handanno.handmodel.mano import ManoLayer

Segmenter = Callable[[np.ndarray], Masks]
"""``segment(vertices (B, V, 3) world metres) -> masks`` of the batch's views."""


def hand_boxes(vertices: np.ndarray, rig: CameraRig, scale: float) -> np.ndarray:
    """Square integer boxes ``(B, C, 4)`` ``(x0, y0, side, side)`` around the projected mesh, image px."""
    B = vertices.shape[0]
    out = np.zeros((B, len(rig), 4))
    for c, cam in enumerate(rig):
        uv = cam.project(vertices)  # (B, V, 2)
        lo, hi = uv.min(1), uv.max(1)
        centre = (lo + hi) / 2
        side = np.ceil(np.maximum(hi - lo, 1).max(1) * scale)
        side = np.clip(side, 8, 4 * max(cam.image_size))
        out[:, c, 0] = np.floor(centre[:, 0] - side / 2)
        out[:, c, 1] = np.floor(centre[:, 1] - side / 2)
        out[:, c, 2] = side
        out[:, c, 3] = side
    return out


def crop_masks(masks: list[list[np.ndarray | None]], boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-resample each ``(H, W)`` bool mask's box to ``(size, size)`` floats in [0, 1].

    Returns:
        ``crops (B, C, size, size)`` float32 and ``valid (B, C)`` bool.
    """
    B, C = boxes.shape[:2]
    crops = np.zeros((B, C, size, size), np.float32)
    valid = np.zeros((B, C), bool)
    for b in range(B):
        for c in range(C):
            m = masks[b][c]
            if m is None:
                continue
            x0, y0, side = (int(v) for v in boxes[b, c, :3])
            h, w = m.shape
            pad = np.zeros((side, side), np.float32)
            sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
            if sx1 > sx0 and sy1 > sy0:
                pad[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = m[sy0:sy1, sx0:sx1]
            crops[b, c] = cv2.resize(pad, (size, size), interpolation=cv2.INTER_AREA)
            valid[b, c] = True
    return crops, valid


def silhouette_renderer(faces: torch.Tensor, fit: FitSettings):
    """``render(vertices (B, V, 3), cams, boxes (B, C, 4)) -> (B, C, S, S)`` soft silhouettes in the boxes' crops."""
    from handanno.annotate.render import SilhouetteSettings, render_silhouettes

    rs = SilhouetteSettings(image_size=(fit.sil_size, fit.sil_size), sigma=fit.sil_sigma,
                            cull_back_faces=fit.sil_cull_back_faces)

    def render(vertices: torch.Tensor, cams: CameraTensors, boxes: torch.Tensor) -> torch.Tensor:
        return render_silhouettes(vertices, faces, cams.K, cams.dist, cams.R, cams.t, rs, crop_box=boxes)

    return render


def finite_frames(res: FitResult) -> np.ndarray:
    """``(B,)`` bool: frames whose fitted parameters, joints and vertices are all finite."""
    B = res.pose.shape[0]
    ok = np.isfinite(res.pose).all(1) & np.isfinite(res.trans).all(1)
    ok &= np.isfinite(res.joints.reshape(B, -1)).all(1) & np.isfinite(res.vertices.reshape(B, -1)).all(1)
    return ok & bool(np.isfinite(res.betas).all())


def fit_frames(
    layer: ManoLayer,
    rig: CameraRig,
    frame_index: np.ndarray,
    kp: np.ndarray,
    tri: Triangulated,
    betas: np.ndarray | None,
    settings: FitSettings,
    segment: Segmenter | None = None,
    min_keypoint_conf: float = 0.2,
    timings: dict[str, float] | None = None,
) -> tuple[FitResult, Masks | None]:
    """Fit one batch of frames: keypoints, then the views' masks (``segment``), then silhouettes.

    Args:
        layer: the hand model on the device to fit on.
        rig: the ``C`` cameras.
        frame_index: ``(B,)`` int, the frames' places in the session (neighbours share the
            temporal smoothness term).
        kp: ``(B, C, 21, 3)`` keypoints ``[u, v, conf]``, pixels.
        tri: the robust triangulation of ``kp`` (initialisation and the 3D stage).
        betas: ``(10,)`` the session's shape, held; None to fit it.
        settings: the fitter's settings (its iterations, weights, silhouette crop).
        segment: ``segment(vertices (B, V, 3)) -> masks`` (:data:`Masks`) from the keypoint fit's
            meshes; None fits keypoints only.
        min_keypoint_conf: keypoints under it are not fitted.
        timings: seconds per step (``fit_keypoints``, ``segment``, ``fit_silhouettes``) are added here.

    Returns:
        The fit and the masks it used (None without ``segment``).
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    device = layer.faces.device
    conf = np.where(kp[..., 2] >= min_keypoint_conf, kp[..., 2], 0.0)
    neighbour = torch.as_tensor(np.diff(np.asarray(frame_index)) == 1, device=device)
    fs = settings if betas is None else replace(settings, fit_shape=False)
    inputs = FitInputs(
        uv_px=torch.as_tensor(kp[..., :2], dtype=torch.float32, device=device),
        conf=torch.as_tensor(conf, dtype=torch.float32, device=device),
        cams=rig.tensors(device),
        joints3d=torch.as_tensor(tri.joints3d, dtype=torch.float32, device=device),
        neighbour=neighbour,
    )
    init_pose, init_trans = initial_pose(layer, tri.joints3d, betas)
    res = fit_batch(layer, inputs, replace(fs, iters_sil=0), init_pose, init_trans, betas)
    t1 = time.perf_counter()
    timings["fit_keypoints"] = timings.get("fit_keypoints", 0.0) + t1 - t0
    if segment is None:
        return res, None
    masks = segment(res.vertices)
    t2 = time.perf_counter()
    timings["segment"] = timings.get("segment", 0.0) + t2 - t1
    if all(m is None for row in masks for m in row) or fs.iters_sil <= 0:
        return res, masks
    boxes = hand_boxes(res.vertices, rig, fs.sil_box_scale)
    crops, valid = crop_masks(masks, boxes, fs.sil_size)
    inputs = replace(
        inputs,
        masks=torch.as_tensor(crops, device=device),
        mask_boxes=torch.as_tensor(boxes, dtype=torch.float32, device=device),
        mask_valid=torch.as_tensor(valid, device=device),
    )
    refine = replace(fs, iters_3d=0, iters_2d=0)
    res = fit_batch(layer, inputs, refine, res.pose, res.trans, res.betas, silhouette_renderer(layer.faces, fs))
    timings["fit_silhouettes"] = timings.get("fit_silhouettes", 0.0) + time.perf_counter() - t2
    return res, masks
