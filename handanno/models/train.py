"""Training the hand networks (``cpm``, ``unet``, ``mano``, ``lift``) on FreiHAND-layout labels.

Readable top to bottom: :class:`TrainConfig` in, :func:`main` sets up data, model,
optimiser and logs, then alternates :func:`train_one_epoch` and :func:`validate`, writing
``last.pt`` every epoch and ``best.pt`` when the validation metric improves, until the
epochs run out or early stopping triggers.

The run folder (``TrainConfig.out``) holds::

    args.yaml       the resolved config (model sizes included)
    last.pt, best.pt checkpoints: model, optimizer, scheduler, scaler, configs, step, epoch
    log.csv         one row per epoch: losses, validation metrics, learning rate, samples/s
    steps.csv       one row per logged step: loss and its parts
    loss.png, pck.png, predictions.png   plots (see :mod:`handanno.models.train_plots`)
    tb/             TensorBoard events, when tensorboard is installed

A folder that already holds a run is refused unless ``resume`` (continue it from
``last.pt``) or ``overwrite`` (start again, removing its files) is set, and ``resume``
without ``last.pt`` is an error: a run is never lost by mistake (:func:`check_run_folder`).

Hardware: CUDA when present (``device="auto"``), mixed precision there (bfloat16 where
supported, else float16 with a gradient scaler); ``torchrun`` launches DistributedDataParallel
(set up only when ``WORLD_SIZE`` is in the environment; NCCL on CUDA, Gloo on the CPU), each
rank reading its shard through a ``DistributedSampler``; rank 0 validates, logs and saves.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from handanno.data import augment as aug
from handanno.data.datasets import DataConfig, HandCropDataset, split_indices
from handanno.data.files_io import atomic_write, atomic_write_bytes
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.models.nets.tasks import MODEL_KINDS, Task, make_task

logger = logging.getLogger(__name__)

DEFAULT_LR = 1e-3
"""Peak learning rate of a new run when none is given."""

CHECKPOINT_FORMAT = "handanno-checkpoint"
CHECKPOINT_VERSION = 1

RUN_FILES = ("last.pt", "best.pt", "log.csv", "steps.csv", "args.yaml")
"""Files that make a folder a run folder: training refuses to start anew over them unless told to."""

_RUN_PLOTS = ("loss.png", "pck.png", "predictions.png")


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


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports.

    Attributes:
        out: the run folder.
        last_checkpoint: path of ``last.pt``.
        best_checkpoint: path of ``best.pt`` (None before any validation).
        best_metric: best value of the task's primary validation metric.
        metric_name: that metric's name.
        epochs_run: epochs completed in total (including before a resume).
        steps: optimizer steps in total.
        stopped_early: whether early stopping ended the run.
        history: one dict per epoch (the ``log.csv`` rows).
    """

    out: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    metric_name: str
    epochs_run: int
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]]


# --------------------------------------------------------------------------- config files


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


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """Process group facts: ``rank``, ``world_size``, ``local_rank``; ``enabled`` under torchrun."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the rank that logs, validates and saves."""
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise DDP when ``WORLD_SIZE`` is set (torchrun), and pick this process's device."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(), resolve_device(device_name)
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(True, rank, world, local), device


# --------------------------------------------------------------------------- one epoch


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled and device.type == "cuda")


@dataclass
class _LoopState:
    step: int = 0
    epoch: int = 0
    best_metric: float | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_one_epoch(
    task: Task,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    cfg: TrainConfig,
    state: _LoopState,
    step_writer: Any = None,
    tb: Any = None,
) -> dict[str, float]:
    """One pass over the training loader; returns mean loss, its parts and samples/s.

    Stops early (mid-epoch) when ``cfg.max_steps`` is reached.
    """
    model.train()
    totals: dict[str, float] = {}
    n_batches = 0
    n_samples = 0
    t0 = time.perf_counter()
    for batch in loader:
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        batch = _to_device(batch, device)
        with _autocast(device, cfg.amp):
            outputs = task.forward(model, batch, train=True)
        loss, parts = task.loss(outputs, batch)
        if not torch.isfinite(loss):
            raise HandannoError(f"loss became {float(loss)} at step {state.step}; lower --lr or check the labels")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state.step += 1
        n_batches += 1
        n_samples += len(batch["uv"])
        loss_value = float(loss.detach())  # one device sync per step
        totals["loss"] = totals.get("loss", 0.0) + loss_value
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
        if step_writer is not None and (state.step % cfg.log_every == 0 or state.step == 1):
            lr = scheduler.get_last_lr()[0]
            step_writer.writerow({"step": state.step, "epoch": state.epoch, "loss": loss_value, "lr": lr,
                                  **{f"loss_{k}": v for k, v in parts.items()}})  # fmt: skip
            if tb is not None:
                tb.add_scalar("train/loss", loss_value, state.step)
                tb.add_scalar("train/lr", lr, state.step)
    elapsed = time.perf_counter() - t0
    out = {f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()}
    out["train_samples_per_s"] = n_samples / elapsed if elapsed > 0 else float("nan")
    out["train_batches"] = n_batches
    return out


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
        batch = _to_device(batch, device)
        with _autocast(device, amp):
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


