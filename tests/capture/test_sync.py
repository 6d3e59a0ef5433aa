"""``--sync hand``: offsets recovered exactly from a synthetic capture with an oracle detector.

The capture is ``handanno synth`` (3 cameras, 160x120); each camera's images become an mp4
(mp4v) that starts at another frame of the motion, so that frame ``t`` of cam0's video shows
the same instant as frame ``t + k`` of camera ``c``'s, ``k`` = 0, -7, +12. The oracle knows,
for every decoded frame (by its bytes), which camera and synthetic frame it is, and answers
the projection of that frame's ground-truth joints: a perfect detector.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from handanno.calibration.rig_io import read_rig
from handanno.capture.sync import SyncSettings, choose_samples, estimate_offsets, sample_errors
from handanno.capture.videos import ImportSettings, import_videos
from handanno.errors import HandannoError
from handanno.synth.capture import SynthSettings, synthesize
from handanno.synth.videos import VideoOracle, write_shifted_videos

OFFSETS = {"cam0": 0, "cam1": -7, "cam2": 12}
FIRST = 14  # synthetic frame shown by frame 0 of cam0's video
LENGTHS = {"cam0": 60, "cam1": 55, "cam2": 70}


@pytest.fixture(scope="module")
def synced_capture(tmp_path_factory):
    """``(videos, rig.json, oracle)`` of a synthetic capture whose videos are shifted by OFFSETS."""
    root = tmp_path_factory.mktemp("sync")
    synth = root / "synth"
    synthesize(SynthSettings(out_dir=synth, num_cameras=3, num_frames=80, image_size=(160, 120), calib_views=0,
                             write_keypoints=False, image_noise_std=0.0, seed=3))  # fmt: skip
    starts = {cam: FIRST - k for cam, k in OFFSETS.items()}  # video frame j shows synthetic frame first + j
    videos = write_shifted_videos(synth, root / "videos", starts, LENGTHS)
    oracle = VideoOracle(synth, videos, starts)
    assert oracle.decoded == LENGTHS
    return videos, synth / "rig.json", oracle


def test_sync_with_an_oracle_recovers_the_offsets_exactly(synced_capture, tmp_path):
    videos, rig, oracle = synced_capture
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=videos, rig=rig, sync="hand"), detector=oracle)
    assert rep.offsets == OFFSETS
    assert oracle.unknown == 0 and oracle.calls > 0  # every decoded frame was one the oracle knows
    assert rep.sync["residual_px"] < 0.05, rep.sync
    for cam in ("cam1", "cam2"):
        c = rep.sync["cameras"][cam]
        assert c["runner_up_px"] > 10 * max(c["error_px"], 1e-3), c
    # the session's frame t is cam0's video frame t, and the same instant in every camera
    first = max(0, -min(OFFSETS.values()))
    assert rep.frames[0] == f"{first:06d}"
    assert rep.source_frames["cam1"][0] == first - 7 and rep.source_frames["cam2"][0] == first + 12
    last = min(LENGTHS[c] - OFFSETS[c] for c in OFFSETS) - 1
    assert rep.frames[-1] == f"{last:06d}"
    rec = json.loads((out / "import.json").read_text())
    assert rec["offsets"] == OFFSETS and rec["sync"]["offsets"] == OFFSETS
    # a re-run reads the offsets back and does nothing
    oracle.calls = 0
    again = import_videos(ImportSettings(out=out, videos=videos, rig=rig, sync="hand"), detector=oracle)
    assert again.nothing_to_do and again.offsets == OFFSETS and oracle.calls == 0


def test_estimate_offsets_pure_two_cameras_and_errors():
    """Keypoints from a moving point cloud, cam1's detections shifted by 4 frames."""
    from handanno.calibration.camera import Camera, CameraRig, look_at

    cams = []
    for i, x in enumerate((-0.3, 0.3)):
        R, t = look_at(np.array([x, -0.6, 0.2]))
        cams.append(Camera(f"cam{i}", [[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], np.zeros(5), R, t, (320, 240)))
    rig = CameraRig(tuple(cams))
    rng = np.random.default_rng(0)
    shape = rng.normal(scale=0.04, size=(21, 3))
    path = np.cumsum(rng.normal(scale=0.01, size=(100, 3)), axis=0)
    pts = shape[None] + path[:, None]

    def kp(cam, f):
        uv = rig[cam].project(pts[f])
        return np.concatenate([uv, np.ones((21, 1))], axis=1)

    samples = choose_samples(0, 100, 20, 10)
    dets = {"cam0": {f: kp("cam0", f) for f in range(100)}, "cam1": {f - 4: kp("cam1", f) for f in range(4, 100)}}
    res = estimate_offsets(rig, ["cam0", "cam1"], {"cam0": samples, "cam1": samples}, dets, SyncSettings(search=10))
    assert res.offsets == {"cam0": 0, "cam1": -4} and res.residual_px < 1e-3
    with pytest.raises(HandannoError, match="found in 0 of"):
        estimate_offsets(rig, ["cam0", "cam1"], {"cam0": samples, "cam1": samples}, {"cam0": {}, "cam1": {}})
    with pytest.raises(HandannoError, match="two cameras or more"):
        estimate_offsets(rig, ["cam0"], {"cam0": samples}, dets)
    # a static hand: every offset fits equally, the result says it is not clear-cut
    still = {"cam0": {f: kp("cam0", 0) for f in range(100)}, "cam1": {f: kp("cam1", 0) for f in range(100)}}
    res = estimate_offsets(rig, ["cam0", "cam1"], {"cam0": samples, "cam1": samples}, still)
    assert res.warnings and "not clear-cut" in res.warnings[0]


def test_sample_errors_is_zero_for_consistent_views_and_nan_without_keypoints(synced_capture):
    _, rig_path, _ = synced_capture
    rig = read_rig(rig_path)
    pts = np.random.default_rng(1).normal(scale=0.03, size=(21, 3))
    kp = np.stack([np.concatenate([c.project(pts), np.ones((21, 1))], axis=1) for c in rig])[None]
    assert sample_errors(rig, kp)[0] < 1e-6
    assert np.isnan(sample_errors(rig, np.zeros_like(kp)))[0]


def test_sync_with_the_shipped_network_recovers_the_offsets(synced_capture, tmp_path):
    """``--sync-detector cpm``: the network shipped with handanno finds the hand in the sampled frames
    (no oracle). At 160x120 the hand is ~40 px and moves ~1 px between frames, so its detections
    place each offset within 2 frames (measured: -9 / +11 for -7 / +12); at 640x480
    (benchmarks/bench_import.py) they come out exact. A detector that missed the hand would leave
    the offsets anywhere in +-30."""
    from handanno.capture.videos import NetworkSyncDetector, make_sync_detector
    from handanno.models.checkpoints import shipped_detector_weights

    if shipped_detector_weights() is None:
        pytest.skip("this install has no shipped network")
    videos, rig, _ = synced_capture
    settings = ImportSettings(out=tmp_path / "session", videos=videos, rig=rig, sync="hand", sync_detector="cpm")
    detector = make_sync_detector(settings)
    assert isinstance(detector, NetworkSyncDetector)
    rep = import_videos(settings, detector=detector)
    assert all(abs(rep.offsets[c] - k) <= 2 for c, k in OFFSETS.items()), rep.sync
    assert rep.sync["residual_px"] < 3.0 and sum(rep.sync["detections"].values()) >= 60, rep.sync
    record = json.loads((tmp_path / "session" / "import.json").read_text())
    assert record["request"]["settings"]["sync_detector"] == "cpm"
    with pytest.raises(HandannoError, match="--sync-detector must be one of"):
        ImportSettings(out="s", videos=videos, sync="hand", sync_detector="openpose")
