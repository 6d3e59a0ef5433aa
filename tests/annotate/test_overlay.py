"""Overlay drawing: mesh silhouettes against exact ray casting, skeletons, outlines, contact sheets."""

import numpy as np
import open3d as o3d
import pytest

from handanno.annotate.overlay import contact_sheet, draw_outline, draw_skeleton, put_label
from handanno.annotate.segment import mesh_mask
from handanno.calibration.camera import Camera, look_at
from handanno.data.conventions import BONES
from handanno.synth import raycast


def _distorted_camera(size=(320, 240)):
    R, t = look_at((0.3, -0.25, 0.2))
    W, H = size
    K = [[300.0, 0.0, W / 2 + 3.3], [0.0, 301.0, H / 2 - 2.0], [0.0, 0.0, 1.0]]
    return Camera("cam", K, [-0.14, 0.04, 1e-3, -1.5e-3, 0.0], R, t, size)


def _pinhole(size=(32, 24)):
    W, H = size
    return Camera("pin", [[100.0, 0.0, W / 2], [0.0, 100.0, H / 2], [0.0, 0.0, 1.0]], [0.0] * 5, np.eye(3),
                  [0.0, 0.0, 0.0], size)


def _mesh(kind):
    if kind == "box":
        m = o3d.geometry.TriangleMesh.create_box(0.1, 0.06, 0.04).translate((-0.05, -0.03, -0.02))
    else:
        m = o3d.geometry.TriangleMesh.create_sphere(0.06, resolution=16)
    return np.asarray(m.vertices, np.float64), np.asarray(m.triangles, np.int64)


@pytest.mark.parametrize("kind", ["box", "sphere"])
def test_mesh_mask_matches_raycast(kind):
    """Closed meshes through a distorted camera against the exact per-pixel ray cast.

    IoU > 0.95: OpenCV's fill adds up to half a pixel along the outline (~100 px of a
    ~3000-5000 px silhouette here: IoU 0.967 box, 0.979 sphere), and straight projected
    edges differ from the distorted curves by far less than a pixel. Every ray-cast pixel
    must be in the mask (the extra pixels are only outside). A closed mesh has two layers
    of faces everywhere: filling them in one even-odd ``fillPoly`` would leave it hollow.
    """
    cam = _distorted_camera()
    verts, faces = _mesh(kind)
    mask = mesh_mask(verts, faces, cam)
    exact = raycast.render_mask(verts, faces, cam) > 0
    assert mask.shape == (240, 320) and mask.dtype == bool
    assert exact.sum() > 2000
    assert raycast.mask_iou(mask, exact) > 0.95
    assert not (exact & ~mask).any()


def test_mesh_mask_single_triangle_matches_raycast():
    """One big triangle facing the camera (~9000 px): IoU > 0.95 (measured 0.984; the half-pixel
    rim of OpenCV's fill is ~150 px here). Its edges are ~200 px long, so the distorted curve
    bows off the straight projected edge: no superset check here."""
    cam = _distorted_camera()
    x, y = cam.R[0], cam.R[1]  # the camera's image axes in the world
    verts = 2.2 * np.array([-0.05 * x - 0.04 * y, 0.05 * x - 0.02 * y, 0.05 * y])
    faces = np.array([[0, 1, 2]])
    mask = mesh_mask(verts, faces, cam)
    exact = raycast.render_mask(verts, faces, cam) > 0
    assert exact.sum() > 5000
    assert raycast.mask_iou(mask, exact) > 0.95


def test_convention_mesh_mask_pixel_centres():
    """Pixel (0, 0) is the centre of the top-left pixel: a square spanning u, v in [9.6, 20.4]
    covers exactly the pixel centres 10..20, in mesh_mask and in the ray cast."""
    cam = _pinhole()
    lo, hi = 9.6, 20.4
    uv = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
    verts = np.column_stack([(uv - [16.0, 12.0]) / 100.0, np.ones(4)])  # on the plane z = 1 m
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    want = np.zeros((24, 32), bool)
    want[10:21, 10:21] = True
    np.testing.assert_array_equal(mesh_mask(verts, faces, cam), want)
    np.testing.assert_array_equal(raycast.render_mask(verts, faces, cam) > 0, want)


def test_mesh_mask_skips_faces_behind_the_camera():
    cam = _pinhole()
    verts = np.array([[-0.1, -0.1, -1.0], [0.1, -0.1, -1.0], [0.0, 0.1, -1.0]])
    assert not mesh_mask(verts, np.array([[0, 1, 2]]), cam).any()


