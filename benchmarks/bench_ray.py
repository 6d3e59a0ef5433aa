"""`handanno fit` in one process against the same fit sharded on a local Ray, in one run.

One synthetic session (`handanno synth`: 8 cameras, 40 frames, 640x480, 3 px keypoint noise +
10 % outliers, seed 0), fitted four times from the same copy (keypoints given, GrabCut masks,
keypoint + silhouette fit, export):

1. one process (`run_pipeline`, batches of `--shard-frames`, the batches the shards make);
2. Ray with 2 workers (`ray.init(num_cpus=2)`, shards of `--shard-frames`);
3. Ray with 1 worker (`ray.init(num_cpus=1)`): against (1), the overhead of the shards, per shard;
4. no-op tasks on that 1-worker Ray: the cost of one task round trip (scheduling, arguments, result).

With ``--repeat N`` the three fits are run N times, alternated, and the best of each counts.

It prints wall times, the ratio 1-process / 2 workers, the overhead per shard, the per-stage
seconds and the machine (CPU, cores, load average before and after). The sharded fits are
checked against the one-process fits (same betas, joints within 0.01 mm).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py --frames 40 --cameras 8 --shard-frames 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.pipeline import PipelineSettings, fit_stretch, run_pipeline
from handanno.annotate.session_io import read_fit
from handanno.device import cpu_name
from handanno.synth.capture import SynthSettings, synthesize


def fits(root: Path) -> dict[str, dict]:
    return {p.stem: read_fit(p) for p in sorted((root / "fits").glob("*.json"))}


def compare(a: Path, b: Path) -> str:
    fa, fb = fits(a), fits(b)
    if sorted(fa) != sorted(fb):
        return f"DIFFERENT frames: {len(fa)} vs {len(fb)}"
    betas = max(float(np.abs(fa[f]["betas"] - fb[f]["betas"]).max()) for f in fa)
    joints_mm = max(float(np.abs(fa[f]["joints"] - fb[f]["joints"]).max()) * 1000 for f in fa)
    return f"{len(fa)} frames, max |betas diff| {betas:.2g}, max |joints diff| {joints_mm:.3g} mm"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--shard-frames", type=int, default=10)
    ap.add_argument("--noop-tasks", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="Runs of each configuration, alternated; the best counts.")
    ap.add_argument("--work", default=None, help="Folder for the sessions (default: a temporary one, removed).")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    from handanno.scale.ray_fit import fit_sessions_ray

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_ray_"))
    base = work / "synth"
    load0 = os.getloadavg()
    t = time.perf_counter()
    if not base.is_dir():
        synthesize(SynthSettings(out_dir=base, num_cameras=args.cameras, num_frames=args.frames,
                                 keypoint_noise_px=3.0, outlier_rate=0.1, write_calib=False, progress=False))
    print(f"synth: {args.cameras} cameras x {args.frames} frames in {time.perf_counter() - t:.1f} s")

    def fresh(name: str) -> Path:
        dst = work / name
        shutil.rmtree(dst, ignore_errors=True)
        return Path(shutil.copytree(base, dst))

    def settings(root: Path, **kw) -> PipelineSettings:
        return PipelineSettings(session=root, device="cpu", progress=False, **kw)

    rows: dict[str, list[tuple[float, dict]]] = {}
    ray_init = {}
    shards = noop_s = empty_shard_s = 0

    def one_process() -> None:
        root = fresh("one_process")
        t = time.perf_counter()
        rep = run_pipeline(settings(root, batch_frames=args.shard_frames))
        rows.setdefault("1 process", []).append((time.perf_counter() - t, rep.timings_s))

    def on_ray(workers: int) -> None:
        nonlocal shards, noop_s, empty_shard_s
        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray_init[workers] = time.perf_counter() - t
        root = fresh(f"ray_{workers}")
        t = time.perf_counter()
        job = fit_sessions_ray([root], settings(root), address=None, shard_frames=args.shard_frames)
        wall = time.perf_counter() - t
        assert job.ok, job.failure_message()
        rows.setdefault(f"Ray, {workers} worker(s)", []).append((wall, job.reports[root].timings_s))
        shards = job.shards
        if workers == 1:
            noop = ray.remote(num_cpus=1)(lambda: None)
            ray.get(noop.remote())  # a warm worker
            t = time.perf_counter()
            ray.get([noop.remote() for _ in range(args.noop_tasks)])
            noop_s = (time.perf_counter() - t) / args.noop_tasks
            # a shard of no frame: opening the session, loading the hand model, reading nothing, no fit
            empty = ray.remote(num_cpus=1)(fit_stretch)
            t = time.perf_counter()
            ray.get([empty.remote(settings(root), 0, 0, None) for _ in range(args.noop_tasks)])
            empty_shard_s = (time.perf_counter() - t) / args.noop_tasks
        ray.shutdown()

    for _ in range(args.repeat):  # alternated: the machine's load changes from minute to minute
        one_process()
        on_ray(2)
        on_ray(1)

    load1 = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, ray {ray.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch threads 1; load average before "
          f"{load0[0]:.2f} / after {load1[0]:.2f} (1 min)")  # fmt: skip
    print(f"session: {args.cameras} cameras x {args.frames} frames, 640x480; shards of {args.shard_frames} frames "
          f"({shards} shards), keypoints + silhouettes, export")  # fmt: skip
    print("| run | wall s | s / frame | shape | fit_keypoints | segment | fit_silhouettes | export |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        for wall, tim in runs:
            cells = " | ".join(f"{tim.get(k, 0):.1f}" for k in ("shape", "fit_keypoints", "segment", "fit_silhouettes",
                                                                  "export"))  # fmt: skip
            print(f"| {name} | {wall:.1f} | {wall / args.frames:.2f} | {cells} |")
    one, two, ray1 = (min(w for w, _ in rows[k]) for k in ("1 process", "Ray, 2 worker(s)", "Ray, 1 worker(s)"))
    print(f"best of {args.repeat}: 1 process {one:.1f} s, Ray 2 workers {two:.1f} s, Ray 1 worker {ray1:.1f} s")
    print(f"speed-up 2 workers vs 1 process: {one / two:.2f}x")
    print(f"overhead per shard (Ray 1 worker - 1 process) / {shards} shards: {(ray1 - one) / shards:.2f} s")
    print(f"a shard of no frame (open the session, load the model): {empty_shard_s * 1000:.0f} ms")
    print(f"no-op task round trip: {noop_s * 1000:.1f} ms; ray.init: {ray_init[2]:.1f} s (2 CPUs), "
          f"{ray_init[1]:.1f} s (1 CPU)")  # fmt: skip
    print("(stage seconds: the Ray runs' are summed over the shards; shape is the shape task, export the report task)")
    for workers in (2, 1):
        print(f"Ray {workers} worker(s) vs 1 process: {compare(work / 'one_process', work / f'ray_{workers}')}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
