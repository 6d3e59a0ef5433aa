"""``handanno import videos``: one video per camera in, a session folder out.

What it writes (DESIGN.md, "The session folder")::

    SESSION/images/<cam>/<frame>.jpg   JPEG quality 95, written atomically; <frame> = %06d
                                       index on the common timeline (handanno.capture.timeline)
    SESSION/rig.json                   from --rig (any format `handanno rig convert` reads, with
                                       --scale), or the one already in SESSION
    SESSION/import.json                what was imported: the sources (paths, sizes, mtimes),
                                       the settings, each video's scan, the offsets, the plan,
                                       and "complete" (written before the images and again after)

Steps:
    1. Check the settings and the session: a session holding images that another import (or
       the user) put there is never written into.
    2. Scan every video (:func:`handanno.capture.video_io.scan_video`: count the frames
       by decoding them, check the timestamps); a missing, unreadable, empty or truncated
       video stops here, before anything is written, with an error naming file and camera.
    3. Read the rig, check that every camera is in it and that the sizes agree.
    4. With ``sync="hand"``, estimate the offsets (:mod:`handanno.capture.sync`).
    5. Plan the frames (:meth:`handanno.capture.timeline.Timeline.select`), write import.json,
       rig.json, then decode all cameras in step and write the images (a thread pool encodes).

Re-running with the same sources and settings does nothing when the import is complete and
every image is there; an interrupted import resumes (the scan and the offsets are read back
from import.json; images already written are kept). Other sources or settings need
``force``, which deletes the images this session's import.json lists (nothing else) and
imports again. A ``rig.json`` that import did not write is never replaced.

Decoding is OpenCV's (PyAV is not installed in handanno's environment, and OpenCV decodes
with exact frame indices when read forward; docs in :mod:`handanno.capture.video_io`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from handanno.calibration.camera import CameraRig
from handanno.calibration.rig_io import detect_format, load_any_rig, read_rig, rig_to_dict
from handanno.capture.sync import HandDetector, SyncResult, SyncSettings, choose_samples, sync_videos
from handanno.capture.timeline import Timeline
from handanno.capture.video_io import FrameReader, VideoScan, scan_video
from handanno.data.files_io import atomic_write_bytes, read_json, write_image, write_json
from handanno.data.lock_io import FolderLock
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

RECORD_NAME = "import.json"
GENERATOR = "handanno import videos"
SYNC_MODES = ("frame", "hand")
SYNC_DETECTORS = ("mediapipe", "cpm")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_OUR_TEMP = re.compile(r"\.\d{6,}\..+\.tmp\.jpg")
_DERIVED = ("keypoints2d", "masks", "fits", "labels", "overlays", "bootstrap")


def stem(t: int) -> str:
    """The file stem of timeline frame ``t``.

    Example:
        >>> stem(123)
        '000123'
    """
    return f"{int(t):06d}"


@dataclass(frozen=True)
class ImportSettings:
    """What :func:`import_videos` does.

    Attributes:
        out: the session folder (made if missing).
        videos: one video per camera.
        names: the cameras' names (default: the videos' file stems); the first camera is the
            reference of ``sync`` and of the timeline's offsets.
        rig: a rig in any format :func:`handanno.calibration.rig_io.load_any_rig` reads; None
            uses ``out/rig.json``, which must exist.
        scale: multiply the rig's translations (with ``rig`` only).
        every: keep every ``every``-th frame of the common timeline.
        start: first second of the timeline to keep (``t / rate >= start``).
        end: keep frames before this second (``t / rate < end``).
        offsets: ``{camera: k}``: session frame ``t`` is frame ``t + k`` of that camera's video.
        sync: ``"frame"`` (the videos are in step by frame index, after ``offsets``) or
            ``"hand"`` (estimate the offsets from the hand; ``offsets`` must be empty).
        sync_search: ``sync="hand"`` tries offsets in ``[-sync_search, sync_search]``.
        sync_samples: ``sync="hand"`` samples this many reference frames.
        hand: the hand MediaPipe looks for (``sync="hand"``).
        sync_detector: what finds the hand for ``sync="hand"``: ``"mediapipe"`` or ``"cpm"``
            (the heatmap network: ``sync_weights``, default the one shipped with handanno).
        sync_weights: the network's checkpoint for ``sync_detector="cpm"``.
        force: import again although the session was imported from other sources or settings.
        jpeg_quality: of the written images.
        workers: threads encoding and writing images.
        progress: tqdm bars.
    """

    out: Path
    videos: tuple[Path, ...]
    names: tuple[str, ...] | None = None
    rig: Path | None = None
    scale: float | None = None
    every: int = 1
    start: float | None = None
    end: float | None = None
    offsets: Mapping[str, int] = field(default_factory=dict)
    sync: str = "frame"
    sync_search: int = 30
    sync_samples: int = 30
    hand: str = "right"
    sync_detector: str = "mediapipe"
    sync_weights: Path | None = None
    force: bool = False
    jpeg_quality: int = 95
    workers: int = 2
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "videos", tuple(Path(v) for v in self.videos))
        if self.rig is not None:
            object.__setattr__(self, "rig", Path(self.rig))
        if not self.videos:
            raise HandannoError("import videos needs at least one video")
        names = tuple(self.names) if self.names else tuple(v.stem for v in self.videos)
        if len(names) != len(self.videos):
            raise HandannoError(f"--names gives {len(names)} names for {len(self.videos)} videos")
        for n in names:
            if not _NAME.fullmatch(n):
                raise HandannoError(f"camera name {n!r} is not a plain folder name (letters, digits, '_', '-', '.')")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise HandannoError(f"two videos would be camera {', '.join(dupes)}; give distinct names with --names")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "offsets", {str(k): int(v) for k, v in dict(self.offsets).items()})
        unknown = sorted(set(self.offsets) - set(names))
        if unknown:
            raise HandannoError(f"--offsets names camera(s) {', '.join(unknown)}, which are not among the videos' "
                                f"cameras ({', '.join(names)})")  # fmt: skip
        if self.sync not in SYNC_MODES:
            raise HandannoError(f"--sync must be one of {', '.join(SYNC_MODES)}, got {self.sync!r}")
        if self.sync_detector not in SYNC_DETECTORS:
            raise HandannoError(f"--sync-detector must be one of {', '.join(SYNC_DETECTORS)}, got "
                                f"{self.sync_detector!r}")  # fmt: skip
        if self.sync == "hand" and self.offsets:
            raise HandannoError("give either --offsets or --sync hand, not both")
        if self.sync == "hand" and len(names) < 2:
            raise HandannoError("--sync hand needs two videos or more")
        if self.scale is not None and self.rig is None:
            raise HandannoError("--scale applies to the rig given with --rig")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise HandannoError(f"--scale must be a finite number > 0, got {self.scale}")
        if self.every < 1:
            raise HandannoError(f"--every must be >= 1, got {self.every}")
        if self.start is not None and (not math.isfinite(self.start) or self.start < 0):
            raise HandannoError(f"--start must be >= 0 seconds, got {self.start}")
        if self.end is not None and (not math.isfinite(self.end) or self.end <= (self.start or 0.0)):
            raise HandannoError(f"--end must come after --start (seconds), got {self.end}")
        if self.sync_search < 0 or self.sync_samples < 1:
            raise HandannoError("--sync-search must be >= 0 and --sync-samples >= 1")
        if not 1 <= self.jpeg_quality <= 100 or self.workers < 1:
            raise HandannoError("jpeg_quality must be 1..100 and workers >= 1")

    @property
    def cameras(self) -> tuple[str, ...]:
        """The camera names, in the videos' order."""
        return tuple(self.names or ())

    def to_record(self) -> dict:
        """The settings that decide the images (compared on a re-run)."""
        rec = {"names": list(self.cameras), "every": self.every, "start": self.start, "end": self.end,
               "offsets": dict(sorted(self.offsets.items())), "sync": self.sync, "scale": self.scale,
               "jpeg_quality": self.jpeg_quality}  # fmt: skip
        if self.sync == "hand":
            rec.update(sync_search=self.sync_search, sync_samples=self.sync_samples, hand=self.hand)
            if self.sync_detector != "mediapipe":  # (records made before the option stay equal)
                rec.update(sync_detector=self.sync_detector,
                           sync_weights=None if self.sync_weights is None else str(self.sync_weights))  # fmt: skip
        return rec


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_videos` did.

    Attributes:
        session: the session folder.
        cameras: camera names, in the videos' order.
        frames: the session's frame stems, ascending.
        written: images written by this run.
        kept: images already there and kept (a resumed import).
        nothing_to_do: the session already held this import, whole.
        offsets: ``{camera: frames}`` in use.
        rate: the timeline's frame rate (fps; 0 when unknown).
        source_frames: per camera, ``[first, last]`` video frame used.
        dropped: per camera, video frames outside the common range (:meth:`Timeline.dropped`).
        sync: the :class:`~handanno.capture.sync.SyncResult` record, or None.
        warnings: things to look at (frames dropped, variable frame rates, extra rig cameras,
            stale outputs of later stages).
        seconds: wall time per step (``scan``, ``sync``, ``write``, ``total``).
        decode_write_fps: camera frames decoded and written per second in the write step.
    """

    session: Path
    cameras: tuple[str, ...]
    frames: tuple[str, ...]
    written: int
    kept: int
    nothing_to_do: bool
    offsets: dict[str, int]
    rate: float
    source_frames: dict[str, list[int]]
    dropped: dict[str, dict]
    sync: dict | None
    warnings: tuple[str, ...]
    seconds: dict[str, float]
    decode_write_fps: float | None = None

    def summary(self) -> str:
        """Lines for the user."""
        if self.nothing_to_do:
            head = (f"import: {self.session} already holds this import ({len(self.frames)} frames x "
                    f"{len(self.cameras)} cameras); nothing to do (--force imports again)")  # fmt: skip
        else:
            speed = f", {self.decode_write_fps:.0f} images/s" if self.decode_write_fps else ""
            head = (f"import: {len(self.frames)} frames x {len(self.cameras)} cameras -> {self.session}/images "
                    f"({self.written} written, {self.kept} already there; {self.seconds.get('total', 0):.1f} s"
                    f"{speed})")  # fmt: skip
        lines = [head]
        if self.frames:
            lines.append(f"  frames {self.frames[0]}..{self.frames[-1]} of the timeline at {self.rate:g} fps; "
                         + ", ".join(f"{c}: video frames {a}..{b} (offset {self.offsets[c]:+d})"
                                     for c, (a, b) in self.source_frames.items()))  # fmt: skip
        if self.sync:
            offs = ", ".join(f"{c} {k:+d}" for c, k in self.sync["offsets"].items())
            res = self.sync.get("residual_px")
            lines.append(f"  sync (hand): offsets {offs}; median multi-view reprojection error "
                         f"{res if res is None else f'{res:.2f}'} px over {self.sync['samples']} sampled frames")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- fingerprints


def _fingerprint(path: Path) -> dict:
    """Path, size and modification time of a file; of every file for a folder."""
    path = path.resolve()
    if path.is_dir():
        files = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()}
        return {"path": str(path), "files": files}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _request(settings: ImportSettings) -> dict:
    """What decides the import: sources and settings."""
    for cam, video in zip(settings.cameras, settings.videos, strict=True):
        if not video.is_file():
            raise HandannoError(f"{video} (camera {cam!r}): video file not found")
    if settings.rig is not None and not settings.rig.exists():
        raise HandannoError(f"{settings.rig}: rig not found (--rig)")
    return {
        "videos": {c: _fingerprint(v) for c, v in zip(settings.cameras, settings.videos, strict=True)},
        "rig": _fingerprint(settings.rig) if settings.rig is not None else None,
        "settings": settings.to_record(),
    }


def _differences(old: dict, new: dict) -> list[str]:
    """Human names of what differs between two requests."""
    out = []
    ov, nv = old.get("videos", {}), new["videos"]
    if list(ov) != list(nv):
        out.append(f"cameras {', '.join(ov)} -> {', '.join(nv)}")
    out += [f"video of {c} ({nv[c]['path']})" for c in nv if c in ov and ov[c] != nv[c]]
    if old.get("rig") != new["rig"]:
        out.append("the rig (--rig)")
    os_, ns = old.get("settings", {}), new["settings"]
    out += [f"{k} {os_.get(k)!r} -> {ns.get(k)!r}" for k in sorted(set(os_) | set(ns))
            if k != "names" and os_.get(k) != ns.get(k)]  # fmt: skip
    return out or ["the import record's format"]


def _holds_rig(path: Path, rig: CameraRig) -> bool:
    """Whether the rig.json at ``path`` is ``rig`` (same cameras and numbers; layout and spacing aside)."""
    try:
        have = read_rig(path)
    except HandannoError:
        return False
    return rig_to_dict(have) == rig_to_dict(rig)


def _rig_bytes(rig: CameraRig) -> bytes:
    return json.dumps(rig_to_dict(rig), indent=2).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the import


def _read_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    rec = read_json(path)
    if not isinstance(rec, dict) or rec.get("generator") != GENERATOR:
        raise HandannoError(f"{path}: not an import record of `handanno import videos`; delete it or use another "
                            "session folder")  # fmt: skip
    return rec


def _planned_paths(root: Path, rec: Mapping) -> list[Path]:
    """The image files an import record's plan names (written or not)."""
    plan = rec.get("plan") or {}
    cams = plan.get("cameras") or []
    ts = range(int(plan.get("first", 0)), int(plan.get("stop", 0)), int(plan.get("every", 1)))
    return [root / "images" / c / f"{stem(t)}.jpg" for c in cams for t in ts]


def _user_images(root: Path) -> list[Path]:
    images = root / "images"
    if not images.is_dir():
        return []
    return [p for p in images.rglob("*") if p.is_file()][:3]


def _load_rig(settings: ImportSettings, scans: Mapping[str, VideoScan]) -> CameraRig:
    sizes = {s.size for s in scans.values()}
    size = next(iter(sizes)) if len(sizes) == 1 else None
    if settings.rig is not None:
        needs_size = detect_format(settings.rig) != "rig"  # rig.json has its own sizes
        rig = load_any_rig(settings.rig, image_size=size if needs_size else None, scale=settings.scale)
        where = str(settings.rig)
    else:
        path = settings.out / "rig.json"
        if not path.is_file():
            raise HandannoError(f"{settings.out}: no rig.json in the session; give the cameras' calibration with "
                                "--rig (rig.json or any format `handanno rig convert` reads)")  # fmt: skip
        rig, where = read_rig(path), str(path)
    missing = [c for c in settings.cameras if c not in rig.names]
    if missing:
        raise HandannoError(f"{where}: camera(s) {', '.join(repr(c) for c in missing)} (video(s) "
                            f"{', '.join(str(scans[c].path) for c in missing)}) are not in the rig, whose cameras "
                            f"are {', '.join(rig.names)}; name the videos' cameras as the rig does with --names")
    for c in settings.cameras:
        if tuple(rig[c].image_size) != tuple(scans[c].size):
            w, h = scans[c].size
            rw, rh = rig[c].image_size
            raise HandannoError(f"{scans[c].path} (camera {c!r}): frames are {w}x{h} but {where} calibrates "
                                f"{c!r} for {rw}x{rh} images; use the rig made for these videos")  # fmt: skip
    return rig


def _scan_all(settings: ImportSettings, record: Mapping | None) -> dict[str, VideoScan]:
    if record is not None and record.get("scans"):
        return {c: replace(VideoScan.from_dict(c, record["scans"][c]), path=v)  # the path as given now
                for c, v in zip(settings.cameras, settings.videos, strict=True)}
    with ThreadPoolExecutor(max_workers=max(1, min(len(settings.videos), os.cpu_count() or 1))) as pool:
        futures = {c: pool.submit(scan_video, v, c) for c, v in zip(settings.cameras, settings.videos, strict=True)}
        return {c: f.result() for c, f in futures.items()}


def _sync(settings: ImportSettings, rig: CameraRig, scans: Mapping[str, VideoScan],
          detector: HandDetector | None) -> SyncResult:
    cams = settings.cameras
    line = Timeline.make(cams, [scans[c].frames for c in cams], [scans[c].fps for c in cams])
    lo, hi = line.common_range()
    if settings.start is not None:
        lo = max(lo, line.frame_at(settings.start))
    if settings.end is not None:
        hi = min(hi, line.frame_at(settings.end))
    ts = choose_samples(lo, hi, settings.sync_samples, settings.sync_search)
    if ts.size == 0:
        raise HandannoError("--sync hand: the videos share no frames to sample")
    samples = {c: line.source(i, ts) for i, c in enumerate(cams)}
    own = detector is None
    if own:
        detector = make_sync_detector(settings)
    try:
        return sync_videos(rig, {c: (scans[c].path, scans[c].frames, scans[c].size) for c in cams}, samples, detector,
                           SyncSettings(search=settings.sync_search, samples=settings.sync_samples),
                           progress=settings.progress)  # fmt: skip
    finally:
        if own:
            detector.close()


class NetworkSyncDetector:
    """``--sync-detector cpm``: the heatmap network as a :data:`HandDetector` for the sync's samples.

    The samples jump between cameras and times, so each image starts from the last hand's box
    and searches the whole image when the hand is not there (:class:`HandTracker` on one key).
    """

    def __init__(self, weights: Path | None, device: str = "auto"):
        from handanno.annotate.detect import DetectSettings, make_detector

        self._tracker = make_detector(DetectSettings(detector="cpm", weights=weights, device=device))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """``(21, 3)`` ``[u, v, conf]`` keypoints of the hand in the ``(H, W, 3)`` BGR image, or None."""
        return self._tracker(image, "sync")

    def close(self) -> None:
        """Nothing to release (for the same use as MediaPipe's detector)."""


def make_sync_detector(settings: ImportSettings) -> HandDetector:
    """The detector ``settings.sync_detector`` names, for ``--sync hand`` (call its ``close()`` after)."""
    if settings.sync_detector == "cpm":
        return NetworkSyncDetector(settings.sync_weights)
    from handanno.annotate.detect_mediapipe import MediaPipeDetector

    return MediaPipeDetector(hand=settings.hand)


def import_videos(settings: ImportSettings, detector: HandDetector | None = None) -> ImportReport:
    """Import one video per camera into a session folder (module docstring).

    Args:
        settings: what to import and how.
        detector: for ``sync="hand"``: ``image_bgr -> (21, 3) [u, v, conf] | None``; default
            MediaPipe (:class:`handanno.annotate.detect_mediapipe.MediaPipeDetector`).

    Returns:
        An :class:`ImportReport`.

    Raises:
        HandannoError: a video missing, unreadable, without frames or truncated (naming the file
            and camera); the rig missing, without a camera of the videos, or for another image
            size; videos without common frames; the session holding images not from this
            import, or imported from other sources or settings (without ``force``); the session
            in use by another command. Nothing imported before is deleted on any of these.
    """
    t_start = time.perf_counter()
    s = settings
    root = s.out
    request = _request(s)  # checks the files exist before anything is made
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, GENERATOR):
        return _import_locked(s, request, detector, t_start)


def _import_locked(s: ImportSettings, request: dict, detector: HandDetector | None, t_start: float) -> ImportReport:
    root = s.out
    record_path = root / RECORD_NAME
    prev = _read_record(record_path)
    same = prev is not None and prev.get("request") == request
    if prev is None:
        found = _user_images(root)
        if found:
            raise HandannoError(f"{root}/images already holds images that `handanno import videos` did not write "
                                f"(e.g. {found[0]}); they are never overwritten: import into another folder")
    elif not same and not s.force:
        raise HandannoError(f"{root} was imported from other videos or with other settings (changed: "
                            f"{'; '.join(_differences(prev.get('request', {}), request))}); run again with --force "
                            "to import anew (this deletes the images the earlier import wrote, nothing else)")
    resume = same and not s.force
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    scans = _scan_all(s, prev if resume else None)
    seconds["scan"] = time.perf_counter() - t0
    rig = _load_rig(s, scans)
    rig_bytes = _rig_bytes(rig) if s.rig is not None else None
    rig_path = root / "rig.json"
    if rig_bytes is not None and rig_path.is_file():
        current = rig_path.read_bytes()
        ours = prev is not None and prev.get("rig_sha256") == _sha(current)
        if current != rig_bytes and not ours and not _holds_rig(rig_path, rig):
            raise HandannoError(f"{rig_path} exists and is not the rig of --rig {s.rig}; handanno never replaces a "
                                "rig.json it did not write: remove it, or leave out --rig to use it")  # fmt: skip

    cams = s.cameras
    warnings: list[str] = []
    sync_rec: dict | None = None
    t0 = time.perf_counter()
    if resume and prev.get("offsets") is not None:
        offsets = {c: int(prev["offsets"][c]) for c in cams}
        sync_rec = prev.get("sync")
    elif s.sync == "hand":
        result = _sync(s, rig, scans, detector)
        offsets, sync_rec = dict(result.offsets), result.to_dict()
    else:
        offsets = {c: int(s.offsets.get(c, 0)) for c in cams}
    seconds["sync"] = time.perf_counter() - t0
    if sync_rec:
        warnings += list(sync_rec.get("warnings", []))

    line = Timeline.make(cams, [scans[c].frames for c in cams], [scans[c].fps for c in cams], offsets)
    ts = line.select(s.every, s.start, s.end)
    src = {c: line.source(i, ts) for i, c in enumerate(cams)}
    dropped = line.dropped()
    warnings += _notes(s, line, scans, dropped, rig)

    # nothing to do: the same import, whole
    names = [f"{stem(t)}.jpg" for t in ts.tolist()]
    rig_ok = rig_path.is_file() and (rig_bytes is None or _holds_rig(rig_path, rig))
    if resume and prev.get("complete") and rig_ok and all(_existing(root, c).issuperset(names) for c in cams):
        return _report(s, ts, 0, len(ts) * len(cams), True, offsets, line, src, dropped, sync_rec,
                       prev.get("warnings", warnings), {"total": time.perf_counter() - t_start}, None)

    # from here on the session changes. Stale images: with --force every image the earlier import
    # planned (all are written anew); on resuming, those of a --force run cut short while deleting
    stale_plan = None
    if prev is not None and not resume:
        stale_plan = prev.get("plan")
        derived = [d for d in _DERIVED if (root / d).exists()]
        if derived:
            warnings.append(f"{root} holds outputs of later stages ({', '.join(derived)}) made from the earlier "
                            "images; run `handanno fit --force` on it")  # fmt: skip
    plan = {"cameras": list(cams), "first": int(ts[0]), "stop": int(ts[-1]) + 1, "every": s.every}
    record = {
        "generator": GENERATOR, "complete": False, "request": request,
        "scans": {c: scans[c].to_dict() for c in cams}, "offsets": offsets, "sync": sync_rec,
        "rate": line.rate, "plan": plan, "dropped": dropped, "warnings": warnings,
        "rig_sha256": _sha(rig_bytes) if rig_bytes is not None else (prev or {}).get("rig_sha256"),
        "stale_plan": stale_plan if stale_plan is not None else (prev or {}).get("stale_plan") if resume else None,
    }  # fmt: skip
    write_json(root / RECORD_NAME, record, indent=1)
    if record["stale_plan"]:
        # only files an earlier import of this session planned; the record naming them is written first, so a
        # run cut short here deletes them again before writing any image
        stale = _planned_paths(root, {"plan": record["stale_plan"]})
        for p in stale:
            p.unlink(missing_ok=True)
        for d in {p.parent for p in stale}:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        record["stale_plan"] = None
        write_json(root / RECORD_NAME, record, indent=1)
    if rig_bytes is not None and not (rig_path.is_file() and _holds_rig(rig_path, rig)):
        atomic_write_bytes(rig_path, rig_bytes)

    t0 = time.perf_counter()
    written, kept = _write_frames(s, scans, src, names)
    seconds["write"] = time.perf_counter() - t0
    record.update(complete=True, frames=len(ts))
    write_json(root / RECORD_NAME, record, indent=1)
    seconds["total"] = time.perf_counter() - t_start
    fps = written / seconds["write"] if written and seconds["write"] > 0 else None
    return _report(s, ts, written, kept, False, offsets, line, src, dropped, sync_rec, warnings, seconds, fps)


def _notes(s: ImportSettings, line: Timeline, scans: Mapping[str, VideoScan], dropped: Mapping[str, dict],
           rig: CameraRig) -> list[str]:
    out = []
    for c, d in dropped.items():
        if d["before"] or d["after"]:
            out.append(f"{c}: {d['before']} frame(s) at the start and {d['after']} at the end of "
                       f"{scans[c].path.name} are dropped (not every camera has them)")  # fmt: skip
        if d["rate"]:
            out.append(d["rate"])
    for c in s.cameras:
        sc = scans[c]
        if sc.variable_rate_note:
            out.append(sc.variable_rate_note)
        if sc.frames_reported and sc.frames != sc.frames_reported:
            out.append(f"{c} ({sc.path.name}): {sc.frames} frames decoded, the container says "
                       f"{sc.frames_reported}; the decoded ones are used")  # fmt: skip
        if sc.fps <= 0:
            out.append(f"{c} ({sc.path.name}): the video states no frame rate; taken to be the timeline's")
    extra = [c for c in rig.names if c not in s.cameras]
    if extra:
        out.append(f"the rig has camera(s) {', '.join(extra)} without a video; the session uses the cameras "
                   "with images only")  # fmt: skip
    return out


def _existing(root: Path, camera: str) -> set[str]:
    """Names of the files in ``root/images/<camera>`` (one listing, not a stat per frame)."""
    folder = root / "images" / camera
    return set(os.listdir(folder)) if folder.is_dir() else set()


def _write_frames(s: ImportSettings, scans: Mapping[str, VideoScan], src: Mapping[str, np.ndarray],
                  names: Sequence[str]) -> tuple[int, int]:
    """Decode the cameras in step and write the images not there yet; returns ``(written, kept)``."""
    cams = s.cameras
    written = kept = 0
    there = {c: _existing(s.out, c) for c in cams}
    folders = {c: s.out / "images" / c for c in cams}
    for c in cams:  # temporary files of writes killed mid-way (atomic_write's names for our images)
        for name in [n for n in there[c] if _OUR_TEMP.fullmatch(n)]:
            (folders[c] / name).unlink(missing_ok=True)
    readers = {c: FrameReader(scans[c].path, c, scans[c].size) for c in cams}
    pending: deque[Future] = deque()
    limit = 4 * s.workers * len(cams)
    bar = None
    if s.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names), desc="import frames", unit="frame")
    try:
        with ThreadPoolExecutor(max_workers=s.workers) as pool:
            for j, name in enumerate(names):
                for c in cams:
                    if name in there[c]:
                        kept += 1
                        continue
                    image = readers[c].read(int(src[c][j]))
                    pending.append(pool.submit(write_image, folders[c] / name, image, s.jpeg_quality))
                    written += 1
                while len(pending) > limit:
                    pending.popleft().result()
                if bar is not None:
                    bar.update(1)
            while pending:
                pending.popleft().result()
    finally:
        for r in readers.values():
            r.close()
        if bar is not None:
            bar.close()
    return written, kept


def _report(s: ImportSettings, ts: np.ndarray, written: int, kept: int, nothing: bool, offsets: dict,
            line: Timeline, src: Mapping[str, np.ndarray], dropped: dict, sync_rec: dict | None,
            warnings: Sequence[str], seconds: dict, fps: float | None) -> ImportReport:
    return ImportReport(
        session=s.out, cameras=s.cameras, frames=tuple(stem(t) for t in ts.tolist()), written=written, kept=kept,
        nothing_to_do=nothing, offsets=dict(offsets), rate=line.rate,
        source_frames={c: [int(src[c][0]), int(src[c][-1])] for c in s.cameras}, dropped=dropped, sync=sync_rec,
        warnings=tuple(warnings), seconds={k: round(v, 3) for k, v in seconds.items()}, decode_write_fps=fps,
    )  # fmt: skip

