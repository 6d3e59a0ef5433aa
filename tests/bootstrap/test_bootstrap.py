"""``handanno bootstrap`` on a tiny synthetic session: rounds, labels with visibility, resume, bad input.

The session: 4 cameras x 8 frames at 160x120. Round 0 fits keypoints the user brought (the
synthetic detections, source "synth") in all views but two per frame, whose files are
removed so that only the bootstrapped network can fill them; the starting network is a
tiny U-Net with random weights (no oracle: nothing reads the ground truth but the metrics).
The mechanics are tested here, not the accuracy (benchmarks/bench_bootstrap.py measures it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.quality import AcceptSettings
from handanno.annotate.session_io import open_session, read_session_keypoints
from handanno.bootstrap import rounds
from handanno.bootstrap.metrics import better, consistency_errors, views_found
from handanno.bootstrap.rounds import BootstrapSettings, run_bootstrap
from handanno.bootstrap.visibility import MeshVisibility
from handanno.calibration.camera import Camera
from handanno.data.files_io import write_json
from handanno.data.freihand_io import read_freihand
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.models.checkpoints import TrainConfig, save_checkpoint
from handanno.models.nets.tasks import make_task
from handanno.synth.capture import SynthSettings, synthesize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_UNET = {"crop_size": 32, "base_channels": 4, "depth": 2, "heatmap_stride": 2, "sigma_px": 1.0}
QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)
REMOVED = {"000000": ("cam1", "cam2"), "000003": ("cam0",), "000005": ("cam3",)}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("boot") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=4, num_frames=8, image_size=(160, 120), keypoint_noise_px=1.0,
                             write_calib=False, progress=False))  # fmt: skip
    for frame, cams in REMOVED.items():
        for cam in cams:
            (out / "keypoints2d" / cam / f"{frame}.json").unlink()
    return out


@pytest.fixture
def session(synth_dir, tmp_path) -> Path:
    return Path(shutil.copytree(synth_dir, tmp_path / "session"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny U-Net checkpoint with random weights (seeded), as ``handanno train`` writes one."""
    torch.manual_seed(0)
    task = make_task("unet", TINY_UNET)
    path = tmp_path_factory.mktemp("net") / "start.pt"
    cfg = TrainConfig(model="unet", labels=(), out=str(path.parent), model_config=TINY_UNET)
    return save_checkpoint(path, task, cfg, {"step": 0, "epoch": 0, "best_metric": None, "bad_epochs": 0,
                                             "history": []})  # fmt: skip


def _settings(session: Path, weights: Path, **kw) -> BootstrapSettings:
    base = {"rounds": 1, "init": "cpm", "weights": weights, "epochs": 1, "patience": 1, "batch_size": 4,
            "device": "cpu", "silhouette": False, "accept": AcceptSettings.accept_all(), "fit": QUICK,
            "progress": False, "min_frames": 4, "val_fraction": 0.25}  # fmt: skip
    return BootstrapSettings(session=session, **(base | kw))


def test_visibility_marks_keypoints_outside_the_image_and_behind_the_hand():
    model = load_hand_model("right")
    layer = ManoLayer(model)
    with torch.no_grad():
        out = layer(torch.zeros(1, 48), torch.zeros(1, 10), torch.tensor([[0.0, 0.0, 0.5]]))
    joints, verts = out.joints[0].double().numpy(), out.vertices[0].double().numpy()
    vis = MeshVisibility(model.faces, model.weights)
    front = Camera("front", np.diag([300.0, 300.0, 1.0]) + np.array([[0, 0, 160], [0, 0, 120], [0, 0, 0]]),
                   np.zeros(5), np.eye(3), np.zeros(3), (320, 240))  # fmt: skip
    # the flat hand lies in a plane: from its palm or back side every keypoint is seen
    seen = vis(front, joints, verts)
    assert seen.dtype == bool and seen.shape == (21,)
    normal = np.linalg.svd(joints - joints.mean(0))[2][2]
    R = _look_along(normal)
    t = -R @ (joints.mean(0) - 0.4 * normal)
    face_on = Camera("f", front.K, np.zeros(5), R, t, (320, 240))
    assert vis(face_on, joints, verts).sum() >= 18
    # edge-on along the line of the fingers: the knuckles hide each other
    along = joints[12] - joints[0]
    along /= np.linalg.norm(along)
    R = _look_along(along)
    edge = Camera("e", front.K, np.zeros(5), R, -R @ (joints[0] - 0.4 * along), (320, 240))
    assert vis(edge, joints, verts).sum() < 18
    # a camera that sees only part of the hand: keypoints outside the image are not seen
    crop = Camera("c", np.array([[600.0, 0, 0], [0, 600.0, 120], [0, 0, 1]]), np.zeros(5), face_on.R, face_on.t,
                  (320, 240))  # fmt: skip
    uv = crop.project(joints)
    outside = uv[:, 0] < -0.5
    assert outside.any() and not vis(crop, joints, verts)[outside].any()


