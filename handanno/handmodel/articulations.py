"""Hand articulations over time: the joint angles of a hand that moves like a hand.

Two generators, both smooth in time and drawn on the anatomical axes of a model's skeleton
(:mod:`handanno.handmodel.hand_axes`): ``anatomical`` (flexion about the fitter's own axes)
and ``realistic`` (published ranges of motion, twist at the knuckles, oblique hinges, fists
and grips). ``handanno synth`` poses its hands with them (:mod:`handanno.synth.motion`), and
the fitter's pose prior is built from their statistics (:mod:`handanno.handmodel.pose_prior`).
"""

from __future__ import annotations

import logging

import numpy as np

from handanno.errors import HandannoError
from handanno.handmodel.hand_axes import FREE_JOINTS, HINGE_JOINTS, HandAxes, joint_bases
from handanno.handmodel.hand_axes import unit as _unit
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle

log = logging.getLogger(__name__)


def smooth_signal(rng: np.random.Generator, num_frames: int, fps: float, freq_hz: tuple[float, float] = (0.1, 0.5),
                  num_terms: int = 3) -> np.ndarray:
    """A smooth random signal ``(T,)`` in ``[-1, 1]``: a sum of low-frequency sinusoids.

    Term ``k`` has a random frequency in ``freq_hz``, a random phase and amplitude
    ``1 / (k + 1)``; the sum is divided by the amplitudes' sum, so it never leaves [-1, 1].

    Example:
        >>> x = smooth_signal(np.random.default_rng(0), 50, 15.0)
        >>> x.shape, bool(np.abs(x).max() <= 1), bool(np.abs(np.diff(x)).max() < 0.25)
        ((50,), True, True)
    """
    t = np.arange(num_frames) / fps  # (T,) seconds
    amps = 1.0 / np.arange(1, num_terms + 1)
    freqs = rng.uniform(*freq_hz, size=num_terms)
    phases = rng.uniform(0, 2 * np.pi, size=num_terms)
    return (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0) / amps.sum()


