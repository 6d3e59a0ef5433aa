"""``handanno review`` at scale: page-load and frame-switch times measured in a real browser, and the screenshots.

Usage: ``.venv/bin/python benchmarks/bench_review.py [--frames 1000] [--cameras 8] [--distinct 40]
[--image-size 640x480] [--session DIR] [--keep DIR] [--switches 60] [--jumps 30]
[--screenshots docs/img]``

1. The session (unless ``--session`` names one): ``handanno synth`` renders ``--distinct``
   frames (default 40) of an 8-camera capture at 640x480; their images and keypoint files
   are hard-linked under new stems until the session has ``--frames`` frames (default 1000,
   8,000 views: every view is its own file to the server). Its fits are synthesised from the
   ground truth instead of fitting 1,000 frames: the true pose and translation plus noise
   (0.005 rad / 0.1 mm; one frame in ten 0.08 rad / 1.6 mm, a bad fit), with the per-view
   reprojection error measured against the keypoint files and the mask IoU against the
   exact masks (``masks_gt``), accepted when the median error is under 8 px and every IoU
   over 0.6 (:func:`synthesised_fits`).
2. The page is served (``create_app`` + a threaded server, as ``handanno review``) and
   Chromium (Playwright) measures: page load (navigation to the first frame with all its
   views drawn), cold (the server's caches empty) and warm (a reload); ``--switches``
   frame switches with the ``j`` key in list order after ``--dwell-ms`` (500) on each frame
   (the page prefetches the next frame meanwhile, as a reviewer going through the list
   gets); ``--jumps`` jumps to random frames through the URL (nothing prefetched, every crop
   made on demand). A switch is timed in the page from
   the key press (or the hash change) to the last view drawn (``window.__review.lastSwitchMs``).
3. With ``--screenshots DIR``: a small session fitted for real (8 cameras, 8 frames,
   640x480, keypoints with 3 px noise and 10 % outliers, ``handanno fit`` with its default
   schedule), one frame rejected and one view
   ignored by a reviewer, then ``review_list.png`` (the page), ``review_frame.png`` (one
   frame's views) and ``review_3d.png`` (the 3D view) in DIR.

Prints one line per measurement (median and 95th percentile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from handanno.annotate.segment import mesh_mask
from handanno.annotate.session_io import fit_record, open_session, read_keypoints_file, read_mask
from handanno.calibration.rig_io import parse_image_size
from handanno.data.review_io import update_review
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.review.app import create_app, make_review_server
from handanno.synth.capture import SynthSettings, synthesize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1500, "height": 950}


def _ready(frame: str | None = None) -> str:
    return "body[data-ready='1']" if frame is None else f"body[data-frame='{frame}'][data-ready='1']"


def synthesised_fits(root: Path, distinct: int, seed: int = 0) -> None:
    """Write ``fits/<frame>.json`` for every frame from its ground truth plus noise (see the module docstring)."""
    session = open_session(root)
    layer = ManoLayer(load_hand_model("right"))
    rng = np.random.default_rng(seed)
    faces = layer.faces.numpy()
    truth = {}
    for f in session.frames:
        base = f"{int(f) % distinct:06d}"
        truth[f] = json.loads((root / "ground_truth" / f"{base}.json").read_text()) if (
            root / "ground_truth" / f"{base}.json").is_file() else truth[base]  # fmt: skip
    masks = {}
    frames = list(session.frames)
    for start in range(0, len(frames), 100):
        chunk = frames[start : start + 100]
        bad = rng.random(len(chunk)) < 0.1
        s = np.where(bad, 0.08, 0.005)[:, None]
        pose = np.stack([truth[f]["pose"] for f in chunk]) + rng.normal(size=(len(chunk), 48)) * s
        trans = np.stack([truth[f]["trans"] for f in chunk]) + rng.normal(size=(len(chunk), 3)) * s * 0.02
        betas = np.stack([truth[f]["betas"] for f in chunk])
        with torch.no_grad():
            out = layer(*(torch.as_tensor(a, dtype=torch.float32) for a in (pose, betas, trans)))
        verts, joints = out.vertices.double().numpy(), out.joints.double().numpy()
        for b, f in enumerate(chunk):
            base = f"{int(f) % distinct:06d}"
            reproj, iou = {}, {}
            for cam in session.rig:
                kp = read_keypoints_file(session.keypoints_path(cam.name, f))
                ok = kp[:, 2] > 0.2
                uv = cam.project(joints[b])
                reproj[cam.name] = round(float(np.median(np.linalg.norm(uv[ok] - kp[ok, :2], axis=1))), 3) if ok.any() \
                    else None  # fmt: skip
                key = (cam.name, base)
                if key not in masks:
                    masks[key] = read_mask(root / "masks_gt" / cam.name / f"{base}.png")
                sil = mesh_mask(verts[b], faces, cam)
                union = (sil | masks[key]).sum()
                iou[cam.name] = round(float((sil & masks[key]).sum() / union), 4) if union else None
            errs = [v for v in reproj.values() if v is not None]
            ious = [v for v in iou.values() if v is not None]
            reasons = []
            if errs and np.median(errs) > 8:
                reasons.append(f"median reprojection error {np.median(errs):.1f} px > 8.0 px")
            if ious and min(ious) < 0.6:
                reasons.append(f"a view with mask IoU {min(ious):.2f} < 0.6")
            q = {"reproj_err_px": reproj, "mask_iou": iou, "accepted": not reasons, "reasons": reasons}
            rec = fit_record("right", layer.name, pose[b], betas[b], trans[b], joints[b], q)
            (root / "fits").mkdir(exist_ok=True)
            (root / "fits" / f"{f}.json").write_text(json.dumps(rec))


def make_big_session(root: Path, frames: int, cameras: int, distinct: int, size: tuple[int, int]) -> Path:
    """Render ``distinct`` frames, hard-link them up to ``frames`` stems, synthesise the fits."""
    t = time.perf_counter()
    synthesize(SynthSettings(out_dir=root, num_cameras=cameras, num_frames=distinct, image_size=size,
                             write_calib=False, keypoint_noise_px=1.5, seed=3))  # fmt: skip
    t_synth = time.perf_counter() - t
    cams = sorted(p.name for p in (root / "images").iterdir())
    for k in range(distinct, frames):
        src, dst = f"{k % distinct:06d}", f"{k:06d}"
        for cam in cams:
            for folder, ext in (("images", "jpg"), ("keypoints2d", "json")):
                os.link(root / folder / cam / f"{src}.{ext}", root / folder / cam / f"{dst}.{ext}")
    t = time.perf_counter()
    synthesised_fits(root, distinct)
    print(f"session: {frames} frames x {cameras} cameras at {size[0]}x{size[1]} ({distinct} rendered in "
          f"{t_synth:.0f} s, fits synthesised in {time.perf_counter() - t:.0f} s) in {root}", flush=True)
    return root


class Served:
    """The review page of a session on a free local port, served from a thread."""

    def __init__(self, root: Path) -> None:
        t = time.perf_counter()
        self.server = make_review_server(create_app(root), "127.0.0.1", 0)
        self.start_s = time.perf_counter() - t
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_switch(page, before: int) -> dict:
    """Poll the page's probe until a switch after the ``before``-th is drawn (its CSP forbids wait_for_function)."""
    while True:
        probe = page.evaluate("window.__review")
        if probe["switches"] > before and probe["ready"]:
            return probe
        page.wait_for_timeout(5)


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"median {statistics.median(xs):.0f} ms, p95 {p95:.0f} ms, max {xs[-1]:.0f} ms (n={len(xs)})"


