"""``handanno bootstrap``: rounds of fit, train the detector on the fits, detect again, refit.

Multiview bootstrapping (Simon et al., CVPR 2017), with the hand-model fit instead of plain
triangulation as the teacher (it knows bone lengths, joint limits and silhouettes):

- **round 0**: detect with the seed detector (``init``: MediaPipe, or the heatmap network of
  ``weights`` / the shipped one), fit (:func:`handanno.annotate.pipeline.run_pipeline`);
- **round k**: (a) training labels from the *accepted* frames in every view, also views
  where nothing was detected, each keypoint marked seen or not from the fitted mesh
  (:class:`handanno.bootstrap.visibility.MeshVisibility`; hidden or outside keypoints are
  not trained on); (b) fine-tune the heatmap network (warm start from the last round's, or
  ``weights`` / the shipped network) on them, holding out whole frames (``val_fraction``) to
  stop before it overfits; (c) detect every view again with it, the fit's guided
  re-detection included, and refit; (d) go on while rounds progress (more frames accepted,
  or more consistent across views than every earlier round:
  :func:`handanno.bootstrap.metrics.progressed`), at most ``rounds`` rounds. The session
  then gets the best round (:func:`handanno.bootstrap.metrics.better`: most frames accepted,
  then most consistent) among those no worse than round 0 in either.

Too few accepted frames to train on (``min_frames``) is an error that changes nothing, with
one exception: when MediaPipe seeded round 0, round 1 detects with the starting network as
it is (it has not looked at the session yet, so its detections are new evidence) and refits.

Guards against training on its own mistakes: only accepted frames are labels (every check
of :class:`handanno.annotate.quality.AcceptSettings`, including the gap to the triangulation
and the masks: a wrong detection confirmed by the fit in two views must still match the
silhouettes and the anatomy); only keypoints the mesh shows are trained on; frames are held
out for early stopping; and the session ends with the best round's keypoints and fits,
never with a round whose accepted frames or multi-view consistency are worse than round 0's.

The run folder ``out`` keeps each round in ``round_K/`` (``metrics.json``, written last,
marks the round finished; ``keypoints2d/``, ``fits/``, ``labels/`` and the network's
``train/best.pt``) and ``bootstrap.json`` (settings and table). An interrupted bootstrap
resumes after its last finished round: the session's keypoints and fits are put back as
that round left them. Keypoints the user brought (any source that is not a handanno
detector) are never overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from handanno.annotate.fit_mano import FitSettings
from handanno.annotate.pipeline import PipelineSettings, run_pipeline
from handanno.annotate.quality import AcceptSettings
from handanno.annotate.session_io import (
    Session,
    keypoints_made_by_handanno,
    mask_made_by_handanno,
    open_session,
    readable_fit,
)
from handanno.annotate.session_shape import SHAPE_FILE
from handanno.bootstrap.guided import detect_around_fits
from handanno.bootstrap.metrics import better, progressed, round_metrics
from handanno.bootstrap.visibility import MeshVisibility
from handanno.data.files_io import read_json, write_json
from handanno.data.lock_io import FolderLock
from handanno.data.review_io import read_review
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.models.checkpoints import shipped_detector_weights

log = logging.getLogger(__name__)

INITS = ("mediapipe", "cpm")

# The acceptance of the rounds' fits (their frames are the training labels): handanno fit's,
# but a view may disagree with the fit by up to 10 % of the hand's size (fit: 5 %). A detector
# that is still learning errs in a few views of good frames; those are the views the
# bootstrap is there to fix, and the fit is judged by the masks, the gap to the
# triangulation and the anatomy. Measured on a synthetic capture read by a partly trained
# network: frames within 1.2-1.5 mm of the truth failed the 5 % bound (2nd-worst view 6-9 %),
# while the frames over 7 mm off failed the mask IoU or the joint limits.
BOOTSTRAP_ACCEPT = AcceptSettings(max_view_reproj_rel=0.10)
TABLE_KEYS = ("views_found", "consistency_px", "frames_accepted", "fit_reproj_px", "fit_mask_iou", "epe_px",
              "epe_median_px", "mpjpe_mm", "pa_mpvpe_mm")  # fmt: skip


@dataclass(frozen=True)
class BootstrapSettings:
    """Everything ``handanno bootstrap`` needs.

    Attributes:
        session: the session folder.
        out: the run folder (default ``SESSION/bootstrap``).
        rounds: most training rounds after round 0.
        init: the seed detector, ``mediapipe`` or ``cpm``.
        weights: the heatmap network to start from (``cpm`` or ``unet`` checkpoint); None:
            the network shipped with handanno.
        min_frames: fewest accepted frames to train on (some are held out).
        val_fraction: share of the accepted frames held out to stop training.
        epochs: most epochs of fine-tuning per round (early stopping ends it sooner).
        patience: epochs without a better held-out score before a round's training stops.
        lr: peak learning rate of the fine-tuning.
        batch_size: crops per step.
        workers: data loader processes (0: in the main process).
        device: ``auto | cpu | cuda``.
        accept: which fits are labels (:data:`BOOTSTRAP_ACCEPT`).
        hand, model_dir, silhouette, fit, batch_frames: as ``handanno fit``.
        progress: progress bars.
    """

    session: Path
    out: Path | None = None
    rounds: int = 3
    init: str = "mediapipe"
    weights: Path | None = None
    min_frames: int = 5
    val_fraction: float = 0.2
    epochs: int = 8
    patience: int = 3
    lr: float = 3e-4
    batch_size: int = 16
    workers: int = 0
    device: str = "auto"
    hand: str = "right"
    model_dir: Path | None = None
    silhouette: bool = True
    accept: AcceptSettings = BOOTSTRAP_ACCEPT
    fit: FitSettings = field(default_factory=FitSettings)
    batch_frames: int | None = None
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        """Where the rounds are kept."""
        return Path(self.out) if self.out is not None else Path(self.session) / "bootstrap"


@dataclass(frozen=True)
class BootstrapReport:
    """What a bootstrap did: one metrics row per round, the round the session ends with."""

    rows: list[dict]
    best_round: int
    stopped: str  # why the loop ended
    run_dir: Path
    labels_written: int
    seconds: float


def run_bootstrap(settings: BootstrapSettings) -> BootstrapReport:
    """Run the rounds of the module docstring on a session; see :class:`BootstrapSettings`.

    Raises:
        HandannoError: a bad setting, no starting network, too few accepted frames to train
            on (nothing in the session is changed by that round), or a session in use.
    """
    s = settings
    if s.init not in INITS:
        raise HandannoError(f"--init {s.init!r}: choose one of {', '.join(INITS)}")
    if s.rounds < 0:
        raise HandannoError("--rounds must be >= 0")
    weights = Path(s.weights) if s.weights is not None else shipped_detector_weights()
    if weights is None or not Path(weights).is_file():
        raise HandannoError(f"{weights}: no heatmap network to start from; give --weights CKPT (a cpm or unet "
                            "checkpoint from `handanno train`)")  # fmt: skip
    if not Path(s.session).is_dir():
        raise HandannoError(f"session folder {s.session} does not exist")
    t0 = time.perf_counter()
    run = s.run_dir
    run.mkdir(parents=True, exist_ok=True)
    model = load_hand_model(s.hand, s.model_dir)
    layer = ManoLayer(model).to(resolve_device(s.device))
    visibility = MeshVisibility(model.faces, model.weights)

    rows = _finished_rounds(run)
    if rows:
        log.info("bootstrap: resuming after round %d (%s)", len(rows) - 1, run)
        _restore(run / f"round_{len(rows) - 1}", s.session)
    else:
        _round_zero(s, weights, layer, run)
        rows = _finished_rounds(run)
    stopped = f"after {s.rounds} round(s)"
    for k in range(len(rows), s.rounds + 1):
        if k > 1 and not progressed(rows[k - 1], rows[: k - 1]):
            stopped = f"round {k - 1} improved neither accepted frames nor consistency"
            break
        warm = _network(run, k - 1) or weights  # the last round's network, which progressed
        row = _train_round(s, k, warm, layer, visibility, run)
        rows.append(row)
        _table(rows)
    else:
        if len(rows) > 1 and not progressed(rows[-1], rows[:-1]):
            stopped = f"round {len(rows) - 1} improved neither accepted frames nor consistency"
    best = _best_round(rows)
    _restore(_round_dir(run, best), s.session)
    labels = _export(s, layer)
    write_json(run / "bootstrap.json", {"settings": _settings_dict(s), "rows": rows, "best_round": best,
                                        "stopped": stopped}, indent=1)  # fmt: skip
    log.info("bootstrap: %s; the session has round %d's keypoints and fits", stopped, best)
    return BootstrapReport(rows, best, stopped, run, labels, time.perf_counter() - t0)


# --------------------------------------------------------------------------- rounds


def _round_dir(run: Path, k: int) -> Path:
    return run / f"round_{k}"


def _network(run: Path, k: int) -> Path | None:
    """Round ``k``'s fine-tuned network, or None (round 0, or a round that did not train)."""
    p = _round_dir(run, k) / "train" / "best.pt"
    return p if k > 0 and p.is_file() else None


