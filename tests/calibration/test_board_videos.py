"""Calibration from board videos (issue 21, item 3): synthetic videos against the true rig, the choice of views,
bad input.

The videos are rendered with the project's own board renderer
(:func:`handanno.synth.boards.render_board_view`, exactly through each camera's distortion)
through :func:`handanno.synth.capture.make_rig`'s cameras, with sensor noise, and encoded
with OpenCV's mp4v encoder as :mod:`handanno.synth.videos` does: an operator moves the board
from pose to pose (:func:`handanno.synth.boards.make_board_poses`) and holds it still for a
while at most of them, so that many frames repeat a pose, as in a real board video.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation, Slerp

from handanno.calibration.board import Detection, parse_board_spec
from handanno.calibration.calibrate import CalibrateSettings
from handanno.calibration.camera import Camera, look_at
from handanno.calibration.extrinsics import rotation_angle_deg
from handanno.calibration.rig_io import read_rig, write_rig
from handanno.calibration.view_selection import (
    ViewSelectionSettings,
    board_view_features,
    select_views,
    view_features,
)
from handanno.capture.board_videos import calibrate_board_videos
from handanno.cli import main
from handanno.errors import HandannoError
from handanno.synth.appearance import add_noise, make_background, make_lighting, noise_bank
from handanno.synth.boards import board_texture, make_board_poses, render_board_view
from handanno.synth.capture import make_rig

BOARD = "charuco:7x5:0.04:0.03:DICT_4X4_50"
SIZE = (640, 480)
FPS = 15.0


def board_video_plan(keys: np.ndarray, rng: np.random.Generator, max_hold: int) -> list[tuple[np.ndarray, int]]:
    """Frames of an operator's board video: ``(world-from-board pose (4, 4), render id)`` per frame.

    The board goes through the key poses in order, one frame half-way between two keys (the
    slerp / lerp mid-pose) and is held still at each key for 1 to ``1 + max_hold`` frames;
    frames of one held pose share a render id (the same picture, with new sensor noise).
    """
    frames, rid = [], 0
    for k in range(len(keys)):
        frames += [(keys[k], rid)] * (1 + int(rng.integers(0, max_hold + 1)))
        rid += 1
        if k + 1 < len(keys):
            a, b = keys[k], keys[k + 1]
            mid = np.eye(4)
            mid[:3, :3] = Slerp([0, 1], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))([0.5]).as_matrix()[0]
            mid[:3, 3] = (a[:3, 3] + b[:3, 3]) / 2
            frames.append((mid, rid))
            rid += 1
    return frames


def write_board_videos(out_dir: Path, num_cameras: int, num_poses: int, seed: int, max_hold: int = 4):
    """``out_dir/cam<i>.mp4`` (mp4v, 640x480, 15 fps), one per camera of :func:`make_rig`; returns ``(rig, frames)``."""
    spec = parse_board_spec(BOARD)
    rig, _ = make_rig(num_cameras, SIZE, seed)
    texture = board_texture(spec)
    plan = board_video_plan(make_board_poses(rig, texture, num_poses, seed), np.random.default_rng(seed), max_hold)
    lighting, bank = make_lighting(seed), noise_bank(SIZE, 1.5, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, cam in enumerate(rig):
        background = make_background(SIZE, "texture", seed, i)
        writer = cv2.VideoWriter(str(out_dir / f"{cam.name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
        shown = (-1, None)
        for v, (pose, rid) in enumerate(plan):
            if rid != shown[0]:
                shown = (rid, render_board_view(cam, texture, pose, background, lighting))
            writer.write(add_noise(shown[1], bank, seed, v, i))
        writer.release()
    return rig, len(plan)


def errors_in_cam0_frame(true_rig, est_rig) -> dict[str, np.ndarray]:
    """Per-camera errors against the truth in its cam0 frame, as test_calibrate.py measures them.

    ``focal_pct`` (worst of fx, fy), ``pp_px``, ``rot_deg``, ``centre_mm``; no similarity alignment.
    """
    c0 = true_rig[0]
    out = {k: [] for k in ("focal_pct", "pp_px", "rot_deg", "centre_mm")}
    for ct, ce in zip(true_rig, est_rig, strict=True):
        R = ct.R @ c0.R.T
        t = ct.t - R @ c0.t
        out["focal_pct"].append(np.abs(np.array([ce.K[0, 0] / ct.K[0, 0], ce.K[1, 1] / ct.K[1, 1]]) - 1).max() * 100)
        out["pp_px"].append(np.linalg.norm(ce.K[:2, 2] - ct.K[:2, 2]))
        out["rot_deg"].append(float(rotation_angle_deg(R, ce.R)))
        out["centre_mm"].append(np.linalg.norm(ce.center - (-R.T @ t)) * 1000)
    return {k: np.array(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- accuracy


@pytest.fixture(scope="module")
def board_videos(tmp_path_factory):
    """4 cameras, 40 board poses, ~150 frames (10 s) per video."""
    root = tmp_path_factory.mktemp("board_videos")
    rig, frames = write_board_videos(root / "calib", num_cameras=4, num_poses=40, seed=0)
    return root, rig, frames


def test_board_videos_calibrate_within_the_image_bounds(board_videos):
    """`handanno calibrate CALIB_DIR` on one board video per camera recovers the rig.

    Bounds of today's image calibration (tests/calibration/test_calibrate.py): focal 0.3 % (the
    8-camera synth acceptance), rotation 0.3 deg, centre 5 mm and RMS 0.5 px (the rendered-image
    end-to-end test); principal point 3 px where the 8-camera dome holds 2 px: camera 1 here is
    synth's narrow "close" camera (f = 1000 px at 640x480), whose principal point 40 board poses
    fix no better through either path.

    Measured, worst over the 4 cameras, 60 instants chosen of ~160 frames, against the same 40
    key poses rendered as PNG images through the image path (seed 0 is this test):
    seed 0 video focal 0.13 %, pp 2.2 px, rotation 0.15 deg, centre 1.1 mm, RMS 0.061 px
    (images 0.10 %, 2.5 px, 0.18 deg, 1.5 mm); seed 1 video 0.04 %, 0.4 px, 0.05 deg, 0.8 mm
    (images 0.03 %, 1.1 px, 0.08 deg, 0.5 mm); seed 2 video 0.03 %, 2.4 px, 0.12 deg, 0.7 mm
    (images 0.04 %, 1.3 px, 0.13 deg, 1.3 mm). Neither path meets the dome's 0.1 deg and 1 mm
    with 4 cameras and 40 poses (the dome has 8 and 120).
    """
    root, rig, frames = board_videos
    out, report = root / "rig.json", root / "report"
    res = CliRunner().invoke(main, ["calibrate", str(root / "calib"), "--board", BOARD, "--out", str(out),
                                    "--report", str(report), "--refine-intrinsics"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"cam0 (cam0.mp4): {frames} frames decoded, {frames} searched" in res.output
    assert "instants chosen of" in res.output
    est = read_rig(out)
    assert est.names == rig.names
    err = errors_in_cam0_frame(rig, est)
    assert err["focal_pct"].max() < 0.3
    assert err["pp_px"].max() < 3.0
    assert err["rot_deg"].max() < 0.3
    assert err["centre_mm"].max() < 5.0
    rep = json.loads((report / "report.json").read_text())
    assert rep["rms_px"] < 0.5
    videos = rep["videos"]
    assert videos["chosen"] == 60 == len(videos["chosen_frames"])  # --max-views' default
    assert videos["instants_with_board"] > 60 and videos["instants_covisible"] > 0
    for cam in rig.names:
        v = videos["cameras"][cam]
        assert v["frames_decoded"] == frames and v["frames_searched"] == frames
        assert 0 < v["chosen_with_board"] <= v["frames_with_board"] < frames
        assert rep["cameras"][cam]["views_used"] >= 15
    # the chosen frames are the report's view stems
    stems = set(json.loads((report / "board_poses.json").read_text())["views"])
    assert stems <= {f"{t:06d}" for t in videos["chosen_frames"]}


def test_search_frames_spreads_the_search(board_videos, tmp_path):
    """--search-frames 50 searches every third frame, the same frames in every video."""
    root, _, frames = board_videos
    settings = CalibrateSettings(board=parse_board_spec(BOARD))
    from handanno.capture.board_videos import BoardVideoSettings

    _, sampling = calibrate_board_videos(root / "calib", settings, tmp_path / "rig.json",
                                         video_settings=BoardVideoSettings(max_search_frames=50))  # fmt: skip
    stride = -(-frames // 50)
    assert sampling.stride == stride
    assert all(v.searched == len(range(0, frames, stride)) for v in sampling.videos)
    assert all(t % stride == 0 for t in sampling.chosen)
    assert len(sampling.chosen) <= 50


# --------------------------------------------------------------------------- choosing views


def _feature(u, v, nx=0.0, ny=0.0, size=0.3):
    return [u, v, nx, ny, size]


def test_select_views_skips_repeats_and_keeps_the_spread():
    """A camera that saw the board at 4 places, each repeated 10 times: 4 picks give the 4 places."""
    places = [_feature(0.2, 0.2), _feature(0.8, 0.2), _feature(0.2, 0.8), _feature(0.8, 0.8, 0.4, 0.0)]
    f = np.array([[p] for p in places for _ in range(10)])  # (40, 1, 5)
    sel = select_views(f, ViewSelectionSettings(max_views=4))
    assert sorted(t // 10 for t in sel.chosen) == [0, 1, 2, 3]
    assert sel.candidates == 40 and sel.views_per_camera.tolist() == [4]


def test_select_views_prefers_covisible_and_balances_cameras():
    """Camera 1 sees the board rarely: it still gets views, and views both cameras share come first."""
    rng = np.random.default_rng(0)
    T = 60
    f = np.full((T, 2, 5), np.nan)
    f[:, 0] = np.column_stack([rng.uniform(0, 1, (T, 2)), rng.uniform(-0.5, 0.5, (T, 2)), np.full(T, 0.3)])
    rare = np.array([5, 17, 33, 48])  # the only instants camera 1 sees
    f[rare, 1] = f[rare, 0]
    sel = select_views(f, ViewSelectionSettings(max_views=10))
    assert sel.chosen[0] in rare  # the most cameras first
    assert set(rare) <= set(sel.chosen.tolist())
    assert sel.views_per_camera.tolist() == [10, 4] and sel.shared[0, 1] == 4
    # the cap, the order of picks, determinism
    assert len(sel.chosen) == 10 == len(set(sel.chosen.tolist()))
    np.testing.assert_array_equal(select_views(f, ViewSelectionSettings(max_views=10)).chosen, sel.chosen)


def test_select_views_quality_and_shapes():
    f = np.array([[_feature(0.5, 0.5)], [_feature(0.5, 0.52)], [[np.nan] * 5]])
    sel = select_views(f, ViewSelectionSettings(max_views=5), quality=np.array([[0.3], [1.0], [1.0]]))
    assert sel.chosen.tolist() == [1, 0]  # the view with more corners first; the unseen instant never
    assert sel.candidates == 2
    with pytest.raises(HandannoError, match="features must have shape"):
        select_views(np.zeros((3, 2, 4)))
    with pytest.raises(HandannoError, match="max_views"):
        ViewSelectionSettings(max_views=0)


def test_convention_board_view_features_normal_and_centre():
    """The features of a board seen by a pinhole camera whose focal is the guessed one: the normal's
    x, y are the true normal's in the camera frame (to 1e-6), the centre is the corners' mean over the
    image size, the size the square root of the corners' hull area over the image area."""
    spec = parse_board_spec(BOARD)
    W, H = SIZE
    R, t = look_at(np.array([0.0, -0.5, 0.0]), np.zeros(3))
    cam = Camera("cam", [[W, 0, (W - 1) / 2], [0, W, (H - 1) / 2], [0, 0, 1]], np.zeros(5), R, t, SIZE)
    for rotvec in ([0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, -0.6, 0.2], [0.3, 0.5, 1.0]):
        facing = np.stack([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], axis=1)  # board z -> world +y: away from cam
        R_wb = Rotation.from_rotvec(rotvec).as_matrix() @ facing
        centre_b = np.array([3.5 * spec.square_m, 2.5 * spec.square_m, 0.0])
        t_wb = np.array([0.03, 0.0, -0.02]) - R_wb @ centre_b
        uv = cam.project(spec.object_points() @ R_wb.T + t_wb)  # (N, 2)
        det = Detection(np.arange(spec.num_corners), uv, SIZE)
        f = board_view_features(det, spec, focal_guess=1.0)
        normal_cam = cam.R @ R_wb[:, 2]
        np.testing.assert_allclose(f[2:4], normal_cam[:2], atol=1e-6)
        np.testing.assert_allclose(f[:2], uv.mean(axis=0) / [W, H])
        hull = cv2.contourArea(cv2.convexHull(uv.astype(np.float32)))
        assert f[4] == pytest.approx(np.sqrt(hull / (W * H)), rel=1e-4)
    # fewer than min_corners, or None: not seen
    few = Detection(np.arange(5), uv[:5], SIZE)
    feats = view_features([[det, few, None]], spec, ViewSelectionSettings(min_corners=8))
    assert np.isfinite(feats[0, 0]).all() and np.isnan(feats[0, 1:]).all()


