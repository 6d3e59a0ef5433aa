"""The ``handanno`` command line: click only; each command parses options and calls one library function."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from handanno import __version__
from handanno.errors import HandannoError, disk_error_message

log = logging.getLogger("handanno")


class _Group(click.Group):
    """Turns HandannoError into a one-line message and exit code 2, without a traceback.

    A full, read-only or forbidden disk (an OSError of :data:`handanno.errors.DISK_ERRNOS`)
    gets the same treatment, its message naming the path and what to do.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HandannoError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            message = disk_error_message(exc)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="handanno")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """handanno: annotate hands automatically from calibrated multi-camera captures."""
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.group("rig")
def rig_group() -> None:
    """Camera rigs: convert between rig.json, Anipose, EasyMocap and the seed format."""


@rig_group.command("convert")
@click.argument("src", type=click.Path(exists=True, path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--from", "src_fmt", type=click.Choice(["rig", "anipose", "easymocap", "seed", "dat"]), default=None,
              help="Input format (default: from the path: .json rig.json, intrinsic.json seed, .toml Anipose, "
                   ".yml EasyMocap, .dat a folder of c<i>.dat + rot_trans_c<i>.dat, or what a folder holds).")
@click.option("--to", "dst_fmt", type=click.Choice(["rig", "anipose", "easymocap", "seed"]), default=None,
              help="Output format (default: from the path; needed when DST is a folder).")
@click.option("--image-size", default=None, metavar="WxH",
              help="Image size for inputs that lack it (EasyMocap without H_/W_, the seed format), e.g. 1280x720.")
@click.option("--in-units", type=click.Choice(["m", "cm", "mm"]), default=None,
              help="Unit of the input's translations (Anipose/seed record none; default: the file's, else m).")
@click.option("--out-units", type=click.Choice(["m", "cm", "mm"]), default="m", show_default=True,
              help="Unit of the output's translations (not for rig.json, always m).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiply every translation by this (after --in-units): for inputs in another unit, e.g. 0.043 "
                   "when one unit of the file is 4.3 cm.")
def rig_convert(src: str, dst: str, src_fmt: str | None, dst_fmt: str | None, image_size: str | None,
                in_units: str | None, out_units: str, scale: float | None) -> None:
    """Convert the camera rig SRC into DST; prints one line naming the cameras converted."""
    import os

    from handanno.calibration.rig_io import FORMATS, convert_rig, detect_format, parse_image_size

    if dst_fmt is None:
        try:
            dst_fmt = detect_format(dst, for_writing=True)
        except HandannoError:
            raise HandannoError(f"{dst}: cannot tell the output format from this path; name it with --to "
                                f"({', '.join(FORMATS)})") from None  # fmt: skip
    if src_fmt is None and os.path.isfile(src):
        try:
            src_fmt = detect_format(src)
        except HandannoError as exc:
            raise HandannoError(f"{exc}; or name its format with --from ({', '.join(FORMATS)})") from None
    size = parse_image_size(image_size) if image_size else None
    result = convert_rig(src, dst, src_fmt=src_fmt, dst_fmt=dst_fmt, image_size=size,
                         src_units=in_units, dst_units=out_units, scale=scale)
    click.echo(result.summary())


# --------------------------------------------------------------------------- import


@main.group("import")
def import_group() -> None:
    """Bring real captures into a session folder."""


@import_group.command("videos")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The session folder to write (images/<cam>/<frame>.jpg, rig.json, import.json).")
@click.option("--names", default=None, metavar="CAM0,CAM1,...",
              help="Camera names, one per video in order (default: the videos' file stems); the first camera is "
                   "the reference of the offsets.")
@click.option("--rig", type=click.Path(path_type=Path), default=None,
              help="The cameras' calibration, copied or converted into SESSION/rig.json: rig.json or any format "
                   "`handanno rig convert` reads (default: the rig.json already in SESSION).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiply the --rig translations by this (a rig not in metres, e.g. 0.043).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Keep every N-th frame of the common timeline.")
@click.option("--start", type=click.FloatRange(min=0), default=None, help="First second of the timeline to keep.")
@click.option("--end", type=click.FloatRange(min=0), default=None, help="Keep the frames before this second.")
@click.option("--offsets", default=None, metavar="CAM=FRAMES,...",
              help="Shift cameras: session frame t is frame t+FRAMES of CAM's video (default 0).")
@click.option("--sync", type=click.Choice(["frame", "hand"]), default="frame", show_default=True,
              help="frame: the videos are in step by frame index (after --offsets); hand: estimate each camera's "
                   "offset from hand detections (MediaPipe) and the rig.")
@click.option("--sync-search", default=30, show_default=True, type=click.IntRange(min=0),
              help="--sync hand tries offsets from -N to +N frames.")
@click.option("--sync-samples", default=30, show_default=True, type=click.IntRange(min=1),
              help="--sync hand samples this many frames of the first camera.")
@click.option("--hand", type=click.Choice(["right", "left"]), default="right", show_default=True,
              help="The hand --sync hand looks for.")
@click.option("--sync-detector", type=click.Choice(["mediapipe", "cpm"]), default="mediapipe", show_default=True,
              help="What finds the hand for --sync hand: MediaPipe, or the heatmap network (--sync-weights, default "
                   "the one shipped with handanno).")
@click.option("--sync-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Checkpoint for --sync-detector cpm.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Image-writing threads.")
@click.option("--force", is_flag=True,
              help="Import again although SESSION was imported from other videos or settings (the images the "
                   "earlier import wrote are replaced; nothing else is touched).")
def import_videos_cmd(videos: tuple[Path, ...], out: Path, names: str | None, rig: Path | None, scale: float | None,
                      every: int, start: float | None, end: float | None, offsets: str | None, sync: str,
                      sync_search: int, sync_samples: int, hand: str, sync_detector: str, sync_weights: Path | None,
                      workers: int, force: bool) -> None:
    """Import one video per camera (VIDEOS, in camera order) into a session folder.

    Writes SESSION/images/<cam>/<frame>.jpg with <frame> the index on the cameras' common
    timeline (000123), the rig as SESSION/rig.json, and SESSION/import.json; keeps the frames
    every camera has and reports what was dropped. Running it again does nothing; an
    interrupted import resumes.
    """
    from handanno.capture.timeline import parse_offsets
    from handanno.capture.videos import ImportSettings, import_videos

    settings = ImportSettings(
        out=out, videos=videos, names=tuple(n.strip() for n in names.split(",")) if names else None, rig=rig,
        scale=scale, every=every, start=start, end=end, offsets=parse_offsets(offsets), sync=sync,
        sync_search=sync_search, sync_samples=sync_samples, hand=hand, sync_detector=sync_detector,
        sync_weights=sync_weights, force=force, workers=workers, progress=True,
    )  # fmt: skip
    click.echo(import_videos(settings).summary())


# --------------------------------------------------------------------------- train / eval

_MODEL_KINDS = ["cpm", "unet", "mano", "lift"]


def parse_sets(items: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs to a dict; values parsed as JSON when they can be (numbers, true, null)."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HandannoError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


_threads_option = click.option(
    "--threads", default=None, type=click.IntRange(min=1),
    help="Torch threads on the CPU (default: torch's). 1 is fastest on a machine shared with other jobs.")


def _set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@main.command("train")
@click.argument("kind", type=click.Choice(_MODEL_KINDS))
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(path_type=str),
              help="FreiHAND-layout label folder (repeat to combine several).")
@click.option("--val", "val", multiple=True, type=click.Path(path_type=str),
              help="Validation label folder(s); default: hold out --val-fraction of --labels.")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Run folder: checkpoints, logs, plots.")
@click.option("--epochs", default=50, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--lr", default=None, type=float,
              help="Peak learning rate (AdamW, cosine decay); default 1e-3, or with --resume the resumed run's.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (step count, optimizer, early-stop state).")
@click.option("--overwrite", is_flag=True,
              help="Start a new run in OUT although it holds one (its checkpoints, logs and plots are removed); "
                   "without --resume or --overwrite an OUT holding a run is refused.")
@click.option("--workers", default=4, show_default=True, type=int, help="DataLoader worker processes.")
@click.option("--patience", default=10, show_default=True, type=int,
              help="Early stopping: epochs without a better validation metric (0 = off).")
@click.option("--val-fraction", default=0.1, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-steps", default=None, type=int, help="Stop after this many optimizer steps in total.")
@click.option("--no-amp", is_flag=True, help="Full precision on CUDA.")
@click.option("--no-augment", is_flag=True, help="Train on the plain centred crops.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50"]), default=None,
              help="mano: the ResNet (random init unless --backbone-weights).")
