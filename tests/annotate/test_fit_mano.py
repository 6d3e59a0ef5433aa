"""The fitter (:mod:`handanno.annotate.fit_mano`) and its loss terms (:mod:`handanno.annotate.losses`).

Real computations on the shipped open hand model: the rigid initialisation, every loss
term's defining properties, a fit to exact keypoints (pose and shape recovered), the
silhouette stage on a small synthetic session with exact masks, and batch independence.
Numbers quoted in docstrings were measured on this code (1 torch thread, CPU).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handanno.annotate import losses
from handanno.annotate.fit import crop_masks, hand_boxes, silhouette_renderer
from handanno.annotate.fit_mano import FitInputs, FitSettings, fit_batch, initial_pose, kabsch, keypoint_noise_px
from handanno.annotate.pipeline import PipelineSettings
from handanno.annotate.session_io import open_session, read_fit, read_mask, read_session_keypoints
from handanno.annotate.triangulate import triangulate_frames
from handanno.calibration.triangulate import triangulate_robust
from handanno.data import metrics
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.synth.capture import SynthSettings, make_rig, synthesize
from handanno.synth.motion import make_motion

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_hand_model("right")


@pytest.fixture(scope="module")
def layer(model) -> ManoLayer:
    return ManoLayer(model)


@pytest.fixture(scope="module")
def rig():
    """6 cameras of the synthetic dome at 640x480 (with distortion)."""
    return make_rig(6, (640, 480), seed=0)[0]


@pytest.fixture(scope="module")
def truth(layer, model):
    """3 frames of synthetic hand motion (a non-mean shape), seed 0, the anatomical generator's postures
    (a tucked thumb: see test_anatomical_prior_keeps_the_surface_that_keypoints_cannot_see)."""
    return make_motion(layer, np.asarray(model.hands_mean), "right", num_frames=3, fps=15.0, seed=0,
                       postures="anatomical")  # fmt: skip


def _rest_vertices(layer: ManoLayer, betas: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = layer(torch.zeros(1, 48), torch.as_tensor(betas, dtype=torch.float32)[None], torch.zeros(1, 3))
    return out.vertices[0].double().numpy()


# ----------------------------------------------------------------------------------------
# kabsch / initial_pose
# ----------------------------------------------------------------------------------------
def test_kabsch_recovers_rotation_and_translation():
    rng = np.random.default_rng(0)
    src = rng.normal(scale=0.05, size=(21, 3))
    R = Rotation.random(random_state=1).as_matrix()
    t = np.array([0.1, -0.2, 0.5])
    R_est, t_est = kabsch(src, src @ R.T + t)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)
    assert np.linalg.det(R_est) == pytest.approx(1.0)


def test_kabsch_weights():
    rng = np.random.default_rng(2)
    src = rng.normal(scale=0.05, size=(12, 3))
    R = Rotation.random(random_state=3).as_matrix()
    t = np.array([-0.3, 0.05, 0.2])
    tgt = src @ R.T + t
    # outliers with weight 0 do not move the estimate
    bad = tgt.copy()
    bad[:4] += rng.normal(scale=0.5, size=(4, 3))
    w = np.r_[np.zeros(4), np.ones(8)]
    R_est, t_est = kabsch(src, bad, w)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)
    # an integer weight is the same as repeating the point (noisy targets, so the weights matter)
    noisy = tgt + rng.normal(scale=0.01, size=tgt.shape)
    w = rng.integers(1, 4, size=12).astype(float)
    R_w, t_w = kabsch(src, noisy, w)
    R_rep, t_rep = kabsch(np.repeat(src, w.astype(int), 0), np.repeat(noisy, w.astype(int), 0))
    np.testing.assert_allclose(R_w, R_rep, atol=1e-12)
    np.testing.assert_allclose(t_w, t_rep, atol=1e-12)
    R_1, _ = kabsch(src, noisy)
    assert np.abs(R_1 - R_w).max() > 1e-6  # and they do matter


def test_kabsch_never_returns_a_reflection():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(10, 3))
    R_est, _ = kabsch(src, src * np.array([1.0, 1.0, -1.0]))  # a mirror image: best proper rotation
    assert np.linalg.det(R_est) == pytest.approx(1.0)
    np.testing.assert_allclose(R_est @ R_est.T, np.eye(3), atol=1e-12)


def test_initial_pose_aligns_the_model_to_a_rigidly_moved_copy(layer, truth):
    """The mean-pose keypoints moved by a known rigid transform are reproduced to < 1e-5 m by the
    recovered global rotation and translation (also with unknown keypoints; float32 model)."""
    betas = truth.betas
    bt = torch.as_tensor(betas, dtype=torch.float32)[None]
    with torch.no_grad():
        model_j = layer(torch.zeros(1, 48), bt, torch.zeros(1, 3)).joints[0].double().numpy()
    rots = Rotation.from_rotvec([[0.3, -1.2, 0.8], [2.5, 0.4, -0.3], [-0.1, 0.2, 0.1]]).as_matrix()
    shifts = np.array([[0.02, -0.05, 0.1], [-0.3, 0.2, 0.6], [0.0, 0.0, 0.0]])
    target = np.stack([model_j @ R.T + t for R, t in zip(rots, shifts, strict=True)])  # (3, 21, 3)
    target[1, [2, 3, 7, 11, 12, 16, 20]] = np.nan  # 14 known keypoints are plenty
    pose, trans = initial_pose(layer, target, betas)
    assert pose.shape == (3, 48) and trans.shape == (3, 3)
    assert np.all(pose[:, 3:] == 0)  # articulation stays the model's mean pose
    np.testing.assert_allclose(Rotation.from_rotvec(pose[:, :3]).as_matrix(), rots, atol=1e-6)
    with torch.no_grad():
        out = layer(torch.as_tensor(pose, dtype=torch.float32), bt.expand(3, 10),
                    torch.as_tensor(trans, dtype=torch.float32)).joints.double().numpy()  # fmt: skip
    known = np.isfinite(target).all(-1)
    err = np.linalg.norm(out - np.where(known[..., None], target, out), axis=-1)
    assert err.max() < 1e-5, err.max()
    moved_all = np.stack([model_j @ R.T + t for R, t in zip(rots, shifts, strict=True)])
    assert np.linalg.norm(out - moved_all, axis=-1).max() < 1e-5  # the unknown ones follow


def test_initial_pose_with_fewer_than_three_known_keypoints_keeps_identity(layer):
    with torch.no_grad():
        model_j = layer(torch.zeros(1, 48), torch.zeros(1, 10), torch.zeros(1, 3)).joints[0].double().numpy()
    target = np.full((3, 21, 3), np.nan)
    target[0, [0, 9]] = [[0.1, 0.2, 0.3], [0.15, 0.2, 0.3]]  # 2 known keypoints
    target[1, 5] = [-0.1, 0.0, 0.4]  # 1 known keypoint
    # frame 2: none known
    pose, trans = initial_pose(layer, target)
    assert np.all(pose == 0)
    np.testing.assert_allclose(trans[0], target[0, [0, 9]].mean(0) - model_j[0], atol=1e-12)
    np.testing.assert_allclose(trans[1], target[1, 5] - model_j[0], atol=1e-12)
    np.testing.assert_array_equal(trans[2], 0.0)
    assert np.all(np.isfinite(pose)) and np.all(np.isfinite(trans))


# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------
def test_geman_mcclure_values_and_saturation():
    sigma = 10.0
    r = torch.tensor([0.0, 0.1, 1.0, 10.0, 100.0, 1e4], dtype=F64)
    rho = losses.geman_mcclure(r**2, sigma)
    assert rho[0] == 0
    assert rho[3] == pytest.approx(sigma**2 / 2)  # r = sigma: half the ceiling
    assert rho[1] == pytest.approx(0.01, rel=1e-3) and rho[2] == pytest.approx(1.0, rel=1e-2)  # ~ r^2 well below
    assert rho[5] == pytest.approx(sigma**2, rel=1e-6) and torch.all(rho < sigma**2)  # saturates at sigma^2
    assert torch.all(rho[1:] > rho[:-1])  # monotonic
    assert losses.geman_mcclure(torch.tensor(1e30, dtype=F64), sigma) == pytest.approx(sigma**2)


@pytest.fixture(scope="module")
def cams64(rig):
    return rig.tensors(dtype=F64)


@pytest.fixture(scope="module")
def observed(rig, truth):
    """Exact projections of the true keypoints, ``(B, C, 21, 2)`` float64, all confidences 1."""
    uv = np.stack([rig.project(j) for j in truth.joints])
    return torch.as_tensor(truth.joints, dtype=F64), torch.as_tensor(uv, dtype=F64), torch.ones(uv.shape[:3], dtype=F64)


def test_reprojection_loss_zero_at_the_truth_and_its_value(observed, cams64):
    joints, uv, conf = observed
    loss = losses.keypoint_reprojection_loss(joints, uv, conf, cams64, sigma_px=10.0)
    assert loss.shape == (3,) and loss.abs().max() < 1e-12
    moved = uv.clone()
    moved[1, 2, 7] += torch.tensor([3.0, 4.0], dtype=F64)  # one keypoint 5 px off
    loss = losses.keypoint_reprojection_loss(joints, moved, conf, cams64, sigma_px=10.0)
    C, J = uv.shape[1:3]
    want = 100.0 * 25.0 / (100.0 + 25.0) / (C * J)  # rho(25 px^2) averaged over C * J unit weights
    assert loss[1].item() == pytest.approx(want, rel=1e-9) and loss[[0, 2]].abs().max() < 1e-12


def test_reprojection_loss_ignores_conf_zero_keypoints(observed, cams64):
    joints, uv, conf = observed
    conf = conf.clone()
    conf[0, 1, [3, 8]] = 0
    conf[0, 4] = 0  # a whole view missing
    noisy = uv + torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    base = losses.keypoint_reprojection_loss(joints, noisy, conf, cams64, 10.0)
    moved = noisy.clone()
    moved[0, 1, [3, 8]] += 500.0
    moved[0, 4] = float("nan")
    other = losses.keypoint_reprojection_loss(joints, moved, conf, cams64, 10.0)
    assert torch.equal(base, other)
    j = joints.clone().requires_grad_(True)
    losses.keypoint_reprojection_loss(j, moved, conf, cams64, 10.0).sum().backward()
    assert torch.all(torch.isfinite(j.grad))
    moved[0, 1, 2] += 5.0  # a known keypoint does count
    assert losses.keypoint_reprojection_loss(joints, moved, conf, cams64, 10.0)[0] > base[0]


def test_reprojection_loss_frames_are_independent(observed, cams64):
    joints, uv, conf = observed
    noisy = uv + 2 * torch.randn(uv.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    base = losses.keypoint_reprojection_loss(joints, noisy, conf, cams64, 10.0)
    uv2, conf2, joints2 = noisy.clone(), conf.clone(), joints.clone()
    uv2[1] += 30.0
    conf2[1, :, :5] = 0.3
    joints2[1] += 0.01
    other = losses.keypoint_reprojection_loss(joints2, uv2, conf2, cams64, 10.0)
    assert torch.equal(other[0], base[0]) and torch.equal(other[2], base[2])
    assert other[1] != base[1]
    # a frame with no keypoint at all: 0, not NaN
    conf2[1] = 0
    assert losses.keypoint_reprojection_loss(joints2, uv2, conf2, cams64, 10.0)[1] == 0


def test_keypoint_3d_loss_ignores_nan_targets():
    rng = np.random.default_rng(5)
    joints = torch.as_tensor(rng.normal(scale=0.05, size=(3, 21, 3)))
    target = joints + torch.as_tensor(rng.normal(scale=0.005, size=(3, 21, 3)))
    target[0, [1, 4, 9]] = float("nan")
    target[2] = float("nan")  # nothing known
    sigma = 0.015
    j = joints.clone().requires_grad_(True)
    loss = losses.keypoint_3d_loss(j, target, sigma)
    loss.sum().backward()
    assert torch.all(torch.isfinite(loss)) and torch.all(torch.isfinite(j.grad))
    keep = [i for i in range(21) if i not in (1, 4, 9)]
    r2 = ((joints[0, keep] - target[0, keep]) ** 2).sum(-1)
    assert loss[0].item() == pytest.approx(losses.geman_mcclure(r2, sigma).mean().item(), rel=1e-12)
    assert loss[2] == 0 and torch.all(j.grad[2] == 0) and torch.all(j.grad[0, [1, 4, 9]] == 0)
    exact = joints.clone()
    exact[0, [1, 4, 9]] = float("nan")
    assert losses.keypoint_3d_loss(joints, exact, sigma).abs().max() == 0


def test_silhouette_loss_values_and_valid():
    a = torch.zeros(2, 2, 8, 8)
    a[..., :4] = 1.0  # left half
    b = torch.zeros(2, 2, 8, 8)
    b[..., 4:] = 1.0  # right half: disjoint from a
    valid = torch.ones(2, 2, dtype=torch.bool)
    np.testing.assert_allclose(losses.silhouette_loss(a, a, valid).numpy(), 0.0, atol=1e-7)
    np.testing.assert_allclose(losses.silhouette_loss(a, b, valid).numpy(), 1.0, atol=1e-7)
    c = torch.zeros(2, 2, 8, 8)
    c[..., 2:6] = 1.0  # overlaps a in 2 of 6 columns
    np.testing.assert_allclose(losses.silhouette_loss(a, c, valid).numpy(), 1 - 2 / 6, atol=1e-6)
    # view 1 of frame 0 invalid: its (disjoint) content does not count
    mixed = a.clone()
    mixed[0, 1] = b[0, 1]
    valid_m = valid.clone()
    valid_m[0, 1] = False
    out = losses.silhouette_loss(a, mixed, valid_m)
    assert out[0] == pytest.approx(0.0, abs=1e-7) and out[1] == pytest.approx(0.0, abs=1e-7)
    assert losses.silhouette_loss(a, mixed, valid)[0] == pytest.approx(0.5, abs=1e-6)  # when it counts: mean of 0, 1
    none = torch.zeros(2, 2, dtype=torch.bool)
    assert torch.all(losses.silhouette_loss(a, b, none) == 0)  # no mask at all: 0, not NaN
    empty = torch.zeros_like(a)
    assert torch.all(torch.isfinite(losses.silhouette_loss(empty, empty, valid)))


def test_temporal_loss_couples_only_neighbours():
    rng = np.random.default_rng(6)
    joints = torch.as_tensor(rng.normal(scale=0.05, size=(4, 21, 3)))
    neighbour = torch.tensor([True, False, True])
    base = losses.temporal_loss(joints, neighbour)
    v01 = ((joints[1] - joints[0]) ** 2).sum(-1).mean()
    v23 = ((joints[3] - joints[2]) ** 2).sum(-1).mean()
    np.testing.assert_allclose(base.numpy(), [v01 / 2, v01 / 2, v23 / 2, v23 / 2], rtol=1e-12)
    moved = joints.clone()
    moved[1] += 0.01  # frame 1's only neighbour is frame 0 (1 -> 2 is a gap)
    out = losses.temporal_loss(moved, neighbour)
    assert out[0] != base[0] and out[1] != base[1]
    assert torch.equal(out[2:], base[2:])
    same = joints[:1].expand(4, 21, 3)
    assert torch.all(losses.temporal_loss(same, neighbour) == 0)  # no motion, no cost
    assert torch.all(losses.temporal_loss(joints[:1], torch.zeros(0, dtype=torch.bool)) == 0)  # one frame


def test_pose_and_shape_priors():
    std = torch.full((45,), 0.6, dtype=F64)
    eye = torch.eye(45, dtype=F64)
    zero = torch.zeros(2, 45, dtype=F64)
    assert torch.all(losses.pose_prior_loss(zero, eye, std) == 0)
    comps = torch.as_tensor(np.linalg.qr(np.random.default_rng(7).normal(size=(45, 45)))[0].T)
    assert torch.all(losses.pose_prior_loss(zero, comps[:20], std[:20]) == 0)  # partial basis too
    x = torch.as_tensor(np.random.default_rng(8).normal(scale=0.1, size=(2, 45)))
    want = ((x / 0.6) ** 2).sum(1).numpy()
    np.testing.assert_allclose(losses.pose_prior_loss(x, eye, std).numpy(), want, rtol=1e-12)
    # a full orthonormal basis with one std is rotation invariant
    np.testing.assert_allclose(losses.pose_prior_loss(x, comps, std).numpy(), want, rtol=1e-10)
    assert torch.all(losses.shape_prior_loss(torch.zeros(3, 10)) == 0)


# ----------------------------------------------------------------------------------------
# fit_batch on exact keypoints
# ----------------------------------------------------------------------------------------
def _exact_inputs(rig, truth) -> FitInputs:
    uv = np.stack([rig.project(j) for j in truth.joints])  # (B, C, 21, 2)
    conf = np.ones(uv.shape[:3])
    tri = np.stack([triangulate_robust(uv[b], conf[b], rig).points for b in range(len(uv))])
    return FitInputs(
        uv_px=torch.as_tensor(uv, dtype=torch.float32),
        conf=torch.as_tensor(conf, dtype=torch.float32),
        cams=rig.tensors(),
        joints3d=torch.as_tensor(tri, dtype=torch.float32),
        neighbour=torch.ones(len(uv) - 1, dtype=torch.bool),
    )


def test_fit_to_exact_keypoints_recovers_pose_and_shape(layer, rig, truth):
    """6 cameras, 3 frames, exact keypoints in every view, the default schedule (80 / 250 iterations).

    Measured: start (mean pose and shape aligned to the triangulation) MPJPE 18.9 mm; fitted
    MPJPE 0.19 mm (0.22 with the fixed-weight anatomical prior before issue 20). Rest-pose mesh of
    the fitted betas vs the true one: mean vertex distance 0.74 mm, max 1.90 mm (the mean shape:
    10.0 / 17.0 mm). Betas are not all identifiable
    from 21 keypoints, so the comparison is on the mesh, not the coefficients.
    """
    inputs = _exact_inputs(rig, truth)
    assert np.nanmax(np.abs(inputs.joints3d.numpy() - truth.joints)) < 1e-5  # exact triangulation
    res = fit_batch(layer, inputs, FitSettings())
    assert res.pose.shape == (3, 48) and res.betas.shape == (10,) and res.trans.shape == (3, 3)
    assert res.joints.shape == (3, 21, 3) and res.vertices.shape == (3, layer.num_verts, 3)
    assert set(res.history) == {"3d", "2d"}  # no masks: no silhouette stage
    for stage, hist in res.history.items():
        assert hist[-1] < hist[0], stage
    mpjpe = metrics.mpjpe(res.joints, truth.joints)
    assert mpjpe < 1.0, mpjpe
    d = np.linalg.norm(_rest_vertices(layer, res.betas) - _rest_vertices(layer, truth.betas), axis=1) * 1000
    d0 = np.linalg.norm(_rest_vertices(layer, np.zeros(10)) - _rest_vertices(layer, truth.betas), axis=1) * 1000
    assert d.mean() < 1.5 and d.max() < 3.0, (d.mean(), d.max())
    assert d.mean() < d0.mean() / 5  # the shape moved well off the mean shape


def test_frozen_shape_keeps_the_given_betas(layer, rig, truth):
    inputs = _exact_inputs(rig, truth)
    short = FitSettings(iters_3d=10, iters_2d=10, fit_shape=False)
    res = fit_batch(layer, inputs, short, init_betas=truth.betas)
    np.testing.assert_array_equal(res.betas, truth.betas.astype(np.float32).astype(np.float64))


def test_float64_layer_fits_float32_observations(model, rig, truth):
    """A float64 layer (for precise work) takes the same float32 observations."""
    inputs = _exact_inputs(rig, truth)
    res = fit_batch(ManoLayer(model, dtype=torch.float64), inputs, FitSettings(iters_3d=20, iters_2d=40))
    assert metrics.mpjpe(res.joints, truth.joints) < 5.0


def test_keypoint_noise_estimate_per_frame(rig, truth):
    """2 px per axis Gaussian noise on frame 0, 0.5 px on frame 1, 30 % outliers on frame 2: the
    median-based estimate finds each frame's noise (outliers barely move it)."""
    inputs = _exact_inputs(rig, truth)
    rng = np.random.default_rng(3)
    uv = inputs.uv_px.clone()
    for b, std in enumerate((2.0, 0.5, 1.0)):
        uv[b] += torch.as_tensor(rng.normal(0, std, uv[b].shape), dtype=uv.dtype)
    bad = torch.as_tensor(rng.random(uv[2].shape[:2]) < 0.3)
    uv[2][bad] += 80.0
    noise = keypoint_noise_px(torch.as_tensor(truth.joints, dtype=torch.float32), replace(inputs, uv_px=uv))
    assert noise.shape == (3,)
    assert abs(noise[0] - 2.0) < 0.3 and abs(noise[1] - 0.5) < 0.08
    assert 1.0 < noise[2] < 1.6  # the median shifts with 30 % outliers, but stays near the inliers' 1 px


