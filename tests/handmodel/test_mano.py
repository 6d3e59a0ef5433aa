"""ManoLayer against smplx.MANO (the reference), its conventions, batching, devices and gradients."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import smplx
import torch
from scipy.spatial.transform import Rotation
from smplx.utils import Struct

from handanno.data.conventions import FREIHAND_FROM_EXTENDED, MANO_TO_FREIHAND, TIP_VERTEX_IDS
from handanno.errors import HandannoError
from handanno.handmodel.mano import HandModelData, HandOutput, ManoLayer
from handanno.rotations import axis_angle_to_matrix_torch


def _model(d, side="right") -> HandModelData:
    return HandModelData.from_arrays(d, side=side, name="test", is_mano=False, source="<random test model>")


def _params(B: int, seed: int = 0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    pose = 0.4 * torch.randn(B, 48, generator=g)
    betas = torch.randn(B, 10, generator=g)
    trans = 0.1 * torch.randn(B, 3, generator=g)
    return tuple(x.to(device=device, dtype=dtype) for x in (pose, betas, trans))


def _smplx_mano(d, side="right", dtype=torch.float32):
    keys = ("v_template", "f", "J_regressor", "weights", "posedirs", "shapedirs", "kintree_table")
    struct = Struct(**{k: d[k] for k in keys}, hands_components=d["hands_components"], hands_mean=d["hands_mean"])
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
        return smplx.MANO(
            "unused",
            data_struct=struct,
            is_rhand=side == "right",
            use_pca=False,
            flat_hand_mean=False,
            create_betas=False,
            create_global_orient=False,
            create_hand_pose=False,
            create_transl=False,
            dtype=dtype,
        )


@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_smplx_mano(mano_dict, device, side):
    B = 4
    layer = ManoLayer(_model(mano_dict, side)).to(device)
    ref = _smplx_mano(mano_dict, side).to(device)
    pose, betas, trans = _params(B, device=device)

    out = layer(pose, betas, trans)
    want = ref(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans)

    # float32 on both sides; see TOLERANCES in conftest.py for the size of float32 round-off.
    torch.testing.assert_close(out.vertices, want.vertices, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.mano_joints, want.joints, rtol=1e-5, atol=1e-6)


def test_convention_freihand_joint_order(mano_dict):
    layer = ManoLayer(_model(mano_dict))
    out = layer(*_params(3))
    assert out.joints.shape == (3, 21, 3) and out.mano_joints.shape == (3, 16, 3)
    for mano_j, fh in MANO_TO_FREIHAND.items():
        assert torch.equal(out.joints[:, fh], out.mano_joints[:, mano_j]), (mano_j, fh)
    assert torch.equal(out.joints[:, 9], out.mano_joints[:, 4])  # middle MCP = MANO joint 4 (FreiHAND root)
    assert torch.equal(out.joints[:, 0], out.mano_joints[:, 0])  # wrist
    # fingertips: FreiHAND 4, 8, 12, 16, 20 = vertices 744 (thumb), 320, 443, 555, 672 (pinky)
    assert TIP_VERTEX_IDS.tolist() == [744, 320, 443, 555, 672]
    assert torch.equal(out.joints[:, [4, 8, 12, 16, 20]], out.vertices[:, TIP_VERTEX_IDS])
    assert FREIHAND_FROM_EXTENDED[[4, 8, 12, 16, 20]].tolist() == [16, 17, 18, 19, 20]


def test_tip_vertex_ids_come_from_the_model(mano_dict):
    tips = np.array([1, 2, 3, 4, 5])
    layer = ManoLayer(_model({**mano_dict, "tip_vertex_ids": tips}))
    out = layer(*_params(2))
    assert torch.equal(out.joints[:, [4, 8, 12, 16, 20]], out.vertices[:, tips])


def test_batch_equals_one_by_one(mano_dict):
    layer = ManoLayer(_model(mano_dict), dtype=torch.float64)
    pose, betas, trans = _params(5, dtype=torch.float64)
    out = layer(pose, betas, trans)
    for b in range(5):
        one = layer(pose[b : b + 1], betas[b : b + 1], trans[b : b + 1])
        torch.testing.assert_close(out.vertices[b : b + 1], one.vertices, **_TOL64)
        torch.testing.assert_close(out.joints[b : b + 1], one.joints, **_TOL64)


_TOL64 = {"rtol": 1e-10, "atol": 1e-12}


def test_device_and_dtype(mano_dict, device, dtype, tolerance):
    """Every device/dtype gives the float64 CPU result (within that dtype's round-off)."""
    model = _model(mano_dict)
    want = ManoLayer(model, dtype=torch.float64)(*_params(3, dtype=torch.float64))
    layer = ManoLayer(model, dtype=dtype).to(device)
    assert layer.dtype == dtype and layer.device.type == device.type
    out = layer(*_params(3, dtype=dtype, device=device))
    assert isinstance(out, HandOutput)
    for got, ref in ((out.vertices, want.vertices), (out.joints, want.joints), (out.mano_joints, want.mano_joints)):
        assert got.dtype == dtype and got.device.type == device.type
        torch.testing.assert_close(got.cpu().double(), ref, **tolerance)


def test_gradcheck_float64(mano_dict):
    layer = ManoLayer(_model(mano_dict), dtype=torch.float64)
    pose, betas, trans = (x.requires_grad_() for x in _params(2, dtype=torch.float64))
    some_verts = torch.arange(0, layer.num_verts, 97)

    def f(pose, betas, trans):
        out = layer(pose, betas, trans)
        return out.joints, out.vertices[:, some_verts]

    assert torch.autograd.gradcheck(f, (pose, betas, trans), eps=1e-6, atol=1e-7, fast_mode=True)


def test_gradient_finite_at_zero_pose(mano_dict):
    """The pose mean makes full_pose non-zero, but the global rotation is exactly zero here."""
    layer = ManoLayer(_model(mano_dict), dtype=torch.float64)
    pose = torch.zeros(1, 48, dtype=torch.float64, requires_grad=True)
    out = layer(pose, torch.zeros(1, 10, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    out.vertices.sum().backward()
    assert torch.isfinite(pose.grad).all()


def test_rest_joints_and_root(mano_dict):
    layer = ManoLayer(_model(mano_dict), dtype=torch.float64)
    pose, betas, trans = _params(3, dtype=torch.float64)
    rest = layer.rest_joints(betas)
    assert rest.shape == (3, 16, 3)
    # zero absolute pose (pose = -hands_mean) and no translation: the joints are the rest joints
    flat = layer(-layer.pose_mean.expand(3, -1), betas, torch.zeros_like(trans))
    torch.testing.assert_close(flat.mano_joints, rest, **_TOL64)
    # any pose: the root stays at rest root + trans
    out = layer(pose, betas, trans)
    torch.testing.assert_close(out.mano_joints[:, 0], rest[:, 0] + trans, **_TOL64)


def test_convention_global_rotation_turns_about_the_root(mano_dict):
    layer = ManoLayer(_model(mano_dict), dtype=torch.float64)
    pose, betas, trans = _params(2, dtype=torch.float64)
    out = layer(pose, betas, trans)
    R = torch.tensor(Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix())
    new_global = Rotation.from_matrix(R.numpy() @ Rotation.from_rotvec(pose[:, :3].numpy()).as_matrix()).as_rotvec()
    pose2 = torch.cat([torch.tensor(new_global), pose[:, 3:]], dim=1)
    out2 = layer(pose2, betas, trans)
    root = out.mano_joints[:, :1]  # (B, 1, 3)
    # smplx's Rodrigues adds 1e-8 to each axis-angle component before taking the norm, which
    # perturbs each rotation by ~1e-8 rad: ~1e-9 m on a 0.1 m hand; atol 1e-8 m covers it.
    torch.testing.assert_close(out2.vertices, (out.vertices - root) @ R.T + root, rtol=0, atol=1e-8)


def test_layer_rotations_match_smplx_and_scipy():
    """The layer's Rodrigues (handanno.rotations) is smplx's bit for bit, and scipy's up to the 1e-8 angle guard."""
    from smplx.lbs import batch_rodrigues

    rotvec = torch.tensor(np.random.default_rng(1).normal(size=(20, 3)))
    assert torch.equal(axis_angle_to_matrix_torch(rotvec), batch_rodrigues(rotvec))
    want = torch.tensor(Rotation.from_rotvec(rotvec.numpy()).as_matrix())
    torch.testing.assert_close(axis_angle_to_matrix_torch(rotvec), want, rtol=1e-7, atol=1e-7)  # 1e-8 angle guard


def test_layer_holds_buffers_only(mano_dict):
    layer = ManoLayer(_model(mano_dict, "left"))
    assert list(layer.parameters()) == []
    assert layer.state_dict() == {}  # checkpoints must not carry (licensed) model arrays
    assert layer.side == "left" and layer.name == "test" and layer.num_verts == 778
    assert layer.faces.dtype == torch.long and layer.faces.shape == (200, 3)
    assert "left" in repr(layer)


def test_shape_dtype_device_errors(mano_dict):
    layer = ManoLayer(_model(mano_dict))
    pose, betas, trans = _params(2)
    with pytest.raises(HandannoError, match=r"betas must have shape \(2, 10\), got \(1, 10\)"):
        layer(pose, betas[:1], trans)  # no silent broadcasting: expand explicitly
    with pytest.raises(HandannoError, match=r"pose must have shape \(B, 48\)"):
        layer(pose[:, :45], betas, trans)
    with pytest.raises(HandannoError, match=r"trans must have shape \(2, 3\)"):
        layer(pose, betas, trans[:, :2])
    with pytest.raises(HandannoError, match="float64 .* layer is torch.float32"):
        layer(pose.double(), betas, trans)
    layer(pose, betas[:1].expand(2, -1), trans)  # the explicit way


def test_model_data_is_checked_and_frozen(mano_dict):
    model = _model(mano_dict)
    assert model.kintree_table[0, 0] == -1 and model.faces.dtype == np.int64
    assert model.v_template.dtype == np.float64 and model.tip_vertex_ids.tolist() == TIP_VERTEX_IDS.tolist()
    with pytest.raises(ValueError):
        model.v_template[0, 0] = 1.0  # read-only
    bad = {**mano_dict, "posedirs": np.zeros((778, 3, 134))}
    with pytest.raises(HandannoError, match=r"/x/MANO_RIGHT.pkl: posedirs must have shape \(778, 3, 135\)"):
        HandModelData.from_arrays(bad, side="right", name="MANO", is_mano=True, source="/x/MANO_RIGHT.pkl")
    with pytest.raises(HandannoError, match="hands_mean missing"):
        HandModelData.from_arrays(
            {k: v for k, v in mano_dict.items() if k != "hands_mean"}, "right", "MANO", True, "/x/m.pkl"
        )
    kt = mano_dict["kintree_table"].copy()
    kt[0, 5] = 0
    with pytest.raises(HandannoError, match="kintree_table"):
        HandModelData.from_arrays({**mano_dict, "kintree_table": kt}, "right", "MANO", True, "/x/m.pkl")
    with pytest.raises(HandannoError, match="tip_vertex_ids"):
        HandModelData.from_arrays({**mano_dict, "tip_vertex_ids": np.array([1, 2, 3, 4, 9999])}, "right", "t", 0, "s")
    with pytest.raises(HandannoError, match="side"):
        HandModelData.from_arrays(mano_dict, "both", "t", False, "s")


def test_keypoints_fast_path_equals_forward_joints(mano_dict):
    from handanno.handmodel.mano import HandModelData, ManoLayer

    model = HandModelData.from_arrays(mano_dict, side="right", name="test", is_mano=False, source="fixture")
    layer = ManoLayer(model, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    pose = torch.randn(4, 48, generator=g, dtype=torch.float64) * 0.5
    betas = torch.randn(4, 10, generator=g, dtype=torch.float64)
    trans = torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.1
    full = layer(pose, betas, trans).joints
    fast = layer.keypoints(pose, betas, trans)
    assert torch.allclose(fast, full, atol=1e-12)