@click.option("--backbone-weights", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="mano: local .pth state dict for the ResNet (never downloaded).")
@click.option("--model-dir", type=click.Path(path_type=str), default=None,
              help="mano: MANO folder (MANO_RIGHT.pkl, MANO_LEFT.pkl); default $HANDANNO_MODEL_DIR or the open model.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config field, e.g. --set width=0.5 --set loss=mse (see handanno.models.nets).")
@_threads_option
def train_cmd(kind: str, labels: tuple[str, ...], val: tuple[str, ...], out: str, epochs: int, batch_size: int,
              lr: float | None, device: str, resume: bool, overwrite: bool, workers: int, patience: int,
              val_fraction: float, seed: int, max_steps: int | None, no_amp: bool, no_augment: bool, no_plots: bool,
              backbone: str | None, backbone_weights: str | None, model_dir: str | None, sets: tuple[str, ...],
              threads: int | None) -> None:
    """Train a KIND model (cpm, unet, mano, lift) on FreiHAND-layout labels; checkpoints and logs go to OUT."""
    _set_threads(threads)
    from handanno.data.augment import AugmentConfig
    from handanno.data.datasets import DataConfig
    from handanno.models.checkpoints import TrainConfig
    from handanno.models.train import main as train_main

    model_config = parse_sets(sets)
    if backbone:
        model_config["backbone"] = backbone
    if backbone_weights:
        model_config["backbone_weights"] = backbone_weights
    cfg = TrainConfig(
        model=kind, labels=labels, out=out, val=val, val_fraction=val_fraction, epochs=epochs, batch_size=batch_size,
        lr=lr, device=device, workers=workers, amp=not no_amp, patience=patience, resume=resume, overwrite=overwrite,
        seed=seed,
        max_steps=max_steps, plots=not no_plots, model_dir=model_dir, model_config=model_config,
        data=DataConfig(augment=AugmentConfig(enabled=not no_augment)),
    )  # fmt: skip
    result = train_main(cfg)
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4g}"
    click.echo(f"trained {kind}: {result.epochs_run} epochs, {result.steps} steps"
               f"{' (stopped early)' if result.stopped_early else ''}; best validation {result.metric_name} {best}; "
               f"checkpoints in {result.out}")  # fmt: skip


