"""Atomic file writing and checked reading: a crash never leaves a half-written file.

Every writer goes through :func:`atomic_write`: the bytes land in a temporary file in the
same folder, which is then renamed over the target (an atomic step on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handanno.data.image_files import image_damage
from handanno.errors import HandannoError, disk_error_message


def _umask_from_proc() -> int | None:
    """The process's umask from ``/proc/self/status`` (Linux 4.7+), without changing it; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    """The umask read by setting and restoring it (racy with threads that create files: import time only)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_from_proc()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = _umask_by_setting()


def _current_umask() -> int:
    """The process's umask now (Linux: read from ``/proc``; elsewhere: as it was when handanno was imported)."""
    mask = _umask_from_proc()
    return _UMASK_AT_IMPORT if mask is None else mask


def _plain_open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file's own, else 0666 minus the umask."""
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~_current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (parents are created).

    The temporary file keeps ``path``'s suffix so that writers choosing a format by
    extension (OpenCV) work. On any error the temporary file is removed and ``path`` is
    left as it was. The file gets the permissions a plain ``open(path, "w")`` would give
    it: those of the file it replaces, else ``0o666`` minus the umask (not the ``0o600`` of
    a temporary file).

    Raises:
        HandannoError: the disk is full, read-only or forbids writing there (the errors of
            :data:`~handanno.errors.DISK_ERRNOS`); the message names ``path`` and says what
            to do. Other errors of ``write`` pass through unchanged.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _plain_open_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        os.chmod(tmp_path, mode)  # after write(): a writer may have made the file anew
        os.replace(tmp_path, path)
    except BaseException as exc:
        if tmp_path is not None:
            with contextlib.suppress(OSError):  # a read-only disk may refuse this too
                tmp_path.unlink(missing_ok=True)
        message = disk_error_message(exc, path) if isinstance(exc, OSError) else None
        if message is not None:
            raise HandannoError(message) from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "detach"):  # torch tensors
        return obj.detach().cpu().numpy().tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON atomically (numpy and torch values are converted)."""
    text = json.dumps(obj, default=_to_jsonable, indent=indent, allow_nan=True)
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike, made_by_handanno: bool = True) -> Any:
    """Read JSON; a missing or broken file is an error that names it.

    Args:
        path: the file.
        made_by_handanno: whether handanno makes this file (and makes it again when it is
            deleted): a broken one's message then says to delete it or fix it. False for the
            user's own files (rig.json, keypoints they bring), whose message says to fix the file.

    Raises:
        HandannoError: the file is missing, not UTF-8 or not valid JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise HandannoError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        todo = "delete it to have it made again, or fix it" if made_by_handanno else "fix the file"
        raise HandannoError(f"{path}: not valid JSON ({exc}); {todo}") from exc


def write_image(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write an image (``(H, W)`` grey or ``(H, W, 3)`` BGR uint8) atomically, format by extension."""
    import cv2

    def _write(p: Path) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if p.suffix.lower() in (".jpg", ".jpeg") else []
        if not cv2.imwrite(str(p), image, params):
            raise HandannoError(f"{path}: OpenCV could not write this image")

    return atomic_write(path, _write)


def read_image(path: str | os.PathLike, grey: bool = False) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` BGR (or ``(H, W)`` grey) uint8; an unreadable file is an error naming it."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise HandannoError(f"{path}: image not found")
    damage = image_damage(path)  # a truncated file decodes "fine", grey below the cut
    if damage:
        raise HandannoError(f"{path}: {damage}; replace the file")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise HandannoError(f"{path}: not a readable image (corrupt or unsupported format)")
    return img


def finite_or_error(values: np.ndarray, where: str) -> np.ndarray:
    """Return ``values`` as float64, or raise naming ``where`` if any entry is NaN or inf."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise HandannoError(f"{where}: {bad} value(s) are NaN or inf")
    return arr


def is_number(x: Any) -> bool:
    """True for a finite real number."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
