"""The open hand's fixed mesh connectivity, and the ray that places each vertex on the surface.

A hand-designed layout: rings of vertices around each finger, planar rows around the palm
with a hole the thumb leaves through, one vertex at the bottom of each web between two
fingers, and a wrist cap (genus 0, V = 778, F = 1552). :func:`blocks` allocates the vertex
ids of every part, :func:`polygons` joins them into quads and triangles and :func:`rays`
gives every vertex the ray from which it is cast onto the implicit surface.
:func:`handanno.handmodel.open_hand.surface.hand_topology` chooses the final triangles on the
mean hand and returns the :class:`Topology`.

Convention:
    Vertex ids are in construction order (the model's files permute them so that the
    fingertips sit at MANO's indices); metres, the right hand's frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from handanno.data.conventions import NUM_VERTS
from handanno.handmodel.hand_axes import unit
from handanno.handmodel.open_hand.sdf import cast_rays, hand_sdf
from handanno.handmodel.open_hand.skeleton import DORSAL, LONG_FINGERS, Finger, Skeleton

# ---------------------------------------------------------------------------------------
# Mesh connectivity (fixed) and where each vertex comes from.
# ---------------------------------------------------------------------------------------

WEB_PAIRS = (("index", "middle"), ("middle", "ring"), ("ring", "pinky"))  # (radial, ulnar) finger of each web
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


def ring_k_of_col() -> list[tuple[str, int]]:
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
        relax: ``(V,)`` vertices that :func:`~handanno.handmodel.open_hand.surface.build_surface` evens out
            after casting.
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
def blocks() -> Blocks:
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


def polygons(bl: Blocks, hole_ring: np.ndarray) -> list[tuple[int, ...]]:
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
    ring_k = np.array([ring0[f][k] for f, k in ring_k_of_col()])
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
        loop = web_loop(bl, fa, fb)
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


def thumb_ring_s(f: Finger) -> np.ndarray:
    """Arc lengths ``(len(THUMB_RING_S),)`` of the thumb's shaft rings (the distal bone without the tip's cap)."""
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
    x_mcp = np.array([sk.fingers[f].joints[0, 0] for f, _ in ring_k_of_col()])  # (PALM_COLS,)
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


def rays(sk: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray origin, direction and expected depth of every vertex, ``(V, 3), (V, 3), (V,)``, construction order.

    The thumb's transition rings get placeholders here (:func:`~handanno.handmodel.open_hand.surface.build_surface`
    casts them between the hole in the palm and the first shaft ring).
    """
    bl = blocks()
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
    o, d, r = _tube_rays(f, thumb_ring_s(f), THUMB_RING)
    oc, dc, rc = _cap_rays(f, THUMB_RING)
    ids = np.concatenate(bl.rings["thumb"][len(THUMB_TRANSITION) :] + [[bl.tips["thumb"]]])
    put(ids, np.concatenate([o, oc]), np.concatenate([d, dc]), np.concatenate([r, rc]))
    for w, (fa, fb) in zip(bl.webs, WEB_PAIRS, strict=True):
        a, b = sk.fingers[fa], sk.fingers[fb]
        o = 0.5 * (a.joints[0] + b.joints[0]) - 0.002 * size * DORSAL
        put(np.array([w]), o[None], (a.dirs[0] + b.dirs[0])[None], np.array([0.008 * size]))
    # palm rows, aligned at the top with ring K (cast first)
    ring_k = np.array([bl.ring0[fn][k] for fn, k in ring_k_of_col()])
    t = cast_rays(hand_sdf(sk), O[ring_k], D[ring_k])
    o, d, r = _palm_rays(sk, O[ring_k] + t[:, None] * D[ring_k])
    put(bl.palm.ravel(), o, d, r)
    # wrist cap: from inside the stump towards the cut
    row = bl.palm[0]
    o = 0.5 * (O[row[1:13]] + O[row[PALM_COLS - 1 : 13 : -1]]) - np.array([0.012 * size, 0.0, 0.0])
    put(bl.cap, o, np.tile([1.0, 0.0, 0.0], (CAP_INTERIOR, 1)), np.full(CAP_INTERIOR, 0.012 * size))
    return O, D, R


# ---------------------------------------------------------------------------------------
# Walking the connectivity.
# ---------------------------------------------------------------------------------------


def neighbours(faces: np.ndarray, nv: int) -> tuple[np.ndarray, np.ndarray]:
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


def web_loop(bl: Blocks, fa: str, fb: str) -> list[int]:
    """The six neighbours of the web vertex between fingers fa (radial) and fb, in order around it."""
    a0, b0, a1, b1 = bl.ring0[fa], bl.ring0[fb], bl.rings[fa][0], bl.rings[fb][0]
    return [a0[3], b0[1], b1[0], b0[7], a0[5], a1[4]]
