"""Board specs, geometry conventions, detection on real and rendered images, and diagnostics."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from handanno.calibration.board import (
    BoardSpec,
    Detection,
    canonical_chessboard_order,
    chessboard_is_symmetric,
    detect_board,
    diagnose_board,
    parse_board_spec,
    read_detector_params,
)
from handanno.calibration.camera import Camera
from handanno.calibration.intrinsics import board_pose_pnp, rms_px
from handanno.errors import HandannoError
from handanno.synth.boards import SyntheticViewSettings, synthetic_detections

# choriginal.jpg: 5x7 squares, DICT_6X6_250, square 0.04 m, marker 0.02 m (data README).
REAL_SPEC = "charuco:5x7:0.04:0.02:DICT_6X6_250"


def _read_opencv_intrinsics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    K, dist = fs.getNode("camera_matrix").mat(), fs.getNode("distortion_coefficients").mat().ravel()
    fs.release()
    return K, dist


# ------------------------------------------------------------------------------------- spec


def test_parse_charuco_spec():
    spec = parse_board_spec("charuco:7x5:0.04:0.03:DICT_4X4_50")
    assert spec == BoardSpec("charuco", 7, 5, 0.04, 0.03, "DICT_4X4_50", False)
    assert spec.inner_corners == (6, 4) and spec.num_corners == 24 and spec.num_markers == 17
    assert parse_board_spec("charuco:7x5:0.04:0.03:4x4_50") == spec  # DICT_ prefix and case optional
    assert parse_board_spec("charuco:5x6:0.04:0.03:DICT_4X4_50", legacy=True).legacy
    assert str(spec) == "charuco:7x5:0.04:0.03:DICT_4X4_50"
    assert parse_board_spec(str(spec)) == spec


def test_parse_chessboard_spec():
    spec = parse_board_spec("chessboard:9x6:0.025")
    assert (spec.kind, spec.inner_corners, spec.num_corners, spec.square_m) == ("chessboard", (9, 6), 54, 0.025)
    assert str(spec) == "chessboard:9x6:0.025"
    assert not chessboard_is_symmetric(spec) and chessboard_is_symmetric(parse_board_spec("chessboard:8x6:0.02"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("aruco:7x5:0.04", "kind must be"),
        ("charuco:7x5:0.04:0.03", "5 fields"),
        ("chessboard:9-6:0.025", "size must be like"),
        ("chessboard:9x6:abc", "numbers in metres"),
        ("charuco:7x5:0.04:0.05:DICT_4X4_50", "smaller than the square"),
        ("charuco:7x5:0.04:0.03:DICT_9X9_50", "unknown ArUco dictionary"),
        ("charuco:12x12:0.04:0.03:DICT_4X4_50", "holds only 50"),
        ("chessboard:1x6:0.025", "too small"),
        ("chessboard:9x6:-1", "positive length"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, match):
    with pytest.raises(HandannoError, match=match):
        parse_board_spec(text)


def test_convention_charuco_object_points_are_opencvs():
    """Corner id i of our board frame is OpenCV's getChessboardCorners()[i] (float32 there)."""
    for text in ("charuco:7x5:0.04:0.03:DICT_4X4_50", "charuco:5x7:0.04:0.02:DICT_6X6_250"):
        spec = parse_board_spec(text)
        np.testing.assert_allclose(spec.object_points(), spec.cv_board().getChessboardCorners(), atol=1e-7)


