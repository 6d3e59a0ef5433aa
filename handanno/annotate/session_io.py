"""The session folder (DESIGN.md): discovery, validation, and reading/writing its per-stage files.

Layout::

    DIR/rig.json
    DIR/images/<cam>/<frame>.jpg|png
    DIR/keypoints2d/<cam>/<frame>.json   {"keypoints": [[u, v, conf] x 21], "source": "..."}
    DIR/masks/<cam>/<frame>.png          uint8, 0 background, 255 hand
    DIR/fits/<frame>.json
    DIR/ground_truth/<frame>.json        synthetic sessions only
    DIR/masks_gt/<cam>/<frame>.png       synthetic sessions only
    DIR/review.json                      a person's decisions (handanno review): views to leave out

Every error names the file, camera or frame and says what to do.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handanno.calibration.camera import CameraRig, natural_key
from handanno.calibration.rig_io import read_rig
from handanno.data.conventions import NUM_JOINTS
from handanno.data.files_io import atomic_write_bytes, read_image, read_json, write_json
from handanno.data.image_files import image_damage, image_size_from_header, png_source, png_with_source
from handanno.data.review_io import read_review
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# keypoint files with these sources were made by handanno's detectors: ``--force`` redoes them;
# any other source ("given", "synth", ...) is input the user brought and is never overwritten
DETECTED_KEYPOINT_SOURCES = ("cpm", "mediapipe")


@dataclass(frozen=True)
class Session:
    """A validated session folder.

    Attributes:
        root: the folder.
        rig: the cameras of ``rig.json`` that have an image folder, in natural order.
        frames: frame stems present in every camera, in natural order.
        images: ``{(camera, frame): path}``.
        skipped: human-readable notes on what was left out (cameras without images,
            frames missing in some camera, damaged or ambiguous image files).
        bad_views: ``{(camera, frame): why}`` for views of the selected frames whose image
            cannot be trusted (a truncated file, a ``.jpg`` and a ``.png`` with the same
            stem); they are not in ``images`` and every stage treats them as views without
            the hand.
        ignored_views: ``{frame: (camera, ...)}``, the views ``review.json`` tells the fit to
            leave out (:mod:`handanno.data.review_io`); they are in ``bad_views`` too.
    """

    root: Path
    rig: CameraRig
    frames: tuple[str, ...]
    images: dict[tuple[str, str], Path]
    skipped: tuple[str, ...] = ()
    bad_views: dict[tuple[str, str], str] = field(default_factory=dict)
    ignored_views: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def cameras(self) -> list[str]:
        """Camera names in rig order."""
        return self.rig.names

    def image_path(self, camera: str, frame: str) -> Path | None:
        """The view's image, or None for a view listed in ``bad_views``."""
        return self.images.get((camera, frame))

    def path(self, *parts: str) -> Path:
        """A path inside the session."""
        return self.root.joinpath(*parts)

    def keypoints_path(self, camera: str, frame: str) -> Path:
        """``keypoints2d/<cam>/<frame>.json``."""
        return self.root / "keypoints2d" / camera / f"{frame}.json"

    def mask_path(self, camera: str, frame: str, folder: str = "masks") -> Path:
        """``masks/<cam>/<frame>.png`` (or ``masks_gt``)."""
        return self.root / folder / camera / f"{frame}.png"

    def fit_path(self, frame: str, folder: str = "fits") -> Path:
        """``fits/<frame>.json`` (or ``ground_truth``)."""
        return self.root / folder / f"{frame}.json"

    @property
    def fits_dir(self) -> Path:
        """``fits/``: one record per fitted frame."""
        return self.root / "fits"

    @property
    def ground_truth_dir(self) -> Path:
        """``ground_truth/``: synthetic sessions' true records (same keys as fits/)."""
        return self.root / "ground_truth"

    @property
    def labels_dir(self) -> Path:
        """``labels/``: the FreiHAND-layout export."""
        return self.root / "labels"

    @property
    def report_path(self) -> Path:
        """``report.json``: what the last ``handanno fit`` did."""
        return self.root / "report.json"

    @property
    def overlays_dir(self) -> Path:
        """``overlays/``: pictures of the fits."""
        return self.root / "overlays"


