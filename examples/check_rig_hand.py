"""Check a session's rig against a human hand: MediaPipe in every view, triangulate, measure bones.

    python examples/check_rig_hand.py SESSION [--frames 20]

A rig in the wrong unit (or with a wrong scale) gives a hand of the wrong size; wrong
extrinsics give large reprojection errors. Prints, over the frames where every view found
the hand, the median multi-view reprojection error and the median lengths of the palm
(wrist to middle knuckle, 0-9), the knuckle span (index to pinky knuckle, 5-17) and each
finger (knuckle to tip). An adult's palm is about 8-10 cm, the knuckle span 6-8 cm, the
middle finger 8-9 cm.

Needs MediaPipe (``pip install 'handanno[mediapipe]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from handanno.annotate.detect_mediapipe import MediaPipeDetector
from handanno.annotate.session_io import open_session
from handanno.annotate.triangulate import triangulate_frames
from handanno.capture.sync import sample_errors
from handanno.data.files_io import read_image

FINGERS = {"thumb": (1, 4), "index": (5, 8), "middle": (9, 12), "ring": (13, 16), "pinky": (17, 20)}


def main() -> None:
    """Parse the arguments, detect, triangulate, print the measures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path)
    ap.add_argument("--frames", type=int, default=20, help="frames sampled evenly over the session")
    ap.add_argument("--hand", default="right", choices=["right", "left"])
    args = ap.parse_args()

    session = open_session(args.session)
    rig = session.rig
    picks = np.unique(np.linspace(0, len(session.frames) - 1, args.frames).round().astype(int))
    frames = [session.frames[i] for i in picks]
    kp = np.zeros((len(frames), len(rig), 21, 3))
    with MediaPipeDetector(hand=args.hand) as detect:
        for f, frame in enumerate(frames):
            for c, cam in enumerate(rig.names):
                path = session.image_path(cam, frame)
                found = detect(read_image(path)) if path is not None else None
                if found is not None:
                    kp[f, c] = found
    every_view = (kp[..., 2].max(axis=2) > 0).all(axis=1)
    print(f"{args.session}: hand found in every view in {every_view.sum()} of {len(frames)} frames")
    if not every_view.any():
        return
    kp = kp[every_view]
    errors = sample_errors(rig, kp)
    X = triangulate_frames(rig, kp, max_reproj_px=1e12).joints3d  # (B, 21, 3), metres

    def length_cm(a: int, b: int) -> float:
        return float(np.nanmedian(np.linalg.norm(X[:, a] - X[:, b], axis=-1)) * 100)

    def chain_cm(a: int, b: int) -> float:
        seg = np.linalg.norm(np.diff(X[:, a:b + 1], axis=1), axis=-1)  # (B, b - a) bones
        return float(np.nanmedian(seg.sum(axis=1)) * 100)

    print(f"  median multi-view reprojection error {np.nanmedian(errors):.2f} px")
    print(f"  palm (wrist to middle knuckle, 0-9) {length_cm(0, 9):.1f} cm; knuckle span (5-17) "
          f"{length_cm(5, 17):.1f} cm")
    print("  fingers, knuckle to tip along the bones: "
          + ", ".join(f"{name} {chain_cm(a, b):.1f} cm" for name, (a, b) in FINGERS.items()))
    depth = [float(np.nanmedian(np.linalg.norm(cam.to_camera(X[:, 9]), axis=-1))) for cam in rig]
    print("  hand distance from the cameras: " + ", ".join(f"{c} {d:.2f} m" for c, d in zip(rig.names, depth,
                                                                                            strict=True)))


if __name__ == "__main__":
    main()
