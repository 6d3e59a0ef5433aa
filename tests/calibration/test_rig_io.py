"""Tests of handanno.calibration.rig_io: rig.json, Anipose, EasyMocap and seed formats, dispatch, CLI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from handanno.calibration.camera import Camera, CameraRig
from handanno.calibration.rig_io import (
    convert_rig,
    detect_format,
    load_any_rig,
    parse_image_size,
    read_anipose,
    read_easymocap,
    read_rig,
    read_seed,
    save_any_rig,
    write_anipose,
    write_easymocap,
    write_rig,
    write_seed,
)
from handanno.cli import main
from handanno.errors import HandannoError


def _cam(name: str, f: float, rvec, t, dist, size=(1280, 720)) -> Camera:
    K = [[f, 0.0, size[0] / 2 + 3.25], [0.0, f * 1.01, size[1] / 2 - 1.5], [0.0, 0.0, 1.0]]
    return Camera(name, K, dist, cv2.Rodrigues(np.array(rvec, float))[0], t, size)


@pytest.fixture
def rig3() -> CameraRig:
    """Three cameras with distortion, non-trivial R, different intrinsics, names cam2 < cam3 < cam10."""
    return CameraRig((
        _cam("cam10", 1000.123456789, (0.1, -0.2, 0.3), (0.1, -0.05, 1.5), (-0.21, 0.05, 1e-3, -2e-4, 0.013)),
        _cam("cam2", 1234.5, (-1.2, 0.4, 2.9), (-0.3, 0.2, 2.1), (0.11, -0.07, -3e-4, 5e-4, 0.0)),
        _cam("cam3", 987.0, (2.0, 1.0, -0.5), (0.0, 0.0, 1.0), (-0.3, 0.12, 0.0, 0.0, -0.02), (1920, 1080)),
    ))


@pytest.fixture
def shared_rig() -> CameraRig:
    """Three cameras with identical intrinsics (the seed format's own case)."""
    d = (-0.1, 0.02, 1e-4, 0.0, 0.0)
    return CameraRig(tuple(_cam(f"cam{i}", 1100.0, (0.3 * i, 0.1, -0.2 * i), (0.1 * i, 0.0, 1.2), d, (1200, 900))
                           for i in (10, 2, 3)))


def assert_rigs_close(a: CameraRig, b: CameraRig, atol: float = 1e-9) -> None:
    assert a.names == b.names
    for ca, cb in zip(a, b, strict=True):
        assert ca.image_size == cb.image_size
        for f in ("K", "dist", "R", "t"):
            np.testing.assert_allclose(getattr(ca, f), getattr(cb, f), atol=atol, rtol=0, err_msg=f"{ca.name}.{f}")


def test_rig_orders_cameras_naturally(rig3):
    assert rig3.names == ["cam2", "cam3", "cam10"]


# ----------------------------------------------------------------------------- rig.json


def test_rig_json_round_trip_is_exact_and_matches_the_contract(rig3, tmp_path):
    path = write_rig(rig3, tmp_path / "rig.json")
    doc = json.loads(path.read_text())
    assert doc["units"] == "m" and list(doc["cameras"]) == ["cam2", "cam3", "cam10"]
    assert set(doc["cameras"]["cam2"]) == {"image_size", "K", "dist", "R", "t"}
    assert doc["cameras"]["cam3"]["image_size"] == [1920, 1080] and len(doc["cameras"]["cam3"]["dist"]) == 5
    assert_rigs_close(read_rig(path), rig3, atol=0.0)  # JSON keeps float64 exactly
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def _rig_doc(rig: CameraRig) -> dict:
    return {"units": "m", "cameras": {c.name: c.to_dict() for c in rig}}


def test_rig_json_wrong_K_shape_names_file_camera_and_field(rig3, tmp_path):
    doc = _rig_doc(rig3)
    doc["cameras"]["cam3"]["K"] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    (tmp_path / "rig.json").write_text(json.dumps(doc))
    with pytest.raises(HandannoError, match=r"rig\.json: camera 'cam3': field K must have shape \(3, 3\), got \(2, 3"):
        read_rig(tmp_path / "rig.json")


def test_rig_json_non_rotation_names_file_and_camera(rig3, tmp_path):
    doc = _rig_doc(rig3)
    doc["cameras"]["cam10"]["R"] = (2 * np.eye(3)).tolist()
    (tmp_path / "rig.json").write_text(json.dumps(doc))
    with pytest.raises(HandannoError, match=r"rig\.json: camera 'cam10': R is not a rotation"):
        read_rig(tmp_path / "rig.json")


def test_rig_json_truncated_names_the_file(rig3, tmp_path):
    path = write_rig(rig3, tmp_path / "rig.json")
    path.write_text(path.read_text()[:200])
    with pytest.raises(HandannoError, match=rf"{tmp_path}/rig\.json: not valid JSON"):
        read_rig(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(units="mm"), r"units 'mm' are not supported"),
        (lambda d: d.pop("units"), r'missing "units"'),
        (lambda d: d.update(cameras={}), r'"cameras" must be a non-empty object'),
        (lambda d: d["cameras"]["cam2"].pop("t"), r"camera 'cam2': missing field\(s\) t"),
        (lambda d: d["cameras"]["cam2"].update(dist=[0.1, 0.2]), r"camera 'cam2': field dist"),
        (lambda d: d["cameras"]["cam2"].update(image_size=[640.5, 480]), r"camera 'cam2': field image_size"),
    ],
)
def test_rig_json_contract_errors(rig3, tmp_path, edit, message):
    doc = _rig_doc(rig3)
    edit(doc)
    (tmp_path / "rig.json").write_text(json.dumps(doc))
    with pytest.raises(HandannoError, match=message) as info:
        read_rig(tmp_path / "rig.json")
    assert str(tmp_path / "rig.json") in str(info.value)


