"""The trainers' accuracy acceptance: PCK@0.2 >= 0.95 on held-out synthetic hands after training on >= 4,000.

Run (needs a GPU for a reasonable time; about an hour per model on one H100 at the defaults)::

    .venv/bin/python benchmarks/train_accuracy.py --work runs/accuracy --models cpm,unet --device cuda

What it does, as plain ``handanno`` commands (printed as they run, so they can be repeated by hand):

1. ``handanno synth WORK/train_<k> --cameras 8 --frames 100 --seed <k>`` for ``k = 0..S-1``
   (``S = ceil(train_samples / (cameras * frames))``, 5 sessions = 4,000 views by default),
   and one held-out session ``WORK/val`` with another seed;
2. ``handanno export --session <session> --source ground_truth`` for each: FreiHAND-layout
   labels from the true hands (no fitter involved, so the trainers are tested on their own);
3. ``handanno train <model> --labels WORK/train_0/labels ... --val WORK/val/labels --out WORK/<model>``;
4. ``handanno eval <model> --weights WORK/<model>/best.pt --labels WORK/val/labels``, then the
   check ``pck@0.2 >= --target`` (PCK normalised by the larger side of the ground-truth
   keypoints' bounding box); the exit status is 1 when a model misses it.

Steps whose outputs exist are skipped, so an interrupted run continues. ``--model-dir`` passes a
MANO folder to synth/export (default: the open hand model).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("train_accuracy")


def run(cmd: list[str]) -> None:
    log.info("$ %s", " ".join(shlex.quote(c) for c in cmd))
    subprocess.run(cmd, check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="working folder (sessions, labels, runs)")
    p.add_argument("--models", default="cpm,unet")
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--val-frames", type=int, default=50)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--frames", type=int, default=100, help="frames per training session")
    p.add_argument("--image-size", default="640x480")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--target", type=float, default=0.95)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work)
    handanno = [sys.executable, "-m", "handanno.cli"]
    model_dir = ["--model-dir", args.model_dir] if args.model_dir else []

    n_sessions = math.ceil(args.train_samples / (args.cameras * args.frames))
    sessions = [(work / f"train_{k}", k, args.frames) for k in range(n_sessions)] + [
        (work / "val", 1000, args.val_frames)
    ]
    for session, seed, frames in sessions:
        if not (session / "rig.json").is_file():
            run([*handanno, "synth", str(session), "--cameras", str(args.cameras), "--frames", str(frames), "--seed",
                 str(seed), "--image-size", args.image_size, "--calib-views", "0", *model_dir])  # fmt: skip
        if not (session / "labels" / "training_K.json").is_file():
            run([*handanno, "export", "--session", str(session), "--source", "ground_truth", *model_dir])
    train_labels = [x for s, _, _ in sessions[:-1] for x in ("--labels", str(s / "labels"))]
    val_labels = str(work / "val" / "labels")

    results, ok = {}, True
    for model in args.models.split(","):
        out = work / model
        if not (out / "last.pt").is_file() or not (out / "best.pt").is_file():
            run([*handanno, "train", model, *train_labels, "--val", val_labels, "--out", str(out), "--epochs",
                 str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--workers",
                 str(args.workers), "--device", args.device, "--resume", *model_dir])  # fmt: skip
        metrics_path = out / "eval_val.json"
        run([*handanno, "eval", model, "--weights", str(out / "best.pt"), "--labels", val_labels, "--device",
             args.device, "--out", str(metrics_path)])  # fmt: skip
        m = json.loads(metrics_path.read_text())
        passed = m.get("pck@0.2", 0.0) >= args.target if "pck@0.2" in m else None
        results[model] = {k: m.get(k) for k in ("pck@0.2", "epe_px", "auc_2d", "num_samples", "rr_mpjpe_mm",
                                                "rr_epe_mm")} | {"passed": passed}  # fmt: skip
        log.info("%s: PCK@0.2 %s (normaliser: larger side of the GT keypoints' bounding box), target %.2f: %s",
                 model, m.get("pck@0.2"), args.target, "PASS" if passed else "FAIL")  # fmt: skip
        ok = ok and passed is not False
    (work / "accuracy.json").write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
