"""Image file checks: size from the header, truncation, and handanno's mark inside its PNGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from handanno.data.files_io import read_image
from handanno.data.image_files import image_damage, image_size_from_header, png_source, png_with_source
from handanno.errors import HandannoError


def _noise(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_header_size_and_whole_files(tmp_path, suffix):
    p = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(p), _noise())
    assert image_size_from_header(p) == (64, 48)
    assert image_damage(p) is None


def test_real_photos_are_whole_with_their_true_size(charuco_dir):
    photos = sorted(charuco_dir.glob("*.jpg")) + sorted(charuco_dir.glob("*.png"))
    if not photos:
        pytest.skip(f"{charuco_dir} holds no photos")
    for p in photos:
        img = cv2.imread(str(p))
        assert image_size_from_header(p) == (img.shape[1], img.shape[0]), p
        assert image_damage(p) is None, p


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_files_are_found_and_read_image_refuses_them(tmp_path, suffix):
    p = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(p), _noise(240, 320))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in image_damage(p)
    with pytest.raises(HandannoError, match=rf"{p.name}: truncated"):
        read_image(p)


def test_bytes_after_the_jpeg_end_marker_are_not_damage(tmp_path):
    """Some cameras pad their files; an EXIF thumbnail's end marker must not hide a cut main image."""
    p = tmp_path / "a.jpg"
    assert cv2.imwrite(str(p), _noise())
    p.write_bytes(p.read_bytes() + b"\x12\x34padding")
    assert image_damage(p) is None
    thumb = (tmp_path / "t.jpg")
    assert cv2.imwrite(str(thumb), _noise(8, 8))
    whole = p.read_bytes()
    # a thumbnail's complete JPEG inside an APP1 segment, then the main image cut short
    app1 = b"\xff\xe1" + (len(thumb.read_bytes()) + 2).to_bytes(2, "big") + thumb.read_bytes()
    cut = whole[:2] + app1 + whole[2 : len(whole) // 2]
    p.write_bytes(cut)
    assert "truncated" in image_damage(p)


def test_png_source_mark_round_trip(tmp_path):
    ok, buf = cv2.imencode(".png", np.full((5, 7), 255, np.uint8))
    p = tmp_path / "m.png"
    p.write_bytes(png_with_source(buf.tobytes(), "grabcut"))
    assert png_source(p) == "grabcut"
    assert (cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) == 255).all()  # decoders ignore the chunk
    p.write_bytes(buf.tobytes())
    assert png_source(p) is None
