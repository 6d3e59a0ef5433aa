"""``handanno import videos``: decode speed, write speed, and ``--sync hand`` on shifted synthetic videos.

Usage: ``.venv/bin/python benchmarks/bench_import.py [--cameras 3] [--frames 90] [--image-size 640x480]
[--real ../shared/data/real_2view] [--no-mediapipe] [--out DIR]``

1. ``handanno synth`` makes a capture (default 3 cameras x 90 frames at 640x480); each
   camera's images become an mp4 (mp4v, 15 fps) that starts at another frame of the motion,
   so that the true offsets relative to cam0 are cam1 -7, cam2 +12 (further cameras cycle
   through -7, +12, +5, -3).
2. Scan (decode every frame, ``grab`` only) and a plain import with the true offsets: frames
   per second decoded, images per second decoded + encoded + written.
3. ``--sync hand`` with an oracle detector (the projection of the ground-truth joints, for
   the frame the decoded image is, looked up by its bytes), with the shipped heatmap network
   (``--sync-detector cpm``), then with MediaPipe if it is installed: the recovered offsets,
   the median multi-view reprojection error and the time.
4. With ``--real DIR`` (the real_2view capture): scan speed and ``--sync hand`` with
   MediaPipe on its two videos (synchronized by frame index: the offset should be 0), and
   on re-encoded copies where cam1 starts 7 frames late (offset -7) or cam0 12 frames late
   (offset +12).

Decoding is OpenCV's (PyAV is not installed). Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from handanno.calibration.rig_io import parse_image_size
from handanno.capture.video_io import scan_video
from handanno.capture.videos import ImportSettings, NetworkSyncDetector, import_videos
from handanno.synth.capture import SynthSettings, synthesize
from handanno.synth.videos import VideoOracle, write_shifted_videos

SHIFTS = (0, -7, 12, 5, -3)


def make_videos(root: Path, cameras: int, frames: int, size: tuple[int, int]):
    """Synth capture + shifted videos; returns (videos, rig.json, true offsets, oracle)."""
    synth = root / "synth"
    res = synthesize(SynthSettings(out_dir=synth, num_cameras=cameras, num_frames=frames, image_size=size,
                                   calib_views=0, write_keypoints=False, seed=1))
    offsets = {cam: SHIFTS[i % len(SHIFTS)] if i else 0 for i, cam in enumerate(res.rig.names)}
    margin = max(abs(k) for k in offsets.values())
    starts = {cam: margin - k for cam, k in offsets.items()}  # video frame j shows synthetic frame start + j
    videos = write_shifted_videos(synth, root / "videos", starts, dict.fromkeys(starts, frames - 2 * margin))
    return videos, synth / "rig.json", offsets, VideoOracle(synth, videos, starts)


def trimmed(video: Path, folder: Path, drop: int) -> Path:
    """``video`` re-encoded (mp4v) without its first ``drop`` frames."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out = folder / f"{video.stem}_from{drop}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    vw = None
    j = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if vw is None:
            vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, img.shape[1::-1])
        if j >= drop:
            vw.write(img)
        j += 1
    vw.release()
    return out


def bench_scan(videos: list[Path]) -> str:
    t0 = time.perf_counter()
    n = sum(scan_video(v, v.stem).frames for v in videos)
    dt = time.perf_counter() - t0
    w, h = cv2.VideoCapture(str(videos[0])).read()[1].shape[1::-1]
    return f"scan (decode, grab only) {n} frames of {w}x{h} in {dt:.2f} s: {n / dt:.0f} frames/s, one thread"


