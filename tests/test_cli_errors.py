"""The CLI's error wrapper: disk errors are one line naming the path, exit code 2, no traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from handanno.calibration import rig_io
from handanno.cli import main


@pytest.fixture
def rig_json(tmp_path) -> Path:
    """A two-camera rig.json (DESIGN.md layout)."""
    cam = {"image_size": [640, 480], "K": [[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], "dist": [0.0] * 5,
           "R": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "t": [0.0, 0.0, 0.0]}  # fmt: skip
    path = tmp_path / "rig.json"
    path.write_text(json.dumps({"units": "m", "cameras": {"cam0": cam, "cam1": {**cam, "t": [0.1, 0.0, 0.0]}}}))
    return path


def _one_error_line(res) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def test_disk_full_while_writing_is_one_line_naming_the_file(rig_json, tmp_path, monkeypatch):
    out = tmp_path / "out" / "calibration.toml"
    out.parent.mkdir()
    real_write_bytes = Path.write_bytes

    def full_disk(self, data):
        real_write_bytes(self, data[: len(data) // 2])  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    res = CliRunner().invoke(main, ["rig", "convert", str(rig_json), str(out)])
    line = _one_error_line(res)
    assert f"cannot write {out}: no space left on the device" in line and "free some space" in line
    assert list(out.parent.iterdir()) == []  # neither the file nor a temporary file


@pytest.mark.parametrize(
    "code, says",
    [(errno.ENOSPC, "no space left on the device"), (errno.EROFS, "read-only"), (errno.EPERM, "permission denied")],
)
def test_disk_errors_from_anywhere_are_one_line(rig_json, tmp_path, monkeypatch, code, says):
    """An OSError that does not pass through atomic_write (a log file, a folder) is reported the same way."""
    where = str(tmp_path / "run" / "steps.csv")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), where)

    monkeypatch.setattr(rig_io, "convert_rig", fail)
    line = _one_error_line(CliRunner().invoke(main, ["rig", "convert", str(rig_json), str(tmp_path / "o.toml")]))
    assert where in line and says in line and "then run the command again" in line


def test_other_os_errors_are_not_disguised(rig_json, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "/dev/sdz")

    monkeypatch.setattr(rig_io, "convert_rig", fail)
    res = CliRunner().invoke(main, ["rig", "convert", str(rig_json), str(tmp_path / "o.toml")])
    assert res.exit_code == 1 and isinstance(res.exception, OSError) and res.exception.errno == errno.EIO


def test_rig_convert_to_a_folder_without_to_names_the_option(rig_json, tmp_path):
    folder = tmp_path / "anipose_out"
    folder.mkdir()
    line = _one_error_line(CliRunner().invoke(main, ["rig", "convert", str(rig_json), str(folder)]))
    assert str(folder) in line and "--to" in line and "anipose" in line
    assert list(folder.iterdir()) == []
    res = CliRunner().invoke(main, ["rig", "convert", str(rig_json), str(folder), "--to", "anipose"])
    assert res.exit_code == 0, res.output
    assert (folder / "calibration.toml").is_file()


def test_rig_convert_unknown_input_names_from(tmp_path):
    src = tmp_path / "cams.txt"
    src.write_text("not a rig")
    line = _one_error_line(CliRunner().invoke(main, ["rig", "convert", str(src), str(tmp_path / "rig.json")]))
    assert str(src) in line and "--from" in line
