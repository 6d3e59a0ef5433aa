"""handanno's open hand model: a procedurally generated hand in MANO's format, and its files.

``python -m handanno.handmodel.open_hand --out handanno/assets`` writes
``open_hand_right.pkl`` and ``open_hand_left.pkl`` (:func:`write_assets`); generation is
deterministic (the same arrays, bit for bit, on the same platform). The right hand is built
from the skeleton, surface, skinning and pose modules of this package; its vertices are
permuted at the end so that the fingertips sit at MANO's indices
(:data:`handanno.data.conventions.TIP_VERTEX_IDS`); the left hand is its mirror image
(:func:`mirror_model`).

Convention:
    MANO's keys, shapes and kinematic tree; metres; the frame of
    :mod:`handanno.handmodel.open_hand`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import pickle
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from handanno.data.conventions import MANO_PARENTS, NUM_MANO_JOINTS, NUM_VERTS, TIP_VERTEX_IDS
from handanno.handmodel.open_hand.poses import pose_space
from handanno.handmodel.open_hand.skeleton import FINGERS, MIRROR, MIRROR_AXIS_ANGLE, skeleton
from handanno.handmodel.open_hand.skinning import joint_regressor, skinning_weights
from handanno.handmodel.open_hand.surface import build_surface, hand_topology, shape_directions

logger = logging.getLogger(__name__)

MODEL_NAME = "handanno-open-hand"
#: Bump when the generated geometry changes.
MODEL_VERSION = "1.0"
ASSET_FILES = {"right": "open_hand_right.pkl", "left": "open_hand_left.pkl"}
ASSET_DIR = Path(__file__).resolve().parents[2] / "assets"  # handanno/assets, where the files are shipped


# ---------------------------------------------------------------------------------------
# The model: arrays in MANO's format, the left hand, the files.
# ---------------------------------------------------------------------------------------


def _vertex_order(tips: dict) -> np.ndarray:
    """``order[k]``: construction id of final vertex k (tips at TIP_VERTEX_IDS, the rest in construction order)."""
    order = -np.ones(NUM_VERTS, dtype=np.int64)
    tip_ids = np.array([tips[f] for f in FINGERS])
    order[TIP_VERTEX_IDS] = tip_ids
    rest = np.setdiff1d(np.arange(NUM_VERTS), tip_ids)  # sorted
    order[order < 0] = rest
    return order


def _quantise(x: np.ndarray, step: float) -> np.ndarray:
    """Round to a grid of ``step`` (so that last-bit differences of platforms rarely show)."""
    return np.round(np.asarray(x, dtype=np.float64) / step) * step


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with every entry correctly rounded (``math.fsum``), the same bits on every CPU.

    BLAS kernels sum in an order that depends on the CPU (AVX2 vs AVX-512 builds of the same
    OpenBLAS differ in the last bit), which would make the committed assets machine-dependent.

    Args:
        a: ``(M, K)``.
        b: ``(K, N)``.

    Returns:
        ``(M, N)`` float64.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.array([[math.fsum(a[i] * b[:, j]) for j in range(b.shape[1])] for i in range(a.shape[0])])


def _rows_sum_to_one(x: np.ndarray) -> np.ndarray:
    """Put the rounding error of each row's sum on its largest entry."""
    x = x.copy()
    i = np.argmax(x, axis=1)
    x[np.arange(len(x)), i] += 1.0 - x.sum(axis=1)
    return x