@main.command("eval")
@click.argument("kind", type=click.Choice(_MODEL_KINDS))
@click.option("--weights", required=True, type=click.Path(path_type=str), help="Checkpoint (best.pt / last.pt).")
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(path_type=str),
              help="FreiHAND-layout label folder (repeat to combine several).")
@click.option("--out", "out_json", default=None, type=click.Path(path_type=str),
              help="Metrics JSON (default: eval_<checkpoint>.json beside the checkpoint).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--workers", default=0, show_default=True, type=int)
@click.option("--split", type=click.Choice(["training", "evaluation"]), default="training", show_default=True,
              help="Which split of the label folders.")
@click.option("--model-dir", type=click.Path(path_type=str), default=None, help="mano: MANO folder.")
@click.option("--flip-test/--no-flip-test", default=None,
              help="cpm, unet: average each crop's heatmaps with those of its mirror image (two passes); "
                   "default: as the checkpoint was trained (off unless --set flip_test=true).")
@_threads_option
def eval_cmd(kind: str, weights: str, labels: tuple[str, ...], out_json: str | None, batch_size: int, device: str,
             workers: int, split: str, model_dir: str | None, flip_test: bool | None, threads: int | None) -> None:
    """Evaluate a KIND checkpoint on labels: prints the metrics (normaliser stated) and writes them as JSON."""
    _set_threads(threads)
    from handanno.models.evaluate import EvalConfig, evaluate, format_report

    cfg = EvalConfig(weights=weights, labels=labels, out_json=out_json, kind=kind, batch_size=batch_size,
                     device=device, workers=workers, split=split, model_dir=model_dir, flip_test=flip_test)  # fmt: skip
    click.echo(format_report(evaluate(cfg)))


# --------------------------------------------------------------------------- synth


@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--cameras", default=8, show_default=True, type=click.IntRange(1, 64), help="Cameras in the dome.")
@click.option("--frames", default=50, show_default=True, type=click.IntRange(1), help="Frames of hand motion.")
@click.option("--hand", type=click.Choice(["right", "left"]), default="right", show_default=True)
@click.option("--model-dir", type=click.Path(path_type=str), default=None,
              help="MANO folder (MANO_RIGHT.pkl, MANO_LEFT.pkl); default $HANDANNO_MODEL_DIR or the open hand model.")
