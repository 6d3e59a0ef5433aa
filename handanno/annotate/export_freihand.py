"""Export a session's fits (or a synthetic session's ground truth) as FreiHAND-layout labels.

One sample per (frame, camera) of every accepted frame: a 224x224 crop centred on the hand,
its intrinsics, keypoints and vertices in that camera's frame, the scale, the 61-number
MANO vector (global rotation in that camera) and the mask crop.

The crops are *undistorted*: each crop pixel is mapped through ``K_crop^-1``, the camera's
distortion and ``K`` back into the captured image, so ``training_K`` describes the crop as
an ideal pinhole camera exactly as FreiHAND's code assumes (a plain affine crop of a
distorted image would not be).

The labels are built in ``labels.partial/`` (resumable: an interrupted export goes on where
it stopped) and swapped in for ``labels/`` at the end, so a crash never leaves a mixed or
half-written ``labels/``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate.overlay import mesh_mask
from handanno.annotate.session_io import Session, open_session, read_fit, read_mask
from handanno.calibration.camera import Camera, distort_normalized
from handanno.data.files_io import read_image
from handanno.data.freihand import (
    crop_intrinsics,
    freihand_mano_vector,
    hand_crop_box,
    pose_to_camera_frame,
    root_uv_and_scale,
)
from handanno.data.freihand_io import FreiHANDSample, FreiHANDWriter
from handanno.errors import HandannoError
from handanno.models.hand_model_io import load_hand_model
from handanno.models.mano import ManoLayer

log = logging.getLogger(__name__)

CROP_SIZE = 224
MIN_INSIDE_FRACTION = 0.8  # a view is exported only if this share of its keypoints is in the image
_SOURCE_MARKER = ".handanno_export_source"  # in labels.partial/ only: what the partial export is made from


def undistorted_crop_maps(camera: Camera, K_crop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps from crop pixels to the distorted source image, ``(size, size)`` float32 each.

    Convention:
        Crop pixel ``(u', v')`` → normalised ``K_crop^-1 [u', v', 1]`` → distorted with the
        camera's ``dist`` → source pixel with ``K``. Pixel centres at integers everywhere.
    """
    grid = np.stack(np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64)), -1)
    pts = np.concatenate([grid.reshape(-1, 2), np.ones((size * size, 1))], axis=1)  # (S*S, 3)
    norm = pts @ np.linalg.inv(K_crop).T
    xy = distort_normalized(norm[:, :2] / norm[:, 2:], camera.dist)
    K = camera.K
    u = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]
    v = K[1, 1] * xy[:, 1] + K[1, 2]
    return u.reshape(size, size).astype(np.float32), v.reshape(size, size).astype(np.float32)


