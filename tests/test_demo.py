"""``handanno demo``, the README's first command, on a small capture: it runs end to end and its numbers
are those of a working pipeline; it replaces only a folder it made."""

from __future__ import annotations

import json

import pytest

from handanno.demo import DemoSettings, format_summary, run_demo
from handanno.errors import HandannoError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_demo_end_to_end_and_only_its_own_folder(tmp_path):
    out = tmp_path / "demo"
    settings = DemoSettings(out_dir=out, num_cameras=4, num_frames=2, image_size=(640, 480), calib_views=30,
                            device="cpu", silhouette=False, progress=False)  # fmt: skip
    summary = run_demo(settings)
    # calibrated from rendered board views alone: sub-pixel, and the fitted hand a few mm from the truth
    # (2 px keypoint noise, 5 % outliers, 4 cameras at 640x480)
    assert summary["calibration"]["rms_px"] < 1.0
    assert summary["fit"]["mpjpe_mm"] < 10.0 and summary["frames_accepted"] == 2
    assert summary["labels_written"] > 0
    assert json.loads((out / "summary.json").read_text())["frames"] == 2
    assert "MPJPE" in format_summary(summary)
    assert (out / "session" / "overlays").is_dir()

    run_demo(settings)  # its own folder: replaced
    mine = tmp_path / "captures"
    (mine / "session").mkdir(parents=True)
    (mine / "session" / "notes.txt").write_text("mine")
    with pytest.raises(HandannoError, match="not a folder `handanno demo` made"):
        run_demo(DemoSettings(**{**settings.__dict__, "out_dir": mine}))
    assert (mine / "session" / "notes.txt").read_text() == "mine"