def test_kabsch_with_zero_weights_is_a_clear_error():
    with pytest.raises(HandannoError, match="weights sum to zero"):
        kabsch(np.eye(3), np.eye(3), np.zeros(3))


# ----------------------------------------------------------------------------------------
# silhouettes and batch independence, on a small synthetic session
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    """8 cameras, 3 frames, 320x240, 3 px keypoint noise; ground truth and exact masks (masks_gt)."""
    out = tmp_path_factory.mktemp("fit_mano") / "synth"
    synthesize(SynthSettings(out_dir=out, num_cameras=8, num_frames=3, image_size=(320, 240), keypoint_noise_px=3.0,
                             write_calib=False, progress=False))  # fmt: skip
    return out


class SessionData:
    """What the fitter needs from a synthetic session, as the pipeline builds it."""

    def __init__(self, root: Path, layer: ManoLayer):
        self.session = open_session(root)
        self.kp = read_session_keypoints(self.session)
        self.settings = PipelineSettings(session=root)
        self.masks = [[read_mask(self.session.mask_path(c.name, f, "masks_gt"), c.image_size) for c in self.session.rig]
                      for f in self.session.frames]  # fmt: skip
        gt = [read_fit(self.session.fit_path(f, "ground_truth")) for f in self.session.frames]
        with torch.no_grad():
            out = layer(*(torch.as_tensor(np.stack([g[k] for g in gt]), dtype=torch.float32)
                          for k in ("pose", "betas", "trans")))  # fmt: skip
        self.gt_joints = out.joints.double().numpy()
        self.gt_vertices = out.vertices.double().numpy()

    def inputs(self, sel: list[int]) -> FitInputs:
        kp = self.kp[sel]
        tri = triangulate_frames(self.session.rig, kp, self.settings.min_keypoint_conf)
        conf = np.where(kp[..., 2] >= self.settings.min_keypoint_conf, kp[..., 2], 0.0)
        return FitInputs(
            uv_px=torch.as_tensor(kp[..., :2], dtype=torch.float32),
            conf=torch.as_tensor(conf, dtype=torch.float32),
            cams=self.session.rig.tensors(),
            joints3d=torch.as_tensor(tri.joints3d, dtype=torch.float32),
            neighbour=torch.as_tensor(np.diff(sel) == 1),
        )

    def with_masks(self, inputs: FitInputs, sel: list[int], vertices: np.ndarray, fs: FitSettings) -> FitInputs:
        """Mask crops around ``vertices`` (B, V, 3), as ``fit.fit_frames`` makes them."""
        boxes = hand_boxes(vertices, self.session.rig, fs.sil_box_scale)
        crops, valid = crop_masks([self.masks[b] for b in sel], boxes, fs.sil_size)
        return replace(inputs, masks=torch.as_tensor(crops), mask_boxes=torch.as_tensor(boxes, dtype=torch.float32),
                       mask_valid=torch.as_tensor(valid))  # fmt: skip


