"""Exact per-pixel ray casting of triangle meshes through distorted OpenCV cameras.

The casting itself is open3d's ``RaycastingScene`` (Embree) when open3d is installed, else
handanno's PyTorch caster (:mod:`handanno.synth.raycast_torch`, CPU or CUDA); the
environment variable ``HANDANNO_RAYCAST=open3d|torch`` forces one (:func:`raycast_backend`).

One ray per pixel goes through the pixel's *undistorted* direction, so lens distortion is
reproduced exactly instead of approximated by warping a pinhole render: a point hit by the
ray of pixel ``(u, v)`` projects back onto ``(u, v)`` with
``handanno.calibration.camera.project_points`` (Newton undistortion to float64 precision;
open3d's float32 rays leave about 1e-4 px). Masks, depth, face ids, barycentrics and
normals come from one cast; the synthetic data generator shades from them, and the fitter
and checks can reuse :func:`render_mask` for silhouettes and :func:`mask_iou`.

Typical use::

    scene = build_scene(vertices_world, faces)          # once per mesh, shared by cameras
    hits = raycast_mesh(vertices_world, faces, camera, scene)
    mask = hits.hit_mask                                 # (H, W) bool
    normals = interpolate_vertex_attributes(hits, faces, vertex_normals(vertices_world, faces))

Speed (640x480, a 778-vertex hand covering ~10 % of the image): the pixel grid of a camera
is undistorted once and cached (~0.3 s); a cast then takes a few milliseconds, because only
the pixels inside the mesh's bounding box in the undistorted image plane are cast
(:func:`roi_pixel_index`).

Convention:
    - Cameras as in :mod:`handanno.calibration.camera`: ``x_cam = R @ x_world + t`` (metres),
      camera looks down +z, x right, y down; pixel (0, 0) is the centre of the top-left
      pixel; ``image_size = (width, height)``.
    - Ray of pixel ``(u, v)``: origin the camera centre ``-R^T t``, direction
      ``R^T (x_n, y_n, 1)`` where ``(x_n, y_n)`` is the undistorted normalised coordinate of
      ``(u, v)``. The direction's camera-frame z is 1, so the ray parameter of a hit *is*
      its depth ``z_cam`` in metres.
    - Dense outputs are ``(H, W, ...)`` arrays indexed ``[v, u]``; ``face_ids[v, u] = f``
      means the ray of pixel ``(u, v)`` first hits face ``f`` (-1: no hit).
    - Barycentrics ``(w0, w1, w2)`` weight the face's vertices ``faces[f, 0..2]``; the hit
      point is ``w0 v0 + w1 v1 + w2 v2``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from handanno.calibration.camera import Camera, distort_normalized
from handanno.check import check_shape
from handanno.errors import HandannoError

# Undistortion round trips worse than this (px) mark a pixel's ray invalid (never hits).
_ROUND_TRIP_TOL_PX = 0.01
_GRID_CACHE_SIZE = 32


@dataclass(frozen=True)
class RayGrid:
    """The rays of every pixel of one camera, in the camera frame.

    Attributes:
        image_size: ``(width, height)`` pixels.
        x_n: ``(H * W,)`` float64 undistorted normalised x of the pixel centres, row-major
            (index ``v * W + u``); the ray direction in the camera frame is ``(x_n, y_n, 1)``.
        y_n: ``(H * W,)`` float64 undistorted normalised y.
        valid: ``(H * W,)`` bool, False where the undistortion did not round-trip within
            0.01 px (never the case for realistic distortion; such rays are not cast).

    Structure-of-arrays on purpose: ``(N, 3) @ (3, 3)`` products are ten times slower than
    a few fused scalar multiplications on contiguous columns for N ~ 1e6.
    """

    image_size: tuple[int, int]
    x_n: np.ndarray
    y_n: np.ndarray
    valid: np.ndarray

    @property
    def xy_norm(self) -> np.ndarray:
        """``(H * W, 2)`` stacked ``(x_n, y_n)``."""
        return np.stack([self.x_n, self.y_n], axis=1)


_grid_cache: OrderedDict[tuple, RayGrid] = OrderedDict()
_grid_lock = threading.Lock()


def _camera_key(camera: Camera) -> tuple:
    return (camera.K.tobytes(), camera.dist.tobytes(), tuple(camera.image_size))


def undistort_normalized(
    xd: np.ndarray, yd: np.ndarray, dist: np.ndarray, iterations: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`distort_normalized` by Newton's method, vectorised over points.

    Args:
        xd: ``(N,)`` distorted normalised x, i.e. ``(u - cx - s * yd) / fx``.
        yd: ``(N,)`` distorted normalised y, ``(v - cy) / fy``.
        dist: ``(5,)`` ``[k1, k2, p1, p2, k3]``.
        iterations: at most this many Newton steps from ``(xd, yd)``; it stops early once
            every step is below 1e-15 (quadratic convergence: 4-6 steps for realistic lenses).

    Returns:
        ``(x, y)``, each ``(N,)``, with ``distort_normalized((x, y)) == (xd, yd)``. Points
        beyond the lens model's fold do not converge; check the round trip.

    Convention:
        Same model as OpenCV's ``undistortPoints`` (which iterates a fixed point instead);
        the 2x2 Jacobian of the distortion is symmetric off the diagonal.

    Example:
        >>> dist = np.array([-0.15, 0.05, 1e-3, -2e-3, 0.0])
        >>> xy = np.array([[0.3, -0.2]])
        >>> xd = distort_normalized(xy, dist)
        >>> x, y = undistort_normalized(xd[:, 0], xd[:, 1], dist)
        >>> bool(np.allclose([x[0], y[0]], [0.3, -0.2], atol=1e-14))
        True
    """
    k1, k2, p1, p2, k3 = (float(d) for d in dist)
    x, y = xd.astype(np.float64).copy(), yd.astype(np.float64).copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        xy = x * y
        fx = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy - yd
        j11 = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        j12 = 2 * xy * d_radial + 2 * p1 * x + 2 * p2 * y  # = j21
        j22 = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = j11 * j22 - j12 * j12
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = (j22 * fx - j12 * fy) / det
            dy = (j11 * fy - j12 * fx) / det
        x -= dx
        y -= dy
        with np.errstate(invalid="ignore"):
            if not np.nanmax(np.abs(dx) + np.abs(dy), initial=0.0) > 1e-15:  # converged everywhere (or diverged)
                break
    return x, y