def articulation_trajectory(axes: HandAxes, num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth, anatomically bounded finger motion as full MANO joint axis-angles ``(T, 15, 3)``.

    Every session holds its own hand posture, about which the fingers move: a grip strength
    ``g ~ U(0, 1)`` shared by the hand and one ``u ~ U(0, 1)`` per finger give each finger's
    mean curl ``0.5 g + 0.5 u`` (open hands, fists, pointing and in between); the curl then
    moves by up to 0.35 about it, 60 % a shared signal and 40 % its own (0.15-0.6 Hz). MCP
    flexes in [-10, 80] deg, PIP in [0, 100] deg, DIP = 0.7 PIP (tendon coupling). The
    knuckles spread by up to about 12 deg, less when curled. The thumb's mean opposition
    ``0.4 g + 0.6 u`` moves likewise; its CMC moves in front of the palm (0-40 deg) and across
    it (-15-25 deg), MCP 0-50 deg, IP -10-70 deg. Angles are "full" (relative to the flat
    hand), not relative to ``hands_mean``.
    """
    T = num_frames
    freq = (0.15, 0.6)
    common = smooth_signal(rng, T, fps, freq)
    out = np.zeros((T, 15, 3))
    d2r = np.pi / 180
    # MANO finger joints (first of three) and their spread direction / weight.
    fingers = {"index": (1, -1.0), "middle": (4, -0.2), "ring": (10, 0.6), "pinky": (7, 1.3)}
    spread_amt = 0.5 + 0.5 * smooth_signal(rng, T, fps, (0.05, 0.3))  # (T,) in [0, 1]
    grip = rng.uniform(0.0, 1.0)
    for j0, spread_dir in fingers.values():
        mean_curl = 0.5 * grip + 0.5 * rng.uniform(0.0, 1.0)
        curl = np.clip(mean_curl + 0.35 * (0.6 * common + 0.4 * smooth_signal(rng, T, fps, freq)), 0.0, 1.0)  # (T,)
        pip = np.clip(curl + 0.2 * smooth_signal(rng, T, fps), 0.0, 1.0)
        mcp_deg = -10 + 90 * curl
        pip_deg = 100 * pip
        dip_deg = 0.7 * pip_deg + 5 * smooth_signal(rng, T, fps)
        spread_deg = spread_dir * 9 * spread_amt * (1 - 0.7 * curl)
        out[:, j0 - 1] = mcp_deg[:, None] * d2r * axes.flex[j0 - 1] + spread_deg[:, None] * d2r * axes.spread[j0 - 1]
        out[:, j0] = pip_deg[:, None] * d2r * axes.flex[j0]
        out[:, j0 + 1] = np.clip(dip_deg, 0, 75)[:, None] * d2r * axes.flex[j0 + 1]
    mean_thumb = 0.4 * grip + 0.6 * rng.uniform(0.0, 1.0)
    thumb = np.clip(mean_thumb + 0.35 * (0.5 * common + 0.5 * smooth_signal(rng, T, fps, freq)), 0, 1)  # (T,)
    cmc_front = 40 * thumb
    cmc_across = -15 + 40 * np.clip(thumb + 0.2 * smooth_signal(rng, T, fps), 0, 1)
    mcp = 50 * np.clip(thumb + 0.15 * smooth_signal(rng, T, fps), 0, 1)
    ip = -10 + 80 * np.clip(thumb + 0.2 * smooth_signal(rng, T, fps), 0, 1)
    n, s = axes.palm_normal, axes.thumb_side
    d_thumb = _unit(np.cross(axes.spread[12], s))  # in-plane direction of the thumb's first bone
    front_axis = _unit(np.cross(d_thumb, n))
    out[:, 12] = (cmc_front[:, None] * front_axis + cmc_across[:, None] * axes.spread[12]) * d2r
    out[:, 13] = mcp[:, None] * d2r * axes.flex[13]
    out[:, 14] = ip[:, None] * d2r * axes.flex[14]
    return out


# --------------------------------------------------------------------------- realistic postures

#: The posture generators of ``handanno synth --postures``.
POSTURES = ("anatomical", "realistic")

#: Active range of motion, degrees (negative: extension beyond straight), of the joints the
#: ``realistic`` generator moves, from the clinical norms (AAOS, "Joint motion: method of
#: measuring and recording", 1965; the same figures in Eaton's hand-surgery reference, eatonhand.com):
#: finger MCP 45 hyperextension / 90 flexion, PIP 0 / 100, DIP 0 / 80-90, MCP abduction 20; thumb
#: CMC radial abduction 60-70 and palmar abduction 45, MCP 10 / 55, IP 15-20 / 80. Hands stay a
#: few degrees inside the extremes of hyperextension and a little beyond the norms of flexion
#: (strong fists press the fingers into the palm), and 8 deg or more inside the ranges the fit's
#: acceptance test allows (:data:`handanno.annotate.quality.JOINT_LIMITS_DEG`).
REALISTIC_ROM_DEG = {
    "mcp": (-25.0, 92.0), "pip": (-5.0, 110.0), "dip": (-12.0, 85.0), "mcp_abd": (-22.0, 22.0),
    "cmc_palmar": (-10.0, 50.0), "cmc_radial": (-20.0, 45.0), "thumb_mcp": (-10.0, 55.0), "thumb_ip": (-15.0, 80.0),
}  # fmt: skip

# Posture classes of the realistic generator and their probabilities.
_REALISTIC_KINDS = {"free": 0.24, "relaxed": 0.12, "fist": 0.15, "grasp": 0.12, "pinch": 0.1, "point": 0.08,
                    "flat": 0.08, "hook": 0.05, "two": 0.06}  # fmt: skip
_LONG = ("index", "middle", "ring", "pinky")
_FIRST_JOINT = {"index": 1, "middle": 4, "ring": 10, "pinky": 7}  # MANO joint of each finger's MCP
_SPREAD_DIR = {"index": -1.0, "middle": -0.2, "ring": 0.6, "pinky": 1.3}  # + = towards the pinky
# MCP axial rotation at full flexion, degrees, + = supination (ring and small finger supinate as
# the hand cups around an object, the index pronates: Krishnan & Chipchase 1997).
_MCP_SUPINATION_DEG = {"index": -8.0, "middle": 2.0, "ring": 8.0, "pinky": 12.0}
# Sideways tilt of the PIP / DIP flexion axes, degrees, - = towards the thumb: flexed fingers
# converge towards the scaphoid tubercle, the small finger most.
_HINGE_CONVERGENCE_DEG = {"index": 1.0, "middle": -1.0, "ring": -3.0, "pinky": -5.0}
# |twist| and |sideways| limits (degrees) of the realistic postures per joint kind, on the joints'
# [twist, flex, side] axes: 8 deg inside the acceptance test's ranges (quality.JOINT_LIMITS_DEG).
_TWIST_SIDE_LIMIT_DEG = {"mcp": (12.0, 22.0), "hinge": (12.0, 12.0), "thumb_mcp": (22.0, 22.0)}


def _soft_clip(x: np.ndarray, lo: float, hi: float, knee: float = 3.0) -> np.ndarray:
    """``x`` kept within ``[lo, hi]`` smoothly (softplus knees of ``knee`` units): no kinks in time."""
    return x - knee * np.logaddexp(0.0, (x - hi) / knee) + knee * np.logaddexp(0.0, (lo - x) / knee)


def _joint_frame(axes: HandAxes, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``bone``, ``flex`` and ``spread`` axes of MANO joint ``j + 1``, made orthogonal to the bone."""
    d = axes.bone[j]
    f = _unit(axes.flex[j] - (axes.flex[j] @ d) * d)
    sp = axes.spread[j] - (axes.spread[j] @ d) * d - (axes.spread[j] @ f) * f
    return d, f, _unit(sp)


def _compose(flex_axis: np.ndarray, flex: np.ndarray, spread_axis: np.ndarray, spread: np.ndarray,
             bone: np.ndarray, twist: np.ndarray) -> np.ndarray:  # fmt: skip
    """``(T, 3)`` axis-angle of ``R_flex @ R_spread @ R_twist`` (angles ``(T,)`` in degrees)."""
    d2r = np.pi / 180
    parts = [np.broadcast_to(np.asarray(a, np.float64) * d2r, np.shape(flex))[:, None] * ax
             for a, ax in ((flex, flex_axis), (spread, spread_axis), (twist, bone))]  # fmt: skip
    R = axis_angle_to_matrix(np.stack(parts))  # (3, T, 3, 3)
    return matrix_to_axis_angle(R[0] @ R[1] @ R[2])


def _handedness(axes: HandAxes) -> float:
    """+1 for a right hand, -1 for a left one (the palm faces ``s x f`` on a right hand)."""
    return float(np.sign(axes.palm_normal @ np.cross(axes.thumb_side, axes.bone[3])))


def _draw_realistic_posture(rng: np.random.Generator) -> tuple[str, dict[str, np.ndarray], np.ndarray, float]:
    """One session's posture.

    Returns its class, per finger ``[mcp, pip, dip]`` degrees, the thumb's ``[cmc_palmar,
    cmc_radial, mcp, ip, opposition]`` and the knuckles' spread in [0, 1].
    """
    kinds = list(_REALISTIC_KINDS)
    kind = kinds[rng.choice(len(kinds), p=np.array(list(_REALISTIC_KINDS.values())))]
    u = rng.uniform

    def curl(c: float) -> np.ndarray:  # a finger at curl c (0 straight, 1 full fist), joints loosely coupled
        mcp = -20 + 112 * (c + rng.normal(0, 0.1))
        pip = 108 * (c + rng.normal(0, 0.12))
        return np.array([mcp, pip, (2 / 3) * pip + rng.normal(0, 8)])  # DIP ~ 2/3 PIP (Rijpkema & Girard 1991)

    def fist() -> np.ndarray:
        return np.array([u(78, 95), u(90, 110), u(50, 88)])

    def straight() -> np.ndarray:
        return np.array([u(-20, 15), u(-3, 15), u(-8, 10)])

    fingers: dict[str, np.ndarray] = {}
    o = u(0, 1)  # thumb opposition
    thumb = np.array([-5 + 50 * o, u(-15, 40), u(-5, 50), u(-10, 70), o])
    spread = u(0, 1)
    if kind == "free":
        g = u(-0.15, 1.0)
        fingers = {f: curl(0.5 * g + 0.5 * u(-0.2, 1.05)) for f in _LONG}
    elif kind == "relaxed":  # the resting cascade: each finger a little more curled than the last
        base = u(0.05, 0.35)
        fingers = {f: curl(base + 0.06 * i + rng.normal(0, 0.04)) for i, f in enumerate(_LONG)}
    elif kind == "fist":
        fingers = {f: fist() for f in _LONG}
        thumb = np.array([u(28, 45), u(22, 40), u(35, 55), u(15, 60), u(0.6, 1.0)])  # wrapped over the fingers
    elif kind == "grasp":  # around a cylinder
        c = u(0.45, 0.8)
        fingers = {f: np.array([u(35, 70), u(45, 90), u(20, 55)]) * (0.6 + 0.6 * c) for f in _LONG}
        thumb = np.array([u(30, 50), u(5, 30), u(10, 35), u(5, 40), u(0.6, 1.0)])
    elif kind == "pinch":  # thumb tip towards the index (and middle) tip
        fingers = {"index": np.array([u(30, 60), u(35, 75), u(10, 50)]),
                   "middle": np.array([u(25, 65), u(30, 80), u(10, 55)]) if u() < 0.5 else curl(u(0.1, 0.9)),
                   "ring": curl(u(0.0, 1.0)), "pinky": curl(u(0.0, 1.0))}  # fmt: skip
        thumb = np.array([u(30, 50), u(10, 35), u(10, 40), u(0, 45), u(0.6, 1.0)])
    elif kind == "point":
        fingers = {"index": straight(), **{f: fist() for f in _LONG[1:]}}
        thumb = np.array([u(20, 45), u(15, 40), u(20, 50), u(10, 60), u(0.4, 1.0)])
    elif kind == "flat":  # an open hand pushed flat: hyperextended knuckles, fingers spread
        fingers = {f: np.array([u(-35, 0), u(-5, 8), u(-12, 5)]) for f in _LONG}
        thumb = np.array([u(-10, 10), u(-20, 0), u(-10, 10), u(-15, 10), u(0.0, 0.2)])
        spread = u(0.5, 1.0)
    elif kind == "hook":  # knuckles straight, the finger joints curled (carrying a bag)
        fingers = {f: np.array([u(-20, 15), u(75, 105), u(45, 80)]) for f in _LONG}
    else:  # "two": index and middle straight and spread, the others curled under the thumb
        fingers = {"index": straight(), "middle": straight(), "ring": fist(), "pinky": fist()}
        thumb = np.array([u(25, 45), u(20, 40), u(30, 50), u(20, 60), u(0.6, 1.0)])
        spread = u(0.6, 1.0)
    return kind, fingers, thumb, spread


def realistic_articulation_trajectory(axes: HandAxes, num_frames: int, fps: float,
                                      rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Smooth finger motion with the twist and sideways motion real hands show, ``(T, 15, 3)``.

    Unlike :func:`articulation_trajectory` (flexion about the fitter's own anatomical axes, hinges
    that only flex), this generator does not assume what the fitter's anatomical prior assumes:

    - **Postures** (per session, about which the fingers move): free per-finger curls, the relaxed
      cascade, fists pressed into the palm with the thumb wrapped over them, cylinder grasps,
      pinches, pointing, flat hyperextended hands, hooks and two-finger signs
      (``_REALISTIC_KINDS``); joints within the clinical ranges of motion of
      :data:`REALISTIC_ROM_DEG` (AAOS 1965), DIP ~ 2/3 PIP with scatter (Rijpkema & Girard 1991);
      MCP abduction up to about 20 deg, less in flexion (the collateral ligaments tighten).
    - **Twist at the knuckles**: the MCP joints rotate about the finger's own axis; passive axial
      rotation there is large, greater in supination, and greatest at the ring and small fingers
      (Krishnan & Chipchase, J Hand Surg Br 22:270-273, 1997). Here: a per-session offset (std 6
      deg), up to 12 deg of supination with flexion at the small finger (ring 8, middle 2; the
      index 8 deg of pronation), and a smooth +-4 deg.
    - **Oblique hinges**: the PIP / DIP / thumb IP flexion axes are not perpendicular to the
      phalanx (Hollister et al., Clin Orthop 320:188-193, 1995: the thumb IP pronates and deviates
      ulnarly as it flexes), and flexed fingers converge towards the scaphoid tubercle. Each hinge's
      axis is tilted towards the bone (per session std 5 deg: twist with flexion) and sideways (the
      small finger 5 deg towards the thumb, ring 3, per session std 3 deg), so 100 deg of flexion
      brings up to some 10-15 deg of twist and sideways motion; plus a smooth +-3 deg of passive
      twist. Twist and sideways motion stay (softly) within 12 deg at PIP / DIP / thumb IP and the
      finger MCPs' twist, 22 deg for MCP abduction and the thumb's MCP: 8 deg inside the ranges
      the fit's acceptance test allows (:data:`handanno.annotate.quality.JOINT_LIMITS_DEG`).
    - **The thumb**: CMC palmar abduction -10-50 deg and radial abduction -20-45 deg, with up to 30
      deg of pronation as it opposes; MCP -10-55 deg with +-5 deg sideways and twist; IP -15-80 deg.

    A hand model's pose space is not confined to flexion either: MANO's own PCA of 1,554 scanned
    poses (``hands_components``) mixes twist and sideways motion into its leading components, in
    part because its joints' rest frames are not the anatomical axes (Romero et al., "Embodied
    Hands", SIGGRAPH Asia 2017), and the per-session tilts above play that part here.

    Motion is smooth in time as in :func:`articulation_trajectory`: each finger's curl moves by
    up to 0.1-0.3 of its range about the posture (60 % a signal shared by the hand, 40 % its
    own, 0.15-0.6 Hz) plus a few degrees per joint; limits are soft (no kinks). Angles are
    "full" (relative to the flat hand), like :func:`articulation_trajectory`'s.
    """
    T = num_frames
    freq = (0.15, 0.6)
    h = _handedness(axes)
    rom = REALISTIC_ROM_DEG
    kind, fingers, thumb, spread = _draw_realistic_posture(rng)
    amp = rng.uniform(0.1, 0.3)  # curl motion about the posture, fraction of the range
    common = smooth_signal(rng, T, fps, freq)
    spread_t = np.clip(spread + 0.25 * smooth_signal(rng, T, fps, (0.05, 0.3)), 0.0, 1.0)  # (T,)
    out = np.zeros((T, 15, 3))
    for name in _LONG:
        j0 = _FIRST_JOINT[name] - 1  # index into the 15 articulated joints
        motion = amp * (0.6 * common + 0.4 * smooth_signal(rng, T, fps, freq))  # (T,) curl change
        base = fingers[name]
        mcp = _soft_clip(base[0] + 100 * motion + 6 * smooth_signal(rng, T, fps, freq), *rom["mcp"])
        pip = _soft_clip(base[1] + 100 * motion + 8 * smooth_signal(rng, T, fps, freq), *rom["pip"])
        dip = _soft_clip(base[2] + 70 * motion + 6 * smooth_signal(rng, T, fps, freq), *rom["dip"])
        flexed = np.clip(mcp / 90.0, 0.0, 1.0)
        abd = _soft_clip(_SPREAD_DIR[name] * 15 * spread_t * (1 - 0.7 * flexed) + rng.normal(0, 3)
                         + 2 * smooth_signal(rng, T, fps, freq), *rom["mcp_abd"])  # fmt: skip
        twist = h * (rng.normal(0, 6) + _MCP_SUPINATION_DEG[name] * flexed + 4 * smooth_signal(rng, T, fps, freq))
        d, f, sp = _joint_frame(axes, j0)
        out[:, j0] = _compose(f, mcp, sp, abd, d, twist)
        for k, angle in ((1, pip), (2, dip)):
            d, f, sp = _joint_frame(axes, j0 + k)
            tilt_side = np.deg2rad(_HINGE_CONVERGENCE_DEG[name] + rng.normal(0, 3))
            tilt_bone = np.deg2rad(rng.normal(0, 5))
            axis = _unit(f + np.tan(tilt_side) * sp + np.tan(tilt_bone) * d)
            passive = h * (rng.normal(0, 2) + 3 * smooth_signal(rng, T, fps, freq))
            out[:, j0 + k] = _compose(axis, angle, sp, np.zeros(T), d, passive)
    # the thumb: CMC (MANO joint 13), MCP (14), IP (15)
    t_motion = amp * (0.5 * common + 0.5 * smooth_signal(rng, T, fps, freq))
    palmar = _soft_clip(thumb[0] + 50 * t_motion + 4 * smooth_signal(rng, T, fps, freq), *rom["cmc_palmar"])
    radial = _soft_clip(thumb[1] + 40 * t_motion + 5 * smooth_signal(rng, T, fps, freq), *rom["cmc_radial"])
    t_mcp = _soft_clip(thumb[2] + 50 * t_motion + 5 * smooth_signal(rng, T, fps, freq), *rom["thumb_mcp"])
    t_ip = _soft_clip(thumb[3] + 70 * t_motion + 6 * smooth_signal(rng, T, fps, freq), *rom["thumb_ip"])
    opposition = np.clip(thumb[4] + t_motion, 0.0, 1.0)
    n, s = axes.palm_normal, axes.thumb_side
    d_thumb = _unit(np.cross(axes.spread[12], s))  # in-plane direction of the thumb's first bone
    front_axis = _unit(np.cross(d_thumb, n))
    pronation = -h * (30 * opposition + rng.normal(0, 4) + 3 * smooth_signal(rng, T, fps, freq))
    d = axes.bone[12]
    out[:, 12] = _compose(front_axis, palmar, _unit(axes.spread[12]), radial, d, pronation)
    d, f, sp = _joint_frame(axes, 13)
    out[:, 13] = _compose(f, t_mcp, sp, rng.normal(0, 5) + 2 * smooth_signal(rng, T, fps, freq), d,
                          h * (rng.normal(0, 5) + 2 * smooth_signal(rng, T, fps, freq)))  # fmt: skip
    d, f, sp = _joint_frame(axes, 14)
    # the IP's axis: ulnar deviation and pronation with flexion (Hollister et al. 1995)
    tilt_side, tilt_bone = np.deg2rad(4 + rng.normal(0, 2)), np.deg2rad(6 + rng.normal(0, 3))
    ip_axis = _unit(f + np.tan(tilt_side) * sp - h * np.tan(tilt_bone) * d)
    passive = h * (rng.normal(0, 2) + 3 * smooth_signal(rng, T, fps, freq))
    out[:, 14] = _compose(ip_axis, t_ip, sp, np.zeros(T), d, passive)
    log.debug("realistic posture %r, curl motion %.2f", kind, amp)
    return _limit_twist_and_side(out, axes)


_BASES_CACHE: dict[int, tuple[HandAxes, np.ndarray]] = {}


def _joint_bases_of(axes: HandAxes) -> np.ndarray:
    """:func:`~handanno.handmodel.hand_axes.joint_bases` of ``axes``, remembered for a few hands.

    Sampling a prior draws hundreds of sessions of one hand.
    """
    hit = _BASES_CACHE.get(id(axes))
    if hit is None or hit[0] is not axes:
        if len(_BASES_CACHE) > 8:
            _BASES_CACHE.clear()
        hit = _BASES_CACHE[id(axes)] = (axes, joint_bases(axes))
    return hit[1]


def _limit_twist_and_side(full: np.ndarray, axes: HandAxes) -> np.ndarray:
    """``full (T, 15, 3)`` with the joints' twist and sideways motion kept softly within limits.

    The components are read on each joint's [twist, flex, side] axes and held within
    ``_TWIST_SIDE_LIMIT_DEG``; the thumb's CMC is left free.
    """
    bases = _joint_bases_of(axes)  # (15, 3, 3)
    comps = np.einsum("jab,tjb->tja", bases, full)  # (T, 15, 3)
    for j in range(15):
        mano_j = j + 1
        if mano_j in FREE_JOINTS:
            continue
        kind = "hinge" if mano_j in HINGE_JOINTS else ("thumb_mcp" if mano_j == 14 else "mcp")
        for axis, lim in zip((0, 2), _TWIST_SIDE_LIMIT_DEG[kind], strict=True):
            comps[:, j, axis] = np.deg2rad(_soft_clip(np.rad2deg(comps[:, j, axis]), -lim, lim, knee=2.0))
    return np.einsum("jab,tja->tjb", bases, comps)


def sample_articulations(axes: HandAxes, sessions: int, postures: str = "realistic", seed: int = 0,
                         frames: int = 1) -> np.ndarray:  # fmt: skip
    """``(sessions * frames, 15, 3)`` full articulations from independent sessions of ``postures``.

    Session ``i`` draws from ``numpy.random.default_rng([seed, i])``; its ``frames`` are 1 s
    apart (at 1 fps the smooth signals decorrelate between frames). Deterministic for a
    ``seed``; what a pose prior of the generator's statistics is built from
    (:func:`handanno.handmodel.pose_prior.generator_statistics`).
    """
    if postures not in POSTURES:
        raise HandannoError(f"postures must be one of {', '.join(POSTURES)}, got {postures!r}")
    traj = articulation_trajectory if postures == "anatomical" else realistic_articulation_trajectory
    return np.concatenate([traj(axes, frames, 1.0, np.random.default_rng([seed, i])) for i in range(sessions)])


