"""Fixtures of the review tests: one tiny synthetic session (4 cameras, 3 frames, 160x120), fitted once.

The fit runs a short schedule without silhouettes and accepts every fitted frame
(``AcceptSettings.accept_all``), so that a reviewer's rejection is what keeps a frame out of
the labels. Tests that change a session work on their own copy (``copy_session``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings
from handanno.synth.capture import SynthSettings, synthesize

QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)  # what the page shows, not how well it fits
FRAMES = ("000000", "000001", "000002")
CAMERAS = ("cam0", "cam1", "cam2", "cam3")


def quick_fit(root: Path, **kw) -> None:
    """``handanno fit`` on ``root``: short schedule, every fitted frame accepted, no export unless asked."""
    settings = {"device": "cpu", "fit": QUICK, "accept": AcceptSettings.accept_all(), "silhouette": False,
                "export": False, "progress": False} | kw  # fmt: skip
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pipeline(PipelineSettings(session=root, **settings))
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """The synthetic session, not fitted (do not change it: copy it)."""
    out = tmp_path_factory.mktemp("review") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=4, num_frames=3, image_size=(160, 120), keypoint_noise_px=1.0,
                             write_calib=False, image_format="png", progress=False))  # fmt: skip
    return out


@pytest.fixture(scope="session")
def fitted_dir(synth_dir, tmp_path_factory) -> Path:
    """The synthetic session after ``handanno fit`` (do not change it: copy it)."""
    root = Path(shutil.copytree(synth_dir, tmp_path_factory.mktemp("review_fitted") / "session"))
    quick_fit(root)
    return root


@pytest.fixture
def copy_session(tmp_path) -> Callable[[Path], Path]:
    """``copy_session(src)``: a fresh copy of a session in this test's folder."""

    def copy(src: Path) -> Path:
        return Path(shutil.copytree(src, tmp_path / src.name))

    return copy
