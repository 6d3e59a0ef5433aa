"""Forward + backward time of the fast and the dense soft silhouette renderers.

Run: ``.venv/bin/python benchmarks/bench_render.py [--device cpu|cuda] [--repeats 7]``.

Realistic inputs: the hand model (``handanno/assets/open_hand_right.pkl`` posed by
``ManoLayer``, when both exist) or a stand-in of a palm and five finger capsules with about
the same vertex and face count and size (772 vertices, 1520 faces, 18 cm long); 8 cameras
0.4-0.8 m away all around it with mild distortion (1280x720, f = 900 px); each view renders
the square crop box around the hand's projection, 1.3 times its extent, at the fitter's
sigma (``FitSettings.sil_sigma``, squared render pixels; ``--sigma`` to change it). Timings
are the median of ``--repeats`` runs after a warm-up, each run
``loss = (sil * target).sum(); loss.backward()`` on the vertices, with as many threads as
the machine has cores (on the CPU also with one thread: on a machine shared with other jobs
a second thread can cost more than it gains); the dense renderer gets fewer repeats.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handanno.annotate.fit_mano import FitSettings  # noqa: E402
from handanno.annotate.render import SilhouetteSettings, project_to_render, render_silhouettes  # noqa: E402
from handanno.annotate.render_reference import render_silhouettes_dense  # noqa: E402
from handanno.device import cpu_name  # noqa: E402
from handanno.errors import HandannoError  # noqa: E402

log = logging.getLogger("bench_render")


def stand_in_hand() -> tuple[np.ndarray, np.ndarray, str]:
    """``(V, 3)`` metres, ``(F, 3)``: the hand model when present, else palm + 5 capsules."""
    try:
        from handanno.handmodel.mano import ManoLayer
        from handanno.handmodel.model_io import load_hand_model

        model = load_hand_model("right")
        layer = ManoLayer(model)
        with torch.no_grad():
            out = layer(torch.zeros(1, 48), torch.zeros(1, 10), torch.zeros(1, 3))
        verts = out.vertices[0].double().numpy()
        return verts - verts.mean(0), np.asarray(layer.faces if hasattr(layer, "faces") else model["f"]), "hand model"
    except (HandannoError, ImportError, OSError) as exc:
        log.info("hand model not available (%s); using the stand-in", exc)
    import trimesh

    parts = [trimesh.creation.icosphere(2)]
    parts[0].apply_scale([0.045, 0.05, 0.015])
    for i, (x, length, tilt) in enumerate([(-0.03, 0.07, 0.5), (-0.015, 0.08, 0.0), (0.0, 0.085, 0.0),
                                           (0.015, 0.08, 0.0), (0.03, 0.065, 0.0)]):
        cap = trimesh.creation.capsule(height=length, radius=0.009 if i else 0.011, count=[10, 12])
        cap.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2 - tilt, [1, 0, 0]))
        cap.apply_translation([x * (2.5 if i == 0 else 1), 0.05 + length / 2 - (0.05 if i == 0 else 0), 0])
        parts.append(cap)
    mesh = trimesh.util.concatenate(parts)
    v = np.asarray(mesh.vertices)
    return v - v.mean(0), np.asarray(mesh.faces), "stand-in (palm + 5 capsules)"


def look_at(centre: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``R, t`` for a camera at ``eye`` looking at ``centre`` (y down)."""
    z = centre - eye
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def rig(C: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """C cameras 0.4-0.8 m from the origin, spread around it, mild distortion."""
    Ks, dists, Rs, ts = [], [], [], []
    for c in range(C):
        az = 2 * np.pi * c / C + rng.uniform(-0.2, 0.2)
        el = rng.uniform(-0.6, 0.8)
        r = rng.uniform(0.4, 0.8)
        eye = r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        R, t = look_at(rng.normal(0, 0.01, 3), eye)
        Ks.append([[900.0, 0, 640 + rng.uniform(-20, 20)], [0, 900.0, 360 + rng.uniform(-20, 20)], [0, 0, 1]])
        dists.append([-0.12, 0.05, 0.001, -0.001, 0.0])
        Rs.append(R)
        ts.append(t)
    return {k: torch.tensor(np.array(v), dtype=torch.float32) for k, v in
            (("K", Ks), ("dist", dists), ("R", Rs), ("t", ts))}


def hand_boxes(verts: torch.Tensor, cams: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
    """``(N, C, 4)`` square crop boxes around each projected hand, ``scale`` x its extent."""
    ident = SilhouetteSettings((1, 1))
    uv, _ = project_to_render(verts, cams["K"], cams["dist"], cams["R"], cams["t"], ident)
    lo, hi = uv.amin(2), uv.amax(2)  # (N, C, 2)
    side = (hi - lo).amax(-1, keepdim=True) * scale
    centre = (lo + hi) / 2
    return torch.cat([centre - side / 2, side, side], dim=-1)


def time_fwd_bwd(fn, verts: torch.Tensor, target: torch.Tensor, repeats: int, device: torch.device) -> float:
    """Median seconds of one forward + backward (after one warm-up run)."""
    times = []
    for i in range(repeats + 1):
        v = verts.detach().clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sil = fn(v)
        (sil * target).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=9, help="timed runs of the fast renderer (median)")
    p.add_argument("--dense-repeats", type=int, default=3, help="timed runs of the dense renderer (median)")
    p.add_argument("--sigma", type=float, default=FitSettings().sil_sigma,
                   help="SoftRas sigma, squared render pixels (default: the fitter's)")
    p.add_argument("--all-faces", action="store_true",
                   help="render back faces too (the fitter culls them: FitSettings.sil_cull_back_faces)")
    p.add_argument("--box-scale", type=float, default=1.3, help="crop side / hand extent (the fitter's)")
    p.add_argument("--skip-dense", action="store_true", help="time only the fast renderer")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    verts_np, faces_np, source = stand_in_hand()
    faces = torch.as_tensor(faces_np, dtype=torch.long, device=device)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    log.info("machine: %s, %d cores, torch %s, device %s %s, load average %s", cpu_name(), os.cpu_count(),
             torch.__version__, device, gpu, " ".join(f"{x:.1f}" for x in os.getloadavg()))
    log.info("mesh: %s, %d vertices, %d faces; sigma %.3g px^2, %s, crop %.2f x the hand, float32, forward + backward",
             source, len(verts_np), len(faces_np), args.sigma,
             "all faces" if args.all_faces or not FitSettings().sil_cull_back_faces else "back faces culled",
             args.box_scale)
    extra = device.type == "cpu" and threads > 1
    log.info("%-24s %14s %14s %12s %8s", "meshes x views @ px", f"fast ms ({threads} thr)",
             "fast ms (1 thr)" if extra else "", f"dense ms ({threads} thr)", "ratio")
    for N, C, size in [(1, 8, 64), (1, 8, 128), (64, 8, 128)]:
        name = f"{N} x {C} @ {size}x{size}"
        if N > 1 and device.type != "cuda":
            log.info("%-24s skipped on the CPU (a GPU case: run with --device cuda)", name)
            continue
        cams = {k: v.to(device) for k, v in rig(C, rng).items()}
        jitter = torch.as_tensor(rng.normal(0, 0.01, (N, 1, 3)), dtype=torch.float32)
        verts = (torch.as_tensor(verts_np, dtype=torch.float32)[None] + jitter).to(device)  # (N, V, 3)
        boxes = hand_boxes(verts, cams, args.box_scale)
        cull = FitSettings().sil_cull_back_faces and not args.all_faces
        settings = SilhouetteSettings((size, size), sigma=args.sigma, cull_back_faces=cull)
        target = torch.rand(N, C, size, size, device=device)

        def fast(v, s=settings, b=boxes, c=cams):
            return render_silhouettes(v, faces, c["K"], c["dist"], c["R"], c["t"], s, crop_box=b)

        def dense(v, s=settings, b=boxes, c=cams):
            return render_silhouettes_dense(v, faces, c["K"], c["dist"], c["R"], c["t"], s, crop_box=b)

        t_fast = time_fwd_bwd(fast, verts, target, args.repeats, device)
        t_one = ""
        if extra:
            torch.set_num_threads(1)
            t_one = f"{time_fwd_bwd(fast, verts, target, args.repeats, device) * 1e3:.1f}"
            torch.set_num_threads(threads)
        if args.skip_dense:
            log.info("%-24s %14.1f %14s %12s %8s", name, t_fast * 1e3, t_one, "-", "-")
            continue
        t_dense = time_fwd_bwd(dense, verts, target, args.dense_repeats, device)
        log.info("%-24s %14.1f %14s %12.0f %7.0fx", name, t_fast * 1e3, t_one, t_dense * 1e3, t_dense / t_fast)


if __name__ == "__main__":
    main()
