"""Synthetic videos with known frame offsets, and a detector that knows their truth.

``handanno import videos --sync hand`` must recover each camera's frame offset; to measure
it, a ``handanno synth`` session's images become one video per camera, each starting at
another frame of the motion (:func:`write_shifted_videos`), and :class:`VideoOracle` answers,
for any frame decoded from those videos, the projection of that instant's true keypoints:
a perfect detector, so that sync is tested apart from detection.

Convention:
    Video frame ``j`` of camera ``c`` shows synthetic frame ``starts[c] + j``; the offset
    of ``c`` relative to a camera ``r`` is then ``starts[c] - starts[r]`` (session frame
    ``t`` = frame ``t + offset`` of ``c``'s video). Keypoints are ``(21, 3)`` ``[u, v, conf]``
    pixels, conf 1 inside the image and 0 outside.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from handanno.calibration.rig_io import read_rig


def write_shifted_videos(
    session: Path, out_dir: Path, starts: Mapping[str, int], lengths: Mapping[str, int], fps: float = 15.0
) -> list[Path]:
    """One mp4 (mp4v) per camera of a synthetic session: ``out_dir/<cam>.mp4``.

    Args:
        session: the ``handanno synth`` folder (``images/<cam>/<frame>.jpg`` with 6-digit stems).
        out_dir: where the videos go.
        starts: per camera, the synthetic frame its video's frame 0 shows.
        lengths: per camera, the number of frames of its video.
        fps: the videos' frame rate.

    Returns:
        The videos, in the order of ``starts``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = []
    for cam, first in starts.items():
        path = out_dir / f"{cam}.mp4"
        writer = None
        for j in range(lengths[cam]):
            img = cv2.imread(str(Path(session) / "images" / cam / f"{first + j:06d}.jpg"))
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, img.shape[1::-1])
            writer.write(img)
        if writer is not None:
            writer.release()
        videos.append(path)
    return videos


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class VideoOracle:
    """``oracle(image) -> (21, 3) keypoints or None`` for frames decoded from :func:`write_shifted_videos`' videos.

    Each video is decoded once (with OpenCV, as the import does) and every decoded frame is
    recognised later by its bytes.

    Args:
        session: the synthetic session (``rig.json``, ``ground_truth/``).
        videos: the videos, named ``<cam>.mp4``.
        starts: the ``starts`` they were written with.

    Attributes:
        decoded: per camera, the frames its video decoded to.
        calls: detections asked for; ``unknown``: of those, images no video holds.
    """

    def __init__(self, session: Path, videos: list[Path], starts: Mapping[str, int]):
        self.rig = read_rig(Path(session) / "rig.json")
        self.joints = {int(p.stem): np.array(json.loads(p.read_text())["joints"])
                       for p in (Path(session) / "ground_truth").glob("*.json")}  # fmt: skip
        self.table: dict[str, tuple[str, int]] = {}
        self.decoded: dict[str, int] = {}
        for path in videos:
            cam = Path(path).stem
            cap = cv2.VideoCapture(str(path))
            j = 0
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                self.table[_digest(img)] = (cam, starts[cam] + j)
                j += 1
            cap.release()
            self.decoded[cam] = j
        self.calls = 0
        self.unknown = 0

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The true keypoints of the instant and camera ``image`` shows; None outside the image or unknown."""
        self.calls += 1
        key = self.table.get(_digest(image))
        if key is None:
            self.unknown += 1
            return None
        cam, frame = key
        uv = self.rig[cam].project(self.joints[frame])  # (21, 2)
        w, h = self.rig[cam].image_size
        inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
        if not inside.any():
            return None
        return np.concatenate([uv, inside[:, None].astype(float)], axis=1)
