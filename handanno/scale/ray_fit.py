"""``handanno fit --ray``: the frames of many sessions in shards, one Ray task per shard.

Per session the job runs, as Ray tasks:

1. detection shards (not with ``--detector given``): :func:`handanno.annotate.pipeline.detect_stretch`
   on each shard of frames (keypoints2d/);
2. the shape pass, one task: :func:`handanno.annotate.pipeline.fit_session_shape` (shape.json);
3. fit shards: :func:`handanno.annotate.pipeline.fit_stretch` on each shard with that shape held
   (triangulate, fit, segment, silhouette fit, quality, re-detection; fits/ and masks/);

4. once its shards are done, one task (one CPU) for the session's export (labels/), overlays
   and report.json (:func:`handanno.annotate.pipeline.finish_session`), with what the shards
   report.

Ray starts each stage of a session as soon as what it needs is done (the tasks are chained by
their results), so the sessions overlap, their exports included.

A shard is a run of consecutive frames, a whole number of the fitter's batches, so a sharded
run writes the same files as ``handanno fit`` in one process (same shape, same batches). Tasks
ask for one GPU each where the cluster has GPUs (and ``--device`` is not ``cpu``), else one
CPU. The session folders must be at the same path on every node (a shared file system); the
driver holds each session's lock for the whole job.

A task that raises or whose worker dies is retried (``max_retries``). A shard that still fails,
or one whose input is wrong (a :class:`~handanno.errors.HandannoError`: not retried), does not
stop the job: the other shards finish, each session's report.json lists the frames that failed
and why, and :class:`RayFitReport` says so (``handanno fit`` then exits with status 1).

Ray is imported only by :func:`fit_sessions_ray` and the tasks, never when this module is
imported. Fault drill (and the tests' hook): ``HANDANNO_SCALE_FAULT`` (see :func:`read_fault`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from handanno.annotate.pipeline import (
    FramesResult,
    PipelineReport,
    PipelineSettings,
    detect_stretch,
    finish_session,
    fit_session_shape,
    fit_stretch,
)
from handanno.annotate.session_io import open_session
from handanno.annotate.session_shape import SessionShape
from handanno.data.lock_io import FolderLock
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

RAY_MISSING = "Ray is not installed: pip install 'handanno[ray]' (Ray 2.9 or newer) to fit on a Ray cluster"
FAULT_ENV = "HANDANNO_SCALE_FAULT"
STAGES = ("detect", "shape", "fit")  # the stages a fault can be injected into (the report task's too: "report")


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`HandannoError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise HandannoError(RAY_MISSING) from exc
    return ray


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardFailure:
    """A task that failed for good (after its retries), and the frames it left without a result.

    Attributes:
        session: the session folder.
        stage: ``"detect"``, ``"shape"`` (its frames: the whole session), ``"fit"`` or ``"report"``.
        frames: the frames concerned.
        why: the error, one line.
    """

    session: Path
    stage: str
    frames: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class RayFitReport:
    """What a sharded job did.

    Attributes:
        reports: ``{session: its report}`` (report.json written), for every session that got one.
        failures: the tasks that failed for good.
        shard_frames: ``{session: ((frames fitted by fit shard 0), ...)}``, in shard order.
        shards: fit shards in the job.
        batch_frames: the batch size the shards fitted with.
        wall_s: the job's wall time (connecting to Ray included).
        cluster: what Ray reported: nodes, CPUs, GPUs.
    """

    reports: dict[Path, PipelineReport]
    failures: tuple[ShardFailure, ...]
    shard_frames: dict[Path, tuple[tuple[str, ...], ...]]
    shards: int
    batch_frames: int
    wall_s: float
    cluster: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No task failed for good."""
        return not self.failures

    def failure_message(self) -> str:
        """The failures, one line each, naming the session, the stage, the frames and why."""
        lines = []
        for f in self.failures:
            frames = _frame_list(f.frames)
            lines.append(f"{f.session}: {f.stage} failed for {len(f.frames)} frame(s) ({frames}): {f.why}")
        return "\n".join(lines)