def _finished_rounds(run: Path) -> list[dict]:
    """Metrics rows of rounds 0, 1, ... that finished (their ``metrics.json`` exists), in order."""
    rows = []
    while (p := _round_dir(run, len(rows)) / "metrics.json").is_file():
        rows.append(read_json(p))
    return rows


def _pipeline(s: BootstrapSettings, **kw) -> PipelineSettings:
    return PipelineSettings(session=Path(s.session), model_dir=s.model_dir, hand=s.hand, device=s.device,
                            silhouette=s.silhouette, export=False, accept=s.accept, fit=s.fit,
                            batch_frames=s.batch_frames, progress=s.progress, **kw)  # fmt: skip


def _round_zero(s: BootstrapSettings, weights: Path, layer: ManoLayer, run: Path) -> None:
    """Detect with the seed detector (keeping detections already there) and fit; keep the round."""
    cpm = {"detector": "cpm", "detector_weights": weights} if s.init == "cpm" else {"detector": "mediapipe"}
    report = run_pipeline(_pipeline(s, **cpm))
    log.info("bootstrap round 0: %d of %d frames accepted", report.frames_accepted, report.frames_total)
    _keep_round(s, _round_dir(run, 0), layer)


def _train_round(
    s: BootstrapSettings, k: int, warm: Path, layer: ManoLayer, visibility: MeshVisibility, run: Path
) -> dict:
    """Round ``k``: labels from the accepted fits, fine-tune from ``warm``, detect again, refit; its row."""
    from handanno.annotate.export_freihand import export_session
    from handanno.models.checkpoints import TrainConfig, load_task
    from handanno.models.train import main as train

    rd = _round_dir(run, k)
    session = open_session(s.session)
    accepted = _accepted_frames(session)
    if len(accepted) < s.min_frames:
        too_few = (f"{s.session}: {len(accepted)} accepted frame(s) to train on, {s.min_frames} needed (some are "
                   "held out)")  # fmt: skip
        if not (k == 1 and s.init == "mediapipe"):
            raise HandannoError(f"{too_few}; fit more frames, or relax the acceptance (handanno fit --help); nothing "
                                "was changed by this round")  # fmt: skip
        # MediaPipe found too little to teach: the starting network has not looked at this
        # session yet, so this round detects with it as it is and refits
        log.warning("%s: round 1 detects with the starting network %s as it is, without fine-tuning", too_few, warm)
        _detect_and_refit(s, warm)
        return _keep_round(s, rd, layer, trained_frames=0)
    labels = rd / "labels"
    export_session(session, layer, source="fits", out_dir=labels, only_accepted=True, progress=s.progress,
                   visibility=visibility)  # fmt: skip
    task, ckpt = load_task(warm, resolve_device(s.device), expected_kind=("cpm", "unet"))
    out = rd / "train"
    resume = (out / "last.pt").is_file()
    cfg = TrainConfig(model=ckpt["kind"], labels=(str(labels),), out=str(out), val_fraction=s.val_fraction,
                      epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, device=s.device, workers=s.workers,
                      patience=s.patience, resume=resume, overwrite=not resume and out.exists(), seed=k,
                      plots=False, model_config=dict(ckpt["model_config"]))  # fmt: skip
    result = train(cfg, task=None if resume else task)
    best = result.best_checkpoint or result.last_checkpoint
    log.info("bootstrap round %d: network trained on %d accepted frames (%d epochs), best %s %.4g", k,
             len(accepted), result.epochs_run, result.metric_name, result.best_metric or float("nan"))  # fmt: skip
    _detect_and_refit(s, best)
    return _keep_round(s, rd, layer, trained_frames=len(accepted))