@pytest.fixture(scope="module")
def synth(synth_dir, layer) -> SessionData:
    return SessionData(synth_dir, layer)


def test_silhouette_stage_lowers_vertex_error(layer, synth):
    """Keypoints only vs keypoints then silhouettes (exact masks), as ``fit.fit_frames`` runs them,
    with the default FitSettings (500 keypoint iterations, 30 silhouette iterations at 128 px, sigma 0.02).

    Measured on this session (8 cameras, 3 frames, 320x240, 3 px keypoint noise, seed 0): MPVPE
    2.08 -> 1.30 mm (per frame 2.45 / 1.85 / 1.94 -> 1.35 / 1.24 / 1.30), MPJPE 1.87 -> 1.04 mm
    (before issue 20's priors, weights and smaller silhouette steps: 2.55 -> 1.46 mm, MPJPE 2.43 ->
    1.19; then other draws of the same kind of session gave ratios of 0.57-0.74). The assertion
    asks for a ratio below 0.8 overall and an improvement in every frame, and MPVPE under 2 mm after
    the stage.
    """
    fs = FitSettings()
    sel = [0, 1, 2]
    inputs = synth.inputs(sel)
    kp_only = fit_batch(layer, inputs, replace(fs, iters_sil=0))
    assert "sil" not in kp_only.history
    with_masks = synth.with_masks(inputs, sel, kp_only.vertices, fs)
    assert with_masks.mask_valid.all()
    refine = replace(fs, iters_3d=0, iters_2d=0)
    sil = fit_batch(layer, with_masks, refine, kp_only.pose, kp_only.trans, kp_only.betas,
                    silhouette_renderer(layer.faces, fs))  # fmt: skip
    assert set(sil.history) == {"sil"} and len(sil.history["sil"]) == fs.iters_sil
    assert sil.history["sil"][-1] < sil.history["sil"][0]
    before = [metrics.mpvpe(kp_only.vertices[b], synth.gt_vertices[b]) for b in sel]
    after = [metrics.mpvpe(sil.vertices[b], synth.gt_vertices[b]) for b in sel]
    mpvpe_kp = metrics.mpvpe(kp_only.vertices, synth.gt_vertices)
    mpvpe_sil = metrics.mpvpe(sil.vertices, synth.gt_vertices)
    msg = f"MPVPE {mpvpe_kp:.3f} -> {mpvpe_sil:.3f} mm; per frame {np.round(before, 3)} -> {np.round(after, 3)}"
    assert mpvpe_sil < 0.8 * mpvpe_kp, msg
    assert all(a < b for a, b in zip(after, before, strict=True)), msg
    assert mpvpe_sil < 2.0, msg