def bench_sync(label: str, out: Path, videos, rig, detector, truth=None, names=None, scale=None,
               samples: int = 30) -> None:
    t0 = time.perf_counter()
    rep = import_videos(ImportSettings(out=out, videos=videos, names=names, rig=rig, scale=scale, sync="hand",
                                       sync_samples=samples, force=True), detector=detector)
    dt = time.perf_counter() - t0
    sync = rep.sync
    verdict = "" if truth is None else (" (exact)" if rep.offsets == truth else f" (WRONG; truth {truth})")
    runner = ", ".join(f"{c}: runner-up {r['runner_up']:+d} at {r['runner_up_px']:.2f} px"
                       for c, r in sync["cameras"].items())
    print(f"sync hand, {label}: offsets {rep.offsets}{verdict}; median reprojection error "
          f"{sync['residual_px']:.2f} px over {sync['samples']} samples; {runner}; detections "
          f"{sum(sync['detections'].values())}, sync {sync['seconds']:.1f} s, import total {dt:.1f} s")
    for w in rep.warnings:
        print(f"  warning: {w}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--image-size", default="640x480")
    p.add_argument("--real", type=Path, default=None, help="the real_2view folder (media/, camera_parameters/)")
    p.add_argument("--samples", type=int, default=30, help="--sync-samples")
    p.add_argument("--no-mediapipe", action="store_true")
    p.add_argument("--no-network", action="store_true", help="skip --sync-detector cpm (the shipped network)")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one, removed afterwards)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_import_"))
    try:
        mediapipe = None
        if not args.no_mediapipe:
            try:
                from handanno.annotate.detect_mediapipe import MediaPipeDetector

                mediapipe = MediaPipeDetector()
            except Exception as exc:  # noqa: BLE001 - not installed: say so and go on
                print(f"MediaPipe: not used ({exc})")
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; OpenCV {cv2.__version__}")
        t0 = time.perf_counter()
        videos, rig, truth, oracle = make_videos(root, args.cameras, args.frames, parse_image_size(args.image_size))
        print(f"synthetic capture: {args.cameras} cameras x {args.frames} frames, {args.image_size}, true offsets "
              f"{truth} ({time.perf_counter() - t0:.1f} s to make)")
        print(bench_scan(videos))
        rep = import_videos(ImportSettings(out=root / "plain", videos=videos, rig=rig, offsets=truth))
        print(f"import (offsets given): {len(rep.frames)} frames x {len(rep.cameras)} cameras in "
              f"{rep.seconds['total']:.2f} s (scan {rep.seconds['scan']:.2f} s, write {rep.seconds['write']:.2f} s: "
              f"{rep.decode_write_fps:.0f} images/s decoded + JPEG-encoded + written, 2 writer threads)")
        bench_sync("oracle detector", root / "oracle", videos, rig, oracle, truth, samples=args.samples)
        if not args.no_network:
            bench_sync("shipped network (--sync-detector cpm)", root / "network", videos, rig,
                       NetworkSyncDetector(None), truth, samples=args.samples)  # fmt: skip
        if mediapipe is not None:
            bench_sync("MediaPipe", root / "mediapipe", videos, rig, mediapipe, truth, samples=args.samples)
        if args.real is not None:
            real = [args.real / "media" / "cam0_test.mp4", args.real / "media" / "cam1_test.mp4"]
            print("real_2view: " + bench_scan(real))
            if mediapipe is not None:
                rig_dat = args.real / "camera_parameters"
                bench_sync("MediaPipe, real_2view", root / "real", real, rig_dat, mediapipe,
                           {"cam0": 0, "cam1": 0}, names=("cam0", "cam1"), scale=0.043, samples=args.samples)
                for shift in (-7, 12):  # re-encoded copies: cam1 without its first 7 frames / cam0 without its first 12
                    cut = [trimmed(real[0], root / "cut", max(shift, 0)),
                           trimmed(real[1], root / "cut", max(-shift, 0))]
                    bench_sync(f"MediaPipe, real_2view re-encoded with cam1 shifted {shift:+d}", root / f"real{shift}",
                               cut, rig_dat, mediapipe, {"cam0": 0, "cam1": shift}, names=("cam0", "cam1"),
                               scale=0.043, samples=args.samples)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
