"""Overlay pictures of fits: one PNG per fitted frame, every view in a grid, drawn where the mesh is."""

import json

import cv2
import numpy as np
import pytest
import torch

from handanno.annotate.export_overlays import ZOOM_MARGIN, view_tile, write_overlays
from handanno.annotate.overlay import draw_skeleton, hand_crop_box
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
    # a header strip (frame, verdict, one reason: 2 lines of 22 px + 8), then three views zoomed
    # onto the hand (square crops, 320x320) in a 2x2 grid
    assert sheet.shape == (52 + 2 * 320, 2 * 320, 3)
    assert sheet[:52].any()  # the header's text
    assert not (sheet[52 + 320 :, 320:] != 0).any()  # the empty fourth cell stays black
    assert write_overlays(session, layer, progress=False, folder="whole", zoom=False) == 2
    assert read_image(session_dir / "whole" / "a.png").shape == (52 + 2 * 240, 2 * 320, 3)  # 96x72 -> 320x240
    assert write_overlays(session, layer, progress=False, folder="check") == 2
    assert (session_dir / "check" / "c.png").is_file()


def test_tiles_draw_over_the_mesh(session_dir, layer):
    """Each view gets the mesh outline and skeleton where the mesh projects, and the image elsewhere (unzoomed)."""
    session = open_session(session_dir)
    write_overlays(session, layer, progress=False, zoom=False)
    sheet = read_image(session_dir / "overlays" / "c.png").astype(int)
    with torch.no_grad():
        verts = layer(*(torch.zeros(1, k, dtype=torch.float64) for k in (48, 10, 3))).vertices[0].numpy()
    faces = layer.faces.numpy()
    cam = session.rig["cam2"]  # second tile: top right
    tile = sheet[52 : 52 + 240, 320:]  # below the 52 px header
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
    with_kp = view_tile(img, "cam", empty, far, kp, None, None, tile_width=W, zoom=False)
    without = view_tile(img, "cam", empty, far, None, None, None, tile_width=W, zoom=False)
    diff = np.abs(with_kp.astype(int) - without.astype(int)).max(axis=2)
    assert diff[50, 45] > 0  # drawn ...
    full = np.abs(draw_skeleton(img, kp).astype(int) - 100)
    assert diff[50, 45] < full[50, 45].max()  # ... but fainter than a full-strength drawing


def test_no_fits_writes_nothing(layer, session_dir):
    for p in (session_dir / "fits").iterdir():
        p.unlink()
    assert write_overlays(open_session(session_dir), layer, progress=False) == 0
    assert not (session_dir / "overlays").exists()


def _hand_view(size=(640, 480), box=(300, 200, 40, 30)):
    """A plain image with a small rectangular 'hand' silhouette and keypoints inside it: ``(image, mask, uv)``."""
    W, H = size
    x, y, w, h = box
    img = np.full((H, W, 3), 70, np.uint8)
    mask = np.zeros((H, W), bool)
    mask[y : y + h, x : x + w] = True
    rng = np.random.default_rng(0)
    uv = np.column_stack([rng.uniform(x + 2, x + w - 2, 21), rng.uniform(y + 2, y + h - 2, 21)])
    return img, mask, uv


def _drawn_extent(tile: np.ndarray, plain_value: int = 70) -> tuple[int, int]:
    """Width and height of the box of pixels changed from the plain grey, below the corner label."""
    changed = np.abs(tile.astype(int) - plain_value).max(axis=2) > 40
    changed[:75, :100] = False  # the label box in the top-left corner
    ys, xs = np.nonzero(changed)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_zoomed_tile_fills_the_panel_with_the_hand():
    """A 40x30 px hand in a 640x480 image: 6 % of a whole-image panel's width, over 40 % of a zoomed one.

    Zoomed, the crop is a square of side 40 * (1 + 2 * ZOOM_MARGIN) = 56 px around the hand, so
    the hand's box spans 40 / 56 = 71 % of the 320 px panel's width and 30 / 56 = 54 % of its
    height (the outline and skeleton drawn over it).
    """
    img, mask, uv = _hand_view()
    whole = view_tile(img, "cam", mask, uv, None, 1.0, 0.9, zoom=False)
    zoomed = view_tile(img, "cam", mask, uv, None, 1.0, 0.9)
    assert whole.shape == (240, 320, 3) and zoomed.shape == (320, 320, 3)
    assert _drawn_extent(whole)[0] / 320 < 0.1
    w, h = _drawn_extent(zoomed)
    side = 40 * (1 + 2 * ZOOM_MARGIN)
    assert w / 320 == pytest.approx(40 / side, abs=0.03) and h / 320 == pytest.approx(30 / side, abs=0.03)
    # the outline lies on the silhouette's left border, mapped into the crop
    x0, _, side = hand_crop_box(np.argwhere(mask)[:, ::-1].astype(float), (640, 480), ZOOM_MARGIN)
    left_col = int(round((300 - x0 + 0.5) * 320 / side - 0.5))
    assert np.abs(zoomed[150:250, left_col - 3 : left_col + 4].astype(int) - 70).max() > 40


def test_zoomed_tile_at_the_border_and_off_image():
    """A hand at the image corner: the crop stays inside the image (no black padding); a hand projected
    nowhere near the image: the whole image, padded to a square."""
    img, mask, uv = _hand_view(box=(600, 450, 40, 30))
    zoomed = view_tile(img, "cam", mask, uv, None, None, None)
    assert zoomed.shape == (320, 320, 3)
    assert not (zoomed.max(axis=2) == 0).any()  # every pixel is image, none is padding
    far = np.full((21, 2), 1e7)
    whole = view_tile(img, "cam", np.zeros((480, 640), bool), far, None, None, None)
    assert whole.shape == (320, 320, 3)
    assert (whole[:30].max(axis=2) == 0)[:, 200:].all()  # the 640x640 square pads 80 rows above the image
