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
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from handanno.data.datasets import HandCropDataset, split_indices
from handanno.data.files_io import atomic_write
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.models.checkpoints import (
    DEFAULT_LR,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    write_args_yaml,
)
from handanno.models.evaluate import autocast, to_device, validate
from handanno.models.nets.tasks import Task, make_task

logger = logging.getLogger(__name__)

RUN_FILES = ("last.pt", "best.pt", "log.csv", "steps.csv", "args.yaml")
"""Files that make a folder a run folder: training refuses to start anew over them unless told to."""

_RUN_PLOTS = ("loss.png", "pck.png", "predictions.png")


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
        batch = to_device(batch, device)
        with autocast(device, cfg.amp):
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
