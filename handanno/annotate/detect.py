"""The detect stage: 2D keypoints of every view, written to ``keypoints2d/<cam>/<frame>.json``.

Detectors (:data:`DETECTORS`): ``given`` (the session's own keypoint files, nothing run),
``cpm`` (a trained heatmap network, :mod:`handanno.annotate.detect_cpm`) and ``mediapipe``
(:mod:`handanno.annotate.detect_mediapipe`). A detector is a callable
``detect(image, camera) -> (21, 3) [u, v, conf] or None``, called view by view in frame
order (the CPM tracks the hand from frame to frame per camera). Each also detects in a given
hand box (:data:`BoxDetector`, :func:`make_box_detector`): the pipeline's multi-view guided
re-detection (:mod:`handanno.annotate.redetect`) looks again where the fit says the hand is.
A run makes its detectors once (:class:`RunDetectors`).

What the user brought is never overwritten: with ``force`` only files one of handanno's
detectors wrote are detected again (:func:`needs_keypoints`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from handanno.annotate.session_io import Session, keypoints_made_by_handanno, write_keypoints_file
from handanno.data.files_io import read_image
from handanno.device import resolve_device
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

DETECTORS = ("given", "cpm", "mediapipe")

Detector = Callable[[np.ndarray, str], "np.ndarray | None"]
"""``detect(image (H, W, 3) BGR uint8, camera name) -> (21, 3) [u, v, conf] pixels, or None``."""

BoxDetector = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]
"""``detect_in_box(image (H, W, 3) BGR uint8, box (4,) [x0, y0, x1, y1] px) -> (21, 3) [u, v, conf] | None``.

``box`` is where the hand is expected (its keypoints' tight box, e.g. a fit's projection);
the keypoints are full-image pixels; None when the hand is not found there.
"""


@dataclass(frozen=True)
class DetectSettings:
    """Which detector, and how it runs."""

    detector: str = "given"  # one of DETECTORS
    weights: Path | None = None  # the cpm / unet checkpoint (--weights); None: the network shipped with handanno
    flip_test: bool = False  # cpm: average with the mirrored image's heatmaps
    hand: str = "right"  # mediapipe: which hand to keep
    device: str = "auto"
    force: bool = False  # detect again where handanno's own detector wrote the file
    progress: bool = True


def run_detect(session: Session, settings: DetectSettings, detectors: RunDetectors | None = None) -> int:
    """Write keypoints2d/ for every view that lacks it (or all of handanno's with ``force``).

    Args:
        session: the session.
        settings: which detector.
        detectors: the run's detectors (made here when None).

    Returns:
        How many keypoint files were written.

    Raises:
        HandannoError: an unknown detector; ``given`` with no keypoint file at all; ``cpm``
            without weights.
    """
    if settings.detector not in DETECTORS:
        raise HandannoError(f"--detector {settings.detector!r}: choose one of {', '.join(DETECTORS)}")
    todo = [(c, f) for f in session.frames for c in session.cameras
            if (c, f) not in session.bad_views and needs_keypoints(session.keypoints_path(c, f), settings)]  # fmt: skip
    if settings.detector == "given":
        have = sum(session.keypoints_path(c, f).is_file() for f in session.frames for c in session.cameras)
        if have == 0:
            raise HandannoError(
                f"{session.root / 'keypoints2d'}: no keypoint files for the selected frames; with --detector given "
                "bring keypoints2d/<camera>/<frame>.json, or use --detector cpm --weights CKPT or --detector mediapipe"
            )
        if todo:
            log.info("%d view(s) have no keypoint file: treated as views where the hand is not seen", len(todo))
        return 0
    detect = (detectors or RunDetectors(settings)).views()
    written = 0
    bar = tqdm(todo, desc=f"detect ({settings.detector})", disable=not settings.progress, leave=False, unit="it")
    for cam, frame in bar:
        image = read_image(session.images[(cam, frame)])
        kp_path = session.keypoints_path(cam, frame)
        kp = detect(image, cam)
        if kp is not None:
            write_keypoints_file(kp_path, kp, settings.detector)
            written += 1
        elif kp_path.is_file():  # --force, and the hand is no longer found: the earlier detection goes
            kp_path.unlink()
    return written


def needs_keypoints(path: Path, settings: DetectSettings) -> bool:
    """Whether the detector must (re)write this keypoint file.

    A missing file is detected. With ``force``, a file one of handanno's detectors wrote is
    detected again; a file the user brought (source "given", or any source that is not a
    detector of handanno's) is never overwritten.
    """
    if not path.is_file():
        return True
    return settings.force and settings.detector != "given" and keypoints_made_by_handanno(path)


def make_detector(settings: DetectSettings) -> Detector:
    """The :data:`Detector` of ``settings.detector`` (``cpm`` or ``mediapipe``), ready to run."""
    if settings.detector == "mediapipe":
        from handanno.annotate.detect_mediapipe import MediaPipeDetector

        return MediaPipeDetector(hand=settings.hand)
    from handanno.annotate.detect_cpm import CPMDetector, HandTracker
    from handanno.models.checkpoints import shipped_detector_weights

    weights = settings.weights if settings.weights is not None else shipped_detector_weights()
    if weights is None:
        raise HandannoError("--detector cpm needs --weights CKPT (train one with `handanno train cpm` or `unet`): "
                            "this install has no shipped network")  # fmt: skip
    device = resolve_device(settings.device)
    flip = True if settings.flip_test else None  # off: as the checkpoint says
    return HandTracker(CPMDetector.from_checkpoint(weights, device, flip_test=flip))


def make_box_detector(settings: DetectSettings, shared: object | None = None) -> BoxDetector:
    """The :data:`BoxDetector` of ``settings.detector`` (``cpm`` or ``mediapipe``).

    Args:
        settings: which detector.
        shared: a detector :func:`make_detector` made for the same settings; when it can
            detect in a box (``detect_in_box``: the CPM's tracker, MediaPipe) it is reused, so
            the network or MediaPipe's graph is loaded once.
    """
    det = shared if callable(getattr(shared, "detect_in_box", None)) else make_detector(settings)
    return det.detect_in_box  # type: ignore[attr-defined]


class RunDetectors:
    """A run's detectors, each made once, when first asked for (MediaPipe takes seconds to start).

    The box detector shares the view detector's model (:func:`make_box_detector`).
    """

    def __init__(self, settings: DetectSettings):
        self.settings = settings
        self._views: Detector | None = None
        self._in_box: BoxDetector | None = None

    def views(self) -> Detector:
        """The :data:`Detector` (:func:`make_detector`)."""
        if self._views is None:
            self._views = make_detector(self.settings)
        return self._views

    def in_box(self) -> BoxDetector:
        """The :data:`BoxDetector` (:func:`make_box_detector`)."""
        if self._in_box is None:
            self._in_box = make_box_detector(self.settings, self.views())
        return self._in_box
