"""A ray caster for triangle meshes in plain PyTorch, for machines without open3d.

open3d's ``RaycastingScene`` (Embree, a BVH on the CPU) is the first choice of
:mod:`handanno.synth.raycast`; it has no wheels for some Pythons and platforms (and is too
large to carry to a GPU machine as a wheel). :class:`TorchScene` answers the same question,
first hit of every ray, with the Moller-Trumbore test, batched in chunks of rays x faces,
on the CPU or on CUDA, and returns the same fields as open3d's ``cast_rays``.

Work is kept near the pairs that can hit: when all rays leave one point (a camera), the
rays are placed on an image plane and cut into tiles of about 1,024 (bands of rows, each cut
along x); each tile tests only the faces whose projected bounding box overlaps the tile's box.
For the open hand model (1,552 faces) in the 8 cameras of a ``handanno synth`` dome at 640x480
that is 6.3 % of the ray-face pairs of the mesh's region of interest (measured; 1.2 s instead
of 5.6 s for the 8 views on 2 CPU cores; open3d: 0.06 s). Rays from different origins
(shadow rays) test every face, ``chunk_pairs`` at a time.

Convention:
    - ``rays``: ``(N, 6)`` ``[origin xyz, direction xyz]``, world metres; the hit parameter
      ``t`` is in units of the direction's length; hits need ``t > 0``.
    - Outputs (numpy, as open3d's): ``t_hit (N,)`` float32, inf on a miss;
      ``primitive_ids (N,)`` uint32, :data:`INVALID_ID` on a miss; ``primitive_uvs (N, 2)``
      float32, the barycentric weights of the face's vertices 1 and 2 (0 on a miss);
      ``primitive_normals (N, 3)`` float32 unit ``(v1 - v0) x (v2 - v0)`` (0 on a miss).
"""

from __future__ import annotations

import numpy as np
import torch

from handanno.check import check_shape

INVALID_ID = np.iinfo(np.uint32).max  # open3d's RaycastingScene.INVALID_ID
_TILE_RAYS = 1024  # rays per culled chunk (a tile of the shared origin's image plane)
_TILES_PER_BAND = 8  # tiles side by side in one band of rows
_DET_EPS = 1e-12  # |det| below this: the ray runs parallel to the face
_MIN_PLANE_Z = 1e-3  # a vertex or ray closer to the shared origin's plane than this disables culling