@click.option("--image-size", default="640x480", show_default=True, metavar="WxH", help="Image size of every camera.")
@click.option("--seed", default=0, show_default=True, type=int, help="One seed for everything: same seed, same bytes.")
@click.option("--keypoint-noise-px", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Std of the Gaussian noise on keypoints2d/, pixels.")
@click.option("--outlier-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of in-image keypoints replaced by random wrong positions.")
@click.option("--calib-views", default=20, show_default=True, type=click.IntRange(0),
              help="Board poses rendered into every camera under calib/.")
@click.option("--board", default="charuco:7x5:0.04:0.03:DICT_4X4_50", show_default=True,
              help="Calibration board: charuco:SXxSY:SQUARE_M:MARKER_M:DICT or chessboard:NXxNY:SQUARE_M.")
@click.option("--background", type=click.Choice(["texture", "green"]), default="texture", show_default=True,
              help="Procedural clutter per camera, or a green screen.")
@click.option("--image-format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="images/ and calib/: jpg (quality 95, ~70 KB at 640x480) or png (lossless, exact, ~450 KB, slower).")
@click.option("--image-noise", default=1.5, show_default=True, type=click.FloatRange(0),
              help="Std of the per-frame sensor noise, grey levels (0: none).")
@click.option("--no-calib", is_flag=True, help="Skip calib/.")
@click.option("--no-keypoints", is_flag=True, help="Skip keypoints2d/.")
@click.option("--postures", type=click.Choice(["realistic", "anatomical"]), default="realistic", show_default=True,
              help="Hand articulations: realistic (published ranges of motion, twist at the knuckles, oblique hinges, "
                   "fists and grips) or anatomical (flexion about the fitter's own axes, the generator before).")
@click.option("--force", is_flag=True, help="Replace an earlier synth session in OUT (never other files).")
def synth_cmd(out: str, cameras: int, frames: int, hand: str, model_dir: str | None, image_size: str, seed: int,
              keypoint_noise_px: float, outlier_rate: float, calib_views: int, board: str, background: str,
              image_format: str, image_noise: float, no_calib: bool, no_keypoints: bool, postures: str,
              force: bool) -> None:
    """Make a synthetic capture with known answers in OUT.

    Writes rig.json, images/, masks_gt/, ground_truth/, keypoints2d/, calib/ and preview.png
    (all cameras of the middle frame with the true skeleton).
    """
    from handanno.calibration.rig_io import parse_image_size
    from handanno.synth.capture import SynthSettings, synthesize

    settings = SynthSettings(
        out_dir=out, num_cameras=cameras, num_frames=frames, hand=hand, model_dir=model_dir,
        image_size=tuple(parse_image_size(image_size)), seed=seed, keypoint_noise_px=keypoint_noise_px,
        outlier_rate=outlier_rate, calib_views=calib_views, board=board, background=background,
        write_calib=not no_calib, write_keypoints=not no_keypoints, image_format=image_format,
        image_noise_std=image_noise, postures=postures, force=force, progress=True,
    )  # fmt: skip
    result = synthesize(settings)
    click.echo(f"synth: {len(result.rig)} cameras x {len(result.frame_stems)} frames, "
               f"{len(result.calib_stems)} calibration views, {result.num_files} files in {result.out_dir} "
               f"({result.timings_s['total']:.1f} s); preview: {result.out_dir / 'preview.png'}")  # fmt: skip


# --------------------------------------------------------------------------- fit / export


def _fit_summary(report) -> str:
    """A few lines for a person: frames, skips with reasons, labels, timings, accuracy."""
    lines = [f"fit: {report.frames_total} frames; {report.frames_fitted} fitted now, {report.frames_accepted} accepted "
             f"in all, {len(report.skipped)} skipped; {report.labels_written} label samples written"]  # fmt: skip
    found = report.inputs_found or {}
    used = [f"{n} {what}" for what, n in (("keypoint file(s) you brought", found.get("keypoints_given", 0)),
                                          ("keypoint file(s) detected by an earlier run",
                                           found.get("keypoints_detected_earlier", 0)),
                                          ("mask(s) you brought", found.get("masks_given", 0))) if n]  # fmt: skip
    if used:
        lines.append("  used from the session: " + ", ".join(used) + " (what you brought is never overwritten)")
    if report.notes:
        lines.append(f"  {len(report.notes)} note(s) on the inputs (damaged images, ignored keypoints, ...):")
        lines += [f"    {n}" for n in report.notes[:5]]
        if len(report.notes) > 5:
            lines.append(f"    ... and {len(report.notes) - 5} more in {report.report_path}")
    if "redetect" in report.timings_s:  # the step ran (a detector, frames fitted, not --no-redetect)
        lines.append(f"  re-detection: hand found in {report.views_found_before} -> {report.views_found_after} of "
                     f"{report.views_total} views ({report.views_redetected} views re-detected)")
    rejected = report.frames_total - len(report.skipped) - report.frames_accepted
    if rejected > 0:
        lines.append(f"  {rejected} frame(s) fitted but not accepted: reasons in fits/<frame>.json quality.reasons")
    shown = list(report.skipped.items())[:10]
    lines += [f"  skipped {frame}: {why}" for frame, why in shown]
    if len(report.skipped) > len(shown):
        lines.append(f"  ... and {len(report.skipped) - len(shown)} more skipped (see {report.report_path})")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items()))
    if report.accuracy:
        a = report.accuracy
        lines.append(f"vs ground truth ({a['frames']} frames): MPJPE {a['mpjpe_mm']:.2f} mm, "
                     f"MPVPE {a['mpvpe_mm']:.2f} mm, PA-MPJPE {a['pa_mpjpe_mm']:.2f} mm, "
                     f"PA-MPVPE {a['pa_mpvpe_mm']:.2f} mm")  # fmt: skip
    lines.append(f"report: {report.report_path}")
    return "\n".join(lines)


def _overlay_video(session: str, model_dir: str | None, fps: float) -> None:
    """``handanno fit --overlay-video``: SESSION/overlays.mp4 from the fits on disk."""
    from handanno.annotate.overlay_video import OverlayVideoSettings, session_overlay_video

    res = session_overlay_video(session, OverlayVideoSettings(fps=fps, progress=True), model_dir=model_dir)
    if res.path is not None:
        click.echo(f"overlay video: {res.path} ({res.frames} frames, {res.size[0]}x{res.size[1]}, {fps:g} fps)")


@main.command("fit")
@click.option("--session", required=True, multiple=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Session folder: rig.json, images/<camera>/<frame>.jpg|png (see DESIGN.md). Repeat for several "
                   "sessions: fitted one after the other, or all at once with --ray.")
