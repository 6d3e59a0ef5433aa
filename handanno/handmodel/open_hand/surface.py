"""The open hand's mesh: vertices cast onto the implicit surface, the final triangles, checks of a mesh.

:func:`build_surface` casts each vertex's ray (:func:`~handanno.handmodel.open_hand.topology.rays`)
onto :func:`~handanno.handmodel.open_hand.sdf.hand_sdf` and evens out the vertices with a
few steps of tangential smoothing, each followed by projection back onto the surface;
:func:`hand_topology` splits the quads and winds the faces as they fit the mean hand best;
:func:`build_surface_like` and :func:`shape_directions` give the same vertices on other
hands (the shape blend shapes); :func:`signed_volume` and :func:`self_intersections` check a
closed mesh.

Convention:
    Metres, the right hand's frame; vertices in construction order, faces ``(F, 3)`` wound
    outwards (counter-clockwise seen from outside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np

from handanno.data.conventions import NUM_BETAS
from handanno.handmodel.hand_axes import unit
from handanno.handmodel.open_hand.sdf import cast_rays, hand_sdf, project_to_surface, sdf_value_and_gradient
from handanno.handmodel.open_hand.skeleton import LONG_FINGERS, SHAPE_BASIS, Finger, HandShape, Skeleton, skeleton
from handanno.handmodel.open_hand.topology import (
    THUMB_TRANSITION,
    WEB_PAIRS,
    Blocks,
    Topology,
    blocks,
    neighbours,
    polygons,
    rays,
    thumb_ring_s,
    web_loop,
)

# ---------------------------------------------------------------------------------------
# The surface: casting, relaxation, webs; the final connectivity.
# ---------------------------------------------------------------------------------------

RELAX_ITERS = 32
RELAX_STEP = 0.5


def _initial_surface(sk: Skeleton, hole_ring: np.ndarray) -> tuple[np.ndarray, Callable]:
    """Vertices where their rays meet the surface (construction order), and the surface.

    A ray that runs much deeper than expected (into the palm) is replaced by a projection
    from its expected depth. The thumb's transition rings are cast from points on the
    thumb's axis through points between the hole loop and the first shaft ring.
    """
    sdf = hand_sdf(sk)
    O, D, R = rays(sk)
    tr = blocks().rings["thumb"]
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
    s_end = float(thumb_ring_s(thumb)[0])
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
    idx, wgt = neighbours(faces, len(p))
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
        c = p[web_loop(bl, fa, fb)].mean(axis=0)
        o = c - (0.015 * sk.shape.size) * d  # back inside, between the two knuckles
        p[w] = o + cast_rays(sdf, o[None], d[None])[0] * d
    return p


@lru_cache(maxsize=1)
def hand_topology() -> Topology:
    """The connectivity (fixed; quads split and the thumb joined as they fit the mean hand best)."""
    bl = blocks()
    sk = skeleton()
    sdf = hand_sdf(sk)
    O, D, _ = rays(sk)
    tr = bl.rings["thumb"]
    nt = len(THUMB_TRANSITION)
    ids = np.concatenate([bl.hole, tr[nt]])
    pos = O[ids] + cast_rays(sdf, O[ids], D[ids])[:, None] * D[ids]
    nh = len(bl.hole)
    start, direction = _hole_match(pos[:nh], pos[nh:], sk.fingers["thumb"])
    hole_ring = bl.hole[(start + direction * np.arange(nh)) % nh]
    polys = polygons(bl, hole_ring)
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
# The connectivity: quads split and wound on the mean hand, the thumb joined to its hole.
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Other shapes: the same vertices on another hand, and the shape blend shapes.
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Checks of a closed mesh.
# ---------------------------------------------------------------------------------------


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (m^3) of a closed mesh; positive when the faces wind outwards."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


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
