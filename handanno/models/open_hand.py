"""handanno's open hand model: a procedurally generated hand in MANO's format.

MANO is licensed and never shipped; this module builds an open replacement with MANO's
keys, shapes and kinematic tree, from nothing but the anatomical numbers written below, so
that every stage of handanno runs on either model. ``python -m handanno.models.open_hand
--out handanno/assets`` writes ``open_hand_right.pkl`` and ``open_hand_left.pkl``;
generation is deterministic (the same arrays, bit for bit, on the same platform).

How the surface is made (all pure functions below):

1. :func:`skeleton` places the 16 MANO joints and the 5 fingertips from
   :class:`HandShape` (adult proportions: bone lengths after published averages of
   metacarpal and phalanx lengths, in joint-centre distances).
2. :func:`hand_sdf` is an implicit surface: tapered elliptical capsules for the phalanges,
   smoothly blended (polynomial smooth-min) to a palm of metacarpal capsules, palmar pads,
   thenar and hypothenar eminences and a wrist stump cut flat.
3. :func:`hand_topology` is a fixed, hand-designed mesh connectivity (rings of vertices
   around each finger, a grid for the palm, webs, a wrist cap; genus 0, V = 778,
   F = 1552) with a rule per vertex saying where to cast a ray from; :func:`build_surface`
   casts the rays onto the implicit surface and evens out the vertices with a few steps of
   tangential smoothing, each followed by projection back onto the surface.
4. Skinning weights blend across each joint over a short zone along the bone axis;
   the joint regressor writes every joint as a convex combination of nearby vertices; the
   10 shape blend shapes are central differences of the generator over one standard
   deviation of 10 anatomical measurements (:data:`SHAPE_BASIS`); the articulation PCA
   comes from a synthetic distribution of plausible poses around a relaxed mean.
5. The vertices are permuted at the end so that the fingertips sit at MANO's indices
   (:data:`handanno.data.conventions.TIP_VERTEX_IDS`).

Convention:
    Right hand in MANO's canonical frame, metres: fingers point along -x, the back of the
    hand faces +y (the palm faces -y), the thumb is on the +z side. As in MANO's template,
    the middle finger's knuckle (MCP) is near the origin and the wrist joint at about
    x = +0.093 m, so global rotations and translations mean nearly the same on both models.
    The left hand is the mirror image, x -> -x. Axis-angle articulations are relative to
    the parent joint, in the rest frame (MANO's convention); a finger joint flexes (curls
    towards the palm) by a positive rotation about its lateral axis ``cross(dorsal, bone)``
    (about +z for the right hand's fingers).

What is approximate: ``posedirs`` are all zero (no pose correctives: plain linear blend
skinning); ``hands_coeffs`` are the coefficients of the synthetic pose samples, not of
captured hands.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import MANO_PARENTS, NUM_BETAS, NUM_MANO_JOINTS, NUM_VERTS, TIP_VERTEX_IDS
from handanno.models.hand_axes import unit

logger = logging.getLogger(__name__)

MODEL_NAME = "handanno-open-hand"
#: Bump when the generated geometry changes.
MODEL_VERSION = "1.0"
ASSET_FILES = {"right": "open_hand_right.pkl", "left": "open_hand_left.pkl"}

# MANO order of the fingers' chains: (MCP/CMC, PIP/MCP, DIP/IP) joint ids.
FINGER_JOINTS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "pinky": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}
#: FreiHAND finger order (as TIP_VERTEX_IDS): thumb, index, middle, ring, pinky.
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
LONG_FINGERS = ("index", "middle", "ring", "pinky")  # radial to ulnar
WEB_PAIRS = (("index", "middle"), ("middle", "ring"), ("ring", "pinky"))  # (radial, ulnar) finger of each web

DORSAL = np.array([0.0, 1.0, 0.0])
RADIAL = np.array([0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------------
# Shape parameters: what the 10 betas mean.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandShape:
    """The anatomical measurements the generator takes; 1.0 (0.0 for ratios) is the mean hand.

    Each factor multiplies the lengths or widths it names. :data:`SHAPE_BASIS` says how
    far one standard deviation (one unit of a beta) moves each of them.
    """

    size: float = 1.0  # every length (isotropic scale about the wrist joint)
    finger_length: float = 1.0  # the phalanges of index..pinky
    palm_width: float = 1.0  # lateral spacing of the knuckles and width of the palm
    thickness: float = 1.0  # dorsal-palmar thickness of palm and fingers
    finger_girth: float = 1.0  # finger and thumb widths and thicknesses
    thumb_length: float = 1.0  # the thumb's metacarpal and phalanges
    palm_length: float = 1.0  # wrist joint to knuckles
    digit_ratio: float = 0.0  # index minus ring length, fraction (+ longer index, shorter ring)
    pinky_length: float = 1.0  # the little finger's phalanges
    fingertip_taper: float = 1.0  # width of the distal phalanges and tips relative to the base


#: One standard deviation of each :class:`HandShape` field: beta i moves field i by this much.
#: Chosen from adult hand anthropometry (hand length CV ~6%, breadth ~5%, digit ratios ~3%).
SHAPE_BASIS = (
    ("size", 0.06, "overall size: every length scales by 6% per unit (hand length 0.186 m +- 0.011 m)"),
    ("finger_length", 0.05, "length of index..pinky phalanges, 5% per unit"),
    ("palm_width", 0.04, "palm width and knuckle spacing, 4% per unit"),
    ("thickness", 0.08, "dorsal-palmar thickness of palm and fingers, 8% per unit"),
    ("finger_girth", 0.05, "width and thickness of fingers and thumb, 5% per unit"),
    ("thumb_length", 0.06, "thumb metacarpal and phalanges, 6% per unit"),
    ("palm_length", 0.05, "wrist to knuckles, 5% per unit"),
    ("digit_ratio", 0.03, "index longer and ring shorter (2D:4D ratio), 3% of length per unit"),
    ("pinky_length", 0.06, "little finger length, 6% per unit"),
    ("fingertip_taper", 0.08, "width of distal phalanges and fingertips, 8% per unit"),
)
assert len(SHAPE_BASIS) == NUM_BETAS
assert tuple(b[0] for b in SHAPE_BASIS) == tuple(f.name for f in fields(HandShape))


def shape_from_betas(betas: Sequence[float]) -> HandShape:
    """The :class:`HandShape` that ``betas`` (10 numbers, unit std) stand for."""
    betas = np.asarray(betas, dtype=np.float64)
    check_shape(betas, (NUM_BETAS,), "betas")
    base = HandShape()
    values = {name: getattr(base, name) + float(b) * std for (name, std, _), b in zip(SHAPE_BASIS, betas, strict=True)}
    return HandShape(**values)


# ---------------------------------------------------------------------------------------
# Skeleton: joints, bone frames and widths.
# ---------------------------------------------------------------------------------------

# Design values of the mean right hand (metres, degrees), before the HandShape factors.
WRIST_JOINT = (0.093, 0.006, 0.004)  # MANO's template has its wrist joint near (0.096, 0.006, 0.006)
PALM_CENTRE_Z = -0.003  # palm_width scales lateral positions about this plane
#: Knuckle (MCP) joint centres, spread of each finger from the hand's axis, bone lengths as
#: joint-centre distances (proximal, middle, distal phalanx; the distal one to the end of
#: the fingertip pad), chosen to match adult averages of phalanx lengths (proximal >
#: middle, ratios ~1.6-1.7) and a wrist-to-middle-fingertip length of 0.186 m; half-widths
#: at the joints and the tip.
FINGER_DESIGN = {
    #          MCP (x, y, z)              spread  (P1,    P2,    P3)       half-widths MCP, PIP, DIP, tip
    "index": ((0.003, 0.004, 0.027), 6.0, (0.040, 0.025, 0.022), (0.0097, 0.0088, 0.0077, 0.0067)),
    "middle": ((0.000, 0.005, 0.005), 1.0, (0.044, 0.027, 0.022), (0.0099, 0.0090, 0.0079, 0.0069)),
    "ring": ((0.005, 0.003, -0.0148), -6.0, (0.042, 0.027, 0.022), (0.0093, 0.0084, 0.0074, 0.0065)),
    "pinky": ((0.016, 0.000, -0.0325), -13.0, (0.034, 0.020, 0.020), (0.0082, 0.0074, 0.0065, 0.0057)),
}
FINGER_ASPECT = 1.12  # width / thickness of finger cross-sections
#: Thumb: CMC joint, then per bone (in-plane angle from distal towards radial, palmar tilt,
#: length): metacarpal, proximal phalanx, distal phalanx (to the tip).
THUMB_CMC = (0.066, -0.006, 0.021)
THUMB_BONES = ((50.0, 14.0, 0.044), (40.0, 10.0, 0.031), (33.0, 6.0, 0.026))
THUMB_WIDTHS = (0.0125, 0.0113, 0.0106, 0.0088)  # half-widths at CMC, MCP, IP, tip
THUMB_ASPECT = 1.15
THUMB_ROLL_DEG = 60.0  # pronation: the thumbnail turns from dorsal towards radial (opposition)


@dataclass(frozen=True)
class Finger:
    """One digit's chain in the rest pose (arrays of float64, metres).

    Attributes:
        name: ``"thumb"``, ``"index"``, ...
        joints: ``(3, 3)`` the chain's joints (MCP, PIP, DIP; for the thumb CMC, MCP, IP).
        tip: ``(3,)`` the fingertip, the most distal point of the surface.
        dirs: ``(3, 3)`` unit direction of each bone (joint k to joint k+1 / the tip).
        dorsal: ``(3, 3)`` unit normal of each bone towards the nail side.
        lateral: ``(3, 3)`` ``cross(dorsal, dir)``: the flexion axis (radial side for index..pinky).
        lengths: ``(3,)`` bone lengths.
        widths: ``(4,)`` half-widths at the three joints and the tip.
        aspect: width / thickness of the cross-section.
    """

    name: str
    joints: np.ndarray
    tip: np.ndarray
    dirs: np.ndarray
    dorsal: np.ndarray
    lateral: np.ndarray
    lengths: np.ndarray
    widths: np.ndarray
    aspect: float

    @property
    def arc(self) -> np.ndarray:
        """``(4,)`` arc length from the first joint to each joint and the tip."""
        return np.concatenate([[0.0], np.cumsum(self.lengths)])

    def point(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Axis point and frame at arc length ``s`` ``(N,)``: (point, dir, lateral, dorsal), each ``(N, 3)``."""
        s = np.asarray(s, dtype=np.float64)
        seg = np.clip(np.searchsorted(self.arc[1:3], s, side="right"), 0, 2)  # (N,)
        p = self.joints[seg] + (s - self.arc[seg])[:, None] * self.dirs[seg]
        return p, self.dirs[seg], self.lateral[seg], self.dorsal[seg]


@dataclass(frozen=True)
class Skeleton:
    """The rest-pose skeleton of one :class:`HandShape` (right hand).

    Attributes:
        joints: ``(16, 3)`` MANO joints in MANO order.
        fingers: the five :class:`Finger` chains by name.
        shape: the :class:`HandShape` it was made from.
    """

    joints: np.ndarray
    fingers: dict[str, Finger]
    shape: HandShape

    @property
    def wrist(self) -> np.ndarray:
        """``(3,)`` the wrist joint."""
        return self.joints[0]