def test_convention_charuco_corner_pixels_on_a_generated_board():
    """On OpenCV's own board image, corner id i sits at ``margin + p_i * px_per_m - 0.5`` px."""
    spec = parse_board_spec(REAL_SPEC)
    ppm, margin = 2500.0, 50  # 0.04 m squares at 100 px
    img = spec.cv_board().generateImage((500, 700), marginSize=0, borderBits=1)
    img = cv2.copyMakeBorder(img, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    det = detect_board(img, spec)
    assert det.num_corners == spec.num_corners and det.image_size == (600, 800)
    expected = spec.object_points()[det.corner_ids, :2] * ppm + margin - 0.5
    np.testing.assert_allclose(det.corners_px, expected, atol=0.05)  # sharp render: subpixel exact


def _chessboard_image(nx: int, ny: int, square_px: int = 40, border: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A black-top-left chessboard of (nx+1) x (ny+1) squares and its inner corners, row-major."""
    cells = (np.add.outer(np.arange(ny + 1), np.arange(nx + 1)) % 2 * 255).astype(np.uint8)
    img = np.kron(cells, np.ones((square_px, square_px), np.uint8))
    img = cv2.copyMakeBorder(img, border, border, border, border, cv2.BORDER_CONSTANT, value=255)
    row, col = np.divmod(np.arange(nx * ny), nx)
    corners = np.stack([border + (col + 1) * square_px - 0.5, border + (row + 1) * square_px - 0.5], axis=1)
    return img, corners


@pytest.mark.parametrize("size", [(9, 6), (7, 6)])
def test_convention_chessboard_order_follows_the_board_under_any_rotation(size):
    """findChessboardCornersSB and findChessboardCorners start at opposite ends; ours at the black outer square."""
    nx, ny = size
    spec = parse_board_spec(f"chessboard:{nx}x{ny}:0.04")
    img, corners = _chessboard_image(nx, ny)
    rng = np.random.default_rng(0)
    for angle in [0.0, 90.0, 180.0, *rng.uniform(0, 360, 3)]:
        H, W = img.shape
        M = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 0.8)
        M[:, 2] += 100
        turned = cv2.warpAffine(img, M, (W + 200, H + 200), borderValue=255)
        det = detect_board(turned, spec)
        assert det.num_corners == nx * ny, angle
        np.testing.assert_allclose(det.corners_px, corners @ M[:, :2].T + M[:, 2], atol=0.5, err_msg=str(angle))


def test_canonical_order_reverses_a_reversed_grid():
    img, corners = _chessboard_image(9, 6)
    np.testing.assert_array_equal(canonical_chessboard_order(img, corners[::-1].copy(), (9, 6)), corners)
    np.testing.assert_array_equal(canonical_chessboard_order(img, corners, (9, 6)), corners)


# ---------------------------------------------------------------------------- real images


def test_real_charuco_image_all_corners_found(charuco_dir):
    img = cv2.imread(str(charuco_dir / "choriginal.jpg"))
    det = detect_board(img, parse_board_spec(REAL_SPEC))
    assert det.image_size == (640, 480)
    assert det.markers_found == 17
    assert det.num_corners == 24
    np.testing.assert_array_equal(det.corner_ids, np.arange(24))


def test_real_charuco_pose_reprojects_under_one_pixel(charuco_dir):
    """With the tutorial's intrinsics the board pose explains the 24 corners to < 1 px RMS."""
    spec = parse_board_spec(REAL_SPEC)
    det = detect_board(cv2.imread(str(charuco_dir / "choriginal.jpg")), spec)
    K, dist = _read_opencv_intrinsics(charuco_dir / "tutorial_camera_charuco.yml")
    R, t, err = board_pose_pnp(spec.object_points()[det.corner_ids], det.corners_px, K, dist)
    cam = Camera("real", K, dist, R, t, det.image_size)
    assert err == pytest.approx(rms_px(cam.project(spec.object_points()[det.corner_ids]) - det.corners_px))
    assert err < 1.0  # measured 0.22 px
    assert 0.2 < t[2] < 1.0  # board in front of the camera, at a hand-held distance
    assert (R[:, 2] @ t) > 0  # its printed side faces the camera (board z points away)


def test_real_occluded_image_gives_a_subset(charuco_dir):
    spec = parse_board_spec(REAL_SPEC)
    det = detect_board(cv2.imread(str(charuco_dir / "chocclusion.jpg")), spec)
    assert 0 < det.num_corners < 24
    assert len(np.unique(det.corner_ids)) == det.num_corners and det.corner_ids.max() < 24


def test_real_image_with_the_tutorial_detector_params(charuco_dir):
    params = read_detector_params(str(charuco_dir / "detector_params.yml"))
    det = detect_board(cv2.imread(str(charuco_dir / "choriginal.jpg")), parse_board_spec(REAL_SPEC), params)
    assert det.num_corners == 24


def test_diagnose_wrong_dictionary_names_the_right_one(charuco_dir):
    img = cv2.imread(str(charuco_dir / "choriginal.jpg"))
    msg = diagnose_board(img, parse_board_spec("charuco:5x7:0.04:0.02:DICT_4X4_50"))
    assert "no markers of DICT_4X4_50" in msg and "DICT_6X6" in msg


def test_diagnose_wrong_size_says_markers_matched_but_no_corners(charuco_dir):
    img = cv2.imread(str(charuco_dir / "choriginal.jpg"))
    msg = diagnose_board(img, parse_board_spec("charuco:7x5:0.04:0.02:DICT_6X6_250"))
    assert "17 ArUco markers of DICT_6X6_250 were detected" in msg
    assert "no ChArUco corners" in msg and "charuco:5x7:0.04:0.02:DICT_6X6_250 finds 24 corners" in msg
    assert diagnose_board(img, parse_board_spec(REAL_SPEC)) == ""


def test_legacy_pattern_is_detected_only_with_legacy_and_diagnosed():
    """Boards with an even number of rows changed in OpenCV 4.6; --legacy reads the old ones."""
    old = parse_board_spec("charuco:5x6:0.04:0.03:DICT_4X4_50", legacy=True)
    img = old.cv_board().generateImage((500, 600), marginSize=40, borderBits=1)
    assert detect_board(img, old).num_corners == old.num_corners
    new = parse_board_spec("charuco:5x6:0.04:0.03:DICT_4X4_50")
    assert detect_board(img, new).num_corners == 0
    assert "--legacy finds 20 corners" in diagnose_board(img, new)


def test_diagnose_chessboard_squares_instead_of_corners():
    img, _ = _chessboard_image(9, 6)
    msg = diagnose_board(img, parse_board_spec("chessboard:10x7:0.04"))
    assert "chessboard:9x6:0.04" in msg and "inner corners" in msg


def test_blank_image_finds_nothing():
    blank = np.full((240, 320), 200, np.uint8)
    for text in ("charuco:7x5:0.04:0.03:DICT_4X4_50", "chessboard:9x6:0.025"):
        det = detect_board(blank, parse_board_spec(text))
        assert det.num_corners == 0 and det.image_size == (320, 240)
    assert "no ArUco markers" in diagnose_board(blank, parse_board_spec("charuco:7x5:0.04:0.03:DICT_4X4_50"))


# ----------------------------------------------------------------------- synthetic views


def test_detection_sorts_ids_and_is_read_only():
    det = Detection([3, 1], [[30.0, 3.0], [10.0, 1.0]], (64, 48))
    np.testing.assert_array_equal(det.corner_ids, [1, 3])
    np.testing.assert_array_equal(det.corners_px, [[10.0, 1.0], [30.0, 3.0]])
    assert not det.corners_px.flags.writeable
    dense = det.dense(5)
    assert np.isnan(dense[[0, 2, 4]]).all() and dense[3].tolist() == [30.0, 3.0]
    with pytest.raises(HandannoError):
        Detection([1, 2], [[0.0, 0.0]], (64, 48))


def _camera() -> Camera:
    K = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])
    return Camera("c", K, [-0.1, 0.02, 0.001, -0.001, 0.0], np.eye(3), np.zeros(3), (640, 480))


