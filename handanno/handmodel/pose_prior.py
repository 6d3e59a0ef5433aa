"""Articulation priors from statistics of hand postures: the model's own, or a generator's.

A prior here is a Gaussian over the 45 articulation numbers (axis-angle relative to
``hands_mean``, MANO joint order), kept as its mean, principal directions and standard
deviations (:class:`PoseStatistics`), which is what
:func:`handanno.annotate.losses.pose_prior_loss` takes.

Where the statistics come from:

- :func:`model_statistics`: the hand model's own pose PCA. MANO's files carry
  ``hands_components`` and ``hands_coeffs``, the coordinates of its 1,554 registered scans of
  real hands in that basis (Romero et al., "Embodied Hands", SIGGRAPH Asia 2017); handanno's
  open model carries the same keys, made from its own synthetic distribution
  (:func:`handanno.handmodel.open_hand.poses.sample_articulations`). The loader keeps
  ``hands_components`` but not the coefficients, so they are read again from the model's file
  (the file the layer was loaded from, e.g. by ``--model-dir``; else ``$HANDANNO_MODEL_DIR`` or
  the open model's asset), matched by ``hands_mean``.
- :func:`generator_statistics`: postures of :mod:`handanno.handmodel.articulations` (by default the
  ``realistic`` generator, whose ranges come from the hand-kinematics literature), posed on the
  model's own anatomical axes; cheap (about 0.3 s, once per process and model) and deterministic.

Both are widened by ``min_std_rad`` in every direction (the covariance plus ``min_std_rad^2``
times the identity), so that a direction the samples hardly use (a finger's twist, for the
open model's distribution) is improbable but not forbidden.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handanno.check import check_shape
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

#: A direction no sample uses still gets this standard deviation, radians (see the module docstring).
MIN_STD_RAD = 0.1


@dataclass(frozen=True)
class PoseStatistics:
    """A Gaussian over the 45 articulation numbers (relative to ``hands_mean``), radians.

    Attributes:
        mean: ``(45,)``.
        components: ``(45, 45)`` orthonormal rows, by decreasing variance.
        stddev: ``(45,)`` the standard deviation along each row.
        source: where the statistics came from (for logs and reports).
        num_samples: how many postures they were estimated from.
    """

    mean: np.ndarray
    components: np.ndarray
    stddev: np.ndarray
    source: str
    num_samples: int


def gaussian_from_samples(samples: np.ndarray, source: str, min_std_rad: float = MIN_STD_RAD) -> PoseStatistics:
    """Mean and covariance (widened by ``min_std_rad``) of ``samples (N, 45)``, as a :class:`PoseStatistics`.

    Example:
        >>> x = np.random.default_rng(0).normal(scale=[0.5] + [0.0] * 44, size=(4000, 45))
        >>> st = gaussian_from_samples(x, "test", min_std_rad=0.1)
        >>> round(float(st.stddev[0]), 2), round(float(st.stddev[-1]), 2)
        (0.51, 0.1)
    """
    X = np.asarray(samples, np.float64)
    check_shape(X, ("N", 45), "samples")
    if len(X) < 2:
        raise HandannoError(f"pose statistics need at least 2 samples, got {len(X)}")
    mean = X.mean(0)
    cov = np.cov(X, rowvar=False) + min_std_rad**2 * np.eye(45)
    vals, vecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(vals)[::-1]
    return PoseStatistics(mean, vecs[:, order].T.copy(), np.sqrt(np.maximum(vals[order], 0.0)), source, len(X))


def statistics_from_pca(hands_components: np.ndarray, hands_coeffs: np.ndarray, source: str,
                        min_std_rad: float = MIN_STD_RAD) -> PoseStatistics:  # fmt: skip
    """:class:`PoseStatistics` of a MANO-style pose PCA: the samples are ``hands_coeffs @ hands_components``.

    Args:
        hands_components: ``(K, 45)`` principal directions (rows).
        hands_coeffs: ``(N, K)`` each sample's coordinates (articulation minus ``hands_mean``).
        source: a description for logs.
        min_std_rad: see :func:`gaussian_from_samples`.
    """
    comps = np.asarray(hands_components, np.float64)
    coeffs = np.asarray(hands_coeffs, np.float64)
    check_shape(comps, ("K", 45), "hands_components")
    check_shape(coeffs, ("N", comps.shape[0]), "hands_coeffs")
    return gaussian_from_samples(coeffs @ comps, source, min_std_rad)


# ---------------------------------------------------------------------------------------
# The model's own statistics
# ---------------------------------------------------------------------------------------

_CACHE: dict[tuple, PoseStatistics | None] = {}


def _candidate_files(side: str, source: str | os.PathLike | None) -> list[Path]:
    from handanno.handmodel.model_io import MANO_FILES, MODEL_DIR_ENV, OPEN_MODEL_FILES

    out = [Path(source)] if source else []
    env = os.environ.get(MODEL_DIR_ENV, "").strip()
    if env:
        out.append(Path(env).expanduser() / MANO_FILES[side])
    out.append(Path(OPEN_MODEL_FILES[side]))
    return out


def model_statistics(hands_mean: np.ndarray, side: str, min_std_rad: float = MIN_STD_RAD,
                     source: str | os.PathLike | None = None) -> PoseStatistics | None:  # fmt: skip
    """The pose statistics of the model whose ``hands_mean`` this is, or None where its file has none.

    Looks for a model file (``source``: the file the layer was loaded from, e.g. by
    ``--model-dir``; then ``$HANDANNO_MODEL_DIR``, the open model) with this ``hands_mean`` (to
    1e-6 rad) and ``hands_components`` and ``hands_coeffs``; the result is cached per process.

    Args:
        hands_mean: ``(45,)`` the layer's mean articulation.
        side: ``"right"`` or ``"left"``.
        min_std_rad: see :func:`gaussian_from_samples`.
        source: the model's own file (:attr:`handanno.handmodel.mano.ManoLayer.source`), or None.
    """
    from handanno.handmodel.model_io import read_model_pickle

    hm = np.asarray(hands_mean, np.float64).reshape(45)
    key = ("model", side, hm.round(6).tobytes(), min_std_rad, str(source or ""))
    if key in _CACHE:
        return _CACHE[key]
    found = None
    for path in _candidate_files(side, source):
        if not path.is_file():
            continue
        try:
            d = read_model_pickle(path)
        except HandannoError as exc:
            log.debug("pose statistics: %s unreadable (%s)", path, exc)
            continue
        if "hands_coeffs" not in d or "hands_mean" not in d or "hands_components" not in d:
            continue
        if np.asarray(d["hands_mean"]).shape != (45,) or np.abs(np.asarray(d["hands_mean"]) - hm).max() > 1e-6:
            continue
        found = statistics_from_pca(d["hands_components"], d["hands_coeffs"], f"hands_coeffs of {path}", min_std_rad)
        break
    if found is None:
        log.info("pose statistics: no model file with hands_coeffs matches this model's hands_mean")
    _CACHE[key] = found
    return found


# ---------------------------------------------------------------------------------------
# A generator's statistics
# ---------------------------------------------------------------------------------------

GENERATOR_SESSIONS = 128
GENERATOR_FRAMES = 16
GENERATOR_SEED = 20240620


def generator_statistics(layer, postures: str = "realistic", min_std_rad: float = MIN_STD_RAD,
                         sessions: int = GENERATOR_SESSIONS, frames: int = GENERATOR_FRAMES,
                         seed: int = GENERATOR_SEED) -> PoseStatistics:  # fmt: skip
    """Pose statistics of :mod:`handanno.handmodel.articulations`' ``postures`` generator on ``layer``'s mean hand.

    ``sessions`` independent sessions of ``frames`` frames 1 s apart (:func:`handanno.handmodel.articulations.
    sample_articulations`), articulations on the anatomical axes of the model's flat mean-shape
    hand, relative to ``hands_mean``. Deterministic; cached per process.

    Args:
        layer: a :class:`handanno.handmodel.mano.ManoLayer`.
        postures: ``"realistic"`` or ``"anatomical"``.
        min_std_rad: see :func:`gaussian_from_samples`.
        sessions: independent sessions drawn.
        frames: frames drawn from each.
        seed: the sample's seed.
    """
    from handanno.handmodel.articulations import sample_articulations
    from handanno.handmodel.hand_axes import hand_axes

    hm = layer.pose_mean[3:].detach().double().cpu().numpy()
    skeleton = layer.J_template.detach().double().cpu().numpy().round(6).tobytes()
    key = ("generator", postures, layer.side, hm.round(6).tobytes(), skeleton, min_std_rad, sessions, frames, seed)
    if key in _CACHE:
        return _CACHE[key]
    axes = hand_axes(layer.flat_keypoints(), layer.side)
    full = sample_articulations(axes, sessions, postures, seed, frames=frames)  # (N, 15, 3)
    stats = gaussian_from_samples(full.reshape(len(full), 45) - hm, f"{postures} generator "
                                  f"({sessions} sessions x {frames} frames)", min_std_rad)  # fmt: skip
    _CACHE[key] = stats
    return stats


__all__ = ["PoseStatistics", "gaussian_from_samples", "statistics_from_pca", "model_statistics",
           "generator_statistics", "MIN_STD_RAD"]  # fmt: skip