def parse_frame_range(spec: str | None, frames: tuple[str, ...]) -> tuple[str, ...]:
    """Select frames by a Python-style slice over their order, e.g. ``"0:100"``, ``"10:"``, ``"::5"``.

    One index (``"7"``, ``"-1"``) selects one frame. An empty selection, or a step of 0,
    is an error.

    Example:
        >>> parse_frame_range("1:3", ("a", "b", "c", "d"))
        ('b', 'c')
    """
    if not spec:
        return frames
    parts = spec.split(":")
    if len(parts) > 3 or not all(re.fullmatch(r"\s*(-?\d+)?\s*", p) for p in parts):
        raise HandannoError(f"--frames {spec!r}: expected a slice such as 0:100, 10: or ::5")
    idx = [int(p) if p.strip() else None for p in parts]
    if len(idx) == 3 and idx[2] == 0:
        raise HandannoError(f"--frames {spec!r}: the step must not be 0")
    if len(idx) == 1:
        if idx[0] is None:
            return frames
        selected = frames[idx[0] : idx[0] + 1 or None]  # "-1" is the last frame
    else:
        selected = frames[slice(*idx)]
    if not selected:
        raise HandannoError(f"--frames {spec!r} selects none of the {len(frames)} frames")
    return selected


def open_session(root: str | Path, frames: str | None = None, obey_review: bool = True) -> Session:
    """Read ``rig.json`` and index the images; warn about what cannot be used.

    A rig camera with no image folder (or an empty one) is left out with a warning; a frame
    missing in some camera is left out with a warning naming the frame and the cameras;
    hidden files (names starting with ".") are ignored; fewer than two usable cameras or
    no common frame is an error. With ``obey_review``, the views ``review.json`` says to
    ignore are left out like damaged ones (``bad_views``, ``ignored_views``): no keypoints,
    no mask, no sample.
    """
    root = Path(root)
    if not root.is_dir():
        raise HandannoError(f"session folder {root} does not exist")
    rig_path = root / "rig.json"
    if not rig_path.is_file():
        raise HandannoError(f"{rig_path} not found: a session needs its rig (make one with `handanno calibrate`)")
    rig = read_rig(rig_path)
    img_root = root / "images"
    if not img_root.is_dir():
        raise HandannoError(f"{img_root} not found: put each camera's images in images/<camera>/<frame>.png")
    skipped: list[str] = []
    per_cam: dict[str, dict[str, Path]] = {}
    twins: dict[tuple[str, str], list[Path]] = {}  # (camera, stem) -> image files sharing that stem
    for cam in rig.names:
        folder = img_root / cam
        if not folder.is_dir():
            msg = f"camera {cam} is in rig.json but has no image folder {folder}; it is left out"
            log.warning(msg)
            skipped.append(msg)
            continue
        # hidden files (".000.x1y2.tmp.png" left by an interrupted atomic write, macOS "._000.jpg") are not frames
        files: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
                continue
            if p.stem in files:
                twins.setdefault((cam, p.stem), [files[p.stem]]).append(p)
            files[p.stem] = p
        if not files:
            msg = f"camera {cam}: its image folder {folder} has no images; it is left out"
            log.warning(msg)
            skipped.append(msg)
            continue
        per_cam[cam] = files
    extra = sorted({p.name for p in img_root.iterdir() if p.is_dir()} - set(rig.names), key=natural_key)
    for cam in extra:
        msg = f"images/{cam} has no camera in rig.json; it is left out"
        log.warning(msg)
        skipped.append(msg)
    if len(per_cam) < 2:
        have = ", ".join(per_cam) or "none"
        raise HandannoError(f"{root}: fewer than two cameras have images ({have}); need at least two")
    all_frames = set().union(*[set(f) for f in per_cam.values()])
    common = set.intersection(*[set(f) for f in per_cam.values()])
    for frame in sorted(all_frames - common, key=natural_key):
        missing = [c for c, f in per_cam.items() if frame not in f]
        msg = f"frame {frame} is missing in camera(s) {', '.join(missing)}; it is left out"
        log.warning(msg)
        skipped.append(msg)
    ordered = tuple(sorted(common, key=natural_key))
    if not ordered:
        raise HandannoError(f"{img_root}: no frame stem is present in every camera")
    selected = parse_frame_range(frames, ordered)
    sub_rig = rig.subset(list(per_cam))
    images = {(c, f): per_cam[c][f] for c in per_cam for f in selected}
    bad_views = _check_images(images, twins, sub_rig)
    for (cam, frame), why in bad_views.items():
        msg = f"camera {cam} frame {frame}: {why}; this view is left out"
        log.warning(msg)
        skipped.append(msg)
        del images[(cam, frame)]
    ignored: dict[str, tuple[str, ...]] = {}
    if obey_review:  # the reviewer's word (handanno review): views left out as quietly as asked
        review = read_review(root)
        for frame in selected:
            ignored[frame] = tuple(c for c in review.get(frame).ignored_views if (c, frame) in images)
            for cam in ignored[frame]:
                bad_views[(cam, frame)] = "ignored by the reviewer (review.json)"
                del images[(cam, frame)]
    return Session(root=root, rig=sub_rig, frames=selected, images=images, skipped=tuple(skipped),
                   bad_views=bad_views, ignored_views={f: v for f, v in ignored.items() if v})  # fmt: skip


