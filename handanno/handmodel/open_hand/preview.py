"""Looking at the open hand model: ray-cast previews (open3d) and how a pose deforms the mesh.

Convention:
    Metres, the model's own frame; full poses are ``(16, 3)`` absolute axis-angle (any
    ``hands_mean`` already added), mean shape, no translation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import NUM_BETAS, NUM_MANO_JOINTS
from handanno.handmodel.hand_axes import unit
from handanno.handmodel.lbs_reference import lbs
from handanno.handmodel.open_hand.skeleton import MIRROR
from handanno.handmodel.open_hand.surface import signed_volume
from handanno.rotations import axis_angle_to_matrix

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


def render_pose(
    model: dict, full_pose: np.ndarray, side: str, size_px: int = 360, wireframe: bool = False
) -> np.ndarray:
    """:func:`render_views` of the model posed by ``full_pose (16, 3)`` (mean shape, no translation).

    The left hand is seen from the mirrored directions, so both sides' previews look alike.
    """
    verts, _ = lbs(model, np.asarray(full_pose)[None], np.zeros((1, NUM_BETAS)), np.zeros((1, 3)))
    views = PREVIEW_VIEWS
    if side == "left":
        views = tuple((n, tuple(np.asarray(t) * MIRROR), tuple(np.asarray(u) * MIRROR)) for n, t, u in PREVIEW_VIEWS)
    return render_views(verts[0], np.asarray(model["f"]), views=views, size_px=size_px, wireframe=wireframe)


# ---------------------------------------------------------------------------------------
# How a pose deforms the mesh.
# ---------------------------------------------------------------------------------------


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

    R = axis_angle_to_matrix(full_pose)  # (16, 3, 3)
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
