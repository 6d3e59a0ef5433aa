import cv2
import numpy as np
import pytest
import torch

from handanno.data import augment as aug
from handanno.data.datasets import DataConfig, HandCropDataset
from handanno.data.freihand import recover_root, root_uv_and_scale
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.models.heatmaps import render_gaussian_heatmaps
from handanno.models.nets import make_task
from handanno.models.nets.cpm import CPM, CPMConfig
from handanno.models.nets.lift import (
    Lift,
    LiftConfig,
    canonical_frame,
    flip_left,
    normalise_root_relative,
    rotation_from_6d,
    rotation_from_axis_angle,
)
from handanno.models.nets.mano_regressor import (
    ManoRegressor,
    ManoRegressorConfig,
    root_from_uv_scale,
    uv_scale_from_root,
)
from handanno.models.nets.unet import UNet, UNetConfig
from handanno.models.toy_labels_io import make_toy_labels, toy_hand_model

# Tiny versions of each model: same topology, few channels, small crops (tests run on 2 CPU cores).
TINY = {
    "cpm": dict(width=0.125, crop_size=64),
    "unet": dict(base_channels=16, crop_size=32, depth=2),
    "lift": dict(width=0.125, uv_noise_px=0.0, dropout_prior=0.0, dropout_viewpoint=0.0),
    "mano": dict(width=8, crop_size=64, hidden=64),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labels8(tmp_path_factory):
    return make_toy_labels(tmp_path_factory.mktemp("toy8"), 8, image_size=96, seed=3, hand_model=toy_hand_model())


@pytest.fixture(scope="module")
def hand_layers():
    return {s: ManoLayer(toy_hand_model(s)) for s in ("right", "left")}


def test_output_shapes():
    x = torch.randn(2, 3, 64, 64)
    maps = CPM(CPMConfig(width=0.125, crop_size=64))(x)
    assert len(maps) == 3 and all(m.shape == (2, 21, 8, 8) for m in maps)  # stride 8, three stages
    assert CPM(CPMConfig(width=0.125, crop_size=64, num_stages=1, batch_norm=False))(x)[0].shape == (2, 21, 8, 8)
    assert UNet(UNetConfig(base_channels=8, crop_size=64, depth=3))(x).shape == (2, 21, 64, 64)
    assert UNet(UNetConfig(base_channels=8, crop_size=64, depth=3, heatmap_stride=4))(x).shape == (2, 21, 16, 16)
    out = Lift(LiftConfig(width=0.125))(torch.rand(2, 21, 32, 32), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert out.coords_can.shape == (2, 21, 3) and out.rot.shape == (2, 3, 3)
    reg = ManoRegressor(ManoRegressorConfig(width=8, crop_size=64, hidden=16))
    raw = reg(x)
    assert raw.shape == (2, 61)
    dec = reg.decode(raw)
    # zero-initialised head: mean pose, centred root, the reference scale
    assert torch.allclose(dec.uv_root, torch.full((2, 2), 31.5)) and torch.allclose(dec.scale, torch.full((2,), 256.0))
    with pytest.raises(HandannoError, match="image must have shape"):
        CPM(CPMConfig(width=0.125))(torch.randn(2, 3, 64, 32))


def test_full_size_layer_counts_follow_hand3d():
    convs = [m for m in CPM(CPMConfig(batch_norm=False)).modules() if isinstance(m, torch.nn.Conv2d)]
    # encoder 2+2+4+2 + conv4_3..4_7 (5) = 15, stage 1: 2, stages 2-3: 7 each
    assert len(convs) == 15 + 2 + 7 + 7
    assert [c.out_channels for c in convs[:15]] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 2 + [256] * 4 + [128]
    assert convs[17].kernel_size == (7, 7) and convs[17].in_channels == 128 + 21
    lift = Lift(LiftConfig())
    fcs = [m.out_features for m in lift.pose_prior.fc if isinstance(m, torch.nn.Linear)]
    assert fcs == [512, 512, 63] and lift.pose_prior.fc[0].in_features == 128 * 4 * 4 + 2
    assert [m.out_features for m in lift.viewpoint.fc if isinstance(m, torch.nn.Linear)] == [256, 128, 3]
    six = Lift(LiftConfig(rotation="6d"))
    assert [m.out_features for m in six.viewpoint.fc if isinstance(m, torch.nn.Linear)] == [256, 128, 6]


def test_lift_encoders_see_their_input_at_initialisation():
    """The encoders' features must vary with the score maps from the start.

    With PyTorch's default initialisation the spread of the features over a batch of different
    hands was 4-6 % of their size (the biases dominate); training then settled on one constant
    hand within an epoch. He initialisation keeps it near 1.
    """
    torch.manual_seed(0)
    maps = render_gaussian_heatmaps(torch.rand(16, 21, 2) * 24 + 4, (32, 32), 3.0)  # 16 different hands
    net = Lift(LiftConfig())
    with torch.no_grad():
        for enc in (net.pose_prior.conv, net.viewpoint.conv):
            f = enc(maps)  # (16, C * 4 * 4)
            assert float(f.std(0).mean() / f.abs().mean()) > 0.3


def test_rotation_from_6d_is_a_rotation_and_inverts_its_rows():
    """Any 6 numbers give a proper rotation; a rotation's first two rows give it back; gradients flow."""
    a = torch.randn(64, 6, dtype=torch.float64, requires_grad=True)
    R = rotation_from_6d(a)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(64, dtype=torch.float64), atol=1e-12)
    R0 = rotation_from_axis_angle(torch.randn(64, 3, dtype=torch.float64))
    assert torch.allclose(rotation_from_6d(R0[:, :2].reshape(64, 6)), R0, atol=1e-12)
    R.square().mul(torch.randn(64, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with pytest.raises(HandannoError, match="rotation 'quaternion'"):
        make_task("lift", {"rotation": "quaternion"})


def test_rotation_from_axis_angle_matches_opencv():
    u = torch.tensor([[0.3, -1.2, 0.5], [0.0, 0.0, 0.0], [2.0, 1.0, -1.0]], dtype=torch.float64)
    R = rotation_from_axis_angle(u)
    for i in range(3):
        ref, _ = cv2.Rodrigues(u[i].numpy().reshape(3, 1))
        assert np.allclose(R[i].numpy(), ref, atol=1e-7)


def test_convention_canonical_frame():
    rng = np.random.default_rng(0)
    xyz = torch.tensor(rng.normal(0, 0.05, (4, 21, 3)) + [0, 0, 0.5], dtype=torch.float64)
    rel, bone = normalise_root_relative(xyz)
    assert torch.allclose((rel[:, 9] - rel[:, 10]).norm(dim=-1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(bone, (xyz[:, 9] - xyz[:, 10]).norm(dim=-1))
    can, R = canonical_frame(rel)
    assert torch.allclose(can @ R, rel, atol=1e-12)  # rel = can @ R (row vectors)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(can[:, 9, [0, 2]], torch.zeros(4, 2, dtype=torch.float64), atol=1e-12)
    assert (can[:, 9, 1] > 0).all()  # middle MCP on +y
    assert torch.allclose(can[:, 17, 2], torch.zeros(4, dtype=torch.float64), atol=1e-12) and (can[:, 17, 0] > 0).all()
    # a mirrored (left) hand has the same canonical shape once z is flipped back
    can_l, R_l = canonical_frame(rel * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(flip_left(can_l, torch.ones(4, dtype=torch.bool)), can, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R_l), torch.ones(4, dtype=torch.float64))


def test_root_from_uv_scale_matches_freihand_recipe():
    K = torch.tensor([[[480.0, 0, 110], [0, 470.0, 115], [0, 0, 1]]], dtype=torch.float64)
    uv, s = torch.tensor([[130.0, 90.0]], dtype=torch.float64), torch.tensor([900.0], dtype=torch.float64)
    assert np.allclose(root_from_uv_scale(uv, s, K).numpy(), recover_root(uv.numpy(), s.numpy(), K.numpy()))
    uv_back, s_back = uv_scale_from_root(root_from_uv_scale(uv, s, K), K)
    assert torch.allclose(uv_back, uv, atol=1e-9) and torch.allclose(s_back, s, rtol=1e-12)
    uv_np, s_np = root_uv_and_scale(recover_root(uv.numpy(), s.numpy(), K.numpy()), K.numpy())
    assert np.allclose(uv_back.numpy(), uv_np, atol=1e-9) and np.allclose(s_back.numpy(), s_np, rtol=1e-12)


@pytest.mark.parametrize(("kind", "steps", "lr"), [("cpm", 60, 5e-3), ("unet", 90, 5e-3), ("lift", 80, 3e-3),
                                                   ("mano", 40, 3e-3)])  # fmt: skip
def test_overfits_eight_samples(kind, steps, lr, labels8, hand_layers):
    """Full-batch Adam on 8 fixed samples: the training loss falls by at least 90 %."""
    torch.manual_seed(0)
    task = make_task(kind, TINY[kind], **({"hand_layers": hand_layers} if kind == "mano" else {}))
    ds = HandCropDataset([labels8], task.data_config(DataConfig(augment=aug.AugmentConfig(enabled=False))), train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    opt = torch.optim.Adam(task.model.parameters(), lr=lr)
    task.model.train()
    losses = []
    for _ in range(steps):
        loss, _ = task.loss(task.forward(task.model, batch, train=True), batch)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(losses[-3:]) <= 0.1 * losses[0], f"{kind}: loss {losses[0]:.4g} -> {losses[-1]:.4g}"


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_mano_losses_vanish_at_the_true_parameters(flip_prob, labels8, hand_layers):
    """The regressor's targets agree with each other after augmentation (rotation, zoom, flips to left hands)."""
    from handanno.data.conventions import NUM_BETAS, NUM_POSE

    task = make_task("mano", TINY["mano"], hand_layers=hand_layers)
    augment = aug.AugmentConfig(flip_prob=flip_prob, rot_deg=40.0)
    ds = HandCropDataset([labels8], task.data_config(DataConfig(augment=augment)), train=True)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    assert bool((batch["side"] == int(flip_prob)).all())
    uv_root, scale = uv_scale_from_root(batch["xyz"].float()[:, 9], batch["K"].float())
    raw = torch.cat([batch["mano"].float()[:, : NUM_POSE + NUM_BETAS], task.model.root_targets(uv_root, scale)], 1)
    _, parts = task.loss(raw, batch)
    assert parts["pose"] == parts["betas"] == 0.0 and parts["root"] < 1e-10
    assert parts["joints"] < 1e-6 and parts["verts"] < 1e-6  # metres
    assert parts["2d"] * TINY["mano"]["crop_size"] < 0.05  # crop pixels
    raw[:, 3] += 0.3  # a bent finger is seen by every 3D and 2D loss
    _, bent = task.loss(raw, batch)
    assert bent["joints"] > 1e-4 and bent["2d"] * TINY["mano"]["crop_size"] > 0.05


def test_unet_heatmap_stride_keeps_crop_pixels(labels8):
    # Targets rendered at 1/4 of the crop decode back to the crop-pixel keypoints, and the
    # 2D metrics come out in crop / label pixels whatever the map size.
    task = make_task("unet", {"base_channels": 4, "crop_size": 64, "depth": 3, "heatmap_stride": 4, "sigma_px": 1.0})
    ds = HandCropDataset([labels8], task.data_config(DataConfig(augment=aug.AugmentConfig(enabled=False))), train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    target = task.targets(batch)
    assert target.shape == (4, 21, 16, 16)
    uv, conf = task.decode(target)
    inside = ((batch["uv"] > 4) & (batch["uv"] < 59)).all(-1)  # away from the border, where Gaussians are cut
    assert inside.sum() > 40
    assert torch.allclose(uv[inside], batch["uv"].float()[inside], atol=0.02)
    m = task.metrics(task.collect(target, batch))
    assert m["epe_crop_px"] < 0.5 and m["pck@0.2"] > 0.95
    for bad in (3, 16):
        with pytest.raises(HandannoError, match="heatmap_stride"):
            UNetConfig(depth=3, heatmap_stride=bad)


def test_task_factory_rejects_unknown_input():
    with pytest.raises(HandannoError, match="unknown model type"):
        make_task("resnet")
    with pytest.raises(HandannoError, match="does not fit a cpm model"):
        make_task("cpm", {"depth": 3})
    with pytest.raises(HandannoError, match="unknown backbone"):
        ManoRegressor(ManoRegressorConfig(backbone="vgg"))


def test_backbone_weights_from_a_local_file(tmp_path):
    src = ManoRegressor(ManoRegressorConfig(width=8, crop_size=64, hidden=16))
    state = {k: v for k, v in src.backbone.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 64)  # an ImageNet-style classifier head is ignored
    torch.save(state, tmp_path / "resnet18.pth")
    dst = ManoRegressor(
        ManoRegressorConfig(width=8, crop_size=64, hidden=16, backbone_weights=str(tmp_path / "resnet18.pth"))
    )
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(HandannoError, match="bad.pth"):
        ManoRegressor(ManoRegressorConfig(width=8, crop_size=64, hidden=16, backbone_weights=str(tmp_path / "bad.pth")))


def test_unet_starts_from_near_zero_maps():
    """The head starts near zero, so training does not first spend epochs pulling the background down."""
    torch.manual_seed(0)
    model = make_task("unet", {"base_channels": 8, "crop_size": 64, "depth": 3}).model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.abs().max() < 0.05