# --------------------------------------------------------------------------- the run


def _improved(value: float, best: float | None, higher_is_better: bool) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def build_datasets(cfg: TrainConfig, task: Task) -> tuple[HandCropDataset, HandCropDataset | None]:
    """Training and validation datasets: ``cfg.val`` folders, or a held-out share of ``cfg.labels``."""
    dcfg = dataclasses.replace(task.data_config(cfg.data), seed=cfg.seed)
    full = HandCropDataset(cfg.labels, dcfg, train=True)
    if cfg.val:
        return full, HandCropDataset(cfg.val, dcfg, train=False)
    tr, va = split_indices(full.num_total, cfg.val_fraction, cfg.seed, groups=full.group_ids())
    if len(va) == 0:
        return full, None
    return full.subset(tr, train=True), full.subset(va, train=False)


def _loader(ds: HandCropDataset, cfg: TrainConfig, device: torch.device, train: bool, di: DistInfo) -> DataLoader:
    sampler = None
    if train and di.enabled:
        sampler = torch.utils.data.distributed.DistributedSampler(
            ds, di.world_size, di.rank, shuffle=True, seed=cfg.seed
        )
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        drop_last=train and len(ds) > cfg.batch_size,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed) if train and sampler is None else None,
    )


def _open_tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"))


