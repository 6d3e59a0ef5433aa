"""``run_pipeline`` / ``handanno fit`` end to end on a tiny synthetic session.

4 cameras, 3 frames, 160x120, 1 px keypoint noise; the fitter runs a shortened schedule
(:data:`FAST`) so the module stays well under a minute on two busy CPU cores. Every test
works on its own copy of the session (``shutil.copytree`` keeps the mtimes).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from handanno.annotate import pipeline
from handanno.annotate.detect import run_detect
from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings
from handanno.annotate.session_io import read_fit, read_mask
from handanno.cli import main
from handanno.data.freihand_io import read_freihand
from handanno.errors import HandannoError
from handanno.synth.capture import SynthSettings, synthesize

FAST = FitSettings(iters_3d=20, iters_2d=60, iters_sil=10)  # the default schedule is 80 / 500 / 30
QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)  # for tests of what is run, not how well
FIT_KEYS = {"hand", "model", "pose", "betas", "trans", "joints", "quality"}
QUALITY_KEYS = {"reproj_err_px", "mask_iou", "accepted", "reasons", "reproj_rel", "view_reproj_rel", "view_mask_iou",
                "triangulation_gap_mm", "bone_length_dev", "joint_limit_excess_deg", "thresholds"}  # fmt: skip
FRAMES = ["000000", "000001", "000002"]
# The defaults are chosen for 640x480 captures. Here a hand is about 40 px across: 1 px of noise is
# 2.5 % of it, so the triangulation is ~4 mm off and a mask's border pixels weigh on its IoU (0.74-0.88).
SMALL_RIG = AcceptSettings(min_view_mask_iou=0.7, max_triangulation_gap_mm=8.0)
SMALL_RIG_OPTIONS = ["--min-view-mask-iou", "0.7", "--max-triangulation-gap-mm", "8"]


def _settings(root: Path, **kw) -> PipelineSettings:
    return PipelineSettings(session=root, **({"device": "cpu", "fit": FAST, "accept": SMALL_RIG, "progress": False}
                                             | kw))  # fmt: skip


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.json"))}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=4, num_frames=3, image_size=(160, 120), keypoint_noise_px=1.0,
                             write_calib=False, progress=False))  # fmt: skip
    return out


@pytest.fixture
def session(synth_dir, tmp_path) -> Path:
    """A fresh copy of the synthetic session."""
    return Path(shutil.copytree(synth_dir, tmp_path / "session"))


@pytest.fixture(scope="module")
def fitted(synth_dir, tmp_path_factory):
    """The session after one full run (segment, keypoint + silhouette fit, export): ``(folder, report)``."""
    root = Path(shutil.copytree(synth_dir, tmp_path_factory.mktemp("fitted") / "session"))
    return root, run_pipeline(_settings(root))


def test_full_run_writes_fits_masks_labels(fitted):
    root, report = fitted
    assert report.frames_total == 3 and report.frames_fitted == 3 and report.skipped == {}
    assert report.frames_accepted == 3
    for f in FRAMES:
        rec = json.loads((root / "fits" / f"{f}.json").read_text())
        assert set(rec) == FIT_KEYS and set(rec["quality"]) == QUALITY_KEYS
        assert rec["hand"] == "right" and len(rec["pose"]) == 48 and len(rec["betas"]) == 10
        assert np.asarray(rec["joints"]).shape == (21, 3)
        assert rec["quality"]["accepted"] and rec["quality"]["reasons"] == []
        errs = [v for v in rec["quality"]["reproj_err_px"].values() if v is not None]
        assert len(errs) >= 2 and np.median(errs) < 3.0  # 1 px keypoint noise
        for cam in ("cam0", "cam1", "cam2", "cam3"):
            assert (root / "masks" / cam / f"{f}.png").is_file() or rec["quality"]["mask_iou"][cam] is None
    # Accuracy against the truth, measured on this session (seed 0): with FAST and GrabCut masks MPJPE
    # 6.1 mm, PA-MPJPE 5.2 mm; the unfitted start (mean pose aligned to the triangulation) is 18.8 / 16.1
    # mm and the full default schedule (keypoints only) 2.3 / 1.9 mm. 10 / 8 mm leave ~1.6x headroom over
    # the short schedule and fail a fit that does not move off its start.
    acc = report.accuracy
    assert acc["frames"] == 3 and acc["accepted"] == 3
    assert acc["mpjpe_mm"] < 10.0 and acc["pa_mpjpe_mm"] < 8.0, acc
    lab = read_freihand(root / "labels")
    assert report.labels_written == len(lab) >= 6
    assert {e["frame"] for e in lab.index} == set(FRAMES)
    saved = json.loads(report.report_path.read_text())
    assert saved["frames_fitted"] == 3 and saved["accuracy"]["frames"] == 3


def test_second_run_skips_everything_and_force_redoes(fitted, tmp_path):
    root = Path(shutil.copytree(fitted[0], tmp_path / "session"))
    fits, masks, index = _mtimes(root / "fits"), _mtimes(root / "masks" / "cam0"), (root / "labels" / "index.json")
    index_mtime = index.stat().st_mtime_ns
    again = run_pipeline(_settings(root))
    assert again.frames_fitted == 0 and again.labels_written == 0 and again.frames_accepted == 3
    assert _mtimes(root / "fits") == fits  # no fit rewritten
    assert _mtimes(root / "masks" / "cam0") == masks
    assert index.stat().st_mtime_ns == index_mtime
    assert "fit" not in again.timings_s and "export" not in again.timings_s
    forced = run_pipeline(_settings(root, force=True, silhouette=False, fit=QUICK))
    assert forced.frames_fitted == 3 and forced.labels_written == len(read_freihand(root / "labels"))
    new = _mtimes(root / "fits")
    assert all(new[k] > fits[k] for k in fits)


def test_new_thresholds_judge_the_fits_again_without_refitting(fitted, tmp_path):
    """Only the acceptance changes (a user tries other thresholds): the fits are kept, judged again,
    the labels follow; back to the first thresholds, the frames are accepted again."""
    root = Path(shutil.copytree(fitted[0], tmp_path / "session"))
    before = {f: json.loads((root / "fits" / f"{f}.json").read_text()) for f in FRAMES}
    strict = replace(SMALL_RIG, max_reproj_px=0.01)
    rep = run_pipeline(_settings(root, accept=strict))
    assert rep.frames_fitted == 0 and rep.frames_accepted == 0
    for f in FRAMES:
        rec = json.loads((root / "fits" / f"{f}.json").read_text())
        assert rec["pose"] == before[f]["pose"] and rec["betas"] == before[f]["betas"]  # not refitted
        q = rec["quality"]
        assert not q["accepted"] and any("median reprojection error" in r for r in q["reasons"])
        assert q["thresholds"]["max_reproj_px"] == 0.01
        for key in ("reproj_err_px", "mask_iou"):  # the same figures (to the records' rounding), judged again
            was = before[f]["quality"][key]
            assert q[key].keys() == was.keys()
            assert all((q[key][c] is None) == (was[c] is None) for c in was)
            np.testing.assert_allclose([v for v in q[key].values() if v is not None],
                                       [v for v in was.values() if v is not None], atol=2e-3)  # fmt: skip
    assert len(read_freihand(root / "labels")) == 0
    back = run_pipeline(_settings(root))
    assert back.frames_fitted == 0 and back.frames_accepted == 3
    assert len(read_freihand(root / "labels")) == len(read_freihand(fitted[0] / "labels"))


def test_missing_hand_and_single_view_frames_are_skipped_with_reasons(session, caplog):
    for cam in ("cam0", "cam1", "cam2", "cam3"):
        (session / "keypoints2d" / cam / "000000.json").unlink()  # hand missing in every view
    for cam in ("cam1", "cam2", "cam3"):
        (session / "keypoints2d" / cam / "000001.json").unlink()  # only cam0 sees it
    with caplog.at_level(logging.WARNING):
        report = run_pipeline(_settings(session, silhouette=False, export=False, fit=QUICK))
    assert set(report.skipped) == {"000000", "000001"}
    assert "missing in every view" in report.skipped["000000"]
    assert "only 1 view" in report.skipped["000001"]
    assert report.frames_fitted == 1
    assert sorted(p.stem for p in (session / "fits").glob("*.json")) == ["000002"]
    assert "frame 000000 skipped" in caplog.text and "frame 000001 skipped" in caplog.text
    assert json.loads(report.report_path.read_text())["skipped"] == report.skipped


def test_nan_keypoint_is_an_error_naming_the_file(session):
    path = session / "keypoints2d" / "cam2" / "000001.json"
    d = json.loads(path.read_text())
    d["keypoints"][7][0] = float("nan")
    path.write_text(json.dumps(d))  # json writes NaN as the NaN token
    with pytest.raises(HandannoError, match=r"cam2[/\\]000001\.json.*NaN"):
        run_pipeline(_settings(session, silhouette=False, export=False))
    assert not (session / "fits").exists()


def test_rig_camera_without_images_is_left_out_with_a_warning(session, caplog):
    rig = json.loads((session / "rig.json").read_text())
    rig["cameras"]["cam9"] = rig["cameras"]["cam0"]
    (session / "rig.json").write_text(json.dumps(rig))
    with caplog.at_level(logging.WARNING):
        report = run_pipeline(_settings(session, frames="0:1", silhouette=False, export=False, fit=QUICK))
    assert "camera cam9 is in rig.json but has no image folder" in caplog.text
    assert report.frames_total == 1 and report.frames_fitted == 1
    notes = json.loads(report.report_path.read_text())["session_notes"]
    assert any("cam9" in n for n in notes)
    quality = json.loads((session / "fits" / "000000.json").read_text())["quality"]
    assert "cam9" not in quality["reproj_err_px"]


def test_fit_command(fitted, tmp_path, monkeypatch):
    """``handanno fit`` maps its options onto PipelineSettings and prints the summary."""
    seen = []
    real = pipeline.run_pipeline

    def run_fast(settings: PipelineSettings):
        seen.append(settings)
        return real(replace(settings, fit=QUICK, progress=False))

    monkeypatch.setattr(pipeline, "run_pipeline", run_fast)
    root = Path(shutil.copytree(fitted[0], tmp_path / "session"))
    res = CliRunner().invoke(main, ["fit", "--session", str(root), "--device", "cpu", "--max-reproj-px", "5",
                                    "--min-mask-iou", "0.5", "--frames", "0:2", "--batch-frames", "2",
                                    "--max-reproj-rel", "0.1", "--threads", "1", *SMALL_RIG_OPTIONS])  # fmt: skip
    assert res.exit_code == 0, res.output
    s = seen[0]
    assert s.session == root and s.hand == "right" and s.detector == "given" and s.frames == "0:2"
    assert s.accept == replace(SMALL_RIG, max_reproj_px=5.0, max_reproj_rel=0.1, min_mask_iou=0.5)
    assert s.batch_frames == 2 and torch.get_num_threads() == 1
    assert s.silhouette and s.export and not s.force and s.model_dir is None
    assert "fit: 2 frames; 0 fitted now, 2 accepted in all, 0 skipped" in res.output
    assert "vs ground truth (2 frames): MPJPE" in res.output

    (root / "keypoints2d" / "cam1" / "000000.json").write_text('{"keypoints": [[NaN, 1, 1]], "source": "x"}')
    res = CliRunner().invoke(main, ["fit", "--session", str(root), "--force", "--no-silhouette"])
    assert res.exit_code == 2 and "000000.json" in res.output and "Traceback" not in res.output
    assert not seen[-1].silhouette and seen[-1].force


LOOSE = AcceptSettings.accept_all()  # every fitted frame, whatever the fit


def _hidden(folder: Path) -> list[str]:
    """Temp files an interrupted atomic write would leave ("." + name + random suffix)."""
    return sorted(p.name for p in folder.rglob(".*")) if folder.is_dir() else []


def test_corrupt_image_is_skipped_naming_it_and_keeps_what_was_written(session, caplog):
    """A damaged image is found when the session is opened: its view is left out with a warning naming the
    file (so its camera and frame), the rest goes on, and the fits written before, by this run or an
    earlier one, stay as they were."""
    run_pipeline(_settings(session, frames="0:1", fit=QUICK, export=False, accept=LOOSE))  # an earlier run
    assert read_fit(session / "fits" / "000000.json")["quality"]["accepted"]
    first = session / "fits" / "000000.json"
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    masks0 = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (session / "masks").glob("*/000000.png")}
    assert masks0  # GrabCut made masks for frame 0

    def corrupt(cam: str, frame: str) -> re.Pattern:
        bad = next((session / "images" / cam).glob(f"{frame}.*"))
        bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        return re.compile(rf"{cam}[/\\]{frame}\{bad.suffix}")

    def run(**kw) -> str:
        """The error's message, or the warnings if the run went on without the image."""
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                run_pipeline(_settings(session, fit=QUICK, accept=LOOSE, **kw))  # the same thresholds: no re-judging
            except HandannoError as exc:
                return str(exc)
        return caplog.text

    # segment reads the image; one frame per batch, so frame 1 is fitted and written before frame 2 fails
    name = corrupt("cam1", "000002")
    assert name.search(run(batch_frames=1, export=False))
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    assert read_fit(session / "fits" / "000001.json")["joints"].shape == (21, 3)
    for p in (session / "masks").glob("*/00000[01].png"):
        assert read_mask(p).shape == (120, 160)  # whole files
    # no silhouettes: fitting reads no image; the export reads those of accepted frames (frame 0 is)
    name = corrupt("cam2", "000000")
    assert name.search(run(silhouette=False))
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    assert read_fit(session / "fits" / "000002.json")["joints"].shape == (21, 3)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (session / "masks").glob("*/000000.png")} == masks0
    assert _hidden(session / "fits") == [] and _hidden(session / "masks") == []


