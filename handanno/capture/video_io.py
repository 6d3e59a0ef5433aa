"""Decoding videos frame by frame with exact frame indices (OpenCV's ``VideoCapture``).

Frames are only ever read forward from the first one (``grab`` to skip, ``retrieve`` to
keep), never by seeking: seeking (``CAP_PROP_POS_FRAMES``) lands on a keyframe near the
wanted frame with some codecs and containers, so frame ``i`` here is always the ``i``-th
frame the decoder gives out (0-based). PyAV is not a dependency; OpenCV's FFmpeg backend
decodes the usual containers and codecs (mp4, avi, mkv, mov; H.264, HEVC, MPEG-4, MJPEG).

A video's container states its frame count and frame rate; neither is trusted:
:func:`scan_video` decodes the whole video once (``grab`` only, no colour conversion) to
count its frames and read every frame's timestamp, so a truncated file is caught before
anything is written and a variable frame rate is reported.

Convention:
    - Images are BGR uint8 ``(H, W, 3)``; sizes are ``(width, height)``.
    - Every error names the video file and the camera it is for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handanno.errors import HandannoError

#: A video may decode up to this many frames fewer than its container says (a container's
#: count can be an estimate, duration times frame rate) ...
COUNT_SLACK_FRAMES = 2
#: ... or this fraction of them, whichever is more; stopping earlier means a damaged file.
COUNT_SLACK_FRACTION = 0.02
#: A frame interval further than this fraction of the nominal one from it marks a variable frame rate.
VFR_TOLERANCE = 0.25


def _cv2():
    import cv2

    return cv2


def _where(path: Path, camera: str) -> str:
    return f"{path} (camera {camera!r})"


def open_video(path: str | Path, camera: str):
    """A ``cv2.VideoCapture`` of ``path``, opened with the FFmpeg backend.

    Raises:
        HandannoError: the file is missing, or OpenCV cannot open it (not a video, an
            unknown codec, or a file cut short before its index); names file and camera.
    """
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise HandannoError(f"{_where(path, camera)}: video file not found")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise HandannoError(
            f"{_where(path, camera)}: OpenCV cannot open this video (not a video file, a codec FFmpeg lacks, "
            "or a file cut short, e.g. an unfinished recording); check it plays, or re-encode it"
        )
    return cap


def interval_stats(timestamps_ms: np.ndarray, fps: float) -> dict:
    """Frame intervals of a video against its nominal rate, and whether the rate varies.

    Args:
        timestamps_ms: ``(N,)`` presentation time of every frame, milliseconds.
        fps: the container's frame rate.

    Returns:
        ``{"interval_min_ms", "interval_max_ms", "interval_median_ms", "nominal_ms",
        "variable": bool, "irregular_frames": int}``; ``variable`` when some interval is more
        than :data:`VFR_TOLERANCE` of a nominal interval away from it. Intervals are None for
        fewer than 2 frames or timestamps the decoder did not give (all 0 or NaN).

    Example:
        >>> s = interval_stats(np.array([0.0, 33.3, 66.7, 133.3]), 30.0)
        >>> s["variable"], s["irregular_frames"]
        (True, 1)
    """
    ts = np.asarray(timestamps_ms, np.float64)
    nominal = 1000.0 / fps if fps and math.isfinite(fps) and fps > 0 else None
    out: dict = {"interval_min_ms": None, "interval_max_ms": None, "interval_median_ms": None,
                 "nominal_ms": nominal, "variable": False, "irregular_frames": 0}  # fmt: skip
    if ts.size < 2 or not np.all(np.isfinite(ts)) or not np.any(ts != 0):
        return out
    d = np.diff(ts)
    out.update(interval_min_ms=float(d.min()), interval_max_ms=float(d.max()), interval_median_ms=float(np.median(d)))
    ref = nominal if nominal is not None else float(np.median(d))
    irregular = np.abs(d - ref) > VFR_TOLERANCE * ref
    out["irregular_frames"] = int(irregular.sum())
    out["variable"] = bool(irregular.any())
    return out


@dataclass(frozen=True)
class VideoScan:
    """One video, fully decoded once (:func:`scan_video`).

    Attributes:
        camera: the camera it is for.
        path: the file.
        frames: frames the decoder gave out, the truth.
        frames_reported: the container's count (may be an estimate).
        fps: the container's frame rate (0 when it states none).
        size: ``(width, height)`` of its frames.
        intervals: :func:`interval_stats` of its frame timestamps.
    """

    camera: str
    path: Path
    frames: int
    frames_reported: int
    fps: float
    size: tuple[int, int]
    intervals: dict

    def to_dict(self) -> dict:
        """The record of ``import.json``."""
        return {"path": str(self.path), "frames": self.frames, "frames_reported": self.frames_reported,
                "fps": self.fps, "size": list(self.size), "intervals": self.intervals}  # fmt: skip

    @classmethod
    def from_dict(cls, camera: str, d: dict) -> VideoScan:
        """Inverse of :meth:`to_dict`."""
        return cls(camera, Path(d["path"]), int(d["frames"]), int(d["frames_reported"]), float(d["fps"]),
                   (int(d["size"][0]), int(d["size"][1])), dict(d["intervals"]))  # fmt: skip

    @property
    def variable_rate_note(self) -> str | None:
        """A line for the report when the frame rate varies, else None."""
        s = self.intervals
        if not s.get("variable"):
            return None
        nominal = f"{s['nominal_ms']:.1f} ms at {self.fps:g} fps" if s.get("nominal_ms") else "no nominal rate"
        return (f"{self.camera} ({self.path.name}): variable frame rate, {s['irregular_frames']} of "
                f"{self.frames - 1} frame intervals off the nominal one (intervals {s['interval_min_ms']:.1f} to "
                f"{s['interval_max_ms']:.1f} ms, nominal {nominal}); frames are matched by index, not time, so "
                "check the cameras stay in step (--sync hand, or look at the images)")  # fmt: skip


def scan_video(path: str | Path, camera: str) -> VideoScan:
    """Decode ``path`` once to count its frames and read their timestamps.

    Raises:
        HandannoError: naming the file and the camera: it cannot be opened, has no frame,
            or stops more than :data:`COUNT_SLACK_FRAMES` / :data:`COUNT_SLACK_FRACTION` short of
            the frame count its container states (a truncated or damaged file; the message
            gives the time up to which it is whole, for ``--end``).
    """
    cv2 = _cv2()
    path = Path(path)
    cap = open_video(path, camera)
    try:
        reported = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        reported = int(reported) if math.isfinite(reported) and reported > 0 else 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if math.isfinite(fps) and fps > 0 else 0.0
        ok, first = cap.read()
        if not ok or first is None:
            raise HandannoError(f"{_where(path, camera)}: the video has no frame that OpenCV can decode")
        size = (int(first.shape[1]), int(first.shape[0]))
        stamps = [cap.get(cv2.CAP_PROP_POS_MSEC)]
        while cap.grab():
            stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC))
    finally:
        cap.release()
    n = len(stamps)
    if reported and reported - n > max(COUNT_SLACK_FRAMES, COUNT_SLACK_FRACTION * reported):
        whole_s = n / fps if fps else None
        until = f" (the first {whole_s:.2f} s)" if whole_s is not None else ""
        raise HandannoError(
            f"{_where(path, camera)}: the video stops after {n} frames but its container says {reported}: the file "
            f"is truncated or damaged. Replace it, or import only the frames before the damage{until} with "
            f"--end {math.floor(whole_s * 100) / 100 if whole_s else 'SECONDS'}"
        )
    return VideoScan(camera, path, n, reported, fps, size, interval_stats(np.array(stamps), fps))


class FrameReader:
    """Forward-only reader of one video: :meth:`read` ``(i)`` is the ``i``-th decoded frame (0-based).

    Frames between reads are decoded and dropped (``grab``); asking for a frame before the
    last one read is an error (the reader never seeks). Use as a context manager.

    Args:
        path: the video.
        camera: its camera, for messages.
        size: ``(width, height)`` every frame must have (from :func:`scan_video`), or None.
    """

    def __init__(self, path: str | Path, camera: str, size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.camera = camera
        self.size = size
        self._cap = open_video(self.path, camera)
        self._next = 0  # index of the frame the next grab gives

    def read(self, index: int) -> np.ndarray:
        """The frame of index ``index``, BGR uint8 ``(H, W, 3)``.

        Raises:
            HandannoError: ``index`` is behind the reader, the video ends before it, or the
                frame is not of the expected size; names file, camera and frame.
        """
        if index < self._next:
            raise HandannoError(f"{_where(self.path, self.camera)}: frame {index} was asked for after frame "
                                f"{self._next - 1}; this reader only goes forward")  # fmt: skip
        while self._next <= index:
            if not self._cap.grab():
                raise HandannoError(f"{_where(self.path, self.camera)}: the video ends before frame {index} "
                                    f"(after {self._next} frames); was the file changed since it was scanned?")
            self._next += 1
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            raise HandannoError(f"{_where(self.path, self.camera)}: frame {index} cannot be decoded")
        if image.ndim == 2:
            image = _cv2().cvtColor(image, _cv2().COLOR_GRAY2BGR)
        if self.size is not None and (image.shape[1], image.shape[0]) != tuple(self.size):
            raise HandannoError(f"{_where(self.path, self.camera)}: frame {index} is {image.shape[1]}x"
                                f"{image.shape[0]}, the video's first frame {self.size[0]}x{self.size[1]}")
        return image

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