def _check_images(
    images: dict[tuple[str, str], Path], twins: dict[tuple[str, str], list[Path]], rig: CameraRig
) -> dict[tuple[str, str], str]:
    """Views whose image cannot be trusted, with why; a size that differs from the rig is an error.

    Reads each file's first and last bytes only (:mod:`handanno.data.image_files`).

    Raises:
        HandannoError: an image whose size is not its camera's ``image_size`` in rig.json,
            naming the camera, the file and both sizes.
    """
    bad: dict[tuple[str, str], str] = {}
    wrong_size: dict[str, list[tuple[Path, tuple[int, int]]]] = {}
    for (cam, frame), path in images.items():
        if (cam, frame) in twins:
            names = ", ".join(p.name for p in twins[(cam, frame)])
            bad[(cam, frame)] = (f"{len(twins[(cam, frame)])} image files share the stem {frame} ({names} in "
                                 f"{path.parent}): keep one of them")  # fmt: skip
            continue
        try:
            damage = image_damage(path)
            size = image_size_from_header(path)
        except OSError as exc:
            bad[(cam, frame)] = f"{path}: cannot be read ({exc})"
            continue
        if damage:
            bad[(cam, frame)] = f"{path}: {damage}"
            continue
        want = tuple(rig[cam].image_size)
        if size is not None and size != want:
            wrong_size.setdefault(cam, []).append((path, size))
    for cam, files in wrong_size.items():
        path, size = files[0]
        want = tuple(rig[cam].image_size)
        more = f" (and {len(files) - 1} more of its images)" if len(files) > 1 else ""
        raise HandannoError(
            f"camera {cam}: {path} is {size[0]}x{size[1]} pixels{more}, but rig.json says this camera's images "
            f"are {want[0]}x{want[1]}: use the images the rig was calibrated for, or calibrate the rig again"
        )
    return bad