def _hand_keypoints():
    """A fan-shaped 2D skeleton, FreiHAND order, inside a 200x160 image."""
    kp = np.zeros((21, 3))
    kp[0] = (100, 145, 1)
    for f, ang in enumerate(np.linspace(-1.1, 0.6, 5)):
        d = np.array([np.sin(ang), -np.cos(ang)])
        for j in range(4):
            kp[1 + 4 * f + j, :2] = kp[0, :2] + d * (40 + 22 * j)
            kp[1 + 4 * f + j, 2] = 1
    return kp


def test_draw_skeleton_draws_on_the_bones_only():
    img = np.full((160, 200, 3), 30, np.uint8)
    kp = _hand_keypoints()
    out = draw_skeleton(img, kp)
    assert out is not img and (img == 30).all()  # a copy; the input is untouched
    changed = np.any(out != img, axis=2)
    for a, b in BONES:
        mid = np.round((kp[a, :2] + kp[b, :2]) / 2).astype(int)
        assert changed[mid[1], mid[0]], (a, b)
    # far from every bone nothing changes (thickness 2 + anti-aliasing: within 4 px)
    vv, uu = np.mgrid[0:160, 0:200]
    pix = np.stack([uu, vv], -1).astype(float)
    dist = np.full((160, 200), np.inf)
    for a, b in BONES:
        p, q = kp[a, :2], kp[b, :2]
        t = np.clip(((pix - p) @ (q - p)) / ((q - p) @ (q - p)), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(pix - (p + t[..., None] * (q - p)), axis=-1))
    assert not changed[dist > 6].any()
    assert changed[dist < 1].mean() > 0.99


def test_draw_skeleton_skips_unconfident_joints():
    img = np.zeros((160, 200, 3), np.uint8)
    kp = _hand_keypoints()
    kp[5:9, 2] = 0.0  # the index finger is missing
    changed = np.any(draw_skeleton(img, kp) != img, axis=2)
    for a, b in [(0, 5), (5, 6), (6, 7), (7, 8)]:
        mid = np.round((kp[a, :2] + kp[b, :2]) / 2).astype(int)
        assert not changed[mid[1], mid[0]]
    assert changed.any()
    # (21, 2) input: every joint drawn
    assert np.any(draw_skeleton(img, kp[:, :2]) != draw_skeleton(img, kp))


def test_draw_outline_marks_the_boundary():
    img = np.zeros((40, 50, 3), np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 15:35] = True
    out = draw_outline(img, mask, (0, 255, 0))
    changed = np.any(out != img, axis=2)
    assert changed[10, 20] and changed[29, 20] and changed[20, 15] and changed[20, 34]
    assert not changed[15:25, 20:30].any() and not changed[:8].any()


def test_contact_sheet_layout():
    colours = [(10 * i, 50, 200 - 10 * i) for i in range(5)]
    tiles = [np.full((60, 80, 3), c, np.uint8) for c in colours]
    tiles[4] = np.full((30, 80, 3), colours[4], np.uint8)  # a wider aspect: shorter tile, padded
    sheet = contact_sheet(tiles, tile_width=40)
    # 5 tiles: ceil(sqrt(5)) = 3 columns, 2 rows, each row as tall as the tallest scaled tile (30)
    assert sheet.shape == (2 * 30, 3 * 40, 3)
    for i, c in enumerate(colours):
        r, col = divmod(i, 3)
        assert tuple(sheet[r * 30 + 5, col * 40 + 20]) == c
    assert tuple(sheet[30 + 25, 1 * 40 + 20]) == (0, 0, 0)  # tile 4 is 15 px tall: padding below
    assert (sheet[30:, 80:] == 0).all()  # the empty sixth cell
    assert contact_sheet(tiles, tile_width=40, columns=5).shape == (30, 200, 3)
    with pytest.raises(ValueError):
        contact_sheet([])


@pytest.mark.parametrize("corner", ["tl", "tr", "bl", "br"])
def test_put_label_writes_in_its_corner(corner):
    img = np.full((120, 160, 3), 200, np.uint8)
    out = put_label(img, ["cam0", "IoU 0.91"], corner=corner)
    changed = np.any(out != img, axis=2)
    rows, cols = np.nonzero(changed)
    top = corner[0] == "t"
    left = corner[1] == "l"
    assert (rows.min() == 0) if top else (rows.max() == 119)
    assert (cols.min() == 0) if left else (cols.max() == 159)
    assert (img == 200).all()


def test_draw_skeleton_ignores_absurd_points():
    """A joint projected from near the camera plane can land ~1e9 px away or be NaN: not drawn, no crash."""
    img = np.zeros((160, 200, 3), np.uint8)
    kp = _hand_keypoints()
    kp[3, :2] = (1e9, -1e9)
    kp[4, :2] = np.nan
    changed = np.any(draw_skeleton(img, kp) != img, axis=2)
    mid = np.round((kp[1, :2] + kp[2, :2]) / 2).astype(int)
    assert changed[mid[1], mid[0]]
