import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handanno.errors import HandannoError
from handanno.models.heatmaps import (
    adaptive_wing,
    awing_weight_map,
    crop_to_heatmap,
    decode_heatmaps,
    heatmap_loss,
    heatmap_to_crop,
    mirror_averaged,
    render_gaussian_heatmaps,
    soft_argmax,
    weighted_adaptive_wing_loss,
)


def _random_uv(n, size, margin, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(margin, size - 1 - margin, size=(1, n, 2)), dtype=torch.float64)


def test_convention_peak_at_pixel_centre():
    # heatmaps[b, j, y, x] is the score at uv = (x, y): a Gaussian at (5, 2) peaks at row 2, column 5.
    hm = render_gaussian_heatmaps(torch.tensor([[[5.0, 2.0]]]), (8, 10), sigma=1.0)
    assert hm.shape == (1, 1, 8, 10)
    assert torch.argmax(hm[0, 0]).item() == 2 * 10 + 5
    assert hm[0, 0, 2, 5] == 1.0


def test_convention_crop_heatmap_pixel_centres_line_up():
    # The first 32x32 heatmap pixel covers crop pixels 0..7 of a 256 crop; its centre is crop 3.5.
    assert torch.allclose(crop_to_heatmap(torch.tensor([3.5, 3.5]), 256, 32), torch.tensor([0.0, 0.0]))
    uv = torch.rand(5, 2) * 255
    assert torch.allclose(heatmap_to_crop(crop_to_heatmap(uv, 256, 32), 256, 32), uv, atol=1e-4)


def test_invalid_keypoints_render_empty_maps():
    uv = torch.tensor([[[3.0, 3.0], [4.0, 4.0]]])
    hm = render_gaussian_heatmaps(uv, (8, 8), 1.0, valid=torch.tensor([[True, False]]))
    assert hm[0, 0].max() == 1.0 and hm[0, 1].abs().max() == 0.0


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_decode_round_trip_taylor_and_softargmax(sigma):
    # Gaussians at random sub-pixel positions, away from the border by 4 sigma so nothing is cut off.
    uv = _random_uv(50, 64, margin=4 * sigma + 1, seed=int(sigma * 10))
    hm = render_gaussian_heatmaps(uv, (64, 64), sigma).float()
    dec, conf = decode_heatmaps(hm, "taylor")
    # Taylor on the log of a Gaussian is exact up to float32 rounding of the map.
    assert (dec.double() - uv).abs().max() < 0.1
    assert (dec.double() - uv).abs().max() < 0.01
    soft = soft_argmax(hm.double())
    assert (soft - uv).abs().max() < 0.1
    assert conf.min() > 0.75  # peak of a Gaussian sampled within half a pixel of its centre


def test_decode_quarter_offset_is_within_a_quarter_pixel():
    # argmax + 0.25 px toward the higher neighbour: per-axis error at most 0.25 px (plus float slack).
    uv = _random_uv(200, 64, margin=6)
    hm = render_gaussian_heatmaps(uv, (64, 64), 2.0)
    dec, _ = decode_heatmaps(hm, "quarter")
    assert (dec.double() - uv).abs().max() <= 0.25 + 1e-6
    arg, _ = decode_heatmaps(hm, "argmax")
    assert (arg.double() - uv).abs().max() <= 0.5 + 1e-6


def test_decode_softargmax_window_ignores_background_noise():
    uv = torch.tensor([[[40.3, 20.7]]])
    hm = render_gaussian_heatmaps(uv, (64, 64), 1.5)
    hm = hm + 0.05 * torch.rand_like(hm, generator=torch.Generator().manual_seed(0))
    windowed, _ = decode_heatmaps(hm, "softargmax", window=3)
    assert (windowed - uv).abs().max() < 0.25
    assert (soft_argmax(hm) - uv).abs().max() > 2.0  # the global density is pulled to the centre


def test_decode_flat_and_border_maps_do_not_fail():
    hm = torch.zeros(2, 21, 16, 16)
    hm[1, :, 0, 0] = 1.0  # peak in the corner: no 3x3 neighbourhood
    uv, conf = decode_heatmaps(hm, "taylor")
    assert torch.isfinite(uv).all()
    assert conf[0].max() == 0.0 and conf[1].min() == 1.0
    with pytest.raises(HandannoError, match="decoding"):
        decode_heatmaps(hm, "bogus")


def _awing_reference(y, p, alpha=2.1, omega=14.0, eps=1.0, theta=0.5):
    d = abs(y - p)
    if d < theta:
        return omega * math.log(1 + (d / eps) ** (alpha - y))
    A = omega * (1 / (1 + (theta / eps) ** (alpha - y))) * (alpha - y) * ((theta / eps) ** (alpha - y - 1)) / eps
    C = theta * A - omega * math.log(1 + (theta / eps) ** (alpha - y))
    return A * d - C


