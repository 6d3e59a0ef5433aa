"""The session's common timeline over several cameras' videos (pure; no decoding).

Session frame ``t`` (its file stem, ``%06d``) shows, in camera ``c``, that video's frame

    ``source(c, t) = round(t * fps_c / rate) + offset_c``

where ``rate`` is the timeline's frame rate, the lowest of the cameras' (all of them when
the cameras share one, the usual case: then ``source(c, t) = t + offset_c``), and
``offset_c`` the camera's integer frame offset (``--offsets cam=k``, or from ``--sync
hand``; the first camera's is 0 unless given). A camera faster than the timeline gives the
frame nearest in time, so some of its frames are dropped.

The session keeps the frames ``t >= 0`` that every camera has (``0 <= source(c, t) <
frames_c``), within ``[start, end)`` seconds of the timeline (``t / rate``), every
``every``-th from the first one kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from handanno.errors import HandannoError

#: Two frame rates closer than this (relative) are the same rate.
SAME_RATE_REL = 1e-6


def parse_offsets(text: str | None) -> dict[str, int]:
    """Parse ``"cam1=-7,cam2=12"`` into ``{"cam1": -7, "cam2": 12}``.

    Example:
        >>> parse_offsets("cam1=-7, cam2=+12")
        {'cam1': -7, 'cam2': 12}
    """
    out: dict[str, int] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(.+?)\s*=\s*([+-]?\d+)", item)
        if not m:
            raise HandannoError(f"--offsets takes CAMERA=FRAMES pairs separated by commas, e.g. cam1=-7,cam2=12; "
                                f"got {item!r}")  # fmt: skip
        name = m.group(1).strip()
        if name in out:
            raise HandannoError(f"--offsets gives camera {name!r} twice")
        out[name] = int(m.group(2))
    return out


@dataclass(frozen=True)
class Timeline:
    """Cameras' videos on one timeline (module docstring).

    Attributes:
        cameras: camera names, the first is the reference.
        frames: frames of each camera's video (decoded count).
        fps: each video's frame rate (0: unknown, taken as ``rate``).
        offsets: each camera's frame offset.
    """

    cameras: tuple[str, ...]
    frames: tuple[int, ...]
    fps: tuple[float, ...]
    offsets: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.cameras)
        if not (len(self.frames) == len(self.fps) == len(self.offsets) == n) or n == 0:
            raise HandannoError("a timeline needs one frame count, frame rate and offset per camera")

    @classmethod
    def make(cls, cameras: Sequence[str], frames: Sequence[int], fps: Sequence[float],
             offsets: Mapping[str, int] | None = None) -> Timeline:
        """Build from per-camera lists and an ``{camera: offset}`` mapping (missing: 0)."""
        offsets = dict(offsets or {})
        unknown = sorted(set(offsets) - set(cameras))
        if unknown:
            raise HandannoError(f"offsets name camera(s) {', '.join(unknown)} that are not imported "
                                f"(cameras: {', '.join(cameras)})")  # fmt: skip
        return cls(tuple(cameras), tuple(int(f) for f in frames), tuple(float(r) for r in fps),
                   tuple(int(offsets.get(c, 0)) for c in cameras))  # fmt: skip

    @property
    def rate(self) -> float:
        """The timeline's frame rate: the lowest known rate (0 when no video states one)."""
        known = [r for r in self.fps if r > 0]
        return min(known) if known else 0.0

    def ratio(self, i: int) -> float:
        """Camera ``i``'s frames per timeline frame (1 for a camera at the timeline's rate or of unknown rate)."""
        r, rate = self.fps[i], self.rate
        if r <= 0 or rate <= 0 or abs(r / rate - 1.0) < SAME_RATE_REL:
            return 1.0
        return r / rate

    def source(self, i: int, t: np.ndarray | int) -> np.ndarray:
        """Camera ``i``'s video frame(s) at timeline frame(s) ``t`` (int64)."""
        t = np.asarray(t, np.int64)
        r = self.ratio(i)
        base = t if r == 1.0 else np.floor(t * r + 0.5).astype(np.int64)
        return base + self.offsets[i]

    def common_range(self) -> tuple[int, int]:
        """``[lo, hi)``: the timeline frames ``t >= 0`` every camera has (``lo >= hi``: none)."""
        lo, hi = 0, None
        for i, n in enumerate(self.frames):
            r, k = self.ratio(i), self.offsets[i]
            a = max(0, math.ceil((-k - 0.5) / r)) if r != 1.0 else max(0, -k)
            b = math.ceil((n - k - 0.5) / r) if r != 1.0 else n - k
            # float rounding: settle a, b on the integer source() itself
            while a > 0 and self.source(i, a - 1) >= 0:
                a -= 1
            while self.source(i, a) < 0:
                a += 1
            while b > a and self.source(i, b - 1) >= n:
                b -= 1
            while self.source(i, b) < n:
                b += 1
            lo, hi = max(lo, a), b if hi is None else min(hi, b)
        return lo, int(hi)

    def frame_at(self, seconds: float) -> int:
        """The first timeline frame at or after ``seconds`` (``t / rate >= seconds``)."""
        if self.rate <= 0:
            raise HandannoError("--start/--end need the videos' frame rate, which none of them states; "
                                "give frames with --every and offsets only")  # fmt: skip
        return max(0, math.ceil(seconds * self.rate - 1e-9))

    def select(self, every: int = 1, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
        """The timeline frames a session keeps (module docstring), int64 ascending.

        Raises:
            HandannoError: no frame is common to every camera, or none is left in ``[start, end)``.
        """
        if every < 1:
            raise HandannoError(f"--every must be >= 1, got {every}")
        lo, hi = self.common_range()
        if lo >= hi:
            spans = ", ".join(f"{c}: {n} frames, offset {k:+d}" for c, n, k in
                              zip(self.cameras, self.frames, self.offsets, strict=True))
            raise HandannoError(f"the videos have no frame in common with these offsets ({spans})")
        a = max(lo, self.frame_at(start_s)) if start_s is not None else lo
        b = min(hi, self.frame_at(end_s)) if end_s is not None else hi
        if a >= b:
            rate = self.rate
            raise HandannoError(f"no frame left between --start and --end: every camera has frames "
                                f"{lo / rate:.3f} s to {(hi - 1) / rate:.3f} s of the timeline ({rate:g} fps)"
                                if rate > 0 else "no frame left between --start and --end")  # fmt: skip
        return np.arange(a, b, every, dtype=np.int64)

    def dropped(self) -> dict[str, dict]:
        """Per camera, its video frames outside the frames every camera has.

        Returns:
            ``{camera: {"before": n, "after": m, "rate": note or None}}``: ``before`` frames
            at the video's start and ``after`` at its end that no common timeline frame shows
            (different lengths or offsets); ``rate`` says when the camera runs faster than
            the timeline (so frames between are dropped too).
        """
        lo, hi = self.common_range()
        out = {}
        for i, c in enumerate(self.cameras):
            if lo >= hi:
                out[c] = {"before": self.frames[i], "after": 0, "rate": None}
                continue
            first, last = int(self.source(i, lo)), int(self.source(i, hi - 1))
            r = self.ratio(i)
            out[c] = {"before": first, "after": self.frames[i] - 1 - last,
                      "rate": (f"{c} runs at {self.fps[i]:g} fps, the timeline at {self.rate:g} fps: the frame "
                               f"nearest in time is used, about {1 - 1 / r:.0%} of its frames are dropped")
                      if r != 1.0 else None}  # fmt: skip
        return out
