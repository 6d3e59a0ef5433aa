"""Accuracy and speed of `handanno fit` on synthetic sessions, against plain robust triangulation.

For each noise setting it makes one synthetic session (`handanno synth`), then measures in
one run:

- robust triangulation of the same 2D keypoints (weighted DLT dropping the worst view until
  every view reprojects within 15 px): the bar to beat;
- the hand-model fit with keypoints only (`--no-silhouette`);
- the fit with keypoints and silhouettes (GrabCut masks, refined from the fitted mesh);
- both again without the temporal smoothness term (`w_temporal=0`, unless `--no-temporal-ablation`):
  what the term buys on the session's smooth motion.

Sessions are made with each of `--postures` (`realistic`, issue 20's generator, which does not assume
what the fitter's prior assumes, and `anatomical`, the generator before it and still `handanno synth`'s
default, whose postures the fitter's old prior encoded). It prints
MPJPE / PA-MPJPE / MPVPE / PA-MPVPE (mm), the rest-pose shape error (mm), the accepted frames,
and seconds per frame with the per-stage split, then the issue-20 acceptance checks.

    .venv/bin/python benchmarks/bench_fit.py --frames 50 --cameras 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.session_io import open_session, read_fit, read_session_keypoints
from handanno.calibration.triangulate import triangulate_robust
from handanno.data import metrics
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.synth.capture import SynthSettings, synthesize


def triangulation_baseline(session_dir: Path) -> dict:
    s = open_session(session_dir)
    kp = read_session_keypoints(s)
    gt = np.stack([read_fit(s.fit_path(f, "ground_truth"))["joints"] for f in s.frames])
    t0 = time.perf_counter()
    pts = []
    for b in range(len(s.frames)):
        conf = np.where(kp[b, :, :, 2] > 0.2, kp[b, :, :, 2], 0)
        pts.append(triangulate_robust(kp[b, :, :, :2], conf, s.rig, max_reproj_px=15.0).points)
    dt = time.perf_counter() - t0
    pts = np.stack(pts)
    ok = np.all(np.isfinite(pts), axis=2)
    return {"mpjpe_mm": metrics.mpjpe(np.nan_to_num(pts), gt, mask=ok),
            "pa_mpjpe_mm": metrics.pa_mpjpe(np.nan_to_num(pts), gt, mask=ok),
            "s_per_frame": dt / len(s.frames), "missing_joints": int((~ok).sum())}


def shape_error_mm(session_dir: Path, layer: ManoLayer) -> float:
    s = open_session(session_dir)
    fit = read_fit(s.fit_path(s.frames[0]))
    gt = read_fit(s.fit_path(s.frames[0], "ground_truth"))
    z48, z3 = torch.zeros(1, 48, dtype=layer.dtype), torch.zeros(1, 3, dtype=layer.dtype)
    with torch.no_grad():
        vf = layer(z48, torch.as_tensor(fit["betas"][None], dtype=layer.dtype), z3).vertices.double().numpy()
        vg = layer(z48, torch.as_tensor(gt["betas"][None], dtype=layer.dtype), z3).vertices.double().numpy()
    return metrics.mpvpe(vf, vg)


def run_case(args, noise: float, outliers: float, postures: str, work: Path) -> list[dict]:
    src = work / f"synth_{postures}_{noise}_{outliers}"
    t0 = time.perf_counter()
    synthesize(SynthSettings(out_dir=src, num_cameras=args.cameras, num_frames=args.frames,
                             image_size=tuple(int(v) for v in args.size.split("x")), seed=args.seed,
                             keypoint_noise_px=noise, outlier_rate=outliers, write_calib=False, progress=False,
                             postures=postures))  # fmt: skip
    t_synth = time.perf_counter() - t0
    rows = [{"method": "robust triangulation", **triangulation_baseline(src)}]
    layer = ManoLayer(load_hand_model("right"))
    methods = [("fit, keypoints only", False, FitSettings()), ("fit, keypoints + silhouettes", True, FitSettings())]
    if args.temporal_ablation:
        no_t = replace(FitSettings(), w_temporal=0.0)
        methods += [("fit, keypoints only, no temporal term", False, no_t),
                    ("fit, keypoints + silhouettes, no temporal term", True, no_t)]  # fmt: skip
    for i, (name, sil, fit) in enumerate(methods):
        run_dir = work / f"run_{postures}_{noise}_{outliers}_{i}"
        shutil.copytree(src, run_dir)
        settings = PipelineSettings(session=run_dir, device=args.device, silhouette=sil, export=False, progress=False,
                                    fit=fit)  # fmt: skip
        t0 = time.perf_counter()
        rep = run_pipeline(settings)
        dt = time.perf_counter() - t0
        acc = rep.accuracy or {}
        rows.append({"method": name, **{k: acc.get(k) for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm")},
                     "shape_mm": shape_error_mm(run_dir, layer),
                     "accepted": f"{rep.frames_accepted}/{rep.frames_total}",
                     "all_accepted": rep.frames_accepted == rep.frames_total,
                     "s_per_frame": dt / max(rep.frames_total, 1),
                     "stages": {k: round(v / max(rep.frames_total, 1), 4) for k, v in rep.timings_s.items()}})
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"\n## {postures} postures, noise {noise} px, outliers {outliers:.0%}  ({args.cameras} cameras, "
          f"{args.frames} frames, {args.size}, seed {args.seed}; synth took {t_synth:.1f} s)")
    head = ["method", "mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "shape_mm", "accepted", "s_per_frame"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r.get(h):.3f}" if isinstance(r.get(h), float) else str(r.get(h, "")) for h in head]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if "stages" in r:
            print(f"  {r['method']}: seconds per frame by stage {json.dumps(r['stages'])}")
    base = rows[0]["mpjpe_mm"]
    for r in rows[1:]:
        print(f"  {r['method']}: MPJPE {100 * (1 - r['mpjpe_mm'] / base):.0f} % below robust triangulation")
    by = {r["method"]: r for r in rows}
    for kind in ("keypoints only", "keypoints + silhouettes"):
        with_t, without = by.get(f"fit, {kind}"), by.get(f"fit, {kind}, no temporal term")
        if with_t and without:
            print(f"  temporal term, {kind}: MPJPE {without['mpjpe_mm']:.3f} -> {with_t['mpjpe_mm']:.3f} mm "
                  f"({100 * (1 - with_t['mpjpe_mm'] / without['mpjpe_mm']):.0f} % lower)")
    return rows


def acceptance(postures: str, noise: float, outliers: float, rows: list[dict]) -> list[tuple[str, bool]]:
    """Issue 20's bounds for one case, as (what, met)."""
    by = {r["method"]: r for r in rows}
    tri, full = by["robust triangulation"], by["fit, keypoints + silhouettes"]
    out = []
    if noise <= 1.0 and outliers == 0:
        for name in ("fit, keypoints only", "fit, keypoints + silhouettes"):
            r = by[name]
            out.append((f"{postures} 1 px, {name}: MPJPE {r['mpjpe_mm']:.3f} <= 0.8 x triangulation "
                        f"{0.8 * tri['mpjpe_mm']:.3f}", r["mpjpe_mm"] <= 0.8 * tri["mpjpe_mm"]))
            out.append((f"{postures} 1 px, {name}: MPVPE {r['mpvpe_mm']:.3f} <= 0.8 mm", r["mpvpe_mm"] <= 0.8))
    else:
        tag = f"{postures} {noise:g} px + {outliers:.0%}, keypoints + silhouettes"
        out += [(f"{tag}: MPJPE {full['mpjpe_mm']:.3f} <= 1.0 mm", full["mpjpe_mm"] <= 1.0),
                (f"{tag}: PA-MPVPE {full['pa_mpvpe_mm']:.3f} <= 1.0 mm", full["pa_mpvpe_mm"] <= 1.0),
                (f"{tag}: rest shape {full['shape_mm']:.3f} <= 0.8 mm", full["shape_mm"] <= 0.8),
                (f"{tag}: every frame accepted ({full['accepted']})", full["all_accepted"])]
    for kind in ("keypoints only", "keypoints + silhouettes"):
        with_t, without = by.get(f"fit, {kind}"), by.get(f"fit, {kind}, no temporal term")
        if with_t and without:
            drop = 1 - with_t["mpjpe_mm"] / without["mpjpe_mm"]
            out.append((f"{postures} {noise:g} px + {outliers:.0%}, {kind}: the temporal term lowers MPJPE by "
                        f"{100 * drop:.0f} % >= 15 %", drop >= 0.15))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cases", default="1:0,3:0.1", help="noise_px:outlier_rate pairs, comma-separated")
    ap.add_argument("--postures", default="realistic,anatomical",
                    help="posture generators of the sessions (handanno synth --postures), comma-separated")
    ap.add_argument("--no-temporal-ablation", dest="temporal_ablation", action="store_false",
                    help="skip the fits without the temporal term")
    ap.add_argument("--keep", type=Path, default=None, help="keep the sessions in this folder")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads on the CPU (default: torch's); 1 is steadier on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {args.device} (cuda available: {torch.cuda.is_available()})")
    work = args.keep or Path(tempfile.mkdtemp(prefix="handanno_bench_fit_"))
    work.mkdir(parents=True, exist_ok=True)
    checks = []
    try:
        for postures in args.postures.split(","):
            for case in args.cases.split(","):
                noise, outl = (float(v) for v in case.split(":"))
                checks += acceptance(postures, noise, outl, run_case(args, noise, outl, postures, work))
        print("\n## acceptance (issue 20)")
        for what, met in checks:
            print(f"- {'met' if met else 'NOT met'}: {what}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