# ------------------------------------------------------------------------------- bad input


def _write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _board_frames(n: int) -> list[np.ndarray]:
    """A fronto-parallel ChArUco board drifting across a 320x240 grey frame."""
    img = parse_board_spec(BOARD).cv_board().generateImage((210, 150), marginSize=0, borderBits=1)
    out = []
    for i in range(n):
        frame = np.full((240, 320), 120, np.uint8)
        x, y = 20 + 8 * i, 30 + 4 * i
        frame[y : y + 150, x : x + 210] = img
        out.append(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    return out


def _calibrate(calib: Path, tmp_path: Path, *extra: str):
    return CliRunner().invoke(main, ["calibrate", str(calib), "--board", BOARD, "--out", str(tmp_path / "rig.json"),
                                     *extra])  # fmt: skip


def _error(res) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Traceback" not in res.output
    return res.output


def test_unreadable_and_truncated_videos_are_named(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    _write_video(calib / "cam0.mp4", _board_frames(10))
    (calib / "cam1.mp4").write_text("not a video")
    out = _error(_calibrate(calib, tmp_path))
    assert str(calib / "cam1.mp4") in out and "camera 'cam1'" in out
    # truncated: the first half of a 40-frame video
    data = _write_video(tmp_path / "whole.mp4", _board_frames(10) * 4).read_bytes()
    (calib / "cam1.mp4").write_bytes(data[: len(data) // 2])
    out = _error(_calibrate(calib, tmp_path))
    assert str(calib / "cam1.mp4") in out and "camera 'cam1'" in out
    assert not (tmp_path / "rig.json").exists()


def test_a_video_without_the_board_is_named(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    _write_video(calib / "cam0.mp4", _board_frames(10))
    _write_video(calib / "cam1.mp4", [np.full((240, 320, 3), 90, np.uint8)] * 10)
    out = _error(_calibrate(calib, tmp_path))
    assert f"{calib / 'cam1.mp4'} (camera 'cam1'): no board found in any of the 10 frames searched" in out
    assert "--board" in out


def test_camera_names_that_do_not_match(tmp_path):
    """Videos beside image folders, two videos for one camera, a rig of other cameras: each named."""
    calib = tmp_path / "calib"
    (calib / "cam2").mkdir(parents=True)
    _write_video(calib / "cam0.mp4", _board_frames(10))
    _write_video(calib / "cam1.mp4", _board_frames(10))
    cv2.imwrite(str(calib / "cam2" / "000.png"), _board_frames(1)[0])
    out = _error(_calibrate(calib, tmp_path))
    assert "board videos for camera(s) cam0, cam1" in out and "image folders for camera(s) cam2" in out
    (calib / "cam2" / "000.png").unlink()  # an empty folder (a report folder, say) is ignored
    _write_video(calib / "cam1.avi", _board_frames(10))
    out = _error(_calibrate(calib, tmp_path))
    assert "camera 'cam1': two board videos" in out and "cam1.avi" in out
    (calib / "cam1.avi").unlink()
    rig, _ = make_rig(2, (320, 240), 0)
    from handanno.calibration.camera import CameraRig

    other = CameraRig.from_cameras(Camera(f"left{i}", c.K, c.dist, c.R, c.t, c.image_size) for i, c in enumerate(rig))
    write_rig(other, tmp_path / "other.json")
    out = _error(_calibrate(calib, tmp_path, "--fix-intrinsics", str(tmp_path / "other.json")))
    assert "intrinsics for camera(s) left0, left1" in out and "board views are of camera(s) cam0, cam1" in out
