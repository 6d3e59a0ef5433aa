"""``handanno import videos``: exact frame indices, the timeline options, re-runs, resume, bad input.

Every test video shows its frame index as 8 bit blocks in its camera's colour
(conftest.pattern_frame), so each imported image says which video frame of which camera it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import handanno.capture.videos as videos_mod
from handanno.capture.videos import ImportSettings, import_videos
from handanno.cli import main
from handanno.errors import HandannoError


def _images(session: Path, cam: str) -> list[Path]:
    return sorted((session / "images" / cam).glob("*.jpg"))


def _setup(tmp_path, pattern_video, make_rig, counts=(20, 20), fps=(10.0, 10.0), names=("cam0", "cam1")):
    vids = [pattern_video(tmp_path / "in" / f"{n}.mp4", i, c, f) for i, (n, c, f) in
            enumerate(zip(names, counts, fps, strict=True))]
    rig = make_rig(tmp_path / "in" / "rig.json", list(names))
    return vids, rig


def _check_frames(session: Path, names, offsets, read_frame_pattern) -> dict[str, list[int]]:
    """Every image of camera i shows frame stem + offset of camera i's video; returns the stems per camera."""
    stems = {}
    for i, cam in enumerate(names):
        files = _images(session, cam)
        stems[cam] = [int(p.stem) for p in files]
        for p in files:
            index, camera = read_frame_pattern(p)
            assert index == int(p.stem) + offsets.get(cam, 0), (cam, p.name, index)
            assert camera in (None, i), (cam, p.name, camera)
    return stems


def test_round_trip_exact_frame_indices(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    assert rep.frames == tuple(f"{t:06d}" for t in range(20)) and rep.written == 40 and not rep.nothing_to_do
    stems = _check_frames(out, ["cam0", "cam1"], {}, read_frame_pattern)
    assert stems["cam0"] == stems["cam1"] == list(range(20))
    assert json.loads((out / "rig.json").read_text()) == json.loads(rig.read_text())  # copied
    rec = json.loads((out / "import.json").read_text())
    assert rec["complete"] and rec["scans"]["cam0"]["frames"] == 20 and rec["rate"] == 10.0
    assert not rep.warnings


def test_camera_names_default_to_video_stems(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, names=("left", "right"))
    rep = import_videos(ImportSettings(out=tmp_path / "s", videos=vids, rig=rig))
    assert rep.cameras == ("left", "right")
    _check_frames(tmp_path / "s", ["left", "right"], {}, read_frame_pattern)


def test_every_start_end_and_offsets(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(30, 30))
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=3, start=0.5, end=2.5,
                                       offsets={"cam1": 4}))
    # cam1 has frame t + 4 only for t < 26; start 0.5 s = frame 5, end 2.5 s = frame 25 (excluded)
    expected = list(range(5, 25, 3))
    stems = _check_frames(out, ["cam0", "cam1"], {"cam1": 4}, read_frame_pattern)
    assert stems["cam0"] == stems["cam1"] == expected
    assert rep.source_frames == {"cam0": [5, 23], "cam1": [9, 27]}
    assert rep.dropped["cam1"] == {"before": 4, "after": 0, "rate": None}
    assert rep.dropped["cam0"] == {"before": 0, "after": 4, "rate": None}


def test_negative_offset_starts_the_timeline_later(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(15, 15))
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig, offsets={"cam1": -3}))
    stems = _check_frames(out, ["cam0", "cam1"], {"cam1": -3}, read_frame_pattern)
    assert stems["cam0"] == list(range(3, 15)) and rep.frames[0] == "000003"


def test_mismatched_frame_counts_keep_the_common_frames_and_say_so(tmp_path, pattern_video, make_rig,
                                                                  read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(30, 22))
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    stems = _check_frames(out, ["cam0", "cam1"], {}, read_frame_pattern)
    assert stems["cam0"] == stems["cam1"] == list(range(22))
    assert rep.dropped["cam0"]["after"] == 8 and rep.dropped["cam1"]["after"] == 0
    assert any("cam0: 0 frame(s) at the start and 8 at the end" in w for w in rep.warnings), rep.warnings


def test_different_frame_rates_match_frames_by_time(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(20, 40), fps=(10.0, 20.0))
    out = tmp_path / "session"
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    assert rep.rate == 10.0 and len(rep.frames) == 20
    for p in _images(out, "cam1"):
        assert read_frame_pattern(p)[0] == 2 * int(p.stem)  # the 20 fps camera's frame at the same time
    assert any("cam1 runs at 20 fps, the timeline at 10 fps" in w for w in rep.warnings), rep.warnings


