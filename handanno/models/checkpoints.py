"""A training run's config and its checkpoints: writing, reading, and rebuilding the network.

Inference (``handanno fit --detector cpm``, ``handanno eval``) reads checkpoints through
:func:`load_task` without importing the training loop (:mod:`handanno.models.train`).

A checkpoint (``last.pt``, ``best.pt``) is a dict: ``format`` / ``version``, ``kind``, the
model's config and weights, the :class:`TrainConfig` of its run, and the optimiser, scheduler
and scaler state with the step and epoch for resuming.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from handanno.data import augment as aug
from handanno.data.datasets import DataConfig
from handanno.data.files_io import atomic_write, atomic_write_bytes
from handanno.errors import HandannoError
from handanno.models.nets.tasks import MODEL_KINDS, Task, make_task

logger = logging.getLogger(__name__)

DEFAULT_LR = 1e-3
"""Peak learning rate of a new run when none is given."""

CHECKPOINT_FORMAT = "handanno-checkpoint"
CHECKPOINT_VERSION = 1

@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (written to ``args.yaml``).

    Attributes:
        model: ``cpm | unet | mano | lift``.
        labels: training label folders (FreiHAND layout), combined.
        out: the run folder.
        val: validation label folders; empty = hold out ``val_fraction`` of ``labels``.
        val_fraction: share of the training samples held out when ``val`` is empty.
        epochs: maximum number of epochs.
        batch_size: samples per step (per process under DDP).
        lr: peak learning rate (AdamW, cosine decay to ``lr * 0.01`` over the run); None:
            :data:`DEFAULT_LR`, or on resume the resumed run's. Given on resume, it replaces
            the resumed run's peak for the rest of the schedule.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip (0 = off).
        device: ``auto | cpu | cuda | cuda:N``.
        workers: DataLoader worker processes.
        amp: mixed precision on CUDA (ignored on the CPU).
        patience: stop after this many epochs without a better validation metric (0 = never).
        resume: continue the run in ``out`` from its ``last.pt`` (an error when there is none).
        overwrite: start a new run in ``out`` even though it holds one (its checkpoints, logs
            and plots are removed first). Without ``resume`` or ``overwrite`` a folder that
            holds any of :data:`RUN_FILES` is refused, so that no run is lost by mistake.
        seed: seed of the split, the augmentation and the initial weights.
        log_every: steps between ``steps.csv`` rows.
        max_steps: stop after this many optimizer steps in total (None = no limit).
        plots: write the PNG plots every epoch.
        model_dir: MANO model folder for the ``mano`` model's losses (None: open model).
        model_config: overrides of the model's config fields (see ``handanno.models.nets``).
        data: cropping and augmentation (the crop size comes from the model config).
    """

    model: str
    labels: tuple[str, ...]
    out: str
    val: tuple[str, ...] = ()
    val_fraction: float = 0.1
    epochs: int = 50
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    device: str = "auto"
    workers: int = 4
    amp: bool = True
    patience: int = 10
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    log_every: int = 20
    max_steps: int | None = None
    plots: bool = True
    model_dir: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)


def _yaml_lines(obj: Any, indent: int = 0) -> list[str]:
    """A small YAML writer: nested mappings in block style, every leaf as JSON (valid YAML flow)."""
    lines = []
    pad = "  " * indent
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += _yaml_lines(value, indent + 1)
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return lines


