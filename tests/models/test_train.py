import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from handanno.annotate.detect_cpm import CPMDetector
from handanno.cli import main as cli
from handanno.data.augment import AugmentConfig
from handanno.data.datasets import DataConfig
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.models.checkpoints import DEFAULT_LR, TrainConfig, load_checkpoint, load_task, train_config_from_dict
from handanno.models.evaluate import EvalConfig, evaluate
from handanno.models.heatmaps import crop_to_heatmap, render_gaussian_heatmaps
from handanno.models.nets import make_task
from handanno.models.toy_labels_io import make_toy_labels, toy_hand_model
from handanno.models.train import cosine_factor, main

TINY_UNET = ["--set", "crop_size=32", "--set", "base_channels=8", "--set", "depth=2"]
TINY_CPM = {"width": 0.0625, "crop_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return make_toy_labels(tmp_path_factory.mktemp("labels"), 12, image_size=64, seed=5)


@pytest.fixture(scope="module")
def cpm_run(tmp_path_factory, labels):
    """One short CPM run shared by the checkpoint tests: 2 epochs of 3 steps."""
    out = tmp_path_factory.mktemp("cpm_run")
    cfg = TrainConfig(model="cpm", labels=(str(labels),), out=str(out), epochs=2, batch_size=4, workers=0,
                      val_fraction=0.25, model_config=TINY_CPM, plots=False, log_every=1)  # fmt: skip
    return cfg, main(cfg)


def test_cli_train_then_eval_unet(labels, tmp_path):
    """The CLI end to end on the CPU: handanno train unet, then handanno eval, with plots and logs."""
    t0 = time.perf_counter()
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(cli, ["train", "unet", "--labels", str(labels), "--out", str(out), "--epochs", "2",
                              "--batch-size", "4", "--workers", "0", "--device", "cpu", *TINY_UNET])  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "trained unet: 2 epochs" in res.output
    for name in ("args.yaml", "last.pt", "best.pt", "log.csv", "steps.csv", "loss.png", "pck.png", "predictions.png"):
        assert (out / name).is_file(), name
    assert "crop_size: 32" in (out / "args.yaml").read_text()
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_pck@0.2" in rows[0]
    res = runner.invoke(cli, ["eval", "unet", "--weights", str(out / "best.pt"), "--labels", str(labels),
                              "--device", "cpu", "--out", str(tmp_path / "m.json"), "--threads", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "PCK@0.2" in res.output and "larger side of the ground-truth keypoints' bounding box" in res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_samples"] == 12 and metrics["model"] == "unet"
    assert 0.0 <= metrics["pck@0.2"] <= 1.0 and metrics["epe_px"] > 0 and 0.0 <= metrics["auc_2d"] <= 1.0
    assert metrics["pck_normaliser"].startswith("larger side")
    # the same error in crop pixels: the 32-px crop spans 1.4 x the hand's box (no augmentation at eval)
    assert metrics["crop_size_px"] == 32 and metrics["epe_128_px"] == pytest.approx(4 * metrics["epe_crop_px"])
    zoom = 32 / (1.4 * metrics["normaliser_px_mean"])
    assert metrics["epe_crop_px"] == pytest.approx(zoom * metrics["epe_px"], rel=0.3)
    assert time.perf_counter() - t0 < 120.0


def test_checkpoint_reloads_to_identical_outputs(cpm_run):
    cfg, result = cpm_run
    task, ckpt = load_task(result.last_checkpoint, "cpu", expected_kind="cpm")
    assert ckpt["kind"] == "cpm" and ckpt["model_config"]["width"] == TINY_CPM["width"]
    assert ckpt["step"] == result.steps == 4 and ckpt["epoch"] == 2  # 9 training samples, batch 4, drop_last
    assert set(ckpt["optimizer"]["state"])  # optimizer state travels with the model
    saved = train_config_from_dict(ckpt["train_config"])
    assert saved.data == dataclasses.replace(cfg.data, crop_size=32)  # the data settings the model used
    assert saved.model_config == ckpt["model_config"] and saved.labels == cfg.labels
    again, _ = load_task(result.last_checkpoint, "cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(task.model(x), again.model(x), strict=True))
    fresh = make_task("cpm", ckpt["model_config"])
    fresh.model.load_state_dict(ckpt["model"])
    fresh.model.eval()
    with torch.no_grad():
        assert torch.equal(fresh.model(x)[-1], task.model(x)[-1])


def test_resume_continues_the_step_count(cpm_run, tmp_path):
    cfg, first = cpm_run
    out = tmp_path / "resumed"
    shutil.copytree(first.out, out)
    cfg2 = TrainConfig(**{**cfg.__dict__, "out": str(out), "epochs": 3, "resume": True})
    result = main(cfg2)
    assert result.epochs_run == 3 and result.steps == first.steps + 2
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    with open(out / "steps.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, result.steps + 1))  # one row per step (log_every=1), appended on resume
    # resuming a finished run does nothing more
    assert main(cfg2).steps == result.steps


def _logged_lr(out):
    with open(out / "steps.csv") as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}


def test_resume_takes_a_new_peak_learning_rate_or_keeps_the_runs(cpm_run, tmp_path):
    """--lr on resume replaces the peak from there on; without it the resumed run's peak goes on (not 1e-3)."""
    cfg, first = cpm_run
    assert load_checkpoint(first.last_checkpoint)["train_config"]["lr"] == DEFAULT_LR == 1e-3
    out = tmp_path / "lower"
    shutil.copytree(first.out, out)
    lower = TrainConfig(**{**cfg.__dict__, "out": str(out), "epochs": 3, "resume": True, "lr": 2e-4})
    result = main(lower)  # steps 5, 6 of 6
    lr = _logged_lr(out)
    assert lr[4] == pytest.approx(1e-3 * cosine_factor(4, 4))  # the first run's last step
    assert [lr[s] for s in (5, 6)] == pytest.approx([2e-4 * cosine_factor(s, 6) for s in (5, 6)])
    assert load_checkpoint(result.last_checkpoint)["train_config"]["lr"] == 2e-4
    again = TrainConfig(**{**lower.__dict__, "epochs": 4, "lr": None})
    main(again)  # steps 7, 8 of 8, still at the 2e-4 peak
    lr = _logged_lr(out)
    assert [lr[s] for s in (7, 8)] == pytest.approx([2e-4 * cosine_factor(s, 8) for s in (7, 8)])


def test_early_stopping(labels, tmp_path):
    # lr = 0 and no BatchNorm (whose running statistics would still move): the network never changes, the
    # validation metric never improves after the first epoch, so patience 1 stops at epoch 2.
    frozen = {**TINY_CPM, "batch_norm": False}
    cfg = TrainConfig(model="cpm", labels=(str(labels),), out=str(tmp_path), epochs=6, batch_size=6, workers=0, lr=0.0,
                      patience=1, model_config=frozen, plots=False, val_fraction=0.25)  # fmt: skip
    result = main(cfg)
    assert result.stopped_early and result.epochs_run == 2
    assert result.best_checkpoint is not None and load_checkpoint(result.best_checkpoint)["epoch"] == 1


def _run_files(out):
    return {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "log.csv", "steps.csv", "args.yaml")}


def test_an_existing_run_is_refused_without_resume_or_overwrite(cpm_run, tmp_path, labels):
    """Training into a folder that holds a run neither resumes nor overwrites it unless told which."""
    cfg, first = cpm_run
    out = tmp_path / "run"
    shutil.copytree(first.out, out)
    before = _run_files(out)
    with pytest.raises(HandannoError) as err:
        main(dataclasses.replace(cfg, out=str(out)))
    msg = str(err.value)
    assert f"{out} already holds a training run" in msg and "--resume" in msg and "--overwrite" in msg
    res = CliRunner().invoke(cli, ["train", "cpm", "--labels", str(labels), "--out", str(out), "--epochs", "1",
                                   "--workers", "0", "--device", "cpu", "--no-plots"])  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and str(out) in res.output and "--overwrite" in res.output
    assert _run_files(out) == before  # best.pt, last.pt, log.csv untouched
    with pytest.raises(HandannoError, match="choose one"):
        main(dataclasses.replace(cfg, out=str(out), resume=True, overwrite=True))


def test_overwrite_starts_again_in_the_folder(cpm_run, tmp_path):
    cfg, first = cpm_run
    out = tmp_path / "run"
    shutil.copytree(first.out, out)
    (out / "notes.txt").write_text("mine")
    result = main(dataclasses.replace(cfg, out=str(out), epochs=1, overwrite=True))
    assert result.epochs_run == 1 and load_checkpoint(out / "last.pt")["epoch"] == 1
    with open(out / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]  # the old run's rows are gone, not appended to
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_an_empty_or_unrelated_folder_is_fine_without_flags(cpm_run, tmp_path):
    cfg, _ = cpm_run
    out = tmp_path / "empty"
    out.mkdir()
    (out / "README").write_text("not a run file")
    assert main(dataclasses.replace(cfg, out=str(out), epochs=1, max_steps=1)).steps == 1


def test_resume_without_a_checkpoint_is_an_error(cpm_run, tmp_path, labels):
    cfg, _ = cpm_run
    out = tmp_path / "nothing_yet"
    with pytest.raises(HandannoError) as err:
        main(dataclasses.replace(cfg, out=str(out), resume=True))
    assert f"{out / 'last.pt'}: not found, so there is no run to resume" in str(err.value)
    assert not out.exists()  # nothing was started
    res = CliRunner().invoke(cli, ["train", "cpm", "--labels", str(labels), "--out", str(out), "--resume",
                                   "--workers", "0", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 2 and f"{out / 'last.pt'}: not found" in res.output and "Traceback" not in res.output


def test_bad_checkpoints_are_clear_errors(cpm_run, tmp_path, labels):
    _, result = cpm_run
    with pytest.raises(HandannoError, match="'cpm' checkpoint, but a unet model was asked for"):
        load_task(result.last_checkpoint, expected_kind="unet")
    res = CliRunner().invoke(cli, ["eval", "lift", "--weights", str(result.last_checkpoint), "--labels", str(labels)])
    assert res.exit_code == 2 and "'cpm' checkpoint, but a lift model" in res.output
    broken = tmp_path / "broken.pt"
    broken.write_bytes(result.last_checkpoint.read_bytes()[:2000])
    with pytest.raises(HandannoError, match="not a readable checkpoint"):
        load_checkpoint(broken)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(HandannoError, match="not a handanno checkpoint"):
        load_checkpoint(other)
    with pytest.raises(HandannoError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_detector_returns_full_image_pixels(cpm_run, labels):
    """Shifting the image and its box shifts the keypoints by the same amount; conf comes from the peaks."""
    _, result = cpm_run
    det = CPMDetector.from_checkpoint(result.last_checkpoint, "cpu")
    img = cv2.imread(str(labels / "training" / "rgb" / "00000000.jpg"))
    big = np.zeros((150, 200, 3), np.uint8)
    big[40:104, 70:134] = img
    box = np.array([[22.0, 21.0, 42.0, 40.0]])  # its padded crop stays inside the 64x64 image
    kp = det.detect([img, big], np.concatenate([box, box + [70, 40, 70, 40]]))
    assert kp.shape == (2, 21, 3)
    assert np.allclose(kp[1, :, :2], kp[0, :, :2] + [70, 40], atol=1e-3)
    assert np.allclose(kp[0, :, 2], kp[1, :, 2], atol=1e-4) and (kp[:, :, 2] >= 0).all() and (kp[:, :, 2] <= 1).all()
    whole = det.detect([img])
    assert whole.shape == (1, 21, 3)
    with pytest.raises(HandannoError, match="boxes"):
        det.detect([img], np.zeros((2, 4)))


class _BiasedBlobNet(torch.nn.Module):
    """A stand-in heatmap network with a left-right bias: 21 Gaussian maps (three stages) at the
    centroid of the input's bright blob, ``bias`` map pixels to the right of it."""

    def __init__(self, crop_size: int, heatmap_size: int, bias: float):
        super().__init__()
        self.crop_size, self.heatmap_size, self.bias = crop_size, heatmap_size, bias

    def forward(self, x):
        w = x[:, 0] - x[:, 0].amin(dim=(-2, -1), keepdim=True)  # (B, S, S), zero off the blob
        ys, xs = torch.meshgrid(torch.arange(self.crop_size * 1.0), torch.arange(self.crop_size * 1.0), indexing="ij")
        uv = torch.stack([(w * xs).sum((-2, -1)), (w * ys).sum((-2, -1))], -1) / w.sum((-2, -1))[:, None]
        uv_hm = crop_to_heatmap(uv, self.crop_size, self.heatmap_size) + torch.tensor([self.bias, 0.0])
        h = self.heatmap_size
        maps = render_gaussian_heatmaps(uv_hm[:, None].expand(-1, 21, 2), (h, h), sigma=1.5)
        return [maps, maps, maps]


def test_flip_test_cancels_a_networks_left_right_bias(tmp_path, cpm_run, labels):
    """With the flip test, the task averages the crop's maps with its mirror image's: a half-cell
    bias to the right (4 crop pixels) cancels; training passes stay single; eval records it."""
    task = make_task("cpm", TINY_CPM)  # 32-pixel crops, 4x4 maps
    task.model = _BiasedBlobNet(32, 4, bias=0.5)
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, :, 19:21, 11:13] = 255  # a blob centred on crop pixel (11.5, 19.5), map pixel (1, 2)
    batch = {"image": image}
    plain, _ = task.decode(task.forward(task.model, batch, train=False))
    task.set_flip_test(True)
    flipped, conf = task.decode(task.forward(task.model, batch, train=False))
    trained, _ = task.decode(task.forward(task.model, batch, train=True))
    assert torch.allclose(plain[0], torch.tensor([15.5, 19.5]), atol=0.05)  # biased by 0.5 x 8 pixels
    assert torch.allclose(flipped[0], torch.tensor([11.5, 19.5]), atol=0.05)
    assert torch.allclose(trained, plain) and bool((conf > 0.5).all())

    _, result = cpm_run
    runs = {}
    for flag in ("--no-flip-test", "--flip-test"):
        out = tmp_path / f"{flag}.json"
        res = CliRunner().invoke(cli, ["eval", "cpm", "--weights", str(result.last_checkpoint), "--labels", str(labels),
                                       "--device", "cpu", "--out", str(out), flag])  # fmt: skip
        assert res.exit_code == 0, res.output + repr(res.exception)
        runs[flag] = json.loads(out.read_text())
    assert runs["--flip-test"]["flip_test"] is True and runs["--no-flip-test"]["flip_test"] is False
    assert runs["--flip-test"]["epe_px"] != runs["--no-flip-test"]["epe_px"]  # a second pass was averaged in
    det = CPMDetector.from_checkpoint(result.last_checkpoint, "cpu", flip_test=True)
    assert det.task.config.flip_test


def test_mano_and_lift_train_and_evaluate(tmp_path):
    """The 3D models through main() and evaluate(): metrics with the right names and units."""
    model = toy_hand_model()
    labels = make_toy_labels(tmp_path / "mano_labels", 6, image_size=64, seed=7, hand_model=model)
    layers = {s: ManoLayer(toy_hand_model(s)) for s in ("right", "left")}
    cfg = TrainConfig(model="mano", labels=(str(labels),), out=str(tmp_path / "mano"), epochs=1, batch_size=3,
                      workers=0, model_config={"width": 8, "crop_size": 32, "hidden": 16}, val_fraction=0.34,
                      data=DataConfig(augment=AugmentConfig(bg_prob=0.0)))  # fmt: skip
    task = make_task("mano", cfg.model_config, hand_layers=layers)
    result = main(cfg, task=task)
    assert (tmp_path / "mano" / "predictions.png").is_file()
    m = evaluate(EvalConfig(weights=str(result.last_checkpoint), labels=(str(labels),), device="cpu"),
                 hand_layers=layers)  # fmt: skip
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "rr_mpjpe_mm", "pa_mpvpe_mm", "f5", "pck@0.2", "epe_px"):
        assert np.isfinite(m[key]), key
    assert Path(m["json"]).is_file()

    cfg = TrainConfig(model="lift", labels=(str(labels),), out=str(tmp_path / "lift"), epochs=1, batch_size=3,
                      workers=0, model_config={"width": 0.125})  # fmt: skip
    result = main(cfg)
    m = evaluate(EvalConfig(weights=str(result.last_checkpoint), labels=(str(labels),), device="cpu"))
    assert m["model"] == "lift" and np.isfinite(m["rr_epe_mm"]) and m["rr_root_keypoint"] == 0
    with pytest.raises(HandannoError, match="flip test is for heatmap models.*not lift"):
        evaluate(EvalConfig(weights=str(result.last_checkpoint), labels=(str(labels),), device="cpu", flip_test=True))


def _ddp_rank(rank: int, cfg: TrainConfig, port: int) -> None:
    os.environ.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})  # what torchrun sets  # fmt: skip
    torch.set_num_threads(1)
    main(cfg)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_on_cpu(labels, tmp_path):
    """DDP as torchrun sets it up (env vars), two forked CPU processes on Gloo: sharded data, rank 0 saves."""
    cfg = TrainConfig(model="cpm", labels=(str(labels),), out=str(tmp_path / "ddp"), epochs=1, batch_size=3,
                      workers=0, device="cpu", plots=False, model_config=TINY_CPM)  # fmt: skip
    torch.multiprocessing.start_processes(_ddp_rank, args=(cfg, _free_port()), nprocs=2, start_method="fork")
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt", "cpm")
    assert ckpt["step"] == 2  # 11 training samples: 6 per rank (DistributedSampler pads), batch 3
    assert "WORLD_SIZE" not in os.environ


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(labels, tmp_path):
    """The real launcher: ``torchrun --nproc_per_node=2 -m handanno.cli train ...`` with the Gloo backend."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "handanno.cli", "train", "cpm", "--labels", str(labels), "--out", str(tmp_path / "ddp"), "--epochs",
           "1", "--batch-size", "3", "--workers", "0", "--device", "cpu", "--no-plots", "--set", "width=0.0625",
           "--set", "crop_size=32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt", "cpm")
    assert ckpt["step"] == 2  # 11 training samples: 6 per rank (DistributedSampler pads), batch 3


def test_a_stripped_checkpoint_has_the_same_network_and_no_training_state(cpm_run, tmp_path):
    from handanno.models.checkpoints import strip_checkpoint

    _, result = cpm_run
    dst = strip_checkpoint(result.best_checkpoint, tmp_path / "net.pt")
    assert dst.stat().st_size < result.best_checkpoint.stat().st_size
    full, _ = load_task(result.best_checkpoint, "cpu")
    small, ckpt = load_task(dst, "cpu", expected_kind="cpm")
    assert ckpt["optimizer"] is None and ckpt["history"] == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = full.model(x), small.model(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
