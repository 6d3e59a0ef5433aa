"""Evaluating a trained checkpoint on FreiHAND-layout labels: metrics JSON and a text report.

Reported (see :mod:`handanno.models.nets.tasks` for the definitions):
    - ``cpm`` / ``unet``: EPE in label-image pixels, PCK@0.2 normalised by the larger side of
      the ground-truth keypoints' bounding box, AUC of 2D PCK over 0-30 px.
    - ``mano``: FreiHAND's MPJPE / PA-MPJPE / AUC (and mesh errors and F-scores when the
      labels have vertices), root-relative MPJPE, and the 2D metrics of the projected keypoints.
    - ``lift``: root-relative 3D error in mm (predicted shape scaled by the ground-truth bone
      length), its median, PA-MPJPE and 3D AUC.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from handanno.data import augment as aug
from handanno.data.datasets import DataConfig, HandCropDataset
from handanno.data.files_io import write_json
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.models.checkpoints import load_task, train_config_from_dict
from handanno.models.nets.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate.

    Attributes:
        weights: the checkpoint (``best.pt`` / ``last.pt``).
        labels: label folders (FreiHAND layout), combined.
        out_json: where to write the metrics; None = ``<checkpoint folder>/eval_<checkpoint stem>.json``.
        kind: the model type the caller expects (None accepts any).
        batch_size: samples per batch.
        device: ``auto | cpu | cuda | cuda:N``.
        workers: DataLoader worker processes.
        split: ``training`` or ``evaluation`` (official FreiHAND evaluation set).
        model_dir: MANO folder for ``mano`` checkpoints (None: the run's, else the open model).
        flip_test: ``cpm`` / ``unet``: average each crop's maps with its mirror image's (None:
            as the checkpoint's config says).
    """

    weights: str
    labels: tuple[str, ...]
    out_json: str | None = None
    kind: str | None = None
    batch_size: int = 32
    device: str = "auto"
    workers: int = 0
    split: str = "training"
    model_dir: str | None = None
    flip_test: bool | None = None


