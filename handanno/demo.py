"""``handanno demo``: the whole job end to end on the embedded default, with real numbers.

1. ``synth``: a synthetic calibrated capture of handanno's open hand model (images,
   2D keypoints with noise and outliers, ChArUco calibration views, ground truth).
2. ``calibrate``: the rig from the board views alone, compared with the true rig.
3. ``fit``: with the *calibrated* rig: triangulate, segment, fit, export FreiHAND labels,
   overlays; compared with the ground truth and with plain robust triangulation.

Everything lands in ``OUT/``; ``OUT/summary.json`` holds the numbers printed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.session_io import open_session, read_fit, read_session_keypoints
from handanno.calibration.board import parse_board_spec
from handanno.calibration.calib_io import calibrate_directory
from handanno.calibration.calibrate import CalibrateSettings
from handanno.calibration.camera import CameraRig
from handanno.calibration.rig_compare import compare_rigs
from handanno.calibration.rig_io import read_rig, write_rig
from handanno.calibration.triangulate import triangulate_robust
from handanno.data import metrics
from handanno.data.files_io import write_json
from handanno.errors import HandannoError
from handanno.synth.capture import SynthSettings, synthesize

log = logging.getLogger(__name__)

DEMO_MARKER = ".handanno_demo"  # the demo replaces a non-empty --out only when it holds this


@dataclass(frozen=True)
class DemoSettings:
    """The demo's size and noise."""

    out_dir: Path
    num_cameras: int = 8
    num_frames: int = 10
    image_size: tuple[int, int] = (640, 480)
    seed: int = 0
    keypoint_noise_px: float = 2.0
    outlier_rate: float = 0.05
    calib_views: int = 60  # a one-minute pass of the board through the dome
    device: str = "auto"
    silhouette: bool = True  # GrabCut masks and the silhouette stage, as `handanno fit` runs them
    progress: bool = True


