"""``handanno fit --ray``: sharded fits on a local Ray (2 CPUs, started once for the module).

A tiny synthetic session (4 cameras, 8 frames, 160x120, 1 px keypoint noise) cut into shards of
3 frames (3, 3 and 2); the fitter runs a short schedule. Each test works on its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings
from handanno.annotate.session_io import read_fit, read_mask
from handanno.annotate.session_shape import SHAPE_FILE
from handanno.cli import main
from handanno.errors import HandannoError
from handanno.scale import ray_fit
from handanno.scale.ray_fit import FAULT_ENV, fit_sessions_ray
from handanno.synth.capture import SynthSettings, synthesize

FAST = FitSettings(iters_3d=20, iters_2d=60, iters_sil=10)
QUICK = FitSettings(iters_3d=10, iters_2d=20, iters_sil=0)
FRAMES = [f"{i:06d}" for i in range(8)]
SMALL_RIG = AcceptSettings(min_view_mask_iou=0.7, max_triangulation_gap_mm=8.0)  # as tests/annotate/test_pipeline.py

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(root: Path, **kw) -> PipelineSettings:
    return PipelineSettings(session=root, **({"device": "cpu", "fit": FAST, "accept": SMALL_RIG, "progress": False}
                                             | kw))  # fmt: skip


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module (tasks of 1 CPU: two shards at a time)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=4, num_frames=len(FRAMES), image_size=(160, 120),
                             keypoint_noise_px=1.0, write_calib=False, progress=False))  # fmt: skip
    return out


def _copy(synth_dir: Path, dst: Path) -> Path:
    return Path(shutil.copytree(synth_dir, dst))


def _fits(root: Path) -> dict[str, dict]:
    return {p.stem: read_fit(p) for p in sorted((root / "fits").glob("*.json"))}


def _fault(tmp_path: Path, stage: str, frame: str, action: str, times: int) -> str:
    return json.dumps({"stage": stage, "frame": frame, "action": action, "times": times,
                       "marker_dir": str(tmp_path / "markers")})  # fmt: skip


def test_sharded_fit_equals_single_process_fit(local_ray, synth_dir, tmp_path):
    """Same shape, same fits (joints within 0.01 mm), same masks; every frame fitted by exactly one shard."""
    single, sharded = _copy(synth_dir, tmp_path / "single"), _copy(synth_dir, tmp_path / "sharded")
    ref = run_pipeline(_settings(single, batch_frames=3))
    job = fit_sessions_ray([sharded], _settings(sharded), address=None, shard_frames=3)
    assert job.ok, job.failure_message()
    assert job.shards == 3 and job.batch_frames == 3
    # no frame missing or fitted twice, each shard its own stretch
    assert job.shard_frames[sharded] == (tuple(FRAMES[0:3]), tuple(FRAMES[3:6]), tuple(FRAMES[6:8]))
    report = job.reports[sharded]
    assert report.frames_fitted == ref.frames_fitted == 8 and report.failed == {} and report.skipped == {}
    assert report.frames_accepted == ref.frames_accepted
    # the shape pass: one shape for the session, in shape.json, the same in both runs
    shape_a, shape_b = (json.loads((r / SHAPE_FILE).read_text()) for r in (single, sharded))
    assert shape_a["frames"] == shape_b["frames"] == FRAMES  # 8 frames <= shape_frames: all of them
    np.testing.assert_array_equal(shape_a["betas"], shape_b["betas"])
    a, b = _fits(single), _fits(sharded)
    assert sorted(a) == sorted(b) == FRAMES
    for f in FRAMES:
        np.testing.assert_array_equal(a[f]["betas"], b[f]["betas"])
        np.testing.assert_allclose(a[f]["betas"], shape_a["betas"], atol=1e-7)  # records round to 7 decimals
        # 1e-5 m = 0.01 mm, the bound; the fitter is deterministic on the CPU and measured identical
        np.testing.assert_allclose(b[f]["joints"], a[f]["joints"], rtol=0, atol=1e-5)
        for cam in ("cam0", "cam1", "cam2", "cam3"):
            ma, mb = single / "masks" / cam / f"{f}.png", sharded / "masks" / cam / f"{f}.png"
            assert ma.is_file() == mb.is_file()
            if ma.is_file():
                assert (read_mask(ma) != read_mask(mb)).mean() < 1e-3
    # the session-level outputs, once, by the driver
    saved = json.loads(report.report_path.read_text())
    assert saved["frames_fitted"] == 8 and saved["shape_frames"] == FRAMES and saved["failed"] == {}
    assert report.labels_written == ref.labels_written > 0
    assert not list((sharded / "fits").glob(".*"))  # no temp file left by an atomic write


def test_a_killed_worker_is_retried_and_the_result_is_complete(local_ray, synth_dir, tmp_path, monkeypatch):
    """The worker running the shard of frame 000004 dies (os._exit) on its first attempt: Ray runs it again."""
    root = _copy(synth_dir, tmp_path / "session")
    monkeypatch.setenv(FAULT_ENV, _fault(tmp_path, "fit", "000004", "exit", times=1))
    job = fit_sessions_ray([root], _settings(root, fit=QUICK, silhouette=False), address=None, shard_frames=3)
    assert job.ok, job.failure_message()
    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == ["fit-000004-attempt-1", "fit-000004-attempt-2"]
    assert sorted(_fits(root)) == FRAMES
    assert [len(s) for s in job.shard_frames[root]] == [3, 3, 2]
    assert job.reports[root].frames_fitted == 8


def test_two_sessions_in_one_job(local_ray, synth_dir, tmp_path):
    roots = [_copy(synth_dir, tmp_path / "a"), _copy(synth_dir, tmp_path / "b")]
    job = fit_sessions_ray(roots, _settings(roots[0], fit=QUICK, silhouette=False), address=None, shard_frames=4)
    assert job.ok and job.shards == 4 and set(job.reports) == set(roots)
    for root in roots:
        assert sorted(_fits(root)) == FRAMES and (root / SHAPE_FILE).is_file()
        assert job.reports[root].report_path == root / "report.json" and job.reports[root].frames_fitted == 8
        assert (root / "labels" / "index.json").is_file()
    betas = [json.loads((r / SHAPE_FILE).read_text())["betas"] for r in roots]
    np.testing.assert_array_equal(*betas)  # the same capture twice: the same shape


def test_a_shard_that_always_fails_is_reported_and_the_others_finish(local_ray, synth_dir, tmp_path, monkeypatch):
    """Through the command line (the default schedule, keypoints only): exit status 1, the message names the
    frames and the error; the other shards' fits, the labels and report.json (with the failed frames) are written."""
    root = _copy(synth_dir, tmp_path / "session")
    monkeypatch.setenv(FAULT_ENV, _fault(tmp_path, "fit", "000004", "raise", times=99))
    res = CliRunner().invoke(main, ["fit", "--session", str(root), "--ray", "local", "--shard-frames", "3",
                                    "--no-silhouette", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "fit failed for 3 frame(s) (000003, 000004, 000005)" in res.output
    assert "injected fault" in res.output and "Traceback" not in res.output
    assert len(list((tmp_path / "markers").iterdir())) == 3  # the first attempt and max_retries (2) more
    assert sorted(_fits(root)) == FRAMES[:3] + FRAMES[6:]
    saved = json.loads((root / "report.json").read_text())
    assert sorted(saved["failed"]) == FRAMES[3:6] and "injected fault" in saved["failed"]["000004"]


def test_an_unreachable_address_fails_before_any_work(synth_dir, tmp_path):
    root = _copy(synth_dir, tmp_path / "session")
    t0 = time.perf_counter()
    with pytest.raises(HandannoError, match=r"--ray 127\.0\.0\.1:1: cannot reach a Ray cluster.*ray start --head"):
        fit_sessions_ray([root], _settings(root), address="127.0.0.1:1", connect_timeout_s=2.0)
    assert time.perf_counter() - t0 < 30
    assert not (root / "fits").exists() and not (root / SHAPE_FILE).exists() and not (root / "masks").exists()
    with pytest.raises(HandannoError, match="HOST:PORT"):
        fit_sessions_ray([root], _settings(root), address="no-port-given")


def test_without_ray_the_message_says_how_to_install_it(synth_dir, tmp_path, monkeypatch):
    root = _copy(synth_dir, tmp_path / "session")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(HandannoError, match=r"pip install 'handanno\[ray\]'"):
        fit_sessions_ray([root], _settings(root))
    res = CliRunner().invoke(main, ["fit", "--session", str(root), "--ray"])
    assert res.exit_code == 2 and "pip install 'handanno[ray]'" in res.output
    assert not (root / "fits").exists()


def test_without_ray_flag_ray_is_not_imported(synth_dir, tmp_path):
    """``import handanno.cli`` and a plain fit (its shape pass included) import no Ray."""
    root = _copy(synth_dir, tmp_path / "session")
    code = f"""
import sys
import handanno.cli
from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
run_pipeline(PipelineSettings(session={str(root)!r}, device="cpu", silhouette=False, export=False, progress=False,
                              frames="0:2", fit=FitSettings(iters_3d=2, iters_2d=2, iters_sil=0)))
assert "ray" not in sys.modules, "ray was imported"
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_fits(root)) == FRAMES[:2]


def test_fit_command_takes_several_sessions(synth_dir, tmp_path, monkeypatch):
    """Without --ray each session is fitted in turn; --shard-frames without --ray is refused."""
    from handanno.annotate import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda s: seen.append(s) or _report(s.session))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    res = CliRunner().invoke(main, ["fit", "--session", str(a), "--session", str(b), "--no-silhouette"])
    assert res.exit_code == 0, res.output
    assert [s.session for s in seen] == [a, b] and not seen[1].silhouette
    res = CliRunner().invoke(main, ["fit", "--session", str(a), "--shard-frames", "8"])
    assert res.exit_code == 2 and "--shard-frames is for a fit on Ray" in res.output


def _report(root: Path):
    from handanno.annotate.pipeline import PipelineReport

    return PipelineReport(frames_total=1, frames_fitted=1, frames_accepted=1, skipped={}, timings_s={},
                          labels_written=0, accuracy=None, report_path=root / "report.json")  # fmt: skip


def test_shards_are_whole_batches():
    assert ray_fit.plan_shards(8, 3, 64) == ([(0, 3), (3, 6), (6, 8)], 3)
    assert ray_fit.plan_shards(130, 100, 64) == ([(0, 128), (128, 130)], 64)
    with pytest.raises(HandannoError, match="shard-frames 0"):
        ray_fit.plan_shards(8, 0, 64)


def test_the_detection_shards_count_what_the_session_held(local_ray, synth_dir, tmp_path):
    """With a detector, the detection shards count the session's inputs (the synthetic keypoint files: the
    user's); the sharded report says what the single-process report says (they were dropped: all zeros)."""
    single, sharded = _copy(synth_dir, tmp_path / "single"), _copy(synth_dir, tmp_path / "sharded")
    kw = {"detector": "cpm", "fit": QUICK, "silhouette": False, "export": False}
    run_pipeline(_settings(single, batch_frames=3, **kw))
    job = fit_sessions_ray([sharded], _settings(sharded, **kw), address=None, shard_frames=3)
    assert job.ok, job.failure_message()
    want, got = (json.loads((r / "report.json").read_text())["inputs_found"] for r in (single, sharded))
    assert got == want and want["keypoints_given"] == len(FRAMES) * 4
