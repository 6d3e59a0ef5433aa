"""PNG plots written beside a training run: loss curves, PCK curve, a grid of predictions.

Matplotlib with the Agg backend (no display needed); each function writes one file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from handanno.data.conventions import BONES
from handanno.data.datasets import to_display
from handanno.data.files_io import atomic_write

FINGER_OF_JOINT = [0] + [1 + (j - 1) // 4 for j in range(1, 21)]  # 0 palm, 1 thumb .. 5 pinky
FINGER_COLOURS = ["#444444", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4"]


def _figure(*args: Any, **kwargs: Any):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kwargs)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, dpi=90, bbox_inches="tight"))
    plt.close(fig)


def plot_history(history: list[dict[str, Any]], path: Path, metric: str) -> None:
    """Training / validation loss per epoch (log scale) and the validation ``metric``."""
    if not history:
        return
    plt, (fig, (ax1, ax2)) = _figure(1, 2, figsize=(10, 3.6))
    ep = [r["epoch"] for r in history]
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        ys = [r.get(key, np.nan) for r in history]
        ax1.plot(ep, ys, marker="o", ms=3, label=label)
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss")
    ax1.legend()
    ys = [r.get(f"val_{metric}", np.nan) for r in history]
    ax2.plot(ep, ys, marker="o", ms=3, color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_title(f"validation {metric}")
    ax2.grid(alpha=0.3)
    _save(fig, path)


def plot_pck(metrics: dict[str, Any], path: Path) -> None:
    """PCK against the threshold: normalised 2D (``pck_curve``) and/or 3D in mm when available."""
    curve = metrics.get("pck_curve")
    if curve is None:
        return
    plt, (fig, ax) = _figure(figsize=(5, 3.6))
    ax.plot(curve["alpha"], curve["pck"], marker=".")
    ax.axvline(0.2, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("threshold / larger side of the GT keypoints' bounding box")
    ax.set_ylabel("PCK")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"validation PCK (PCK@0.2 = {metrics.get('pck@0.2', float('nan')):.3f})")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _draw_skeleton(ax: Any, uv: np.ndarray, style: str, colour: str | None = None, lw: float = 1.3) -> None:
    """Bones of ``uv (21, 2)``; one colour per finger unless ``colour`` is given."""
    for a, b in BONES:
        ax.plot(uv[[a, b], 0], uv[[a, b], 1], style, color=colour or FINGER_COLOURS[FINGER_OF_JOINT[b]], lw=lw, ms=2)


def plot_predictions(task: Any, batch: dict[str, torch.Tensor], outputs: Any, path: Path, max_items: int = 8) -> None:
    """Grid of predictions: each crop with the ground truth (white) and the prediction (finger colours).

    Heatmap models get a second row with the maximum over the 21 predicted maps; the MANO
    regressor shows its projected keypoints; the lifting model shows predicted and true
    root-relative 3D keypoints seen along the camera's z axis.
    """
    kind = task.kind
    B = min(len(batch["uv"]), max_items)
    rows = 2 if kind in ("cpm", "unet") else 1
    plt, (fig, axes) = _figure(rows, B, figsize=(2.1 * B, 2.2 * rows), squeeze=False)
    with torch.no_grad():
        if kind in ("cpm", "unet"):
            uv_pred, conf = task.decode(outputs)
            maps = task.final_maps(outputs)
        elif kind == "mano":
            dev = task.hand_layers["right"].v_template.device
            uv_pred = task.predict(outputs.to(dev), {k: v.to(dev) for k, v in batch.items()})["uv"].cpu()
        else:
            from handanno.models.nets.lift import Lift

            rel_pred = Lift.root_relative(outputs, batch["side"]).cpu().numpy()
            _, _, rel_gt, _ = task.targets(batch)
            rel_gt = rel_gt.numpy()
    for i in range(B):
        ax = axes[0, i]
        ax.set_axis_off()
        if kind == "lift":
            _draw_skeleton(ax, rel_gt[i, :, :2], "--", colour="#999999", lw=2.5)
            _draw_skeleton(ax, rel_pred[i, :, :2], "-o")
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_title(f"{'left' if int(batch['side'][i]) else 'right'}", fontsize=8)
            continue
        ax.imshow(to_display(batch["image"][i]))
        _draw_skeleton(ax, batch["uv"][i].numpy(), "-", colour="white", lw=2.5)
        _draw_skeleton(ax, uv_pred[i].numpy(), "-o")
        err = float((uv_pred[i] - batch["uv"][i]).norm(dim=-1).mean())
        ax.set_title(f"EPE {err:.1f} px (crop)", fontsize=8)
        if rows == 2:
            ax2 = axes[1, i]
            ax2.set_axis_off()
            ax2.imshow(maps[i].max(dim=0).values.numpy(), cmap="magma")
            ax2.set_title(f"max heatmap, conf {float(conf[i].mean()):.2f}", fontsize=8)
    gt_style = "grey dashed" if kind == "lift" else "white"
    fig.suptitle(f"{kind}: ground truth {gt_style}, prediction coloured by finger", fontsize=9, y=1.02)
    _save(fig, path)
