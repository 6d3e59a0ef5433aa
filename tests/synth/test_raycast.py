"""Ray casting through distorted cameras: exact reprojection, an obvious reference, conventions.

The tests of the casting contract run with both casters (open3d's and handanno's PyTorch one).
"""

import numpy as np
import open3d as o3d
import pytest
import torch

from handanno.calibration.camera import Camera, look_at, project_points, undistort_points
from handanno.errors import HandannoError
from handanno.synth import raycast, raycast_torch


@pytest.fixture(autouse=True)
def backend(request, monkeypatch):
    """The ray caster of build_scene for this test: open3d unless parametrized (both_backends)."""
    name = getattr(request, "param", "open3d")
    monkeypatch.setenv(raycast.RAYCAST_BACKEND_ENV, name)
    return name


both_backends = pytest.mark.parametrize("backend", ["open3d", "torch"], indirect=True)


@pytest.fixture(scope="module")
def hand_model_posed():
    """``(verts (V, 3), faces (F, 3))``: the open hand model in a synthetic pose, world metres."""
    from handanno.handmodel.mano import ManoLayer
    from handanno.handmodel.model_io import load_hand_model
    from handanno.synth.motion import make_motion

    model = load_hand_model("right")
    motion = make_motion(ManoLayer(model), np.asarray(model.hands_mean), "right", 2, 15.0, 3)
    return motion.vertices[1], motion.faces


def _camera(dist=(-0.14, 0.04, 1e-3, -1.5e-3, 0.0), size=(96, 72), skew=0.0, center=(0.3, -0.25, 0.2)):
    R, t = look_at(center)
    W, H = size
    K = [[110.0, skew, W / 2 + 3.3], [0.0, 111.0, H / 2 - 2.1], [0.0, 0.0, 1.0]]
    return Camera("cam", K, list(dist), R, t, size)


def _sphere(radius=0.08, center=(0.01, -0.02, 0.0)):
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=12)
    mesh.translate(center)
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.triangles, np.int64)


def test_undistort_newton_matches_opencv():
    cam = _camera(size=(64, 48))
    grid = raycast.pixel_ray_grid(cam)
    W, H = cam.image_size
    uv = np.stack([np.tile(np.arange(W), H), np.repeat(np.arange(H), W)], 1).astype(float)
    ref = undistort_points(uv, cam.K, cam.dist)
    assert grid.valid.all()
    np.testing.assert_allclose(grid.xy_norm, ref, atol=1e-10)


