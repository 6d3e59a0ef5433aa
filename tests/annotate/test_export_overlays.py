"""Overlay pictures of fits: one PNG per fitted frame, every view in a grid, drawn where the mesh is."""

import json

import cv2
import numpy as np
import pytest
import torch

from handanno.annotate.export_overlays import view_tile, write_overlays
from handanno.annotate.overlay import draw_skeleton
from handanno.annotate.segment import mesh_mask
from handanno.annotate.session_io import fit_record, open_session, write_keypoints_file
from handanno.data.files_io import read_image, write_image
from handanno.handmodel.mano import HandModelData, ManoLayer

W, H = 96, 72


def _camera_entry(x: float) -> dict:
    # cameras 0.6 m in front of the origin, looking along +z
    return {"image_size": [W, H], "K": [[120.0, 0.0, W / 2], [0.0, 120.0, H / 2], [0.0, 0.0, 1.0]],
            "dist": [0.0] * 5, "R": np.eye(3).tolist(), "t": [x, 0.0, 0.6]}


@pytest.fixture
def layer(make_mano_dict):
    d = make_mano_dict(seed=1, num_faces=400)
    return ManoLayer(HandModelData.from_arrays(d, side="right", name="random", is_mano=False, source="test"),
                     dtype=torch.float64)


@pytest.fixture
def session_dir(tmp_path, layer):
    root = tmp_path / "s"
    root.mkdir()
    cams = {"cam1": _camera_entry(0.02), "cam2": _camera_entry(-0.02), "cam10": _camera_entry(0.0)}
    (root / "rig.json").write_text(json.dumps({"units": "m", "cameras": cams}))
    rng = np.random.default_rng(0)
    for cam in cams:
        for f in ("a", "b", "c"):
            write_image(root / "images" / cam / f"{f}.png", rng.integers(0, 60, (H, W, 3), dtype=np.uint8))
    pose, betas, trans = np.zeros(48), np.zeros(10), np.zeros(3)
    with torch.no_grad():
        joints = layer(*(torch.as_tensor(x[None], dtype=torch.float64) for x in (pose, betas, trans))).joints[0].numpy()
    quality = {"reproj_err_px": {"cam1": 1.5, "cam2": None, "cam10": 2.25}, "mask_iou": {"cam1": 0.9, "cam2": None,
               "cam10": None}, "accepted": False, "reasons": ["median mask IoU 0.50 < 0.6"]}  # fmt: skip
    for f in ("a", "c"):  # frame b has no fit
        (root / "fits").mkdir(exist_ok=True)
        (root / "fits" / f"{f}.json").write_text(json.dumps(fit_record("right", "random", pose, betas, trans,
                                                                       joints, quality)))
    kp = np.zeros((21, 3))
    kp[:, :2] = [W / 2, H / 2]
    kp[:, 2] = 1.0
    write_keypoints_file(root / "keypoints2d" / "cam1" / "a.json", kp, "test")
    return root


def test_one_picture_per_fitted_frame(session_dir, layer):
    session = open_session(session_dir)
    n = write_overlays(session, layer, progress=False)
    assert n == 2
    assert sorted(p.name for p in (session_dir / "overlays").iterdir()) == ["a.png", "c.png"]
    sheet = read_image(session_dir / "overlays" / "a.png")
    # a header strip (frame, verdict, one reason: 2 lines of 16 px + 8), then three 96x72 views
    # scaled to 320 px wide (240 tall) in a 2x2 grid
    assert sheet.shape == (40 + 2 * 240, 2 * 320, 3)
    assert sheet[:40].any()  # the header's text
    assert not (sheet[40 + 240 :, 320:] != 0).any()  # the empty fourth cell stays black
    assert write_overlays(session, layer, progress=False, folder="check") == 2
    assert (session_dir / "check" / "c.png").is_file()


def test_tiles_draw_over_the_mesh(session_dir, layer):
    """Each view gets the mesh outline and skeleton where the mesh projects, and the image elsewhere."""
    session = open_session(session_dir)
    write_overlays(session, layer, progress=False)
    sheet = read_image(session_dir / "overlays" / "c.png").astype(int)
    with torch.no_grad():
        verts = layer(*(torch.zeros(1, k, dtype=torch.float64) for k in (48, 10, 3))).vertices[0].numpy()
    faces = layer.faces.numpy()
    cam = session.rig["cam2"]  # second tile: top right
    tile = sheet[40 : 40 + 240, 320:]  # below the 40 px header
    plain = cv2.resize(read_image(session.images[("cam2", "c")]), (320, 240), interpolation=cv2.INTER_AREA)
    changed = np.abs(tile - plain.astype(int)).max(axis=2) > 40
    sil = mesh_mask(verts, faces, cam)
    assert sil.sum() > 50
    ys, xs = np.nonzero(sil)
    s = 320 / W  # tile scale
    y0, y1, x0, x1 = int(ys.min() * s), int((ys.max() + 1) * s), int(xs.min() * s), int((xs.max() + 1) * s)
    assert changed[y0:y1, x0:x1].mean() > 0.05  # outline + skeleton strokes over the mesh's box
    assert changed[230:, 100:].mean() < 0.02  # far from the mesh and the labels: the image itself


def test_view_tile_faint_given_keypoints():
    img = np.full((H, W, 3), 100, np.uint8)
    kp = np.zeros((21, 3))
    kp[:, 0] = np.linspace(10, 80, 21)
    kp[:, 1] = 50
    kp[:, 2] = 1
    empty = np.zeros((H, W), bool)
    far = np.full((21, 2), -100.0)  # the fitted skeleton is off-image: only the given keypoints show
    with_kp = view_tile(img, "cam", empty, far, kp, None, None, tile_width=W)
    without = view_tile(img, "cam", empty, far, None, None, None, tile_width=W)
    diff = np.abs(with_kp.astype(int) - without.astype(int)).max(axis=2)
    assert diff[50, 45] > 0  # drawn ...
    full = np.abs(draw_skeleton(img, kp).astype(int) - 100)
    assert diff[50, 45] < full[50, 45].max()  # ... but fainter than a full-strength drawing


def test_no_fits_writes_nothing(layer, session_dir):
    for p in (session_dir / "fits").iterdir():
        p.unlink()
    assert write_overlays(open_session(session_dir), layer, progress=False) == 0
    assert not (session_dir / "overlays").exists()