def cosine_factor(step: int, total_steps: int) -> float:
    """Learning-rate factor at ``step``: cosine decay from 1 to 0.01 over ``total_steps``, then 0.01."""
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse to start where a run would be lost or a resume cannot happen.

    * ``cfg.resume``: ``out/last.pt`` must exist.
    * neither ``cfg.resume`` nor ``cfg.overwrite``: ``out`` must hold none of
      :data:`RUN_FILES` (a missing or empty folder, or one with other files, is fine).
    * not both.

    Raises:
        HandannoError: naming the folder or the missing checkpoint, and saying what to do.
    """
    out = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        raise HandannoError(f"{out}: --resume continues the run there and --overwrite starts it again; choose one")
    if out.exists() and not out.is_dir():
        raise HandannoError(f"{out}: is a file, not a run folder; choose another --out")
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise HandannoError(f"{out / 'last.pt'}: not found, so there is no run to resume (--resume); "
                                f"check --out, or leave out --resume to start a new run in {out}")  # fmt: skip
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not cfg.overwrite:
        raise HandannoError(f"{out} already holds a training run ({', '.join(found)}): add --resume to continue "
                            "it, or --overwrite to start again there (its checkpoints and logs are replaced), or "
                            "choose another --out")  # fmt: skip


def _clear_run(out: Path) -> list[str]:
    """Remove the files an earlier run left in ``out`` (for ``overwrite``); returns their names."""
    removed = []
    for name in (*RUN_FILES, *_RUN_PLOTS):
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    for events in sorted((out / "tb").glob("events.out.tfevents.*")):
        events.unlink()
        removed.append(f"tb/{events.name}")
    return removed


def main(cfg: TrainConfig, task: Task | None = None) -> TrainResult:
    """Train one model as :class:`TrainConfig` says; see the module docstring for the outputs.

    Args:
        cfg: the run's settings.
        task: an already-built task (tests inject hand models this way); default: built
            from ``cfg.model`` and ``cfg.model_config``, or from the checkpoint on resume.

    Returns:
        :class:`TrainResult`.

    Raises:
        HandannoError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set;
            ``resume`` without ``out/last.pt`` (see :func:`check_run_folder`); bad labels, a
            checkpoint of another model type on resume, a diverging loss.
    """
    from handanno.models import train_plots

    check_run_folder(cfg)  # every process, before any of them writes (init_process_group waits for all)
    di, device = setup_distributed(cfg.device)
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    resume_ckpt = load_checkpoint(last_path, cfg.model) if cfg.resume else None

    torch.manual_seed(cfg.seed + di.rank)
    if task is None:
        model_config = resume_ckpt["model_config"] if resume_ckpt is not None else cfg.model_config
        kwargs = {"model_dir": cfg.model_dir} if cfg.model == "mano" else {}
        task = make_task(cfg.model, model_config, **kwargs)
    elif task.kind != cfg.model:
        raise HandannoError(f"the task is a {task.kind} model but the config says {cfg.model}")
    task.to(device)

    train_ds, val_ds = build_datasets(cfg, task)
    train_loader = _loader(train_ds, cfg, device, True, di)
    val_loader = _loader(val_ds, cfg, device, False, di) if val_ds is not None else None
    model: nn.Module = task.model
    if di.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    resumed_lr = resume_ckpt.get("train_config", {}).get("lr") if resume_ckpt is not None else None
    peak_lr = cfg.lr if cfg.lr is not None else resumed_lr if resumed_lr is not None else DEFAULT_LR
    cfg = dataclasses.replace(cfg, lr=peak_lr)
    optimizer = torch.optim.AdamW(task.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(len(train_loader), 1)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    state = _LoopState()
    if resume_ckpt is not None:
        task.model.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        if resumed_lr is not None and not math.isclose(resumed_lr, cfg.lr):
            logger.info("--resume: peak learning rate %g (the resumed run's was %g)", cfg.lr, resumed_lr)
        # The schedule continues from the saved step, stretched to this run's --epochs and
        # scaled to its peak learning rate.
        scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * cosine_factor(scheduler.last_epoch, total_steps)
        if resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        state = _LoopState(step=int(resume_ckpt["step"]), epoch=int(resume_ckpt["epoch"]),
                           best_metric=resume_ckpt.get("best_metric"), bad_epochs=int(resume_ckpt.get("bad_epochs", 0)),
                           history=list(resume_ckpt.get("history", [])))  # fmt: skip
        logger.info("resumed %s at epoch %d, step %d", last_path, state.epoch, state.step)

    step_file = step_writer = tb = None
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            removed = _clear_run(out)
            if removed:
                logger.info("--overwrite: removed the earlier run's %s from %s", ", ".join(removed), out)
        write_args_yaml(out / "args.yaml", cfg, task)
        step_file = open(out / "steps.csv", "a" if resume_ckpt is not None else "w", newline="")  # noqa: SIM115
        step_writer = csv.DictWriter(step_file, fieldnames=["step", "epoch", "loss", "lr"], extrasaction="ignore")
        if resume_ckpt is None:
            step_writer.writeheader()
        tb = _open_tensorboard(out)
        logger.info("training %s on %d samples (%d validation) on %s%s", task.kind, len(train_ds),
                    len(val_ds) if val_ds is not None else 0, device,
                    f", {di.world_size} processes" if di.enabled else "")  # fmt: skip

    stopped_early = False
    try:
        while state.epoch < cfg.epochs and (cfg.max_steps is None or state.step < cfg.max_steps):
            train_ds.set_epoch(state.epoch)
            if isinstance(train_loader.sampler, torch.utils.data.distributed.DistributedSampler):
                train_loader.sampler.set_epoch(state.epoch)
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": state.epoch + 1}
            row.update(train_one_epoch(task, model, train_loader, optimizer, scheduler, scaler, device, cfg, state,
                                       step_writer, tb))  # fmt: skip
            state.epoch += 1
            row["step"] = state.step
            row["lr"] = scheduler.get_last_lr()[0]
            stop = torch.zeros(1, device=device)
            if di.is_main:
                metrics, first = validate(task, task.model, val_loader, device, cfg.amp) if val_loader else ({}, None)
                row.update({f"val_{k}" if not k.startswith("val_") else k: v for k, v in metrics.items()
                            if isinstance(v, (int, float))})  # fmt: skip
                row["epoch_s"] = time.perf_counter() - t0
                value = metrics.get(task.primary_metric)
                improved = _improved(value, state.best_metric, task.higher_is_better)
                if improved:
                    state.best_metric, state.bad_epochs = float(value), 0
                elif val_loader is not None:
                    state.bad_epochs += 1
                state.history.append(row)
                save_checkpoint(last_path, task, cfg, state.to_dict(), optimizer, scheduler, scaler)
                if improved or val_loader is None:
                    save_checkpoint(best_path, task, cfg, state.to_dict(), optimizer, scheduler, scaler)
                _append_log(out / "log.csv", row)
                if tb is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                            tb.add_scalar(k.replace("_", "/", 1), v, state.step)
                if cfg.plots:
                    train_plots.plot_history(state.history, out / "loss.png", task.primary_metric)
                    if metrics:
                        train_plots.plot_pck(metrics, out / "pck.png")
                    if first is not None:
                        train_plots.plot_predictions(task, first[0], first[1], out / "predictions.png")
                logger.info("epoch %d step %d: train loss %.4g, val %s %s", state.epoch, state.step,
                            row.get("train_loss", float("nan")), task.primary_metric,
                            "n/a" if value is None else f"{value:.4g}")  # fmt: skip
                if cfg.patience and state.bad_epochs >= cfg.patience:
                    logger.info("early stopping: no better %s for %d epochs", task.primary_metric, cfg.patience)
                    stop[0] = 1.0
            if di.enabled:
                dist.broadcast(stop, src=0)
            if bool(stop[0] > 0):
                stopped_early = True
                break
    finally:
        if step_file is not None:
            step_file.close()
        if tb is not None:
            tb.close()
        if di.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    return TrainResult(
        out=out, last_checkpoint=last_path, best_checkpoint=best_path if best_path.is_file() else None,
        best_metric=state.best_metric, metric_name=task.primary_metric, epochs_run=state.epoch, steps=state.step,
        stopped_early=stopped_early, history=state.history,
    )  # fmt: skip


def _append_log(path: Path, row: dict[str, Any]) -> None:
    """Append an epoch row to ``log.csv`` (rewritten whole when new columns appear)."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: v for k, v in row.items()})
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]

    def _write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, _write)
