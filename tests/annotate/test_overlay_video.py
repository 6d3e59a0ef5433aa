"""``handanno fit --overlay-video``: SESSION/overlays.mp4 of a small fitted synthetic session, zoomed panels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from handanno.annotate import pipeline
from handanno.annotate.export_overlays import HEADER_LINE_PX, TILE_WIDTH, ZOOM_MARGIN
from handanno.annotate.fit import FitSettings
from handanno.annotate.overlay import hand_crop_box
from handanno.annotate.overlay_video import HEADER_LINES, OverlayVideoSettings, session_overlay_video
from handanno.annotate.quality import AcceptSettings
from handanno.calibration.rig_io import read_rig
from handanno.cli import main
from handanno.errors import HandannoError
from handanno.synth.capture import SynthSettings, synthesize

QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)  # what is drawn matters here, not how well it fits
FRAMES = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, one_torch_thread) -> tuple[Path, str]:
    """A 3-camera, 4-frame 320x240 synthetic session fitted by ``handanno fit --overlay-video``: ``(root, output)``."""
    root = tmp_path_factory.mktemp("overlay_video") / "session"
    synthesize(SynthSettings(out_dir=root, num_cameras=3, num_frames=FRAMES, image_size=(320, 240),
                             keypoint_noise_px=1.0, write_calib=False, progress=False))  # fmt: skip
    real = pipeline.run_pipeline
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "run_pipeline",
               lambda s: real(replace(s, fit=QUICK, progress=False, accept=AcceptSettings.accept_all())))
    try:
        res = CliRunner().invoke(main, ["fit", "--session", str(root), "--device", "cpu", "--no-silhouette",
                                        "--no-export", "--overlay-video", "--overlay-fps", "5"])  # fmt: skip
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return root, res.output


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def test_fit_writes_the_overlay_video(fitted):
    """One video frame per fitted frame; the 3 zoomed 320x320 views in a 2x2 grid under a 3-line header."""
    root, output = fitted
    path = root / "overlays.mp4"
    assert path.is_file()
    assert f"overlay video: {path} ({FRAMES} frames, 640x{HEADER_LINE_PX * HEADER_LINES + 8 + 640}, 5 fps)" in output
    frames, fps = _decode(path)
    header = HEADER_LINE_PX * HEADER_LINES + 8
    assert len(frames) == FRAMES and fps == pytest.approx(5.0)
    assert all(f.shape == (header + 2 * TILE_WIDTH, 2 * TILE_WIDTH, 3) for f in frames)
    assert frames[0][:header].max() > 200  # the header's text ("frame 000000: accepted")
    assert frames[0][header + TILE_WIDTH + 20 :, TILE_WIDTH + 20 :].max() < 40  # the empty fourth cell
    assert not [p.name for p in root.glob(".*tmp*")]  # written under a temporary name, then renamed
    # each frame shows its own fit: consecutive frames differ
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0


def test_zoomed_views_fill_the_panel_with_the_hand(fitted):
    """The fitted hand's projected box spans a small part of a whole-image panel's width (the hand is about a
    third of a 320x240 image here) and over 40 % of a zoomed one (1 / (1 + 2 * margin) = 71 % by construction)."""
    root, _ = fitted
    rig = read_rig(root / "rig.json")
    fit = json.loads((root / "fits" / "000000.json").read_text())
    joints = np.array(fit["joints"])
    for cam in rig:
        uv = cam.project(joints)  # (21, 2)
        W, H = cam.image_size
        extent = np.ptp(uv, axis=0)
        whole_frac = extent[0] / W
        _, _, side = hand_crop_box(uv, (W, H), ZOOM_MARGIN)
        zoom_frac = extent[0] / side
        assert zoom_frac > 0.4 and zoom_frac > 1.3 * whole_frac, (cam.name, whole_frac, zoom_frac)


def test_rewriting_replaces_the_video_and_no_fits_write_nothing(fitted, tmp_path, caplog):
    root, _ = fitted
    res = session_overlay_video(root, OverlayVideoSettings(fps=2.0, name="again.mp4", zoom=False))
    assert res.frames == FRAMES and res.path == root / "again.mp4"
    frames, fps = _decode(res.path)
    assert len(frames) == FRAMES and fps == pytest.approx(2.0)
    assert res.size == (640, HEADER_LINE_PX * HEADER_LINES + 8 + 2 * 240)  # whole 320x240 views
    res.path.unlink()
    empty = tmp_path / "empty"
    for p in ("rig.json",):
        (empty).mkdir(exist_ok=True)
        (empty / p).write_bytes((root / p).read_bytes())
    for cam in read_rig(root / "rig.json").names:
        (empty / "images" / cam).mkdir(parents=True)
        (empty / "images" / cam / "000000.jpg").write_bytes((root / "images" / cam / "000000.jpg").read_bytes())
    assert session_overlay_video(empty).path is None
    assert not (empty / "overlays.mp4").exists()
    with pytest.raises(HandannoError, match="frame rate"):
        OverlayVideoSettings(fps=0)
