"""The bootstrap's acceptance on a held-out synthetic capture: rounds of fit, train, detect again.

One synthetic session (8 cameras x 50 frames, 640x480, a seed no training used), its
synthetic detections removed so that the seed detector must find the hand, then
``handanno bootstrap`` from MediaPipe and/or from the shipped network, each in its own copy
of the session. Prints the per-round table (views found, multi-view consistency, accepted
frames, fit reprojection error and mask IoU; 2D EPE against the truth, MPJPE and PA-MPVPE)
and the wall time, and writes them to WORK/bench_bootstrap.json.

    .venv/bin/python benchmarks/bench_bootstrap.py --work runs/boot --inits mediapipe,cpm --threads 2

``--redetect`` first measures the fit's guided re-detection alone (no training): the same
session fitted by each seed detector with and without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.session_io import open_session
from handanno.bootstrap.metrics import round_metrics
from handanno.bootstrap.rounds import BootstrapSettings, format_table, run_bootstrap
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.models.checkpoints import shipped_detector_weights
from handanno.synth.capture import SynthSettings, synthesize


def make_session(work: Path, seed: int, cameras: int, frames: int, size: tuple[int, int],
                 postures: str = "anatomical") -> Path:  # fmt: skip
    """The held-out capture without its synthetic detections (made once, then copied)."""
    base = work / f"synth_{seed}" if postures == "anatomical" else work / f"synth_{seed}_{postures}"
    if not (base / "synth.json").is_file():
        synthesize(SynthSettings(out_dir=base, num_cameras=cameras, num_frames=frames, image_size=size, seed=seed,
                                 write_calib=False, progress=False, postures=postures))  # fmt: skip
        shutil.rmtree(base / "keypoints2d")
    return base


def fresh_copy(base: Path, dst: Path) -> Path:
    if not dst.exists():
        shutil.copytree(base, dst)
    return dst


def redetect_rows(base: Path, work: Path, inits: list[str], weights: Path | None) -> list[dict]:
    """Fit each seed detector's keypoints with and without the guided re-detection; one row each."""
    layer = ManoLayer(load_hand_model("right"))
    rows = []
    for init in inits:
        for redetect in (False, True):
            root = fresh_copy(base, work / f"redetect_{init}_{'on' if redetect else 'off'}")
            det = {"detector": "cpm", "detector_weights": weights} if init == "cpm" else {"detector": "mediapipe"}
            t0 = time.perf_counter()
            settings = PipelineSettings(session=root, export=False, progress=False, **det)
            if hasattr(settings, "redetect"):
                settings = replace(settings, redetect=redetect)
            report = run_pipeline(settings)
            row = {"init": init, "redetect": redetect, "seconds": round(time.perf_counter() - t0, 1),
                   **round_metrics(open_session(root), layer)}  # fmt: skip
            for k in ("views_found_before", "views_found_after", "views_redetected"):
                if hasattr(report, k):
                    row[k] = getattr(report, k)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/boot")
    p.add_argument("--seed", type=int, default=3000)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--image-size", default="640x480")
    p.add_argument("--inits", default="mediapipe,cpm")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--weights", type=Path, default=None, help="starting network (default: the shipped one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--postures", default="anatomical", choices=["anatomical", "realistic"],
                   help="the capture's posture generator (docs/performance.md's figures: anatomical, the one the "
                        "shipped network was trained on)")
    p.add_argument("--redetect", action="store_true", help="also measure re-detection alone")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.image_size.split("x"))
    base = make_session(work, args.seed, args.cameras, args.frames, size, args.postures)
    weights = args.weights or shipped_detector_weights()
    inits = args.inits.split(",")
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
           "seed": args.seed, "cameras": args.cameras, "frames": args.frames, "image_size": args.image_size,
           "weights": str(weights)}  # fmt: skip
    if args.redetect:
        out["redetect"] = redetect_rows(base, work, inits, weights)
    for init in inits:
        root = fresh_copy(base, work / f"boot_{init}")
        t0 = time.perf_counter()
        report = run_bootstrap(BootstrapSettings(session=root, rounds=args.rounds, init=init, weights=weights,
                                                 epochs=args.epochs, device="cpu", progress=False))  # fmt: skip
        minutes = (time.perf_counter() - t0) / 60
        print(f"\n## bootstrap from {init} (seed {args.seed}, {args.cameras} cameras x {args.frames} frames, "
              f"{args.image_size}): {minutes:.1f} min this run, best round {report.best_round}, {report.stopped}")
        print(format_table(report.rows), flush=True)
        out[f"bootstrap_{init}"] = {"rows": report.rows, "best_round": report.best_round, "stopped": report.stopped,
                                    "minutes_this_run": round(minutes, 2)}  # fmt: skip
        (work / "bench_bootstrap.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