def test_rerun_does_nothing_and_force_redoes(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=2))
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.jpg")}
    again = import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=2))
    assert again.nothing_to_do and again.written == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.jpg")} == mtimes
    # other settings: refused without --force, and nothing changes
    with pytest.raises(HandannoError, match=r"every 2 -> 5.*--force"):
        import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=5))
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.jpg")} == mtimes
    forced = import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=2, force=True))
    assert forced.written == 20 and not forced.nothing_to_do
    # --force with other settings replaces the earlier import's images, and only those
    (out / "images" / "cam0" / "notes.txt").write_text("mine")
    import_videos(ImportSettings(out=out, videos=vids, rig=rig, every=5, force=True))
    assert [int(p.stem) for p in _images(out, "cam0")] == [0, 5, 10, 15]
    assert (out / "images" / "cam0" / "notes.txt").read_text() == "mine"
    _check_frames(out, ["cam0", "cam1"], {}, read_frame_pattern)


def test_rerun_after_a_deleted_image_writes_only_that_one(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    (out / "images" / "cam1" / "000007.jpg").unlink()
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    assert rep.written == 1 and rep.kept == 39


def test_interrupted_import_resumes(tmp_path, pattern_video, make_rig, read_frame_pattern, monkeypatch):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(30, 30))
    out = tmp_path / "session"
    real_write = videos_mod.write_image
    calls = {"n": 0}

    def dying_write(path, image, quality):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return real_write(path, image, quality)

    monkeypatch.setattr(videos_mod, "write_image", dying_write)
    with pytest.raises(KeyboardInterrupt):
        import_videos(ImportSettings(out=out, videos=vids, rig=rig, workers=1))
    monkeypatch.setattr(videos_mod, "write_image", real_write)
    written_before = len(list((out / "images").rglob("*.jpg")))
    assert 0 < written_before < 60
    assert not json.loads((out / "import.json").read_text())["complete"]
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    assert rep.kept == written_before and rep.written == 60 - written_before and not rep.nothing_to_do
    stems = _check_frames(out, ["cam0", "cam1"], {}, read_frame_pattern)
    assert stems["cam0"] == stems["cam1"] == list(range(30))
    assert json.loads((out / "import.json").read_text())["complete"]
    assert not list(out.rglob(".*.tmp*"))  # no temporary file left behind


