"""FreiHAND labels: conversions, crops, writer/reader round trips, and FreiHAND's own recipe as oracle."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handanno.data import freihand as fh
from handanno.data import freihand_io as fio
from handanno.data.files_io import read_json
from handanno.data.freihand_io import FreiHANDSample, FreiHANDWriter, read_freihand
from handanno.errors import HandannoError
from handanno.handmodel.mano import HandModelData, ManoLayer

# Float64 throughout: the recipe adds and subtracts ~0.5 m translations, so rounding is
# ~1e-16 * 0.5 m per op; 1e-9 m leaves a million-fold margin and still catches any real error
# (the smallest geometric slip, e.g. using fx for uv_root when fx != fy, is ~1e-5 m here).
ATOL_M = 1e-9


@pytest.fixture
def layer(mano_dict) -> ManoLayer:
    model = HandModelData.from_arrays(mano_dict, side="right", name="test", is_mano=False, source="<random>")
    return ManoLayer(model, dtype=torch.float64)


def _freihand_pose_hand(mano_entry, K_entry, layer):
    """lmb-freiburg/freihand utils/model.py ``pose_hand`` + ``HandModel.pose_by_root``, re-typed.

    ``layer`` stands for FreiHAND's chumpy MANO (``use_mean_pose=True``: flat_hand_mean=False).
    """
    mano, K = np.array(mano_entry), np.array(K_entry)
    poses, shapes, uv_root, scale = mano[:, :48], mano[:, 48:58], mano[:, 58:60], mano[:, 60:]  # split_theta
    focal, pp = 0.5 * (K[0, 0] + K[1, 1]), K[:2, 2]  # get_focal_pp
    uv = uv_root.copy()  # backproject_ortho
    uv -= pp
    xyz_root = np.concatenate([np.reshape(uv, [-1, 2]), np.ones_like(uv[:, :1]) * focal], 1)
    xyz_root /= scale
    out = layer(torch.tensor(poses[:1]), torch.tensor(shapes[:1]), torch.zeros(1, 3, dtype=torch.float64))
    xyz, V = out.joints[0].numpy(), out.vertices[0].numpy()  # global_trans = 0
    global_t = xyz_root[0] - xyz[9]  # pose_by_root, root_id=9
    return xyz + global_t, V + global_t


# --------------------------------------------------------------------------- scenes


K_FULL = np.array([[450.0, 0.0, 321.3], [0.0, 456.0, 178.9], [0.0, 0.0, 1.0]])  # fx != fy on purpose


def _world_hand(layer, rng):
    pose = 0.5 * rng.normal(size=48)
    betas = rng.normal(size=10)
    trans = 0.05 * rng.normal(size=3)
    out = layer(*(torch.tensor(x)[None] for x in (pose, betas, trans)))
    return pose, betas, trans, out.joints[0].numpy(), out.vertices[0].numpy()


def _make_sample(layer, rng, frame="000", camera="cam0", K_full=K_FULL, hand="right"):
    pose_w, betas, _, J_w, V_w = _world_hand(layer, rng)
    R = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    t = np.array([0.03, -0.02, 0.55]) - R @ J_w[9]
    xyz, verts = J_w @ R.T + t, V_w @ R.T + t  # camera frame
    box = fh.hand_crop_box(fh.project_points(xyz, K_full))
    K = fh.crop_intrinsics(K_full, box)
    uv_root, scale = fh.root_uv_and_scale(xyz[9], K)
    mano = fh.freihand_mano_vector(fh.pose_to_camera_frame(pose_w, R), betas, uv_root, scale)
    image = rng.integers(0, 255, size=(360, 640, 3), dtype=np.uint8)
    mask = np.where(rng.random((360, 640)) > 0.5, 255, 0).astype(np.uint8)
    return FreiHANDSample(
        rgb=fh.crop_image(image, box), mask=fh.crop_image(mask, box, interpolation="nearest"),
        K=K, xyz=xyz, verts=verts, mano=mano, frame=frame, camera=camera, hand=hand,
        quality={"reproj_err_px": {"mean": 1.5}, "accepted": True},
    )  # fmt: skip


def _write(root, layer, n, seed=0, close=True):
    rng = np.random.default_rng(seed)
    samples = [_make_sample(layer, rng, frame=f"{i:03d}", camera=f"cam{i % 2}") for i in range(n)]
    writer = FreiHANDWriter(root, "test", is_mano=False)
    for s in samples:
        writer.add(s)
    if close:
        writer.close()
    return samples, writer


# --------------------------------------------------------------------------- the recipe


def test_written_labels_rebuild_xyz_with_freihand_recipe(tmp_path, layer):
    samples, _ = _write(tmp_path, layer, 5)
    labels = read_freihand(tmp_path)
    assert len(labels) == 5 and labels.is_handanno and labels.model["is_mano"] is False
    K_list = read_json(tmp_path / "training_K.json")
    mano_list = read_json(tmp_path / "training_mano.json")
    assert np.shape(mano_list[0]) == (1, 61)  # stored as [[61 numbers]]
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(labels.xyz[i], s.xyz)  # JSON keeps float64 exactly
        # FreiHAND's own code, from the raw JSON entries
        xyz_fh, verts_fh = _freihand_pose_hand(mano_list[i], K_list[i], layer)
        np.testing.assert_allclose(xyz_fh, labels.xyz[i], atol=ATOL_M, rtol=0)
        np.testing.assert_allclose(verts_fh, labels.verts[i], atol=ATOL_M, rtol=0)
        # ours, one sample
        rebuilt = fh.rebuild_xyz_from_mano(labels.mano[i], labels.K[i], layer)
        np.testing.assert_allclose(rebuilt.xyz, labels.xyz[i], atol=ATOL_M, rtol=0)
        np.testing.assert_allclose(rebuilt.verts, labels.verts[i], atol=ATOL_M, rtol=0)
    batched = fh.rebuild_xyz_from_mano(labels.mano, labels.K, layer)
    assert batched.xyz.shape == (5, 21, 3) and batched.verts.shape == (5, 778, 3)
    np.testing.assert_allclose(batched.xyz, labels.xyz, atol=ATOL_M, rtol=0)
    np.testing.assert_allclose(labels.scale, np.linalg.norm(labels.xyz[:, 9] - labels.xyz[:, 10], axis=-1))


def test_rebuild_fails_without_the_camera_rotation(layer):
    """The recipe test has teeth: the world-frame global rotation does not rebuild the camera-frame hand."""
    rng = np.random.default_rng(1)
    pose_w, betas, _, J_w, _ = _world_hand(layer, rng)
    R = Rotation.from_rotvec([0.0, 0.0, 0.5]).as_matrix()
    xyz = J_w @ R.T + [0.0, 0.0, 0.5]
    K = np.array([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]])
    uv, s = fh.root_uv_and_scale(xyz[9], K)
    good = fh.rebuild_xyz_from_mano(fh.freihand_mano_vector(fh.pose_to_camera_frame(pose_w, R), betas, uv, s), K, layer)
    bad = fh.rebuild_xyz_from_mano(fh.freihand_mano_vector(pose_w, betas, uv, s), K, layer)
    np.testing.assert_allclose(good.xyz, xyz, atol=ATOL_M, rtol=0)
    assert np.abs(bad.xyz - xyz).max() > 1e-3


def test_rebuild_accepts_any_duck_typed_layer():
    class RigidHand:  # no buffers: inputs come as float64 on the CPU
        def __call__(self, pose, betas, trans):
            assert pose.dtype == torch.float64
            R = torch.tensor(Rotation.from_rotvec(pose[:, :3].numpy()).as_matrix())  # (B, 3, 3)
            pts = torch.arange(778 * 3, dtype=torch.float64).reshape(1, 778, 3) * 1e-4
            verts = pts @ R.transpose(1, 2) + trans[:, None]
            return type("Out", (), {"vertices": verts, "joints": verts[:, :21]})()

    K = np.array([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]])
    mano = fh.freihand_mano_vector(np.zeros(48), np.zeros(10), [112.0, 112.0], 1000.0)
    out = fh.rebuild_xyz_from_mano(mano[None], K, RigidHand())
    np.testing.assert_allclose(out.xyz[9], [0.0, 0.0, 0.5])


def test_pose_to_camera_frame_rotates_the_mesh(layer):
    rng = np.random.default_rng(2)
    pose_w, betas, trans, _, V_w = _world_hand(layer, rng)
    R = Rotation.random(random_state=3).as_matrix()
    pose_c = fh.pose_to_camera_frame(pose_w, R)
    np.testing.assert_array_equal(pose_c[3:], pose_w[3:])  # articulation unchanged
    R_g = Rotation.from_rotvec(pose_w[:3]).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(pose_c[:3]).as_matrix(), R @ R_g, atol=1e-12)
    V_c = layer(*(torch.tensor(x)[None] for x in (pose_c, betas, np.zeros(3)))).vertices[0].numpy()
    diff = V_c - V_w @ R.T  # must be one constant translation
    np.testing.assert_allclose(diff, np.broadcast_to(diff[0], diff.shape), atol=ATOL_M)
    batched = fh.pose_to_camera_frame(np.stack([pose_w, pose_w]), R)
    np.testing.assert_allclose(batched[1], pose_c)
    with pytest.raises(HandannoError, match="not a rotation"):
        fh.pose_to_camera_frame(pose_w, np.diag([1.0, 1.0, -1.0]))


def test_recover_root_and_its_inverse():
    K = np.array([[100.0, 0, 112], [0, 100.0, 112], [0, 0, 1]])
    np.testing.assert_allclose(fh.recover_root([122.0, 112.0], 200.0, K), [0.05, 0.0, 0.5])  # (10, 0, 100) / 200
    rng = np.random.default_rng(4)
    xyz = rng.normal(scale=0.1, size=(6, 3)) + [0, 0, 0.6]
    Ks = np.stack([K_FULL] * 6)
    uv, s = fh.root_uv_and_scale(xyz, Ks)
    np.testing.assert_allclose(fh.recover_root(uv, s, Ks), xyz, atol=1e-15)
    with pytest.raises(HandannoError, match="in front"):
        fh.root_uv_and_scale([0.0, 0.0, -1.0], K)


def test_convention_uv_root_is_the_root_pixel_when_fx_equals_fy():
    xyz = np.array([0.04, -0.03, 0.5])
    K = np.array([[480.0, 0, 111.5], [0, 480.0, 111.5], [0, 0, 1]])
    uv, s = fh.root_uv_and_scale(xyz, K)
    np.testing.assert_allclose(uv, fh.project_points(xyz[None], K)[0])
    assert s == pytest.approx(480.0 / 0.5)
    # fx != fy: the recipe uses f = (fx + fy) / 2 for both axes, so uv_root is off the
    # projection by (fx - f) X / Z on x and (fy - f) Y / Z on y
    K2 = np.array([[470.0, 0, 111.5], [0, 490.0, 111.5], [0, 0, 1]])
    uv2, _ = fh.root_uv_and_scale(xyz, K2)
    np.testing.assert_allclose(uv2 - fh.project_points(xyz[None], K2)[0], [10 * 0.08, -10 * -0.06])


def test_mano_vector_pack_split():
    rng = np.random.default_rng(5)
    pose, betas, uv = rng.normal(size=(3, 48)), rng.normal(size=(3, 10)), rng.normal(size=(3, 2))
    scale = rng.random(3)
    v = fh.freihand_mano_vector(pose, betas, uv, scale)
    assert v.shape == (3, 61)
    parts = fh.split_mano_vector(v)
    for a, b in zip(parts, (pose, betas, uv, scale), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fh.split_mano_vector(v[:1]).scale.shape == (1,)  # a stored [[61]] entry
    with pytest.raises(HandannoError, match="betas"):
        fh.freihand_mano_vector(pose, betas[:2], uv, scale)
    with pytest.raises(HandannoError, match="mano"):
        fh.split_mano_vector(np.zeros(60))


def test_sample_versions_map_like_freihand():
    assert [fh.sample_version_id(7, v) for v in fh.SAMPLE_VERSIONS] == [7, 32567, 65127, 97687]
    assert fh.sample_version_id(2, "auto", num_unique=3) == 11
    with pytest.raises(HandannoError, match="version"):
        fh.sample_version_id(0, "green")


# --------------------------------------------------------------------------- crops


def test_convention_crop_of_the_whole_image_is_the_identity():
    K = np.array([[300.0, 0, 50.0], [0, 310.0, 40.0], [0, 0, 1]])
    np.testing.assert_allclose(fh.crop_intrinsics(K, (-0.5, -0.5, 100), 100), K)
    img = np.random.default_rng(6).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fh.crop_image(img, (-0.5, -0.5, 100), 100), img)


def _centroid(img):
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()


def test_convention_crop_half_pixel_projected_point_lands_on_warped_dot():
    img = np.zeros((60, 80), np.float32)
    img[21, 37] = 1.0  # a one-pixel dot at u=37, v=21
    K = np.array([[500.0, 0, 40.0], [0, 500.0, 30.0], [0, 0, 1]])
    X = np.array([(37 - 40) / 500 * 0.5, (21 - 30) / 500 * 0.5, 0.5])  # projects onto the dot
    box = fh.CropBox(20.3, 10.7, 40.0)
    crop = fh.crop_image(img, box, out_size=80, antialias=False)
    want = fh.project_points(X[None], fh.crop_intrinsics(K, box, 80))[0]
    np.testing.assert_allclose(want, [2 * (37 - 20.3) - 0.5, 2 * (21 - 10.7) - 0.5])  # (32.9, 20.1)
    # With an integer zoom, the bilinear tent's sampled centroid is its centre exactly; OpenCV
    # quantises sub-pixel offsets to 1/32 source px, so allow 0.1 output px. A half-pixel
    # slip in the convention would move it by 0.5.
    np.testing.assert_allclose(_centroid(crop), want, atol=0.1)


@pytest.mark.parametrize("antialias", [True, False])
def test_shrinking_crop_keeps_geometry(antialias):
    ys, xs = np.mgrid[:400, :500]
    centre = np.array([201.3, 148.7])
    img = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 6.0**2)).astype(np.float32)
    box = fh.CropBox(100.2, 50.9, 320.0)  # s = 0.25
    crop = fh.crop_image(img, box, out_size=80, antialias=antialias)
    want = (fh.crop_affine(box, 80) @ [*centre, 1.0])[:2]
    # a smooth blob well inside the box: its centroid moves only by interpolation error
    np.testing.assert_allclose(_centroid(crop), want, atol=0.05)


def test_crop_image_shapes_borders_and_masks():
    img = np.full((50, 60, 3), 200, np.uint8)
    out = fh.crop_image(img, (40.0, 30.0, 40.0), out_size=20)  # half outside the image
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [200] * 3 and out[-1, -1].tolist() == [0] * 3
    assert fh.crop_image(img, (500.0, 500.0, 400.0), out_size=20).max() == 0  # entirely outside
    mask = np.zeros((50, 60), np.uint8)
    mask[10:30, 20:40] = 255
    m = fh.crop_image(mask, (9.5, 4.5, 40.0), out_size=16, interpolation="nearest")
    assert m.shape == (16, 16) and set(np.unique(m)) <= {0, 255}
    with pytest.raises(HandannoError, match="positive size"):
        fh.crop_image(img, (0.0, 0.0, 0.0))


def test_hand_crop_box_is_centred_and_enlarged():
    uv = np.array([[100.0, 50.0], [140.0, 150.0], [np.nan, np.nan]])
    box = fh.hand_crop_box(uv, enlarge=1.5)
    assert box.size_px == 150.0
    assert (box.x0 + box.size_px / 2, box.y0 + box.size_px / 2) == (120.0, 100.0)
    with pytest.raises(HandannoError, match="no finite"):
        fh.hand_crop_box(np.full((21, 2), np.nan))


# --------------------------------------------------------------------------- writer


def test_writer_layout_index_and_model(tmp_path, layer):
    samples, _ = _write(tmp_path, layer, 2)
    for name in ("K", "xyz", "verts", "scale", "mano"):
        assert len(read_json(tmp_path / f"training_{name}.json")) == 2
    assert cv2.imread(str(tmp_path / "training" / "rgb" / "00000001.jpg")).shape == (224, 224, 3)
    assert cv2.imread(str(tmp_path / "training" / "mask" / "00000001.jpg"), cv2.IMREAD_GRAYSCALE).shape == (224, 224)
    index = read_json(tmp_path / "index.json")
    assert index[1] == {"id": 1, "frame": "001", "camera": "cam1", "hand": "right",
                        "quality": {"reproj_err_px": {"mean": 1.5}, "accepted": True}}  # fmt: skip
    model = read_json(tmp_path / "model.json")
    assert model["name"] == "test" and model["is_mano"] is False and "not MANO" in model["notice"]
    assert not (tmp_path / fio.PENDING_DIR).exists()


def test_writer_resumes_after_a_crash_and_appends_after_close(tmp_path, layer):
    rng = np.random.default_rng(10)
    samples = [_make_sample(layer, rng, frame=f"{i:03d}") for i in range(5)]
    w = FreiHANDWriter(tmp_path, "test", is_mano=False)
    w.add(samples[0])
    w.add(samples[1])
    del w  # "crash": never closed
    assert not (tmp_path / "training_K.json").exists()
    w = FreiHANDWriter(tmp_path, "test", is_mano=False)
    assert w.num_samples == 2 and w.contains("001", "cam0") and not w.contains("002", "cam0")
    w.add(samples[2])
    w.close()
    w = FreiHANDWriter(tmp_path, "test", is_mano=False)  # append to finished labels
    assert w.num_samples == 3
    with w:
        w.add(samples[3])
    labels = read_freihand(tmp_path)
    assert [e["frame"] for e in labels.index] == ["000", "001", "002", "003"]
    np.testing.assert_array_equal(labels.xyz, np.stack([s.xyz for s in samples[:4]]))


def test_writer_recovers_from_a_crash_inside_close(tmp_path, layer, monkeypatch):
    rng = np.random.default_rng(11)
    samples = [_make_sample(layer, rng, frame=f"{i:03d}") for i in range(4)]
    with FreiHANDWriter(tmp_path, "test", is_mano=False) as w:
        w.add(samples[0])
    w = FreiHANDWriter(tmp_path, "test", is_mano=False)
    w.add(samples[1])
    w.add(samples[2])
    real, calls = fio._write_json_list, []

    def dying(path, items):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, items)

    monkeypatch.setattr(fio, "_write_json_list", dying)
    with pytest.raises(KeyboardInterrupt):
        w.close()
    monkeypatch.setattr(fio, "_write_json_list", real)
    assert len(read_json(tmp_path / "training_K.json")) == 3  # lists now disagree on disk ...
    assert len(read_json(tmp_path / "training_verts.json")) == 1
    with pytest.raises(HandannoError, match="has 1 samples"):
        read_freihand(tmp_path)  # ... which the reader refuses
    with FreiHANDWriter(tmp_path, "test", is_mano=False) as w:  # ... and the next writer repairs
        assert w.num_samples == 3
        w.add(samples[3])
    labels = read_freihand(tmp_path)
    np.testing.assert_array_equal(labels.verts, np.stack([s.verts for s in samples]))


def test_writer_rejects_bad_samples(tmp_path, layer):
    rng = np.random.default_rng(12)
    s = _make_sample(layer, rng)
    w = FreiHANDWriter(tmp_path, "test", is_mano=False)
    w.add(s)
    with pytest.raises(HandannoError, match="already labelled"):
        w.add(s)
    other = dict(frame="x", camera="c")
    bad_uv = s.mano.copy()
    bad_uv[58] += 2.0  # uv_root 2 px off
    with pytest.raises(HandannoError, match="keypoint 9"):
        w.add(FreiHANDSample(**{**s.__dict__, **other, "mano": bad_uv}))
    nan_xyz = s.xyz.copy()
    nan_xyz[3, 1] = np.nan
    with pytest.raises(HandannoError, match="frame 'x' camera 'c'.*xyz"):
        w.add(FreiHANDSample(**{**s.__dict__, **other, "xyz": nan_xyz}))
    with pytest.raises(HandannoError, match="same frame"):
        w.add(FreiHANDSample(**{**s.__dict__, **other, "verts": s.verts + 0.01}))
    with pytest.raises(HandannoError, match="rgb"):
        w.add(FreiHANDSample(**{**s.__dict__, **other, "rgb": s.rgb[:100]}))
    w.close()
    with pytest.raises(HandannoError, match="made with model"):
        FreiHANDWriter(tmp_path, "MANO_RIGHT", is_mano=True)


# --------------------------------------------------------------------------- official FreiHAND


def _dump(path, obj):
    path.write_text(json.dumps(obj))


def _tiny_jpg(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


@pytest.fixture
def official(tmp_path, layer):
    """A FreiHAND download in miniature: 3 training samples (4 image versions), 2 evaluation ones."""
    rng = np.random.default_rng(20)
    K_sq = np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]])
    for split, n in (("training", 3), ("evaluation", 2)):
        samples = [_make_sample(layer, rng, K_full=K_sq) for _ in range(n)]
        _dump(tmp_path / f"{split}_K.json", [s.K.tolist() for s in samples])
        _dump(tmp_path / f"{split}_xyz.json", [s.xyz.tolist() for s in samples])
        _dump(tmp_path / f"{split}_verts.json", [s.verts.tolist() for s in samples])
        _dump(tmp_path / f"{split}_scale.json", [float(fh.keypoint_scale(s.xyz)) for s in samples])
        _dump(tmp_path / f"{split}_mano.json", [[s.mano.tolist()] for s in samples])
        versions = 4 if split == "training" else 1
        for i in range(n * versions):
            _tiny_jpg(tmp_path / split / "rgb" / f"{i:08d}.jpg", 10 * i)
    for i in range(3):
        _tiny_jpg(tmp_path / "training" / "mask" / f"{i:08d}.jpg", 255)
    return tmp_path


def test_reads_official_freihand_training_versions(official, layer):
    gs = read_freihand(official)
    assert len(gs) == 3 and not gs.is_handanno and gs.index is None and gs.model is None
    assert gs.mano.shape == (3, 61) and gs.verts.shape == (3, 778, 3) and gs.scale.shape == (3,)
    hom = read_freihand(official, version="hom")
    auto = read_freihand(official, version="auto")
    assert [p.name for p in hom.image_paths] == ["00000003.jpg", "00000004.jpg", "00000005.jpg"]
    assert auto.image_paths[1].name == "00000010.jpg"
    assert auto.mask_paths == gs.mask_paths and gs.mask_paths[2].name == "00000002.jpg"
    rebuilt = fh.rebuild_xyz_from_mano(gs.mano, gs.K, layer)
    np.testing.assert_allclose(rebuilt.xyz, gs.xyz, atol=ATOL_M, rtol=0)


def test_reads_official_freihand_evaluation(official):
    ev = read_freihand(official, split="evaluation")
    assert len(ev) == 2 and ev.mask_paths is None
    assert [p.parent.parent.name for p in ev.image_paths] == ["evaluation"] * 2
    with pytest.raises(HandannoError, match="single image version"):
        read_freihand(official, split="evaluation", version="hom")
    for name in ("xyz", "verts", "mano"):  # FreiHAND v1 evaluation: only K and scale
        (official / f"evaluation_{name}.json").unlink()
    v1 = read_freihand(official, split="evaluation")
    assert v1.xyz is None and v1.verts is None and v1.mano is None and v1.K.shape == (2, 3, 3)


def test_reader_errors_name_file_and_sample(official, tmp_path, layer):
    xyz = read_json(official / "training_xyz.json")
    _dump(official / "training_xyz.json", xyz[:2])
    with pytest.raises(HandannoError, match=r"training_xyz.json has 2 samples but .*training_K.json has 3"):
        read_freihand(official)
    xyz[1][4][2] = float("nan")
    _dump(official / "training_xyz.json", xyz)
    with pytest.raises(HandannoError, match=r"training_xyz.json: sample 1 holds NaN"):
        read_freihand(official)
    xyz[1] = xyz[1][:20]
    _dump(official / "training_xyz.json", xyz)
    with pytest.raises(HandannoError, match=r"training_xyz.json: sample 1 has shape \(20, 3\)"):
        read_freihand(official)
    xyz[1] = xyz[0]
    _dump(official / "training_xyz.json", xyz)
    (official / "training" / "rgb" / "00000007.jpg").unlink()  # sample 1, version "sample"
    read_freihand(official, version="gs")
    with pytest.raises(HandannoError, match=r"00000007.jpg: image of sample 1, version 'sample'"):
        read_freihand(official, version="sample")
    (official / "training" / "mask" / "00000002.jpg").unlink()
    with pytest.raises(HandannoError, match=r"00000002.jpg: mask of sample 2"):
        read_freihand(official)
    assert len(read_freihand(official, check_images=False)) == 3
    with pytest.raises(HandannoError, match="training_K.json: file not found"):
        read_freihand(official / "training")
    with pytest.raises(HandannoError, match="version must be"):
        read_freihand(official, version="green")


def test_reader_checks_handanno_labels(tmp_path, layer):
    _write(tmp_path, layer, 2)
    with pytest.raises(HandannoError, match="single image version"):
        read_freihand(tmp_path, version="hom")
    (tmp_path / "training_mano.json").unlink()
    with pytest.raises(HandannoError, match="training_mano.json: file not found"):
        read_freihand(tmp_path)


def test_writer_refuses_a_folder_of_official_freihand(official):
    with pytest.raises(HandannoError, match="index.json: missing"):
        FreiHANDWriter(official, "test", is_mano=False)
    assert not (official / "model.json").exists()  # nothing written into someone else's data
