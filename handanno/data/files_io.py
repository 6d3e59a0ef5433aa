"""Atomic file writing and checked reading: a crash never leaves a half-written file.

Every writer goes through :func:`atomic_write`: the bytes land in a temporary file in the
same folder, which is then renamed over the target (an atomic step on POSIX).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handanno.data.image_files import image_damage
from handanno.errors import HandannoError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (parents are created).

    The temporary file keeps ``path``'s suffix so that writers choosing a format by
    extension (OpenCV) work. On any error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
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


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a missing or broken file is an error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise HandannoError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HandannoError(f"{path}: not valid JSON ({exc}); delete it to have it made again, or fix it") from exc


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
