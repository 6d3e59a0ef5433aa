"""Nothing the user has is lost, and broken inputs never become labels (on a tiny synthetic session).

Each test reproduces one way a plain command used to destroy data or accept a broken input,
and fails on the code before the fix:
- export never replaces a folder it did not make (the session itself, a folder of the user's);
- ``--force`` redoes only handanno's own masks and keypoints, ``synth --force`` only synth's files;
- exports of different frame ranges add up;
- a second run on a locked session stops, a dead holder's lock is taken over, damaged labels are
  made again;
- truncated images and twin image files are left out with a warning naming them;
- an absurd keypoint cannot turn a batch's fits into NaN, and a diverged fit is never written;
- an image of the wrong size is an error naming the camera and the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from handanno.annotate import detect, pipeline
from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings
from handanno.annotate.session_io import (
    mask_made_by_handanno,
    open_session,
    read_fit,
    read_keypoints_file,
    write_keypoints_file,
    write_mask,
)
from handanno.cli import main
from handanno.data.freihand_io import read_freihand
from handanno.data.lock_io import LOCK_NAME, FolderLock
from handanno.errors import HandannoError
from handanno.synth.capture import SynthSettings, synthesize

QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)  # what is run and written, not how well
LOOSE = AcceptSettings.accept_all()  # every fitted frame, whatever the fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(root: Path, **kw) -> PipelineSettings:
    return PipelineSettings(session=root, **({"device": "cpu", "fit": QUICK, "accept": LOOSE, "progress": False,
                                             "silhouette": False} | kw))  # fmt: skip


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=3, num_frames=3, image_size=(160, 120), keypoint_noise_px=1.0,
                             write_calib=False, progress=False))  # fmt: skip
    return out


@pytest.fixture
def session(synth_dir, tmp_path) -> Path:
    return Path(shutil.copytree(synth_dir, tmp_path / "session"))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- 1. export


def test_export_never_replaces_a_folder_it_did_not_make(session, tmp_path):
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    session_before = _tree(session)
    for out in (mine, session):
        res = CliRunner().invoke(main, ["export", "--session", str(session), "--source", "ground_truth",
                                        "--out", str(out)])  # fmt: skip
        assert res.exit_code == 2, res.output
        assert str(out) in res.output and "Traceback" not in res.output
    assert (mine / "thesis.tex").read_text() == "years of work" and len(list(mine.iterdir())) == 1
    assert _tree(session) == session_before  # images, rig.json, ground truth: all there

    # a labels folder handanno made is replaced; one the user added a file to is not
    out = tmp_path / "labels"
    for _ in range(2):
        res = CliRunner().invoke(main, ["export", "--session", str(session), "--source", "ground_truth",
                                        "--out", str(out)])  # fmt: skip
        assert res.exit_code == 0, res.output
    assert len(read_freihand(out)) == 9
    (out / "notes.txt").write_text("mine")
    (session / "ground_truth" / "000001.json").write_text(
        json.dumps(json.loads((session / "ground_truth" / "000001.json").read_text()), indent=2))  # a change
    res = CliRunner().invoke(main, ["export", "--session", str(session), "--source", "ground_truth", "--out", str(out)])
    assert res.exit_code == 2 and "notes.txt" in res.output
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------- 3. --force


def test_fit_force_redoes_only_handannos_masks_and_keypoints(session, monkeypatch):
    # the user's own mask for one view (a plain PNG), handanno's for another
    user_mask = session / "masks" / "cam0" / "000000.png"
    user_mask.parent.mkdir(parents=True)
    m = np.zeros((120, 160), np.uint8)
    m[30:90, 40:120] = 255
    assert cv2.imwrite(str(user_mask), m)
    ours = session / "masks" / "cam1" / "000000.png"
    write_mask(ours, m > 0)
    assert mask_made_by_handanno(ours) and not mask_made_by_handanno(user_mask)
    user_bytes = user_mask.read_bytes()
    report = run_pipeline(_settings(session, silhouette=True, force=True, frames="0:1", export=False))
    assert user_mask.read_bytes() == user_bytes  # kept, --force or not
    assert ours.read_bytes() != user_bytes and mask_made_by_handanno(ours)  # made again by GrabCut
    assert report.inputs_found["masks_given"] == 1 and report.inputs_found["keypoints_given"] == 3
    saved = json.loads((session / "report.json").read_text())
    assert saved["inputs_found"] == report.inputs_found

    # keypoints: with --force a detector redoes only its own files, never the user's (or synth's truth)
    given, detected = session / "keypoints2d" / "cam0" / "000000.json", session / "keypoints2d" / "cam1" / "000000.json"
    write_keypoints_file(given, read_keypoints_file(given), "given")
    write_keypoints_file(detected, read_keypoints_file(detected), "cpm")
    before = {p: p.read_bytes() for p in (session / "keypoints2d").rglob("*.json")}
    fake = np.column_stack([np.full(21, 80.0), np.full(21, 60.0), np.ones(21)])
    monkeypatch.setattr(detect, "make_detector", lambda settings: lambda image, cam: fake)
    s = open_session(session, "0:1")
    cpm = _settings(session, detector="cpm", detector_weights=session, force=True)
    written = detect.run_detect(s, cpm.detect_settings())
    assert written == 1
    np.testing.assert_allclose(read_keypoints_file(detected), fake)
    for p, b in before.items():
        if p != detected:
            assert p.read_bytes() == b, p


def test_synth_force_keeps_what_synth_did_not_make(tmp_path):
    out = tmp_path / "s"
    settings = SynthSettings(out_dir=out, num_cameras=2, num_frames=2, image_size=(96, 72), write_calib=False,
                             progress=False)  # fmt: skip
    synthesize(settings)
    mine = out / "images" / "mycam" / "000000.jpg"
    mine.parent.mkdir()
    mine.write_bytes((out / "images" / "cam0" / "000000.jpg").read_bytes())
    synthesize(SynthSettings(**{**settings.__dict__, "force": True, "seed": 3}))
    assert mine.is_file()  # the user's camera folder survives --force
    assert json.loads((out / "synth.json").read_text())["settings"]["seed"] == 3

    # keypoints the user put in place of synth's: --force refuses before touching anything
    given = out / "keypoints2d" / "cam1" / "000001.json"
    write_keypoints_file(given, read_keypoints_file(given), "given")
    before = _tree(out)
    with pytest.raises(HandannoError, match=r"would overwrite 1 file\(s\).*keypoints2d/cam1/000001.json"):
        synthesize(SynthSettings(**{**settings.__dict__, "force": True, "seed": 4}))
    assert _tree(out) == before


# ------------------------------------------------------------------------------- 4. chunks


def test_fits_of_frame_ranges_add_up_in_the_labels(session):
    run_pipeline(_settings(session, frames="0:1"))
    run_pipeline(_settings(session, frames="1:3"))
    labels = read_freihand(session / "labels")
    assert sorted({e["frame"] for e in labels.index}) == ["000000", "000001", "000002"]
    assert len(labels) == 9
    first = {(e["frame"], e["camera"]): e["source_record"] for e in labels.index}

    # a refit replaces that frame's samples and keeps the others' (carried over, images linked)
    rgb0 = labels.image_paths[0].read_bytes()
    run_pipeline(_settings(session, frames="1:2", force=True, fit=FitSettings(iters_3d=5, iters_2d=7, iters_sil=0)))
    again = read_freihand(session / "labels")
    now = {(e["frame"], e["camera"]): e["source_record"] for e in again.index}
    assert set(now) == set(first)
    assert all((now[k] == first[k]) == (k[0] != "000001") for k in now)
    assert again.image_paths[0].read_bytes() == rgb0


# ------------------------------------------------------------------------------- 5. lock


def test_a_second_run_on_a_locked_session_stops_naming_the_first(session):
    with FolderLock(session, "handanno fit --session elsewhere"):
        holder = rf"in use by `handanno fit --session elsewhere` \(process {os.getpid()}"
        with pytest.raises(HandannoError, match=holder):
            run_pipeline(_settings(session))
        res = CliRunner().invoke(main, ["export", "--session", str(session), "--source", "ground_truth"])
        assert res.exit_code == 2 and "in use by" in res.output
    assert not (session / "fits").exists() and not (session / "labels").exists()
    run_pipeline(_settings(session, frames="0:1"))  # free again
    assert not (session / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over(session):
    code = ("import sys, time; from handanno.data.lock_io import FolderLock; "
            "FolderLock(sys.argv[1], 'handanno fit').acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(session)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(HandannoError, match=f"process {proc.pid}"):
            FolderLock(session, "test").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (session / LOCK_NAME).exists()  # left behind by kill -9
    with FolderLock(session, "test"):
        assert json.loads((session / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_damaged_labels_are_made_again(session):
    run_pipeline(_settings(session))
    labels = session / "labels"
    victim = sorted((labels / "training" / "rgb").iterdir())[4]
    victim.unlink()  # fewer images than the lists say, as two racing runs used to leave it
    with pytest.raises(HandannoError, match="not found"):
        read_freihand(labels)
    report = run_pipeline(_settings(session))  # nothing to fit, but the labels are checked
    assert report.frames_fitted == 0 and report.labels_written == 9
    assert len(read_freihand(labels)) == 9


# ------------------------------------------------------------------------------- 6. images


def test_truncated_image_and_twin_files_are_left_out_naming_them(session, caplog):
    cut = session / "images" / "cam1" / "000001.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None  # OpenCV decodes it without an error: grey below the cut
    twin = session / "images" / "cam2" / "000002.png"
    cv2.imwrite(str(twin), cv2.imread(str(session / "images" / "cam2" / "000002.jpg")))
    with caplog.at_level(logging.WARNING):
        s = open_session(session)
    assert set(s.bad_views) == {("cam1", "000001"), ("cam2", "000002")}
    assert "truncated JPEG" in s.bad_views[("cam1", "000001")]
    assert "000002.jpg" in s.bad_views[("cam2", "000002")] and "000002.png" in s.bad_views[("cam2", "000002")]
    assert str(cut) in caplog.text
    report = run_pipeline(_settings(session))
    assert report.frames_accepted == 3  # the other views carry the frames
    assert any(str(cut) in n for n in report.notes)
    samples = {(e["frame"], e["camera"]) for e in read_freihand(session / "labels").index}
    assert ("000001", "cam1") not in samples and ("000002", "cam2") not in samples and len(samples) == 7


# ------------------------------------------------------------------------------- 7. absurd keypoints


def test_an_absurd_keypoint_is_ignored_and_no_fit_turns_nan(session, caplog):
    p = session / "keypoints2d" / "cam0" / "000001.json"
    kp = read_keypoints_file(p)
    kp[5] = (1e20, 3.0, 1.0)
    write_keypoints_file(p, kp, "given")
    with caplog.at_level(logging.WARNING):
        report = run_pipeline(_settings(session))
    assert str(p) in caplog.text and "[5]" in caplog.text
    assert report.frames_fitted == 3
    for f in ("000000", "000001", "000002"):
        rec = read_fit(session / "fits" / f"{f}.json")  # read_fit refuses NaN
        assert np.isfinite(rec["betas"]).all()


def test_a_diverged_frame_is_refitted_alone_or_skipped_never_written(session, monkeypatch):
    real = pipeline.fit_and_segment

    def diverging(layer, session_, frames, kp, *a, **kw):
        res, masks = real(layer, session_, frames, kp, *a, **kw)
        if "000002" in frames:  # this frame diverges, alone too
            res.pose[frames.index("000002")] = np.nan
        if len(frames) > 1:  # ... and in a batch its NaN reaches the shared shape
            res.betas[:] = np.nan
        return res, masks

    monkeypatch.setattr(pipeline, "fit_and_segment", diverging)
    report = run_pipeline(_settings(session))
    assert report.frames_fitted == 2 and "000002" in report.skipped and "diverged" in report.skipped["000002"]
    assert not (session / "fits" / "000002.json").exists()
    for f in ("000000", "000001"):
        assert np.isfinite(read_fit(session / "fits" / f"{f}.json")["betas"]).all()
    monkeypatch.setattr(pipeline, "fit_and_segment", real)
    assert run_pipeline(_settings(session)).frames_fitted == 1  # a later run fits the skipped frame


# ------------------------------------------------------------------------------- 8. image size


@pytest.mark.parametrize("silhouette", [False, True])
def test_an_image_of_the_wrong_size_is_an_error_naming_camera_and_file(session, silhouette):
    bad = session / "images" / "cam2" / "000001.jpg"
    cv2.imwrite(str(bad), cv2.resize(cv2.imread(str(bad)), (320, 240)))
    with pytest.raises(HandannoError) as err:
        run_pipeline(_settings(session, silhouette=silhouette))
    msg = str(err.value)
    assert "camera cam2" in msg and str(bad) in msg and "320x240" in msg and "160x120" in msg
    assert not (session / "fits").exists()  # the check comes before any stage