def evaluate(cfg: EvalConfig, **task_kwargs: Any) -> dict[str, Any]:
    """Run a checkpoint over labels; write and return the metrics.

    Args:
        cfg: what to evaluate.
        **task_kwargs: passed to the task (e.g. ``hand_layers`` for ``mano``).

    Returns:
        The metrics dict (also written to the JSON file), with ``model``, ``checkpoint``,
        ``labels``, ``step`` and ``seconds`` added.

    Raises:
        HandannoError: bad checkpoint (corrupted, other model type) or bad labels.
    """
    device = resolve_device(cfg.device)
    task, ckpt = load_task(cfg.weights, device, cfg.kind, cfg.model_dir, **task_kwargs)
    if cfg.flip_test is not None:
        if not hasattr(task.config, "flip_test"):
            raise HandannoError(f"{cfg.weights}: the flip test is for heatmap models (cpm, unet), not {task.kind}")
        task.set_flip_test(cfg.flip_test)
    data = DataConfig()
    if ckpt.get("train_config"):
        data = train_config_from_dict(ckpt["train_config"]).data
    data = dataclasses.replace(task.data_config(data), augment=aug.AugmentConfig(enabled=False))
    ds = HandCropDataset(cfg.labels, data, train=False, split=cfg.split)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda")  # fmt: skip
    t0 = time.perf_counter()
    metrics, _ = validate(task, task.model, loader, device, amp=True)
    metrics = {("loss" if k == "val_loss" else k): v for k, v in metrics.items()}
    metrics.update({
        "model": task.kind,
        "checkpoint": str(cfg.weights),
        "step": int(ckpt.get("step", 0)),
        "labels": [str(x) for x in cfg.labels],
        "seconds": time.perf_counter() - t0,
    })  # fmt: skip
    if hasattr(task.config, "flip_test"):
        metrics["flip_test"] = bool(task.config.flip_test)
    out = Path(cfg.out_json) if cfg.out_json else Path(cfg.weights).with_name(f"eval_{Path(cfg.weights).stem}.json")
    write_json(out, metrics, indent=2)
    metrics["json"] = str(out)
    logger.info("wrote %s", out)
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """Human-readable summary of :func:`evaluate`'s metrics, normaliser and units stated."""
    kind = metrics.get("model")
    n = metrics.get("num_samples", "?")
    lines = [f"{kind} on {n} samples ({', '.join(metrics.get('labels', []))})"]
    if "pck@0.2" in metrics:
        lines.append(
            f"  2D: EPE {metrics['epe_px']:.2f} px (label-image pixels), PCK@0.2 {metrics['pck@0.2']:.3f} "
            f"(normaliser: {metrics['pck_normaliser']}, mean {metrics['normaliser_px_mean']:.1f} px), "
            f"AUC {metrics['auc_2d']:.3f} (PCK over {metrics['auc_2d_thresholds_px'][0]:g}-"
            f"{metrics['auc_2d_thresholds_px'][1]:g} px)"
        )
    if "epe_crop_px" in metrics:
        side = metrics["crop_size_px"]
        flip = ", flip test" if metrics.get("flip_test") else ""
        lines.append(f"  2D: EPE {metrics['epe_crop_px']:.2f} px in the {side}x{side} input crop "
                     f"({metrics['epe_128_px']:.2f} px on a 128x128 crop{flip})")  # fmt: skip
    if kind == "mano":
        lines.append(
            f"  3D: MPJPE {metrics['mpjpe_mm']:.1f} mm, PA-MPJPE {metrics['pa_mpjpe_mm']:.1f} mm, "
            f"root-relative MPJPE {metrics['rr_mpjpe_mm']:.1f} mm (root keypoint {metrics['rr_root_keypoint']}), "
            f"AUC 0-50 mm {metrics['auc_3d']:.3f}"
        )
        if metrics.get("pa_mpvpe_mm") is not None:
            lines.append(f"  mesh: PA-MPVPE {metrics['pa_mpvpe_mm']:.1f} mm, F@5mm {metrics['f5']:.3f}, "
                         f"F@15mm {metrics['f15']:.3f}")  # fmt: skip
    if kind == "lift":
        lines.append(
            f"  3D root-relative error {metrics['rr_epe_mm']:.1f} mm (median {metrics['rr_epe_median_mm']:.1f} mm; "
            f"root keypoint 0, scaled by the {metrics['rr_scale']}), PA-MPJPE {metrics['pa_mpjpe_mm']:.1f} mm, "
            f"AUC 0-50 mm {metrics['auc_3d']:.3f}"
        )
    if "json" in metrics:
        lines.append(f"  metrics written to {metrics['json']}")
    return "\n".join(lines)


__all__ = ["EvalConfig", "evaluate", "format_report"]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, enabled: bool):
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def validate(
    task: Task, model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = True
) -> tuple[dict[str, Any], tuple[dict[str, torch.Tensor], Any] | None]:
    """Validation loss and metrics over a loader.

    Returns:
        ``(metrics, first)``: metrics include ``val_loss``; ``first`` is the first batch and
        the model's outputs on it (CPU), for the prediction plot.
    """
    model.eval()
    collected: dict[str, list[np.ndarray]] = {}
    loss_sum, n = 0.0, 0
    first = None
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            outputs = task.forward(model, batch, train=False)
        loss, _ = task.loss(outputs, batch)
        loss_sum += float(loss) * len(batch["uv"])
        n += len(batch["uv"])
        for k, v in task.collect(outputs, batch).items():
            collected.setdefault(k, []).append(v)
        if first is None:
            first = ({k: v.cpu() for k, v in batch.items()}, _outputs_to_cpu(outputs))
    if n == 0:
        return {"val_loss": float("nan")}, None
    metrics = task.metrics({k: np.concatenate(v) for k, v in collected.items()})
    metrics["val_loss"] = loss_sum / n
    return metrics, first


def _outputs_to_cpu(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach().float().cpu()
    if isinstance(outputs, list):
        return [_outputs_to_cpu(o) for o in outputs]
    if dataclasses.is_dataclass(outputs):
        return type(outputs)(**{f.name: _outputs_to_cpu(getattr(outputs, f.name)) for f in dataclasses.fields(outputs)})
    return outputs
