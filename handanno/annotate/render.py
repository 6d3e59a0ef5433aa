"""Fast soft silhouettes of triangle meshes, batched over meshes x cameras (SoftRas-style).

Every face is rasterised only over its own screen footprint: its bounding box grown by the
soft margin beyond which its coverage is below ``eps``. Faces are grouped by footprint area
into a handful of size buckets; each bucket is one set of batched tensor ops over a
fixed-size pixel window per face, masked to the face's footprint, so the work and the memory
follow the pixels the faces touch (within a factor ``_BUCKET_GROWTH``), not pixels x faces.
The union over faces is accumulated into one flat buffer (a product with
``scatter_reduce_`` on the CPU, a sum of logs with ``index_add_`` on CUDA). Gradients come
from a hand-written backward (:class:`_SoftSilhouetteFn`): the forward keeps, per (face,
pixel) pair, the pixel and the few numbers the vertex gradient needs, and the backward is
one gather and one batched reduction. :mod:`handanno.annotate.render_reference` is the
dense oracle with the same maths. ``docs/performance.md`` has the measured speed.

Convention:
    - Cameras as in :mod:`handanno.calibration.camera`: ``x_cam = R @ x_world + t``
      (metres), camera looks down +z, x right, y down, ``K = [[fx, s, cx], [0, fy, cy],
      [0, 0, 1]]``, ``dist = [k1, k2, p1, p2, k3]`` applied to the projected *vertices*
      (edges stay straight in the distorted image).
    - Pixel (0, 0) is the centre of the top-left pixel, in the image and in the render.
    - ``crop_box = (x0, y0, width_px, height_px)`` in image pixels names the image pixels
      ``x0 .. x0 + width_px - 1`` and ``y0 .. y0 + height_px - 1`` (the continuous span
      ``[x0 - 0.5, x0 + width_px - 0.5]``, so non-integer boxes are allowed); it is sampled
      at the render size ``(H, W)``. A box of ``(W, H)`` pixels at render size ``(H, W)`` is
      exactly the crop ``image[y0:y0 + H, x0:x0 + W]`` of a full-image render.
    - ``image_to_render (2, 3)`` is the affine alternative: ``[u_r, v_r] = A[:, :2] @ [u, v]
      + A[:, 2]`` from image to render pixels.
    - ``SilhouetteSettings.image_size = (H, W)`` (rows, columns, as the output tensor),
      unlike ``Camera.image_size = (width, height)``.
    - ``silhouettes[n, c, y, x]`` is the soft coverage in [0, 1] of render pixel ``(x, y)``
      by mesh ``n`` seen by camera ``c``.
    - Soft coverage (SoftRas: Liu et al., "Soft Rasterizer", ICCV 2019): the probability
      map ``D_j = sigmoid(delta d^2 / sigma)`` with ``d`` the distance in render pixels from
      the pixel centre to face ``j`` (to its nearest edge), ``delta = +1`` inside and ``-1``
      outside; the silhouette ``S = 1 - prod_j (1 - D_j)``. ``1 - D_j = sigmoid(-delta d^2 /
      sigma)`` and ``log(1 - D_j) = -softplus(delta d^2 / sigma)`` are exact and stable, so
      nothing is clamped; a product that underflows to 0 means ``S = 1``. ``sigma`` is in
      squared render pixels.
    - Faces with a vertex nearer than ``znear_m`` to the camera plane (or behind it), and
      faces of exactly zero area in the render, are skipped (coverage 0, gradient 0). Both
      windings count unless ``SilhouetteSettings.cull_back_faces``.
    - At small ``sigma`` the 0.5 level lies ``sqrt(sigma ln(1 / (1 - 0.5^(1/k))))`` px outside
      the true outline where ``k`` faces meet there (k = 2 on a fold: 0.94 sqrt(sigma)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from handanno.calibration.camera import project_points, world_to_camera
from handanno.check import check_shape
from handanno.errors import HandannoError

# Size buckets: faces whose footprint areas lie within a factor _BUCKET_GROWTH share a window
# of the bucket's largest area, so at most that factor of the windows' pixels is padding.
# Finer buckets waste fewer pairs but launch more ops: sqrt(2) was fastest on the CPU (20 %
# faster than 2); on CUDA launches cost more than pairs (not measured yet).
_BUCKET_GROWTH = {"cpu": math.sqrt(2.0), "cuda": 2.0}
# At most this many (face, pixel) pairs per batched op: bounds the temporaries' memory
# (about 40 floats a pair at the peak) whatever the mesh, cameras and resolution. On the CPU
# 2^15-2^19 ran within noise of each other; on CUDA big chunks amortise the launches.
_MAX_PAIRS = {"cpu": 1 << 17, "cuda": 1 << 24}
_MAX_RENDER_PIXELS = 1 << 22  # float32 pixel arithmetic inside a footprint stays exact below this
_TINY_LEN2_PX2 = 1e-12  # squared edge lengths are clamped here before dividing (degenerate edges)
# Accumulate the union as a product of (1 - D) with scatter_reduce (the CPU: sigmoid is
# vectorised, log is not, 1 vs 14 ns an element) or as a sum of logs with index_add_ (CUDA:
# float atomicAdd, where a product needs compare-and-swap loops). The same maths.
_LOG_SPACE = {"cpu": False, "cuda": True}
# The forward keeps 56 bytes a pair for the backward up to this much, else the backward recomputes.
_SAVE_BUDGET_BYTES = {"cpu": 1 << 30, "cuda": 8 << 30}


@dataclass(frozen=True)
class SilhouetteSettings:
    """How to render soft silhouettes.

    Attributes:
        image_size: ``(H, W)`` render size in pixels (rows, columns).
        sigma: SoftRas sharpness in squared *render* pixels: a pixel ``d`` px outside a face
            gets ``sigmoid(-d^2 / sigma)`` from it. Smaller is sharper; ``sigma -> 0`` gives the
            hard silhouette.
        eps: coverage below which a face's contribution to a pixel is dropped; sets the soft
            margin ``sqrt(sigma ln(1 / eps))`` px around each face's bounding box. The
            silhouette differs from the untruncated one by at most ``eps`` per face that is
            near the pixel but not on it.
        znear_m: faces with a vertex at camera depth below this (metres) are skipped.
        cull_back_faces: skip faces whose outward side (counter-clockwise winding, as MANO
            and the open hand model) faces away from the camera. A closed mesh's hard
            silhouette is the union of its front faces alone, so this halves the work and,
            with one face instead of two meeting at the outline, halves the soft union's
            outward bias. Leave off for open or inconsistently wound meshes.
    """

    image_size: tuple[int, int]
    sigma: float = 1.0
    eps: float = 1e-4
    znear_m: float = 1e-2
    cull_back_faces: bool = False

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) <= 0:
            raise HandannoError(f"SilhouetteSettings.image_size must be (H, W) > 0, got {self.image_size}")
        object.__setattr__(self, "image_size", size)
        if size[0] * size[1] > _MAX_RENDER_PIXELS:
            raise HandannoError(
                f"SilhouetteSettings.image_size {size} has more than {_MAX_RENDER_PIXELS} pixels (2048 x 2048): "
                "render a smaller window (the silhouette loss needs no more than 256 x 256)"
            )
        if not self.sigma > 0:
            raise HandannoError(f"SilhouetteSettings.sigma must be > 0 (squared render px), got {self.sigma}")
        if not 0 < self.eps < 0.5:
            raise HandannoError(f"SilhouetteSettings.eps must be in (0, 0.5), got {self.eps}")
        if not self.znear_m > 0:
            raise HandannoError(f"SilhouetteSettings.znear_m must be > 0 metres, got {self.znear_m}")

    @property
    def margin_px(self) -> float:
        """Soft margin around each face's bounding box, render px: where ``D < eps`` beyond it."""
        return math.sqrt(self.sigma * math.log(1.0 / self.eps))