@contextlib.contextmanager
def chromium_page(timeout_ms: int):
    """``(context, page)`` of a headless Chromium with a fresh profile (Debian's /usr/bin/chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="handanno-chromium-") as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport=VIEWPORT)  # fmt: skip
        page = ctx.new_page()
        page.set_default_timeout(timeout_ms)
        yield ctx, page


def measure(root: Path, switches: int, jumps: int, dwell_ms: int = 500, seed: int = 0) -> None:
    """Page load and frame switches in Chromium (module docstring, step 2)."""

    served = Served(root)
    n_frames = len(open_session(root).frames)
    print(f"server: app made in {served.start_s * 1000:.0f} ms for {n_frames} frames", flush=True)
    try:
        with chromium_page(120_000) as (ctx, page):
            loads = []
            for label in ("cold", "warm", "warm"):
                t = time.perf_counter()
                if label == "cold":
                    page.goto(served.url)
                else:
                    page.reload()
                page.wait_for_selector(_ready(), state="attached")
                loads.append((label, (time.perf_counter() - t) * 1000, page.evaluate("window.__review.loadMs")))
            for label, wall, in_page in loads:
                print(f"page load ({label} server caches): {wall:.0f} ms to the first frame with all views drawn "
                      f"({in_page:.0f} ms from the page's script)", flush=True)  # fmt: skip
            n_rows = page.locator("#frame-list li").count()
            assert n_rows == n_frames, (n_rows, n_frames)
            times = []
            for _ in range(switches):
                page.wait_for_timeout(dwell_ms)  # a reviewer looks at the frame; the page prefetches the next
                before = page.evaluate("window.__review.switches")
                page.keyboard.press("j")
                times.append(_wait_switch(page, before)["lastSwitchMs"])
            print(f"frame switch, next frame in the list (j key, {dwell_ms} ms on each frame): {_stats(times)}",
                  flush=True)
            rng = np.random.default_rng(seed)
            times = []
            for k in rng.choice(n_frames, size=jumps, replace=False):
                page.wait_for_timeout(dwell_ms)
                frame = f"{int(k):06d}"
                page.evaluate("f => { location.hash = '#' + f; }", frame)
                page.wait_for_selector(_ready(frame), state="attached")
                times.append(page.evaluate("window.__review.lastSwitchMs"))
            print(f"frame switch, jump to a random frame (nothing prefetched or cached): {_stats(times)}", flush=True)
            ctx.close()
    finally:
        served.close()


def screenshots(out_dir: Path, work: Path) -> None:
    """A small session fitted for real, a few decisions, and the three pictures (module docstring, step 3)."""

    from handanno.annotate.pipeline import PipelineSettings, run_pipeline

    root = work / "shots"
    synthesize(SynthSettings(out_dir=root, num_cameras=8, num_frames=8, image_size=(640, 480), write_calib=False,
                             keypoint_noise_px=3.0, outlier_rate=0.1, seed=5))  # fmt: skip
    t = time.perf_counter()
    run_pipeline(PipelineSettings(session=root, device="cpu", export=False, progress=False))
    print(f"screenshots: 8 frames fitted in {time.perf_counter() - t:.0f} s", flush=True)
    update_review(root, "000002", decision="reject", reason="ring finger tip off in cam5")
    update_review(root, "000004", decision="accept")
    update_review(root, "000005", ignore=("cam6", True))
    out_dir.mkdir(parents=True, exist_ok=True)
    served = Served(root)
    try:
        with chromium_page(60_000) as (ctx, page):
            page.goto(served.url + "#000005")
            page.wait_for_selector(_ready("000005"), state="attached")
            page.select_option("#sort", "reproj")
            page.wait_for_timeout(300)
            page.screenshot(path=str(out_dir / "review_list.png"))
            page.set_viewport_size({"width": VIEWPORT["width"], "height": 1200})  # every view in the picture
            page.wait_for_timeout(300)
            head, views = page.locator("#frame-head").bounding_box(), page.locator("#views").bounding_box()
            bottom = min(views["y"] + views["height"] + 4, 1200)
            page.screenshot(path=str(out_dir / "review_frame.png"),
                            clip={"x": head["x"], "y": head["y"], "width": head["width"], "height": bottom - head["y"]})
            page.locator("#three").scroll_into_view_if_needed()
            box = page.locator("#view3d").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, 300)  # zoom out a little: the hand and the nearest cameras
            page.wait_for_timeout(300)
            page.locator("#three").screenshot(path=str(out_dir / "review_3d.png"))
            ctx.close()
    finally:
        served.close()
    for path in sorted(out_dir.glob("review_*.png")):
        _small_png(path)
    print(f"screenshots: {', '.join(sorted(p.name for p in out_dir.glob('review_*.png')))} in {out_dir}", flush=True)


def _small_png(path: Path) -> None:
    """Rewrite a screenshot with a 256-colour palette (dithered): a quarter of the bytes, for the repository."""
    from PIL import Image

    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG)
    q.save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--distinct", type=int, default=40, help="Frames rendered; the others are hard links to them.")
    ap.add_argument("--image-size", default="640x480")
    ap.add_argument("--session", type=Path, default=None, help="Measure this session instead of making one.")
    ap.add_argument("--keep", type=Path, default=None, help="Make the session here and keep it.")
    ap.add_argument("--switches", type=int, default=60)
    ap.add_argument("--jumps", type=int, default=30)
    ap.add_argument("--dwell-ms", type=int, default=500, help="Time on each frame before the next switch.")
    ap.add_argument("--screenshots", type=Path, default=None, help="Also write the three screenshots here.")
    ap.add_argument("--no-measure", action="store_true", help="Only the screenshots.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_review_"))
    try:
        if not args.no_measure:
            root = args.session
            if root is None:
                root = args.keep or work / "big"
                make_big_session(root, args.frames, args.cameras, args.distinct, parse_image_size(args.image_size))
            measure(root, args.switches, args.jumps, args.dwell_ms)
        if args.screenshots is not None:
            screenshots(args.screenshots, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