def pixel_ray_grid(camera: Camera) -> RayGrid:
    """Undistorted ray directions of all pixels of ``camera`` (cached per intrinsics).

    Newton's method (:func:`undistort_normalized`) on the pixel-centre grid, checked by the
    round trip through :func:`handanno.calibration.camera.distort_normalized` and ``K``
    (pixels that miss by more than 0.01 px are marked invalid). The cache holds the last
    32 distinct ``(K, dist, image_size)``; extrinsics do not matter, so moving a camera
    reuses its grid. About 0.1 s for 640x480.

    Args:
        camera: the camera.

    Returns:
        The :class:`RayGrid` (read-only arrays).
    """
    key = _camera_key(camera)
    with _grid_lock:
        if key in _grid_cache:
            _grid_cache.move_to_end(key)
            return _grid_cache[key]
    W, H = camera.image_size
    K = camera.K
    u = np.tile(np.arange(W, dtype=np.float64), H)  # (H*W,)
    v = np.repeat(np.arange(H, dtype=np.float64), W)  # (H*W,)
    yd = (v - K[1, 2]) / K[1, 1]
    xd = (u - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    x, y = undistort_normalized(xd, yd, camera.dist)
    back = distort_normalized(np.stack([x, y], axis=1), camera.dist)  # (H*W, 2)
    u_back = K[0, 0] * back[:, 0] + K[0, 1] * back[:, 1] + K[0, 2]
    v_back = K[1, 1] * back[:, 1] + K[1, 2]
    with np.errstate(invalid="ignore"):
        ok = (u_back - u) ** 2 + (v_back - v) ** 2 < _ROUND_TRIP_TOL_PX**2  # NaN compares False
    x = np.where(ok, x, 0.0)
    y = np.where(ok, y, 0.0)
    grid = RayGrid((W, H), x, y, ok)
    for arr in (grid.x_n, grid.y_n, grid.valid):
        arr.setflags(write=False)
    with _grid_lock:
        _grid_cache[key] = grid
        while len(_grid_cache) > _GRID_CACHE_SIZE:
            _grid_cache.popitem(last=False)
    return grid


def rotate_rows(M: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray | float = 1.0) -> np.ndarray:
    """``(N, 3)`` rows ``M^T (x, y, z)``, i.e. ``[x, y, z] @ M``, without a slow ``(N, 3) @ (3, 3)`` BLAS call.

    Args:
        M: ``(3, 3)``.
        x: ``(N,)`` first components.
        y: ``(N,)`` second components.
        z: ``(N,)`` third components, or one number for all.
    """
    out = np.empty((len(x), 3), np.float64)
    for j in range(3):
        out[:, j] = M[0, j] * x + M[1, j] * y + M[2, j] * z
    return out


def camera_rays_world(camera: Camera, pixel_index: np.ndarray | None = None) -> np.ndarray:
    """Open3d ray array ``(N, 6)`` float32 ``[origin xyz, direction xyz]`` in world coordinates.

    Args:
        camera: the camera.
        pixel_index: ``(N,)`` flat pixel indices ``v * W + u``; None for all pixels.

    Returns:
        ``(N, 6)`` rays; the direction is ``R^T (x_n, y_n, 1)``, whose camera-frame z is 1,
        so the ray parameter is the depth in metres.
    """
    grid = pixel_ray_grid(camera)
    x, y = (grid.x_n, grid.y_n) if pixel_index is None else (grid.x_n[pixel_index], grid.y_n[pixel_index])
    rays = np.empty((len(x), 6), np.float32)
    rays[:, :3] = camera.center
    rays[:, 3:] = rotate_rows(camera.R, x, y)  # R^T d: world direction
    return rays


RAYCAST_BACKEND_ENV = "HANDANNO_RAYCAST"  # "open3d" or "torch"; unset: open3d when installed


class Open3DScene:
    """open3d's ``RaycastingScene`` holding one mesh, answering in numpy arrays.

    Args:
        vertices: ``(V, 3)`` world coordinates, metres.
        faces: ``(F, 3)`` vertex indices.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        import open3d as o3d

        self._o3d = o3d
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)),
        )

    def cast_rays(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        """First hits of ``(N, 6)`` rays (fields as :mod:`handanno.synth.raycast_torch`)."""
        out = self.scene.cast_rays(self._o3d.core.Tensor(np.ascontiguousarray(rays, np.float32)))
        return {k: out[k].numpy() for k in ("t_hit", "primitive_ids", "primitive_uvs", "primitive_normals")}


def raycast_backend() -> str:
    """The ray caster :func:`build_scene` uses: ``"open3d"`` or ``"torch"``.

    ``$HANDANNO_RAYCAST`` chooses; unset, open3d when it can be imported, else the PyTorch
    caster (:mod:`handanno.synth.raycast_torch`, same answers, slower on the CPU).
    """
    name = os.environ.get(RAYCAST_BACKEND_ENV, "").strip().lower()
    if name in ("open3d", "torch"):
        return name
    if name:
        raise HandannoError(f"${RAYCAST_BACKEND_ENV}={name!r}: use open3d or torch")
    try:
        found = importlib.util.find_spec("open3d") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        found = False
    return "open3d" if found else "torch"


def build_scene(vertices: np.ndarray, faces: np.ndarray, backend: str | None = None):
    """A ray-casting scene holding one triangle mesh.

    Args:
        vertices: ``(V, 3)`` world coordinates, metres.
        faces: ``(F, 3)`` vertex indices.
        backend: ``"open3d"`` or ``"torch"``; None: :func:`raycast_backend`.

    Returns:
        An object whose ``cast_rays(rays (N, 6))`` returns numpy ``t_hit``, ``primitive_ids``,
        ``primitive_uvs`` and ``primitive_normals`` (:class:`Open3DScene` or
        :class:`handanno.synth.raycast_torch.TorchScene`).
    """
    check_shape(vertices, ("V", 3), "vertices")
    check_shape(faces, ("F", 3), "faces")
    backend = backend or raycast_backend()
    if backend == "open3d":
        return Open3DScene(vertices, faces)
    if backend == "torch":
        from handanno.synth.raycast_torch import TorchScene

        return TorchScene(vertices, faces)
    raise HandannoError(f"unknown ray-casting backend {backend!r}: use open3d or torch")


@dataclass(frozen=True)
class RayHits:
    """What the ray of each pixel of one camera hit.

    Attributes:
        hit_mask: ``(H, W)`` bool.
        depth_m: ``(H, W)`` float32 camera-frame z of the first hit, metres; inf where no hit.
        face_ids: ``(H, W)`` int64 first face hit; -1 where no hit.
        barycentrics: ``(H, W, 3)`` float32 weights ``(w0, w1, w2)`` of the hit face's
            vertices; 0 where no hit.
        normals_world: ``(H, W, 3)`` float32 unit geometric normal of the hit face in world
            coordinates, ``(v1 - v0) x (v2 - v0)`` normalised (the face's winding decides the
            side); 0 where no hit.
        pixel_index: ``(N,)`` int64 flat indices ``v * W + u`` of the hit pixels, ascending
            (the order of every sparse per-hit array in this module).
    """

    hit_mask: np.ndarray
    depth_m: np.ndarray
    face_ids: np.ndarray
    barycentrics: np.ndarray
    normals_world: np.ndarray
    pixel_index: np.ndarray


def roi_pixel_index(camera: Camera, points_world: np.ndarray, min_depth_m: float = 1e-3) -> np.ndarray | None:
    """Flat indices of the pixels whose rays can hit the convex hull of ``points_world``.

    Every point is mapped to the undistorted normalised plane ``(x/z, y/z)``; a triangle of a
    mesh whose vertices are all in front of the camera projects (in that plane, before
    distortion) inside the bounding box of its vertices, so rays outside the box cannot hit
    it. Returns None (meaning: cast all pixels) when some point is not in front of the
    camera.

    Args:
        camera: the camera.
        points_world: ``(N, 3)`` metres.
        min_depth_m: points closer than this count as "not in front".

    Returns:
        ``(M,)`` ascending flat pixel indices, or None.
    """
    check_shape(points_world, ("N", 3), "points_world")
    pc = camera.to_camera(points_world)  # (N, 3)
    if len(pc) == 0 or pc[:, 2].min() < min_depth_m:
        return None
    xy = pc[:, :2] / pc[:, 2:3]  # (N, 2)
    lo, hi = xy.min(axis=0) - 1e-6, xy.max(axis=0) + 1e-6
    grid = pixel_ray_grid(camera)
    gx, gy = grid.x_n, grid.y_n
    inside = grid.valid & (gx >= lo[0]) & (gx <= hi[0]) & (gy >= lo[1]) & (gy <= hi[1])
    return np.flatnonzero(inside)


def cast_camera(scene, camera: Camera, pixel_index: np.ndarray | None = None) -> RayHits:
    """Cast the rays of ``camera``'s pixels into ``scene``.

    Args:
        scene: a scene from :func:`build_scene`, world coordinates.
        camera: the camera.
        pixel_index: ``(N,)`` flat pixel indices to cast (e.g. from
            :func:`roi_pixel_index`); None casts every valid pixel. Pixels not cast count
            as misses.

    Returns:
        Dense :class:`RayHits` for the whole image.
    """
    W, H = camera.image_size
    grid = pixel_ray_grid(camera)
    idx = np.flatnonzero(grid.valid) if pixel_index is None else np.asarray(pixel_index, np.int64)
    idx = idx[grid.valid[idx]]
    hit_mask = np.zeros(H * W, bool)
    depth = np.full(H * W, np.inf, np.float32)
    face_ids = np.full(H * W, -1, np.int64)
    bary = np.zeros((H * W, 3), np.float32)
    normals = np.zeros((H * W, 3), np.float32)
    if len(idx):
        out = scene.cast_rays(camera_rays_world(camera, idx))
        t_hit = out["t_hit"]  # (N,) = depth, since the camera-frame z of each direction is 1
        hit = np.isfinite(t_hit)
        hidx = idx[hit]
        uvs = out["primitive_uvs"][hit]  # (n, 2): weights of vertices 1 and 2
        hit_mask[hidx] = True
        depth[hidx] = t_hit[hit]
        face_ids[hidx] = out["primitive_ids"][hit].astype(np.int64)
        bary[hidx, 0] = 1.0 - uvs[:, 0] - uvs[:, 1]
        bary[hidx, 1:] = uvs
        normals[hidx] = out["primitive_normals"][hit]
    else:
        hidx = np.zeros(0, np.int64)
    return RayHits(
        hit_mask.reshape(H, W),
        depth.reshape(H, W),
        face_ids.reshape(H, W),
        bary.reshape(H, W, 3),
        normals.reshape(H, W, 3),
        hidx,
    )


def raycast_mesh(vertices: np.ndarray, faces: np.ndarray, camera: Camera, scene=None) -> RayHits:
    """Ray-cast one mesh into one camera, casting only the pixels that can hit it.

    Args:
        vertices: ``(V, 3)`` world coordinates, metres.
        faces: ``(F, 3)`` vertex indices.
        camera: the camera.
        scene: a scene already built from the same mesh (:func:`build_scene`), to share it
            across cameras; None builds one.

    Returns:
        :class:`RayHits`.
    """
    if scene is None:
        scene = build_scene(vertices, faces)
    return cast_camera(scene, camera, roi_pixel_index(camera, np.asarray(vertices, np.float64)))


def render_mask(vertices: np.ndarray, faces: np.ndarray, camera: Camera, scene=None) -> np.ndarray:
    """Exact silhouette of a mesh: ``(H, W)`` uint8, 255 where a pixel's ray hits it, 0 elsewhere."""
    return raycast_mesh(vertices, faces, camera, scene).hit_mask.astype(np.uint8) * 255


def hit_points_world(hits: RayHits, camera: Camera) -> np.ndarray:
    """World coordinates ``(N, 3)`` of the hits, in the order of ``hits.pixel_index``.

    Reconstructed from the depth along each pixel's ray (``origin + depth * direction``).
    """
    idx = hits.pixel_index
    rays = camera_rays_world(camera, idx).astype(np.float64)  # (N, 6)
    depth = hits.depth_m.ravel()[idx].astype(np.float64)
    return rays[:, :3] + depth[:, None] * rays[:, 3:]


def interpolate_vertex_attributes(hits: RayHits, faces: np.ndarray, vertex_attr: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex attributes at the hit pixels.

    Args:
        hits: the cast.
        faces: ``(F, 3)`` the mesh's faces.
        vertex_attr: ``(V, D)`` per-vertex values (normals, colours, ...).

    Returns:
        ``(N, D)`` float values in the order of ``hits.pixel_index``.
    """
    check_shape(faces, ("F", 3), "faces")
    check_shape(vertex_attr, ("V", "D"), "vertex_attr")
    idx = hits.pixel_index
    f = hits.face_ids.ravel()[idx]  # (N,)
    w = hits.barycentrics.reshape(-1, 3)[idx]  # (N, 3)
    fv = faces[f]  # (N, 3) vertex ids of each hit face
    out = w[:, 0:1] * vertex_attr[fv[:, 0]]  # (N, D); sum over the face's 3 corners k
    out += w[:, 1:2] * vertex_attr[fv[:, 1]]
    out += w[:, 2:3] * vertex_attr[fv[:, 2]]
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` of a mesh (face winding decides the side)."""
    check_shape(vertices, ("V", 3), "vertices")
    v = np.asarray(vertices, np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # (F, 3), |.| = 2 area
    vn = np.zeros_like(v)
    for d in range(3):  # scatter-add each face normal onto its 3 vertices
        vn[:, d] = np.bincount(faces.ravel(), weights=np.repeat(fn[:, d], 3), minlength=len(v))
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (non-zero = inside); 1.0 when both are empty.

    Example:
        >>> mask_iou(np.array([[255, 255, 0]]), np.array([[0, 255, 255]]))
        0.3333333333333333
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)