def undistorted_crop(
    image: np.ndarray, camera: Camera, K_crop: np.ndarray, size: int, nearest: bool = False
) -> np.ndarray:
    """Sample an undistorted ``(size, size)`` crop of ``image`` described by ``K_crop``.

    When the crop shrinks the image, the source is blurred first (Gaussian, sigma =
    ``(1/s - 1) / 2`` px for a shrink factor ``s``) so the crop does not alias.
    """
    mx, my = undistorted_crop_maps(camera, K_crop, size)
    s = float(K_crop[0, 0] / camera.K[0, 0])
    src = image
    if not nearest and s < 1:
        sigma = (1 / s - 1) / 2
        pad = 4 * sigma + 2
        x0, x1 = int(max(0, np.floor(mx.min()) - pad)), int(min(image.shape[1], np.ceil(mx.max()) + pad + 1))
        y0, y1 = int(max(0, np.floor(my.min()) - pad)), int(min(image.shape[0], np.ceil(my.max()) + pad + 1))
        if x1 > x0 and y1 > y0:
            src = image.copy()
            src[y0:y1, x0:x1] = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(src, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _records(session: Session, source: str) -> list[tuple[str, dict]]:
    out = []
    for f in session.frames:
        p = session.fit_path(f, source)
        if p.is_file():
            out.append((f, read_fit(p)))
    return out


def export_session(
    session: Session,
    layer: torch.nn.Module,
    source: str = "fits",
    out_dir: Path | None = None,
    only_accepted: bool = True,
    progress: bool = True,
) -> int:
    """Write ``labels/`` from ``fits/`` (or ``ground_truth/``); return the number of samples.

    Args:
        session: the opened session.
        layer: the :class:`handanno.models.mano.ManoLayer` the fits were made with.
        source: ``"fits"`` or ``"ground_truth"``.
        out_dir: where to write (default ``session/labels``).
        only_accepted: skip frames whose quality record is not accepted (ground truth is
            always accepted).
        progress: show a tqdm bar.
    """
    if source not in ("fits", "ground_truth"):
        raise HandannoError(f"export source must be fits or ground_truth, got {source!r}")
    out_dir = Path(out_dir) if out_dir is not None else session.root / "labels"
    recs = _records(session, source)
    if not recs:
        raise HandannoError(f"{session.root / source}: no records to export; run `handanno fit` first")
    if only_accepted and source == "fits":
        recs = [(f, r) for f, r in recs if r.get("quality", {}).get("accepted", False)]
    model_name = getattr(layer, "name", "unknown")
    is_mano = bool(getattr(layer, "is_mano", False))
    partial = out_dir.with_name(out_dir.name + ".partial")
    stale = _stale_partial(partial, session, source, only_accepted, recs)
    if stale:
        log.info("%s: %s; starting the export again", partial, stale)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / _SOURCE_MARKER).write_text(f"{source} only_accepted={only_accepted}")
    mask_folder = "masks_gt" if source == "ground_truth" else "masks"
    faces = layer.faces.cpu().numpy()
    dev = layer.faces.device
    n = 0
    with FreiHANDWriter(partial, model_name, is_mano=is_mano, image_size=CROP_SIZE) as writer:
        for frame, rec in tqdm(recs, desc=f"export ({source})", disable=not progress, leave=False):
            if all(writer.contains(frame, cam.name, rec["hand"]) for cam in session.rig):
                continue
            with torch.no_grad():
                pose, betas, trans = (torch.as_tensor(rec[k][None], dtype=layer.dtype, device=dev)
                                      for k in ("pose", "betas", "trans"))  # (1, 48), (1, 10), (1, 3)
                out = layer(pose, betas, trans)
            joints_w = out.joints[0].double().cpu().numpy()
            verts_w = out.vertices[0].double().cpu().numpy()
            quality = rec.get("quality", {})
            for cam in session.rig:
                if writer.contains(frame, cam.name, rec["hand"]):
                    continue
                sample = _sample(session, cam, frame, rec, joints_w, verts_w, faces, quality, mask_folder)
                if sample is not None:
                    writer.add(sample)
                    n += 1
    (partial / _SOURCE_MARKER).unlink()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    log.info("wrote %d FreiHAND samples to %s", n, out_dir)
    return _count(out_dir)