@click.option("--model-dir", type=click.Path(path_type=str), default=None,
              help="MANO folder (MANO_RIGHT.pkl, MANO_LEFT.pkl); default $HANDANNO_MODEL_DIR or the open hand model.")
@click.option("--hand", type=click.Choice(["right", "left"]), default="right", show_default=True)
@click.option("--detector", type=click.Choice(["given", "cpm", "mediapipe"]), default="given", show_default=True,
              help="2D keypoints: given (bring keypoints2d/), cpm (a trained heatmap network, --weights) or mediapipe.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="Checkpoint for --detector cpm: from `handanno train cpm`, `handanno train unet` or `handanno "
                   "bootstrap` (default: the network shipped with handanno, trained on synthetic captures); the hand "
                   "is searched for over the whole image once per camera, then tracked frame to frame.")
@click.option("--flip-test", is_flag=True,
              help="With --detector cpm: average each crop's heatmaps with those of its mirror image (twice the "
                   "detector's time, lower keypoint error).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--no-silhouette", is_flag=True, help="Fit to keypoints only: no segmentation, no silhouette stage.")
@click.option("--no-redetect", is_flag=True,
              help="With --detector cpm or mediapipe: do not detect again, around the fit, the views where the hand "
                   "was missed or the detection disagrees with the fit, nor the other views of frames seen in one "
                   "view only, around a neighbouring frame's fit (nor refit those frames).")
@click.option("--no-export", is_flag=True, help="Do not write labels/.")
@click.option("--overlays", is_flag=True, help="Write overlays/<frame>.png pictures of the fits.")
@click.option("--overlay-video", is_flag=True,
              help="Write SESSION/overlays.mp4 after the fit: every fitted frame in order, every view zoomed onto the "
                   "hand with the mesh outline, skeleton and per-view errors.")