class TorchScene:
    """One triangle mesh, ready to cast rays into (see the module docstring).

    Args:
        vertices: ``(V, 3)`` world metres.
        faces: ``(F, 3)`` vertex indices.
        device: torch device; None picks CUDA when present.
        chunk_pairs: ray-face pairs tested at once without culling (bounds memory: about 60 bytes
            each); a culled tile tests at most its 1,024 rays x all faces.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, device: str | torch.device | None = None,
                 chunk_pairs: int | None = None):  # fmt: skip
        check_shape(vertices, ("V", 3), "vertices")
        check_shape(faces, ("F", 3), "faces")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.chunk_pairs = chunk_pairs or (1 << 25 if self.device.type == "cuda" else 1 << 21)
        self.vertices = torch.as_tensor(np.asarray(vertices, np.float64), device=self.device)  # (V, 3) float64
        self.faces = torch.as_tensor(np.asarray(faces, np.int64), device=self.device)  # (F, 3)
        v = self.vertices.float()
        self.v0 = v[self.faces[:, 0]]  # (F, 3)
        self.e1 = v[self.faces[:, 1]] - self.v0
        self.e2 = v[self.faces[:, 2]] - self.v0
        n = torch.linalg.cross(self.e1, self.e2)
        self.normals = n / n.norm(dim=1, keepdim=True).clamp_min(1e-30)

    def cast_rays(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        """First hit of every ray: ``t_hit``, ``primitive_ids``, ``primitive_uvs``, ``primitive_normals``."""
        rays = np.asarray(rays, np.float32)
        check_shape(rays, ("N", 6), "rays")
        N = len(rays)
        t_hit = torch.full((N,), float("inf"), device=self.device)
        ids = torch.full((N,), -1, dtype=torch.long, device=self.device)
        uvs = torch.zeros((N, 2), device=self.device)
        if N and len(self.faces):
            r = torch.as_tensor(rays, device=self.device)
            for ray_idx, face_idx in self._chunks(r):
                t, f, uv = _first_hits(r[ray_idx, :3], r[ray_idx, 3:], self.v0[face_idx], self.e1[face_idx],
                                       self.e2[face_idx])  # fmt: skip
                hit = torch.isfinite(t)
                t_hit[ray_idx] = t
                ids[ray_idx] = torch.where(hit, face_idx[f.clamp_min(0)], -1)
                uvs[ray_idx] = uv
        hit = ids >= 0
        normals = torch.where(hit[:, None], self.normals[ids.clamp_min(0)], 0.0)
        ids_np = ids.cpu().numpy()
        return {
            "t_hit": t_hit.cpu().numpy(),
            "primitive_ids": np.where(ids_np >= 0, ids_np, INVALID_ID).astype(np.uint32),
            "primitive_uvs": uvs.cpu().numpy(),
            "primitive_normals": normals.cpu().numpy(),
        }

    def _chunks(self, rays: torch.Tensor):
        """Yield ``(ray indices, candidate face indices)``: every pair that can hit is in one chunk."""
        N, F = len(rays), len(self.faces)
        all_faces = torch.arange(F, device=self.device)
        origin = rays[0, :3]
        planes = None
        if torch.all(rays[:, :3] == origin):
            planes = _plane_coordinates(origin.double(), rays[:, 3:].double(), self.vertices, self.faces)
        if planes is None:  # no culling: every ray against every face
            step = max(1, self.chunk_pairs // F)
            for s in range(0, N, step):
                yield torch.arange(s, min(s + step, N), device=self.device), all_faces
            return
        ray_xy, face_lo, face_hi, always = planes
        # Tiles of about _TILE_RAYS rays: bands of rows of the plane, each cut along x.
        order = torch.argsort(ray_xy[:, 1])
        band = _TILE_RAYS * _TILES_PER_BAND
        for s in range(0, N, band):
            rows = order[s : s + band]
            rows = rows[torch.argsort(ray_xy[rows, 0])]
            for s1 in range(0, len(rows), _TILE_RAYS):
                idx = rows[s1 : s1 + _TILE_RAYS]
                xy = ray_xy[idx]
                lo, hi = xy.min(0).values, xy.max(0).values
                keep = always | ((face_hi[:, 0] >= lo[0]) & (face_lo[:, 0] <= hi[0])
                                 & (face_hi[:, 1] >= lo[1]) & (face_lo[:, 1] <= hi[1]))  # fmt: skip
                cand = all_faces[keep]
                if len(cand):
                    yield idx, cand


def _plane_coordinates(origin: torch.Tensor, dirs: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor):
    """Rays and faces on the plane ``z = 1`` of a frame at the shared origin, for culling.

    Args:
        origin: ``(3,)`` float64 the rays' common origin.
        dirs: ``(N, 3)`` float64 ray directions.
        vertices: ``(V, 3)`` float64.
        faces: ``(F, 3)``.

    Returns:
        ``(ray_xy (N, 2), face_lo (F, 2), face_hi (F, 2), always (F,) bool)`` where ``always``
        marks faces with a vertex behind or on the plane (tested against every ray), or None
        when some ray does not point into the half-space ``z > 0`` (no culling then).
    """
    z = dirs.mean(0)
    if float(z.norm()) < 1e-12:
        return None
    z = z / z.norm()
    helper = torch.tensor([1.0, 0.0, 0.0] if abs(float(z[0])) < 0.9 else [0.0, 1.0, 0.0], dtype=z.dtype,
                          device=z.device)  # fmt: skip
    x = torch.linalg.cross(helper, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    B = torch.stack([x, y, z], 1)  # (3, 3) columns: the frame's axes
    dl = dirs @ B  # (N, 3)
    if float(dl[:, 2].min()) < _MIN_PLANE_Z * dirs.norm(dim=1).max():
        return None
    ray_xy = (dl[:, :2] / dl[:, 2:3]).float()
    vl = (vertices - origin) @ B  # (V, 3)
    vz = vl[:, 2]
    front = vz > _MIN_PLANE_Z
    vxy = vl[:, :2] / torch.where(front, vz, 1.0)[:, None]
    fxy = vxy[faces]  # (F, 3, 2)
    always = ~front[faces].all(1)
    pad = 1e-6
    return ray_xy, (fxy.min(1).values - pad).float(), (fxy.max(1).values + pad).float(), always


def _first_hits(o: torch.Tensor, d: torch.Tensor, v0: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor):
    """Moller-Trumbore: the nearest face each ray hits.

    Args:
        o: ``(R, 3)`` ray origins (float32).
        d: ``(R, 3)`` ray directions.
        v0: ``(F, 3)`` each face's first vertex.
        e1: ``(F, 3)`` its edge ``v1 - v0``.
        e2: ``(F, 3)`` its edge ``v2 - v0``.

    Returns:
        ``t (R,)`` (inf on a miss), ``face (R,)`` index into the F faces (-1 on a miss),
        ``uv (R, 2)`` barycentric weights of vertices 1 and 2 (0 on a miss).
    """
    ox, oy, oz = (o[:, k : k + 1] for k in range(3))  # (R, 1)
    dx, dy, dz = (d[:, k : k + 1] for k in range(3))
    ax, ay, az = (v0[None, :, k] for k in range(3))  # (1, F)
    e1x, e1y, e1z = (e1[None, :, k] for k in range(3))
    e2x, e2y, e2z = (e2[None, :, k] for k in range(3))
    px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x  # p = d x e2, (R, F)
    det = e1x * px + e1y * py + e1z * pz
    inv = 1.0 / torch.where(det.abs() > _DET_EPS, det, torch.ones_like(det))
    sx, sy, sz = ox - ax, oy - ay, oz - az  # s = o - v0
    u = (sx * px + sy * py + sz * pz) * inv
    qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x  # q = s x e1
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (e2x * qx + e2y * qy + e2z * qz) * inv
    ok = (det.abs() > _DET_EPS) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = torch.where(ok, t, float("inf"))
    t_min, face = t.min(1)  # (R,)
    hit = torch.isfinite(t_min)
    rows = torch.arange(len(o), device=o.device)
    uv = torch.stack([u[rows, face], v[rows, face]], 1) * hit[:, None]
    return t_min, torch.where(hit, face, -1), uv


__all__ = ["TorchScene", "INVALID_ID"]