def _stale_partial(
    partial: Path, session: Session, source: str, only_accepted: bool, recs: list[tuple[str, dict]]
) -> str | None:
    """Why an existing ``labels.partial/`` must not be resumed (None: resume it, or there is none).

    A partial export is resumed only if it was made from the same source with the same
    filter and no record it would hold changed since it was started (a record newer than
    the partial's ``model.json``, e.g. a frame refitted with ``--force``).
    """
    if not partial.exists():
        return None
    marker = partial / _SOURCE_MARKER
    if not marker.is_file() or marker.read_text() != f"{source} only_accepted={only_accepted}":
        return "it was made from another source"
    started = (partial / "model.json").stat().st_mtime_ns if (partial / "model.json").is_file() else 0
    if any(session.fit_path(f, source).stat().st_mtime_ns > started for f, _ in recs):
        return "records changed since it was started"
    return None


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_labels` wrote."""

    samples: int
    out_dir: Path
    model_name: str
    is_mano: bool


def export_labels(
    session_dir: str | Path,
    source: str = "fits",
    out_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    hand: str | None = None,
    only_accepted: bool = True,
    progress: bool = True,
) -> ExportReport:
    """``handanno export``: open a session, load its hand model and :func:`export_session` it.

    Args:
        session_dir: the session folder.
        source: ``"fits"`` or ``"ground_truth"`` (a synthetic session's true parameters, so
            trainers can be tested without the fitter).
        out_dir: where to write (default ``session_dir/labels``).
        model_dir: MANO folder; None uses ``$HANDANNO_MODEL_DIR`` or the open hand model.
        hand: ``"right"`` / ``"left"``; None takes the hand of the first record.
        only_accepted: see :func:`export_session`.
        progress: show a tqdm bar.
    """
    session = open_session(session_dir)
    if source not in ("fits", "ground_truth"):
        raise HandannoError(f"export source must be fits or ground_truth, got {source!r}")
    recs = _records(session, source)
    if not recs:
        raise HandannoError(f"{session.root / source}: no records to export; run `handanno fit` first")
    hands = sorted({r["hand"] for _, r in recs})
    if hand is None:
        hand = recs[0][1]["hand"]
    if hands != [hand]:
        raise HandannoError(f"{session.root / source}: records are of the {' and '.join(hands)} hand, "
                            f"but --hand {hand} was asked for")  # fmt: skip
    layer = ManoLayer(load_hand_model(hand, model_dir))
    out = Path(out_dir) if out_dir is not None else session.root / "labels"
    n = export_session(session, layer, source=source, out_dir=out, only_accepted=only_accepted, progress=progress)
    return ExportReport(samples=n, out_dir=out, model_name=layer.name, is_mano=layer.is_mano)


def _count(out_dir: Path) -> int:
    import json

    p = out_dir / "training_xyz.json"
    return len(json.loads(p.read_text())) if p.is_file() else 0


def _sample(
    session: Session, cam: Camera, frame: str, rec: dict, joints_w: np.ndarray, verts_w: np.ndarray,
    faces: np.ndarray, quality: dict, mask_folder: str,
) -> FreiHANDSample | None:
    xyz = cam.to_camera(joints_w)
    verts = cam.to_camera(verts_w)
    if np.any(verts[:, 2] <= 0.01):
        log.debug("frame %s camera %s: hand behind or at the camera, not exported", frame, cam.name)
        return None
    uv = cam.project(joints_w)
    w, h = cam.image_size
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
    if inside.mean() < MIN_INSIDE_FRACTION:
        log.debug("frame %s camera %s: hand mostly outside the image, not exported", frame, cam.name)
        return None
    uv_pin = verts[:, :2] / verts[:, 2:] @ cam.K[:2, :2].T + cam.K[:2, 2]  # undistorted pinhole pixels
    box = hand_crop_box(uv_pin, enlarge=1.25)
    K_crop = crop_intrinsics(cam.K, box, CROP_SIZE)
    image = read_image(session.images[(cam.name, frame)])
    rgb = undistorted_crop(image, cam, K_crop, CROP_SIZE)
    mpath = session.mask_path(cam.name, frame, mask_folder)
    full_mask = read_mask(mpath, cam.image_size) if mpath.is_file() else mesh_mask(verts_w, faces, cam)
    mask = undistorted_crop(full_mask.astype(np.uint8) * 255, cam, K_crop, CROP_SIZE, nearest=True)
    uv_root, scale = root_uv_and_scale(xyz[9], K_crop)
    mano = freihand_mano_vector(pose_to_camera_frame(rec["pose"], cam.R), rec["betas"], uv_root, scale)
    return FreiHANDSample(rgb=rgb, mask=mask, K=K_crop, xyz=xyz, verts=verts, mano=mano, frame=frame,
                          camera=cam.name, hand=rec["hand"], quality=quality)