def test_interrupted_run_resumes(session, monkeypatch):
    """``--frames 0:1``, then the whole range interrupted after its first batch, then again: every frame is
    fitted exactly once (no fit file rewritten: same bytes and mtime), with the first frame's shape."""
    first = run_pipeline(_settings(session, frames="0:1", fit=QUICK, export=False, accept=LOOSE))
    assert first.frames_total == 1 and first.frames_fitted == 1
    f0 = session / "fits" / "000000.json"
    snap0 = (f0.read_bytes(), f0.stat().st_mtime_ns)
    assert sorted(p.stem for p in (session / "fits").glob("*.json")) == ["000000"]

    real = pipeline.fit_and_segment
    calls: list[list[str]] = []

    def fit_then_die(layer, sess, frames, *args, **kw):
        calls.append(list(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while fitting the second batch
        return real(layer, sess, frames, *args, **kw)

    monkeypatch.setattr(pipeline, "fit_and_segment", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_settings(session, fit=QUICK, batch_frames=1, accept=LOOSE))
    assert calls == [["000001"], ["000002"]]  # frame 0 is not fitted again
    assert (f0.read_bytes(), f0.stat().st_mtime_ns) == snap0
    f1 = session / "fits" / "000001.json"
    snap1 = (f1.read_bytes(), f1.stat().st_mtime_ns)
    assert not (session / "fits" / "000002.json").exists()

    monkeypatch.setattr(pipeline, "fit_and_segment", real)
    rest = run_pipeline(_settings(session, fit=QUICK, accept=LOOSE))
    assert rest.frames_total == 3 and rest.frames_fitted == 1 and rest.skipped == {}
    assert (f0.read_bytes(), f0.stat().st_mtime_ns) == snap0
    assert (f1.read_bytes(), f1.stat().st_mtime_ns) == snap1
    recs = {f: read_fit(session / "fits" / f"{f}.json") for f in FRAMES}
    for f in FRAMES[1:]:
        np.testing.assert_array_equal(recs[f]["betas"], recs["000000"]["betas"])  # one subject, one shape
    assert all(r["quality"]["accepted"] for r in recs.values())
    lab = read_freihand(session / "labels")  # exported once, after the last frame, from all three
    assert {e["frame"] for e in lab.index} == set(FRAMES) and rest.labels_written == len(lab)
    assert _hidden(session / "fits") == []


def test_cpm_detector_searches_each_camera_once_and_tracks(session, monkeypatch, oracle_detector):
    """``--detector cpm``: run_detect drives the tracker per camera, frame by frame, and writes its keypoints.

    The network is the conftest oracle answering from the session's keypoints, looked up by
    the decoded image's bytes.
    """
    import hashlib

    from handanno.annotate import detect_cpm as cpm_detector
    from handanno.annotate.session_io import open_session, read_image, read_keypoints_file

    def key(img: np.ndarray) -> str:
        return hashlib.sha1(img.tobytes()).hexdigest()

    s = open_session(session)
    truth = {}
    for (cam, frame), path in s.images.items():
        kp = read_keypoints_file(s.keypoints_path(cam, frame))
        if (kp[:, 2] > 0).all():
            truth[key(read_image(path))] = kp[:, :2]
    shutil.rmtree(session / "keypoints2d")

    class Oracle(oracle_detector):
        def detect(self, images, boxes):
            for img in images:
                self.truth[id(img)] = truth.get(key(img))
            return super().detect(images, boxes)

    oracle, trackers, tracker_cls = Oracle(), [], cpm_detector.HandTracker

    def make_tracker(det, *a, **kw):
        trackers.append(tracker_cls(det, *a, **kw))
        return trackers[-1]

    loaded = []

    def from_checkpoint(cls, path, device, flip_test=None):
        loaded.append((path, flip_test))
        return oracle

    monkeypatch.setattr(cpm_detector.CPMDetector, "from_checkpoint", classmethod(from_checkpoint))
    monkeypatch.setattr(cpm_detector, "HandTracker", make_tracker)
    weights = session / "fake.pt"
    weights.write_bytes(b"")
    written = run_detect(s, _settings(session, detector="cpm", detector_weights=weights,
                                      detector_flip_test=True).detect_settings())  # fmt: skip
    assert loaded == [(weights, True)]  # fit --flip-test reaches the detector
    assert written == len(truth) > 0
    assert trackers[0].searches == len(s.cameras)  # one search per camera, then tracking
    for (cam, frame), path in s.images.items():
        kp = read_keypoints_file(s.keypoints_path(cam, frame))
        assert np.abs(kp[:, :2] - truth[key(read_image(path))]).max() < 1.0
