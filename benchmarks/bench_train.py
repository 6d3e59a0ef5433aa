"""Training throughput of the four trainable models, and of the data loader feeding them.

Run: ``.venv/bin/python benchmarks/bench_train.py [--device cpu|cuda|both] [--labels DIR] [--threads 1]``
(``--models cpm,unet,mano,lift`` picks models; ``--tiny`` uses the test-size ones;
``--set MODEL:KEY=VALUE`` changes one model's config, e.g. ``--set unet:heatmap_stride=4``).

For each model, at its real (default) size unless ``--tiny``:
    - *loader*: samples/s of the training DataLoader alone (augmentation on: rotation, scale,
      shift, flip, colour, blur, background replacement), ``--workers`` processes;
    - *train step*: samples/s of forward + loss + backward + AdamW step on batches already in
      device memory (the model's own speed; AMP on CUDA), median over ``--steps`` timed steps
      after ``--warmup`` steps;
    - *end to end*: samples/s of the same steps fed by the loader (what a run sees).

Without ``--labels`` a toy FreiHAND-layout folder (224x224 drawn hands, toy hand model, see
``handanno.models.toy_labels_io``) is made in a temporary folder. Results go to the log and,
with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handanno.cli import parse_sets  # noqa: E402
from handanno.data.augment import AugmentConfig  # noqa: E402
from handanno.data.datasets import DataConfig, HandCropDataset  # noqa: E402
from handanno.handmodel.mano import ManoLayer  # noqa: E402
from handanno.models.evaluate import autocast  # noqa: E402
from handanno.models.nets import make_task  # noqa: E402
from handanno.models.toy_labels_io import make_toy_labels, toy_hand_model  # noqa: E402

log = logging.getLogger("bench_train")

TINY = {
    "cpm": dict(width=0.125, crop_size=64),
    "unet": dict(base_channels=8, crop_size=64, depth=3),
    "lift": dict(width=0.125),
    "mano": dict(width=8, crop_size=64, hidden=64),
}


def _hand_layers():
    try:
        from handanno.handmodel.model_io import load_hand_model

        return {s: ManoLayer(load_hand_model(s)) for s in ("right", "left")}, "open hand model"
    except Exception as exc:  # noqa: BLE001 - the shipped model may be missing in a development tree
        log.info("hand model not available (%s); using the toy hand model", exc)
        return {s: ManoLayer(toy_hand_model(s)) for s in ("right", "left")}, "toy hand model"


def bench_loader(ds: HandCropDataset, batch_size: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)  # fmt: skip
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not counted
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += len(b["uv"])
    return n / (time.perf_counter() - t0)


def bench_steps(task, batch, device, steps: int, warmup: int) -> float:
    model = task.model.to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    batch = {k: v.to(device) for k, v in batch.items()}
    B = len(batch["uv"])
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device, True):
            out = task.forward(model, batch, train=True)
        loss, _ = task.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return B / statistics.median(times)


def bench_end_to_end(task, ds, device, batch_size: int, workers: int, steps: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
    model = task.model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(loader)
    n, t0 = 0, None
    for i in range(steps + 1):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, True):
            out = task.forward(model, batch, train=True)
        loss, _ = task.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i == 0:
            t0 = time.perf_counter()  # the first step (worker start-up, warm-up) is not counted
        else:
            n += len(batch["uv"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "both"])
    p.add_argument("--labels", default=None, help="FreiHAND-layout folder (default: a toy one)")
    p.add_argument("--models", default="cpm,unet,mano,lift")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=8)
    p.add_argument("--samples", type=int, default=64, help="toy folder size")
    p.add_argument("--tiny", action="store_true", help="the tiny test-size models instead of the real ones")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    p.add_argument("--loader-only", action="store_true", help="measure the data loader only")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="MODEL:KEY=VALUE",
                   help="model config field for one model, e.g. unet:heatmap_stride=4 (repeatable)")  # fmt: skip
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")

    tmp = tempfile.TemporaryDirectory()
    labels = args.labels
    if labels is None:
        t0 = time.perf_counter()
        labels = str(make_toy_labels(Path(tmp.name) / "toy", args.samples, 224, seed=0, hand_model=toy_hand_model()))
        log.info("toy labels: %d samples in %.1f s", args.samples, time.perf_counter() - t0)
    layers, layer_name = _hand_layers()
    results = {"machine": platform.platform(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "labels": "toy" if args.labels is None else labels, "batch_size": args.batch_size,
               "workers": args.workers, "tiny": args.tiny, "hand_model": layer_name, "models": {}}  # fmt: skip
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
    for kind in args.models.split(","):
        overrides = parse_sets(tuple(kv.split(":", 1)[1] for kv in args.sets if kv.startswith(kind + ":")))
        config = (TINY[kind] if args.tiny else {}) | overrides
        task = make_task(kind, config or None, **({"hand_layers": layers} if kind == "mano" else {}))
        n_params = sum(p.numel() for p in task.model.parameters())
        dcfg = task.data_config(DataConfig(augment=AugmentConfig()))
        ds = HandCropDataset([labels], dcfg, train=True)
        row = {"config": dataclasses.asdict(task.config), "params": n_params}
        row["loader_samples_per_s"] = bench_loader(ds, args.batch_size, args.workers, args.loader_batches)
        batch = torch.utils.data.default_collate([ds[i % len(ds)] for i in range(args.batch_size)])
        for dev_name in [] if args.loader_only else devices:
            device = torch.device(dev_name)
            task.to(device)
            row[f"{dev_name}_train_samples_per_s"] = bench_steps(task, batch, device, args.steps, args.warmup)
            row[f"{dev_name}_end_to_end_samples_per_s"] = bench_end_to_end(task, ds, device, args.batch_size,
                                                                           args.workers, args.steps)  # fmt: skip
            task.to(torch.device("cpu"))
        results["models"][kind] = row
        rates = ", ".join(
            f"{k.replace('_samples_per_s', '')} {v:.1f}/s" for k, v in row.items() if k.endswith("_per_s")
        )
        log.info("%-5s %6.1fM params, crop %s: %s", kind, n_params / 1e6, getattr(task.config, "crop_size", "-"), rates)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