@pytest.mark.parametrize(("y", "p"), [(0.0, 0.0), (0.0, 0.25), (0.0, 1.0), (1.0, 0.9), (1.0, 0.2), (0.5, -0.7)])
def test_adaptive_wing_known_values(y, p):
    got = float(adaptive_wing(torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))
    assert got == pytest.approx(_awing_reference(y, p), rel=1e-12, abs=1e-12)


def test_adaptive_wing_hand_values_and_continuity():
    # y = 0, p = 0.25: 14 ln(1 + 0.25^2.1) = 0.7417315
    assert float(adaptive_wing(torch.tensor(0.25), torch.tensor(0.0))) == pytest.approx(0.7417315, abs=1e-6)
    assert float(adaptive_wing(torch.tensor(0.3), torch.tensor(0.3))) == 0.0
    # the two pieces meet at |y - p| = theta (value and slope), for several targets
    for y in (0.0, 0.3, 1.0):
        below = adaptive_wing(torch.tensor(y + 0.5 - 1e-7, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        above = adaptive_wing(torch.tensor(y + 0.5 + 1e-7, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        assert float(above - below) == pytest.approx(0.0, abs=1e-5)


def test_awing_weight_map_and_losses():
    target = render_gaussian_heatmaps(torch.tensor([[[8.0, 8.0]]]), (16, 16), 1.0)
    w = awing_weight_map(target)
    assert w[0, 0, 8, 8] == 11.0 and w[0, 0, 0, 0] == 1.0
    assert w[0, 0, 8, 10] == 11.0  # dilated by one pixel beyond the > 0.2 region (which ends at distance 1)
    pred = torch.rand_like(target)
    assert heatmap_loss(pred, target, "mse") == F.mse_loss(pred, target)
    assert heatmap_loss(target, target, "awing") == 0.0
    assert heatmap_loss(pred, target, "awing") > 0.0


def test_awing_weight_map_is_a_3x3_dilation():
    rng = np.random.default_rng(3)
    target = torch.tensor(rng.uniform(0, 1, size=(2, 3, 9, 11)) ** 8)
    pooled = F.max_pool2d((target > 0.2).double(), kernel_size=3, stride=1, padding=1)
    assert torch.equal(awing_weight_map(target), 10.0 * pooled + 1.0)


def test_weighted_adaptive_wing_matches_autograd_of_the_elementwise_loss():
    # Both pieces (|y - p| above and below theta), exact zeros of y - p, targets over [0, 1].
    rng = np.random.default_rng(0)
    target = render_gaussian_heatmaps(torch.tensor(rng.uniform(2, 13, size=(2, 5, 2))), (16, 16), 1.5)
    pred = target + torch.tensor(rng.normal(0, 0.4, size=target.shape))
    pred[0, 0, :4] = target[0, 0, :4]
    weight = awing_weight_map(target)
    pred_ref = pred.clone().requires_grad_()
    ref = (adaptive_wing(pred_ref, target) * weight).mean()
    ref.backward()
    pred_fused = pred.clone().requires_grad_()
    fused = weighted_adaptive_wing_loss(pred_fused, target)
    (2.0 * fused).backward()  # the upstream gradient is carried through
    assert float(fused) == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(pred_fused.grad, 2.0 * pred_ref.grad, rtol=1e-9, atol=1e-12)
    assert float((pred - target).abs().max()) > 0.5 and float((pred - target).abs().min()) == 0.0
    assert torch.autograd.gradcheck(
        lambda q: weighted_adaptive_wing_loss(q, target[:1, :2, :6, :6], weight[:1, :2, :6, :6]),
        (pred[:1, :2, :6, :6].clone().requires_grad_() + 0.01,),
    )


def test_mirror_averaged_keeps_equivariant_maps_and_cancels_a_left_right_bias():
    """Flip test geometry: a stride-8 map of a mirror-symmetric network comes back unchanged
    (no half-pixel shift between a crop and its maps), and a one-cell bias to the right
    becomes the mean of one cell right and one cell left."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)

    def pooled(x):  # (B, 3, 32, 32) -> (B, 2, 4, 4): commutes with a horizontal flip
        return F.avg_pool2d(x[:, :2], 8)

    def biased(x):
        return [pooled(x), pooled(x).roll(1, dims=-1)]  # a two-stage net, the second biased

    assert torch.allclose(mirror_averaged(pooled, images), pooled(images), atol=1e-6)
    stage1, stage2 = mirror_averaged(biased, images)
    p = pooled(images)
    assert torch.allclose(stage1, p, atol=1e-6)
    assert torch.allclose(stage2, 0.5 * (p.roll(1, dims=-1) + p.roll(-1, dims=-1)), atol=1e-6)
    assert not torch.allclose(stage2, p.roll(1, dims=-1), atol=1e-3)