def crop_box_to_affine(crop_box: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The affine from image to render pixels that samples a crop box at the render size.

    Args:
        crop_box: ``(*, 4)`` ``(x0, y0, width_px, height_px)`` in image pixels (see the module
            Convention).
        image_size: ``(H, W)`` render size.

    Returns:
        ``(*, 2, 3)`` ``A`` with ``[u_r, v_r] = A[:, :2] @ [u, v] + A[:, 2]``:
        ``u_r = (u - x0 + 0.5) W / width_px - 0.5`` (and the same for v).

    Example:
        >>> A = crop_box_to_affine(torch.tensor([10.0, 20.0, 64.0, 32.0]), (64, 64))
        >>> A.tolist()
        [[1.0, 0.0, -10.0], [0.0, 2.0, -39.5]]
    """
    check_shape(crop_box, ("*", 4), "crop_box")
    H, W = image_size
    x0, y0, w, h = crop_box.unbind(-1)
    sx, sy = W / w, H / h
    zero = torch.zeros_like(x0)
    row_u = torch.stack([sx, zero, sx * (0.5 - x0) - 0.5], dim=-1)
    row_v = torch.stack([zero, sy, sy * (0.5 - y0) - 0.5], dim=-1)
    return torch.stack([row_u, row_v], dim=-2)  # (*, 2, 3)


def _per_view(x: torch.Tensor, tail: tuple[int, ...], N: int, C: int | None, name: str) -> torch.Tensor:
    """``(C, *tail)`` shared by all meshes, or ``(N, C, *tail)``, expanded to ``(N, C, *tail)``."""
    if x.dim() == len(tail) + 1:
        check_shape(x, ("C", *tail), name)
        x = x[None].expand(N, *x.shape)
    check_shape(x, (N, "C", *tail), name)
    if C is not None and x.shape[1] != C:
        raise HandannoError(f"{name} has {x.shape[1]} cameras, expected {C} (as K)")
    return x


def project_to_render(
    verts_world: torch.Tensor,
    K: torch.Tensor,
    dist: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    settings: SilhouetteSettings,
    crop_box: torch.Tensor | None = None,
    image_to_render: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project mesh vertices into every camera's render window (differentiable).

    Args:
        verts_world: ``(N, V, 3)`` metres.
        K: ``(C, 3, 3)`` intrinsics shared by all meshes, or ``(N, C, 3, 3)`` per mesh and
            camera (the same choice for every camera argument).
        dist: ``(C, 5)`` or ``(N, C, 5)`` ``[k1, k2, p1, p2, k3]``.
        R: ``(C, 3, 3)`` or ``(N, C, 3, 3)`` world-to-camera rotations.
        t: ``(C, 3)`` or ``(N, C, 3)`` world-to-camera translations, metres.
        settings: its ``image_size`` and ``znear_m`` are used.
        crop_box: ``(N, C, 4)`` or ``(C, 4)`` ``(x0, y0, width_px, height_px)`` image pixels.
        image_to_render: ``(N, C, 2, 3)`` or ``(C, 2, 3)`` affine instead of ``crop_box``.
            With neither, render pixels are image pixels (the top-left ``(H, W)`` of the image).

    Returns:
        ``uv_render (N, C, V, 2)`` render pixels and ``in_front (N, C, V)`` bool (depth at
        least ``znear_m``); vertices not in front get the image centre's pixel, with zero
        gradient, so nothing downstream sees inf or NaN.

    Convention:
        See the module docstring.
    """
    check_shape(verts_world, ("N", "V", 3), "verts_world")
    N = verts_world.shape[0]
    K = _per_view(K, (3, 3), N, None, "K")
    C = K.shape[1]
    dist = _per_view(dist, (5,), N, C, "dist")
    R = _per_view(R, (3, 3), N, C, "R")
    t = _per_view(t, (3,), N, C, "t")
    if crop_box is not None and image_to_render is not None:
        raise HandannoError("give crop_box or image_to_render, not both")
    like = {"dtype": verts_world.dtype, "device": verts_world.device}
    if crop_box is not None:
        crop_box = _per_view(torch.as_tensor(crop_box, **like), (4,), N, C, "crop_box")
        image_to_render = crop_box_to_affine(crop_box, settings.image_size)
    elif image_to_render is not None:
        image_to_render = _per_view(torch.as_tensor(image_to_render, **like), (2, 3), N, C, "image_to_render")

    x_cam = world_to_camera(verts_world[:, None], R, t)  # (N, C, V, 3)
    in_front = x_cam[..., 2] >= settings.znear_m  # (N, C, V)
    on_axis = torch.tensor([0.0, 0.0, 1.0], dtype=x_cam.dtype, device=x_cam.device)
    x_cam = torch.where(in_front[..., None], x_cam, on_axis)  # (N, C, V, 3)
    eye = torch.eye(3, dtype=x_cam.dtype, device=x_cam.device)
    uv = project_points(x_cam, K, dist, eye, torch.zeros_like(eye[0]))  # (N, C, V, 2) image px
    if image_to_render is not None:
        # [n, c, v, i] = A[n, c, i, j] uv[n, c, v, j] + A[n, c, i, 2]
        uv = torch.einsum("ncij,ncvj->ncvi", image_to_render[..., :2], uv) + image_to_render[:, :, None, :, 2]
    return uv, in_front


def render_silhouettes(
    verts_world: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    dist: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    settings: SilhouetteSettings,
    crop_box: torch.Tensor | None = None,
    image_to_render: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft silhouettes of N meshes in C cameras, differentiable w.r.t. vertices and cameras.

    Args:
        verts_world: ``(N, V, 3)`` metres.
        faces: ``(F, 3)`` long vertex indices, shared by all meshes.
        K: ``(C, 3, 3)`` or ``(N, C, 3, 3)`` (see :func:`project_to_render`).
        dist: ``(C, 5)`` or ``(N, C, 5)``.
        R: ``(C, 3, 3)`` or ``(N, C, 3, 3)``.
        t: ``(C, 3)`` or ``(N, C, 3)`` metres.
        settings: render size, sharpness, truncation, near plane.
        crop_box: ``(N, C, 4)`` or ``(C, 4)`` ``(x0, y0, width_px, height_px)``, image pixels.
        image_to_render: ``(N, C, 2, 3)`` or ``(C, 2, 3)`` affine instead of ``crop_box``.

    Returns:
        ``(N, C, H, W)`` soft silhouettes in [0, 1], dtype of ``verts_world``.

    Convention:
        See the module docstring: pixel (0, 0) is the centre of the top-left pixel,
        ``sigma`` is in squared render pixels, ``image_size = (H, W)``.

    Example:
        >>> verts = torch.tensor([[[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0]]])
        >>> K = torch.tensor([[[40.0, 0.0, 7.5], [0.0, 40.0, 7.5], [0.0, 0.0, 1.0]]])
        >>> sil = render_silhouettes(verts, torch.tensor([[0, 1, 2]]), K, torch.zeros(1, 5),
        ...                          torch.eye(3)[None], torch.zeros(1, 3), SilhouetteSettings((16, 16), 0.1))
        >>> sil.shape, round(sil[0, 0, 8, 8].item(), 3), round(sil[0, 0, 0, 0].item(), 3)
        (torch.Size([1, 1, 16, 16]), 1.0, 0.0)
    """
    check_shape(faces, ("F", 3), "faces")
    uv, in_front = project_to_render(verts_world, K, dist, R, t, settings, crop_box, image_to_render)
    N, C, V, _ = uv.shape
    sil = soft_silhouettes_from_uv(uv.reshape(N * C, V, 2), in_front.reshape(N * C, V), faces, settings)
    H, W = settings.image_size
    return sil.view(N, C, H, W)


def soft_silhouettes_from_uv(
    uv_render: torch.Tensor, vert_ok: torch.Tensor, faces: torch.Tensor, settings: SilhouetteSettings
) -> torch.Tensor:
    """Soft silhouettes of B already-projected meshes (the rasteriser behind :func:`render_silhouettes`).

    Args:
        uv_render: ``(B, V, 2)`` vertex positions in render pixels (finite).
        vert_ok: ``(B, V)`` bool; faces with a vertex that is not ok are skipped.
        faces: ``(F, 3)`` long.
        settings: render size, ``sigma``, ``eps``.

    Returns:
        ``(B, H, W)`` in [0, 1]; differentiable w.r.t. ``uv_render``.
    """
    check_shape(uv_render, ("B", "V", 2), "uv_render")
    check_shape(vert_ok, tuple(uv_render.shape[:2]), "vert_ok")
    check_shape(faces, ("F", 3), "faces")
    tri = uv_render[:, faces]  # (B, F, 3, 2)
    face_ok = vert_ok[:, faces].all(-1)  # (B, F)
    nbr = edge_neighbours(faces) if settings.cull_back_faces else None
    return _SoftSilhouetteFn.apply(tri, face_ok, nbr, settings)


class SilhouetteRenderer(torch.nn.Module):
    """Thin module around :func:`render_silhouettes`: holds the faces and the settings.

    Example:
        >>> r = SilhouetteRenderer(torch.tensor([[0, 1, 2]]), SilhouetteSettings((8, 8)))
        >>> r.faces.shape
        torch.Size([1, 3])
    """

    def __init__(self, faces: torch.Tensor, settings: SilhouetteSettings) -> None:
        super().__init__()
        faces = torch.as_tensor(faces, dtype=torch.long)
        check_shape(faces, ("F", 3), "faces")
        self.register_buffer("faces", faces, persistent=False)
        self.settings = settings
        self._num_verts_needed = int(faces.max()) + 1 if faces.numel() else 0

    def forward(
        self,
        verts_world: torch.Tensor,
        K: torch.Tensor,
        dist: torch.Tensor,
        R: torch.Tensor,
        t: torch.Tensor,
        crop_box: torch.Tensor | None = None,
        image_to_render: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, V, 3)`` world vertices to ``(N, C, H, W)`` soft silhouettes (see :func:`render_silhouettes`)."""
        if self._num_verts_needed > verts_world.shape[1]:
            raise HandannoError(
                f"faces index vertex {self._num_verts_needed - 1}, but the mesh has {verts_world.shape[1]} vertices"
            )
        return render_silhouettes(verts_world, self.faces, K, dist, R, t, self.settings, crop_box, image_to_render)


# --------------------------------------------------------------------------------------------
# The footprint rasteriser.
#
# Per (face, pixel) pair the forward needs ~40 elementwise passes in eager PyTorch; the
# backward needs only the pair's pixel, its nearest edge and ``-2 D delta / sigma`` times the
# offset ``r`` to that edge (and times ``t r``), which the forward keeps when they fit in
# ``_SAVE_BUDGET_BYTES`` (else the backward recomputes them chunk by chunk).


@dataclass(frozen=True)
class _Chunk:
    """Faces (flat ``b * F + f`` ids) rasterised together over a window of ``window`` pixels each."""

    face_ids: torch.Tensor  # (Fb,) long
    window: int


@dataclass(frozen=True)
class _Saved:
    """What the backward needs of one chunk's pairs (see :func:`_pair_terms`)."""

    pix: torch.Tensor  # (Fb, S) long flat pixel index into the (B, H*W + 1) buffer
    coef: torch.Tensor  # (Fb, 12, S) [c rx, c ry, c t rx, c t ry] x edge, c = dD-factor on the nearest edge, else 0


def edge_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """The face across each edge: ``(F, 3)`` long, -1 on a boundary edge.

    Edge ``e`` of face ``f`` runs from ``faces[f, e]`` to ``faces[f, (e + 1) % 3]``; on a
    non-manifold edge (three or more faces) each face gets one of the others.

    Example:
        >>> edge_neighbours(torch.tensor([[0, 1, 2], [2, 1, 3]])).tolist()
        [[-1, 1, -1], [0, -1, -1]]
    """
    check_shape(faces, ("F", 3), "faces")
    F = faces.shape[0]
    a, b = faces, faces.roll(-1, dims=1)
    n = int(faces.max()) + 1 if F else 1
    key = (torch.minimum(a, b) * n + torch.maximum(a, b)).reshape(-1)  # (3F,) undirected edge ids
    order = torch.argsort(key, stable=True)
    sk = key[order]
    pair = torch.nonzero(sk[1:] == sk[:-1]).reshape(-1)  # positions i with the same edge at i and i + 1
    out = torch.full((3 * F,), -1, dtype=torch.long, device=faces.device)
    out[order[pair]] = order[pair + 1] // 3
    out[order[pair + 1]] = order[pair] // 3
    return out.view(F, 3)


def contour_edges(area2: torch.Tensor, face_ok: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """``(B, F, 3)`` bool: edges between a front face and a back (or missing or skipped) face.

    Args:
        area2: ``(B, F)`` twice the signed render-pixel area (negative: front-facing, for
            counter-clockwise meshes; see :class:`SilhouetteSettings`).
        face_ok: ``(B, F)`` faces drawn at all.
        nbr: ``(F, 3)`` from :func:`edge_neighbours`.
    """
    front = face_ok & (area2 < 0)  # (B, F)
    front_pad = torch.cat([front, torch.zeros_like(front[:, :1])], dim=1)  # index -1 -> the False column
    return front[:, :, None] & ~front_pad[:, nbr]


# Squared distance (render px^2) added to the edges a culled face shares with another front face,
# so that the nearest edge is always a contour edge: a face's inside is then fully covered up to
# its neighbours (no soft crack along the mesh's inner edges), and only the contour is soft.
INNER_EDGE_PX2 = 1e12


def _face_tables(
    tri: torch.Tensor, face_ok: torch.Tensor, settings: SilhouetteSettings, nbr: torch.Tensor | None = None
):
    """Per-face constants of the inner loop, and each face's pixel footprint.

    Args:
        tri: ``(B, F, 3, 2)`` render pixels.
        face_ok: ``(B, F)`` bool, False for faces to skip.
        settings: render size and soft margin.
        nbr: ``(F, 3)`` from :func:`edge_neighbours`, for culled meshes (see Returns).

    Returns:
        ``edges (B*F, 8, 3)``: rows ``ax, ay, abx, aby, abx/|ab|^2, aby/|ab|^2, nx, ny`` for the
        edges ``e = 0, 1, 2`` from ``a = vertex e`` to ``b = vertex e + 1 (mod 3)``; ``n`` is an
        (unnormalised) edge normal pointing into the triangle, so ``(p - a) . n >= 0`` for all
        three edges iff ``p`` is inside, for either winding.
        ``foot (B*F, 4)`` float ``x_lo, y_lo, width, width * height``: the pixel centres
        ``x_lo .. x_lo + width - 1`` x ``y_lo ..`` within ``margin_px`` of the face's bounding
        box and inside the render; area 0 for faces that touch no pixel, are not ok, or have
        zero area (a point or a segment covers nothing; skipping it is exact as ``sigma -> 0``).
        With ``settings.cull_back_faces`` (and ``nbr``, :func:`edge_neighbours`) ``edges`` has
        a ninth row: 0 on contour edges, :data:`INNER_EDGE_PX2` on the others.
    """
    B, F, _, _ = tri.shape
    H, W = settings.image_size
    a = tri
    ab = tri.roll(-1, dims=-2) - a  # (B, F, 3, 2)
    abx, aby = ab[..., 0], ab[..., 1]
    inv_len2 = 1.0 / (abx * abx + aby * aby).clamp_min(_TINY_LEN2_PX2)
    area2 = abx[..., 0] * aby[..., 1] - aby[..., 0] * abx[..., 1]  # (B, F) twice the signed area
    orient = torch.where(area2 >= 0, 1.0, -1.0).to(tri.dtype)[..., None]  # (B, F, 1)
    # (p - a) . n = orient * cross(ab, p - a)
    rows = [a[..., 0], a[..., 1], abx, aby, abx * inv_len2, aby * inv_len2, -orient * aby, orient * abx]

    m = settings.margin_px
    big = float(max(H, W) + 2)  # clamp first: far-away faces must not overflow anything
    lo = torch.ceil((tri.amin(-2) - m).clamp(-big, big)).clamp_min(0)  # (B, F, 2)
    hi = torch.floor((tri.amax(-2) + m).clamp(-big, big))
    hi = torch.minimum(hi, torch.tensor([W - 1.0, H - 1.0], dtype=tri.dtype, device=tri.device))
    size = (hi - lo + 1).clamp_min(0)  # (B, F, 2)
    keep = face_ok & (area2 != 0)  # zero-area faces are skipped
    if settings.cull_back_faces:
        # camera frame x right, y down, z forward is right-handed: a counter-clockwise face whose
        # normal points at the camera has a negative signed area in pixels (fx, fy > 0)
        keep = keep & (area2 < 0)
        if nbr is not None:
            inner = ~contour_edges(area2, face_ok, nbr)  # (B, F, 3)
            rows.append(inner.to(tri.dtype) * INNER_EDGE_PX2)
    edges = torch.stack(rows, dim=-2)  # (B, F, 8 or 9, 3)
    area = size[..., 0] * size[..., 1] * keep  # (B, F)
    foot = torch.stack([lo[..., 0], lo[..., 1], size[..., 0], area], dim=-1)  # (B, F, 4)
    return edges.reshape(B * F, len(rows), 3), foot.reshape(B * F, 4)


def _chunks(area: torch.Tensor, settings: SilhouetteSettings) -> list[_Chunk]:
    """Group faces by footprint area into size buckets, split into chunks (one host sync).

    Faces whose areas share ``floor(log(area) / log(_BUCKET_GROWTH))`` form a bucket with a
    window of its largest area, so at most a factor ``_BUCKET_GROWTH`` of each window is
    padding; a bucket is split so that no op sees more than ``_MAX_PAIRS`` pairs.

    Args:
        area: ``(BF,)`` float footprint areas, pixels (0 = skip the face).
        settings: the render size bounds the areas.

    Returns:
        The chunks, smallest windows first.
    """
    H, W = settings.image_size
    growth = _BUCKET_GROWTH.get(area.device.type, _BUCKET_GROWTH["cuda"])
    n_cls = int(math.log(H * W) / math.log(growth)) + 2
    cls = torch.floor(torch.log(area.clamp_min(1)) / math.log(growth)).long().clamp_(max=n_cls - 1)
    cls = torch.where(area > 0, cls, n_cls)  # empty footprints sort last and are dropped
    order = torch.argsort(cls)
    counts = torch.bincount(cls, minlength=n_cls + 1)[:n_cls]
    biggest = torch.zeros(n_cls + 1, dtype=area.dtype, device=area.device)
    biggest.scatter_reduce_(0, cls, area, reduce="amax")
    counts_l, biggest_l = torch.stack([counts.to(area.dtype), biggest[:n_cls]]).tolist()  # the one sync
    max_pairs = _MAX_PAIRS.get(area.device.type, _MAX_PAIRS["cuda"])
    out, start = [], 0
    for n, window in zip(counts_l, biggest_l, strict=True):
        n, window = int(n), int(window)
        if n:
            for ids in order[start:start + n].split(max(1, max_pairs // window)):
                out.append(_Chunk(ids, window))
            start += n
    return out


def _pair_terms(
    edges: torch.Tensor,
    foot: torch.Tensor,
    base: torch.Tensor,
    window: int,
    settings: SilhouetteSettings,
    save: bool,
    log_space: bool,
) -> tuple[torch.Tensor, torch.Tensor, _Saved | None]:
    """``1 - D`` (or its log) of every (face, window pixel) pair of one chunk.

    Written for eager speed on the CPU: every op is a plain arithmetic pass (``torch.where``,
    ``gather``, ``scatter`` and integer division cost 10-20 times more there).

    Args:
        edges: ``(Fb, 8 or 9, 3)`` from :func:`_face_tables`.
        foot: ``(Fb, 4)`` from :func:`_face_tables`.
        base: ``(Fb, 1)`` long ``b * (H * W + 1)``, the start of the face's image in the flat
            buffer.
        window: pixels per face; window pixel ``k`` of a face is ``(x_lo + k mod width,
            y_lo + k div width)``, a real pixel iff ``k < width * height``.
        settings: render size and sigma.
        save: also return what the backward needs.
        log_space: return ``log(1 - D) = -softplus(s)`` instead of ``1 - D``.

    Returns:
        ``q (Fb, S)`` ``1 - D = sigmoid(-s)`` or its log, ``pix (Fb, S)`` long flat indices into a
        ``(B, H * W + 1)`` buffer (``b * (H * W + 1) + y * W + x``; the last slot of each
        image collects the padding pairs), and with ``save`` the :class:`_Saved` terms.
    """
    H, W = settings.image_size
    dtype, dev = edges.dtype, edges.device
    x_lo, y_lo, width, area = (c[:, None] for c in foot.unbind(1))  # each (Fb, 1)
    k = torch.arange(window, device=dev, dtype=dtype)  # (S,)
    row = torch.floor((k + 0.5) * (1.0 / width))  # (Fb, S) exact: windows have at most 2^22 px
    px = torch.addcmul(k, row, width, value=-1.0).add_(x_lo)  # (Fb, S) render pixel centres
    py = row.add_(y_lo)
    # padding pairs (row >= height, i.e. y >= y_lo + height) go past the image, then to its dump slot
    past = (py - (y_lo + area / width - 1.0)).clamp_(min=0.0)  # (Fb, S) 0 on real pixels, >= 1 on padding
    local = torch.addcmul(px, py, torch.full((), float(W), dtype=dtype, device=dev))
    local = local.addcmul_(past, torch.full((), float(H * W), dtype=dtype, device=dev)).clamp_(max=H * W)
    pix = local.long().add_(base)  # (Fb, S)

    ax, ay, abx, aby, tx, ty, nx, ny = (e[..., None] for e in edges[:, :8].unbind(1))  # each (Fb, 3, 1)
    apx = px[:, None] - ax  # (Fb, 3, S)
    apy = py[:, None] - ay
    t = torch.addcmul(apx * tx, apy, ty).clamp_(0.0, 1.0)  # nearest point a + t ab on each edge
    rx = torch.addcmul(apx, t, abx, value=-1.0)  # r = p - (a + t ab)
    ry = torch.addcmul(apy, t, aby, value=-1.0)
    d2e = torch.addcmul(rx * rx, ry, ry)  # (Fb, 3, S) squared distance to each edge segment
    if edges.shape[1] > 8:  # culled: inner edges are pushed out of reach
        d2e = d2e.add_(edges[:, 8, :, None])
    side = apx.mul_(nx).addcmul_(apy, ny)  # (Fb, 3, S) >= 0 on the inner side of each edge
    dist2 = torch.minimum(torch.minimum(d2e[:, 0], d2e[:, 1]), d2e[:, 2])  # (Fb, S) to the boundary
    inside = torch.minimum(torch.minimum(side[:, 0], side[:, 1]), side[:, 2])  # (Fb, S) >= 0 iff inside
    s = torch.copysign(dist2 * (1.0 / settings.sigma), inside)  # delta d^2 / sigma
    if log_space:
        q = torch.nn.functional.softplus(s).neg_()  # log(1 - D)
        if not save:
            return q, pix, None
        d = torch.sigmoid(s)
    else:
        d = torch.sigmoid(s)  # SoftRas probability map D = sigmoid(delta d^2 / sigma)
        q = 1.0 - d
        if not save:
            return q, pix, None
    # dS/d(d^2) = (1 - S) D delta / sigma (S = 1 - prod q); d(d^2)/da = -2 (1 - t) r, d(d^2)/db = -2 t r
    farther = torch.sub(d2e, dist2[:, None]).sign_()  # (Fb, 3, S) 0 on the nearest edge(s), 1 elsewhere
    ties = torch.sub(3.0, farther.sum(1))  # (Fb, S) how many edges are nearest (ties share the gradient)
    c = torch.copysign(d, inside).mul_(-2.0 / settings.sigma).div_(ties)[:, None]  # (Fb, 1, S)
    nearest = torch.addcmul(c, farther, c, value=-1.0)  # (Fb, 3, S) c on the nearest edge, else 0
    coef = torch.empty(len(edges), 4, 3, window, dtype=dtype, device=dev)  # (Fb, 4, 3, S)
    torch.mul(nearest, rx, out=coef[:, 0])
    torch.mul(nearest, ry, out=coef[:, 1])
    torch.mul(coef[:, :2], t[:, None], out=coef[:, 2:])
    return q, pix, _Saved(pix, coef.view(len(edges), 12, window))


def _save_budget_bytes(device: torch.device) -> int:
    return _SAVE_BUDGET_BYTES.get(device.type, _SAVE_BUDGET_BYTES["cuda"])


class _SoftSilhouetteFn(torch.autograd.Function):
    """``tri (B, F, 3, 2), face_ok (B, F) -> silhouettes (B, H, W)``, with a hand-written backward.

    Backward: ``S = 1 - prod_j q_j`` with ``q_j = 1 - D_j = sigmoid(-s_j)`` gives
    ``dS/ds_j = (1 - S) D_j`` (no division, so no trouble where the product underflows);
    ``s = delta d^2 / sigma`` and ``d^2 = |r|^2`` with ``r = p - (a + t (b - a))`` the offset
    from the nearest point of the nearest edge, so (envelope theorem: ``t`` is optimal)
    ``d d^2/da = -2 (1 - t) r`` and ``d d^2/db = -2 t r``. ``delta`` flips only where
    ``d = 0``, so the gradient is continuous.
    """

    @staticmethod
    def forward(
        ctx, tri: torch.Tensor, face_ok: torch.Tensor, nbr: torch.Tensor | None, settings: SilhouetteSettings
    ) -> torch.Tensor:
        B, F, _, _ = tri.shape
        H, W = settings.image_size
        edges, foot = _face_tables(tri, face_ok, settings, nbr)
        chunks = _chunks(foot[:, 3], settings)
        base = torch.arange(B, device=tri.device).repeat_interleave(F)[:, None] * (H * W + 1)  # (BF, 1)
        pairs = sum(len(ch.face_ids) * ch.window for ch in chunks)
        save = ctx.needs_input_grad[0] and pairs * 56 <= _save_budget_bytes(tri.device)
        log_space = _LOG_SPACE.get(tri.device.type, _LOG_SPACE["cuda"])
        prod_q = torch.full((B * (H * W + 1),), 0.0 if log_space else 1.0, dtype=tri.dtype, device=tri.device)
        saved = []
        for ch in chunks:
            ids = ch.face_ids
            q, pix, sv = _pair_terms(edges[ids], foot[ids], base[ids], ch.window, settings, save, log_space)
            if log_space:  # SoftRas silhouette: log(1 - S) = sum_j log(1 - D_j)
                prod_q.index_add_(0, pix.view(-1), q.view(-1))
            else:  # SoftRas silhouette: 1 - S = prod_j (1 - D_j)
                prod_q.scatter_reduce_(0, pix.view(-1), q.view(-1), reduce="prod")
            saved.append(sv)
        if log_space:
            prod_q = prod_q.exp_()
        sil = (1.0 - prod_q).view(B, H * W + 1)[:, :H * W]  # S = 1 - prod_j (1 - D_j)
        ctx.settings, ctx.chunks, ctx.saved, ctx.nbr = settings, chunks, saved if save else None, nbr
        ctx.save_for_backward(tri, face_ok, prod_q)
        return sil.reshape(B, H, W)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sil: torch.Tensor):
        tri, face_ok, prod_q = ctx.saved_tensors
        settings, chunks = ctx.settings, ctx.chunks
        B, F, _, _ = tri.shape
        H, W = settings.image_size
        grad_s = torch.zeros(B, H * W + 1, dtype=tri.dtype, device=tri.device)  # dump slots stay 0
        grad_s[:, :H * W] = grad_sil.reshape(B, H * W)
        grad_s = grad_s.view(-1).mul_(prod_q)  # dLoss/dS * (1 - S)
        if ctx.saved is None:
            edges, foot = _face_tables(tri, face_ok, settings, ctx.nbr)
            base = torch.arange(B, device=tri.device).repeat_interleave(F)[:, None] * (H * W + 1)
        grad_tri = torch.zeros(B * F, 3, 4, dtype=tri.dtype, device=tri.device)
        for i, ch in enumerate(chunks):
            ids = ch.face_ids
            if ctx.saved is None:
                sv = _pair_terms(edges[ids], foot[ids], base[ids], ch.window, settings, True, False)[2]
            else:
                sv = ctx.saved[i]
            g = grad_s.index_select(0, sv.pix.view(-1)).view(len(ids), ch.window, 1)  # (Fb, S, 1)
            per_edge = torch.bmm(sv.coef, g).view(len(ids), 4, 3)  # (Fb, 4, 3) [c, e] = sum_S coef[c, e] g
            grad_tri.index_add_(0, ids, per_edge.transpose(1, 2))
        ctx.saved = None
        # per edge e: sum c r -> [:, e, :2], sum c t r -> [:, e, 2:]; a = vertex e gets (1 - t), b = e + 1 gets t
        grad_a = grad_tri[..., :2] - grad_tri[..., 2:]
        grad_v = grad_a + grad_tri[..., 2:].roll(1, dims=1)  # (BF, 3, 2)
        return grad_v.view(B, F, 3, 2), None, None, None