def config_to_dict(cfg: TrainConfig, task: Task | None = None) -> dict[str, Any]:
    """Plain dict of the config; with ``task``, the model's full config and the data settings it uses."""
    d = dataclasses.asdict(cfg)
    if task is not None:
        d["model_config"] = dataclasses.asdict(task.config)
        d["data"] = dataclasses.asdict(task.data_config(cfg.data))
    return d


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :func:`config_to_dict` output (checkpoint or args.yaml)."""
    d = dict(d)
    data = dict(d.pop("data", {}))
    augment = aug.AugmentConfig(**data.pop("augment", {}))
    if "versions" in data:
        data["versions"] = tuple(data["versions"])
    d["labels"], d["val"] = tuple(d.get("labels", ())), tuple(d.get("val", ()))
    return TrainConfig(**d, data=DataConfig(**data, augment=augment))


def write_args_yaml(path: Path, cfg: TrainConfig, task: Task) -> None:
    """Write the resolved config next to the run as ``args.yaml``."""
    text = "# handanno train: resolved configuration of this run\n" + "\n".join(_yaml_lines(config_to_dict(cfg, task)))
    atomic_write_bytes(path, (text + "\n").encode())


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: Path,
    task: Task,
    cfg: TrainConfig,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> Path:
    """Write a checkpoint atomically: model, optimizer, scheduler, scaler, configs, step, epoch.

    Args:
        path: the ``.pt`` file.
        task: the task whose model is saved (the unwrapped model).
        cfg: the run's config.
        state: loop state (``step``, ``epoch``, ``best_metric``, ``bad_epochs``, ``history``).
        optimizer: the optimizer, or None.
        scheduler: the LR scheduler, or None.
        scaler: the AMP gradient scaler, or None.

    Returns:
        ``path``.
    """
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": task.kind,
        "model_config": dataclasses.asdict(task.config),
        "train_config": config_to_dict(cfg, task),
        "model": {k: v.detach().cpu() for k, v in task.model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "hand_model": task.hand_model_info() if hasattr(task, "hand_model_info") else None,
        **state,
    }

    def _write(p: Path) -> None:
        with open(p, "wb") as f:  # through a file object, a full disk is an OSError (ENOSPC), not a bare RuntimeError
            torch.save(ckpt, f)

    return atomic_write(path, _write)


def load_checkpoint(path: str | os.PathLike, expected_kind: str | Iterable[str] | None = None) -> dict[str, Any]:
    """Read a checkpoint on the CPU, checking that it is one and of the expected model type.

    Args:
        path: the ``.pt`` file.
        expected_kind: a model type or several allowed ones; None accepts any.

    Returns:
        the checkpoint dict (see :func:`save_checkpoint`).

    Raises:
        HandannoError: missing, unreadable or corrupted file, not a handanno checkpoint, or
            a checkpoint of another model type.
    """
    path = Path(path)
    if not path.is_file():
        raise HandannoError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise HandannoError(f"{path}: not a readable checkpoint (corrupted or not a torch file): {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise HandannoError(f"{path}: not a handanno checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    kind = ckpt.get("kind")
    if kind not in MODEL_KINDS:
        raise HandannoError(f"{path}: unknown model type {kind!r} in checkpoint")
    if expected_kind is not None:
        allowed = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if kind not in allowed:
            raise HandannoError(
                f"{path}: this is a {kind!r} checkpoint, but a {' or '.join(allowed)} model was asked for"
            )
    return ckpt


def load_task(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    expected_kind: str | Iterable[str] | None = None,
    model_dir: str | None = None,
    **task_kwargs: Any,
) -> tuple[Task, dict[str, Any]]:
    """Rebuild the model of a checkpoint, weights loaded, in eval mode on ``device``.

    Args:
        path: the checkpoint.
        device: where to put the model.
        expected_kind: allowed model type(s), or None.
        model_dir: MANO folder for a ``mano`` checkpoint (None: the run's, else the open model).
        **task_kwargs: passed to the task (e.g. ``hand_layers`` for ``mano``).

    Returns:
        the task and the checkpoint dict.
    """
    ckpt = load_checkpoint(path, expected_kind)
    kind = ckpt["kind"]
    if kind == "mano" and "hand_layers" not in task_kwargs:
        task_kwargs["model_dir"] = model_dir or ckpt.get("train_config", {}).get("model_dir")
    task = make_task(kind, ckpt["model_config"], **task_kwargs)
    try:
        task.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise HandannoError(f"{path}: weights do not fit the {kind} model described in the checkpoint: {exc}") from exc
    task.to(torch.device(device))
    task.model.eval()
    return task, ckpt


def strip_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``src``'s network alone to ``dst``: no optimizer, scheduler or scaler state, the step history dropped.

    What inference needs (``load_task``) stays, byte for byte the same weights; resuming
    training from ``dst`` is not possible. The shipped network was made this way.
    """
    ckpt = load_checkpoint(src)
    keep = {k: ckpt[k] for k in ("format", "version", "kind", "model_config", "train_config", "model", "hand_model",
                                 "epoch", "step", "best_metric") if k in ckpt}  # fmt: skip
    keep.update(optimizer=None, scheduler=None, scaler=None, history=[])

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            torch.save(keep, f)

    return atomic_write(dst, _write)


SHIPPED_DETECTOR = Path(__file__).resolve().parents[1] / "assets" / "detector_unet.pt"
"""The heatmap network shipped with handanno (trained on ``handanno synth`` captures; docs/performance.md)."""


def shipped_detector_weights() -> Path | None:
    """:data:`SHIPPED_DETECTOR` where the install has it, else None."""
    return SHIPPED_DETECTOR if SHIPPED_DETECTOR.is_file() else None