# shape frozen, no temporal term: the only settings under which frames must not influence each other
INDEPENDENT = FitSettings(iters_3d=30, iters_2d=80, iters_sil=15, fit_shape=False, w_temporal=0.0)


@pytest.fixture(scope="module")
def keypoint_fits(layer, synth):
    """Keypoint-stage fits (:data:`INDEPENDENT`, mean shape) of frames [0, 2] together and [0] alone."""
    return {len(sel): fit_batch(layer, synth.inputs(sel), replace(INDEPENDENT, iters_sil=0), init_betas=np.zeros(10))
            for sel in ([0, 2], [0])}  # fmt: skip


def test_frames_of_a_batch_are_fitted_independently(keypoint_fits):
    """Keypoint stages: frame 0 fitted with frame 2 equals frame 0 fitted alone.

    Measured before issue 20 (fixed-weight anatomical prior, Adam's eps 1e-8): bit-identical
    parameters; vertices equal to 1.5e-8 m (float rounding of the batched forward). With the
    default prior (the realistic generator's statistics, a non-zero mean), the per-frame evidence
    weights and Adam's eps at 0.1: parameters to 8.2e-6 rad, translation 2.0e-7 m, vertices
    2.7e-7 m (float32 rounding of batched products, carried along directions the keypoints hardly
    see; the same with the fixed weights). Tolerances 5e-5 rad / 1e-6 m / 1e-6 m, far below any
    coupling through the data.
    """
    pair, alone = keypoint_fits[2], keypoint_fits[1]
    np.testing.assert_allclose(pair.pose[0], alone.pose[0], atol=5e-5)
    np.testing.assert_allclose(pair.trans[0], alone.trans[0], atol=1e-6)
    assert np.abs(pair.vertices[0] - alone.vertices[0]).max() < 1e-6
    np.testing.assert_array_equal(pair.betas, alone.betas)  # frozen


