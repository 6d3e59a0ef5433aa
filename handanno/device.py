"""Choosing the torch device: CUDA when present and asked for, the CPU otherwise."""

from __future__ import annotations

import torch

from handanno.errors import HandannoError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a torch device.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise; asking for CUDA on
    a machine without it is an error that says so.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HandannoError(
            f"--device {name} was asked for, but torch sees no CUDA device here; use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise HandannoError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says, else ``"unknown"``.

    For the machine line the benchmarks print with their figures.
    """
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