def _detect_and_refit(s: BootstrapSettings, weights: Path) -> None:
    """Detect every view with ``weights`` around the last round's fits (a search where a frame has none), refit all.

    The last round's fits and keypoints are kept in its folder; the session's are replaced:
    every frame and the session's shape are fitted again, and the masks handanno made are made
    again (GrabCut is seeded by the fit: a better fit, a better mask); the user's masks stay.
    """
    from handanno.annotate.detect import DetectSettings, make_box_detector

    session = open_session(s.session)
    in_box = make_box_detector(DetectSettings(detector="cpm", weights=weights, hand=s.hand, device=s.device))
    detect_around_fits(session, in_box, "cpm")
    for path in session.fits_dir.glob("*.json"):
        path.unlink()
    for path in (session.root / "masks").glob("*/*.png"):
        if mask_made_by_handanno(path):
            path.unlink()
    (session.root / SHAPE_FILE).unlink(missing_ok=True)
    run_pipeline(_pipeline(s, detector="cpm", detector_weights=weights))


def _accepted_frames(session: Session) -> list[str]:
    """Frames to train on: accepted by the thresholds, or by the reviewer, and not rejected by them (review.json)."""
    review = read_review(session.root)
    return [f for f in session.frames
            if (r := readable_fit(session.fit_path(f))) and review.keeps(f, bool(r["quality"].get("accepted")))]


