"""A 2D detector end to end: find the hand in full images, then fit from its keypoints.

Runs ``handanno fit --detector cpm --weights CKPT`` (a ``cpm`` or ``unet`` checkpoint from
``handanno train``) or ``--detector mediapipe`` on a copy of a synthetic session (for a trained
network, one it never saw: another seed, so other shape, cameras and backgrounds) and prints,
in one run:

- the detector alone: views where it reported a hand, its keypoint error against the true
  projections (EPE, px, over the keypoints inside the image and over those the synthesiser
  marks visible), PCK@0.2 (normaliser: the larger side of the true keypoints' box; both from
  :mod:`handanno.data.metrics`) and seconds per view;
- the fit from those keypoints: MPJPE / PA-MPJPE / MPVPE (mm) against the ground truth,
  accepted frames; and the same fit from the true keypoints, for comparison.

    .venv/bin/python benchmarks/bench_detect.py --weights runs/acc/unet/best.pt --session runs/acc/val --frames 0:20
    .venv/bin/python benchmarks/bench_detect.py --detector mediapipe --session runs/acc/val --frames 0:20
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.session_io import open_session, read_session_keypoints
from handanno.data import metrics


def detector_errors(truth: np.ndarray, det: np.ndarray) -> dict:
    """EPE and PCK of detected ``(B, C, 21, 3)`` keypoints against the true ones.

    The truth is a synthetic session's ``keypoints2d/`` made without noise: conf 0 outside the
    image, 0.25-0.55 for occluded keypoints, 0.75-1 for visible ones.
    """
    found = det[..., 2].max(axis=-1) > 0  # (B, C) views where the detector reported a hand
    in_image = truth[..., 2] > 0  # (B, C, 21); keypoints outside the image are [0, 0, 0]
    has_hand = in_image.any(axis=-1)
    use = found & has_hand
    pred, gt, seen = det[use][..., :2], truth[use][..., :2], in_image[use]  # (N, 21, 2), (N, 21, 2), (N, 21)
    err = np.where(seen, np.linalg.norm(pred - gt, axis=-1), np.nan)  # (N, 21)
    pck = metrics.pck_2d(pred, gt, seen)
    return {
        "views_with_hand": int(has_hand.sum()), "views_found": int(use.sum()),
        "views_false_positive": int((found & ~has_hand).sum()),
        "epe_px": metrics.epe_2d(pred, gt, seen), "epe_visible_px": metrics.epe_2d(pred, gt, truth[use][..., 2] >= 0.7),
        "median_px": float(np.nanmedian(err)), "pck@0.2": pck.pck,
        "hand_box_px_mean": float(np.nanmean(pck.normaliser_px)),
        "epe_per_keypoint_px": [round(float(e), 1) for e in np.nanmean(err, axis=0)],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detector", choices=["cpm", "mediapipe"], default="cpm")
    p.add_argument("--weights", default=None, help="--detector cpm: a cpm or unet checkpoint from handanno train")
    p.add_argument("--flip-test", action="store_true", help="--detector cpm: average with the mirror image's maps")
    p.add_argument("--session", required=True, help="synthetic session (handanno synth, keypoint noise 0)")
    p.add_argument("--frames", default="0:20", help="a slice: 0:20 is the first 20 frames, 20 is frame 20 alone")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--silhouette", action="store_true", help="fit with silhouettes too (slower)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    src = Path(args.session)
    truth_session = open_session(src, frames=args.frames)
    truth = read_session_keypoints(truth_session)  # (B, C, 21, 3)
    C = len(truth_session.cameras)
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                 "detector": args.detector, "device": args.device, "threads": args.threads, "weights": args.weights,
                 "flip_test": args.flip_test, "session": str(src),
                 "frames": len(truth_session.frames), "cameras": C}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, detector in (("detected", args.detector), ("true keypoints", "given")):
            work = Path(tmp) / name.replace(" ", "_")
            shutil.copytree(src, work, ignore=shutil.ignore_patterns("fits", "masks", "labels", "report.json"))
            if detector != "given":
                shutil.rmtree(work / "keypoints2d")
            weights = Path(args.weights) if args.weights else None
            settings = PipelineSettings(session=work, detector=detector, detector_weights=weights,
                                        detector_flip_test=args.flip_test, device=args.device,
                                        silhouette=args.silhouette, export=False,
                                        frames=args.frames, progress=False)  # fmt: skip
            t0 = time.perf_counter()
            report = run_pipeline(settings)
            runs[name] = {"s": time.perf_counter() - t0, "report": report}
            if detector != "given":
                det = read_session_keypoints(open_session(work, frames=args.frames))
                res["detection"] = detector_errors(truth, det)
                res["detection"]["s_per_view"] = report.timings_s.get("detect", float("nan")) / truth[..., 0, 0].size
        for name, r in runs.items():
            rep = r["report"]
            acc = rep.accuracy or {}
            keys = ("mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm")
            res[f"fit from {name}"] = {"accepted": f"{rep.frames_accepted}/{rep.frames_fitted}",
                                       **{k: acc.get(k) for k in keys}, "timings_s": rep.timings_s}  # fmt: skip
    print(json.dumps(res, indent=1, default=float))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