def test_resume_removes_temporary_files_of_a_killed_write(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    rec = json.loads((out / "import.json").read_text())
    rec["complete"] = False  # as if killed (SIGKILL) while writing 000005.jpg
    (out / "import.json").write_text(json.dumps(rec))
    (out / "images" / "cam0" / "000005.jpg").unlink()
    (out / "images" / "cam0" / ".000005.abc123.tmp.jpg").write_bytes(b"half")
    rep = import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    assert rep.written == 1 and not list(out.rglob(".*.tmp*"))


def test_truncated_video_names_file_and_camera_and_loses_nothing(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    import_videos(ImportSettings(out=out, videos=vids, rig=rig))
    before = sorted((out / "images").rglob("*.jpg"))
    record = (out / "import.json").read_text()
    # an mp4 cut short loses its index (moov at the end): OpenCV cannot open it
    data = vids[1].read_bytes()
    vids[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(HandannoError) as err:
        import_videos(ImportSettings(out=out, videos=vids, rig=rig, force=True))
    assert str(vids[1]) in str(err.value) and "'cam1'" in str(err.value)
    assert sorted((out / "images").rglob("*.jpg")) == before and (out / "import.json").read_text() == record


def test_truncated_avi_that_still_opens_is_an_error_naming_the_time_it_is_whole(tmp_path, pattern_video,
                                                                                make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(40, 40))
    avi = pattern_video(tmp_path / "in" / "cam1.avi", 1, 40, fourcc="MJPG")
    data = avi.read_bytes()
    avi.write_bytes(data[: len(data) // 2])  # AVI: the header still says 40 frames, about half decode
    out = tmp_path / "session"
    with pytest.raises(HandannoError, match=r"cam1\.avi \(camera 'cam1'\): the video stops after \d+ frames but its "
                                            r"container says 40.*--end"):
        import_videos(ImportSettings(out=out, videos=[vids[0], avi], rig=rig))
    assert not (out / "images").exists() and not (out / "import.json").exists()


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_unreadable_or_empty_video_names_file_and_camera(tmp_path, pattern_video, make_rig, content):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    vids[0].write_bytes(content)
    with pytest.raises(HandannoError) as err:
        import_videos(ImportSettings(out=tmp_path / "s", videos=vids, rig=rig))
    assert str(vids[0]) in str(err.value) and "'cam0'" in str(err.value)


def test_video_without_frames_names_file_and_camera(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    import cv2

    empty = tmp_path / "in" / "empty.avi"
    vw = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    vw.release()
    with pytest.raises(HandannoError) as err:
        import_videos(ImportSettings(out=tmp_path / "s", videos=[vids[0], empty], names=("cam0", "cam1"), rig=rig))
    assert str(empty) in str(err.value) and "'cam1'" in str(err.value)


def test_missing_video_names_file_and_camera(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    with pytest.raises(HandannoError, match=r"nope\.mp4 \(camera 'cam1'\): video file not found"):
        import_videos(ImportSettings(out=tmp_path / "s", videos=[vids[0], tmp_path / "nope.mp4"],
                                     names=("cam0", "cam1"), rig=rig))
    assert not (tmp_path / "s").exists()


def test_names_not_in_the_rig_missing_rig_and_wrong_size(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    with pytest.raises(HandannoError, match=r"rig\.json: camera\(s\) 'left' .*cam0\.mp4.* not in the rig, whose "
                                            r"cameras are cam0, cam1; .*--names"):
        import_videos(ImportSettings(out=tmp_path / "s1", videos=vids, names=("left", "cam1"), rig=rig))
    with pytest.raises(HandannoError, match=r"no rig\.json in the session; give .* --rig"):
        import_videos(ImportSettings(out=tmp_path / "s2", videos=vids))
    big = make_rig(tmp_path / "big" / "rig.json", ["cam0", "cam1"], size=(640, 480))
    with pytest.raises(HandannoError, match=r"cam0\.mp4 \(camera 'cam0'\): frames are 160x120 but .* 640x480"):
        import_videos(ImportSettings(out=tmp_path / "s3", videos=vids, rig=big))
    for s in ("s1", "s2", "s3"):
        assert not (tmp_path / s / "images").exists()


def test_session_rig_json_is_used_and_never_replaced(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    make_rig(out / "rig.json", ["cam0", "cam1", "cam2"])  # the user's, with a camera more
    rep = import_videos(ImportSettings(out=out, videos=vids))
    assert any("cam2 without a video" in w for w in rep.warnings)
    other = make_rig(tmp_path / "other" / "rig.json", ["cam0", "cam1"])
    with pytest.raises(HandannoError, match=r"rig\.json exists and is not the rig of --rig"):
        import_videos(ImportSettings(out=out, videos=vids, rig=other, force=True))
    # --rig naming the very rig the session holds (other layout, same numbers): used, the file left as it is
    out2 = tmp_path / "session2"
    mine = make_rig(out2 / "rig.json", ["cam0", "cam1"])
    text = mine.read_text()
    import_videos(ImportSettings(out=out2, videos=vids, rig=mine))
    assert mine.read_text() == text and len(_images(out2, "cam1")) == 20


def test_images_not_from_import_are_never_written_into(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    (out / "images" / "cam0").mkdir(parents=True)
    (out / "images" / "cam0" / "000000.jpg").write_bytes(b"mine")
    with pytest.raises(HandannoError, match="did not write"):
        import_videos(ImportSettings(out=out, videos=vids, rig=rig, force=True))
    assert (out / "images" / "cam0" / "000000.jpg").read_bytes() == b"mine"


def test_scale_converts_the_rig(tmp_path, pattern_video, make_rig):
    vids, rig = _setup(tmp_path, pattern_video, make_rig)
    out = tmp_path / "session"
    import_videos(ImportSettings(out=out, videos=vids, rig=rig, scale=0.5))
    doc = json.loads((out / "rig.json").read_text())
    assert doc["cameras"]["cam1"]["t"] == [-0.05, 0.0, 0.0]


def test_settings_errors():
    with pytest.raises(HandannoError, match="--names gives 1 names for 2 videos"):
        ImportSettings(out="s", videos=["a.mp4", "b.mp4"], names=("a",))
    with pytest.raises(HandannoError, match="distinct names"):
        ImportSettings(out="s", videos=["x/a.mp4", "y/a.mp4"])
    with pytest.raises(HandannoError, match="not among the videos' cameras"):
        ImportSettings(out="s", videos=["a.mp4", "b.mp4"], offsets={"c": 3})
    with pytest.raises(HandannoError, match="either --offsets or --sync hand"):
        ImportSettings(out="s", videos=["a.mp4", "b.mp4"], offsets={"b": 3}, sync="hand")
    with pytest.raises(HandannoError, match="--scale applies to the rig"):
        ImportSettings(out="s", videos=["a.mp4"], scale=0.1)


def test_cli_import_videos(tmp_path, pattern_video, make_rig, read_frame_pattern):
    vids, rig = _setup(tmp_path, pattern_video, make_rig, counts=(12, 12))
    out = tmp_path / "session"
    args = ["import", "videos", "--out", str(out), *map(str, vids), "--names", "cam0,cam1", "--rig", str(rig),
            "--offsets", "cam1=2", "--every", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "import: 5 frames x 2 cameras" in res.output
    _check_frames(out, ["cam0", "cam1"], {"cam1": 2}, read_frame_pattern)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = CliRunner().invoke(main, ["import", "videos", "--out", str(out), str(vids[0]), str(tmp_path / "x.mp4"),
                                    "--rig", str(rig)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: ") and "(camera 'x')" in res.output