def _keep_round(s: BootstrapSettings, rd: Path, layer: ManoLayer, trained_frames: int | None = None) -> dict:
    """Copy the session's keypoints and fits into ``rd``, then write its metrics row (last: the round is done)."""
    session = open_session(s.session)
    for name in ("keypoints2d", "fits"):
        if (rd / name).exists():
            shutil.rmtree(rd / name)
        if (session.root / name).is_dir():
            shutil.copytree(session.root / name, rd / name)
    row = {"round": int(rd.name.split("_")[1]), **round_metrics(session, layer)}
    if trained_frames is not None:
        row["trained_frames"] = trained_frames
    write_json(rd / "metrics.json", row)
    return row


def _restore(rd: Path, session_dir: Path) -> None:
    """Put round ``rd``'s keypoints and fits back into the session; the user's keypoint files stay untouched."""
    session_dir = Path(session_dir)
    with FolderLock(session_dir, f"handanno bootstrap --session {session_dir} (restoring {rd.name})"):
        src = rd / "keypoints2d"
        for path in sorted(src.glob("*/*.json")) if src.is_dir() else []:
            dst = session_dir / "keypoints2d" / path.parent.name / path.name
            if dst.is_file() and not keypoints_made_by_handanno(dst):
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)
        for dst in sorted((session_dir / "keypoints2d").glob("*/*.json")):  # detections the round did not have
            if not (src / dst.parent.name / dst.name).is_file() and keypoints_made_by_handanno(dst):
                dst.unlink()
        fits = session_dir / "fits"
        if fits.is_dir():
            shutil.rmtree(fits)
        if (rd / "fits").is_dir():
            shutil.copytree(rd / "fits", fits)


def _export(s: BootstrapSettings, layer: ManoLayer) -> int:
    from handanno.annotate.export_freihand import export_session

    session = open_session(s.session)
    if not any(session.fit_path(f).is_file() for f in session.frames):
        return 0
    with FolderLock(s.session, f"handanno bootstrap --session {s.session} (export)"):
        return export_session(session, layer, source="fits", progress=s.progress)


def _eligible(row: dict, first: dict) -> bool:
    """A round may end the bootstrap only if it is no worse than round 0 in accepted frames and consistency."""
    if row["frames_accepted"] < first["frames_accepted"]:
        return False
    a, b = row.get("consistency_px"), first.get("consistency_px")
    return b is None or (a is not None and a <= b)


def _best_round(rows: list[dict]) -> int:
    best = 0
    for k in range(1, len(rows)):
        if _eligible(rows[k], rows[0]) and better(rows[k], rows[best]):
            best = k
    return best


def _settings_dict(s: BootstrapSettings) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(s).items()}


def format_table(rows: list[dict]) -> str:
    """The per-round table as Markdown (a column only where some round has the value).

    Example:
        >>> print(format_table([{"round": 0, "views_found": 5, "views_total": 8, "frames_accepted": 1,
        ...                      "frames_total": 2, "consistency_px": 3.25}]))
        | round | views found | consistency px | frames accepted |
        |---|---|---|---|
        | 0 | 5/8 | 3.25 | 1/2 |
    """
    names = {"views_found": "views found", "consistency_px": "consistency px", "frames_accepted": "frames accepted",
             "fit_reproj_px": "fit reproj px", "fit_mask_iou": "fit mask IoU", "epe_px": "EPE px",
             "epe_median_px": "EPE median px", "mpjpe_mm": "MPJPE mm", "pa_mpvpe_mm": "PA-MPVPE mm"}  # fmt: skip
    keys = [k for k in TABLE_KEYS if any(r.get(k) is not None for r in rows)]

    def cell(r: dict, k: str) -> str:
        v = r.get(k)
        if v is None:
            return ""
        if k == "views_found":
            return f"{v}/{r['views_total']}"
        if k == "frames_accepted":
            return f"{v}/{r['frames_total']}"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| round | " + " | ".join(names[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + " | ".join([str(r["round"])] + [cell(r, k) for k in keys]) + " |" for r in rows]
    return "\n".join(lines)


def _table(rows: list[dict]) -> None:
    log.info("bootstrap so far:\n%s", format_table(rows))