def test_rig_json_missing_file(tmp_path):
    with pytest.raises(HandannoError, match="file not found"):
        read_rig(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- Anipose

ANIPOSELIB_TOML = """\
[cam_0]
name = "cam10"
size = [ 1280, 720,]
matrix = [ [ 1000.5, 0.0, 640.25,], [ 0.0, 1001.0, 360.0,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.1, 0.01, 0.0005, -0.0002, 0.0,]
rotation = [ 0.1, -0.2, 0.3,]
translation = [ 100.0, -50.0, 1500.0,]

[cam_1]
name = "cam2"
size = [ 1280, 720,]
matrix = [ [ 990.0, 0.0, 641.0,], [ 0.0, 991.0, 359.0,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.2, 0.03, 0.0, 0.0, 0.0,]
rotation = [ -1.0, 0.5, 2.5,]
translation = [ -300.0, 200.0, 2100.0,]

[cam_2]
size = [ 1920, 1080,]
matrix = [ [ 1500.0, 0.0, 960.0,], [ 0.0, 1500.0, 540.0,], [ 0.0, 0.0, 1.0,],]
distortions = [ 0.0, 0.0, 0.0, 0.0, 0.0,]
rotation = [ 0.0, 0.0, 0.0,]
translation = [ 0.0, 0.0, 1000.0,]

[metadata]
adjusted = false
error = 0.42
"""


def test_anipose_reads_aniposelib_output(tmp_path):
    # The layout aniposelib's CameraGroup.dump writes (toml package: trailing commas); translations in mm.
    path = tmp_path / "calibration.toml"
    path.write_text(ANIPOSELIB_TOML)
    rig = read_anipose(path, units="mm")
    assert rig.names == ["cam2", "cam10", "cam_2"]  # natural order; a table without name keeps its table name
    cam10 = rig["cam10"]
    np.testing.assert_allclose(cam10.K, [[1000.5, 0, 640.25], [0, 1001.0, 360.0], [0, 0, 1]])
    np.testing.assert_allclose(cam10.dist, [-0.1, 0.01, 0.0005, -0.0002, 0.0])
    np.testing.assert_allclose(cam10.rvec, [0.1, -0.2, 0.3], atol=1e-12)
    np.testing.assert_allclose(cam10.t, [0.1, -0.05, 1.5], atol=1e-12)
    assert rig["cam_2"].image_size == (1920, 1080)
    assert read_anipose(path)["cam10"].t[2] == pytest.approx(1500.0)  # default unit: metres


def test_anipose_round_trip_and_layout(rig3, tmp_path):
    path = write_anipose(rig3, tmp_path / "calibration.toml")
    doc = tomllib.loads(path.read_text())
    assert list(doc) == ["cam_0", "cam_1", "cam_2", "metadata"]
    assert doc["metadata"] == {"units": "m"}
    cam = doc["cam_2"]  # what aniposelib's Camera.load_dict reads
    assert set(cam) == {"name", "size", "matrix", "distortions", "rotation", "translation"}
    assert cam["name"] == "cam10" and cam["size"] == [1280, 720] and np.shape(cam["matrix"]) == (3, 3)
    np.testing.assert_allclose(cam["rotation"], rig3["cam10"].rvec, atol=0)
    # K, dist and t are written with repr (exact); R goes through axis-angle (Rodrigues, ~1e-15).
    assert_rigs_close(read_anipose(path), rig3, atol=1e-12)


def test_anipose_units_round_trip(rig3, tmp_path):
    path = write_anipose(rig3, tmp_path / "calibration.toml", units="mm")
    doc = tomllib.loads(path.read_text())
    np.testing.assert_allclose(doc["cam_0"]["translation"], rig3["cam2"].t * 1000)
    assert_rigs_close(read_anipose(path), rig3, atol=1e-12)  # the metadata says mm


def test_anipose_writes_names_toml_can_parse(tmp_path):
    cam = _cam('we"ird\\name\x7f', 1000.0, (0.1, 0.0, 0.0), (0.0, 0.0, 1.0), np.zeros(5))
    path = write_anipose(CameraRig((cam,)), tmp_path / "calibration.toml")
    assert read_anipose(path).names == [cam.name]


def test_anipose_errors_name_file_and_camera(tmp_path):
    path = tmp_path / "calibration.toml"
    path.write_text(ANIPOSELIB_TOML.replace("[ 990.0, 0.0, 641.0,], ", ""))  # a 2x3 matrix
    with pytest.raises(HandannoError, match=r"calibration\.toml: camera 'cam2': field K must have shape"):
        read_anipose(path)
    path.write_text(ANIPOSELIB_TOML.replace('name = "cam2"', 'name = "cam2"\nfisheye = true'))
    with pytest.raises(HandannoError, match=r"camera 'cam2' \(table \[cam_1\]\): fisheye"):
        read_anipose(path)
    path.write_text(ANIPOSELIB_TOML[:300])
    with pytest.raises(HandannoError, match=r"calibration\.toml: not a valid TOML file"):
        read_anipose(path)
    path.write_text(ANIPOSELIB_TOML.replace("translation = [ -300.0, 200.0, 2100.0,]\n", ""))
    with pytest.raises(HandannoError, match=r"camera 'cam2' \(table \[cam_1\]\): missing field\(s\) translation"):
        read_anipose(path)


# ----------------------------------------------------------------------------- EasyMocap


def easymocap_style(path: Path, names: list[str], mats: dict[str, np.ndarray]) -> None:
    """A file as EasyMocap's own FileStorage writer makes it (%YAML:1.0, CRLF, 6 decimals)."""
    lines = ["%YAML:1.0", "---", "names:"] + [f'  - "{n}"' for n in names]
    for key, value in mats.items():
        value = np.atleast_2d(value)
        lines += [f"{key}: !!opencv-matrix", f"  rows: {value.shape[0]}", f"  cols: {value.shape[1]}", "  dt: d",
                  "  data: [{}]".format(", ".join(f"{v:.6f}" for v in value.ravel()))]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def write_easymocap_like_easymocap(rig: CameraRig, folder: Path) -> None:
    intri, extri = {}, {}
    for c in rig:
        intri[f"K_{c.name}"] = c.K
        intri[f"dist_{c.name}"] = c.dist[None]
        extri[f"R_{c.name}"] = c.rvec[:, None]
        extri[f"Rot_{c.name}"] = c.R
        extri[f"T_{c.name}"] = c.t[:, None]
    easymocap_style(folder / "intri.yml", rig.names, intri)
    easymocap_style(folder / "extri.yml", rig.names, extri)


def test_easymocap_round_trip_full_precision(rig3, tmp_path):
    intri, extri = write_easymocap(rig3, tmp_path)
    assert (intri.name, extri.name) == ("intri.yml", "extri.yml")
    assert_rigs_close(read_easymocap(tmp_path), rig3, atol=1e-12)
    assert_rigs_close(read_easymocap(extri), rig3, atol=1e-12)


def test_easymocap_file_is_what_easymocap_reads(rig3, tmp_path):
    # EasyMocap's read_camera: names list, K_, H_/W_ via int(real()), R_ via Rodrigues, T_, dist_.
    write_easymocap(rig3, tmp_path)
    intri = cv2.FileStorage(str(tmp_path / "intri.yml"), cv2.FILE_STORAGE_READ)
    extri = cv2.FileStorage(str(tmp_path / "extri.yml"), cv2.FILE_STORAGE_READ)
    node = intri.getNode("names")
    names = [node.at(i).string() for i in range(node.size())]
    assert names == rig3.names
    for cam in rig3:
        np.testing.assert_allclose(intri.getNode(f"K_{cam.name}").mat(), cam.K)
        assert intri.getNode(f"dist_{cam.name}").mat().shape == (1, 5)
        size = (int(intri.getNode(f"W_{cam.name}").real()), int(intri.getNode(f"H_{cam.name}").real()))
        assert size == cam.image_size
        np.testing.assert_allclose(cv2.Rodrigues(extri.getNode(f"R_{cam.name}").mat())[0], cam.R, atol=1e-12)
        np.testing.assert_allclose(extri.getNode(f"Rot_{cam.name}").mat(), cam.R)
        np.testing.assert_allclose(extri.getNode(f"T_{cam.name}").mat(), cam.t[:, None])


def test_easymocap_reads_easymocap_files_and_needs_image_size(rig3, tmp_path):
    write_easymocap_like_easymocap(rig3, tmp_path)
    with pytest.raises(HandannoError, match=r"intri\.yml: camera 'cam2': no image size.*--image-size"):
        read_easymocap(tmp_path)
    rig = read_easymocap(tmp_path / "intri.yml", image_size=(1280, 720))
    assert rig.names == ["cam2", "cam3", "cam10"] and rig["cam3"].image_size == (1280, 720)
    # EasyMocap's writer keeps 6 decimals.
    for a, b in zip(rig, rig3, strict=True):
        np.testing.assert_allclose(a.K, b.K, atol=5e-7)
        np.testing.assert_allclose(a.R, b.R, atol=1e-5)
        np.testing.assert_allclose(a.t, b.t, atol=5e-7)


def test_easymocap_errors(rig3, tmp_path):
    write_easymocap(rig3, tmp_path)
    extri = {}
    for c in rig3:  # Rot_cam3 no longer matches R_cam3
        extri.update({f"R_{c.name}": c.rvec[:, None], f"T_{c.name}": c.t[:, None],
                      f"Rot_{c.name}": cv2.Rodrigues(c.rvec + 0.1)[0] if c.name == "cam3" else c.R})
    easymocap_style(tmp_path / "extri.yml", rig3.names, extri)
    with pytest.raises(HandannoError, match=r"extri\.yml: camera 'cam3': R_cam3 \(axis-angle\) and Rot_cam3"):
        read_easymocap(tmp_path)
    (tmp_path / "extri.yml").unlink()
    with pytest.raises(HandannoError, match=r"extri\.yml: file not found"):
        read_easymocap(tmp_path)
    with pytest.raises(HandannoError, match=r"camera 'a.b': EasyMocap names"):
        write_easymocap(CameraRig((_cam("a.b", 900.0, (0, 0, 0), (0, 0, 1), np.zeros(5)),)), tmp_path)


# ----------------------------------------------------------------------------- seed


def seed_reader(folder: Path, view_num: int) -> dict:
    """The seed project's own reading code (main script + its MANO fitter's use of the values)."""
    with open(folder / "intrinsic.json") as icf:
        data = json.load(icf)
        cal = {"cam_matrix": np.array(data["intrinsic"]),
               "distortion_coefficients": np.array(data["distortion_coefficients"]).reshape(
                   np.size(data["distortion_coefficients"]), 1)}
    with open(folder / "extrinsic.json") as ecf:
        data = json.load(ecf)
        cal["extrinsic"] = {str(i): np.array(data["extrinsic" + str(i)])[0] for i in range(view_num)}
    cal["R"] = {k: Rotation.from_rotvec(np.array(v["rvec"]).squeeze()).as_matrix() for k, v in cal["extrinsic"].items()}
    cal["t"] = {k: np.reshape(v["tvec"], (1, 3)) for k, v in cal["extrinsic"].items()}
    return cal


def test_seed_shared_round_trip_and_seed_can_read_it(shared_rig, tmp_path):
    intri, extri = write_seed(shared_rig, tmp_path)
    doc = json.loads(intri.read_text())
    assert set(doc) == {"intrinsic", "distortion_coefficients", "image_size"}
    cal = seed_reader(tmp_path, 3)
    for i, cam in enumerate(shared_rig):
        np.testing.assert_allclose(cal["cam_matrix"], cam.K)
        np.testing.assert_allclose(cal["distortion_coefficients"].ravel(), cam.dist)
        np.testing.assert_allclose(cal["R"][str(i)], cam.R, atol=1e-12)
        np.testing.assert_allclose(cal["t"][str(i)].ravel(), cam.t)
    assert_rigs_close(read_seed(tmp_path), shared_rig, atol=1e-12)


def test_seed_per_camera_round_trip(rig3, tmp_path, caplog):
    write_seed(rig3, tmp_path / "intrinsic.json", units="mm")
    assert "different intrinsics" in caplog.text
    doc = json.loads((tmp_path / "intrinsic.json").read_text())
    assert set(doc) == {"intrinsic0", "intrinsic1", "intrinsic2"}
    ext = json.loads((tmp_path / "extrinsic.json").read_text())
    assert ext["names"] == ["cam2", "cam3", "cam10"] and ext["units"] == "mm"
    assert np.shape(ext["extrinsic0"][0]["rvec"]) == (3, 1) and np.shape(ext["extrinsic0"][0]["tvec"]) == (3, 1)
    assert_rigs_close(read_seed(tmp_path / "extrinsic.json"), rig3, atol=1e-12)


def test_seed_reads_the_original_files(tmp_path):
    (tmp_path / "intrinsic.json").write_text(json.dumps({
        "intrinsic": [[1000.0, 0.0, 600.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]],
        "distortion_coefficients": [[-0.1, 0.02, 0.0, 0.0, 0.0]]}))
    (tmp_path / "extrinsic.json").write_text(json.dumps({
        f"extrinsic{i}": [{"rvec": [[0.1 * i], [0.2], [0.3]], "tvec": [[0.1], [0.0], [1.0 + i]]}] for i in range(3)}))
    with pytest.raises(HandannoError, match=r"intrinsic\.json: camera '0': no image_size.*--image-size"):
        read_seed(tmp_path)
    rig = read_seed(tmp_path, image_size=(1200, 900))
    assert rig.names == ["0", "1", "2"] and rig["2"].image_size == (1200, 900)
    np.testing.assert_allclose(rig["2"].rvec, [0.2, 0.2, 0.3], atol=1e-12)
    np.testing.assert_allclose(rig["2"].t, [0.1, 0.0, 3.0])


def test_seed_errors(shared_rig, tmp_path):
    write_seed(shared_rig, tmp_path)
    ext = json.loads((tmp_path / "extrinsic.json").read_text())
    ext["extrinsic5"] = ext.pop("extrinsic1")
    (tmp_path / "extrinsic.json").write_text(json.dumps(ext))
    with pytest.raises(HandannoError, match=r"extrinsic\.json: extrinsic entries must be numbered 0\.\.2"):
        read_seed(tmp_path)
    ext["extrinsic1"] = ext.pop("extrinsic5")
    ext["extrinsic1"][0]["rvec"] = [1.0, 2.0]
    (tmp_path / "extrinsic.json").write_text(json.dumps(ext))
    with pytest.raises(HandannoError, match=r"extrinsic\.json: camera 'cam3' \('extrinsic1'\): field rvec"):
        read_seed(tmp_path)


# ----------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("fmt", "target", "atol"),
    [
        ("rig", "rig.json", 0.0),
        ("anipose", "calibration.toml", 1e-12),
        ("easymocap", "intri.yml", 1e-12),
        ("seed", "intrinsic.json", 1e-12),
    ],
)
def test_save_any_load_any_round_trip(rig3, tmp_path, fmt, target, atol):
    # By file path (format from the name) ...
    written = save_any_rig(rig3, tmp_path / "a" / target)
    assert detect_format(written[0]) == fmt
    assert_rigs_close(load_any_rig(tmp_path / "a" / target), rig3, atol=atol)
    # ... and by folder (format named for writing, detected for reading).
    save_any_rig(rig3, tmp_path / "b", fmt=fmt)
    assert detect_format(tmp_path / "b") == fmt
    assert_rigs_close(load_any_rig(tmp_path / "b"), rig3, atol=atol)