@click.option("--overlay-fps", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Frame rate of overlays.mp4.")
@click.option("--frames", default=None, metavar="SLICE",
              help="Frames to process, a slice over their order: 0:100, 10:, ::5 (a single number: that frame alone).")
@click.option("--force", is_flag=True, help="Redo every stage even where its outputs exist.")
@click.option("--max-reproj-px", default=8.0, show_default=True, type=click.FloatRange(min=0),
              help="Accept a frame only if the median over views of the median keypoint error is at most this.")
@click.option("--max-reproj-rel", default=0.05, show_default=True, type=click.FloatRange(min=0),
              help="... and at most this fraction of the hand's size in each view (its keypoints' box).")
@click.option("--min-mask-iou", default=0.6, show_default=True, type=click.FloatRange(0, 1),
              help="Accept a frame only if the median mask IoU over views with a mask is at least this.")
@click.option("--outlier-views", default=1, show_default=True, type=click.IntRange(min=0),
              help="Views that may fail the two per-view checks below (a detector's or GrabCut's miss).")
@click.option("--max-view-reproj-rel", default=0.05, show_default=True, type=click.FloatRange(min=0),
              help="... and each view's median keypoint error at most this fraction of the hand's size there, in "
                   "every view but --outlier-views (biased detections disagree between views).")
@click.option("--min-view-mask-iou", default=0.85, show_default=True, type=click.FloatRange(0, 1),
              help="... and the fitted mesh's IoU with the view's mask at least this, in every view with a mask "
                   "but --outlier-views.")
@click.option("--max-triangulation-gap-mm", default=4.5, show_default=True, type=click.FloatRange(min=0),
              help="... and the fitted keypoints at most this far (median, mm) from the robust triangulation of the "
                   "detections.")
@click.option("--max-bone-dev", default=0.25, show_default=True, type=click.FloatRange(min=0),
              help="... and every bone's length within this fraction of the hand model's proportions (its overall "
                   "size set aside).")
@click.option("--max-joint-limit-excess-deg", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="... and every joint angle at most this many degrees beyond its anatomical range.")
@click.option("--batch-frames", default=None, type=click.IntRange(min=1),
              help="Frames fitted at once (default 64 on the CPU, 1024 on CUDA).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[auto|local|ADDRESS]",
              help="Fit on a Ray cluster, the frames in shards (one task each, a GPU per task where the cluster has "
                   "GPUs): auto (default: the cluster `ray start` made on this machine), HOST:PORT of its head node, "
                   "or local (start Ray here). Needs pip install 'handanno[ray]'; see docs/scale.md.")
@click.option("--shard-frames", default=None, type=click.IntRange(min=1),
              help="With --ray: frames per shard, whole batches (default: one batch, see --batch-frames).")
@_threads_option
def fit_cmd(session: tuple[str, ...], model_dir: str | None, hand: str, detector: str, weights: str | None,
            flip_test: bool,
            device: str, no_silhouette: bool, no_redetect: bool, no_export: bool, overlays: bool, frames: str | None,
            force: bool,
            max_reproj_px: float, max_reproj_rel: float, min_mask_iou: float, outlier_views: int,
            max_view_reproj_rel: float, min_view_mask_iou: float, max_triangulation_gap_mm: float,
            max_bone_dev: float, max_joint_limit_excess_deg: float, batch_frames: int | None,
            ray_address: str | None, shard_frames: int | None,
            overlay_video: bool, overlay_fps: float, threads: int | None) -> None:
    """Annotate a session: detect, triangulate, segment, fit the hand model, export FreiHAND labels.

    Each stage is skipped where its outputs already exist (--force redoes them); prints a
    summary and writes SESSION/report.json. Several --session: each in turn, or all at once
    on a Ray cluster with --ray (exit status 1 when some frames could not be fitted).
    """
    from pathlib import Path

    from handanno.annotate.pipeline import PipelineSettings, run_pipeline
    from handanno.annotate.quality import AcceptSettings

    _set_threads(threads)
    settings = PipelineSettings(
        session=Path(session[0]), model_dir=Path(model_dir) if model_dir else None, hand=hand, detector=detector,
        detector_weights=Path(weights) if weights else None, detector_flip_test=flip_test, device=device,
        silhouette=not no_silhouette, redetect=not no_redetect,
        export=not no_export, overlays=overlays, frames=frames, force=force, batch_frames=batch_frames,
        accept=AcceptSettings(max_reproj_px=max_reproj_px, max_reproj_rel=max_reproj_rel, min_mask_iou=min_mask_iou,
                              outlier_views=outlier_views, max_view_reproj_rel=max_view_reproj_rel,
                              min_view_mask_iou=min_view_mask_iou, max_triangulation_gap_mm=max_triangulation_gap_mm,
                              max_bone_dev=max_bone_dev, max_joint_limit_excess_deg=max_joint_limit_excess_deg),
    )  # fmt: skip
    if ray_address is not None:
        _fit_on_ray(session, settings, ray_address, shard_frames)
        for one in session if overlay_video else ():
            _overlay_video(one, model_dir, overlay_fps)
        return
    if shard_frames is not None:
        raise HandannoError("--shard-frames is for a fit on Ray: add --ray (see docs/scale.md)")
    from dataclasses import replace

    for one in session:
        click.echo(_fit_summary(run_pipeline(replace(settings, session=Path(one)))))
        if overlay_video:
            _overlay_video(one, model_dir, overlay_fps)


def _fit_on_ray(sessions: tuple[str, ...], settings, address: str, shard_frames: int | None) -> None:
    """``handanno fit --ray``: every session at once on a Ray cluster; exit status 1 when frames failed."""
    from handanno.scale.ray_fit import fit_sessions_ray

    job = fit_sessions_ray(sessions, settings, address=address, shard_frames=shard_frames)
    for report in job.reports.values():
        click.echo(_fit_summary(report))
    click.echo(f"ray: {len(sessions)} session(s), {job.shards} fit shard(s) in batches of {job.batch_frames} frames, "
               f"{job.wall_s:.1f} s")  # fmt: skip
    if not job.ok:
        click.echo("Error: some frames could not be fitted (their sessions' report.json lists them too):\n"
                   + job.failure_message(), err=True)  # fmt: skip
        sys.exit(1)


@main.command("export")
@click.option("--session", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Session folder with fits/ (or ground_truth/ for a synthetic session).")
@click.option("--source", type=click.Choice(["fits", "ground_truth"]), default="fits", show_default=True,
              help="fits: the accepted fits; ground_truth: a synthetic session's true hands "
                   "(to test trainers without the fitter).")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Labels folder (default SESSION/labels).")
@click.option("--model-dir", type=click.Path(path_type=str), default=None,
              help="MANO folder; default $HANDANNO_MODEL_DIR or the open hand model (must be the fits' model).")
@click.option("--hand", type=click.Choice(["right", "left"]), default=None, help="Default: the records' hand.")
def export_cmd(session: str, source: str, out: str | None, model_dir: str | None, hand: str | None) -> None:
    """Write FreiHAND-layout labels (224x224 undistorted crops, K, xyz, verts, mano) from a session."""
    from handanno.annotate.export_freihand import export_labels

    result = export_labels(session, source=source, out_dir=out, model_dir=model_dir, hand=hand)
    kind = "MANO" if result.is_mano else "non-MANO (open hand model)"
    click.echo(f"export: {result.samples} samples from {source} to {result.out_dir} ({kind} model {result.model_name})")


@main.command("review")
@click.option("--session", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Session folder to review (fitted or not).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; anything but 127.0.0.1/localhost lets others on the network see the "
                   "session and change review.json.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option("--model-dir", type=click.Path(path_type=str), default=None,
              help="MANO folder; default $HANDANNO_MODEL_DIR or the open hand model (must be the fits' model).")
def review_cmd(session: str, port: int, host: str, open_browser: bool, model_dir: str | None) -> None:
    """A local web page to check the fits and accept or reject frames (writes SESSION/review.json only)."""
    from handanno.review.app import serve

    serve(session, host=host, port=port, open_browser=open_browser, model_dir=model_dir)


# --------------------------------------------------------------------------- calibrate


@main.command("calibrate")
@click.argument("calib_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--board", required=True,
              help="charuco:SXxSY:SQUARE_M:MARKER_M:DICT (squares, metres) or "
                   "chessboard:NXxNY:SQUARE_M (inner corners). The rig's metric scale comes only from SQUARE_M: "
                   "measure the printed square; a wrong size scales every camera position and baseline by the same "
                   "factor and cannot be detected (the reprojection error is the same).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="The rig.json to write.")
@click.option("--fix-intrinsics", type=click.Path(exists=True, path_type=str), default=None,
              help="Hold these intrinsics: a rig (rig.json, Anipose, EasyMocap, seed) or an OpenCV YAML with "
                   "camera_matrix / distortion_coefficients (applied to every camera).")
@click.option("--world", type=click.Choice(["cam0", "board"]), default="cam0", show_default=True,
              help="World frame: the first camera (natural name order), or the board at the first view.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Write report.json, views.json, coverage_<cam>.png and rig_3d.png here.")
@click.option("--legacy", is_flag=True, help="ChArUco board made before OpenCV 4.6 (even number of rows).")
@click.option("--refine-intrinsics", is_flag=True, help="Also refine every camera's intrinsics in bundle adjustment.")
@click.option("--intrinsic-flag", "intrinsic_flags", multiple=True,
              type=click.Choice(["FIX_K1", "FIX_K2", "FIX_K3", "ZERO_TANGENT_DIST", "FIX_ASPECT_RATIO",
                                 "FIX_PRINCIPAL_POINT", "FIX_FOCAL_LENGTH"]),
              help="cv2.calibrateCamera flag (repeatable); held parameters stay held with --refine-intrinsics.")
@click.option("--loss", type=click.Choice(["soft_l1", "huber", "cauchy", "linear"]), default="soft_l1",
              show_default=True, help="Robust loss of bundle adjustment.")
@click.option("--f-scale-px", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Residual (px) beyond which the loss down-weights a corner.")
@click.option("--detector-params", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="OpenCV YAML of ArUco DetectorParameters.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Detection threads.")
@click.option("--max-views", default=60, show_default=True, type=click.IntRange(1),
              help="Board videos: most instants chosen to calibrate on (diverse poses, seen by several cameras).")
@click.option("--search-frames", default=400, show_default=True, type=click.IntRange(1),
              help="Board videos: most frames per video searched for the board, evenly spaced.")
def calibrate_cmd(calib_dir: str, board: str, out: str, fix_intrinsics: str | None, world: str,
                  report_dir: str | None, legacy: bool, refine_intrinsics: bool, intrinsic_flags: tuple[str, ...],
                  loss: str, f_scale_px: float, detector_params: str | None, workers: int, max_views: int,
                  search_frames: int) -> None:
    """Calibrate a multi-camera rig from board images CALIB_DIR/<cam>/<image>.jpg|png or videos CALIB_DIR/<cam>.mp4.

    The same file stem in several camera folders is the same instant; with videos (one per
    camera, synchronized: frame i of every video is the same instant), the board is searched
    for in up to --search-frames frames of each, and up to --max-views instants where it is
    seen are chosen (board poses spread over the images and in angle, seen by several
    cameras); the numbers of frames decoded, with the board and chosen are printed. Prints one line per
    camera (RMS reprojection error, views used) and any warnings: camera folders without
    images (left out; an error if fewer than two cameras remain), chessboard views whose
    corner order the image does not tell (left out), views whose error stands far above
    the rest. Metric scale comes from the square size in --board and cannot be checked.
    """
    from handanno.calibration.board import parse_board_spec
    from handanno.calibration.bundle_adjust import BundleAdjustSettings
    from handanno.calibration.calib_io import calibrate_directory
    from handanno.calibration.calibrate import CalibrateSettings
    from handanno.calibration.intrinsics import IntrinsicsSettings

    settings = CalibrateSettings(
        board=parse_board_spec(board, legacy=legacy), world=world,
        intrinsics=IntrinsicsSettings(flags=intrinsic_flags),
        bundle=BundleAdjustSettings(loss=loss, f_scale_px=f_scale_px), refine_intrinsics=refine_intrinsics,
    )  # fmt: skip
    from handanno.calibration.calib_io import find_calibration_videos

    if find_calibration_videos(calib_dir):
        from handanno.calibration.view_selection import ViewSelectionSettings
        from handanno.capture.board_videos import BoardVideoSettings, calibrate_board_videos

        video_settings = BoardVideoSettings(max_search_frames=search_frames, workers=workers, progress=True,
                                            selection=ViewSelectionSettings(max_views=max_views))  # fmt: skip
        result, sampling = calibrate_board_videos(calib_dir, settings, out, report_dir=report_dir,
                                                  fix_intrinsics=fix_intrinsics, detector_params=detector_params,
                                                  video_settings=video_settings)  # fmt: skip
        for line in sampling.summary_lines():
            click.echo(f"  {line}")
    else:
        result = calibrate_directory(calib_dir, settings, out, report_dir=report_dir, fix_intrinsics=fix_intrinsics,
                                     detector_params=detector_params, workers=workers)  # fmt: skip
    click.echo(f"calibrate: {len(result.rig)} cameras, {len(result.stems)} board poses, "
               f"RMS {result.rms_px:.3f} px -> {out}")  # fmt: skip
    for rep in result.cameras:
        click.echo(f"  {rep.name}: RMS {rep.rms_px:.3f} px, {rep.views_used}/{rep.images} views used"
                   f"{f', {len(rep.dropped_views)} dropped' if rep.dropped_views else ''}, "
                   f"coverage {rep.coverage:.0%}")  # fmt: skip
    for w in result.warnings:
        click.echo(f"  warning: {w}")


# --------------------------------------------------------------------------- demo
@main.command("bootstrap")
@click.option("--session", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The session folder (rig.json, images/).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=0),
              help="Most rounds of training after round 0 (it stops earlier when a round does not improve).")
@click.option("--init", type=click.Choice(["mediapipe", "cpm"]), default="mediapipe", show_default=True,
              help="The seed detector of round 0: MediaPipe, or the heatmap network (--weights or the shipped one).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="cpm or unet checkpoint to start from (default: the network shipped with handanno).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for the rounds (default SESSION/bootstrap); an interrupted run resumes there.")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(min=1), help="Most epochs per round.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--hand", type=click.Choice(["right", "left"]), default="right", show_default=True)
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (default: handanno's open hand model).")
@click.option("--no-silhouette", is_flag=True, help="Fit to keypoints only (no masks).")
@click.option("--accept", "accept_sets", multiple=True, metavar="KEY=VALUE",
              help="Change one acceptance threshold of the rounds' fits (which fits become training labels), "
                   "e.g. --accept min_view_mask_iou=0.7; the keys are handanno fit's --max-*/--min-* options "
                   "with underscores. Default: fit's thresholds with max_view_reproj_rel=0.10.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads on the CPU.")
def bootstrap_cmd(session: Path, rounds: int, init: str, weights: Path | None, out: Path | None, epochs: int,
                  device: str, hand: str, model_dir: Path | None, no_silhouette: bool, accept_sets: tuple[str, ...],
                  threads: int | None) -> None:
    """Train the 2D detector on the rig's own fits, round by round (multiview bootstrapping).

    Round 0 detects with --init and fits; each round then fine-tunes a heatmap network on the
    accepted frames' fits in every view (keypoints the fitted mesh hides are not trained on),
    detects every view again with it and refits. The session ends with the best round's
    keypoints, fits and labels; the per-round table is printed and kept in OUT/bootstrap.json.
    """
    from handanno.annotate.quality import with_thresholds
    from handanno.bootstrap.rounds import BOOTSTRAP_ACCEPT, BootstrapSettings, format_table, run_bootstrap

    _set_threads(threads)
    accept = with_thresholds(BOOTSTRAP_ACCEPT, parse_sets(accept_sets), option="--accept")
    report = run_bootstrap(BootstrapSettings(session=session, out=out, rounds=rounds, init=init, weights=weights,
                                             epochs=epochs, device=device, hand=hand, model_dir=model_dir,
                                             silhouette=not no_silhouette, accept=accept))  # fmt: skip
    click.echo(format_table(report.rows))
    click.echo(f"bootstrap: {report.stopped}; the session now holds round {report.best_round}'s keypoints and fits "
               f"({report.labels_written} label samples); {report.seconds / 60:.1f} min; rounds in {report.run_dir}")


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="handanno-demo", show_default=True,
              help="Folder for the capture, the calibration report, the fits, labels and overlays.")
@click.option("--cameras", type=int, default=8, show_default=True)
@click.option("--frames", type=int, default=10, show_default=True)
@click.option("--image-size", default="640x480", show_default=True, help="WIDTHxHEIGHT in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--silhouette/--no-silhouette", default=True, show_default=True,
              help="Segment with GrabCut and fit silhouettes too (--no-silhouette: keypoints only, faster).")
def demo_cmd(out: str, cameras: int, frames: int, image_size: str, seed: int, device: str, silhouette: bool) -> None:
    """Run the whole job on a synthetic capture: synth, calibrate, fit, export; print the numbers."""
    from pathlib import Path

    from handanno.calibration.rig_io import parse_image_size
    from handanno.demo import DemoSettings, format_summary, run_demo

    summary = run_demo(DemoSettings(out_dir=Path(out), num_cameras=cameras, num_frames=frames,
                                    image_size=parse_image_size(image_size), seed=seed, device=device,
                                    silhouette=silhouette))
    click.echo(format_summary(summary))


if __name__ == "__main__":  # last: every command is defined by now
    main()
