"""Export a session's fits (or a synthetic session's ground truth) as FreiHAND-layout labels.

One sample per (frame, camera) of every accepted frame: a 224x224 crop centred on the hand,
its intrinsics, keypoints and vertices in that camera's frame, the scale, the 61-number
MANO vector (global rotation in that camera) and the mask crop.

The crops are *undistorted*: each crop pixel is mapped through ``K_crop^-1``, the camera's
distortion and ``K`` back into the captured image, so ``training_K`` describes the crop as
an ideal pinhole camera exactly as FreiHAND's code assumes (a plain affine crop of a
distorted image would not be).

The labels are built in a hidden ``.labels.handanno-partial/`` beside ``labels/`` (resumable: an
interrupted export goes on where it stopped) and swapped in for ``labels/`` at the end, so a
crash never leaves a mixed or half-written ``labels/``. Unchanged samples are carried over,
so exports of different frame ranges add up; a folder handanno did not make is never
replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate.segment import mesh_mask
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
from handanno.data.freihand_io import PENDING_DIR, FreiHANDLabels, FreiHANDSample, FreiHANDWriter, read_freihand
from handanno.data.lock_io import FolderLock
from handanno.data.review_io import read_review
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model

log = logging.getLogger(__name__)

CROP_SIZE = 224
MIN_INSIDE_FRACTION = 0.8  # a view is exported only if this share of its keypoints is in the image
_SOURCE_MARKER = ".handanno_export_source"  # in the partial export only: what it is made from
LABELS_MARKER = ".handanno_labels"  # in every labels folder handanno writes: it may replace that folder


Visibility = Callable[[Camera, np.ndarray, np.ndarray], np.ndarray]
"""``visibility(camera, joints_world (21, 3), vertices_world (V, 3)) -> (21,) bool``: keypoints the view sees."""


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


def _records(session: Session, source: str) -> list[tuple[str, dict, str]]:
    """``(frame, record, record_id)`` of every frame with a readable record; ``record_id`` hashes the file.

    A record that cannot be read (broken JSON, NaN) is left out with a warning naming it.
    """
    out = []
    for f in session.frames:
        p = session.fit_path(f, source)
        if not p.is_file():
            continue
        data = p.read_bytes()
        try:
            rec = read_fit(p)
        except HandannoError as exc:
            log.warning("%s; frame %s is not exported", exc, f)
            continue
        out.append((f, rec, hashlib.sha1(data).hexdigest()[:16]))
    return out


def labels_folder_entries(out_dir: Path) -> list[str]:
    """Entries of ``out_dir`` that a handanno labels folder does not hold (the user's files)."""
    known = {"training", "model.json", "index.json", LABELS_MARKER, PENDING_DIR}
    known |= {f"training_{k}.json" for k in ("K", "xyz", "verts", "scale", "mano", "vis")}
    return sorted(p.name for p in out_dir.iterdir() if p.name not in known and not p.name.startswith(".index."))


def check_labels_target(out_dir: Path, session_root: Path) -> None:
    """Refuse a labels folder whose replacement would lose anything handanno did not make.

    ``out_dir`` may be missing, empty, or a labels folder handanno wrote (its marker file, or
    ``model.json`` written by handanno) holding nothing else.

    Raises:
        HandannoError: naming the folder and what to do.
    """
    out, root = out_dir.resolve(), session_root.resolve()
    if out == root or out in root.parents:
        raise HandannoError(f"--out {out_dir}: this folder holds the session {session_root}; labels are written "
                            "into a folder of their own (default SESSION/labels)")  # fmt: skip
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise HandannoError(f"--out {out_dir}: exists and is not a folder; choose another labels folder")
    if not any(out_dir.iterdir()):
        return
    model = out_dir / "model.json"
    made_by_us = (out_dir / LABELS_MARKER).is_file()
    if not made_by_us and model.is_file():
        try:
            made_by_us = json.loads(model.read_text()).get("writer") == "handanno"
        except (OSError, ValueError, AttributeError):
            made_by_us = False
    if not made_by_us:
        raise HandannoError(f"--out {out_dir}: folder is not empty and holds no handanno labels; handanno never "
                            "replaces a folder it did not make: choose an empty or new folder")  # fmt: skip
    foreign = labels_folder_entries(out_dir)
    if foreign:
        raise HandannoError(f"{out_dir}: holds files that are not labels ({', '.join(foreign[:5])}); the labels "
                            "folder is replaced as a whole on export: move them elsewhere first")  # fmt: skip


def _read_existing(out_dir: Path) -> FreiHANDLabels | None:
    """The labels already at ``out_dir`` if they are handanno's and whole; None (with a warning) otherwise."""
    if not (out_dir / "index.json").is_file():
        return None
    try:
        labels = read_freihand(out_dir)
    except HandannoError as exc:
        log.warning("%s: the labels there are damaged (%s); they are made again from the records", out_dir, exc)
        return None
    if labels.index is None or (out_dir / PENDING_DIR).exists():
        log.warning("%s: the labels there are unfinished; they are made again from the records", out_dir)
        return None
    return labels


def labels_up_to_date(out_dir: Path, wanted: dict[str, str]) -> bool:
    """Whether ``out_dir`` holds whole labels made from exactly the records ``{frame: record_id}``.

    A cheap check (the index, the small lists and the image counts), used to skip an export
    with nothing to do; any mismatch sends the export down its full, validating path.
    """
    try:
        index = json.loads((out_dir / "index.json").read_text())
        n_k = len(json.loads((out_dir / "training_K.json").read_text()))
        n_s = len(json.loads((out_dir / "training_scale.json").read_text()))
    except (OSError, ValueError, TypeError):
        return False
    if not isinstance(index, list) or (out_dir / PENDING_DIR).exists():
        return False
    n = len(index)
    if n_k != n or n_s != n or any(not (out_dir / f"training_{k}.json").is_file() for k in ("xyz", "verts", "mano")):
        return False
    for sub in ("rgb", "mask"):
        folder = out_dir / "training" / sub
        if not folder.is_dir() or sum(1 for p in folder.iterdir() if not p.name.startswith(".")) != n:
            return False
    try:
        have = {(e["frame"], e.get("source_record")) for e in index}
        made_from = json.loads((out_dir / LABELS_MARKER).read_text()).get("records")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    # a frame whose every view was left out (hand outside the images) has no sample, so the
    # marker's record list, not the index, says which records the labels were made from
    return made_from == wanted and have <= set(wanted.items())


def _wanted(session: Session, source: str, only_accepted: bool) -> tuple[list[tuple[str, dict, str]], dict[str, str]]:
    recs = _records(session, source)
    if only_accepted and source == "fits":  # the reviewer's decision (review.json) overrules the thresholds
        review = read_review(session.root)
        recs = [(f, r, h) for f, r, h in recs if review.keeps(f, r.get("quality", {}).get("accepted", False))]
    # a view the reviewer ignores has no sample: the labels are made again when that changes
    recs = [(f, r, h + "".join(f"-{c}" for c in session.ignored_views.get(f, ()))) for f, r, h in recs]
    return recs, {f: h for f, _, h in recs}


def export_up_to_date(session: Session, source: str = "fits", out_dir: Path | None = None,
                      only_accepted: bool = True) -> bool:  # fmt: skip
    """Whether :func:`export_session` would find nothing to do (see :func:`labels_up_to_date`)."""
    out_dir = Path(out_dir) if out_dir is not None else session.labels_dir
    return labels_up_to_date(out_dir, _wanted(session, source, only_accepted)[1])


def export_session(
    session: Session,
    layer: torch.nn.Module,
    source: str = "fits",
    out_dir: Path | None = None,
    only_accepted: bool = True,
    progress: bool = True,
    visibility: Visibility | None = None,
) -> int:
    """Bring ``labels/`` up to date with ``fits/`` (or ``ground_truth/``); return the number of samples.

    The labels hold one sample per view of every frame of ``session`` whose record is
    accepted. Samples of records that did not change since the last export are carried over
    (their images hard-linked); samples of new or changed records are made; samples of
    frames whose record is gone or no longer accepted are dropped. So exports after fits
    of different frame ranges add up.

    The new labels are built in a hidden folder beside ``out_dir`` (resumable: an
    interrupted export goes on where it stopped) and swapped in for ``out_dir`` in one step
    at the end: a crash never leaves a mixed or half-written labels folder. A folder that is
    not empty and not handanno's labels is never replaced (:func:`check_labels_target`).

    Args:
        session: the opened session (all its frames are exported).
        layer: the :class:`handanno.handmodel.mano.ManoLayer` the fits were made with.
        source: ``"fits"`` or ``"ground_truth"``.
        out_dir: where to write (default ``session/labels``).
        only_accepted: skip frames whose quality record is not accepted (ground truth is
            always accepted); a reviewer's decision in ``review.json`` overrules the record's
            (:meth:`handanno.data.review_io.Review.keeps`), and views the reviewer ignores
            have no sample (they are ``session.bad_views``).
        progress: show a tqdm bar.
        visibility: ``visibility(camera, joints_world (21, 3), vertices_world (V, 3)) -> (21,) bool``:
            which keypoints each sample's view sees; stored per sample (index.json ``"visible"``)
            so that trainers leave the others out. None stores nothing.
    """
    if source not in ("fits", "ground_truth"):
        raise HandannoError(f"export source must be fits or ground_truth, got {source!r}")
    out_dir = Path(out_dir) if out_dir is not None else session.labels_dir
    check_labels_target(out_dir, session.root)
    if not any(session.fit_path(f, source).is_file() for f in session.frames):
        raise HandannoError(f"{session.root / source}: no records to export; run `handanno fit` first")
    recs, wanted = _wanted(session, source, only_accepted)
    if labels_up_to_date(out_dir, wanted):
        log.info("%s: already up to date with %s", out_dir, source)
        return _count(out_dir)
    model_name = getattr(layer, "name", "unknown")
    is_mano = bool(getattr(layer, "is_mano", False))
    old = _read_existing(out_dir)
    if old is not None and (old.model or {}).get("name") != model_name:
        log.info("%s: made with model %s, not %s; made again", out_dir, (old.model or {}).get("name"), model_name)
        old = None
    keep = [i for i, e in enumerate(old.index) if wanted.get(e["frame"]) == e.get("source_record")] if old else []
    kept_frames = {old.index[i]["frame"] for i in keep} if old else set()
    partial = out_dir.with_name(f".{out_dir.name}.handanno-partial")
    marker = f"{source} only_accepted={only_accepted}" + (" visibility" if visibility is not None else "")
    stale = _stale_partial(partial, marker, wanted)
    if stale:
        log.info("%s: %s; starting the export again", partial, stale)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / _SOURCE_MARKER).write_text(marker)
    mask_folder = "masks_gt" if source == "ground_truth" else "masks"
    faces = layer.faces.cpu().numpy()
    dev = layer.faces.device
    with FreiHANDWriter(partial, model_name, is_mano=is_mano, image_size=CROP_SIZE) as writer:
        for i in keep:
            e = old.index[i]
            if not writer.contains(e["frame"], e["camera"], e.get("hand", "right")):
                writer.adopt(old, i)
        todo = [(f, r, h) for f, r, h in recs if f not in kept_frames]
        for frame, rec, rid in tqdm(todo, desc=f"export ({source})", disable=not progress, leave=False):
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
                    vis = None if visibility is None else visibility(cam, joints_w, verts_w)
                    writer.add(dataclasses.replace(sample, source_record=rid, visible=vis))
    (partial / _SOURCE_MARKER).unlink()
    made_from = {"source": source, "session": str(session.root), "records": wanted}
    (partial / LABELS_MARKER).write_text(json.dumps(made_from))
    replace_folder(partial, out_dir)
    n = _count(out_dir)
    log.info("wrote %d FreiHAND samples to %s (%d carried over)", n, out_dir, len(keep))
    return n


def replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, in one atomic step where the system allows it.

    Linux swaps the two folders with ``renameat2(RENAME_EXCHANGE)`` and then removes the old
    one; elsewhere the old folder is first renamed aside. Only call this on a ``target``
    that :func:`check_labels_target` accepted.
    """
    if not target.exists():
        os.replace(new, target)
        return
    if not _exchange(new, target):
        aside = target.with_name(f".{target.name}.handanno-old")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(target, aside)
        os.replace(new, target)
        new = aside
    shutil.rmtree(new)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return rc == 0


def _stale_partial(partial: Path, marker: str, wanted: dict[str, str]) -> str | None:
    """Why an existing partial export must not be resumed (None: resume it, or there is none).

    A partial export is resumed only if it was made from the same source with the same
    filter, and every sample it holds comes from a record that is still wanted unchanged.

    Raises:
        HandannoError: the folder is not a partial export of handanno's (no marker): it is
            not touched.
    """
    if not partial.exists():
        return None
    mark = partial / _SOURCE_MARKER
    if not mark.is_file():
        raise HandannoError(f"{partial}: in the way of the export and not made by it; move it elsewhere")
    if mark.read_text() != marker:
        return "it was made from another source"
    entries = []
    if (partial / "index.json").is_file():
        try:
            entries = json.loads((partial / "index.json").read_text())
        except ValueError:
            return "its index is damaged"
    for p in sorted((partial / PENDING_DIR).glob("*.json")) if (partial / PENDING_DIR).is_dir() else []:
        try:
            entries.append(json.loads(p.read_text())["index"])
        except (ValueError, KeyError):
            return f"its record {p.name} is damaged"
    if any(wanted.get(e.get("frame")) != e.get("source_record") for e in entries):
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
    hands = sorted({r["hand"] for _, r, _ in recs})
    if hand is None:
        hand = recs[0][1]["hand"]
    if hands != [hand]:
        raise HandannoError(f"{session.root / source}: records are of the {' and '.join(hands)} hand, "
                            f"but --hand {hand} was asked for")  # fmt: skip
    layer = ManoLayer(load_hand_model(hand, model_dir))
    out = Path(out_dir) if out_dir is not None else session.labels_dir
    check_labels_target(out, session.root)
    with FolderLock(session.root, f"handanno export --session {session.root}"):
        n = export_session(session, layer, source=source, out_dir=out, only_accepted=only_accepted,
                           progress=progress)  # fmt: skip
    return ExportReport(samples=n, out_dir=out, model_name=layer.name, is_mano=layer.is_mano)


def _count(out_dir: Path) -> int:
    p = out_dir / "index.json"
    return len(json.loads(p.read_text())) if p.is_file() else 0


def _sample(
    session: Session, cam: Camera, frame: str, rec: dict, joints_w: np.ndarray, verts_w: np.ndarray,
    faces: np.ndarray, quality: dict, mask_folder: str,
) -> FreiHANDSample | None:
    image_path = session.image_path(cam.name, frame)
    if image_path is None:  # a damaged image (Session.bad_views): no sample
        return None
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
    image = read_image(image_path)
    rgb = undistorted_crop(image, cam, K_crop, CROP_SIZE)
    mpath = session.mask_path(cam.name, frame, mask_folder)
    full_mask = read_mask(mpath, cam.image_size) if mpath.is_file() else mesh_mask(verts_w, faces, cam)
    mask = undistorted_crop(full_mask.astype(np.uint8) * 255, cam, K_crop, CROP_SIZE, nearest=True)
    uv_root, scale = root_uv_and_scale(xyz[9], K_crop)
    mano = freihand_mano_vector(pose_to_camera_frame(rec["pose"], cam.R), rec["betas"], uv_root, scale)
    return FreiHANDSample(rgb=rgb, mask=mask, K=K_crop, xyz=xyz, verts=verts, mano=mano, frame=frame,
                          camera=cam.name, hand=rec["hand"], quality=quality)
