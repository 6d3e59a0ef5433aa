"""The fast soft silhouette renderer against the dense reference, open3d ray casting and finite differences."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from handanno.annotate import render as fast_render
from handanno.annotate.render import (
    SilhouetteRenderer,
    SilhouetteSettings,
    crop_box_to_affine,
    project_to_render,
    render_silhouettes,
    soft_silhouettes_from_uv,
)
from handanno.annotate.render_reference import render_silhouettes_dense, soft_silhouettes_from_uv_dense
from handanno.calibration.camera import undistort_points
from handanno.errors import HandannoError

# Silhouette values are in [0, 1]. Fast and dense share the maths but not the order of the
# operations: float64 rounding stays ~1e-13; float32 (eps 6e-8) computes d^2 from pixel
# coordinates up to ~150 px, so d carries ~1e-5 px of error, and dD/dd <= 2 d D (1 - D) / sigma
# <= 2 / sqrt(sigma) turns that into ~4e-5 at sigma = 0.5: atol 2e-4 leaves 5x headroom.
SIL_ATOL = {torch.float32: 2e-4, torch.float64: 1e-9}
EXACT_EPS = 1e-12  # footprint cut-off that makes the truncation invisible (< F * 1e-12 per pixel)

DIST = [-0.12, 0.05, 0.001, -0.001, 0.0]  # mild barrel distortion, as a real rig has


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# Scenes


def look_at(eye, centre=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``R, t`` of a camera at ``eye`` looking at ``centre`` (image y down)."""
    eye, centre = np.asarray(eye, float), np.asarray(centre, float)
    z = (centre - eye) / np.linalg.norm(centre - eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return R, -R @ eye


def make_cameras(eyes, f_px=900.0, size_wh=(1280, 720), dist=DIST, seed=0) -> dict[str, torch.Tensor]:
    """``(C, ...)`` float64 cameras at ``eyes`` looking at the origin."""
    rng = np.random.default_rng(seed)
    Ks, Rs, ts = [], [], []
    for eye in eyes:
        R, t = look_at(eye, rng.normal(0, 0.005, 3))
        cx, cy = size_wh[0] / 2 + rng.uniform(-15, 15), size_wh[1] / 2 + rng.uniform(-15, 15)
        Ks.append([[f_px, 0, cx], [0, f_px * 1.01, cy], [0, 0, 1]])
        Rs.append(R)
        ts.append(t)
    C = len(Ks)
    return {"K": torch.tensor(Ks), "dist": torch.tensor([dist] * C, dtype=torch.float64),
            "R": torch.tensor(np.array(Rs)), "t": torch.tensor(np.array(ts))}


def ring_eyes(C: int, radius_m: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(C):
        az, el = 2 * math.pi * c / C + rng.uniform(-0.3, 0.3), rng.uniform(-0.7, 0.9)
        out.append(radius_m * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]))
    return out


def hand_boxes(verts: torch.Tensor, cams: dict, pad: float = 1.15) -> torch.Tensor:
    """``(N, C, 4)`` square crop boxes around each view of each mesh."""
    uv, _ = project_to_render(verts, cams["K"], cams["dist"], cams["R"], cams["t"], SilhouetteSettings((1, 1)))
    lo, hi = uv.amin(2), uv.amax(2)
    side = (hi - lo).amax(-1, keepdim=True) * pad
    return torch.cat([(lo + hi) / 2 - side / 2, side, side], dim=-1)


