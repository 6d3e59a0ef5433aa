"""The overlay video of a fitted session (``handanno fit --overlay-video``): ``SESSION/overlays.mp4``.

Every fitted frame, in the session's order, is one video frame: the picture
:mod:`handanno.annotate.export_overlays` draws for ``overlays/<frame>.png`` (every view zoomed
onto the hand, the fitted mesh's outline, the skeleton, each view's reprojection error and
mask IoU, a header with the frame's name and verdict), its header cut or padded to a fixed
number of lines so that all frames have one size. The fits are read from ``fits/`` after
the fit, so the video shows what is on disk. Encoded with OpenCV's ``mp4v`` (MPEG-4 part 2,
which every OpenCV build writes), written to a temporary name and renamed, so a crash leaves
no half-written ``overlays.mp4``.

Convention:
    Images are BGR uint8; frames as in DESIGN.md. The video's frame ``i`` is the ``i``-th
    fitted frame (its name is printed in the header, not implied by the index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handanno.annotate.export_overlays import fitted_frames, overlay_sheets
from handanno.annotate.session_io import Session, open_session, read_fit
from handanno.data.files_io import atomic_write
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

VIDEO_NAME = "overlays.mp4"
HEADER_LINES = 3  # frame and verdict, then up to two reasons


@dataclass(frozen=True)
class OverlayVideoSettings:
    """How the overlay video is made.

    Attributes:
        fps: frames per second of the video.
        zoom: zoom every view onto the hand.
        name: the file's name inside the session.
        progress: show a progress bar.
    """

    fps: float = 10.0
    zoom: bool = True
    name: str = VIDEO_NAME
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise HandannoError(f"the overlay video's frame rate must be positive, got {self.fps}")


@dataclass(frozen=True)
class OverlayVideoResult:
    """What was written.

    Attributes:
        path: the video (None: no fits, nothing written).
        frames: video frames (= fitted frames).
        size: ``(width, height)`` of its frames, px.
    """

    path: Path | None
    frames: int
    size: tuple[int, int]


def _even(sheet: np.ndarray) -> np.ndarray:
    """Pad a picture with black to even width and height (MPEG-4 encodes 2x2 chroma blocks)."""
    H, W = sheet.shape[:2]
    return cv2.copyMakeBorder(sheet, 0, H % 2, 0, W % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def write_overlay_video(
    session: Session, layer: torch.nn.Module, settings: OverlayVideoSettings = OverlayVideoSettings()
) -> OverlayVideoResult:
    """Write ``SESSION/<settings.name>``: one video frame per fitted frame, in order.

    Args:
        session: the opened session.
        layer: the :class:`handanno.handmodel.mano.ManoLayer` the fits were made with.
        settings: frame rate, zoom, name.

    Returns:
        The :class:`OverlayVideoResult`; no fits: nothing written (a warning), ``path`` None.

    Raises:
        HandannoError: OpenCV cannot open an mp4v writer here (names the file).
    """
    frames = fitted_frames(session)
    if not frames:
        log.warning("%s: no fits to make an overlay video of", session.fits_dir)
        return OverlayVideoResult(None, 0, (0, 0))
    path = session.root / settings.name
    size: list[tuple[int, int]] = []

    def encode(tmp: Path) -> None:
        writer = None
        bar = tqdm(total=len(frames), desc="overlay video", disable=not settings.progress, leave=False, unit="frame")
        try:
            for _, sheet in overlay_sheets(session, layer, frames, zoom=settings.zoom, header_lines=HEADER_LINES):
                sheet = _even(sheet)
                if writer is None:
                    size.append((sheet.shape[1], sheet.shape[0]))
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), settings.fps, size[0])
                    if not writer.isOpened():
                        raise HandannoError(f"{path}: OpenCV cannot write an mp4v video here")
                writer.write(sheet)
                bar.update(1)
        finally:
            bar.close()
            if writer is not None:
                writer.release()

    atomic_write(path, encode)
    log.info("wrote %s (%d frames, %dx%d, %g fps)", path, len(frames), *size[0], settings.fps)
    return OverlayVideoResult(path, len(frames), size[0])


def session_overlay_video(
    root: str | Path, settings: OverlayVideoSettings = OverlayVideoSettings(), model_dir: str | Path | None = None
) -> OverlayVideoResult:
    """``handanno fit --overlay-video`` after the fit: open the session, load the fits' hand model, write the video.

    The hand (right or left) is the first fit's; the model is loaded from ``model_dir`` (or
    ``$HANDANNO_MODEL_DIR``, else the open hand model), as the fit loaded it.

    Args:
        root: the session folder.
        settings: frame rate, zoom, name.
        model_dir: the MANO folder the fit used (None: the default the fit used).

    Returns:
        The :class:`OverlayVideoResult`.
    """
    from handanno.handmodel.mano import ManoLayer
    from handanno.handmodel.model_io import load_hand_model

    session = open_session(root)
    frames = fitted_frames(session)
    if not frames:
        log.warning("%s: no fits to make an overlay video of", session.fits_dir)
        return OverlayVideoResult(None, 0, (0, 0))
    first = read_fit(session.fit_path(frames[0]))
    model = load_hand_model(first["hand"], Path(model_dir) if model_dir else None)
    if first.get("model") not in (None, model.name):
        log.warning("%s was fitted with hand model %r but %r is loaded: the video's meshes are not the fits'; give "
                    "the fit's --model-dir", session.fit_path(frames[0]), first.get("model"), model.name)  # fmt: skip
    return write_overlay_video(session, ManoLayer(model), settings)