def test_silhouette_stage_fits_frames_independently(layer, synth, keypoint_fits):
    """Silhouette stage from the same per-frame start: frame 0 refined with frame 2 equals frame 0 refined alone.

    Measured: with a batch-wide keypoint-noise estimate (as first written) the vertices differed by
    0.86 mm; with the per-frame estimate (or one held fixed at 3 px) by 4.9 um. That residue is float rounding: the
    silhouette loss's gradient for frame 0 agrees to 3e-8 (of 0.33) with and without frame 2 (next
    test), but Adam divides each step by the gradient's running RMS, which turns rounding in near-zero
    gradient components into lr-sized steps (with the default schedule, 250 keypoint and 30 silhouette
    iterations, the same comparison drifted 0.11 mm before the noise estimate existed). Tolerance
    0.3 mm: above that, 60x the rounding drift of this schedule, well below a real coupling.
    """
    pair, alone = keypoint_fits[2], keypoint_fits[1]
    start_pose = {2: pair.pose.copy(), 1: alone.pose[:1].copy()}
    start_trans = {2: pair.trans.copy(), 1: alone.trans[:1].copy()}
    start_pose[2][0], start_trans[2][0] = alone.pose[0], alone.trans[0]  # the same start for frame 0
    render = silhouette_renderer(layer.faces, INDEPENDENT)
    sil_only = replace(INDEPENDENT, iters_3d=0, iters_2d=0)
    out = {}
    for sel in ([0, 2], [0]):
        inputs = synth.with_masks(synth.inputs(sel), sel, synth.gt_vertices[sel], INDEPENDENT)  # boxes per frame
        out[len(sel)] = fit_batch(layer, inputs, sil_only, start_pose[len(sel)], start_trans[len(sel)], np.zeros(10),
                                  render)  # fmt: skip
        assert set(out[len(sel)].history) == {"sil"}
    drift = np.linalg.norm(out[2].vertices[0] - out[1].vertices[0], axis=1).max()
    assert drift < 3e-4, f"frame 0 moved {drift * 1000:.3f} mm with frame 2 in the batch"


