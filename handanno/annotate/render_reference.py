"""Dense reference soft silhouette renderer: every pixel against every face, plain autograd.

The oracle for :mod:`handanno.annotate.render` in tests and the baseline in
``benchmarks/bench_render.py``. Same maths (SoftRas, Liu et al. 2019: probability map and silhouette) with no
footprint truncation (``settings.eps`` is ignored) and no hand-written gradient: autograd
differentiates the chunk function below. Faces are processed in chunks whose activations are
recomputed in the backward (a minimal checkpoint; ``torch.utils.checkpoint`` would import
torch._dynamo, seconds of start-up) only so that memory stays bounded. Cost is pixels x faces:
use it on small inputs.

Convention:
    As in :mod:`handanno.annotate.render`: pixel (0, 0) is the centre of the top-left pixel,
    ``sigma`` in squared render pixels, ``silhouettes[n, c, y, x]`` the coverage of render
    pixel ``(x, y)`` by mesh ``n`` in camera ``c``.
"""

from __future__ import annotations

import torch

from handanno.annotate.render import (
    INNER_EDGE_PX2,
    SilhouetteSettings,
    contour_edges,
    edge_neighbours,
    project_to_render,
)
from handanno.check import check_shape

_CHUNK_ELEMENTS = 1 << 22  # (mesh, face, edge, pixel) elements per chunk


def _chunk_log1m(
    tri: torch.Tensor, face_ok: torch.Tensor, inner: torch.Tensor, p: torch.Tensor, sigma: float
) -> torch.Tensor:
    """``sum_j log(1 - D_j)`` over a chunk of faces.

    Args:
        tri: ``(B, Fc, 3, 2)`` render pixels.
        face_ok: ``(B, Fc)`` 1 for faces to draw, 0 to skip.
        inner: ``(B, Fc, 3)`` added to each edge's squared distance (0, or a huge value on
            the inner edges of culled meshes: see :mod:`handanno.annotate.render`).
        p: ``(P, 2)`` pixel centres ``(x, y)``.
        sigma: squared render pixels.

    Returns:
        ``(B, P)``.
    """
    a = tri[:, :, :, None, :]  # (B, Fc, 3, 1, 2) edge e from vertex e ...
    b = tri.roll(-1, dims=2)[:, :, :, None, :]  # ... to vertex e + 1
    ab = b - a
    ap = p - a  # (B, Fc, 3, P, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)  # (B, Fc, 3, P)
    d2 = (((ap - t[..., None] * ab) ** 2).sum(-1) + inner[..., None]).amin(2)  # (B, Fc, P) to the nearest edge
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]  # (B, Fc, 3, P)
    inside = (cross >= 0).all(2) | (cross <= 0).all(2)  # either winding
    s = torch.where(inside, d2, -d2) / sigma  # SoftRas probability map: D = sigmoid(s)
    log1m = -torch.nn.functional.softplus(s)  # log(1 - D)
    return (log1m * face_ok[..., None]).sum(1)  # SoftRas silhouette, in log space


class _Recomputed(torch.autograd.Function):
    """``_chunk_log1m`` whose backward reruns it under autograd instead of keeping its activations."""

    @staticmethod
    def forward(
        ctx, tri: torch.Tensor, face_ok: torch.Tensor, inner: torch.Tensor, p: torch.Tensor, sigma: float
    ) -> torch.Tensor:
        ctx.save_for_backward(tri, face_ok, inner, p)
        ctx.sigma = sigma
        return _chunk_log1m(tri, face_ok, inner, p, sigma)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        tri, face_ok, inner, p = ctx.saved_tensors
        with torch.enable_grad():
            x = tri.detach().requires_grad_(True)
            (grad_tri,) = torch.autograd.grad(_chunk_log1m(x, face_ok, inner, p, ctx.sigma), x, grad)
        return grad_tri, None, None, None, None


def soft_silhouettes_from_uv_dense(
    uv_render: torch.Tensor, vert_ok: torch.Tensor, faces: torch.Tensor, settings: SilhouetteSettings
) -> torch.Tensor:
    """Dense counterpart of :func:`handanno.annotate.render.soft_silhouettes_from_uv`.

    Args:
        uv_render: ``(B, V, 2)`` render pixels.
        vert_ok: ``(B, V)`` bool; faces with a vertex that is not ok are skipped.
        faces: ``(F, 3)`` long.
        settings: render size and ``sigma`` (``eps`` unused: nothing is truncated).

    Returns:
        ``(B, H, W)`` in [0, 1].
    """
    check_shape(uv_render, ("B", "V", 2), "uv_render")
    check_shape(faces, ("F", 3), "faces")
    B, V, _ = uv_render.shape
    H, W = settings.image_size
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=uv_render.dtype, device=uv_render.device),
        torch.arange(W, dtype=uv_render.dtype, device=uv_render.device),
        indexing="ij",
    )
    p = torch.stack([xs, ys], -1).reshape(H * W, 2)  # (P, 2) pixel centres
    tri = uv_render[:, faces]  # (B, F, 3, 2)
    e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    area2 = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # (B, F)
    keep = vert_ok[:, faces].all(-1) & (area2 != 0)  # (B, F) zero-area faces skipped
    inner = torch.zeros(B, faces.shape[0], 3, dtype=uv_render.dtype, device=uv_render.device)
    if settings.cull_back_faces:
        # counter-clockwise faces pointing at the camera; only contour edges are soft (see render.py)
        inner = (~contour_edges(area2, keep, edge_neighbours(faces))).to(uv_render.dtype) * INNER_EDGE_PX2
        keep = keep & (area2 < 0)
    face_ok = keep.to(uv_render.dtype)
    per = max(1, _CHUNK_ELEMENTS // (B * 3 * H * W))
    log1m = torch.zeros(B, H * W, dtype=uv_render.dtype, device=uv_render.device)
    for f0 in range(0, faces.shape[0], per):
        args = (tri[:, f0:f0 + per], face_ok[:, f0:f0 + per], inner[:, f0:f0 + per], p, settings.sigma)
        if torch.is_grad_enabled() and uv_render.requires_grad:
            log1m = log1m + _Recomputed.apply(*args)
        else:
            log1m = log1m + _chunk_log1m(*args)
    return -torch.expm1(log1m).view(B, H, W)


def render_silhouettes_dense(
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
    """Dense counterpart of :func:`handanno.annotate.render.render_silhouettes` (same arguments).

    Returns:
        ``(N, C, H, W)`` soft silhouettes in [0, 1].
    """
    uv, in_front = project_to_render(verts_world, K, dist, R, t, settings, crop_box, image_to_render)
    N, C, V, _ = uv.shape
    H, W = settings.image_size
    sil = soft_silhouettes_from_uv_dense(uv.reshape(N * C, V, 2), in_front.reshape(N * C, V), faces, settings)
    return sil.view(N, C, H, W)