def _look_along(d: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a camera looking along unit vector ``d``."""
    z = d / np.linalg.norm(d)
    x = np.cross([0.0, 0.0, 1.0] if abs(z[2]) < 0.9 else [1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def test_metrics_count_views_and_measure_consistency(synth_dir):
    s = open_session(synth_dir)
    kp = read_session_keypoints(s)
    found = views_found(kp)
    assert found.sum() == found.size - sum(len(c) for c in REMOVED.values())
    errs = consistency_errors(s, kp)
    assert 0.3 < np.median(errs) < 3.0  # 1 px synthetic noise
    moved = kp.copy()
    moved[:, 0, :, 0] += 20.0  # one camera's detections 20 px off
    assert np.median(consistency_errors(s, moved)) > np.median(errs) + 1.0
    assert better({"frames_accepted": 3, "consistency_px": 9.0}, {"frames_accepted": 2, "consistency_px": 1.0})


def test_the_loop_goes_on_while_rounds_progress_and_ends_on_the_best_eligible_round(session, weights, monkeypatch):
    """Rows made up: round 1 is more consistent but loses a frame (goes on, not chosen: worse than round 0 in
    accepted frames), round 2 gains it back and is more consistent still (chosen), round 3 progresses in neither
    (the loop stops after it)."""
    made = iter([{"frames_accepted": 19, "consistency_px": 3.0}, {"frames_accepted": 20, "consistency_px": 2.5},
                 {"frames_accepted": 20, "consistency_px": 2.49}, {"frames_accepted": 20, "consistency_px": 1.0}])
    trained = []

    def fake_round(s, k, warm, layer, visibility, run):
        trained.append((k, warm))
        row = {"round": k, "frames_total": 8, "views_total": 32, **next(made)}
        (run / f"round_{k}" / "train").mkdir(parents=True)
        (run / f"round_{k}" / "train" / "best.pt").write_bytes(b"")
        write_json(run / f"round_{k}" / "metrics.json", row)
        return row

    monkeypatch.setattr(rounds, "_train_round", fake_round)
    monkeypatch.setattr(rounds, "round_metrics", lambda session, layer: {"frames_accepted": 20, "consistency_px": 4.0,
                                                                          "frames_total": 8, "views_total": 32})
    monkeypatch.setattr(rounds, "_restore", lambda rd, session: restored.append(rd.name))
    restored: list[str] = []
    report = run_bootstrap(_settings(session, weights, rounds=5))
    run = session / "bootstrap"
    assert [k for k, _ in trained] == [1, 2, 3]
    assert trained[0][1] == weights and trained[1][1] == run / "round_1" / "train" / "best.pt"
    assert report.best_round == 2 and restored == ["round_2"] and "round 3 improved neither" in report.stopped


def test_a_round_trains_on_every_view_of_accepted_frames_and_fills_the_missing_ones(session, weights, caplog):
    before = {p: p.read_bytes() for p in (session / "keypoints2d").rglob("*.json")}
    report = run_bootstrap(_settings(session, weights))
    run = session / "bootstrap"
    assert [r["round"] for r in report.rows] == [0, 1]
    for k in (0, 1):
        assert (run / f"round_{k}" / "metrics.json").is_file() and (run / f"round_{k}" / "fits").is_dir()
    assert (run / "round_1" / "train" / "best.pt").is_file()
    # labels: every view of every accepted frame, also the views without a detection, with visibility
    labels = read_freihand(run / "round_1" / "labels")
    views = {(e["frame"], e["camera"]) for e in labels.index}
    assert {(f, c) for f, cams in REMOVED.items() for c in cams} <= views
    assert all(len(e["visible"]) == 21 for e in labels.index)
    hidden = sum(21 - sum(e["visible"]) for e in labels.index)
    assert 0 < hidden < 0.5 * 21 * len(labels.index)  # some keypoints are hidden by the hand, most are seen
    # the user's keypoint files are never rewritten; only missing views got the network's detections
    for p, b in before.items():
        assert p.read_bytes() == b, p
    made = [json.loads(p.read_text())["source"] for p in (session / "keypoints2d").rglob("*.json") if p not in before]
    assert set(made) <= {"cpm"}
    table = json.loads((run / "bootstrap.json").read_text())
    assert table["best_round"] == report.best_round and len(table["rows"]) == 2
    assert report.rows[0]["views_found"] == 32 - 4
    assert "mpjpe_mm" in report.rows[0] and "epe_px" in report.rows[0]  # ground_truth/ is there
    assert (session / "labels" / "index.json").is_file() and report.labels_written > 0


def test_an_interrupted_bootstrap_resumes_after_its_last_finished_round(session, weights, monkeypatch):
    monkeypatch.setattr(rounds, "progressed", lambda row, earlier: True)  # go on whatever the tiny rounds give
    run_bootstrap(_settings(session, weights, rounds=1))
    calls, interrupt = [], [True]
    real = rounds.run_pipeline

    def counting(settings):
        calls.append(settings.detector)
        if interrupt.pop() if interrupt else False:
            raise KeyboardInterrupt  # Ctrl-C while round 2 detects
        return real(settings)

    monkeypatch.setattr(rounds, "run_pipeline", counting)
    with pytest.raises(KeyboardInterrupt):
        run_bootstrap(_settings(session, weights, rounds=2))
    assert not (session / "bootstrap" / "round_2" / "metrics.json").exists()
    round1 = (session / "bootstrap" / "round_1" / "metrics.json").read_bytes()
    calls.clear()
    report = run_bootstrap(_settings(session, weights, rounds=2))
    assert calls == ["cpm"]  # round 2 only: rounds 0 and 1 are not run again
    assert [r["round"] for r in report.rows][:2] == [0, 1] and len(report.rows) <= 3
    assert (session / "bootstrap" / "round_1" / "metrics.json").read_bytes() == round1


def test_too_few_accepted_frames_is_a_clear_error_and_changes_nothing(session, weights):
    strict = AcceptSettings(max_reproj_px=0.0)  # nothing passes
    with pytest.raises(HandannoError, match=r"0 accepted frame\(s\) to train on, 4 needed"):
        run_bootstrap(_settings(session, weights, accept=strict))
    assert not (session / "bootstrap" / "round_1").exists()


def test_bad_settings_are_refused(session, weights, tmp_path):
    with pytest.raises(HandannoError, match="--init"):
        run_bootstrap(_settings(session, weights, init="openpose"))
    with pytest.raises(HandannoError, match="no heatmap network"):
        run_bootstrap(_settings(session, tmp_path / "missing.pt"))


def test_bootstrap_command_maps_options_and_prints_the_table(session, weights, monkeypatch):
    from click.testing import CliRunner

    from handanno.cli import main

    seen = []

    def fake(settings):
        seen.append(settings)
        return rounds.BootstrapReport([{"round": 0, "views_found": 3, "views_total": 4, "frames_accepted": 1,
                                        "frames_total": 2, "consistency_px": 2.5}], 0, "after 0 round(s)",
                                      session / "bootstrap", 8, 60.0)  # fmt: skip

    monkeypatch.setattr(rounds, "run_bootstrap", fake)
    res = CliRunner().invoke(main, ["bootstrap", "--session", str(session), "--rounds", "2", "--init", "cpm",
                                    "--weights", str(weights), "--epochs", "3", "--device", "cpu",
                                    "--no-silhouette", "--accept", "min_view_mask_iou=0.7",
                                    "--accept", "outlier_views=2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    s = seen[0]
    assert (s.session, s.rounds, s.init, s.weights, s.epochs, s.silhouette) == (session, 2, "cpm", weights, 3, False)
    assert (s.accept.min_view_mask_iou, s.accept.outlier_views) == (0.7, 2)
    assert s.accept.max_view_reproj_rel == rounds.BOOTSTRAP_ACCEPT.max_view_reproj_rel  # the rest unchanged
    for bad, says in (("min_view_iou=0.7", "unknown threshold 'min_view_iou'"), ("max_bone_dev=-1", "number >= 0")):
        refused = CliRunner().invoke(main, ["bootstrap", "--session", str(session), "--accept", bad])
        assert refused.exit_code != 0 and says in refused.output, refused.output
    assert "| 0 | 3/4 | 2.5 | 1/2 |" in res.output and "round 0's keypoints and fits (8 label samples)" in res.output


def test_a_round_detects_every_view_in_a_crop_around_the_last_fit(session, weights):
    """Round k's detection is framed on round k-1's fit in every view (not a search of the whole image): the
    box handed to the detector is the fit's projection; a miss is written with conf 0; a frame without a fit
    loses handanno's keypoints (searched again later); the user's files are never touched."""
    from handanno.annotate.pipeline import PipelineSettings, run_pipeline
    from handanno.annotate.redetect import fit_boxes, project_fits
    from handanno.bootstrap.guided import detect_around_fits

    run_pipeline(PipelineSettings(session=session, device="cpu", silhouette=False, export=False, fit=QUICK,
                                  accept=AcceptSettings.accept_all(), progress=False))  # fmt: skip
    s = open_session(session)
    cam_made = s.keypoints_path("cam1", "000000")  # removed by the fixture: give it a file of handanno's
    write_json(cam_made, {"keypoints": np.zeros((21, 3)).tolist(), "source": "cpm"})
    user = {p: p.read_bytes() for p in (session / "keypoints2d").rglob("*.json") if p != cam_made}
    no_fit = "000007"
    (session / "fits" / f"{no_fit}.json").unlink()
    write_json(s.keypoints_path("cam2", no_fit), {"keypoints": np.zeros((21, 3)).tolist(), "source": "cpm"})
    user.pop(s.keypoints_path("cam2", no_fit))
    seen = []

    def in_box(image, box):
        seen.append(np.asarray(box, np.float64))
        return None if len(seen) == 1 else np.tile([[box[0], box[1], 0.9]], (21, 1))

    s = open_session(session)
    counts = detect_around_fits(s, in_box, "cpm")
    # the views with no file of the user's in fitted frames: the ones the fixture removed
    views = [(f, c) for f, cams in REMOVED.items() for c in cams]
    order = sorted(views, key=lambda v: (s.frames.index(v[0]), s.cameras.index(v[1])))
    assert counts.detected + counts.missed == len(views) == len(seen) and counts.missed == 1
    assert counts.unguided == 1 and not s.keypoints_path("cam2", no_fit).exists()
    assert counts.kept == (len(s.frames) - 1) * 4 - len(views)  # the user's files
    for (frame, cam), box in zip(order, seen, strict=True):
        joints = np.asarray(json.loads((session / "fits" / f"{frame}.json").read_text())["joints"])[None]
        want = fit_boxes(project_fits(joints, s.rig)[0])[0, s.cameras.index(cam)]
        np.testing.assert_allclose(box, want, atol=1e-6)  # framed on the fit's projection in that view
    for p, b in user.items():  # the user's (synth) files untouched
        assert p.read_bytes() == b, p
    first, second = (s.keypoints_path(c, f) for f, c in order[:2])
    assert json.loads(first.read_text())["source"] == "cpm"  # the miss: written with conf 0
    assert np.all(np.asarray(json.loads(first.read_text())["keypoints"])[:, 2] == 0)
    kp = np.asarray(json.loads(second.read_text())["keypoints"])
    np.testing.assert_allclose(kp[:, :2], np.tile(seen[1][:2], (21, 1)), atol=1e-3)


def test_a_rounds_refit_starts_from_fresh_fits_masks_and_shape_but_keeps_the_users(session, weights, monkeypatch):
    """Before a round refits: the last fits and shape.json go (kept in the round's folder), the masks handanno
    made go (GrabCut is seeded by the fit, so they are made again), the user's masks stay; then the pipeline
    runs with the new network, not forced (forcing would search every view again instead of the fits' crops)."""
    from handanno.annotate.pipeline import PipelineSettings, run_pipeline
    from handanno.annotate.session_io import write_mask

    run_pipeline(PipelineSettings(session=session, device="cpu", silhouette=False, export=False, fit=QUICK,
                                  accept=AcceptSettings.accept_all(), progress=False))  # fmt: skip
    ours, users = session / "masks" / "cam0" / "000001.png", session / "masks" / "cam1" / "000001.png"
    write_mask(ours, np.ones((120, 160), bool))  # made by handanno (GrabCut's tag)
    write_mask(users, np.ones((120, 160), bool), source=None)  # the user's
    assert (session / "shape.json").is_file()
    calls = []
    monkeypatch.setattr(rounds, "run_pipeline", lambda settings: calls.append(settings))
    rounds._detect_and_refit(_settings(session, weights), weights)
    assert not list((session / "fits").glob("*.json")) and not (session / "shape.json").exists()
    assert not ours.exists() and users.is_file()
    (s,) = calls
    assert (s.detector, s.detector_weights, s.force) == ("cpm", weights, False)
