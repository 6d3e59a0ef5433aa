"""The session folder: discovery on a hand-made folder, what is left out and why, keypoint files."""

import json

import numpy as np
import pytest

from handanno.annotate import session_io
from handanno.annotate.session_io import open_session, parse_frame_range
from handanno.data.files_io import write_image
from handanno.errors import HandannoError

SIZE = (8, 6)  # (width, height) of the tiny test images


def _camera_entry(x: float) -> dict:
    return {"image_size": list(SIZE), "K": [[10.0, 0.0, 4.0], [0.0, 10.0, 3.0], [0.0, 0.0, 1.0]],
            "dist": [0.0] * 5, "R": np.eye(3).tolist(), "t": [x, 0.0, 1.0]}


def make_session(root, rig_cameras, images):
    """Write ``rig.json`` for ``rig_cameras`` and a tiny image for each ``camera -> [frames]``."""
    root.mkdir(parents=True, exist_ok=True)
    rig = {"units": "m", "cameras": {c: _camera_entry(0.1 * i) for i, c in enumerate(rig_cameras)}}
    (root / "rig.json").write_text(json.dumps(rig))
    img = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    for cam, frames in images.items():
        (root / "images" / cam).mkdir(parents=True, exist_ok=True)
        for f in frames:
            write_image(root / "images" / cam / f"{f}.png", img)
    return root


FRAMES = ["f10", "f2", "f1"]


def test_natural_camera_and_frame_order(tmp_path):
    root = make_session(tmp_path / "s", ["cam10", "cam2", "cam1"], {c: FRAMES for c in ("cam10", "cam2", "cam1")})
    s = open_session(root)
    assert s.cameras == ["cam1", "cam2", "cam10"]  # natural, not string order (cam10 < cam2)
    assert s.frames == ("f1", "f2", "f10")
    assert s.skipped == ()
    assert s.images[("cam10", "f2")] == root / "images" / "cam10" / "f2.png"
    assert s.keypoints_path("cam2", "f1") == root / "keypoints2d" / "cam2" / "f1.json"
    assert s.mask_path("cam2", "f1") == root / "masks" / "cam2" / "f1.png"
    assert s.fit_path("f1", "ground_truth") == root / "ground_truth" / "f1.json"


def test_frame_missing_in_one_camera_is_left_out_with_a_note(tmp_path):
    root = make_session(tmp_path / "s", ["cam1", "cam2", "cam10"],
                        {"cam1": FRAMES + ["f7"], "cam2": FRAMES + ["f7"], "cam10": FRAMES})
    s = open_session(root)
    assert "f7" not in s.frames and s.frames == ("f1", "f2", "f10")
    notes = [n for n in s.skipped if "f7" in n]
    assert len(notes) == 1 and "cam10" in notes[0] and "cam1," not in notes[0]
    assert all(k[1] != "f7" for k in s.images)


def test_rig_camera_without_images_is_left_out_with_a_note(tmp_path):
    root = make_session(tmp_path / "s", ["cam1", "cam2", "cam3"], {"cam1": FRAMES, "cam2": FRAMES})
    (root / "images" / "cam9").mkdir()  # a folder with no camera in the rig
    s = open_session(root)
    assert s.cameras == ["cam1", "cam2"]
    assert len(s.rig) == 2
    assert any("cam3" in n and "no image folder" in n for n in s.skipped)
    assert any("cam9" in n and "rig.json" in n for n in s.skipped)


def test_empty_camera_folder_and_hidden_files(tmp_path):
    root = make_session(tmp_path / "s", ["cam1", "cam2", "cam3"], {"cam1": FRAMES, "cam2": FRAMES})
    (root / "images" / "cam3").mkdir()
    # an interrupted atomic write and a macOS resource fork are not frames
    (root / "images" / "cam1" / ".f1.x7k2.tmp.png").write_bytes(b"")
    (root / "images" / "cam2" / "._f1.png").write_bytes(b"\0")
    s = open_session(root)
    assert s.cameras == ["cam1", "cam2"]
    assert any("cam3" in n and "no images" in n for n in s.skipped)
    assert s.frames == ("f1", "f2", "f10")
    assert not any(n.startswith("frame") for n in s.skipped)


def test_session_errors_name_the_problem(tmp_path):
    with pytest.raises(HandannoError, match="does not exist"):
        open_session(tmp_path / "nope")
    root = make_session(tmp_path / "s", ["cam1", "cam2"], {"cam1": ["a"]})
    with pytest.raises(HandannoError, match="fewer than two cameras"):
        open_session(root)
    root = make_session(tmp_path / "t", ["cam1", "cam2"], {"cam1": ["a"], "cam2": ["b"]})
    with pytest.raises(HandannoError, match="no frame stem"):
        open_session(root)


