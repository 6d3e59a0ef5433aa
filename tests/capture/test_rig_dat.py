"""The ``dat`` rig reader (``c<i>.dat`` + ``rot_trans_c<i>.dat``) and ``--scale``, on the real capture's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from handanno.calibration.rig_io import convert_rig, detect_format, load_any_rig, read_dat, save_any_rig
from handanno.cli import main
from handanno.errors import HandannoError

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_2view" / "camera_parameters"

# the files' first numbers, as written
C0_K = [[926.0774422800577, 0.0, 356.0891925607645], [0.0, 925.7752194392244, 355.24923198531565], [0.0, 0.0, 1.0]]
C0_DIST = [-0.013959821820868506, 1.4192899312188747, -0.003533980225025572, -0.0035674091977424003,
           -6.394324137393883]
C0_R0 = [-0.09562738931901762, 0.9953225224879513, -0.013728752319527221]
C0_T = [-2.737788430243877, 1.0294288085275956, 16.78699719310363]
C1_T = [1.38111884, 5.19805597, 16.669449]


def _dat_text(*lines: str) -> str:
    """The real files' text: a label line as is, a row of numbers with a space before its newline."""
    return "".join(f"{line}\n" if line.endswith(":") else f"{line} \n" for line in lines)


C0_DAT = _dat_text("intrinsic:", "926.0774422800577 0.0 356.0891925607645", "0.0 925.7752194392244 355.24923198531565",
                   "0.0 0.0 1.0", "distortion:", " ".join(map(repr, C0_DIST)))
RT0_DAT = _dat_text("R:", " ".join(map(repr, C0_R0)), "-0.8585781965838023 -0.07549495398817564 0.5070936720895154",
                    "0.5036853013171367 0.060279251409959794 0.861781601733595", "T:", *map(repr, C0_T))


def test_the_copied_text_is_the_real_files():
    if not REAL.is_dir():
        pytest.skip("../shared/data/real_2view is not here")
    assert (REAL / "c0.dat").read_text() == C0_DAT and (REAL / "rot_trans_c0.dat").read_text() == RT0_DAT


@pytest.fixture
def dat_dir(tmp_path) -> Path:
    """The real files when they are there, else cam0's copied in (text as the real c0 files)."""
    out = tmp_path / "camera_parameters"
    if REAL.is_dir():
        shutil.copytree(REAL, out)
    else:
        out.mkdir()
        (out / "c0.dat").write_text(C0_DAT)
        (out / "rot_trans_c0.dat").write_text(RT0_DAT)
    return out


def test_dat_reader_reads_K_dist_R_T(dat_dir):
    rig = read_dat(dat_dir, image_size=(720, 720))
    cam = rig["cam0"]
    np.testing.assert_array_equal(cam.K, C0_K)
    np.testing.assert_array_equal(cam.dist, C0_DIST)
    np.testing.assert_array_equal(cam.R[0], C0_R0)
    np.testing.assert_array_equal(cam.t, C0_T)
    assert cam.image_size == (720, 720)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real_2view is not here")
def test_dat_reader_on_the_real_files_keeps_the_world_pose_not_the_cam0_to_cam1_block():
    rig = load_any_rig(REAL, image_size=(720, 720), scale=0.043)
    assert rig.names == ["cam0", "cam1"]
    np.testing.assert_allclose(rig["cam1"].t, np.array(C1_T) * 0.043, rtol=1e-15)
    np.testing.assert_allclose(rig["cam0"].t, np.array(C0_T) * 0.043, rtol=1e-15)
    # rot_trans_c1.dat goes on with the cam0-to-cam1 transform: it must agree with the two world poses
    R01 = np.array([[0.29887999547973493, 0.8349811330288351, -0.4620359897106675],
                    [-0.6732857877838804, 0.527623336167909, 0.5179767013093204],
                    [0.6762817432625791, 0.15626939117091385, 0.7198769902648636]])
    np.testing.assert_allclose(rig["cam1"].R @ rig["cam0"].R.T, R01, atol=1e-7)
    baseline = np.linalg.norm(rig["cam0"].center - rig["cam1"].center)
    assert baseline == pytest.approx(12.5195 * 0.043, rel=1e-4)  # 0.54 m between the webcams


def test_dat_detection_scale_and_errors(dat_dir, tmp_path):
    assert detect_format(dat_dir) == "dat" and detect_format(dat_dir / "c0.dat") == "dat"
    rig = load_any_rig(dat_dir / "c0.dat", image_size=(720, 720), scale=0.5)
    np.testing.assert_allclose(rig["cam0"].t, np.array(C0_T) * 0.5)
    units = load_any_rig(dat_dir, image_size=(720, 720), units="cm", scale=2.0)
    np.testing.assert_allclose(units["cam0"].t, np.array(C0_T) * 0.02)
    with pytest.raises(HandannoError, match="do not store the image size"):
        read_dat(dat_dir)
    with pytest.raises(HandannoError, match="read only"):
        save_any_rig(rig, tmp_path / "x", fmt="dat")
    with pytest.raises(HandannoError, match="scale must be a finite number > 0"):
        load_any_rig(dat_dir, image_size=(720, 720), scale=-1.0)
    (dat_dir / "rot_trans_c0.dat").write_text("R:\n1 0 0\n0 1 0\n0 0 1\nT:\n1 2\n")
    with pytest.raises(HandannoError, match=r"rot_trans_c0\.dat: 'T:' must hold 3 numbers"):
        read_dat(dat_dir, image_size=(720, 720))
    (dat_dir / "rot_trans_c0.dat").unlink()
    with pytest.raises(HandannoError, match=r"rot_trans_c0\.dat: file not found"):
        read_dat(dat_dir, image_size=(720, 720))
    (dat_dir / "rot_trans_c0.dat").write_text(RT0_DAT)
    (dat_dir / "c0.dat").write_text("intrinsic:\n1 0 x\n")
    with pytest.raises(HandannoError, match=r"c0\.dat: line 2: not a row of numbers"):
        read_dat(dat_dir, image_size=(720, 720))


def test_scale_applies_to_every_format(tmp_path, dat_dir):
    rig = load_any_rig(dat_dir, image_size=(720, 720))
    save_any_rig(rig, tmp_path / "rig.json")
    scaled = load_any_rig(tmp_path / "rig.json", scale=0.043)
    np.testing.assert_allclose(scaled["cam0"].t, rig["cam0"].t * 0.043)
    np.testing.assert_allclose(scaled["cam0"].R, rig["cam0"].R)
    res = convert_rig(dat_dir, tmp_path / "out.json", image_size=(720, 720), scale=0.043)
    assert res.src_fmt == "dat" and res.dst_fmt == "rig"


def test_cli_rig_convert_dat_with_scale(dat_dir, tmp_path):
    out = tmp_path / "rig.json"
    res = CliRunner().invoke(main, ["rig", "convert", str(dat_dir), str(out), "--image-size", "720x720",
                                    "--scale", "0.043"])
    assert res.exit_code == 0, res.output
    assert "from dat to rig" in res.output
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(doc["cameras"]["cam0"]["t"], np.array(C0_T) * 0.043)
    assert doc["cameras"]["cam0"]["image_size"] == [720, 720]
    res = CliRunner().invoke(main, ["rig", "convert", str(dat_dir), str(out), "--scale", "0"])
    assert res.exit_code == 2