def _frame_list(frames: tuple[str, ...], most: int = 8) -> str:
    if len(frames) <= most:
        return ", ".join(frames)
    return f"{', '.join(frames[:most])}, ... {frames[-1]}"


@dataclass(frozen=True)
class _Shape:
    """The shape task's result: the session's shape and the seconds the task took."""

    shape: SessionShape | None
    seconds: float


@dataclass(frozen=True)
class _Failed:
    """A task's result when its input is wrong (not retried) or what it needed failed."""

    why: str


# ----------------------------------------------------------------------------------------
# fault drill (tests' hook)
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """Make the task of ``stage`` that holds ``frame`` fail on its first ``times`` attempts.

    ``action`` ``"raise"`` raises a RuntimeError; ``"exit"`` ends the worker process at once
    (``os._exit``: what a killed worker looks like to Ray). Attempts are counted by marker
    files in ``marker_dir`` (which every node must see).
    """

    stage: str
    frame: str
    action: str = "raise"
    times: int = 1
    marker_dir: str = ""


def read_fault(environ: dict[str, str] | None = None) -> Fault | None:
    """The fault ``HANDANNO_SCALE_FAULT`` asks for: JSON with the fields of :class:`Fault`, or None.

    Example: ``HANDANNO_SCALE_FAULT='{"stage": "fit", "frame": "000004", "action": "exit",
    "times": 1, "marker_dir": "/shared/tmp/drill"}'``.
    """
    text = (os.environ if environ is None else environ).get(FAULT_ENV)
    if not text:
        return None
    try:
        fault = Fault(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"{FAULT_ENV}={text!r}: expected JSON with stage, frame, action, times, marker_dir "
                            f"({exc})") from exc  # fmt: skip
    if fault.stage not in (*STAGES, "report") or fault.action not in ("raise", "exit") or not fault.marker_dir:
        raise HandannoError(f"{FAULT_ENV}={text!r}: stage one of {', '.join(STAGES)}, action raise or exit, and a "
                            "marker_dir")  # fmt: skip
    return fault