def read_keypoints_file(path: Path) -> np.ndarray:
    """``(21, 3)`` ``[u, v, conf]`` from a keypoint file; errors name the file."""
    d = read_json(path, made_by_handanno=False)
    kp = d.get("keypoints") if isinstance(d, dict) else None
    try:
        arr = np.asarray(kp, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"{path}: 'keypoints' must be 21 rows of [u, v, conf] numbers ({exc})") from exc
    if arr.shape != (NUM_JOINTS, 3):
        raise HandannoError(f"{path}: 'keypoints' must be 21 rows of [u, v, conf], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        rows = sorted({int(i) for i in np.nonzero(~np.isfinite(arr))[0]})
        raise HandannoError(
            f"{path}: keypoint(s) {rows} have NaN or inf values; mark a missing keypoint with conf 0 instead"
        )
    if np.any(arr[:, 2] < 0) or np.any(arr[:, 2] > 1):
        raise HandannoError(f"{path}: confidences must lie in [0, 1]")
    return arr


def write_keypoints_file(path: Path, keypoints: np.ndarray, source: str) -> None:
    """Write ``(21, 3)`` ``[u, v, conf]`` atomically."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (NUM_JOINTS, 3):
        raise HandannoError(f"{path}: refusing to write keypoints of shape {kp.shape}, need (21, 3)")
    kp = np.where(np.isfinite(kp), kp, 0.0)
    write_json(path, {"keypoints": [[round(float(v), 4) for v in row] for row in kp], "source": source})


FAR_OUTSIDE_IMAGE = 1.0  # a keypoint more than this many image sizes outside the image is no detection


def far_outside_image(uv_px: np.ndarray, image_size: tuple[int, int], margin: float = FAR_OUTSIDE_IMAGE) -> np.ndarray:
    """Which points lie absurdly far outside the image: more than ``margin`` image sizes beyond an edge.

    Args:
        uv_px: ``(..., 2)`` pixels.
        image_size: ``(W, H)``.
        margin: in image widths (for u) and heights (for v).

    Returns:
        ``(...)`` bool.

    Example:
        >>> far_outside_image(np.array([[10.0, 10.0], [-700.0, 10.0], [1e20, 0.0]]), (640, 480)).tolist()
        [False, True, True]
    """
    W, H = image_size
    u, v = uv_px[..., 0], uv_px[..., 1]
    return (u < -margin * W) | (u > (1 + margin) * W) | (v < -margin * H) | (v > (1 + margin) * H)


def read_session_keypoints(
    session: Session, frames: tuple[str, ...] | None = None, notes: list[str] | None = None
) -> np.ndarray:
    """``(B, C, 21, 3)`` keypoints of every view; views without a file have conf 0 everywhere.

    Views in ``session.bad_views`` (damaged images) get conf 0. A keypoint with confidence
    above 0 that lies far outside its image (:func:`far_outside_image`: a broken detector
    output such as ``1e20``) is set to conf 0 with a warning naming the file, so it cannot
    pull the fit of its whole batch to NaN. Each such warning is also appended to ``notes``.
    """
    frames = session.frames if frames is None else frames
    out = np.zeros((len(frames), len(session.cameras), NUM_JOINTS, 3))
    for b, f in enumerate(frames):
        for c, cam in enumerate(session.rig):
            if (cam.name, f) in session.bad_views:
                continue
            p = session.keypoints_path(cam.name, f)
            if p.is_file():
                kp = read_keypoints_file(p)
                far = far_outside_image(kp[:, :2], cam.image_size) & (kp[:, 2] > 0)
                if far.any():
                    msg = (f"{p}: keypoint(s) {np.flatnonzero(far).tolist()} lie far outside the "
                           f"{cam.image_size[0]}x{cam.image_size[1]} image; they are ignored (fix the file, or mark "
                           "a keypoint the detector did not find with conf 0)")  # fmt: skip
                    log.warning(msg)
                    if notes is not None:
                        notes.append(msg)
                    kp[far, 2] = 0.0
                out[b, c] = kp
    return out


def read_mask(path: Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W)`` bool mask (pixel > 127 is hand); errors name the file and the size mismatch."""
    m = read_image(path, grey=True)
    if image_size is not None and (m.shape[1], m.shape[0]) != tuple(image_size):
        raise HandannoError(
            f"{path}: mask is {m.shape[1]}x{m.shape[0]}, the camera's images are {image_size[0]}x{image_size[1]}"
        )
    return m > 127


# masks handanno makes say so inside the PNG (a text chunk): ``--force`` redoes only those,
# and a mask without it is one the user brought, never overwritten
MASK_SOURCE_GRABCUT = "grabcut"


def write_mask(path: Path, mask: np.ndarray, source: str | None = MASK_SOURCE_GRABCUT) -> None:
    """Write a bool ``(H, W)`` mask as uint8 0/255 PNG, atomically, marked as made by ``source``.

    ``source`` None writes a plain PNG (as a user's own mask would be).
    """
    import cv2

    ok, buf = cv2.imencode(".png", (np.asarray(mask) > 0).astype(np.uint8) * 255)
    if not ok:
        raise HandannoError(f"{path}: OpenCV could not encode this mask")
    data = buf.tobytes()
    atomic_write_bytes(path, png_with_source(data, source) if source else data)


def mask_made_by_handanno(path: Path) -> bool:
    """Whether ``masks/<cam>/<frame>.png`` was written by handanno (else: the user brought it)."""
    return png_source(path) is not None


def keypoints_made_by_handanno(path: Path) -> bool:
    """Whether a keypoint file was written by one of handanno's detectors (else: the user's, or synth's truth)."""
    d = read_json(path, made_by_handanno=False)
    return isinstance(d, dict) and d.get("source") in DETECTED_KEYPOINT_SOURCES


def readable_fit(path: Path) -> dict | None:
    """The record at ``path``, or None when there is none or it cannot be trusted (a warning says why)."""
    if not path.is_file():
        return None
    try:
        return read_fit(path)
    except HandannoError as exc:
        log.warning("%s; that frame is fitted again", exc)
        return None


def fit_record(
    hand: str, model: str, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray, joints: np.ndarray, quality: dict,
    ignored_views: tuple[str, ...] = (),
) -> dict:
    """A ``fits/<frame>.json`` record (same keys as ground_truth/).

    ``ignored_views``, the views the reviewer left out (``Session.ignored_views``), is stored
    (key ``"ignored_views"``, only when there are some) so that :func:`fit_up_to_date` sees
    when the review changed.
    """
    def r(a: np.ndarray, nd: int = 7) -> list:
        arr = np.asarray(a, np.float64)
        if not np.all(np.isfinite(arr)):
            raise HandannoError("refusing to write a fit record with NaN or inf values (the optimisation diverged)")
        return np.round(arr, nd).tolist()

    rec = {"hand": hand, "model": model, "pose": r(pose), "betas": r(betas), "trans": r(trans),
           "joints": r(joints), "quality": quality}
    if ignored_views:
        rec["ignored_views"] = sorted(ignored_views)
    return rec


def fit_up_to_date(session: Session, frame: str) -> bool:
    """Whether the frame has a readable fit made without exactly the views the reviewer ignores now.

    A fit made before a view was ignored in ``review.json`` (or before it was un-ignored) is
    out of date: ``handanno fit`` fits that frame again.
    """
    rec = readable_fit(session.fit_path(frame))
    return rec is not None and sorted(rec.get("ignored_views", [])) == sorted(session.ignored_views.get(frame, ()))


def read_fit(path: Path) -> dict:
    """Read a fit or ground-truth record, checking keys and shapes; errors name the file."""
    d = read_json(path)
    need = {"hand": None, "pose": (48,), "betas": (10,), "trans": (3,), "joints": (NUM_JOINTS, 3)}
    for key, shape in need.items():
        if not isinstance(d, dict) or key not in d:
            raise HandannoError(f"{path}: missing key {key!r}")
        if shape is not None:
            arr = np.asarray(d[key], dtype=np.float64)
            if arr.shape != shape or not np.all(np.isfinite(arr)):
                raise HandannoError(f"{path}: {key!r} must be finite with shape {shape}, got {arr.shape}")
            d[key] = arr
    if d["hand"] not in ("right", "left"):
        raise HandannoError(f"{path}: 'hand' must be 'right' or 'left', got {d['hand']!r}")
    return d


def json_float(x: float) -> float | None:
    """A float for JSON: NaN/inf become None."""
    return None if x is None or not math.isfinite(x) else round(float(x), 4)