def test_silhouette_gradient_of_a_frame_ignores_the_other_frames(layer, synth):
    """One evaluation of the silhouette loss: frame 0's value and vertex gradient with and without frame 2
    agree to float rounding (measured: value equal, gradient to 3e-8 absolute of max 0.33)."""
    fs = FitSettings()
    render = silhouette_renderer(layer.faces, fs)
    v_all = torch.as_tensor(synth.gt_vertices, dtype=torch.float32)
    v_all = v_all + 0.002 * torch.randn(v_all.shape, generator=torch.Generator().manual_seed(0))
    grads, vals = [], []
    for sel in ([0, 2], [0]):
        inputs = synth.with_masks(synth.inputs(sel), sel, synth.gt_vertices[sel], fs)
        v = v_all[sel].clone().requires_grad_(True)
        sil = render(v, inputs.cams, inputs.mask_boxes)
        loss = losses.silhouette_loss(sil, inputs.masks, inputs.mask_valid)
        loss.sum().backward()
        grads.append(v.grad[0])
        vals.append(loss[0].item())
    assert vals[0] == pytest.approx(vals[1], abs=1e-6)
    assert (grads[0] - grads[1]).abs().max() < 1e-5 * grads[1].abs().max()


def test_anatomical_prior_keeps_the_surface_that_keypoints_cannot_see(layer, rig, truth):
    """Exact keypoints fix the joints but not the fingers' rotation about their own bones.

    With the isotropic prior the fit turns the tucked thumb of this hand about its bone and
    bends the next joints to put the keypoints back; the anatomical prior (no twist, hinges)
    keeps the surface. Both with the fixed weight of before issue 20 (with the default evidence
    weighting, exact keypoints leave any prior almost no weight). Measured: MPJPE 0.22 / 0.24 mm,
    MPVPE isotropic 1.70 mm, anatomical 0.82 mm (before the robust initial alignment: 1.66 / 0.78).
    """
    inputs = _exact_inputs(rig, truth)
    fixed = FitSettings(prior_weighting="fixed", w_temporal=0.0)  # the prior's own weight, not the evidence's
    res_iso = fit_batch(layer, inputs, replace(fixed, pose_prior="isotropic"))
    res_ana = fit_batch(layer, inputs, replace(fixed, pose_prior="anatomical"))
    for res in (res_iso, res_ana):
        assert metrics.mpjpe(res.joints, truth.joints) < 0.5
    v_iso, v_ana = metrics.mpvpe(res_iso.vertices, truth.vertices), metrics.mpvpe(res_ana.vertices, truth.vertices)
    assert v_ana < 0.7 * v_iso, (v_ana, v_iso)
    with pytest.raises(HandannoError, match="pose_prior"):
        fit_batch(layer, inputs, FitSettings(pose_prior="pca", iters_3d=1, iters_2d=1))


# ----------------------------------------------------------------------------------------
# issue 20: priors that yield to evidence, the temporal term, the fitter's capacity
# ----------------------------------------------------------------------------------------
def test_pose_prior_loss_about_a_mean():
    std = torch.full((45,), 0.5, dtype=F64)
    eye = torch.eye(45, dtype=F64)
    mean = torch.as_tensor(np.random.default_rng(9).normal(scale=0.3, size=45))
    assert losses.pose_prior_loss(mean[None], eye, std, mean)[0] == 0  # no cost at the mean
    x = torch.zeros(1, 45, dtype=F64)
    np.testing.assert_allclose(losses.pose_prior_loss(x, eye, std, mean).numpy(), [((mean / 0.5) ** 2).sum().item()])
    np.testing.assert_allclose(losses.pose_prior_loss(x + mean, eye, std, mean).numpy(),
                               losses.pose_prior_loss(x, eye, std).numpy(), atol=1e-12)  # fmt: skip