@functools.cache
def procedural_meshes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-sized test meshes (metres): sphere, capsule, box and a palm with five capsule fingers."""
    import trimesh

    sphere = trimesh.creation.icosphere(2, radius=0.05)
    capsule = trimesh.creation.capsule(height=0.12, radius=0.02, count=[10, 12])
    box = trimesh.creation.box([0.09, 0.05, 0.03])
    parts = [trimesh.creation.icosphere(2)]
    parts[0].apply_scale([0.045, 0.05, 0.015])
    for i, (x, length) in enumerate([(-0.075, 0.06), (-0.015, 0.08), (0.0, 0.085), (0.015, 0.08), (0.03, 0.065)]):
        cap = trimesh.creation.capsule(height=length, radius=0.009, count=[8, 10])
        cap.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2 - (0.6 if i == 0 else 0), [1, 0, 0]))
        cap.apply_translation([x, 0.05 + length / 2 - (0.04 if i == 0 else 0), 0])
        parts.append(cap)
    hand = trimesh.util.concatenate(parts)
    out = {}
    for name, m in (("sphere", sphere), ("capsule", capsule), ("box", box), ("capsule_hand", hand)):
        v = np.asarray(m.vertices, np.float64)
        out[name] = (v - v.mean(0), np.asarray(m.faces, np.int64))
    return out


@functools.cache
def hand_model_mesh():
    """The posed hand model ``(V, 3)``, ``(F, 3)``, or None while the asset is missing."""
    try:
        from handanno.handmodel.mano import ManoLayer
        from handanno.handmodel.model_io import load_hand_model

        layer = ManoLayer(load_hand_model("right"), dtype=torch.float64)
    except (HandannoError, ImportError, FileNotFoundError):
        return None
    pose = torch.zeros(1, 48, dtype=torch.float64)
    pose[0, 3:] = torch.as_tensor(np.random.default_rng(1).normal(0, 0.2, 45))
    with torch.no_grad():
        v = layer(pose, torch.zeros(1, 10, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)).vertices[0]
    v = v.numpy()
    return v - v.mean(0), layer.faces.numpy()


@pytest.fixture(scope="module")
def hand_mesh():
    """:func:`hand_model_mesh`, or the test is skipped while the asset is missing."""
    mesh = hand_model_mesh()
    if mesh is None:
        pytest.skip("the open hand model asset is not installed yet")
    return mesh


def raycast_masks(verts: np.ndarray, faces: np.ndarray, cams: dict, affine: np.ndarray, size_hw) -> np.ndarray:
    """Hard ``(C, H, W)`` masks by open3d ray casting, one ray per render pixel (exact distortion).

    Render pixel -> image pixel through the inverse of ``affine (C, 2, 3)``, undistorted to a
    normalised direction, rotated into the world by ``R^T``, from the camera centre ``-R^T t``.
    """
    import open3d as o3d

    H, W = size_hw
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    ys, xs = np.mgrid[0:H, 0:W]
    pix_r = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (P, 2)
    out = []
    for c in range(len(affine)):
        A = affine[c]
        pix_img = (pix_r - A[:, 2]) @ np.linalg.inv(A[:, :2]).T
        K, dist = cams["K"][c].numpy(), cams["dist"][c].numpy()
        R, t = cams["R"][c].numpy(), cams["t"][c].numpy()
        xy = undistort_points(pix_img, K, dist)  # (P, 2)
        dirs = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ R  # R^T d, row-wise
        origin = np.broadcast_to(-R.T @ t, dirs.shape)
        rays = o3d.core.Tensor(np.concatenate([origin, dirs], 1).astype(np.float32))
        hit = np.isfinite(scene.cast_rays(rays)["t_hit"].numpy())
        out.append(hit.reshape(H, W))
    return np.stack(out)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def random_uv_scene(B=3, V=25, F=30, size=(20, 24), seed=0, dtype=torch.float64):
    """Random triangles (some large, overlapping, some partly outside) in render pixels."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    centre = torch.rand(B, 1, 2, generator=g, dtype=dtype) * torch.tensor([W, H], dtype=dtype)
    uv = centre + torch.randn(B, V, 2, generator=g, dtype=dtype) * 6
    faces = torch.randint(0, V, (F, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    ok = torch.ones(B, V, dtype=torch.bool)
    return uv, ok, faces


# ---------------------------------------------------------------------------------------------
# Conventions


def test_convention_pixel_centres():
    """Render pixel (x, y) is the point (x, y): a small triangle around (5, 3) peaks at [3, 5]."""
    uv = torch.tensor([[[4.4, 2.4], [5.8, 2.5], [5.0, 3.6]]], dtype=torch.float64)  # >= 0.27 px around (5, 3)
    sil = soft_silhouettes_from_uv(uv, torch.ones(1, 3, dtype=torch.bool), torch.tensor([[0, 1, 2]]),
                                   SilhouetteSettings((8, 10), sigma=0.01))
    assert sil.shape == (1, 8, 10)
    assert divmod(int(sil[0].argmax()), 10) == (3, 5)
    assert sil[0, 3, 5] > 0.99 and sil[0].sum() - sil[0, 3, 5] < 0.05


def test_convention_crop_box_maps_pixel_centres():
    """A box of (W, H) image px at render size (H, W) shifts by (x0, y0); a 2x box halves."""
    A = crop_box_to_affine(torch.tensor([[10.0, 20.0, 64.0, 48.0], [10.0, 20.0, 128.0, 96.0]]), (48, 64))
    uv_img = torch.tensor([[10.0, 20.0], [73.0, 67.0]])  # first and last pixel centres of the box
    first = uv_img @ A[0, :, :2].T + A[0, :, 2]
    assert torch.allclose(first, torch.tensor([[0.0, 0.0], [63.0, 47.0]]))
    # the 2x box: image pixels 10, 11 fall into render pixel 0, whose centre is image 10.5
    centre = torch.tensor([10.5, 20.5]) @ A[1, :, :2].T + A[1, :, 2]
    assert torch.allclose(centre, torch.zeros(2))


def test_convention_image_size_is_rows_columns():
    uv, ok, faces = random_uv_scene(B=1, size=(10, 30))
    assert soft_silhouettes_from_uv(uv, ok, faces, SilhouetteSettings((10, 30))).shape == (1, 10, 30)


# ---------------------------------------------------------------------------------------------
# Fast == dense


def test_fast_equals_dense_forward(dtype):
    """Same maths: equal to rounding when nothing is truncated."""
    uv, ok, faces = random_uv_scene(dtype=dtype)
    ok[1, :3] = False  # faces touching these vertices are skipped by both
    s = SilhouetteSettings((20, 24), sigma=0.5, eps=EXACT_EPS)
    fast = soft_silhouettes_from_uv(uv, ok, faces, s)
    dense = soft_silhouettes_from_uv_dense(uv.double(), ok, faces, s)
    assert fast.dtype == dtype
    assert (fast - dense).abs().max() < SIL_ATOL[dtype]
    assert 0.2 < float(dense.mean()) < 0.8  # a real test: covered and empty pixels


def test_truncation_error_within_its_bound():
    """With the default eps, fast differs from dense only by the dropped ``D_j < eps`` terms.

    ``S_dense - S_fast = (1 - S_dense) (exp(sum_dropped -log(1 - D_j)) - 1)`` and the dropped
    faces are a subset of those with ``D_j < eps`` at the pixel, so the difference is at most
    ``(1 - S_dense) (exp(sum_{D_j < eps} D_j / (1 - eps)) - 1)``.
    """
    uv, ok, faces = random_uv_scene(B=2, V=40, F=60, seed=3)
    s = SilhouetteSettings((20, 24), sigma=0.7, eps=1e-3)
    fast = soft_silhouettes_from_uv(uv, ok, faces, s)
    dense = soft_silhouettes_from_uv_dense(uv, ok, faces, s)
    small = torch.zeros_like(dense)
    for f in range(len(faces)):  # D_j of each face alone
        d = soft_silhouettes_from_uv_dense(uv, ok, faces[f:f + 1], s)
        small += d * (d < s.eps)
    bound = (1 - dense) * torch.expm1(small / (1 - s.eps))
    diff = dense - fast
    assert (diff >= -1e-12).all() and (diff <= bound + 1e-12).all()
    assert diff.max() > 1e-6  # the truncation is real, and the bound is what holds it


def test_gradients_fast_equal_dense():
    uv, ok, faces = random_uv_scene(seed=1)
    s = SilhouetteSettings((20, 24), sigma=0.5, eps=EXACT_EPS)
    w = torch.rand(3, 20, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = []
    for fn in (soft_silhouettes_from_uv, soft_silhouettes_from_uv_dense):
        x = uv.clone().requires_grad_(True)
        (fn(x, ok, faces, s) * w).sum().backward()
        grads.append(x.grad)
    # float64 throughout; the sums run over ~500 pairs of values ~1: rounding ~1e-13
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-10)
    assert grads[1].abs().max() > 0.1


def test_gradients_with_exact_ties_equal_dense():
    """Integer vertices put pixels exactly on bisectors and corners: ties share the gradient like amin."""
    uv = torch.tensor([[[2.0, 2.0], [8.0, 2.0], [2.0, 8.0], [8.0, 8.0], [5.0, 11.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4]])
    ok = torch.ones(1, 5, dtype=torch.bool)
    s = SilhouetteSettings((13, 11), sigma=1.0, eps=EXACT_EPS)
    w = torch.rand(1, 13, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for fn in (soft_silhouettes_from_uv, soft_silhouettes_from_uv_dense):
        x = uv.clone().requires_grad_(True)
        (fn(x, ok, faces, s) * w).sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-10)


def test_recomputing_backward_equals_saving_backward(monkeypatch):
    uv, ok, faces = random_uv_scene(seed=4)
    s = SilhouetteSettings((20, 24), sigma=0.5)
    w = torch.rand(3, 20, 24, dtype=torch.float64)
    grads = []
    for budget in (1 << 40, 0):
        monkeypatch.setitem(fast_render._SAVE_BUDGET_BYTES, "cpu", budget)
        x = uv.clone().requires_grad_(True)
        (soft_silhouettes_from_uv(x, ok, faces, s) * w).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_gradcheck_uv():
    """Finite differences in float64 on a tiny mesh and image (eps tiny: the footprint cut-off
    then changes the output by < 1e-12 when a pixel enters a window, far below gradcheck's atol)."""
    uv = torch.tensor([[[1.3, 1.1], [6.2, 2.4], [2.9, 6.6], [6.8, 6.1]]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    ok = torch.ones(1, 4, dtype=torch.bool)
    s = SilhouetteSettings((8, 8), sigma=0.8, eps=EXACT_EPS)
    assert torch.autograd.gradcheck(lambda x: soft_silhouettes_from_uv(x, ok, faces, s), (uv,), eps=1e-6, atol=1e-6)


def test_gradcheck_world_vertices_and_camera():
    """Through the projection (distortion, crop) to the vertices and the camera translation."""
    verts = torch.tensor([[[-0.02, -0.015, 0.0], [0.025, -0.01, 0.005], [0.0, 0.025, -0.004], [0.02, 0.02, 0.01]]],
                         dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    cams = make_cameras([np.array([0.05, -0.1, -0.4])], f_px=600.0)
    t = cams["t"].clone().requires_grad_(True)
    box = hand_boxes(verts.detach(), cams, pad=1.3)
    s = SilhouetteSettings((9, 9), sigma=0.8, eps=EXACT_EPS)

    def fn(v, tt):
        return render_silhouettes(v, faces, cams["K"], cams["dist"], cams["R"], tt, s, crop_box=box)

    assert fn(verts, t).amax() > 0.5
    assert torch.autograd.gradcheck(fn, (verts, t), eps=1e-7, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Against the hard silhouette (open3d ray casting)


# At sigma = 0.005 px^2 the 0.5 level sits 0.07-0.1 px outside the outline where 2-4 faces
# meet on a fold (see the render module's Convention): ~1 % of a thin hand's area at 128 px.
IOU_SIGMA = 0.005


def _iou_vs_raycast(verts_np, faces_np, cams, size=128, sigma=IOU_SIGMA, pad=1.15):
    verts = torch.as_tensor(verts_np)[None]
    faces = torch.as_tensor(faces_np)
    box = hand_boxes(verts, cams, pad)  # (1, C, 4)
    s = SilhouetteSettings((size, size), sigma=sigma)
    sil = render_silhouettes(verts, faces, cams["K"], cams["dist"], cams["R"], cams["t"], s, crop_box=box)[0]
    hard = raycast_masks(verts_np, faces_np, cams, crop_box_to_affine(box[0], (size, size)).numpy(), (size, size))
    return [iou(sil[c].numpy() > 0.5, hard[c]) for c in range(len(hard))], sil, hard


@pytest.mark.parametrize("name", ["sphere", "capsule", "box", "capsule_hand"])
def test_iou_vs_open3d_procedural(name):
    v, f = procedural_meshes()[name]
    cams = make_cameras(ring_eyes(3, 0.5, seed=len(name)))
    ious, _, hard = _iou_vs_raycast(v, f, cams)
    assert hard.mean() > 0.2  # the mesh fills a good part of the crop
    assert min(ious) >= 0.98, ious


def test_iou_vs_open3d_hand_model(hand_mesh):
    v, f = hand_mesh
    cams = make_cameras(ring_eyes(4, 0.6, seed=7))
    ious, _, _ = _iou_vs_raycast(v, f, cams)
    assert min(ious) >= 0.98, ious


def test_iou_vs_open3d_close_cameras():
    """Cameras 10-15 cm from the hand, crops of part of it: faces span tens of render pixels."""
    mesh = hand_model_mesh()
    v, f = mesh if mesh is not None else procedural_meshes()["capsule_hand"]
    cams = make_cameras([np.array([0.0, 0.02, -0.12]), np.array([0.1, 0.05, 0.06]), np.array([-0.03, 0.13, 0.02])],
                        f_px=500.0)
    verts = torch.as_tensor(v)[None]
    full = hand_boxes(verts, cams)  # crop the central half: the mesh runs off the crop
    box = torch.cat([full[..., :2] + full[..., 2:] / 4, full[..., 2:] / 2], -1)
    s = SilhouetteSettings((128, 128), sigma=IOU_SIGMA)
    sil = render_silhouettes(verts, torch.as_tensor(f), cams["K"], cams["dist"], cams["R"], cams["t"], s,
                             crop_box=box)[0]
    hard = raycast_masks(v, f, cams, crop_box_to_affine(box[0], (128, 128)).numpy(), (128, 128))
    uv, _ = project_to_render(verts, cams["K"], cams["dist"], cams["R"], cams["t"], s, crop_box=box)
    tri = uv[0][:, torch.as_tensor(f)]  # (C, F, 3, 2)
    side = (tri.amax(2) - tri.amin(2)).amax(-1)  # (C, F) bounding box sides, render px
    assert side.median() > 8  # big faces
    assert min(iou(sil[c].numpy() > 0.5, hard[c]) for c in range(3)) >= 0.98


def test_sigma_to_zero_converges_to_hard_silhouette():
    v, f = procedural_meshes()["capsule_hand"]
    cams = make_cameras(ring_eyes(2, 0.5, seed=3))
    verts = torch.as_tensor(v)[None]
    box = hand_boxes(verts, cams)
    hard = torch.as_tensor(raycast_masks(v, f, cams, crop_box_to_affine(box[0], (64, 64)).numpy(), (64, 64)))
    soft_ious = []
    for sigma in (4.0, 1.0, 0.25, 0.05, 0.01, 0.002):
        s = SilhouetteSettings((64, 64), sigma=sigma)
        sil = render_silhouettes(verts, torch.as_tensor(f), cams["K"], cams["dist"], cams["R"], cams["t"], s, box)[0]
        soft_ious.append(float(torch.minimum(sil, hard.double()).sum() / torch.maximum(sil, hard.double()).sum()))
    assert all(b > a for a, b in zip(soft_ious, soft_ious[1:], strict=False)), soft_ious
    assert soft_ious[-1] > 0.97


# ---------------------------------------------------------------------------------------------
# Batching, crops, cameras


def test_batched_equals_looped_single_renders():
    meshes = procedural_meshes()
    v = torch.stack([torch.as_tensor(meshes["capsule_hand"][0]) * s for s in (1.0, 0.8, 1.1)])  # (3, V, 3)
    v[1] += torch.tensor([0.01, -0.02, 0.0])
    faces = torch.as_tensor(meshes["capsule_hand"][1])
    N, C = 3, 4
    cams = make_cameras(ring_eyes(C, 0.5, seed=11))
    per = {k: x[None].repeat(N, *[1] * x.dim()).clone() for k, x in cams.items()}  # (N, C, ...)
    per["t"][2] += 0.01  # genuinely per-(mesh, camera) cameras
    box = hand_boxes(v, per)
    s = SilhouetteSettings((32, 40), sigma=0.5)
    batched = render_silhouettes(v, faces, per["K"], per["dist"], per["R"], per["t"], s, crop_box=box)
    for n in range(N):
        for c in range(C):
            one = render_silhouettes(v[n:n + 1], faces, *(per[k][n, c:c + 1] for k in ("K", "dist", "R", "t")), s,
                                     crop_box=box[n, c:c + 1])
            assert torch.allclose(batched[n, c], one[0, 0], atol=1e-12)


def test_shared_cameras_equal_per_mesh_cameras():
    v, f = procedural_meshes()["sphere"]
    verts = torch.as_tensor(v)[None].repeat(2, 1, 1)
    cams = make_cameras(ring_eyes(2, 0.4))
    box = hand_boxes(verts, cams)
    s = SilhouetteSettings((16, 16))
    shared = render_silhouettes(verts, torch.as_tensor(f), cams["K"], cams["dist"], cams["R"], cams["t"], s, box)
    per = {k: x[None].expand(2, *x.shape) for k, x in cams.items()}
    each = render_silhouettes(verts, torch.as_tensor(f), per["K"], per["dist"], per["R"], per["t"], s, box[0])
    assert torch.equal(shared, each)


def test_crop_equals_region_of_full_render():
    v, f = procedural_meshes()["capsule_hand"]
    verts, faces = torch.as_tensor(v)[None], torch.as_tensor(f)
    cams = make_cameras([np.array([0.0, 0.05, -0.6])], f_px=150.0, size_wh=(96, 80))
    s_full = SilhouetteSettings((80, 96), sigma=0.3)
    full = render_silhouettes(verts, faces, cams["K"], cams["dist"], cams["R"], cams["t"], s_full)[0, 0]
    assert 0.05 < full.mean() < 0.6
    x0, y0, w, h = 31, 17, 40, 36
    crop = render_silhouettes(verts, faces, cams["K"], cams["dist"], cams["R"], cams["t"],
                              SilhouetteSettings((h, w), sigma=0.3), crop_box=torch.tensor([[x0, y0, w, h]]))[0, 0]
    assert torch.allclose(crop, full[y0:y0 + h, x0:x0 + w], atol=1e-12)
    # the same crop as an explicit affine
    A = torch.tensor([[[1.0, 0.0, -x0], [0.0, 1.0, -y0]]], dtype=torch.float64)
    again = render_silhouettes(verts, faces, cams["K"], cams["dist"], cams["R"], cams["t"],
                               SilhouetteSettings((h, w), sigma=0.3), image_to_render=A)[0, 0]
    assert torch.equal(again, crop)


def test_behind_camera_and_outside_crop_is_finite():
    """A mesh through the camera plane, running off the crop: finite output and gradients;
    faces with a vertex behind the near plane are skipped."""
    v, f = procedural_meshes()["capsule"]
    verts = torch.as_tensor(v)[None] * torch.tensor([1.0, 1.0, 4.0])  # 0.64 m long along z
    cams = make_cameras([np.array([0.0, 0.03, -0.2])], f_px=400.0)  # the camera sits inside its extent
    cams["R"], cams["t"] = torch.eye(3, dtype=torch.float64)[None], torch.tensor([[0.0, 0.0, 0.05]])
    x = verts.clone().requires_grad_(True)
    s = SilhouetteSettings((48, 48), sigma=0.5)
    box = torch.tensor([[560.0, 280.0, 160.0, 160.0]])
    sil = render_silhouettes(x, torch.as_tensor(f), cams["K"], cams["dist"], cams["R"], cams["t"], s, crop_box=box)
    z = verts[0, :, 2] + 0.05
    assert (z < 0).any() and (z > s.znear_m).any()
    assert torch.isfinite(sil).all() and sil.min() >= 0 and sil.max() <= 1 and sil.max() > 0.5
    (sil * torch.rand_like(sil)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    behind = z[torch.as_tensor(f)].amin(1) < s.znear_m
    assert behind.any()
    kept = render_silhouettes(verts, torch.as_tensor(f)[~behind], cams["K"], cams["dist"], cams["R"], cams["t"], s,
                              crop_box=box)
    assert torch.allclose(kept, sil.detach(), atol=1e-12)
    assert x.grad[0, z < s.znear_m].abs().max() == 0


def test_degenerate_faces_are_safe():
    uv = torch.tensor([[[3.0, 3.0], [9.0, 4.0], [5.0, 9.0], [6.0, 3.5]]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 0, 1], [0, 1, 3], [2, 2, 2]])  # a point edge, a sliver, a point
    uv.data[0, 3] = uv.data[0, 0] + (uv.data[0, 1] - uv.data[0, 0]) * 0.5  # face 2: a collinear sliver
    ok = torch.ones(1, 4, dtype=torch.bool)
    s = SilhouetteSettings((12, 12), sigma=0.5, eps=EXACT_EPS)
    sil = soft_silhouettes_from_uv(uv, ok, faces, s)
    sil.sum().backward()
    assert torch.isfinite(uv.grad).all()
    assert torch.allclose(sil, soft_silhouettes_from_uv_dense(uv, ok, faces, s), atol=1e-9)


def test_module_equals_function():
    v, f = procedural_meshes()["box"]
    cams = make_cameras(ring_eyes(2, 0.5))
    verts = torch.as_tensor(v)[None]
    s = SilhouetteSettings((16, 16))
    box = hand_boxes(verts, cams)
    module = SilhouetteRenderer(torch.as_tensor(f), s)
    args = (cams["K"], cams["dist"], cams["R"], cams["t"])
    assert torch.equal(module(verts, *args, crop_box=box), render_silhouettes(verts, torch.as_tensor(f), *args, s, box))
    dense = render_silhouettes_dense(verts, torch.as_tensor(f), *args, s, box)
    assert (module(verts, *args, crop_box=box) - dense).abs().max() < 1e-3


def test_back_face_culling_keeps_the_hand_silhouette_and_halves_the_work(hand_mesh):
    """The hand model is closed and counter-clockwise: its front faces alone make its silhouette.

    Culled (only contour edges soft) vs all faces at small sigma: the same hard silhouette but
    for the all-faces one's outward bias (front and back faces meet at the outline), so closer
    to open3d's ray caster, from about half the faces; a counter-clockwise triangle seen from
    its front renders, the same one seen from behind does not.
    """
    v, f = hand_mesh
    cams = make_cameras(ring_eyes(4, 0.6, seed=3))
    verts, faces = torch.as_tensor(v)[None], torch.as_tensor(f)
    box = hand_boxes(verts, cams)
    sils, kept = [], []
    for cull in (False, True):
        s = SilhouetteSettings((128, 128), sigma=IOU_SIGMA, cull_back_faces=cull)
        sils.append(render_silhouettes(verts, faces, cams["K"], cams["dist"], cams["R"], cams["t"], s,
                                       crop_box=box)[0].numpy() > 0.5)  # fmt: skip
        uv, ok = fast_render.project_to_render(verts, cams["K"], cams["dist"], cams["R"], cams["t"], s, crop_box=box)
        _, foot = fast_render._face_tables(uv[0][:, faces], ok[0][:, faces].all(-1), s)
        kept.append(int((foot[:, 3] > 0).sum()))
    hard = raycast_masks(v, f, cams, crop_box_to_affine(box[0], (128, 128)).numpy(), (128, 128))
    for c in range(len(hard)):  # measured: all faces 0.994-0.995 vs the ray caster, culled 0.9991-0.9994
        assert iou(sils[0][c], sils[1][c]) >= 0.99
        assert iou(sils[1][c], hard[c]) >= 0.998
        assert iou(sils[1][c], hard[c]) > iou(sils[0][c], hard[c])  # no outward bias from the back faces
    assert 0.4 < kept[1] / kept[0] < 0.6
    # one triangle in front of a camera at the origin looking down +z (x right, y down)
    tri = torch.tensor([[[-0.1, -0.1, 1.0], [-0.1, 0.1, 1.0], [0.1, 0.0, 1.0]]], dtype=torch.float64)
    ccw_towards_camera = torch.tensor([[0, 1, 2]])  # normal (v1 - v0) x (v2 - v0) = (0, 0, -0.04): towards it
    K = torch.tensor([[[40.0, 0.0, 7.5], [0.0, 40.0, 7.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    args = (K, torch.zeros(1, 5, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[None],
            torch.zeros(1, 3, dtype=torch.float64), SilhouetteSettings((16, 16), 0.1, cull_back_faces=True))
    assert render_silhouettes(tri, ccw_towards_camera, *args).max() > 0.99
    assert render_silhouettes(tri, ccw_towards_camera.flip(1), *args).max() == 0


def test_edge_neighbours_of_the_closed_hand_mesh(hand_mesh):
    faces = torch.as_tensor(hand_mesh[1])
    nbr = fast_render.edge_neighbours(faces)
    assert (nbr >= 0).all()  # closed: every edge has a face across it
    f, e = torch.meshgrid(torch.arange(len(faces)), torch.arange(3), indexing="ij")
    back = nbr[nbr, :]  # (F, 3, 3) the neighbour's neighbours: one of them is the face itself
    assert (back == f[..., None]).any(-1).all()
    a, b = faces[f, e], faces[f, (e + 1) % 3]  # the shared edge's vertices are in the neighbour
    assert ((faces[nbr] == a[..., None]).any(-1) & (faces[nbr] == b[..., None]).any(-1)).all()


def test_culled_fast_equals_dense_with_gradients(hand_mesh):
    """Culling and contour-only edges: the fast renderer equals the dense oracle, values and gradients."""
    v, f = hand_mesh
    cams = make_cameras(ring_eyes(2, 0.6, seed=4))
    box = hand_boxes(torch.as_tensor(v)[None], cams)
    s = SilhouetteSettings((24, 24), sigma=0.5, eps=EXACT_EPS, cull_back_faces=True)
    w = torch.rand(1, 2, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = []
    for fn in (render_silhouettes, render_silhouettes_dense):
        x = torch.as_tensor(v)[None].clone().requires_grad_(True)
        sil = fn(x, torch.as_tensor(f), cams["K"], cams["dist"], cams["R"], cams["t"], s, crop_box=box)
        (sil * w).sum().backward()
        out.append((sil.detach(), x.grad))
    assert (out[0][0] - out[1][0]).abs().max() < 1e-9
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-7, atol=1e-9 * out[1][1].abs().max())
    assert out[1][1].abs().max() > 0


def test_work_follows_footprints_not_pixels_times_faces():
    """The pairs rasterised are within the bucket growth of the footprints' total area."""
    uv, ok, faces = random_uv_scene(B=4, V=60, F=120, size=(64, 64), seed=9)
    s = SilhouetteSettings((64, 64), sigma=0.5)
    tri = uv[:, faces]
    edges, foot = fast_render._face_tables(tri, ok[:, faces].all(-1), s)
    chunks = fast_render._chunks(foot[:, 3], s)
    pairs = sum(len(c.face_ids) * c.window for c in chunks)
    assert foot[:, 3].sum() <= pairs <= math.sqrt(2) * foot[:, 3].sum()
    assert pairs < 0.2 * 4 * 64 * 64 * len(faces)


def test_bad_input_is_refused():
    uv, ok, faces = random_uv_scene()
    with pytest.raises(HandannoError, match="uv_render"):
        soft_silhouettes_from_uv(uv[0], ok, faces, SilhouetteSettings((8, 8)))
    with pytest.raises(HandannoError, match="sigma"):
        SilhouetteSettings((8, 8), sigma=0.0)
    with pytest.raises(HandannoError, match="image_size"):
        SilhouetteSettings((8,))
    cams = make_cameras(ring_eyes(2, 0.5))
    verts = torch.zeros(1, 4, 3, dtype=torch.float64)
    with pytest.raises(HandannoError, match="not both"):
        render_silhouettes(verts, faces[:1] % 4, cams["K"], cams["dist"], cams["R"], cams["t"],
                           SilhouetteSettings((8, 8)), crop_box=torch.zeros(2, 4), image_to_render=torch.zeros(2, 2, 3))
    with pytest.raises(HandannoError, match="dist"):
        render_silhouettes(verts, faces[:1] % 4, cams["K"], cams["dist"][:1], cams["R"], cams["t"],
                           SilhouetteSettings((8, 8)))
    with pytest.raises(HandannoError, match="faces index vertex"):
        SilhouetteRenderer(torch.tensor([[0, 1, 9]]), SilhouetteSettings((8, 8)))(verts, *cams.values())


def test_device_matches_cpu(device):
    """Same result on every device (float32; CUDA runs only where there is one)."""
    uv, ok, faces = random_uv_scene(dtype=torch.float32)
    s = SilhouetteSettings((20, 24), sigma=0.5)
    w = torch.rand(3, 20, 24)
    out = []
    for dev in (torch.device("cpu"), device):
        x = uv.to(dev).requires_grad_(True)
        sil = soft_silhouettes_from_uv(x, ok.to(dev), faces.to(dev), s)
        (sil * w.to(dev)).sum().backward()
        out.append((sil.cpu(), x.grad.cpu()))
    assert torch.allclose(out[0][0], out[1][0], atol=SIL_ATOL[torch.float32])
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-3, atol=1e-3)


def test_log_space_union_equals_product(monkeypatch):
    """CUDA sums log(1 - D) with index_add_, the CPU multiplies (1 - D): both paths, here on the CPU."""
    uv, ok, faces = random_uv_scene(seed=6)
    s = SilhouetteSettings((20, 24), sigma=0.5)
    w = torch.rand(3, 20, 24, dtype=torch.float64)
    out = []
    for log_space in (False, True):
        monkeypatch.setitem(fast_render._LOG_SPACE, "cpu", log_space)
        x = uv.clone().requires_grad_(True)
        sil = soft_silhouettes_from_uv(x, ok, faces, s)
        (sil * w).sum().backward()
        out.append((sil.detach(), x.grad))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-12)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-9, atol=1e-10)


def test_nothing_in_view_gives_zeros():
    uv, ok, faces = random_uv_scene()
    x = (uv + 1000.0).requires_grad_(True)  # far outside the render
    sil = soft_silhouettes_from_uv(x, ok, faces, SilhouetteSettings((20, 24)))
    sil.sum().backward()
    assert sil.abs().max() == 0 and x.grad.abs().max() == 0