def skeleton(shape: HandShape = HandShape()) -> Skeleton:
    """Joints, bone frames and widths of the right hand for ``shape``.

    Convention:
        MANO's right-hand frame (module docstring), metres. ``size`` scales everything
        about the wrist joint; ``palm_length`` scales x and ``palm_width`` z of the
        knuckles and thumb base about the wrist / :data:`PALM_CENTRE_Z`.

    Example:
        >>> sk = skeleton()
        >>> round(float(np.linalg.norm(sk.fingers["middle"].tip - sk.wrist)), 3)
        0.186
    """
    wrist = np.array(WRIST_JOINT)
    thick = shape.thickness

    def palm_point(p: Sequence[float]) -> np.ndarray:
        p = np.array(p, dtype=np.float64)
        return np.array(
            [
                wrist[0] + (p[0] - wrist[0]) * shape.palm_length,
                p[1],
                PALM_CENTRE_Z + (p[2] - PALM_CENTRE_Z) * shape.palm_width,
            ]
        )

    fingers: dict[str, Finger] = {}
    for name, (mcp, spread_deg, lengths, widths) in FINGER_DESIGN.items():
        a = np.deg2rad(spread_deg)
        d = np.array([-np.cos(a), 0.0, np.sin(a)])
        n = DORSAL.copy()
        lat = np.cross(n, d)
        factor = shape.finger_length
        if name == "index":
            factor *= 1.0 + shape.digit_ratio
        elif name == "ring":
            factor *= 1.0 - shape.digit_ratio
        elif name == "pinky":
            factor *= shape.pinky_length
        lens = np.array(lengths) * factor
        w = np.array(widths) * shape.finger_girth
        w[2] *= 1.0 + 0.5 * (shape.fingertip_taper - 1.0)
        w[3] *= shape.fingertip_taper
        j0 = palm_point(mcp)
        joints = np.stack([j0, j0 + lens[0] * d, j0 + (lens[0] + lens[1]) * d])
        fingers[name] = Finger(
            name, joints, j0 + lens.sum() * d, np.tile(d, (3, 1)), np.tile(n, (3, 1)), np.tile(lat, (3, 1)),
            lens, w, FINGER_ASPECT / thick,
        )  # fmt: skip

    cmc = palm_point(THUMB_CMC)
    dirs, dors, lens = [], [], []
    roll = np.deg2rad(THUMB_ROLL_DEG)
    for beta_deg, tilt_deg, length in THUMB_BONES:
        b, t = np.deg2rad(beta_deg), np.deg2rad(tilt_deg)
        d = np.cos(t) * np.array([-np.cos(b), 0.0, np.sin(b)]) + np.sin(t) * -DORSAL
        out = np.array([np.sin(b), 0.0, np.cos(b)])  # in the palm plane, away from the fingers
        n = np.cos(roll) * DORSAL + np.sin(roll) * out
        n = unit(n - (n @ d) * d)
        dirs.append(d)
        dors.append(n)
        lens.append(length * shape.thumb_length)
    dirs_a, dors_a, lens_a = np.array(dirs), np.array(dors), np.array(lens)
    tj = [cmc]
    for k in range(2):
        tj.append(tj[-1] + lens_a[k] * dirs_a[k])
    tjoints = np.stack(tj)
    tw = np.array(THUMB_WIDTHS) * shape.finger_girth
    tw[3] *= shape.fingertip_taper
    fingers["thumb"] = Finger(
        "thumb", tjoints, tjoints[2] + lens_a[2] * dirs_a[2], dirs_a, dors_a, np.cross(dors_a, dirs_a), lens_a, tw,
        THUMB_ASPECT / thick,
    )  # fmt: skip

    joints = np.zeros((NUM_MANO_JOINTS, 3))
    joints[0] = wrist
    for name, ids in FINGER_JOINTS.items():
        joints[list(ids)] = fingers[name].joints
    sk = Skeleton(joints, fingers, shape)
    return _scaled(sk, shape.size) if shape.size != 1.0 else sk


def _scaled(sk: Skeleton, s: float) -> Skeleton:
    """``sk`` scaled by ``s`` about its wrist joint."""
    w = sk.wrist

    def sc(p: np.ndarray) -> np.ndarray:
        return w + (p - w) * s

    fingers = {
        k: replace(f, joints=sc(f.joints), tip=sc(f.tip), lengths=f.lengths * s, widths=f.widths * s)
        for k, f in sk.fingers.items()
    }
    return Skeleton(sc(sk.joints), fingers, sk.shape)


# ---------------------------------------------------------------------------------------
# Implicit surface.
# ---------------------------------------------------------------------------------------


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two distance fields, blending over a band of width ``k`` (m)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def sd_round_cone(q_axial: np.ndarray, q_radial: np.ndarray, r1: float, r2: float, length: float) -> np.ndarray:
    """Signed distance to a round cone (spheres of radius r1 at 0 and r2 at ``length``, and their hull).

    Args:
        q_axial: ``(N,)`` coordinate along the axis from the first centre.
        q_radial: ``(N,)`` distance from the axis.
        r1: radius at the first centre.
        r2: radius at the second centre.
        length: distance between the centres (more than ``|r1 - r2|``).
    """
    b = (r1 - r2) / length
    a = np.sqrt(1.0 - b * b)
    k = -b * q_radial + a * q_axial
    d_side = a * q_radial + b * q_axial - r1
    d_start = np.hypot(q_radial, q_axial) - r1
    d_end = np.hypot(q_radial, q_axial - length) - r2
    return np.where(k < 0.0, d_start, np.where(k > a * length, d_end, d_side))