def test_frames_option_selects_after_natural_ordering(tmp_path):
    root = make_session(tmp_path / "s", ["cam1", "cam2"], {c: FRAMES for c in ("cam1", "cam2")})
    s = open_session(root, "1:")
    assert s.frames == ("f2", "f10")
    assert set(s.images) == {(c, f) for c in ("cam1", "cam2") for f in ("f2", "f10")}


@pytest.mark.parametrize(
    ("spec", "want"),
    [(None, "abcde"), ("", "abcde"), ("1:3", "bc"), ("::2", "ace"), ("3:", "de"), (":-2", "abc"),
     ("2", "c"), ("-1", "e"), (" 1 : 4 : 2 ", "bd"), ("::-1", "edcba")],
)
def test_parse_frame_range(spec, want):
    assert parse_frame_range(spec, tuple("abcde")) == tuple(want)


@pytest.mark.parametrize("spec", ["a:b", "1:2:3:4", "1.5", "--1", "::0", "7", "4:2"])
def test_parse_frame_range_errors(spec):
    with pytest.raises(HandannoError, match="--frames"):
        parse_frame_range(spec, tuple("abcde"))


def _write_kp(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keypoints": rows, "source": "test"}))  # json writes NaN as NaN


def test_keypoint_file_round_trip_and_missing_views(tmp_path):
    root = make_session(tmp_path / "s", ["cam1", "cam2"], {c: FRAMES for c in ("cam1", "cam2")})
    s = open_session(root)
    kp = np.column_stack([np.arange(21) * 0.35, np.arange(21) * 0.25, np.linspace(0, 1, 21)])  # inside the 8x6 image
    session_io.write_keypoints_file(s.keypoints_path("cam2", "f2"), kp, "cpm")
    np.testing.assert_allclose(session_io.read_keypoints_file(s.keypoints_path("cam2", "f2")), kp, atol=1e-4)
    all_kp = session_io.read_session_keypoints(s)
    assert all_kp.shape == (3, 2, 21, 3)
    np.testing.assert_allclose(all_kp[1, 1], kp, atol=1e-4)
    all_kp[1, 1] = 0
    assert not all_kp.any()  # views without a file: conf 0 everywhere


def test_keypoint_file_with_nan_names_file_and_row(tmp_path):
    rows = [[1.0, 2.0, 0.9] for _ in range(21)]
    rows[7][1] = float("nan")
    path = tmp_path / "keypoints2d" / "cam1" / "f1.json"
    _write_kp(path, rows)
    with pytest.raises(HandannoError) as err:
        session_io.read_keypoints_file(path)
    assert str(path) in str(err.value) and "[7]" in str(err.value)
    rows[7][1] = None  # JSON null reads as NaN too
    _write_kp(path, rows)
    with pytest.raises(HandannoError, match=r"\[7\]"):
        session_io.read_keypoints_file(path)


@pytest.mark.parametrize(
    ("rows", "match"),
    [([[1.0, 2.0, 0.5]] * 20, "21 rows"), ([[1.0, 2.0]] * 21, "21 rows"), ([[1.0, 2.0, 1.5]] * 21, r"\[0, 1\]"),
     ([["a", 2.0, 0.5]] * 21, "numbers")],
)
def test_bad_keypoint_files_name_the_file(tmp_path, rows, match):
    path = tmp_path / "k.json"
    _write_kp(path, rows)
    with pytest.raises(HandannoError, match=match) as err:
        session_io.read_keypoints_file(path)
    assert str(path) in str(err.value)


def test_mask_round_trip_and_size_check(tmp_path):
    m = np.zeros((SIZE[1], SIZE[0]), bool)
    m[2:4, 3:7] = True
    path = tmp_path / "masks" / "cam1" / "f1.png"
    session_io.write_mask(path, m)
    np.testing.assert_array_equal(session_io.read_mask(path, SIZE), m)
    with pytest.raises(HandannoError, match="mask is 8x6"):
        session_io.read_mask(path, (16, 12))


def test_fit_record_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rec = session_io.fit_record("right", "open", rng.normal(size=48), rng.normal(size=10), rng.normal(size=3),
                                rng.normal(size=(21, 3)), {"accepted": True, "reasons": []})
    path = tmp_path / "fits" / "f1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    back = session_io.read_fit(path)
    np.testing.assert_allclose(back["pose"], rec["pose"])
    assert back["joints"].shape == (21, 3)
    rec["hand"] = "both"
    path.write_text(json.dumps(rec))
    with pytest.raises(HandannoError, match="'hand'"):
        session_io.read_fit(path)