def run_demo(settings: DemoSettings) -> dict:
    """Run synth → calibrate → fit → export and return the summary (also written to ``summary.json``)."""
    out = Path(settings.out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise HandannoError(f"{out} exists, is not empty and is not a folder `handanno demo` made; choose another "
                                "--out (the demo replaces only its own folder)")  # fmt: skip
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by handanno demo; it replaces this folder on its next run\n")
    session_dir = out / "session"
    t0 = time.perf_counter()
    synth_settings = SynthSettings(
        out_dir=session_dir, num_cameras=settings.num_cameras, num_frames=settings.num_frames,
        image_size=settings.image_size, seed=settings.seed, keypoint_noise_px=settings.keypoint_noise_px,
        outlier_rate=settings.outlier_rate, calib_views=settings.calib_views, progress=settings.progress,
    )
    synth = synthesize(synth_settings)
    t_synth = time.perf_counter() - t0

    t0 = time.perf_counter()
    board = parse_board_spec(synth_settings.board)
    calib = calibrate_directory(session_dir / "calib", CalibrateSettings(board=board, refine_intrinsics=True),
                                out / "rig_calibrated.json", report_dir=out / "calibration_report")
    t_calib = time.perf_counter() - t0
    true_rig = read_rig(session_dir / "rig.json")
    rig_err = compare_rigs(calib.rig, true_rig)
    # The fit uses the calibrated rig, as a user's would; the truth stays beside it.
    # Calibration's world is cam0; the ground truth's is synth's. Anchor the calibrated rig on
    # cam0's true pose (what a user does to put a rig in a chosen frame) so fits and truth
    # share one world: R_c = R_c,cal R_0, t_c = R_c,cal t_0 + t_c,cal.
    cam0 = true_rig[calib.rig.names[0]]
    anchored = CameraRig.from_cameras(c.with_pose(c.R @ cam0.R, c.R @ cam0.t + c.t) for c in calib.rig)
    shutil.copy(session_dir / "rig.json", session_dir / "rig_true.json")
    write_rig(anchored, session_dir / "rig.json")

    t0 = time.perf_counter()
    report = run_pipeline(PipelineSettings(session=session_dir, device=settings.device, overlays=True,
                                           silhouette=settings.silhouette, progress=settings.progress))
    t_fit = time.perf_counter() - t0
    baseline = _triangulation_baseline(session_dir)

    summary = {
        "cameras": settings.num_cameras, "frames": settings.num_frames,
        "image_size": list(settings.image_size),
        "keypoint_noise_px": settings.keypoint_noise_px, "outlier_rate": settings.outlier_rate,
        "calibration": {"rms_px": calib.rms_px, "board_poses": len(calib.stems), **rig_err.summary(),
                        "warnings": list(calib.warnings)},
        "fit": report.accuracy,
        "robust_triangulation_mpjpe_mm": baseline,
        "frames_accepted": report.frames_accepted, "labels_written": report.labels_written,
        "seconds": {"synth": round(t_synth, 1), "calibrate": round(t_calib, 1), "fit": round(t_fit, 1),
                    **{f"fit.{k}": v for k, v in report.timings_s.items()}},
        "outputs": {"preview": str(session_dir / "preview.png"), "overlays": str(session_dir / "overlays"),
                    "labels": str(session_dir / "labels"), "report": str(report.report_path),
                    "calibration_report": str(out / "calibration_report")},
        "synth_files": synth.num_files,
    }
    write_json(out / "summary.json", summary, indent=1)
    return summary


def _triangulation_baseline(session_dir: Path) -> float | None:
    s = open_session(session_dir)
    gt_paths = [s.fit_path(f, "ground_truth") for f in s.frames]
    if not all(p.is_file() for p in gt_paths):
        return None
    kp = read_session_keypoints(s)
    B, C, J, _ = kp.shape
    conf = np.where(kp[..., 2] >= 0.2, kp[..., 2], 0.0)
    res = triangulate_robust(kp[..., :2].transpose(1, 0, 2, 3).reshape(C, B * J, 2),
                             conf.transpose(1, 0, 2).reshape(C, B * J), s.rig, max_reproj_px=15.0)
    pts = res.points.reshape(B, J, 3)
    gt = np.stack([read_fit(p)["joints"] for p in gt_paths])
    ok = np.all(np.isfinite(pts), axis=2)
    return float(metrics.mpjpe(np.nan_to_num(pts), gt, mask=ok))


def format_summary(summary: dict) -> str:
    """The lines the CLI prints."""
    c = summary["calibration"]
    f = summary["fit"] or {}
    s = summary["seconds"]
    lines = [
        f"handanno demo: {summary['cameras']} cameras x {summary['frames']} frames, "
        f"{summary['image_size'][0]}x{summary['image_size'][1]}, keypoint noise {summary['keypoint_noise_px']} px, "
        f"{summary['outlier_rate']:.0%} outliers (open hand model)",
        f"calibrate: RMS {c['rms_px']:.3f} px over {c['board_poses']} board poses; worst camera vs truth: focal "
        f"{c['max_focal_pct']:.3f} %, principal point {c['max_principal_px']:.2f} px, rotation "
        f"{c['max_rotation_deg']:.3f} deg, centre {c['max_centre_mm']:.2f} mm",
        f"fit (calibrated rig) vs ground truth: MPJPE {f.get('mpjpe_mm', float('nan')):.2f} mm, "
        f"PA-MPJPE {f.get('pa_mpjpe_mm', float('nan')):.2f} mm, MPVPE {f.get('mpvpe_mm', float('nan')):.2f} mm, "
        f"PA-MPVPE {f.get('pa_mpvpe_mm', float('nan')):.2f} mm",
        f"robust triangulation of the same keypoints: MPJPE {summary['robust_triangulation_mpjpe_mm']:.2f} mm",
        f"accepted frames: {summary['frames_accepted']}/{summary['frames']}; FreiHAND samples written: "
        f"{summary['labels_written']}",
        f"time: synth {s['synth']} s, calibrate {s['calibrate']} s, fit {s['fit']} s",
        f"look at: {summary['outputs']['preview']}, {summary['outputs']['overlays']}/, "
        f"{summary['outputs']['calibration_report']}/",
    ]
    return "\n".join(lines)