def test_synthetic_detections_project_the_visible_corners():
    cam = _camera()
    spec = parse_board_spec("charuco:7x5:0.04:0.03:DICT_4X4_50")
    R = np.stack([np.eye(3), np.eye(3), np.diag([1.0, -1.0, -1.0])])  # facing, facing, turned away
    t = np.array([[-0.12, -0.08, 0.6], [0.15, -0.08, 0.6], [-0.12, 0.08, 0.6]])  # centred; half out; back side
    dets = synthetic_detections(cam, spec, R, t, SyntheticViewSettings())
    assert dets[0].num_corners == 24
    pts = spec.object_points() @ R[0].T + t[0]
    np.testing.assert_allclose(dets[0].corners_px, cam.project(pts), atol=1e-9)
    assert 6 <= dets[1].num_corners < 24  # partly outside the image
    assert dets[2].num_corners == 0  # printed side turned away
    chess = synthetic_detections(cam, parse_board_spec("chessboard:9x6:0.025"), R, t, SyntheticViewSettings())
    assert chess[0].num_corners == 54 and chess[1].num_corners == 0  # chessboards are all or nothing
    noisy = synthetic_detections(cam, spec, R[:1], t[:1], SyntheticViewSettings(noise_px=0.5), np.random.default_rng(1))
    assert 0.3 < rms_px(noisy[0].corners_px - dets[0].corners_px) < 1.0  # 2D RMS = sqrt(2) * 0.5
