"""Videos made in the test: every frame shows its own index as 8 bit blocks, in its camera's colour."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

SIZE = (160, 120)  # (width, height) of the CI videos
_COLOURS = [(230, 90, 90), (90, 230, 90), (90, 90, 230), (230, 230, 90)]  # BGR, camera 0..3


def pattern_frame(index: int, camera: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Frame ``index`` of camera ``camera``: bits of the index as 2 x 4 blocks, on = the camera's colour."""
    w, h = size
    img = np.full((h, w, 3), 30, np.uint8)
    for b in range(8):
        r, c = divmod(b, 4)
        if (index >> b) & 1:
            img[r * h // 2:(r + 1) * h // 2, c * w // 4:(c + 1) * w // 4] = _COLOURS[camera]
    return img


def read_pattern(img: np.ndarray) -> tuple[int, int | None]:
    """``(index, camera)`` a :func:`pattern_frame` shows (camera None for index 0: no block is on)."""
    h, w = img.shape[:2]
    value, on = 0, []
    for b in range(8):
        r, c = divmod(b, 4)
        block = img[r * h // 2 + 6:(r + 1) * h // 2 - 6, c * w // 4 + 6:(c + 1) * w // 4 - 6].reshape(-1, 3).mean(0)
        if block.mean() > 90:
            value |= 1 << b
            on.append(block)
    if not on:
        return value, None
    mean = np.mean(on, axis=0)
    camera = int(np.argmin([np.abs(mean - np.array(col)).sum() for col in _COLOURS]))
    return value, camera


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Encode ``frames`` (BGR, all one size) with OpenCV."""
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), path
    for f in frames:
        vw.write(f)
    vw.release()
    return path


@pytest.fixture
def pattern_video() -> Callable[..., Path]:
    """``make(path, camera, frames, fps=10, fourcc="mp4v")``: a video of :func:`pattern_frame` 0..frames-1."""

    def make(path: Path, camera: int, frames: int, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
        return write_video(path, [pattern_frame(i, camera) for i in range(frames)], fps, fourcc)

    return make


@pytest.fixture
def read_frame_pattern() -> Callable[[Path], tuple[int, int | None]]:
    """``read(path)``: the ``(index, camera)`` an image file shows."""

    def read(path: Path) -> tuple[int, int | None]:
        img = cv2.imread(str(path))
        assert img is not None, path
        return read_pattern(img)

    return read


def rig_doc(names: list[str], size: tuple[int, int] = SIZE) -> dict:
    """A rig.json document: cameras on a line 10 cm apart, looking along +z."""
    cams = {}
    for i, n in enumerate(names):
        cams[n] = {"image_size": list(size), "K": [[150.0, 0, size[0] / 2], [0, 150.0, size[1] / 2], [0, 0, 1]],
                   "dist": [0.0] * 5, "R": np.eye(3).tolist(), "t": [-0.1 * i, 0.0, 0.0]}
    return {"units": "m", "cameras": cams}


@pytest.fixture
def make_rig() -> Callable[..., Path]:
    """``make(path, names, size=SIZE)``: write a rig.json for those cameras."""

    def make(path: Path, names: list[str], size: tuple[int, int] = SIZE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rig_doc(names, size)))
        return path

    return make