def _maybe_fail(fault: Fault | None, stage: str, frames: tuple[str, ...]) -> None:
    if fault is None or fault.stage != stage or fault.frame not in frames:
        return
    folder = Path(fault.marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    attempt = len(list(folder.glob(f"{stage}-{fault.frame}-attempt-*"))) + 1
    (folder / f"{stage}-{fault.frame}-attempt-{attempt}").touch()
    if attempt > fault.times:
        return
    if fault.action == "exit":
        os._exit(1)
    raise RuntimeError(f"injected fault ({FAULT_ENV}): {stage} of frame {fault.frame}, attempt {attempt}")


# ----------------------------------------------------------------------------------------
# the tasks (run in Ray's workers)
# ----------------------------------------------------------------------------------------
def _in_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    # the driver already warned about the session's damaged or missing images when it opened it, and about the
    # hand model when it loads it for the report
    for name in ("handanno.annotate.session_io", "handanno.handmodel.model_io"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _task_detect(settings: PipelineSettings, start: int, stop: int, frames: tuple[str, ...], threads: int,
                 fault: Fault | None) -> dict[str, int] | _Failed:  # fmt: skip
    _in_worker(threads)
    _maybe_fail(fault, "detect", frames)
    try:
        return detect_stretch(settings, start, stop)
    except HandannoError as exc:
        return _Failed(str(exc))


def _task_shape(settings: PipelineSettings, frames: tuple[str, ...], threads: int, fault: Fault | None,
                *detected: dict[str, int] | _Failed) -> _Shape | _Failed:  # fmt: skip
    failed = [d for d in detected if isinstance(d, _Failed)]
    if failed:
        return _Failed(f"detection failed: {failed[0].why}")
    t0 = time.perf_counter()
    _in_worker(threads)
    _maybe_fail(fault, "shape", frames)
    try:
        return _Shape(fit_session_shape(settings), time.perf_counter() - t0)
    except HandannoError as exc:
        return _Failed(str(exc))


def _task_fit(settings: PipelineSettings, start: int, stop: int, frames: tuple[str, ...], shaped: _Shape | _Failed,
              count_inputs: bool, threads: int, fault: Fault | None) -> FramesResult | _Failed:  # fmt: skip
    if isinstance(shaped, _Failed):
        return _Failed(f"the shape pass failed: {shaped.why}")
    shape = shaped.shape
    if shape is not None:  # Ray hands out read-only arrays; torch warns about those
        shape = replace(shape, betas=np.array(shape.betas))
    _in_worker(threads)
    _maybe_fail(fault, "fit", frames)
    try:
        return fit_stretch(settings, start, stop, shape, count_inputs)
    except HandannoError as exc:
        return _Failed(str(exc))


def _task_report(settings: PipelineSettings, parts: list[FramesResult], shaped: _Shape | None,
                 failed: dict[str, str], started_s: float, threads: int,
                 fault: Fault | None, found: dict[str, int] | None = None) -> PipelineReport | _Failed:  # fmt: skip
    _in_worker(threads)
    _maybe_fail(fault, "report", ("*",))  # a fault for the report task names the frame "*"
    shape, seconds = (shaped.shape, shaped.seconds) if shaped is not None else (None, 0.0)
    try:
        return finish_session(settings, parts, shape, failed, started_s, {"shape": seconds}, found)
    except HandannoError as exc:
        return _Failed(str(exc))


# ----------------------------------------------------------------------------------------
# connecting
# ----------------------------------------------------------------------------------------
def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear message, when a ``HOST:PORT`` (or ``ray://HOST:PORT``) cannot be reached.

    ``None``, ``"auto"`` and ``"local"`` are not checked here (Ray finds or starts the cluster).
    """
    if address in (None, "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise HandannoError(f"--ray {address!r}: give auto (the cluster `ray start` made on this machine), local "
                            "(start Ray here for this job) or the head node's HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise HandannoError(
            f"--ray {address}: cannot reach a Ray cluster there within {timeout_s:g} s ({exc}); start one with "
            f"`ray start --head --port {port}` on {host}, or check the address and the firewall. Nothing was done"
        ) from exc


def connect(ray: Any, address: str | None, timeout_s: float = 5.0) -> None:
    """Connect to the Ray cluster before any work.

    ``HOST:PORT`` (reachability checked first, :func:`check_address`), ``"auto"`` (the cluster
    on this machine), ``None`` or ``"local"`` (a Ray of this process's own). An existing
    connection (``ray.init`` called before) is used as it is.
    """
    check_address(address, timeout_s)
    if ray.is_initialized():
        log.info("using the Ray connection this process has already")
        return
    try:
        if address in (None, "local"):
            ray.init(include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = "check the address"
        if address == "auto":
            hint = ("start one with `ray start --head` (then workers: `ray start --address HEAD:6379`), or use "
                    "--ray local to start Ray for this job alone")
        raise HandannoError(f"--ray {address}: could not connect to a Ray cluster ({exc}); {hint}. Nothing was "
                            "done") from exc  # fmt: skip


# ----------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------
def plan_shards(num_frames: int, shard_frames: int, batch_frames: int) -> tuple[list[tuple[int, int]], int]:
    """Cut ``num_frames`` into shards of whole batches.

    A shard size that is not a multiple of the batch size is rounded up to one; a shard
    smaller than a batch makes the batch that size (such a run gives the fits of
    ``handanno fit --batch-frames SHARD``).

    Returns:
        ``([(start, stop), ...], batch_frames)``.

    Example:
        >>> plan_shards(10, 4, 64)
        ([(0, 4), (4, 8), (8, 10)], 4)
        >>> plan_shards(10, 5, 2)
        ([(0, 6), (6, 10)], 2)
    """
    if shard_frames < 1:
        raise HandannoError(f"--shard-frames {shard_frames}: need at least 1")
    batch = min(batch_frames, shard_frames)
    size = math.ceil(shard_frames / batch) * batch
    return [(a, min(a + size, num_frames)) for a in range(0, num_frames, size)], batch


@dataclass
class _SessionJob:
    settings: PipelineSettings  # what the tasks run with (one device, no progress bars, the shards' batch)
    report_settings: PipelineSettings  # what the export and the report run with (a task on one CPU)
    frames: tuple[str, ...]
    shards: list[tuple[int, int]]
    pending: int = 0
    shape: _Shape | None = None
    parts: dict[int, FramesResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)  # the detection shards' found_inputs, summed


# ----------------------------------------------------------------------------------------
# the job
# ----------------------------------------------------------------------------------------
def fit_sessions_ray(
    sessions: list[str | Path] | tuple[str | Path, ...],
    settings: PipelineSettings,
    address: str | None = "auto",
    shard_frames: int | None = None,
    max_retries: int = 2,
    connect_timeout_s: float = 5.0,
    cpus_per_task: int = 1,
) -> RayFitReport:
    """``handanno fit`` on several sessions at once, their frames in shards across a Ray cluster.

    Args:
        sessions: the session folders.
        settings: the run's settings (``settings.session`` is replaced by each session).
        address: ``"auto"`` (the cluster ``ray start`` made on this machine), ``"HOST:PORT"`` of the
            head node (checked within ``connect_timeout_s`` before any work), ``"local"`` or None
            (start Ray in this process). A Ray connection this process has already is used as it is.
        shard_frames: frames per shard (rounded up to whole batches, see :func:`plan_shards`);
            default: one batch (``settings.batch_frames``, else 64 frames on the CPU, 1024 on GPUs).
        max_retries: times a task that raises, or whose worker dies, is run again.
        connect_timeout_s: how long an unreachable address is waited for.
        cpus_per_task: CPUs each task reserves (torch's threads in it); GrabCut's thread pool
            (:mod:`handanno.annotate.segment`) uses up to 8 of the node's cores whatever this says.

    Returns:
        :class:`RayFitReport`.

    Raises:
        HandannoError: Ray missing, the cluster not reachable, a session that cannot be opened
            or is locked by another run; all before any work is done.
    """
    t0, started_s = time.perf_counter(), time.time()
    ray = import_ray()
    if not sessions:
        raise HandannoError("no session to fit")
    fault = read_fault()
    roots = [Path(s) for s in sessions]
    if len(set(map(os.path.realpath, roots))) != len(roots):
        raise HandannoError("the same session is given twice: " + ", ".join(map(str, roots)))
    opened = [open_session(root, settings.frames) for root in roots]  # errors name the session, before any work
    connect(ray, address, connect_timeout_s)
    cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    cluster["nodes"] = float(sum(1 for n in ray.nodes() if n.get("Alive")))
    use_gpu = settings.device != "cpu" and cluster.get("GPU", 0) > 0
    if settings.device.startswith("cuda") and not use_gpu:
        raise HandannoError(f"--device {settings.device}: the Ray cluster has no GPU ({cluster}); use --device auto "
                            "or cpu")  # fmt: skip
    batch = settings.batch_frames or (1024 if use_gpu else 64)
    shard_size = shard_frames or batch
    options = {"num_gpus": 1, "num_cpus": cpus_per_task} if use_gpu else {"num_cpus": cpus_per_task}
    threads = cpus_per_task
    log.info("Ray cluster: %s; tasks on %s", cluster, "one GPU each" if use_gpu else "one CPU each")

    with contextlib.ExitStack() as locks:
        jobs: list[_SessionJob] = []
        for root, session in zip(roots, opened, strict=True):
            locks.enter_context(FolderLock(root, f"handanno fit --ray (session {root})"))
            shards, shard_batch = plan_shards(len(session.frames), shard_size, batch)
            task_settings = replace(settings, session=root, progress=False, batch_frames=shard_batch,
                                    device="cuda" if use_gpu else "cpu")  # fmt: skip
            jobs.append(_SessionJob(task_settings, replace(task_settings, device="cpu"), session.frames, shards))
        if shard_size < batch:
            log.info("shards of %d frames: each fits in batches of %d (the fits of handanno fit --batch-frames %d)",
                     shard_size, shard_size, shard_size)  # fmt: skip
        return _run_job(ray, jobs, options, threads, max_retries, fault, (t0, started_s), cluster, settings.progress)


def _run_job(ray: Any, jobs: list[_SessionJob], options: dict, threads: int, max_retries: int, fault: Fault | None,
             start: tuple[float, float], cluster: dict[str, float], progress: bool) -> RayFitReport:  # fmt: skip
    def remote(fn, **kw):
        return ray.remote(fn).options(max_retries=max_retries, retry_exceptions=True, **(options | kw))

    detect_task, shape_task, fit_task = remote(_task_detect), remote(_task_shape), remote(_task_fit)
    report_task = remote(_task_report, num_gpus=0, num_cpus=1)  # export and report.json: the CPU's work
    pending: dict[Any, tuple[int, str, int]] = {}  # ref -> (job, stage, shard)
    for j, job in enumerate(jobs):
        s = job.settings
        detected = []
        if s.detector != "given":
            for k, (a, b) in enumerate(job.shards):
                detected.append(detect_task.remote(s, a, b, job.frames[a:b], threads, fault))
                pending[detected[-1]] = (j, "detect", k)
        shape = shape_task.remote(s, job.frames, threads, fault, *detected)
        pending[shape] = (j, "shape", 0)
        for k, (a, b) in enumerate(job.shards):
            ref = fit_task.remote(s, a, b, job.frames[a:b], shape, s.detector == "given", threads, fault)
            pending[ref] = (j, "fit", k)
        job.pending = len(job.shards) * (1 + (s.detector != "given")) + 1

    failures: list[ShardFailure] = []
    reports: dict[Path, PipelineReport] = {}
    total = sum(len(job.frames) for job in jobs)
    n_shards = sum(len(job.shards) for job in jobs)
    bar = tqdm(total=total, desc=f"fit ({n_shards} shards on Ray)", unit="frame", disable=not progress)
    done = dict.fromkeys((*STAGES, "report"), 0)
    with bar:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            j, stage, k = pending.pop(ref)
            job = jobs[j]
            a, b = job.shards[k]
            frames = job.frames[a:b] if stage in ("detect", "fit") else job.frames
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as exc:
                value = _Failed(_why(exc))
            if isinstance(value, _Failed):
                failures.append(ShardFailure(job.settings.session, stage, () if stage == "report" else frames,
                                             value.why))  # fmt: skip
                if stage in ("detect", "fit"):  # a failed shape pass: its fit shards fail and name their frames
                    for f in frames:
                        job.failed.setdefault(f, f"{stage}: {value.why}")
                log.warning("%s: %s failed for frame(s) %s: %s", job.settings.session, stage, _frame_list(frames),
                            value.why)  # fmt: skip
            elif stage == "detect":
                for key, n in value.items():
                    job.found[key] = job.found.get(key, 0) + n
            elif stage == "shape":
                job.shape = value
            elif stage == "fit":
                job.parts[k] = value
            elif stage == "report":
                reports[job.settings.session] = value
            done[stage] += 1
            if stage == "fit":
                bar.update(len(frames))
            bar.set_postfix(detect=done["detect"], shape=done["shape"], report=done["report"], refresh=False)
            job.pending -= 1
            if job.pending == 0 and stage != "report":  # the session's shards are done: its export and report
                parts = [job.parts[i] for i in sorted(job.parts)]
                ref = report_task.remote(job.report_settings, parts, job.shape, job.failed, start[1], threads, fault,
                                         job.found)  # fmt: skip
                pending[ref], job.pending = (j, "report", 0), 1
    shard_frames = {job.settings.session: tuple(tuple(job.parts[k].records) if k in job.parts else ()
                                                for k in range(len(job.shards))) for job in jobs}  # fmt: skip
    return RayFitReport(reports=reports, failures=tuple(failures), shard_frames=shard_frames, shards=n_shards,
                        batch_frames=jobs[0].settings.batch_frames or 0, wall_s=time.perf_counter() - start[0],
                        cluster=cluster)  # fmt: skip


def _why(exc: Exception) -> str:
    """One line for a task's failure: the original error's type and message (not Ray's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return " ".join(text.split())[:500]