@both_backends
@pytest.mark.parametrize("skew", [0.0, 0.7])
def test_hit_points_reproject_onto_their_pixels(skew):
    """The distortion contract: a ray-cast point's pixel is project_points of its 3D hit point.

    Tolerance 0.05 px (the acceptance bound); the float32 rays of open3d give about 1e-4 px.
    """
    cam = _camera(skew=skew)
    verts, faces = _sphere()
    hits = raycast.raycast_mesh(verts, faces, cam)
    assert hits.hit_mask.sum() > 200
    p = raycast.hit_points_world(hits, cam)
    uv = project_points(p, cam.K, cam.dist, cam.R, cam.t)
    W = cam.image_size[0]
    idx = hits.pixel_index
    pix = np.stack([idx % W, idx // W], 1)
    assert np.abs(uv - pix).max() < 0.05


@both_backends
def test_depth_barycentrics_and_normals_convention():
    cam = _camera()
    verts, faces = _sphere()
    hits = raycast.raycast_mesh(verts, faces, cam)
    p = raycast.hit_points_world(hits, cam)
    # depth is the camera-frame z of the hit
    np.testing.assert_allclose(cam.to_camera(p)[:, 2], hits.depth_m.ravel()[hits.pixel_index], rtol=1e-5)
    # barycentrics (w0, w1, w2) weight faces[f, 0..2]; open3d returns them in float32, and
    # at grazing incidence that costs a few micrometres (10 um = 0.01 px here)
    recon = raycast.interpolate_vertex_attributes(hits, faces, verts)
    np.testing.assert_allclose(recon, p, atol=1e-5)
    w = hits.barycentrics.reshape(-1, 3)[hits.pixel_index]
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (w > -1e-5).all()
    # normals: unit, the face's winding; the sphere's faces wind outwards so they face the camera
    n = hits.normals_world.reshape(-1, 3)[hits.pixel_index]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (np.sum(n * (cam.center - p), axis=1) > 0).all()
    # misses
    miss = ~hits.hit_mask
    assert np.isinf(hits.depth_m[miss]).all() and (hits.face_ids[miss] == -1).all()


@both_backends
def test_region_of_interest_changes_nothing():
    cam = _camera()
    verts, faces = _sphere()
    scene = raycast.build_scene(verts, faces)
    full = raycast.cast_camera(scene, cam)
    roi = raycast.raycast_mesh(verts, faces, cam, scene)
    for a, b in ((full.hit_mask, roi.hit_mask), (full.face_ids, roi.face_ids), (full.depth_m, roi.depth_m)):
        np.testing.assert_array_equal(a, b)


def _reference_first_hit(origin, direction, verts, faces):
    """Slow, obvious Moller-Trumbore over all faces: (t, face) of the first hit, or (inf, -1)."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    h = np.cross(direction, e2)
    a = np.einsum("fk,fk->f", e1, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 1.0 / a
        s = origin - v0
        u = f * np.einsum("fk,fk->f", s, h)
        q = np.cross(s, e1)
        v = f * (q @ direction)
        t = f * np.einsum("fk,fk->f", e2, q)
    ok = (np.abs(a) > 1e-15) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    if not ok.any():
        return np.inf, -1
    k = np.flatnonzero(ok)[np.argmin(t[ok])]
    return t[k], k


@both_backends
def test_matches_reference_intersection():
    cam = _camera(size=(48, 36))
    verts, faces = _sphere()
    hits = raycast.cast_camera(raycast.build_scene(verts, faces), cam)
    rays = raycast.camera_rays_world(cam).astype(np.float64)
    rng = np.random.default_rng(0)
    W, H = cam.image_size
    for i in rng.choice(W * H, 300, replace=False):
        t, f = _reference_first_hit(rays[i, :3], rays[i, 3:], verts, faces)
        v, u = divmod(int(i), W)
        if np.isfinite(t) and hits.hit_mask[v, u]:
            assert abs(hits.depth_m[v, u] - t) < 1e-5
        else:
            # a ray grazing an edge within float32 precision may go either way; none here
            assert not np.isfinite(t) and not hits.hit_mask[v, u]


@both_backends
def test_render_mask_and_iou():
    cam = _camera()
    verts, faces = _sphere()
    m = raycast.render_mask(verts, faces, cam)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    assert raycast.mask_iou(m, m) == 1.0
    assert raycast.mask_iou(m, np.zeros_like(m)) == 0.0
    assert raycast.mask_iou(np.zeros_like(m), np.zeros_like(m)) == 1.0


def test_points_behind_camera_cast_everything():
    cam = _camera()
    verts, _ = _sphere(center=tuple(cam.center))  # around the camera
    assert raycast.roi_pixel_index(cam, verts) is None


def test_vertex_normals_point_outwards_on_a_sphere():
    verts, faces = _sphere(center=(0.0, 0.0, 0.0))
    n = raycast.vertex_normals(verts, faces)
    cos = np.sum(n * verts / np.linalg.norm(verts, axis=1, keepdims=True), axis=1)
    assert cos.min() > 0.98


@both_backends
def test_backend_choice(monkeypatch, backend):
    verts, faces = _sphere()
    expected = raycast.Open3DScene if backend == "open3d" else raycast_torch.TorchScene
    assert isinstance(raycast.build_scene(verts, faces), expected)
    monkeypatch.setenv(raycast.RAYCAST_BACKEND_ENV, "embree")
    with pytest.raises(HandannoError, match="HANDANNO_RAYCAST"):
        raycast.build_scene(verts, faces)


def test_torch_caster_culling_changes_nothing():
    """Tiles of a shared origin test only the faces over them: the same hits as all faces."""
    cam = _camera(size=(80, 60))
    verts, faces = _sphere()
    rays = raycast.camera_rays_world(cam)
    scene = raycast_torch.TorchScene(verts, faces, device="cpu")
    culled = scene.cast_rays(rays)
    r = torch.as_tensor(rays)
    t, f, uv = raycast_torch._first_hits(r[:, :3], r[:, 3:], scene.v0, scene.e1, scene.e2)  # all faces
    assert np.isfinite(culled["t_hit"]).sum() > 500
    np.testing.assert_array_equal(culled["t_hit"], t.numpy())
    np.testing.assert_array_equal(culled["primitive_ids"].astype(np.int64),
                                  np.where(f.numpy() >= 0, f.numpy(), raycast_torch.INVALID_ID))
    np.testing.assert_array_equal(culled["primitive_uvs"], uv.numpy())
    # rays from several origins (no culling) and a shared origin inside the mesh (faces behind it)
    jittered = rays.copy()
    jittered[::2, :3] += 1e-4
    np.testing.assert_allclose(scene.cast_rays(jittered)["t_hit"], t.numpy(), rtol=1e-2)
    inside = rays.copy()
    inside[:, :3] = [0.01, -0.02, 0.0]  # the sphere's centre: every ray hits, at the radius
    t_in = scene.cast_rays(inside)["t_hit"] * np.linalg.norm(inside[:, 3:], axis=1)
    assert np.all(np.abs(t_in - 0.08) < 0.004)


def test_torch_caster_matches_open3d_on_the_hand(hand_model_posed):
    """Eight distorted cameras of a synthetic dome around the open hand model."""
    from handanno.synth import capture as synth

    verts, faces = hand_model_posed
    rig, _ = synth.make_rig(8, (320, 240), 3)
    a_scene = raycast.build_scene(verts, faces, "open3d")
    b_scene = raycast.build_scene(verts, faces, "torch")
    for cam in rig:
        a = raycast.raycast_mesh(verts, faces, cam, a_scene)
        b = raycast.raycast_mesh(verts, faces, cam, b_scene)
        both = a.hit_mask & b.hit_mask
        assert a.hit_mask.sum() > 300, cam.name
        assert (a.hit_mask ^ b.hit_mask).sum() <= 2, cam.name  # a grazing edge ray at most
        same = both & (a.face_ids == b.face_ids)
        assert same.sum() >= both.sum() - 2, cam.name
        np.testing.assert_allclose(a.depth_m[same], b.depth_m[same], atol=2e-5)
        np.testing.assert_allclose(a.barycentrics[same], b.barycentrics[same], atol=1e-2)
        np.testing.assert_allclose(a.normals_world[same], b.normals_world[same], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_caster_cuda_matches_cpu():
    cam = _camera(size=(80, 60))
    verts, faces = _sphere()
    rays = raycast.camera_rays_world(cam)
    a = raycast_torch.TorchScene(verts, faces, device="cpu").cast_rays(rays)
    b = raycast_torch.TorchScene(verts, faces, device="cuda").cast_rays(rays)
    np.testing.assert_array_equal(a["primitive_ids"], b["primitive_ids"])
    np.testing.assert_allclose(a["t_hit"], b["t_hit"], rtol=1e-5)