def test_chain_through_every_format_keeps_the_rig(rig3, tmp_path):
    rig = rig3
    for i, target in enumerate(["x.toml", "em/intri.yml", "seed/intrinsic.json", "back.json"]):
        save_any_rig(rig, tmp_path / f"{i}" / target)
        rig = load_any_rig(tmp_path / f"{i}" / target)
    assert_rigs_close(rig, rig3, atol=1e-9)


def test_dispatch_errors(rig3, tmp_path):
    with pytest.raises(HandannoError, match="name the format"):
        save_any_rig(rig3, tmp_path / "folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HandannoError, match="no rig.json, calibration.toml, intri.yml or intrinsic.json"):
        load_any_rig(tmp_path / "empty")
    with pytest.raises(HandannoError, match="unknown rig format"):
        load_any_rig(tmp_path / "x.json", fmt="colmap")
    with pytest.raises(HandannoError, match="always in metres"):
        save_any_rig(rig3, tmp_path / "rig.json", units="mm")


def test_parse_image_size():
    assert parse_image_size("1920x1080") == (1920, 1080)
    with pytest.raises(HandannoError, match="WIDTHxHEIGHT"):
        parse_image_size("1920,1080")


def test_convert_rig_reports_cameras(rig3, tmp_path):
    write_anipose(rig3, tmp_path / "calibration.toml")
    result = convert_rig(tmp_path / "calibration.toml", tmp_path / "out", dst_fmt="rig")
    assert result.names == ("cam2", "cam3", "cam10") and result.src_fmt == "anipose"
    assert_rigs_close(read_rig(tmp_path / "out" / "rig.json"), rig3, atol=1e-12)


# ----------------------------------------------------------------------------- CLI


def test_cli_rig_convert(rig3, tmp_path):
    write_rig(rig3, tmp_path / "rig.json")
    out = tmp_path / "calibration.toml"
    res = CliRunner().invoke(main, ["rig", "convert", str(tmp_path / "rig.json"), str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1
    assert "converted 3 camera(s) (cam2, cam3, cam10) from rig to anipose" in res.output
    assert_rigs_close(read_anipose(out), rig3, atol=1e-12)


def test_cli_rig_convert_image_size_and_errors(rig3, tmp_path):
    write_easymocap_like_easymocap(rig3, tmp_path)
    res = CliRunner().invoke(main, ["rig", "convert", str(tmp_path / "intri.yml"), str(tmp_path / "rig.json")])
    assert res.exit_code == 2 and "--image-size" in res.output and "cam2" in res.output
    res = CliRunner().invoke(main, ["rig", "convert", str(tmp_path), str(tmp_path / "rig.json"),
                                    "--image-size", "1280x720"])
    assert res.exit_code == 0, res.output
    assert read_rig(tmp_path / "rig.json")["cam10"].image_size == (1280, 720)
    res = CliRunner().invoke(main, ["rig", "convert", str(tmp_path / "rig.json"), str(tmp_path / "o"),
                                    "--to", "seed", "--out-units", "mm"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "extrinsic.json").read_text())["units"] == "mm"
