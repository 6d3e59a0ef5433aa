"""File writing for ``handanno synth``: the output folder check and a threaded, atomic writer.

Images are encoded with OpenCV (PNG at compression level 1: about 5x faster than the
default 3 for a few percent more bytes; JPEG at quality 95) and written atomically through
:mod:`handanno.data.files_io`, by a small thread pool (encoding releases the GIL, so it
overlaps with rendering).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from handanno.data.files_io import atomic_write_bytes, write_json
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

# What synth writes into a session folder (removed by --force when synth.json marks it as synthetic).
SYNTH_OUTPUTS = ("rig.json", "images", "masks_gt", "keypoints2d", "ground_truth", "calib", "preview.png", "synth.json")
PNG_COMPRESSION = 1
JPEG_QUALITY = 95
_MAX_PENDING = 48


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Raise unless ``out_dir`` can take a new synthetic session (see :func:`prepare_out_dir`); touches nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HandannoError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not force:
        raise HandannoError(f"{out_dir}: folder is not empty; choose an empty folder, or pass --force to replace "
                            "an earlier synth session there")
    if not (out_dir / "synth.json").is_file():
        raise HandannoError(f"{out_dir}: folder is not empty and was not made by synth (no synth.json); "
                            "--force only replaces synth sessions, choose an empty folder")


def prepare_out_dir(out_dir: Path, force: bool, record: dict) -> None:
    """Make ``out_dir`` ready for a new synthetic session and mark it as one.

    An empty or missing folder is fine. A non-empty one is refused, unless ``force`` is set
    *and* it holds ``synth.json`` (an earlier synth session, finished or interrupted): then
    the files that session wrote (:func:`synth_files`, from its ``synth.json``) are removed
    first, so no stale frames stay behind; anything else in the folder (a camera folder or
    keypoints the user added, fits, labels) is kept, with a warning. ``record`` is written to
    ``synth.json`` straight away (with ``"complete": false``), so an interrupted run can be
    replaced with ``--force``; :func:`write_session_record` rewrites it at the end.

    Raises:
        HandannoError: the folder is not empty (and not a synth session with ``force``).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        from handanno.data.files_io import read_json

        old = read_json(out_dir / "synth.json")
        theirs = set(synth_files(out_dir, old))
        clash = [p for p in synth_files(out_dir, record, all_keypoints=True) if p.exists() and p not in theirs]
        if clash:
            names = ", ".join(str(p.relative_to(out_dir)) for p in clash[:3])
            raise HandannoError(f"{out_dir}: the new synth session would overwrite {len(clash)} file(s) the old one "
                                f"did not make ({names}{', ...' if len(clash) > 3 else ''}); move them elsewhere "
                                "or choose an empty folder")  # fmt: skip
        removed = 0
        for p in synth_files(out_dir, old):
            if p.is_file():
                p.unlink()
                removed += 1
        for name in SYNTH_OUTPUTS:  # folders left empty go; folders with other files stay
            top = out_dir / name
            if top.is_dir():
                for d in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [top]:
                    if not any(d.iterdir()):
                        d.rmdir()
        log.info("%s: removed the earlier synth session's %d files (--force)", out_dir, removed)
        others = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
        if others:
            log.warning("%s: kept %d file(s) synth did not make (%s%s); they may belong to the old session",
                        out_dir, len(others), ", ".join(others[:3]), ", ..." if len(others) > 3 else "")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    write_session_record(out_dir, record)


def synth_files(out_dir: Path, record: dict, all_keypoints: bool = False) -> list[Path]:
    """The files a synth run with this ``synth.json`` record writes into ``out_dir``.

    Only these are removed by ``synth --force``: keypoint files are included only while
    they still say ``"source": "synth"`` (one the user replaced is theirs), unless
    ``all_keypoints``.
    """
    try:
        cams = list(record["camera_roles"])
        st = record["settings"]
        n_frames, n_calib, ext = int(st["num_frames"]), int(st["calib_views"]), str(st["image_format"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HandannoError(f"{out_dir / 'synth.json'}: not a synth record ({exc!r}); remove the old session's "
                            "files by hand, or choose an empty folder") from None  # fmt: skip
    out = [out_dir / n for n in ("rig.json", "preview.png", "synth.json", "calib/board_poses.json")]
    for f in range(n_frames):
        stem = f"{f:06d}"
        out.append(out_dir / "ground_truth" / f"{stem}.json")
        for cam in cams:
            out += [out_dir / "images" / cam / f"{stem}.{ext}", out_dir / "masks_gt" / cam / f"{stem}.png"]
            kp = out_dir / "keypoints2d" / cam / f"{stem}.json"
            if all_keypoints or kp.is_file() and _is_synth_keypoints(kp):
                out.append(kp)
    for v in range(n_calib):
        out += [out_dir / "calib" / cam / f"{v:06d}.{ext}" for cam in cams]
    return out


def _is_synth_keypoints(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text()).get("source") == "synth"
    except (OSError, ValueError, AttributeError):
        return False


def write_session_record(out_dir: Path, record: dict) -> None:
    """Write ``synth.json`` (the settings, camera roles, model, and whether the session is complete)."""
    write_json(Path(out_dir) / "synth.json", record, indent=2)


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode ``(H, W)`` or ``(H, W, 3)`` BGR uint8 as PNG (level 1) or JPEG (quality 95) bytes."""
    suffix = suffix.lower()
    if suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    elif suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    else:
        raise HandannoError(f"unsupported image suffix {suffix!r}")
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise HandannoError(f"OpenCV could not encode a {image.shape} image as {suffix}")
    return buf.tobytes()


class SessionWriter:
    """Writes a session's files in background threads, atomically, relative to a root folder.

    Use as a context manager: leaving it waits for every pending file and re-raises the
    first error. ``cpu_seconds`` sums the time the threads spent encoding and writing.
    """

    def __init__(self, root: Path, workers: int = 3) -> None:
        self.root = Path(root)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="synth-write")
        self._pending: deque[Future] = deque()
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0
        self.num_files = 0

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                while self._pending:
                    self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def _submit(self, fn, *args) -> None:
        while len(self._pending) >= _MAX_PENDING:  # bound the memory held by queued images
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._timed, fn, *args))

    def _timed(self, fn, *args) -> None:
        t0 = time.perf_counter()
        fn(*args)
        with self._lock:
            self.cpu_seconds += time.perf_counter() - t0
            self.num_files += 1

    def image(self, rel_path: str, image: np.ndarray) -> None:
        """Queue an image (format from the suffix). The array must not be modified afterwards."""
        path = self.root / rel_path
        self._submit(lambda: atomic_write_bytes(path, encode_image(image, path.suffix)))

    def json(self, rel_path: str, obj, indent: int | None = None) -> None:
        """Queue a JSON file."""
        path = self.root / rel_path
        self._submit(lambda: write_json(path, obj, indent=indent))

    def write_rig(self, rig) -> None:
        """Queue ``rig.json`` (through ``handanno.calibration.rig_io.write_rig``)."""
        from handanno.calibration.rig_io import write_rig

        path = self.root / "rig.json"
        self._submit(lambda: write_rig(rig, path))
