"""Fit settings compared on a real capture without ground truth: the error of held-out keypoints.

A real capture has no 3D truth, but its detections can judge a fit they did not shape: in every
frame one view (cam1 on frames whose index is a multiple of 4, cam0 otherwise) loses the
detector's keypoints 2, 4, ..., 20 (the PIP / IP joints and the tips: 10 of 21) before the fit,
and afterwards the fit is projected into that view and compared with the detections it never saw.
A prior that pulls the fit off the hand, or a fit that follows noise, shows as a larger held-out
error. The detections themselves are not exact (the multi-view consistency of MediaPipe on the
real two-camera capture is 1.7 px), so the figure has a floor of a few pixels.

The session must hold detections already (``handanno fit --session S --detector mediapipe``;
masks too for the silhouette rows). Each variant fits a copy whose images are symbolic links.

    .venv/bin/python benchmarks/bench_heldout_keypoints.py --session runs/real --frames 20:80 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.session_io import open_session, read_keypoints_file, write_keypoints_file
from handanno.device import cpu_name

HELD_OUT = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
VARIANTS = {
    "default": FitSettings(),
    "w_temporal 0.3": replace(FitSettings(), w_temporal=0.3),
    "w_temporal 1.0": replace(FitSettings(), w_temporal=1.0),
    "earlier default (w_temporal 0.3, 250 keypoint iterations, sil_ref_noise_px 3)": replace(
        FitSettings(), w_temporal=0.3, iters_2d=250, sil_ref_noise_px=3.0),
    "evidence upper end 0.5 (earlier)": replace(FitSettings(), evidence_range=(1e-5, 0.5)),
    "fixed weights": replace(FitSettings(), prior_weighting="fixed"),
    "no temporal term": replace(FitSettings(), w_temporal=0.0),
}


def held_out_view(stem: str, cameras: list[str]) -> str:
    """The view that loses keypoints in this frame (alternating between the first two cameras)."""
    return cameras[1] if int(stem) % 4 == 0 else cameras[0]


def prepare(src: Path, dst: Path, silhouette: bool) -> dict[tuple[str, str], np.ndarray]:
    """A copy of ``src`` with the held-out keypoints removed; returns them, by (frame, camera)."""
    dst.mkdir(parents=True)
    (dst / "images").symlink_to((src / "images").resolve())
    shutil.copy(src / "rig.json", dst / "rig.json")
    if silhouette:
        shutil.copytree(src / "masks", dst / "masks")
    cameras = sorted(p.name for p in (src / "keypoints2d").iterdir() if p.is_dir())
    truth = {}
    for cam in cameras:
        (dst / "keypoints2d" / cam).mkdir(parents=True)
        for f in sorted((src / "keypoints2d" / cam).glob("*.json")):
            kp = read_keypoints_file(f)
            if cam == held_out_view(f.stem, cameras):
                truth[(f.stem, cam)] = kp[HELD_OUT].copy()
                kp = kp.copy()
                kp[HELD_OUT, 2] = 0.0
            write_keypoints_file(dst / "keypoints2d" / cam / f.name, kp, "user")
    return truth


def held_out_errors(session_dir: Path, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel errors of the held-out keypoints, and the fit's own reprojection errors (per view)."""
    s = open_session(session_dir)
    cams = {c.name: c for c in s.rig.cameras}
    held, own = [], []
    for path in sorted((session_dir / "fits").glob("*.json")):
        rec = json.loads(path.read_text())
        joints = np.asarray(rec["joints"])
        for (stem, cam), kp in truth.items():
            if stem == path.stem:
                ok = kp[:, 2] > 0.2
                held += list(np.linalg.norm(cams[cam].project(joints)[HELD_OUT] - kp[:, :2], axis=1)[ok])
        own += [v for v in rec["quality"]["reproj_err_px"].values() if v is not None]
    return np.asarray(held), np.asarray(own)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--session", type=Path, required=True, help="a session with detections (and masks)")
    ap.add_argument("--frames", default="20:80", help="frames to fit, a slice over their order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-silhouette", dest="silhouette", action="store_false", help="only keypoint-only rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    machine = cpu_name()
    print(f"# held-out keypoints on {args.session}, frames {args.frames}; {machine}, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print("| fit | silhouettes | held-out median px | held-out mean px | fit's own reprojection median px | s |")
    print("|---|---|---|---|---|---|")
    results = []
    for sil in (False, True) if args.silhouette else (False,):
        for name, fit in VARIANTS.items():
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / "session"
                truth = prepare(args.session, work, sil)
                t0 = time.perf_counter()
                run_pipeline(PipelineSettings(session=work, detector="given", silhouette=sil, frames=args.frames,
                                              fit=fit, export=False, progress=False, redetect=False))  # fmt: skip
                dt = time.perf_counter() - t0
                held, own = held_out_errors(work, truth)
            row = {"fit": name, "silhouettes": sil, "held_median_px": float(np.median(held)),
                   "held_mean_px": float(np.mean(held)), "own_median_px": float(np.median(own)), "n": len(held),
                   "seconds": dt}  # fmt: skip
            results.append(row)
            print(f"| {name} | {'yes' if sil else 'no'} | {row['held_median_px']:.2f} | {row['held_mean_px']:.2f} | "
                  f"{row['own_median_px']:.2f} | {dt:.0f} |", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
