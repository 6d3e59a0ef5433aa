"""Time ``handanno synth`` at the acceptance size: 8 cameras x 50 frames at 640x480, 20 calibration views.

Usage: ``.venv/bin/python benchmarks/bench_synth.py [--cameras 8] [--frames 50] [--image-size 640x480]
[--calib-views 20] [--image-format jpg|png] [--out DIR] [--keep]``

Prints the total wall time, the CPU time of all threads, the per-stage split and the load
average (the machine is shared: compare wall times only at similar load; the CPU time says
what the run costs whatever the load). Stages: rig, motion+mesh (hand model forward
for all frames), render (ray casting, shading, shadows, compositing, noise), keypoints
(visibility, noise, ground truth records), calib (board views), preview, write_wait (time
the main thread waited for the writer threads at the end) and write_cpu (encode + write
seconds summed over the writer threads; it overlaps with the other stages).
"""

import argparse
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from handanno.calibration.rig_io import parse_image_size
from handanno.synth.capture import SynthSettings, synthesize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--image-size", default="640x480")
    p.add_argument("--calib-views", type=int, default=20)
    p.add_argument("--image-format", choices=["jpg", "png"], default="jpg")
    p.add_argument("--out", default=None, help="output folder (default: a temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary output")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        out = tmp / "session"
    else:
        out = Path(args.out)
    settings = SynthSettings(out, num_cameras=args.cameras, num_frames=args.frames,
                             image_size=parse_image_size(args.image_size), calib_views=args.calib_views,
                             image_format=args.image_format, force=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    res = synthesize(settings)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"synth {args.cameras} cameras x {args.frames} frames at {args.image_size}, {args.calib_views} calib views, "
          f"{args.image_format}: {wall:.1f} s wall, {cpu:.1f} s CPU (all threads), {res.num_files} files, "
          f"{size_mb:.0f} MiB "
          f"(load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    for stage in ("rig", "motion_mesh", "render", "keypoints", "calib", "preview", "write_wait", "write_cpu"):
        print(f"  {stage:12s} {res.timings_s[stage]:7.2f} s")
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp)
    elif tmp is not None:
        print(f"kept {out}")


if __name__ == "__main__":
    main()