def sd_ellipsoid(p: np.ndarray, centre: np.ndarray, axes: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (frame ``axes`` rows, semi-axes ``radii``).

    Uses the bound ``k0 (k0 - 1) / k1`` with ``k0 = |q / r|``, ``k1 = |q / r^2|``.
    """
    r = np.asarray(radii, dtype=np.float64)
    q = (p - centre) @ axes.T  # (N, 3)
    k0 = np.linalg.norm(q / r, axis=1)
    k1 = np.maximum(np.linalg.norm(q / (r * r), axis=1), 1e-12)
    return k0 * (k0 - 1.0) / k1


def _axes_along(d: np.ndarray, up: np.ndarray = DORSAL) -> np.ndarray:
    """An orthonormal frame (rows: d, lateral, up') with ``d`` first and ``up`` made orthogonal to it."""
    d = unit(np.asarray(d, dtype=np.float64))
    n = unit(up - (up @ d) * d)
    return np.stack([d, np.cross(n, d), n])


WRIST_CUT = 0.017  # the surface ends this far proximal of the wrist joint (m, scaled with size)
WEB_S, WEB_RADIUS, WEB_DROP, WEB_ASPECT = 0.005, 0.0075, 0.001, 1.5  # web capsules: arc length, radius, palmar offset


@dataclass(frozen=True)
class _Cones:
    """K elliptic round cones, for evaluating many at once.

    Attributes:
        origin: ``(K, 3)`` first centre; axes: ``(K, 3, 3)`` rows (axis, lateral,
        aspect * dorsal); r1, r2, length: ``(K,)``.
    """

    origin: np.ndarray
    axes: np.ndarray
    r1: np.ndarray
    r2: np.ndarray
    length: np.ndarray

    @staticmethod
    def make(items: Sequence[tuple]) -> _Cones:
        """From ``(a, b, lateral, dorsal, r1, r2, aspect)`` tuples."""
        origin, axes, r1, r2, length = [], [], [], [], []
        for a, b, lat, dor, ra, rb, aspect in items:
            d = np.asarray(b, dtype=np.float64) - a
            n = float(np.linalg.norm(d))
            origin.append(a)
            axes.append(np.stack([d / n, lat, aspect * np.asarray(dor)]))
            r1.append(ra)
            r2.append(rb)
            length.append(n)
        return _Cones(np.array(origin), np.array(axes), np.array(r1), np.array(r2), np.array(length))

    def __call__(self, p: np.ndarray, cutoff: float = 0.02) -> np.ndarray:
        """``(N, K)`` signed distances (in the stretched space of each cone).

        Pairs farther than ``cutoff`` from a cone's bounding sphere get the distance to
        that sphere instead (a cheaper stand-in that leaves the zero set and every smooth
        blend narrower than ``cutoff`` unchanged).
        """
        centre = self.origin + 0.5 * self.length[:, None] * self.axes[:, 0]  # (K, 3)
        bound = 0.5 * self.length + np.maximum(self.r1, self.r2)  # (K,)
        d2 = (p * p).sum(1)[:, None] - 2.0 * p @ centre.T + (centre * centre).sum(1)[None]
        out = np.sqrt(np.maximum(d2, 0.0)) - bound[None]  # (N, K)
        n, k = np.nonzero(out < cutoff)
        q = np.einsum("ic,idc->id", p[n] - self.origin[k], self.axes[k])  # (M, 3)
        out[n, k] = sd_round_cone(q[:, 0], np.hypot(q[:, 1], q[:, 2]), self.r1[k], self.r2[k], self.length[k])
        return out


def _digit_cones(f: Finger) -> list[tuple]:
    """Two tapered elliptic cones per bone, slightly waisted mid-bone; the last ends in the tip's sphere."""
    pts = list(f.joints) + [f.tip - f.widths[3] * f.dirs[2]]
    out = []
    for k in range(3):
        a, b = pts[k], pts[k + 1]
        ra, rb = f.widths[k], f.widths[k + 1]
        mid, rm = 0.5 * (a + b), 0.5 * (ra + rb) * (0.94 if k < 2 else 0.97)
        out.append((a, mid, f.lateral[k], f.dorsal[k], ra, rm, f.aspect))
        out.append((mid, b, f.lateral[k], f.dorsal[k], rm, rb, f.aspect))
    return out


def hand_sdf(sk: Skeleton) -> Callable[[np.ndarray], np.ndarray]:
    """The hand's implicit surface: a function ``(N, 3) points -> (N,)`` negative inside.

    Digits are tapered elliptic cones; the palm is the smooth union of four flattened
    metacarpal cones, a palmar pad, the hypothenar and thenar eminences and a wrist stump
    cut flat at the forearm end; each digit is blended smoothly into the palm (the thumb
    more broadly, which makes the first web space) but not into its neighbours.

    Convention:
        Metres, the right hand's frame. The zero set is the skin; values are distances
        only approximately (stretched ellipses, smooth minima).
    """
    s = sk.shape
    size = s.size
    w = sk.wrist
    thick = s.thickness
    fi = sk.fingers
    th = fi["thumb"]
    long_f = [fi[n] for n in LONG_FINGERS]

    def at(x_rel: float, y: float, z: float) -> np.ndarray:
        """A palm point given relative to the wrist joint in design units, with the shape factors."""
        return w + size * np.array(
            [
                x_rel * s.palm_length,
                (y - WRIST_JOINT[1]) * thick,
                (z - PALM_CENTRE_Z) * s.palm_width + PALM_CENTRE_Z - WRIST_JOINT[2],
            ]
        )

    digits = _Cones.make([c for f in [th] + long_f for c in _digit_cones(f)])  # 5 x 6 cones
    # Palm: metacarpals from the carpus to each knuckle (flatter than the fingers), then the wrist stump.
    bases = {"index": 0.014, "middle": 0.003, "ring": -0.007, "pinky": -0.016}
    items = []
    for f in long_f:
        base = at(-0.021, 0.006, bases[f.name])
        lat = unit(np.cross(DORSAL, unit(f.joints[0] - base)))
        items.append(
            (base, f.joints[0], lat, DORSAL, 0.0115 * size * s.palm_width**0.5, f.widths[0] * 1.06, 1.30 / thick)
        )
    wr_r = 0.0270 * size * s.palm_width
    items.append(
        (at(-0.030, 0.005, -0.001), at(0.040, 0.005, -0.001), RADIAL, DORSAL, wr_r, wr_r, 1.55 / thick * s.palm_width)
    )
    # webs: flat capsules across the base of each pair of neighbouring fingers
    for fa, fb in zip(long_f[:-1], long_f[1:], strict=True):
        a = fa.joints[0] + WEB_S * size * fa.dirs[0] - WEB_DROP * size * thick * DORSAL
        b = fb.joints[0] + WEB_S * size * fb.dirs[0] - WEB_DROP * size * thick * DORSAL
        lat = unit(np.cross(DORSAL, unit(b - a)))
        r = WEB_RADIUS * size
        items.append((a, b, lat, DORSAL, r, r, WEB_ASPECT / thick))
    palm_cones = _Cones.make(items)
    eye = np.eye(3)
    ellipsoids = [
        (
            at(-0.053, -0.001, -0.002),
            eye,
            size * np.array([0.044 * s.palm_length, 0.0125 * thick, 0.031 * s.palm_width]),
        ),
        (
            at(-0.040, -0.002, -0.025),
            eye,
            size * np.array([0.032 * s.palm_length, 0.0115 * thick, 0.0115 * s.palm_width]),
        ),
        (
            th.joints[0]
            + 0.45 * th.lengths[0] * th.dirs[0]
            - 0.004 * size * th.lateral[0]
            - 0.005 * size * thick * th.dorsal[0],
            _axes_along(th.dirs[0], th.dorsal[0]),
            size * np.array([0.024 * s.thumb_length, 0.0145 * s.palm_width, 0.0125 * thick]),
        ),
    ]
    cut_x = w[0] + WRIST_CUT * size
    k_mc, k_pad, k_wrist, k_thumb, k_finger = 0.012 * size, 0.010 * size, 0.014 * size, 0.014 * size, 0.007 * size
    k_web = 0.005 * size

    def sdf(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        N = p.shape[0]
        pc = palm_cones(p)  # (N, 5)
        d = pc[:, 0]
        for k in range(1, 4):
            d = smooth_min(d, pc[:, k], k_mc)
        for (c, ax, r), k in zip(ellipsoids, (k_pad, k_pad, k_mc), strict=True):
            d = smooth_min(d, sd_ellipsoid(p, c, ax, r), k)
        d = smooth_min(d, pc[:, 4], k_wrist)
        for k in range(5, 8):
            d = smooth_min(d, pc[:, k], k_web)
        palm = -smooth_min(-d, cut_x - p[:, 0], 0.005 * size)  # cut flat at the forearm end, rounded rim
        dg = digits(p).reshape(N, 5, 6).min(axis=2)  # (N, 5) thumb, index, middle, ring, pinky
        out = smooth_min(palm, dg[:, 0], k_thumb)
        for j in range(1, 5):
            out = np.minimum(out, smooth_min(palm, dg[:, j], k_finger))
        return out

    return sdf


# ---------------------------------------------------------------------------------------
# Mesh connectivity (fixed) and where each vertex comes from.
# ---------------------------------------------------------------------------------------

PALM_COLS = 26  # around the palm: 0 radial side, 1-12 dorsal (radial->ulnar), 13 ulnar side, 14-25 palmar
PALM_ROWS = 9  # planar rows from the wrist rim (0) to just below the knuckles (8); ring K above them
#: Dorsal x of each planar row relative to the wrist joint (design units, palm_length scaled).
PALM_ROW_X = (0.0145, 0.0045, -0.0075, -0.0195, -0.0315, -0.0435, -0.0555, -0.0675, -0.0800)
#: ... blended (weights PALM_ROW_ARC) towards x relative to each column's knuckle, so the
#: top rows follow the knuckle arc.
PALM_ROW_REL = (0.0, 0.0, 0.0, 0.0, 0.0, 0.045, 0.033, 0.021, 0.010)
PALM_ROW_ARC = (0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 0.8, 1.0)
PALM_ROW_SKEW = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.001, 0.003, 0.005)  # palmar side further distal (m)
#: The thumb leaves the palm through a hole over the thenar eminence: these rows x columns.
THUMB_HOLE_ROWS = (1, 2, 3, 4)
THUMB_HOLE_COLS = (21, 22, 23, 24, 25, 0)
RING = 8  # vertices around a finger
#: Rings per finger: (proximal phalanx incl. the PIP ring, middle incl. DIP, distal shaft); 2 more at the tip.
FINGER_RINGS = {"index": (5, 4, 1), "middle": (6, 3, 1), "ring": (5, 3, 1), "pinky": (4, 3, 1)}
#: Thumb: transition rings (their sizes) between the hole and the first shaft ring, cast
#: between the two (they cover the thenar eminence and the first web space), then shaft
#: rings of THUMB_RING vertices at arc lengths (bone, fraction of bone) and 2 on the tip.
THUMB_TRANSITION = (14, 12, 12, 12)
THUMB_RING = 12
THUMB_RING_S = ((0, 0.92), (1, 0.16), (1, 0.43), (1, 0.70), (2, 0.0), (2, 0.45))
# Ring 0 of each finger lies on the knuckle line; these ring positions are shared with the palm.
RING0_KS = {
    "index": (0, 1, 2, 3, 5, 6, 7),
    "middle": (1, 2, 3, 5, 6, 7),
    "ring": (1, 2, 3, 5, 6, 7),
    "pinky": (1, 2, 3, 4, 5, 6, 7),
}
CAP_INTERIOR = 12  # on the midline between dorsal and palmar columns of the wrist rim
RING0_S = 0.003  # ring 0 (dorsal side) lies this far distal of the knuckle joint (m)
FIRST_RING_S = 0.019  # the first ring after it, just beyond the webs (m)
FINGER_SKEW = 0.010  # ring 0's palmar side lies this far distal of its dorsal side (m)
FINGER_SKEW_END = 0.025  # ... decreasing to 0 at this arc length


def _ring_k_of_col() -> list[tuple[str, int]]:
    """For each palm column of ring K: (finger, ring position k) it belongs to."""
    cols: list[tuple[str, int]] = [("index", 0)]
    for f in LONG_FINGERS:
        cols += [(f, 1), (f, 2), (f, 3)]
    cols.append(("pinky", 4))
    for f in reversed(LONG_FINGERS):
        cols += [(f, 5), (f, 6), (f, 7)]
    assert len(cols) == PALM_COLS
    return cols


@dataclass(frozen=True)
class Blocks:
    """Vertex ids of each part of the mesh, in construction order.

    Attributes:
        palm: ``(PALM_ROWS, PALM_COLS)`` planar palm rows (-1 inside the thumb hole).
        ring0: finger -> ``(RING,)`` ring 0 on the knuckle line (-1 where a web takes the place).
        rings: finger -> list of rings after ring 0, proximal to distal (for the thumb:
            the transition rings first).
        tips: finger -> the fingertip (pole) vertex.
        webs: ``(3,)`` web vertices: index/middle, middle/ring, ring/pinky.
        cap: ``(CAP_INTERIOR,)`` wrist cap vertices.
        hole: palm vertices around the thumb hole, cyclic.
        num_verts: V.
    """

    palm: np.ndarray
    ring0: dict
    rings: dict
    tips: dict
    webs: np.ndarray
    cap: np.ndarray
    hole: np.ndarray
    num_verts: int


@dataclass(frozen=True)
class Topology:
    """The fixed connectivity of the open hand model, in construction order.

    Attributes:
        blocks: the :class:`Blocks`.
        faces: ``(F, 3)`` triangles, wound outwards (counter-clockwise seen from outside).
        relax: ``(V,)`` vertices that :func:`build_surface` evens out after casting.
        hole_ring: the hole's vertices, cyclic, starting where the thumb's rings start and
            turning the same way around the thumb.
    """

    blocks: Blocks
    faces: np.ndarray
    relax: np.ndarray
    hole_ring: np.ndarray


def _ring_sizes(name: str) -> list[int]:
    if name == "thumb":
        return list(THUMB_TRANSITION) + [THUMB_RING] * (len(THUMB_RING_S) + 2)
    return [RING] * (sum(FINGER_RINGS[name]) + 2)


@lru_cache(maxsize=1)
def _blocks() -> Blocks:
    """Allocate the vertex ids of every block, in construction order."""
    n = 0
    palm = -np.ones((PALM_ROWS, PALM_COLS), dtype=np.int64)
    hole_interior = {(r, c) for r in THUMB_HOLE_ROWS[1:-1] for c in THUMB_HOLE_COLS[1:-1]}
    for r in range(PALM_ROWS):
        for c in range(PALM_COLS):
            if (r, c) not in hole_interior:
                palm[r, c] = n
                n += 1
    ring0 = {}
    for f in LONG_FINGERS:
        ids = -np.ones(RING, dtype=np.int64)
        for k in RING0_KS[f]:
            ids[k] = n
            n += 1
        ring0[f] = ids
    rings, tips = {}, {}
    for f in LONG_FINGERS + ("thumb",):
        rings[f] = []
        for m in _ring_sizes(f):
            rings[f].append(np.arange(n, n + m, dtype=np.int64))
            n += m
        tips[f] = n
        n += 1
    webs = np.arange(n, n + 3, dtype=np.int64)
    n += 3
    cap = np.arange(n, n + CAP_INTERIOR, dtype=np.int64)
    n += CAP_INTERIOR
    rows, cols = THUMB_HOLE_ROWS, THUMB_HOLE_COLS
    loop = [(rows[0], c) for c in cols] + [(r, cols[-1]) for r in rows[1:-1]]
    loop += [(rows[-1], c) for c in reversed(cols)] + [(r, cols[0]) for r in reversed(rows[1:-1])]
    hole = np.array([palm[r, c] for r, c in loop], dtype=np.int64)
    assert n == NUM_VERTS, n
    return Blocks(palm, ring0, rings, tips, webs, cap, hole, n)


def _zip(a: np.ndarray, b: np.ndarray) -> list[tuple[int, ...]]:
    """Close the band between two cyclic rings (sizes may differ; a[0] faces b[0]): quads or triangles."""
    ma, mb = len(a), len(b)
    if ma == mb:
        return [(a[k], a[(k + 1) % ma], b[(k + 1) % mb], b[k]) for k in range(ma)]
    out: list[tuple[int, ...]] = []
    i = j = 0
    while i < ma or j < mb:
        # advance the ring whose next vertex comes first in the shared parameter k / m
        if j >= mb or (i < ma and (i + 1) / ma <= (j + 1) / mb):
            out.append((a[i % ma], a[(i + 1) % ma], b[j % mb]))
            i += 1
        else:
            out.append((a[i % ma], b[(j + 1) % mb], b[j % mb]))
            j += 1
    return out


def _polys(bl: Blocks, hole_ring: np.ndarray) -> list[tuple[int, ...]]:
    """Every face (quads and triangles, winding not yet consistent)."""
    palm, ring0, rings, tips = bl.palm, bl.ring0, bl.rings, bl.tips
    polys: list[tuple[int, ...]] = []

    def fan(ring: np.ndarray, pole: int) -> None:
        m = len(ring)
        polys.extend((ring[k], ring[(k + 1) % m], pole) for k in range(m))

    # palm rows
    hole_quads = {(r, c) for r in THUMB_HOLE_ROWS[:-1] for c in THUMB_HOLE_COLS[:-1]}
    for r in range(PALM_ROWS - 1):
        for c in range(PALM_COLS):
            if (r, c) in hole_quads:
                continue
            c1 = (c + 1) % PALM_COLS
            polys.append((palm[r, c], palm[r, c1], palm[r + 1, c1], palm[r + 1, c]))
    ring_k = np.array([ring0[f][k] for f, k in _ring_k_of_col()])
    polys += _zip(palm[PALM_ROWS - 1], ring_k)
    # ring 0 -> ring 1 of each finger, with the web taking the missing side positions
    for f in LONG_FINGERS:
        r0, r1 = ring0[f], rings[f][0]
        for k in range(RING):
            k1 = (k + 1) % RING
            if r0[k] >= 0 and r0[k1] >= 0:
                polys.append((r0[k], r0[k1], r1[k1], r1[k]))
            elif r0[k] >= 0:
                polys.append((r0[k], r1[k1], r1[k]))
            else:
                polys.append((r0[k1], r1[k1], r1[k]))
        for i in range(len(rings[f]) - 1):
            polys += _zip(rings[f][i], rings[f][i + 1])
        fan(rings[f][-1], tips[f])
    # webs: finger a (radial) and its ulnar neighbour b
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        loop = _web_loop(bl, fa, fb)
        polys.extend((w, loop[k], loop[(k + 1) % 6]) for k in range(6))
    # thumb
    tr = rings["thumb"]
    polys += _zip(hole_ring, tr[0])
    for i in range(len(tr) - 1):
        polys += _zip(tr[i], tr[i + 1])
    fan(tr[-1], tips["thumb"])
    # wrist cap: a strip of quads between dorsal column i and palmar column 26 - i
    row = palm[0]
    dors = [row[i] for i in range(1, 13)]
    palms = [row[PALM_COLS - i] for i in range(1, 13)]
    cap = bl.cap
    for i in range(11):
        polys.append((dors[i], dors[i + 1], cap[i + 1], cap[i]))
        polys.append((cap[i], cap[i + 1], palms[i + 1], palms[i]))
    polys += [(row[0], dors[0], cap[0]), (row[0], cap[0], palms[0])]
    polys += [(row[13], cap[11], dors[11]), (row[13], palms[11], cap[11])]
    return polys


def _finger_ring_s(f: Finger, size: float) -> np.ndarray:
    """Arc lengths of the shaft rings after ring 0 of a long finger (dorsal side).

    The first lies just beyond the web, the last of the proximal phalanx on the PIP
    joint, the last of the middle phalanx on the DIP joint.
    """
    n1, n2, n3 = FINGER_RINGS[f.name]
    p1, p2 = f.lengths[0], f.lengths[1]
    shaft3 = f.lengths[2] - f.widths[3]
    first = FIRST_RING_S * size
    s1 = first + (p1 - first) * np.arange(n1) / (n1 - 1)
    s2 = p1 + p2 * (np.arange(n2) + 1) / n2
    s3 = p1 + p2 + shaft3 * (np.arange(n3) + 1) / (n3 + 1)
    return np.concatenate([s1, s2, s3])


def _thumb_ring_s(f: Finger) -> np.ndarray:
    lens = f.lengths.copy()
    lens[2] -= f.widths[3]
    return np.array([f.arc[seg] + frac * lens[seg] for seg, frac in THUMB_RING_S])


def _tube_rays(
    f: Finger, s: np.ndarray, m: int, skew: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray origins, directions and expected radii ``(len(s) * m, ...)`` for rings around a digit's axis."""
    theta = 2.0 * np.pi * np.arange(m) / m
    ss = np.repeat(s, m)
    th = np.tile(theta, len(s))
    if skew is not None:
        ss = ss + np.repeat(skew, m) * (1.0 - np.sin(th)) / 2.0
    p, _, lat, dor = f.point(ss)
    d = np.cos(th)[:, None] * lat + np.sin(th)[:, None] * dor
    seg = np.clip(np.searchsorted(f.arc[1:3], ss, side="right"), 0, 2)
    r = f.widths[seg] * np.hypot(np.cos(th), np.sin(th) / f.aspect)
    return p, d, r


def _cap_rays(f: Finger, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rings on the rounded fingertip (at 90 and 48 degrees from the tip) and the pole."""
    c = f.tip - f.widths[3] * f.dirs[2]
    theta = 2.0 * np.pi * np.arange(m) / m
    out_p, out_d = [], []
    for psi in (np.deg2rad(90.0), np.deg2rad(48.0)):
        rad = np.cos(theta)[:, None] * f.lateral[2] + np.sin(theta)[:, None] * f.dorsal[2]
        out_d.append(np.cos(psi) * f.dirs[2] + np.sin(psi) * rad)
        out_p.append(np.tile(c, (m, 1)))
    out_p.append(c[None])
    out_d.append(f.dirs[2][None])
    p, d = np.concatenate(out_p), np.concatenate(out_d)
    return p, d, np.full(len(p), f.widths[3])


def _skews(s: np.ndarray, size: float) -> np.ndarray:
    return FINGER_SKEW * size * np.clip(1.0 - s / (FINGER_SKEW_END * size), 0.0, 1.0)


def _palm_rays(sk: Skeleton, ring_k_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays of the planar palm rows ``(PALM_ROWS * PALM_COLS, ...)``: from a medial segment of each row outwards.

    Column angles phi (0 radial side, pi/2 dorsal, pi ulnar side, 3 pi/2 palmar) go from
    even spacing at the wrist to the positions of ring K's vertices at the knuckles.
    """
    s = sk.shape
    size = s.size
    w = sk.wrist
    idx, pky = sk.fingers["index"], sk.fingers["pinky"]
    # lateral extent at the knuckles and at the wrist
    z_top_c = 0.5 * (idx.joints[0, 2] + pky.joints[0, 2])
    w_top = 0.5 * (idx.joints[0, 2] - pky.joints[0, 2]) + 0.6 * (idx.widths[0] + pky.widths[0])
    x_top = 0.5 * (idx.joints[0, 0] + pky.joints[0, 0])
    z_wr_c = w[2] + (-0.005) * size * s.palm_width
    w_wr = 0.0265 * size * s.palm_width
    x_wr = w[0] - 0.010 * size * s.palm_length
    h_med = 0.009 * size * s.thickness  # medial segment is this far inside the thinnest part
    y_c = w[1] - 0.001 * size * s.thickness
    x_mcp = np.array([sk.fingers[f].joints[0, 0] for f, _ in _ring_k_of_col()])  # (PALM_COLS,)
    phi_even = np.array(
        [0.0] + [np.pi * i / 13 for i in range(1, 13)] + [np.pi] + [np.pi + np.pi * j / 13 for j in range(1, 13)]
    )
    bases, dirs, rads = [], [], []
    for r in range(PALM_ROWS):
        x = w[0] + PALM_ROW_X[r] * size * s.palm_length
        x = (1.0 - PALM_ROW_ARC[r]) * x + PALM_ROW_ARC[r] * (x_mcp + PALM_ROW_REL[r] * size * s.palm_length)
        t_lat = np.clip((x_wr - x) / (x_wr - x_top), 0.0, 1.0)
        zc = z_wr_c + t_lat * (z_top_c - z_wr_c)
        ww = w_wr + t_lat * (w_top - w_wr)
        t_col = r / (PALM_ROWS - 1)
        zk = np.clip((ring_k_pos[:, 2] - zc) / ww, -1.0, 1.0)
        phi_top = np.arccos(zk)
        phi_top[14:] = 2.0 * np.pi - phi_top[14:]
        phi_top[0], phi_top[13] = 0.0, np.pi
        phi = (1.0 - t_col) * phi_even + t_col * phi_top
        skew = PALM_ROW_SKEW[r] * size * (1.0 - np.sin(phi)) / 2.0
        half = ww - h_med
        base = np.stack([x - skew, np.full(PALM_COLS, y_c), zc + half * np.cos(phi)], axis=1)
        d = np.stack([np.zeros(PALM_COLS), np.sin(phi), np.cos(phi)], axis=1)
        bases.append(base)
        dirs.append(d)
        rads.append(np.full(PALM_COLS, 0.012 * size))
    return np.concatenate(bases), np.concatenate(dirs), np.concatenate(rads)


def cast_rays(
    sdf: Callable[[np.ndarray], np.ndarray], origin: np.ndarray, direction: np.ndarray, t_max: float = 0.1
) -> np.ndarray:
    """Distance along each ray from ``origin`` (inside) to where it first leaves the surface.

    Marches by 0.8 of the distance bound (at least 0.4 mm) until the value turns
    positive, then refines the bracket by regula falsi (Illinois variant).

    Args:
        sdf: the implicit surface.
        origin: ``(N, 3)`` ray origins, inside the surface.
        direction: ``(N, 3)`` unit directions.
        t_max: give up beyond this distance (the result is then about ``t_max``).

    Returns:
        ``(N,)`` distances, to ~1e-10 m.
    """
    N = origin.shape[0]
    t = np.zeros(N)
    lo, flo = np.zeros(N), np.full(N, -1.0)
    hi, fhi = np.full(N, t_max), np.full(N, 1.0)
    active = np.ones(N, dtype=bool)
    for _ in range(300):
        ia = np.nonzero(active)[0]
        if len(ia) == 0:
            break
        f = sdf(origin[ia] + t[ia, None] * direction[ia])
        inside = f < 0.0
        i_in, i_out = ia[inside], ia[~inside]
        lo[i_in], flo[i_in] = t[i_in], f[inside]
        hi[i_out], fhi[i_out] = t[i_out], f[~inside]
        active[i_out] = False
        t[i_in] += np.maximum(0.8 * -f[inside], 4e-4)
        over = i_in[t[i_in] >= t_max]
        active[over] = False
    side = np.zeros(N, dtype=np.int64)
    for _ in range(14):
        m = hi - fhi * (hi - lo) / (fhi - flo)
        fm = sdf(origin + m[:, None] * direction)
        inside = fm < 0.0
        fhi = np.where(inside & (side == -1), 0.5 * fhi, fhi)  # Illinois: halve the stale end
        flo = np.where(~inside & (side == 1), 0.5 * flo, flo)
        lo, flo = np.where(inside, m, lo), np.where(inside, fm, flo)
        hi, fhi = np.where(inside, hi, m), np.where(inside, fhi, fm)
        side = np.where(inside, -1, 1)
    return hi - fhi * (hi - lo) / (fhi - flo)


def _rays(sk: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray origin, direction and expected depth of every vertex, ``(V, 3), (V, 3), (V,)``, construction order.

    The thumb's transition rings get placeholders here (see :func:`_initial_surface`).
    """
    bl = _blocks()
    size = sk.shape.size
    nv = bl.num_verts
    O, D, R = np.zeros((nv, 3)), np.zeros((nv, 3)), np.zeros(nv)

    def put(ids: np.ndarray, o: np.ndarray, d: np.ndarray, r: np.ndarray) -> None:
        ids = np.asarray(ids).ravel()
        keep = ids >= 0
        O[ids[keep]], D[ids[keep]], R[ids[keep]] = o[keep], unit(d[keep]), r[keep]

    for name in LONG_FINGERS:
        f = sk.fingers[name]
        o, d, r = _tube_rays(f, np.array([RING0_S * size]), RING, _skews(np.array([0.0]), size))
        put(bl.ring0[name], o, d, r)
        s = _finger_ring_s(f, size)
        o, d, r = _tube_rays(f, s, RING, _skews(s, size))
        oc, dc, rc = _cap_rays(f, RING)
        ids = np.concatenate(bl.rings[name] + [[bl.tips[name]]])
        put(ids, np.concatenate([o, oc]), np.concatenate([d, dc]), np.concatenate([r, rc]))
    f = sk.fingers["thumb"]
    o, d, r = _tube_rays(f, _thumb_ring_s(f), THUMB_RING)
    oc, dc, rc = _cap_rays(f, THUMB_RING)
    ids = np.concatenate(bl.rings["thumb"][len(THUMB_TRANSITION) :] + [[bl.tips["thumb"]]])
    put(ids, np.concatenate([o, oc]), np.concatenate([d, dc]), np.concatenate([r, rc]))
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        a, b = sk.fingers[fa], sk.fingers[fb]
        o = 0.5 * (a.joints[0] + b.joints[0]) - 0.002 * size * DORSAL
        put(np.array([w]), o[None], (a.dirs[0] + b.dirs[0])[None], np.array([0.008 * size]))
    # palm rows, aligned at the top with ring K (cast first)
    ring_k = np.array([bl.ring0[fn][k] for fn, k in _ring_k_of_col()])
    t = cast_rays(hand_sdf(sk), O[ring_k], D[ring_k])
    o, d, r = _palm_rays(sk, O[ring_k] + t[:, None] * D[ring_k])
    put(bl.palm.ravel(), o, d, r)
    # wrist cap: from inside the stump towards the cut
    row = bl.palm[0]
    o = 0.5 * (O[row[1:13]] + O[row[PALM_COLS - 1 : 13 : -1]]) - np.array([0.012 * size, 0.0, 0.0])
    put(bl.cap, o, np.tile([1.0, 0.0, 0.0], (CAP_INTERIOR, 1)), np.full(CAP_INTERIOR, 0.012 * size))
    return O, D, R


def _orient(faces: np.ndarray) -> np.ndarray:
    """Faces re-wound so that every edge is used once in each direction (BFS from face 0)."""
    faces = faces.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, (a, b, c) in enumerate(faces):
        for u, v in ((a, b), (b, c), (c, a)):
            edge_faces.setdefault((min(u, v), max(u, v)), []).append(fi)
    if any(len(v) != 2 for v in edge_faces.values()):
        raise AssertionError("open hand topology is not a closed 2-manifold")
    seen = np.zeros(len(faces), dtype=bool)
    seen[0] = True
    queue = [0]
    while queue:
        fi = queue.pop()
        a, b, c = faces[fi]
        for u, v in ((a, b), (b, c), (c, a)):
            for fj in edge_faces[(min(u, v), max(u, v))]:
                if fj == fi or seen[fj]:
                    continue
                x, y, z = faces[fj]
                if (u, v) in ((x, y), (y, z), (z, x)):  # same direction: flip
                    faces[fj] = (x, z, y)
                seen[fj] = True
                queue.append(fj)
    return faces


def _triangulate(polys: Sequence[tuple[int, ...]], verts: np.ndarray) -> np.ndarray:
    """Split quads along their shorter diagonal (measured on ``verts``)."""
    tris = []
    for p in polys:
        if len(p) == 3:
            tris.append(p)
            continue
        a, b, c, d = p
        if np.linalg.norm(verts[a] - verts[c]) <= np.linalg.norm(verts[b] - verts[d]):
            tris += [(a, b, c), (a, c, d)]
        else:
            tris += [(a, b, d), (b, c, d)]
    return np.array(tris, dtype=np.int64)


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (m^3) of a closed mesh; positive when the faces wind outwards."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _resample_loop(loop: np.ndarray, n: int) -> np.ndarray:
    """``(n, 3)`` points along a closed polyline ``(m, 3)`` at fractional indices ``k m / n``."""
    m = len(loop)
    u = np.arange(n) * m / n
    i0 = np.floor(u).astype(np.int64)
    w = (u - i0)[:, None]
    return (1.0 - w) * loop[i0 % m] + w * loop[(i0 + 1) % m]


def _hole_match(hole_pos: np.ndarray, ring_pos: np.ndarray, thumb: Finger) -> tuple[int, int]:
    """Start index and direction of the hole loop that pair it with the thumb's first shaft ring.

    The direction is the one that turns around the thumb's axis the same way as the ring
    (counter-clockwise about the metacarpal seen from the tip), so the bands between
    them are not twisted inside out; the start minimises the distance between the hole
    loop resampled to the ring's size and the ring.
    """
    x, y = hole_pos @ thumb.lateral[0], hole_pos @ thumb.dorsal[0]
    area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    direction = 1 if area > 0 else -1
    m = len(hole_pos)
    best = None
    for start in range(m):
        loop = hole_pos[(start + direction * np.arange(m)) % m]
        cost = float(np.linalg.norm(_resample_loop(loop, len(ring_pos)) - ring_pos, axis=1).sum())
        if best is None or cost < best[0]:
            best = (cost, start)
    return best[1], direction


def self_intersections(verts: np.ndarray, faces: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``(K, 2)`` pairs of faces that cross each other (pairs sharing a vertex are not tested).

    An edge of one triangle passing through the other (Moller-Trumbore, strictly inside
    both, so touching at a point does not count) means the two cross. Candidates are the
    pairs whose bounding spheres and boxes overlap.

    (open3d's ``is_self_intersecting`` reports some far-apart, nearly coplanar triangle
    pairs as crossing; this is the check handanno uses.)
    """
    from scipy.spatial import cKDTree

    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]  # (F, 3, 3)
    centre = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centre[:, None], axis=2).max(axis=1)  # bounding spheres
    pairs = cKDTree(centre).query_pairs(2.0 * float(radius.max()), output_type="ndarray")  # (P, 2)
    near = np.linalg.norm(centre[pairs[:, 0]] - centre[pairs[:, 1]], axis=1) < radius[pairs[:, 0]] + radius[pairs[:, 1]]
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    near &= np.all((lo[pairs[:, 0]] <= hi[pairs[:, 1]]) & (lo[pairs[:, 1]] <= hi[pairs[:, 0]]), axis=1)
    pairs = pairs[near]
    fa, fb = np.asarray(faces)[pairs[:, 0]], np.asarray(faces)[pairs[:, 1]]
    shared = (fa[:, :, None] == fb[:, None, :]).any(axis=(1, 2))
    pairs = pairs[~shared]
    hit = np.zeros(len(pairs), dtype=bool)
    for first, second in ((0, 1), (1, 0)):
        A, B = tri[pairs[:, first]], tri[pairs[:, second]]  # edges of A against triangle B
        e1, e2 = B[:, 1] - B[:, 0], B[:, 2] - B[:, 0]
        for i in range(3):
            p0, d = A[:, i], A[:, (i + 1) % 3] - A[:, i]
            h = np.cross(d, e2)
            det = (e1 * h).sum(1)
            ok = np.abs(det) > eps
            inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
            sv = p0 - B[:, 0]
            u = inv * (sv * h).sum(1)
            q = np.cross(sv, e1)
            v = inv * (d * q).sum(1)
            t = inv * (e2 * q).sum(1)
            hit |= ok & (u > 0) & (v > 0) & (u + v < 1) & (t > 0) & (t < 1)
    return pairs[hit]


# ---------------------------------------------------------------------------------------
# Looking at it: a small ray-cast renderer for previews.
# ---------------------------------------------------------------------------------------

#: Preview views: (name, direction from the hand towards the camera, camera up), right-hand frame.
PREVIEW_VIEWS = (
    ("back", (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),
    ("palm", (0.0, -1.0, 0.0), (-1.0, 0.0, 0.0)),
    ("thumb side", (0.25, 0.3, 1.0), (-1.0, 0.0, 0.0)),
    ("oblique", (0.5, -0.6, 0.6), (-1.0, 0.0, 0.0)),
)


def render_views(
    verts: np.ndarray,
    faces: np.ndarray,
    views: Sequence = PREVIEW_VIEWS,
    size_px: int = 360,
    colour_bgr: Sequence[float] = (150, 180, 225),
    wireframe: bool = False,
) -> np.ndarray:
    """Shaded renders of a mesh from several directions, side by side.

    Casts one ray per pixel from a pinhole camera with open3d's ``RaycastingScene`` and
    Lambert-shades the interpolated vertex normals (light from the camera, plus ambient).
    Back faces (inside-out triangles) are drawn red so winding errors show.

    Args:
        verts: ``(V, 3)`` metres.
        faces: ``(F, 3)`` vertex ids.
        views: (name, towards-camera direction, up) per panel, in the mesh's frame.
        size_px: each panel is ``size_px`` square.
        colour_bgr: the skin colour.
        wireframe: darken the triangles' edges.

    Returns:
        ``(size_px, size_px * len(views), 3)`` uint8 BGR image.
    """
    import open3d as o3d

    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    check_shape(verts, ("V", 3), "verts")
    check_shape(faces, ("F", 3), "faces")
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    vn = vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
    fn = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    centre = 0.5 * (verts.min(0) + verts.max(0))
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    fov = np.deg2rad(30.0)
    dist = radius / np.sin(fov / 2.0) * 1.02
    panels = []
    u, v = np.meshgrid((np.arange(size_px) + 0.5) / size_px * 2 - 1, (np.arange(size_px) + 0.5) / size_px * 2 - 1)
    for _, towards, up in views:
        back = unit(np.asarray(towards, dtype=np.float64))
        up = np.asarray(up, dtype=np.float64)
        right = unit(np.cross(up, back))
        up = np.cross(back, right)
        eye = centre + dist * back
        tan = np.tan(fov / 2.0)
        d = -back[None, None] + tan * (u[..., None] * right[None, None] - v[..., None] * up[None, None])
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        rays = np.concatenate([np.broadcast_to(eye, d.shape), d], axis=-1).reshape(-1, 6).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        uv = hit["primitive_uvs"].numpy().astype(np.float64)
        ok = prim != o3d.t.geometry.RaycastingScene.INVALID_ID
        img = np.full((size_px * size_px, 3), 255.0)
        fi = prim[ok]
        w1, w2 = uv[ok, 0], uv[ok, 1]
        n = (1 - w1 - w2)[:, None] * vn[faces[fi, 0]] + w1[:, None] * vn[faces[fi, 1]] + w2[:, None] * vn[faces[fi, 2]]
        n = unit(n)
        dd = d.reshape(-1, 3)[ok]
        shade = 0.25 + 0.75 * np.clip(-(n * dd).sum(1), 0.0, 1.0)
        col = np.asarray(colour_bgr, dtype=np.float64)[None] * shade[:, None]
        backface = (fn[fi] * dd).sum(1) > 0
        col[backface] = np.array([40.0, 40.0, 230.0]) * shade[backface, None]
        if wireframe:
            col[np.minimum(np.minimum(w1, w2), 1 - w1 - w2) < 0.04] *= 0.55
        img[ok] = col
        panels.append(img.reshape(size_px, size_px, 3))
    out = np.concatenate(panels, axis=1)
    out[:, size_px::size_px] = 200.0
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# The surface: rays, projection, relaxation.
# ---------------------------------------------------------------------------------------

RELAX_ITERS = 32
RELAX_STEP = 0.5


_OFFSETS = np.concatenate([np.zeros((1, 3)), np.eye(3)])  # (4, 3)


def sdf_value_and_gradient(
    sdf: Callable[[np.ndarray], np.ndarray], p: np.ndarray, h: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """``sdf(p)`` ``(N,)`` and its forward-difference gradient ``(N, 3)``, in one call of ``sdf``."""
    N = p.shape[0]
    vals = sdf((p[None] + h * _OFFSETS[:, None]).reshape(-1, 3)).reshape(4, N)
    return vals[0], ((vals[1:4] - vals[0]) / h).T


def project_to_surface(sdf: Callable[[np.ndarray], np.ndarray], p: np.ndarray, iters: int = 4) -> np.ndarray:
    """Newton steps ``p - f g / |g|^2`` onto the zero set (a near-closest point)."""
    for _ in range(iters):
        f, g = sdf_value_and_gradient(sdf, p)
        p = p - (f / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
    return p


def _neighbours(faces: np.ndarray, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform-Laplacian operator as (indices, weights) over a padded neighbour table."""
    nb: list[set[int]] = [set() for _ in range(nv)]
    for a, b, c in faces:
        nb[a] |= {b, c}
        nb[b] |= {a, c}
        nb[c] |= {a, b}
    m = max(len(s) for s in nb)
    idx = np.zeros((nv, m), dtype=np.int64)
    wgt = np.zeros((nv, m))
    for i, s in enumerate(nb):
        ss = sorted(s)
        idx[i, : len(ss)] = ss
        wgt[i, : len(ss)] = 1.0 / len(ss)
    return idx, wgt


def _initial_surface(sk: Skeleton, hole_ring: np.ndarray) -> tuple[np.ndarray, Callable]:
    """Vertices where their rays meet the surface (construction order), and the surface.

    A ray that runs much deeper than expected (into the palm) is replaced by a projection
    from its expected depth. The thumb's transition rings are cast from points on the
    thumb's axis through points between the hole loop and the first shaft ring.
    """
    sdf = hand_sdf(sk)
    O, D, R = _rays(sk)
    tr = _blocks().rings["thumb"]
    nt = len(THUMB_TRANSITION)
    todo = np.ones(len(O), dtype=bool)
    todo[np.concatenate(tr[:nt])] = False
    t = cast_rays(sdf, O[todo], D[todo], t_max=0.12 * sk.shape.size)
    p = np.zeros_like(O)
    p[todo] = O[todo] + t[:, None] * D[todo]
    deep = np.zeros(len(O), dtype=bool)
    deep[todo] = t > 2.5 * R[todo]
    p[deep] = project_to_surface(sdf, O[deep] + R[deep, None] * D[deep], 8)
    thumb = sk.fingers["thumb"]
    start, end = p[hole_ring], p[tr[nt]]
    s_start = float(np.clip((start.mean(0) - thumb.joints[0]) @ thumb.dirs[0], 0.0, thumb.lengths[0]))
    s_end = float(_thumb_ring_s(thumb)[0])
    for i, m in enumerate(THUMB_TRANSITION):
        a = (i + 1) / (nt + 1)
        c = thumb.point(np.array([(1.0 - a) * s_start + a * s_end]))[0]
        d = unit((1.0 - a) * _resample_loop(start, m) + a * _resample_loop(end, m) - c)
        p[tr[i]] = c + cast_rays(sdf, np.repeat(c, m, 0), d)[:, None] * d
    return p, sdf


def _relax(p: np.ndarray, sdf: Callable, faces: np.ndarray, relax: np.ndarray) -> np.ndarray:
    """``RELAX_ITERS`` steps of tangential uniform-Laplacian smoothing of the ``relax`` vertices.

    Each step projects onto the surface by one Newton step and moves along the tangent
    plane; three Newton steps end it.
    """
    p = p.copy()
    idx, wgt = _neighbours(faces, len(p))
    ids = np.nonzero(relax)[0]
    q = p[ids]
    for _ in range(RELAX_ITERS):
        f, g = sdf_value_and_gradient(sdf, q)
        gg = np.maximum((g * g).sum(1, keepdims=True), 1e-12)
        lap = (p[idx[ids]] * wgt[ids, :, None]).sum(1) - q
        lap -= (lap * g).sum(1, keepdims=True) / gg * g
        q = q - f[:, None] / gg * g + RELAX_STEP * lap
        p[ids] = q
    p[ids] = project_to_surface(sdf, q, 3)
    return p


def build_surface(sk: Skeleton, topo: Topology) -> np.ndarray:
    """Vertices ``(V, 3)`` (construction order) of the hand ``sk``.

    Casts every vertex's ray onto :func:`hand_sdf` (a ray that runs much deeper than
    expected, into the palm, starts instead from its expected depth and is projected),
    fills the thumb's transition rings between the hole in the palm and the thumb's first
    shaft ring, then evens out the palm and thumb base (``topo.relax``): tangential
    smoothing steps, each followed by projection onto the surface. Last, each web vertex
    goes to the bottom of its web (:func:`_place_webs`).
    """
    p, sdf = _initial_surface(sk, topo.hole_ring)
    p = _relax(p, sdf, topo.faces, topo.relax)
    return _place_webs(p, sdf, sk, topo.blocks)


def _place_webs(p: np.ndarray, sdf: Callable, sk: Skeleton, bl: Blocks) -> np.ndarray:
    """Put each web vertex at the bottom of its web: cast distally from the centre of its six neighbours."""
    p = p.copy()
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        d = unit(sk.fingers[fa].dirs[0] + sk.fingers[fb].dirs[0])
        c = p[_web_loop(bl, fa, fb)].mean(axis=0)
        o = c - (0.015 * sk.shape.size) * d  # back inside, between the two knuckles
        p[w] = o + cast_rays(sdf, o[None], d[None])[0] * d
    return p


def _web_loop(bl: Blocks, fa: str, fb: str) -> list[int]:
    """The six neighbours of the web vertex between fingers fa (radial) and fb, in order around it."""
    a0, b0, a1, b1 = bl.ring0[fa], bl.ring0[fb], bl.rings[fa][0], bl.rings[fb][0]
    return [a0[3], b0[1], b1[0], b0[7], a0[5], a1[4]]


@lru_cache(maxsize=1)
def hand_topology() -> Topology:
    """The connectivity (fixed; quads split and the thumb joined as they fit the mean hand best)."""
    bl = _blocks()
    sk = skeleton()
    sdf = hand_sdf(sk)
    O, D, _ = _rays(sk)
    tr = bl.rings["thumb"]
    nt = len(THUMB_TRANSITION)
    ids = np.concatenate([bl.hole, tr[nt]])
    pos = O[ids] + cast_rays(sdf, O[ids], D[ids])[:, None] * D[ids]
    nh = len(bl.hole)
    start, direction = _hole_match(pos[:nh], pos[nh:], sk.fingers["thumb"])
    hole_ring = bl.hole[(start + direction * np.arange(nh)) % nh]
    polys = _polys(bl, hole_ring)
    relax = np.zeros(bl.num_verts, dtype=bool)
    relax[bl.palm[1:][bl.palm[1:] >= 0]] = True
    for f in LONG_FINGERS:
        relax[bl.ring0[f][bl.ring0[f] >= 0]] = True
        relax[bl.rings[f][0]] = True
    relax[bl.cap] = True
    relax[np.concatenate(tr[: nt + 1])] = True
    p, sdf = _initial_surface(sk, hole_ring)
    faces = _orient(_triangulate(polys, p))
    p = _place_webs(_relax(p, sdf, faces, relax), sdf, sk, bl)
    faces = _orient(_triangulate(polys, p))
    if signed_volume(p, faces) < 0:
        faces = faces[:, ::-1].copy()
    return Topology(bl, faces, relax, hole_ring)


# ---------------------------------------------------------------------------------------
# Rigging: skinning weights and the joint regressor.
# ---------------------------------------------------------------------------------------

#: Half-widths (m) of the zone over which the skin blends from one bone to the next, per
#: joint of a chain: (MCP/CMC, PIP/MCP, DIP/IP).
BLEND_ZONE = {"long": (0.010, 0.0065, 0.0055), "thumb": (0.016, 0.011, 0.009)}
BLEND_PALMAR = 1.0  # ... and this much wider (relative) on the palmar side
THENAR_REACH = (0.010, 0.045)  # palm vertices this close to the thumb's metacarpal follow it (full, none)
WEIGHT_SMOOTHING = 8  # Laplacian smoothing steps of the weights over palm, webs and thumb base


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _chain_weights(v: np.ndarray, sk: Skeleton, name: str) -> np.ndarray:
    """``(N, 4)`` weights of (parent bone, bone 1, bone 2, bone 3) of one digit for points ``v``.

    Each joint k cuts space with the plane through it whose normal bisects the bones
    meeting there; ``H_k = smoothstep`` of the signed distance to that plane over
    ``+- BLEND_ZONE`` (up to ``1 + BLEND_PALMAR`` times wider on the palmar side, where
    the skin folds); bone k gets ``H_k - H_(k+1)`` (a partition of unity).
    """
    f = sk.fingers[name]
    zones = BLEND_ZONE["thumb" if name == "thumb" else "long"]
    into = [unit(f.joints[0] - sk.wrist), f.dirs[0], f.dirs[1]]  # the bone arriving at each joint
    H = []
    for k in range(3):
        n = unit(into[k] + f.dirs[k])
        s = (v - f.joints[k]) @ n
        # wider on the flexor (palmar) side, where the skin folds as the joint flexes
        depth = np.clip(-((v - f.joints[k]) @ f.dorsal[k]) / f.widths[k], 0.0, 1.0)
        z = zones[k] * (1.0 + BLEND_PALMAR * depth)
        H.append(_smoothstep((s + z) / (2.0 * z)))
    H = np.stack(H + [np.zeros(len(v))], axis=1)  # (N, 4)
    H = np.minimum.accumulate(H, axis=1)  # monotone along the chain
    out = np.empty((len(v), 4))
    out[:, 0] = 1.0 - H[:, 0]
    out[:, 1:] = H[:, :3] - H[:, 1:]
    return out


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    t = np.clip((p - a) @ d / (d @ d), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * d), axis=1)


def skinning_weights(verts: np.ndarray, sk: Skeleton, faces: np.ndarray) -> np.ndarray:
    """``(V, 16)`` linear-blend-skinning weights of the construction-order vertices.

    Every vertex belongs to one digit's chain (palm columns to the finger above them) and
    gets :func:`_chain_weights` of it, the parent bone being the wrist (joint 0). Palm
    vertices near the thumb's metacarpal (the thenar eminence, :data:`THENAR_REACH`)
    blend towards the thumb's chain. A web vertex takes the mean of its six neighbours'
    weights; then ``WEIGHT_SMOOTHING`` Laplacian steps smooth the weights over the palm,
    webs and thumb base (rows stay partitions of unity). Measured: a fist (every finger
    joint and the thumb's MCP and IP at 90 degrees) loses 10.3% of the volume and turns
    over no face.
    """
    bl = _blocks()
    V = len(verts)
    member = np.zeros((V, 5))  # membership in FINGERS order
    fidx = {n: i for i, n in enumerate(FINGERS)}
    col_finger = [fidx[f] for f, _ in _ring_k_of_col()]
    for r in range(PALM_ROWS):
        for c in range(PALM_COLS):
            if bl.palm[r, c] >= 0:
                member[bl.palm[r, c], col_finger[c]] = 1.0
    for f in LONG_FINGERS + ("thumb",):
        ids = np.concatenate(([] if f == "thumb" else [bl.ring0[f][bl.ring0[f] >= 0]]) + bl.rings[f] + [[bl.tips[f]]])
        member[ids.astype(np.int64), fidx[f]] = 1.0
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        member[w, fidx[fa]] = member[w, fidx[fb]] = 0.5  # replaced below
    member[bl.cap, fidx["middle"]] = 1.0  # far from any joint: all wrist
    th = sk.fingers["thumb"]
    palm_ids = bl.palm[bl.palm >= 0]
    dist = _segment_distance(verts[palm_ids], th.joints[0], th.joints[1])
    t = 1.0 - _smoothstep((dist - THENAR_REACH[0]) / (THENAR_REACH[1] - THENAR_REACH[0]))
    member[palm_ids] *= (1.0 - t)[:, None]
    member[palm_ids, fidx["thumb"]] += t
    W = np.zeros((V, NUM_MANO_JOINTS))
    for name in FINGERS:
        m = member[:, fidx[name]]
        sel = m > 0
        cw = _chain_weights(verts[sel], sk, name) * m[sel, None]
        W[sel, 0] += cw[:, 0]
        for k, j in enumerate(FINGER_JOINTS[name]):
            W[sel, j] += cw[:, k + 1]
    # a web vertex takes the mean of its six neighbours (it sits between two fingers whose
    # knuckles are at different heights, and would otherwise fold over when both flex)
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        W[w] = W[_web_loop(bl, fa, fb)].mean(axis=0)
    # smooth the weights over the palm, webs and thumb base (not the digits' shafts)
    region = np.ones(V, dtype=bool)
    for f in LONG_FINGERS:
        region[np.concatenate(bl.rings[f][1:] + [[bl.tips[f]]])] = False
    region[np.concatenate(bl.rings["thumb"][len(THUMB_TRANSITION) :] + [[bl.tips["thumb"]]])] = False
    idx, wgt = _neighbours(faces, V)
    ids = np.nonzero(region)[0]
    for _ in range(WEIGHT_SMOOTHING):
        W[ids] = 0.5 * W[ids] + 0.5 * np.einsum("nm,nmj->nj", wgt[ids], W[idx[ids]])
    return W / W.sum(axis=1, keepdims=True)


def _convex_weights(points: np.ndarray, target: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 with ``weights @ points == target``, closest to ``prior``.

    Least-change solution of the 4 equality constraints; weights that come out negative
    are fixed at zero and the rest solved again (an active-set iteration).
    """
    free = np.ones(len(points), dtype=bool)
    for _ in range(len(points)):
        A = np.concatenate([points[free].T, np.ones((1, free.sum()))])  # (4, n)
        b = np.concatenate([target, [1.0]])
        w0 = prior[free]
        w = w0 + A.T @ np.linalg.solve(A @ A.T, b - A @ w0)
        if w.min() >= 0.0:
            out = np.zeros(len(points))
            out[free] = w
            return out
        ids = np.nonzero(free)[0]
        free[ids[w < 0.0]] = False
    raise AssertionError("joint regressor: the joint lies outside the hull of its vertices")


JREG_NEIGHBOURS = 24  # vertices per joint in the regressor


def joint_regressor(verts: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """``(16, V)`` dense regressor writing each joint as a convex combination of nearby vertices.

    For joint j: the ``JREG_NEIGHBOURS`` vertices nearest to it among those skinned mostly
    to j or its parent; weights non-negative, summing to 1, reproducing ``joints[j]``
    exactly on ``verts`` and as close as possible to a Gaussian fall-off with distance.
    Since the rows are convex combinations, the joints follow any shape change that moves
    the skin around them (exactly so for affine changes).
    """
    V = len(verts)
    R = np.zeros((NUM_MANO_JOINTS, V))
    dominant = np.argmax(weights, axis=1)
    for j in range(NUM_MANO_JOINTS):
        own = (dominant == j) | (dominant == MANO_PARENTS[j]) if j > 0 else dominant == 0
        ids = np.nonzero(own)[0]
        d = np.linalg.norm(verts[ids] - joints[j], axis=1)
        near = ids[np.argsort(d, kind="stable")[:JREG_NEIGHBOURS]]
        dn = np.linalg.norm(verts[near] - joints[j], axis=1)
        prior = np.exp(-((dn / dn.max()) ** 2))
        R[j, near] = _convex_weights(verts[near], joints[j], prior / prior.sum())
    return R


# ---------------------------------------------------------------------------------------
# Plain-numpy forward kinematics and linear blend skinning (an oracle for the layer).
# ---------------------------------------------------------------------------------------


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """``(*, 3)`` axis-angle (radians) to ``(*, 3, 3)`` rotation matrices (Rodrigues' formula)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)  # (*, 1)
    k = aa / np.maximum(theta, 1e-12)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1.0 - c) * K @ K


def axis_angle_of(R: np.ndarray) -> np.ndarray:
    """``(*, 3, 3)`` rotations to ``(*, 3)`` axis-angle (angles below pi)."""
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    w = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    s = np.sin(theta)
    scale = np.where(s > 1e-9, theta / np.maximum(2.0 * s, 1e-300), 0.5)
    return w * scale[..., None]


def lbs(model: dict, full_pose: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MANO's forward pass in numpy, float64: the same maths as smplx's ``lbs``.

    Args:
        model: a MANO-format dict (``v_template, shapedirs, posedirs, J_regressor,
            weights, kintree_table``).
        full_pose: ``(B, 16, 3)`` axis-angle of every joint (global first), absolute
            (any ``hands_mean`` already added).
        betas: ``(B, 10)``.
        trans: ``(B, 3)`` metres.

    Returns:
        vertices ``(B, V, 3)`` and the 16 posed joints ``(B, 16, 3)``, metres.

    Convention:
        Eq. (1)-(4) of SMPL/MANO: ``v_shaped = T + S beta``, ``J = R_J v_shaped``,
        ``v_posed = v_shaped + P (R(theta) - I)``, then blend of the joints' rigid
        transforms with the skinning weights, plus ``trans``.
    """
    full_pose = np.asarray(full_pose, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    check_shape(full_pose, ("B", NUM_MANO_JOINTS, 3), "full_pose")
    B = full_pose.shape[0]
    check_shape(betas, (B, NUM_BETAS), "betas")
    check_shape(trans, (B, 3), "trans")
    parents = np.asarray(model["kintree_table"], dtype=np.int64)[0].copy()
    parents[0] = -1
    v_shaped = model["v_template"][None] + np.einsum("vck,bk->bvc", model["shapedirs"], betas)  # (B, V, 3)
    J = np.einsum("jv,bvc->bjc", model["J_regressor"], v_shaped)  # (B, 16, 3)
    R = rodrigues(full_pose)  # (B, 16, 3, 3)
    feat = (R[:, 1:] - np.eye(3)).reshape(B, -1)  # (B, 135)
    v_posed = v_shaped + np.einsum("vck,bk->bvc", np.asarray(model["posedirs"], dtype=np.float64), feat)
    G = np.zeros((B, NUM_MANO_JOINTS, 4, 4))
    for j in range(NUM_MANO_JOINTS):
        local = np.zeros((B, 4, 4))
        local[:, :3, :3] = R[:, j]
        local[:, :3, 3] = J[:, j] - (J[:, parents[j]] if j > 0 else 0.0)
        local[:, 3, 3] = 1.0
        G[:, j] = local if j == 0 else G[:, parents[j]] @ local
    posed_joints = G[:, :, :3, 3].copy()
    G[:, :, :3, 3] -= np.einsum("bjcd,bjd->bjc", G[:, :, :3, :3], J)  # transforms relative to the rest pose
    T = np.einsum("vj,bjcd->bvcd", model["weights"], G)  # (B, V, 4, 4)
    verts = np.einsum("bvcd,bvd->bvc", T[:, :, :3, :3], v_posed) + T[:, :, :3, 3]
    return verts + trans[:, None], posed_joints + trans[:, None]


def flexion_axes(sk: Skeleton | None = None) -> np.ndarray:
    """``(16, 3)`` unit axis about which each joint flexes (right hand; row 0, the wrist, is zero).

    A positive rotation about it curls the bone the joint drives towards the palm (for the
    thumb: towards its pad). It is the bone's lateral axis ``cross(dorsal, bone)``.
    """
    sk = skeleton() if sk is None else sk
    out = np.zeros((NUM_MANO_JOINTS, 3))
    for name, ids in FINGER_JOINTS.items():
        out[list(ids)] = sk.fingers[name].lateral
    return out


# ---------------------------------------------------------------------------------------
# The articulation space: a relaxed mean and a PCA basis of plausible poses.
# ---------------------------------------------------------------------------------------

POSE_SAMPLES = 1554  # as many as MANO's hands_coeffs rows
POSE_SEED = 20240611


def _joint_rotation(f: Finger, k: int, flex: np.ndarray, abd: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """``(N, 3)`` axis-angle of bone k of digit f from flexion, abduction and twist angles.

    Flexion is about the bone's lateral axis, abduction about its dorsal axis, twist
    about itself, composed in that order (flexion outermost).
    """
    R = (
        rodrigues(flex[:, None] * f.lateral[k])
        @ rodrigues(abd[:, None] * f.dorsal[k])
        @ rodrigues(twist[:, None] * f.dirs[k])
    )
    return axis_angle_of(R)


def sample_articulations(sk: Skeleton, n: int = POSE_SAMPLES, seed: int = POSE_SEED) -> np.ndarray:
    """``(n, 45)`` plausible articulations (absolute axis-angle of joints 1..15, MANO order).

    A synthetic distribution standing in for captured hands: a grasp synergy closing all
    fingers together, per-finger variation (sometimes a pointing index), flexion coupled
    along each finger (DIP ~ 0.7 PIP) within joint ranges, knuckle spread shrinking with
    flexion, small twists, and a thumb that opposes as the hand closes. Its mean is a
    relaxed, slightly curled hand.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n, NUM_MANO_JOINTS, 3))
    g = rng.uniform(-0.25, 0.85, n)  # grasp closure
    spread = rng.normal(0.0, 0.10, n)
    spread_gain = {"index": 1.0, "middle": 0.2, "ring": -0.6, "pinky": -1.0}
    abd_mean = {"index": -0.05, "middle": 0.0, "ring": 0.04, "pinky": 0.10}
    curl_bias = {"index": -0.05, "middle": 0.0, "ring": 0.05, "pinky": 0.10}
    pointing = rng.uniform(size=n) < 0.15
    for name in LONG_FINGERS:
        f = sk.fingers[name]
        c = np.clip(g + curl_bias[name] + rng.normal(0.0, 0.22, n), -0.5, 1.5)
        if name == "index":
            c = np.where(pointing, rng.uniform(-0.35, 0.15, n), c)
        mcp = np.clip(0.35 + 0.9 * (c - 0.3) + rng.normal(0.0, 0.10, n), -0.45, 1.60)
        pip = np.clip(0.50 + 1.1 * (c - 0.3) + rng.normal(0.0, 0.12, n), -0.05, 1.90)
        dip = np.clip(0.25 + 0.7 * (pip - 0.5) + rng.normal(0.0, 0.10, n), -0.10, 1.40)
        abd = (abd_mean[name] + spread_gain[name] * spread + rng.normal(0.0, 0.04, n)) * (
            1.0 - 0.5 * np.clip(mcp / 1.5, 0.0, 1.0)
        )
        j1, j2, j3 = FINGER_JOINTS[name]
        out[:, j1] = _joint_rotation(f, 0, mcp, abd, rng.normal(0.0, 0.03, n))
        out[:, j2] = _joint_rotation(f, 1, pip, rng.normal(0.0, 0.02, n), rng.normal(0.0, 0.03, n))
        out[:, j3] = _joint_rotation(f, 2, dip, rng.normal(0.0, 0.02, n), rng.normal(0.0, 0.03, n))
    th = sk.fingers["thumb"]
    o = rng.uniform(-0.2, 1.0, n)  # opposition
    ct = np.clip(0.5 * g + rng.normal(0.0, 0.3, n), -0.3, 1.2)
    cmc = np.clip(0.30 + 0.5 * (o - 0.4) + rng.normal(0.0, 0.08, n), -0.3, 1.0)
    out[:, 13] = _joint_rotation(th, 0, cmc, rng.normal(0.0, 0.20, n), 0.15 * (o - 0.4) + rng.normal(0.0, 0.05, n))
    tmcp = np.clip(0.15 + 0.35 * ct + rng.normal(0.0, 0.10, n), -0.2, 1.0)
    tip = np.clip(0.20 + 0.50 * ct + rng.normal(0.0, 0.12, n), -0.3, 1.4)
    out[:, 14] = _joint_rotation(th, 1, tmcp, rng.normal(0.0, 0.05, n), rng.normal(0.0, 0.03, n))
    out[:, 15] = _joint_rotation(th, 2, tip, rng.normal(0.0, 0.03, n), rng.normal(0.0, 0.03, n))
    return out[:, 1:].reshape(n, 45)


def pose_space(sk: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hands_mean (45,)``, ``hands_components (45, 45)`` and ``hands_coeffs (n, 45)``.

    The mean of :func:`sample_articulations`, the principal axes of the samples about it
    (rows, unit length, by decreasing variance, each with its largest entry positive) and
    the samples' coordinates in that basis, as in MANO's file.
    """
    X = sample_articulations(sk)
    mean = X.mean(axis=0)
    Y = X - mean
    _, vecs = np.linalg.eigh(Y.T @ Y)  # ascending eigenvalues
    Vt = vecs[:, ::-1].T  # (45, 45) rows by decreasing variance
    sign = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
    comps = Vt * sign[:, None]
    return mean, comps, Y @ comps.T


# ---------------------------------------------------------------------------------------
# Poses for previews and checks.
# ---------------------------------------------------------------------------------------


def model_flexion_axes(side: str = "right") -> np.ndarray:
    """:func:`flexion_axes` of the mean hand for ``side`` (the left's mirrored as axis-angle)."""
    axes = flexion_axes()
    return axes if side == "right" else axes * _MIRROR_AXIS_ANGLE


def curl_pose(side: str, flex: dict[str, Sequence[float]]) -> np.ndarray:
    """``(16, 3)`` full pose (absolute axis-angle) flexing each named digit's 3 joints by the given radians."""
    axes = model_flexion_axes(side)
    pose = np.zeros((NUM_MANO_JOINTS, 3))
    for name, angles in flex.items():
        for j, a in zip(FINGER_JOINTS[name], angles, strict=True):
            pose[j] = a * axes[j]
    return pose


def preview_poses(model: dict, side: str) -> dict[str, np.ndarray]:
    """Named ``(16, 3)`` full poses (absolute axis-angle) to look at the model with.

    ``open``: the flat rest pose; ``relaxed``: pose zeros in the layer (``hands_mean``);
    ``fist``: every finger curled (MCP 85, PIP 95, DIP 55 degrees) with the thumb over
    them; ``pinch``: thumb tip on index tip (solved by least squares on both digits).
    """
    from scipy.optimize import least_squares

    rest = np.zeros((NUM_MANO_JOINTS, 3))
    relaxed = rest.copy()
    relaxed[1:] = np.asarray(model["hands_mean"]).reshape(15, 3)
    fist = curl_pose(side, {f: np.deg2rad([85, 95, 55]) for f in LONG_FINGERS} | {"thumb": np.deg2rad([40, 35, 40])})
    tips = np.asarray(model["tip_vertex_ids"])
    zeros = np.zeros((1, NUM_BETAS)), np.zeros((1, 3))

    def pinch(x: np.ndarray) -> np.ndarray:
        curls = {
            "thumb": x[:3],
            "index": x[3:6],
            "middle": np.deg2rad([25, 30, 15]),
            "ring": np.deg2rad([30, 35, 15]),
            "pinky": np.deg2rad([35, 35, 15]),
        }
        return curl_pose(side, curls)

    def residual(x: np.ndarray) -> np.ndarray:
        v, _ = lbs(model, pinch(x)[None], *zeros)
        gap = v[0, tips[0]] - v[0, tips[1]]
        prior = 0.02 * (x - np.deg2rad([45, 20, 20, 45, 50, 30]))  # stay near a natural pinch
        return np.concatenate([gap / 0.01, prior])

    x = least_squares(residual, np.deg2rad([45, 20, 20, 45, 50, 30]), bounds=(np.deg2rad(-10), np.deg2rad(100))).x
    return {"open": rest, "relaxed": relaxed, "fist": fist, "pinch": pinch(x)}


@dataclass(frozen=True)
class DeformationReport:
    """How well a pose deforms the mesh (see :func:`deformation_report`).

    Attributes:
        volume_ratio: posed / rest enclosed volume.
        flipped: faces whose normal turned against the skinning's own rotation of it.
        min_cos: the smallest cosine between a face's posed normal and its rest normal
            carried by the blended rotation of its vertices (negative: a flip).
        min_area_ratio: the smallest posed / rest face area (near 0: a collapse).
    """

    volume_ratio: float
    flipped: int
    min_cos: float
    min_area_ratio: float


def deformation_report(model: dict, full_pose: np.ndarray) -> DeformationReport:
    """Volume change, flipped and collapsed faces of the mean shape posed by ``full_pose (16, 3)``.

    A face "flips" when its posed normal points away from its rest normal transformed by
    the blend of its vertices' joint rotations (what linear blend skinning would give
    the face if it did not fold).
    """
    faces = np.asarray(model["f"])
    rest = np.asarray(model["v_template"], dtype=np.float64)
    posed, _ = lbs(model, np.asarray(full_pose)[None], np.zeros((1, NUM_BETAS)), np.zeros((1, 3)))
    posed = posed[0]

    def normals(v: np.ndarray) -> np.ndarray:
        return np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # (F, 3)

    R = rodrigues(np.asarray(full_pose, dtype=np.float64))  # (16, 3, 3)
    parents = np.asarray(model["kintree_table"])[0]
    G = np.zeros_like(R)
    for j in range(NUM_MANO_JOINTS):
        G[j] = R[j] if j == 0 else G[parents[j]] @ R[j]
    A = np.einsum("vj,jcd->vcd", model["weights"], G)[faces].mean(axis=1)  # (F, 3, 3)
    n0, n1 = normals(rest), normals(posed)
    expected = np.einsum("fcd,fd->fc", A, n0)
    cos = (expected * n1).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(n1, axis=1)
    area = np.linalg.norm(n1, axis=1) / np.linalg.norm(n0, axis=1)
    return DeformationReport(
        signed_volume(posed, faces) / signed_volume(rest, faces),
        int((cos < 0).sum()),
        float(cos.min()),
        float(area.min()),
    )


def render_pose(
    model: dict, full_pose: np.ndarray, side: str, size_px: int = 360, wireframe: bool = False
) -> np.ndarray:
    """:func:`render_views` of the model posed by ``full_pose (16, 3)`` (mean shape, no translation).

    The left hand is seen from the mirrored directions, so both sides' previews look alike.
    """
    verts, _ = lbs(model, np.asarray(full_pose)[None], np.zeros((1, NUM_BETAS)), np.zeros((1, 3)))
    views = PREVIEW_VIEWS
    if side == "left":
        views = tuple((n, tuple(np.asarray(t) * _MIRROR), tuple(np.asarray(u) * _MIRROR)) for n, t, u in PREVIEW_VIEWS)
    return render_views(verts[0], np.asarray(model["f"]), views=views, size_px=size_px, wireframe=wireframe)


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


def build_surface_like(sk: Skeleton, topo: Topology, template: np.ndarray) -> np.ndarray:
    """Vertices ``(V, 3)`` of the hand ``sk`` that correspond to ``template``'s (construction order).

    The vertices placed by rays are cast as in :func:`build_surface`; the relaxed ones
    (palm, webs, thumb base) move by the harmonic interpolation of the ray-placed
    vertices' displacements from ``template`` and are projected onto the new surface. So
    a vertex keeps its place on the hand rather than sliding as a fresh relaxation would
    let it, and the shape blend shapes stay smooth enough to extrapolate to 3 standard
    deviations without folds.
    """
    import scipy.sparse
    import scipy.sparse.linalg

    p, sdf = _initial_surface(sk, topo.hole_ring)
    disp = p - template
    V = len(p)
    e = np.concatenate([topo.faces[:, [0, 1]], topo.faces[:, [1, 2]], topo.faces[:, [2, 0]]])
    adj = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    lap = (scipy.sparse.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj).tocsr()  # (V, V) graph Laplacian
    free = topo.relax.copy()
    free[topo.blocks.webs] = True  # placed afresh below
    u, k = np.nonzero(free)[0], np.nonzero(~free)[0]
    A = lap[u][:, u].tocsc()
    rhs = -(lap[u][:, k] @ disp[k])  # (U, 3)
    disp[u] = np.stack([scipy.sparse.linalg.spsolve(A, rhs[:, c]) for c in range(3)], axis=1)
    p[u] = project_to_surface(sdf, template[u] + disp[u], 6)
    return _place_webs(p, sdf, sk, topo.blocks)


def shape_directions(topo: Topology, verts: np.ndarray, sk: Skeleton) -> np.ndarray:
    """``(V, 3, 10)`` shape blend shapes (construction order): metres per unit beta.

    Beta 0 scales about the wrist joint (exactly linear); beta i > 0 is the change of the
    generated surface (:func:`build_surface_like`) when :data:`SHAPE_BASIS` field i moves
    by one standard deviation.
    """
    out = np.zeros((len(verts), 3, NUM_BETAS))
    out[:, :, 0] = SHAPE_BASIS[0][1] * (verts - sk.wrist)
    base = HandShape()
    for i, (name, std, _) in enumerate(SHAPE_BASIS[1:], start=1):
        shape = replace(base, **{name: getattr(base, name) + std})
        out[:, :, i] = build_surface_like(skeleton(shape), topo, verts) - verts
    return out


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


_MIRROR = np.array([-1.0, 1.0, 1.0])  # x -> -x
_MIRROR_AXIS_ANGLE = np.array([1.0, -1.0, -1.0])  # a rotation vector is a pseudovector: det(M) M r


def mirror_model(model: dict) -> dict:
    """The other hand: the mirror image ``x -> -x`` of a MANO-format model.

    Positions and blend-shape directions negate x; faces reverse their winding (so they
    still face outwards); axis-angle vectors (the pose mean and components) become
    ``(x, -y, -z)``, as in MANO's left hand; pose blend shapes follow
    ``R -> M R M``. Weights, regressor, tree and tip ids are unchanged.
    """
    out = dict(model)
    out["v_template"] = model["v_template"] * _MIRROR
    out["J"] = model["J"] * _MIRROR
    out["shapedirs"] = model["shapedirs"] * _MIRROR[None, :, None]
    # posedirs[v, c, 9 j + 3 a + b] multiplies (R_j - I)[a, b]; under M = diag(m) that entry
    # becomes m_a m_b (R - I)[a, b], and the displacement's c component gets m_c.
    sign = (_MIRROR[:, None, None] * _MIRROR[None, :, None] * _MIRROR[None, None, :]).reshape(3, 9)  # (c, 3a+b)
    out["posedirs"] = (model["posedirs"] * np.tile(sign, (1, NUM_MANO_JOINTS - 1))[None]).astype(
        model["posedirs"].dtype
    )
    out["f"] = model["f"][:, ::-1].copy()
    flip = np.tile(_MIRROR_AXIS_ANGLE, NUM_MANO_JOINTS - 1)
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
    """``python -m handanno.models.open_hand --out handanno/assets``: regenerate the shipped model files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent.parent / "assets"),
        help="folder for open_hand_right.pkl and open_hand_left.pkl (default: handanno/assets)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_assets(args.out)


if __name__ == "__main__":
    main()
