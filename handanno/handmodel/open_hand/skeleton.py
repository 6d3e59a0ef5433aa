"""The open hand's skeleton: what the 10 betas mean, and the joints, bone frames and widths they give.

:func:`skeleton` places the 16 MANO joints and the 5 fingertips from :class:`HandShape`
(adult proportions: bone lengths after published averages of metacarpal and phalanx
lengths, in joint-centre distances); :data:`SHAPE_BASIS` says how far one unit of each beta
moves each measurement, :func:`shape_from_betas` turns betas into a :class:`HandShape`.

Convention:
    The right hand in MANO's canonical frame, metres (:mod:`handanno.handmodel.open_hand`):
    fingers point along -x, the back of the hand faces +y (:data:`DORSAL`), the thumb is on
    the +z side (:data:`RADIAL`). The left hand is the mirror image, x -> -x
    (:data:`MIRROR`; axis-angle vectors change by :data:`MIRROR_AXIS_ANGLE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import NUM_BETAS, NUM_MANO_JOINTS
from handanno.handmodel.hand_axes import unit

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

DORSAL = np.array([0.0, 1.0, 0.0])  # the back of the right hand faces +y
RADIAL = np.array([0.0, 0.0, 1.0])  # the thumb's side
#: The left hand is the right's mirror image: positions times MIRROR, axis-angle vectors times MIRROR_AXIS_ANGLE.
MIRROR = np.array([-1.0, 1.0, 1.0])  # x -> -x
MIRROR_AXIS_ANGLE = np.array([1.0, -1.0, -1.0])  # a rotation vector is a pseudovector: det(M) M r


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
        MANO's right-hand frame (this module's docstring), metres. ``size`` scales everything
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