def test_temporal_acceleration_loss_leaves_constant_speed_alone():
    """Order 2: a hand moving at constant speed costs nothing (order 1 would hold it still); a jolt
    in one frame costs in the three runs of three that contain it; a gap breaks the runs."""
    rng = np.random.default_rng(10)
    x0, v = rng.normal(scale=0.05, size=(21, 3)), rng.normal(scale=0.003, size=(21, 3))
    joints = torch.as_tensor(np.stack([x0 + t * v for t in range(6)]))
    every = torch.ones(5, dtype=torch.bool)
    assert torch.all(losses.temporal_loss(joints, every, order=2).abs() < 1e-18)
    assert losses.temporal_loss(joints, every, order=1).min() > 0
    jolt = joints.clone()
    jolt[2] += 0.001
    out = losses.temporal_loss(jolt, every, order=2)
    a = 3 * 0.001**2  # a run with the jolt at its end: |0.001 per axis|^2 over 3 axes (the same for every keypoint)
    np.testing.assert_allclose(out.sum().item(), (4 + 1 + 1) * a, rtol=1e-9)  # runs (1,2,3): 4a; (0,1,2), (2,3,4): a
    assert out[5] < 1e-18 and out[0] > 1e-7 and out[4] > 1e-7  # frame 5 only in run (3, 4, 5): no jolt there
    gap = torch.tensor([True, True, False, True, True])  # frames 0-2 and 3-5
    out = losses.temporal_loss(jolt, gap, order=2)
    np.testing.assert_allclose(out.sum().item(), 1 * a, rtol=1e-9)  # only run (0,1,2) holds frame 2
    assert torch.all(out[3:] < 1e-18)
    with pytest.raises(ValueError, match="order"):
        losses.temporal_loss(joints, every, order=3)


def _noisy_inputs(rig, motion, noise_px: float, seed: int, cameras: list[int] | None = None) -> FitInputs:
    """Projections of ``motion``'s keypoints into ``rig`` (or its ``cameras``) + Gaussian noise, all conf 1."""
    cams = list(range(len(rig))) if cameras is None else cameras
    uv = np.stack([rig.project(j) for j in motion.joints])[:, cams]  # (B, C, 21, 2)
    uv = uv + np.random.default_rng(seed).normal(scale=noise_px, size=uv.shape)
    conf = np.ones(uv.shape[:3])
    sub = rig.subset([rig.names[c] for c in cams]) if cameras is not None else rig
    tri = np.stack([triangulate_robust(uv[b], conf[b], sub).points for b in range(len(uv))])
    return FitInputs(uv_px=torch.as_tensor(uv, dtype=torch.float32), conf=torch.as_tensor(conf, dtype=torch.float32),
                     cams=sub.tensors(), joints3d=torch.as_tensor(tri, dtype=torch.float32),
                     neighbour=torch.ones(len(uv) - 1, dtype=torch.bool))  # fmt: skip


@pytest.fixture(scope="module")
def rig8():
    return make_rig(8, (640, 480), seed=1)[0]


@pytest.fixture(scope="module")
def realistic(layer, model):
    """8 frames of the realistic generator's motion (seed 2) at 15 fps."""
    return make_motion(layer, np.asarray(model.hands_mean), "right", num_frames=8, fps=15.0, seed=2,
                       postures="realistic")  # fmt: skip


def test_prior_weight_falls_with_precise_keypoints_and_many_views(rig8, realistic):
    """The MAP balance e = s^2 / sum(conf): 9x for 3 px against 1 px, ~4x for 2 views against 8,
    so precise keypoints in many views outweigh the prior and noisy or few ones leave it the lead."""
    from handanno.annotate.fit_mano import evidence_per_observation

    truth = torch.as_tensor(realistic.joints, dtype=torch.float32)
    e = {}
    for name, noise, cams in (("1px8", 1.0, None), ("3px8", 3.0, None), ("1px2", 1.0, [0, 4])):
        e[name] = evidence_per_observation(truth, _noisy_inputs(rig8, realistic, noise, seed=11, cameras=cams))
    assert e["1px8"].shape == (8,)
    ratio_noise = float((e["3px8"] / e["1px8"]).median())
    ratio_views = float((e["1px2"] / e["1px8"]).median())
    assert 6.0 < ratio_noise < 13.0, ratio_noise
    assert 3.0 < ratio_views < 8.0, ratio_views  # 4x fewer observations, fewer degrees of freedom left
    # at 1 px over 8 views the prior counts far less than the fixed weight (0.02), at 3 px about as much or more
    assert float(e["1px8"].median()) < 0.5 * FitSettings().w_pose_prior < float(e["3px8"].median())


