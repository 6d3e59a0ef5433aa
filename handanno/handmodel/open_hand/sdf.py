"""The open hand's implicit surface, and casting rays and projecting points onto such a surface.

:func:`hand_sdf` is a signed distance function: tapered elliptical capsules for the
phalanges, smoothly blended (polynomial smooth-min) to a palm of metacarpal capsules, palmar
pads, thenar and hypothenar eminences and a wrist stump cut flat. :func:`cast_rays`,
:func:`sdf_value_and_gradient` and :func:`project_to_surface` work on any such function.

Convention:
    Metres, the right hand's frame (:mod:`handanno.handmodel.open_hand.skeleton`). An SDF
    maps ``(N, 3)`` points to ``(N,)`` values, negative inside; its zero set is the skin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from handanno.handmodel.hand_axes import unit
from handanno.handmodel.open_hand.skeleton import (
    DORSAL,
    LONG_FINGERS,
    PALM_CENTRE_Z,
    RADIAL,
    WRIST_JOINT,
    Finger,
    Skeleton,
)

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
# Working with an implicit surface: rays and projection.
# ---------------------------------------------------------------------------------------


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
