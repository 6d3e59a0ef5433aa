import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch

from handanno.data import augment as aug
from handanno.data.datasets import DataConfig, HandCropDataset, project, split_indices, to_display
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.models.toy_labels_io import FINGER_COLOURS, make_toy_labels, toy_hand_model

NO_AUG = aug.AugmentConfig(enabled=False)
GEOMETRY_ONLY = aug.AugmentConfig(brightness=0, contrast=0, saturation=0, hue_deg=0, blur_prob=0, bg_prob=0)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Official FreiHAND layout (K, xyz, scale, rgb, mask), procedural skeletons."""
    return make_toy_labels(tmp_path_factory.mktemp("official"), 6, image_size=96, seed=1)


@pytest.fixture(scope="module")
def with_mano(tmp_path_factory):
    """handanno layout written by FreiHANDWriter from the toy hand model (adds verts, mano, index, model)."""
    return make_toy_labels(tmp_path_factory.mktemp("mano"), 4, image_size=96, seed=2, hand_model=toy_hand_model())


def test_sample_layout_and_label_consistency(official, with_mano):
    ds = HandCropDataset([official, with_mano], DataConfig(crop_size=64, load_verts=True, augment=GEOMETRY_ONLY))
    assert len(ds) == 10 and ds.num_total == 10
    s = ds[7]
    shapes = {k: tuple(v.shape) for k, v in s.items()}
    assert shapes == {
        "uv": (21, 2),
        "xyz": (21, 3),
        "K": (3, 3),
        "side": (),
        "crop_to_image": (2, 3),
        "index": (),
        "vis": (21,),
        "mano": (61,),
        "has_mano": (),
        "verts": (778, 3),
        "has_verts": (),
        "image": (3, 64, 64),
    }
    assert bool(s["has_mano"]) and not bool(ds[0]["has_mano"])
    assert all(bool((ds[i]["vis"] == 1).all()) for i in range(len(ds)))  # no "visible" in the labels: train on all
    for i in range(len(ds)):
        s = ds[i]
        # rotation, zoom, shift, flip: the crop's K projects the crop's xyz onto the crop's uv (fx == fy here)
        assert np.abs(project(s["K"].double().numpy(), s["xyz"].double().numpy()) - s["uv"].numpy()).max() < 1e-3
        # crop_to_image maps back to the label image's projection
        folder = official if i < 6 else with_mano
        j = i if i < 6 else i - 6
        K = np.array(json.loads((folder / "training_K.json").read_text())[j])
        xyz = np.array(json.loads((folder / "training_xyz.json").read_text())[j])
        uv_img = aug.apply_affine(s["crop_to_image"].double().numpy(), s["uv"].double().numpy())
        assert np.abs(uv_img - project(K, xyz)).max() < 1e-3
        # distances are preserved (rotation / mirror only)
        assert np.linalg.norm(s["xyz"].numpy()[9] - s["xyz"].numpy()[0]) == pytest.approx(
            np.linalg.norm(xyz[9] - xyz[0]), rel=1e-5
        )


def test_unaugmented_crop_is_centred_and_padded(official):
    ds = HandCropDataset([official], DataConfig(crop_size=64, crop_pad=1.5, augment=NO_AUG), train=True)
    uv = ds[0]["uv"].numpy()
    lo, hi = uv.min(0), uv.max(0)
    assert (hi - lo).max() == pytest.approx(64 / 1.5, rel=1e-5)
    assert np.allclose((lo + hi) / 2, 31.5, atol=1e-4)
    assert int(ds[0]["side"]) == 0


def test_flip_maps_keypoints_and_keeps_finger_identity(official):
    """Mirror: u -> S - 1 - u, x -> -x, side swaps, keypoint order unchanged (the thumb stays the thumb)."""
    ds = HandCropDataset([official], DataConfig(crop_size=96, augment=NO_AUG), train=False)
    folder = ds.folders[0]
    K, xyz = folder.K[0], folder.xyz[0]
    uv = project(K, xyz)
    img = cv2.imread(str(folder.images[0]))
    plain = aug.crop_transform(uv.mean(0), 80.0, 96, angle_rad=0.3)
    flipped = aug.crop_transform(uv.mean(0), 80.0, 96, angle_rad=0.3, flip=True)
    uv_p, uv_f = aug.apply_affine(plain.A, uv), aug.apply_affine(flipped.A, uv)
    assert np.allclose(uv_f[:, 0], 95 - uv_p[:, 0]) and np.allclose(uv_f[:, 1], uv_p[:, 1])
    assert np.allclose(xyz @ flipped.T.T, (xyz @ plain.T.T) * [-1, 1, 1])
    assert np.linalg.det(flipped.T) == pytest.approx(-1.0)
    K_f = aug.crop_intrinsics(K, flipped)
    assert np.abs(project(K_f, xyz @ flipped.T.T) - uv_f).max() < 1e-6
    # flipping twice is the identity
    twice = np.array([[-1.0, 0.0, 95.0], [0.0, 1.0, 0.0]])
    assert np.allclose(aug.apply_affine(twice, uv_f), uv_p)
    pose = np.random.default_rng(0).normal(size=48)
    assert np.allclose(aug.mirror_axis_angle(aug.mirror_axis_angle(pose)), pose)
    # the thumb stays the thumb: midway along the thumb's first bone, the flipped image shows the thumb's colour
    crop_f = aug.warp_image(img, flipped)
    mid = np.round((uv_f[1] + uv_f[2]) / 2).astype(int)
    colour = crop_f[mid[1], mid[0]].astype(float)
    dists = [np.linalg.norm(colour - c) for c in FINGER_COLOURS]
    assert int(np.argmin(dists)) == 0


def test_flip_and_rotation_keep_mano_consistent(with_mano):
    """A flipped crop's MANO vector, run through the left model, rebuilds the crop's keypoints (and vice versa)."""
    layers = {s: ManoLayer(toy_hand_model(s), dtype=torch.float64) for s in ("right", "left")}
    cfg = DataConfig(crop_size=64, load_verts=True, augment=GEOMETRY_ONLY, seed=3)
    ds = HandCropDataset([with_mano], cfg)
    sides = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            side = ["right", "left"][int(s["side"])]
            sides.add(side)
            mano = s["mano"].double()
            out = layers[side](mano[None, :48], mano[None, 48:58], torch.zeros(1, 3, dtype=torch.float64))
            rel = out.joints[0] - out.joints[0, 9]
            xyz = s["xyz"].double()
            assert (rel - (xyz - xyz[9])).abs().max() < 1e-5  # metres: float32 storage of the sample
            # FreiHAND's root recipe: xyz[9] = [uv_root - pp, f] / scale
            K = s["K"].double()
            f = 0.5 * (K[0, 0] + K[1, 1])
            root = torch.cat([mano[58:60] - K[:2, 2], f[None]]) / mano[60]
            assert (root - xyz[9]).abs().max() < 1e-5
            assert (s["verts"].double() - xyz[9] - (out.vertices[0] - out.joints[0, 9])).abs().max() < 1e-5
    assert sides == {"right", "left"}


def test_augmentation_is_deterministic_per_epoch(official):
    ds = HandCropDataset([official], DataConfig(crop_size=48))
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["uv"], b["uv"])
    ds.set_epoch(1)
    assert not torch.equal(a["uv"], ds[2]["uv"])


def test_background_replacement_keeps_the_hand(official):
    base = DataConfig(crop_size=96, augment=aug.AugmentConfig(rot_deg=0, scale=1.0, shift=0, flip_prob=0,
                      brightness=0, contrast=0, saturation=0, hue_deg=0, blur_prob=0, bg_prob=0))  # fmt: skip
    plain = HandCropDataset([official], base)[1]["image"]
    for procedural in (0.0, 1.0):
        cfg = DataConfig(
            crop_size=96,
            augment=aug.AugmentConfig(**{**base.augment.__dict__, "bg_prob": 1.0, "bg_procedural": procedural}),
        )
        ds = HandCropDataset([official], cfg)
        swapped = ds[1]["image"]
        folder = ds.folders[0]
        mask = cv2.imread(str(folder.masks[1]), cv2.IMREAD_GRAYSCALE)
        A = cv2.invertAffineTransform(ds[1]["crop_to_image"].double().numpy())
        t = aug.CropTransform(A=A, T=np.eye(3), Rz=np.eye(3), zoom=1.0, flip=False, crop_size=96)
        m = aug.warp_image(mask, t)
        inside = cv2.erode((m > 200).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        outside = cv2.dilate((m > 30).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        diff = np.abs(to_display(swapped).astype(int) - to_display(plain).astype(int)).sum(-1)
        assert diff[inside].mean() < 3.0  # the hand is untouched
        assert diff[outside].mean() > 20.0  # the background is new


def test_split_and_subset(official):
    tr, va = split_indices(10, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # e.g. two cameras of each frame
    tr, va = split_indices(10, 0.2, seed=0, groups=groups)
    assert len(va) == 2 and groups[va[0]] == groups[va[1]] and not set(groups[tr]) & set(groups[va])
    ds = HandCropDataset([official], DataConfig(crop_size=32))
    sub = ds.subset([1, 3], train=False)
    assert len(sub) == 2 and int(sub[1]["index"]) == 3 and not sub.train and ds.train


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_bad_labels_name_file_and_index(official, tmp_path):
    bad = _copy(official, tmp_path / "short")
    xyz = json.loads((bad / "training_xyz.json").read_text())
    (bad / "training_xyz.json").write_text(json.dumps(xyz[:-1]))
    with pytest.raises(HandannoError, match=r"training_xyz\.json.*5 samples"):
        HandCropDataset([bad], DataConfig())

    bad = _copy(official, tmp_path / "nan")
    xyz[3][4][1] = math.nan
    (bad / "training_xyz.json").write_text(json.dumps(xyz))
    with pytest.raises(HandannoError, match=r"training_xyz\.json: sample 3"):
        HandCropDataset([bad], DataConfig())

    bad = _copy(official, tmp_path / "noimage")
    (bad / "training" / "rgb" / "00000004.jpg").unlink()
    with pytest.raises(HandannoError, match=r"00000004\.jpg.*sample 4"):
        HandCropDataset([bad], DataConfig())

    bad = _copy(official, tmp_path / "corrupt")
    (bad / "training" / "rgb" / "00000002.jpg").write_bytes(b"not a jpeg")
    ds = HandCropDataset([bad], DataConfig())
    with pytest.raises(HandannoError, match=r"00000002\.jpg.*sample 2"):
        ds[2]

    with pytest.raises(HandannoError, match="not found"):
        HandCropDataset([tmp_path / "missing"], DataConfig())


def test_keypoints_marked_not_visible_are_weighted_zero(with_mano, tmp_path):
    """index.json "visible" (the bootstrap's labels) reaches the sample as ``vis``; the heatmap loss ignores those."""
    from pathlib import Path

    from handanno.models.heatmaps import heatmap_loss, render_gaussian_heatmaps

    root = Path(shutil.copytree(with_mano, tmp_path / "labels"))
    index = json.loads((root / "index.json").read_text())
    index[1]["visible"] = [j not in (4, 8) for j in range(21)]
    (root / "index.json").write_text(json.dumps(index))
    ds = HandCropDataset([root], DataConfig(crop_size=64, augment=GEOMETRY_ONLY))
    vis = ds[1]["vis"]
    assert vis.tolist() == [0.0 if j in (4, 8) else 1.0 for j in range(21)] and bool((ds[0]["vis"] == 1).all())
    target = render_gaussian_heatmaps(ds[1]["uv"][None] / 4, (16, 16), 1.0)
    wrong = target.clone()
    wrong[:, [4, 8]] = torch.roll(target[:, [4, 8]], 5, dims=-1)  # the hidden keypoints predicted elsewhere
    assert float(heatmap_loss(wrong, target, "awing", vis[None])) == pytest.approx(0.0, abs=1e-7)
    assert float(heatmap_loss(wrong, target, "awing")) > 1e-4
    index[1]["visible"] = [True] * 20
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(HandannoError, match="visible"):
        HandCropDataset([root], DataConfig(crop_size=64))