@lru_cache(maxsize=1)
def _right_model() -> dict:
    topo = hand_topology()
    sk = skeleton()
    verts = build_surface(sk, topo)
    weights = skinning_weights(verts, sk, topo.faces)
    jreg = joint_regressor(verts, weights, sk.joints)
    shapedirs = shape_directions(topo, verts, sk)
    mean, comps, coeffs = pose_space(sk)
    order = _vertex_order(topo.blocks.tips)
    inv = np.empty_like(order)
    inv[order] = np.arange(NUM_VERTS)
    v_template = _quantise(verts[order], 1e-8)
    J_regressor = _rows_sum_to_one(_quantise(jreg[:, order], 1e-9))
    return {
        "v_template": v_template,
        "f": inv[topo.faces].astype(np.int64),
        "J_regressor": J_regressor,
        "weights": _rows_sum_to_one(_quantise(weights[order], 1e-9)),
        "posedirs": np.zeros((NUM_VERTS, 3, 9 * (NUM_MANO_JOINTS - 1)), dtype=np.float32),
        "shapedirs": _quantise(shapedirs[order], 1e-9),
        "kintree_table": np.stack([MANO_PARENTS, np.arange(NUM_MANO_JOINTS)]).astype(np.int64),
        "J": _exact_matmul(J_regressor, v_template),
        "hands_components": _quantise(comps, 1e-9),
        "hands_mean": _quantise(mean, 1e-9),
        "hands_coeffs": _quantise(coeffs, 1e-6).astype(np.float32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "tip_vertex_ids": TIP_VERTEX_IDS.copy(),
        "model_name": MODEL_NAME,
        "version": MODEL_VERSION,
    }


def mirror_model(model: dict) -> dict:
    """The other hand: the mirror image ``x -> -x`` of a MANO-format model.

    Positions and blend-shape directions negate x; faces reverse their winding (so they
    still face outwards); axis-angle vectors (the pose mean and components) become
    ``(x, -y, -z)``, as in MANO's left hand; pose blend shapes follow
    ``R -> M R M``. Weights, regressor, tree and tip ids are unchanged.
    """
    out = dict(model)
    out["v_template"] = model["v_template"] * MIRROR
    out["J"] = model["J"] * MIRROR
    out["shapedirs"] = model["shapedirs"] * MIRROR[None, :, None]
    # posedirs[v, c, 9 j + 3 a + b] multiplies (R_j - I)[a, b]; under M = diag(m) that entry
    # becomes m_a m_b (R - I)[a, b], and the displacement's c component gets m_c.
    sign = (MIRROR[:, None, None] * MIRROR[None, :, None] * MIRROR[None, None, :]).reshape(3, 9)  # (c, 3a+b)
    out["posedirs"] = (model["posedirs"] * np.tile(sign, (1, NUM_MANO_JOINTS - 1))[None]).astype(
        model["posedirs"].dtype
    )
    out["f"] = model["f"][:, ::-1].copy()
    flip = np.tile(MIRROR_AXIS_ANGLE, NUM_MANO_JOINTS - 1)
    out["hands_mean"] = model["hands_mean"] * flip
    out["hands_components"] = model["hands_components"] * flip[None]
    return out


def generate_model(side: str = "right") -> dict:
    """The open hand model for ``side`` as a MANO-format dict of plain numpy arrays (and strings).

    Keys: MANO's (``v_template (778, 3)`` m, ``f (1552, 3)``, ``J_regressor (16, 778)``,
    ``weights (778, 16)``, ``posedirs (778, 3, 135)`` (zeros, float32), ``shapedirs
    (778, 3, 10)``, ``kintree_table (2, 16)``, ``J (16, 3)``, ``hands_components
    (45, 45)``, ``hands_mean (45,)``, ``hands_coeffs (1554, 45)`` float32, ``bs_style``,
    ``bs_type``) plus ``tip_vertex_ids (5,)``, ``model_name`` and ``version``.
    Deterministic: the same arrays on every call (the right hand is computed once per
    process, in a few seconds).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    right = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in _right_model().items()}
    return right if side == "right" else mirror_model(right)


def model_digest(model: dict) -> str:
    """SHA-256 over every key, dtype, shape and the bytes of every array (hex)."""
    h = hashlib.sha256()
    for k in sorted(model):
        v = np.asarray(model[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(np.ascontiguousarray(v).tobytes() if v.dtype.kind != "U" else str(v).encode())
    return h.hexdigest()


def write_assets(out_dir: str | Path) -> list[Path]:
    """Generate both hands and write ``open_hand_{right,left}.pkl`` into ``out_dir`` (atomically)."""
    from handanno.data.files_io import atomic_write

    paths = []
    for side in ("right", "left"):
        model = generate_model(side)
        path = Path(out_dir) / ASSET_FILES[side]

        def write(p: Path, model: dict = model) -> None:
            with p.open("wb") as fh:
                pickle.dump(model, fh, protocol=4)
            p.chmod(0o644)

        paths.append(atomic_write(path, write))
        logger.info("wrote %s (%s hand, sha256 %s)", path, side, model_digest(model)[:16])
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m handanno.handmodel.open_hand --out handanno/assets``: regenerate the shipped model files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        default=str(ASSET_DIR),
        help="folder for open_hand_right.pkl and open_hand_left.pkl (default: handanno/assets)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_assets(args.out)