def test_with_precise_keypoints_in_eight_views_the_fit_beats_triangulation(layer, rig8, realistic):
    """1 px, 8 views, realistic postures, keypoints only: the evidence-weighted fit is well below the
    robust triangulation and below the fixed-weight anatomical fit of before issue 20.

    Measured (8 frames, seed 2): triangulation 0.532 mm, fixed anatomical prior 0.443, default 0.307.
    """
    inputs = _noisy_inputs(rig8, realistic, 1.0, seed=12)
    tri = metrics.mpjpe(inputs.joints3d.double().numpy(), realistic.joints)
    old = FitSettings(pose_prior="anatomical", prior_weighting="fixed", w_temporal=0.0)
    mpjpe_old = metrics.mpjpe(fit_batch(layer, inputs, old).joints, realistic.joints)
    mpjpe_new = metrics.mpjpe(fit_batch(layer, inputs, FitSettings()).joints, realistic.joints)
    msg = f"triangulation {tri:.3f}, fixed anatomical {mpjpe_old:.3f}, default {mpjpe_new:.3f} mm"
    assert mpjpe_new < 0.75 * tri, msg
    assert mpjpe_new < 0.9 * mpjpe_old, msg


def test_temporal_term_smooths_consecutive_frames(layer, rig8, realistic):
    """3 px keypoints of a smooth motion: the acceleration term lowers MPJPE (measured 8 frames:
    1.027 -> 0.732 mm); frames that are not neighbours are fitted as without it."""
    inputs = _noisy_inputs(rig8, realistic, 3.0, seed=13)
    with_t = fit_batch(layer, inputs, FitSettings())
    without = fit_batch(layer, inputs, FitSettings(w_temporal=0.0))
    e_with, e_without = metrics.mpjpe(with_t.joints, realistic.joints), metrics.mpjpe(without.joints, realistic.joints)
    assert e_with < 0.85 * e_without, (e_with, e_without)
    apart = replace(inputs, neighbour=torch.zeros(7, dtype=torch.bool))
    frozen = {"fit_shape": False}
    a = fit_batch(layer, apart, FitSettings(**frozen), init_betas=realistic.betas)
    b = fit_batch(layer, apart, FitSettings(w_temporal=0.0, **frozen), init_betas=realistic.betas)
    np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)


@pytest.fixture(scope="module", params=["realistic", "anatomical"])
def exact_capture(request, tmp_path_factory, layer) -> tuple[str, SessionData]:
    """8 cameras, 3 frames, 640x480 of each generator's postures: exact keypoints, exact masks (masks_gt)."""
    out = tmp_path_factory.mktemp("capacity") / request.param
    synthesize(SynthSettings(out_dir=out, num_cameras=8, num_frames=3, image_size=(640, 480), write_calib=False,
                             postures=request.param, progress=False))  # fmt: skip
    return request.param, SessionData(out, layer)


def _fit_with_masks(layer, data: SessionData, fs: FitSettings, start=None):
    """The keypoint fit, then the silhouette fit against the exact masks, as ``fit.fit_frames`` runs them."""
    sel = [0, 1, 2]
    inputs = data.inputs(sel)
    kp = fit_batch(layer, inputs, replace(fs, iters_sil=0), *(start or ()))
    with_masks = data.with_masks(inputs, sel, kp.vertices, fs)
    return kp, fit_batch(layer, with_masks, replace(fs, iters_3d=0, iters_2d=0), kp.pose, kp.trans, kp.betas,
                         silhouette_renderer(layer.faces, fs))  # fmt: skip


def test_capacity_the_truth_is_a_fixed_point_of_the_fit(layer, exact_capture):
    """Exact keypoints and exact masks, the default settings, started at the true parameters: the
    priors (their weights follow the keypoints' noise, here ~0) and the schedule keep the fit at
    the truth, so they never hide what the model can do.

    Measured (seed 0): realistic MPVPE 0.19 mm after the keypoint stages, 0.21 after silhouettes
    (MPJPE 0.02 / 0.17); anatomical 0.21 / 0.22 (0.02 / 0.13). With Adam's eps at 1e-8 the stages
    walked off along directions the data hardly see (0.43 / 0.41 mm); with the fixed-weight priors
    of before issue 20, 0.65 / 0.61 mm (realistic).
    """
    postures, data = exact_capture
    gt = [read_fit(data.session.fit_path(f, "ground_truth")) for f in data.session.frames]
    start = (np.stack([g["pose"] for g in gt]), np.stack([g["trans"] for g in gt]), np.asarray(gt[0]["betas"]))
    kp, sil = _fit_with_masks(layer, data, FitSettings(), start)
    for name, res in (("keypoints", kp), ("silhouettes", sil)):
        mpvpe = metrics.mpvpe(res.vertices, data.gt_vertices)
        assert mpvpe <= 0.3, f"{postures}, {name}: MPVPE {mpvpe:.3f} mm from the truth"


@pytest.mark.slow
def test_capacity_from_the_rigid_start(layer, exact_capture):
    """Exact keypoints and masks from the usual start (mean hand aligned to the triangulation): with a
    long enough schedule the fit reaches the truth (MPVPE <= 0.3 mm, issue 20), so neither the priors
    nor the model hide it; the default schedule stops earlier, for speed.

    Measured (seed 0, 8 views, 1000 keypoint iterations, then silhouettes at 128 px), MPVPE
    realistic / anatomical: 150 silhouette iterations at half the rate 0.42 / 0.39 mm (much of it the
    shape and the twist of a few joints, which Adam approaches slowly), 400 0.35 / 0.28, 500 at the
    full rate 0.29 / 0.23, 800 at the full rate 0.25 / 0.18 (MPJPE 0.09 / 0.09); silhouettes at
    256 px add little (400 iterations: 0.31 / 0.26). The default schedule: 0.83 / 0.83 mm.
    """
    postures, data = exact_capture
    long = FitSettings(iters_2d=1000, iters_sil=800, lr_sil_fraction=1.0)
    _, sil = _fit_with_masks(layer, data, long)
    mpvpe = metrics.mpvpe(sil.vertices, data.gt_vertices)
    assert mpvpe <= 0.3, f"{postures}: MPVPE {mpvpe:.3f} mm"
    assert metrics.mpjpe(sil.joints, data.gt_joints) <= 0.15
