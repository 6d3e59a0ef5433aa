"""atomic_write: permissions of a plain open(), disk errors as one clear message, no temporary files left."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from handanno.calibration.rig_io import read_rig
from handanno.data import files_io
from handanno.data.files_io import atomic_write, atomic_write_bytes, read_json, write_json
from handanno.errors import HandannoError


@pytest.fixture
def umask():
    """Set the process umask for one test (``umask(0o022)``), restoring it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path, umask, mask):
    """A new file is 0666 minus the umask, as open() makes it, not the 0600 of mkstemp."""
    umask(mask)
    written = write_json(tmp_path / "new.json", {"a": 1})
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert _mode(written) == 0o666 & ~mask == _mode(tmp_path / "plain.json")
    if mask == 0o022:
        assert _mode(written) == 0o644


def test_atomic_write_keeps_the_permissions_of_the_file_it_replaces(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "rig.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write_bytes(path, b'{"b": 2}')
    assert _mode(path) == 0o640 and json.loads(path.read_text()) == {"b": 2}


def test_atomic_write_mode_follows_a_umask_changed_after_import(tmp_path, umask):
    """The umask is read when writing (from /proc on Linux), not once for all at import."""
    status = Path("/proc/self/status")
    if not status.is_file() or "Umask:" not in status.read_text():
        pytest.skip("no /proc/self/status Umask line here: the umask is read once at import")
    umask(0o002)
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", b"x")) == 0o664
    umask(0o077)
    assert _mode(atomic_write_bytes(tmp_path / "b.bin", b"x")) == 0o600


@pytest.mark.parametrize(
    "code, says",
    [
        (errno.ENOSPC, "no space left on the device (disk full or quota reached); free some space"),
        (errno.EROFS, "the file system is read-only; choose a folder on a writable disk"),
        (errno.EACCES, "permission denied; choose a folder you may write to"),
    ],
)
def test_disk_errors_name_the_file_say_what_to_do_and_leave_nothing_behind(tmp_path, code, says):
    path = tmp_path / "labels" / "training_xyz.json"
    path.parent.mkdir()
    path.write_text("[1]")

    def writer(p: Path) -> None:
        p.write_bytes(b"[1, 2")  # half written, then the disk gives up
        raise OSError(code, os.strerror(code))

    with pytest.raises(HandannoError) as err:
        atomic_write(path, writer)
    assert str(path) in str(err.value) and says in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == code
    assert sorted(p.name for p in path.parent.iterdir()) == ["training_xyz.json"]  # no temporary file left
    assert path.read_text() == "[1]"  # the old file is untouched


def test_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    """A folder the user may not write to (chmod 0555); as root, which may write anyway, the error is raised."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"")
            probe.unlink()
            can_write = True  # root ignores the mode bits: make mkstemp fail as it would for a user
        except PermissionError:
            can_write = False
        if can_write:

            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".x.tmp"))

            monkeypatch.setattr(files_io.tempfile, "mkstemp", refuse)
        with pytest.raises(HandannoError, match="permission denied") as err:
            write_json(folder / "out.json", {"a": 1})
        assert str(folder / "out.json") in str(err.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_other_errors_of_the_writer_pass_through(tmp_path):
    def writer(p: Path) -> None:
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(tmp_path / "x.bin", writer)
    assert list(tmp_path.iterdir()) == []


def test_no_temporary_file_is_left_on_success(tmp_path):
    write_json(tmp_path / "a.json", [1])
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_broken_json_message_depends_on_who_makes_the_file(tmp_path):
    path = tmp_path / "index.json"
    path.write_text('{"a": ')
    with pytest.raises(HandannoError, match="delete it to have it made again, or fix it"):
        read_json(path)
    with pytest.raises(HandannoError) as err:
        read_json(path, made_by_handanno=False)
    assert f"{path}: not valid JSON" in str(err.value) and "fix the file" in str(err.value)
    assert "delete" not in str(err.value)


def test_broken_rig_json_says_to_fix_it_not_to_delete_it(tmp_path):
    """rig.json is the user's calibration: deleting it would not make it again."""
    path = tmp_path / "rig.json"
    path.write_text('{"units": "m", "cameras": {"cam0": ')
    with pytest.raises(HandannoError) as err:
        read_rig(path)
    assert f"{path}: not valid JSON" in str(err.value) and "fix the file" in str(err.value)
    assert "delete" not in str(err.value)
