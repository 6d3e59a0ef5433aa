"""Keypoint heatmaps: rendering, decoding and losses, as pure tensor-in/tensor-out functions.

Convention:
    - ``heatmaps`` are ``(B, J, H, W)`` floats, one map per keypoint (J = 21 for hands).
    - Keypoint positions ``uv`` are ``(*, J, 2)`` as ``(u, v) = (column, row)`` in pixels of
      the map they refer to; pixel ``(0, 0)`` is the *centre* of the top-left pixel, so
      ``heatmaps[b, j, y, x]`` is the score at ``uv = (x, y)``.
    - A crop of ``S x S`` pixels and its ``h x h`` heatmap are related by
      ``uv_hm = (uv_crop + 0.5) * h / S - 0.5`` (:func:`crop_to_heatmap`), i.e. both cover
      the same square and their pixel centres line up.
    - Rendered targets are unnormalised Gaussians with peak 1; a decoded confidence is the
      (clamped) map value at the peak, in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from handanno.check import check_shape
from handanno.errors import HandannoError

DECODE_METHODS = ("argmax", "quarter", "taylor", "softargmax")


def crop_to_heatmap(uv_crop: torch.Tensor, crop_size: int, heatmap_size: int) -> torch.Tensor:
    """Map crop pixel coordinates ``(*, 2)`` to heatmap pixel coordinates ``(*, 2)`` (see module Convention)."""
    return (uv_crop + 0.5) * (heatmap_size / crop_size) - 0.5


def heatmap_to_crop(uv_hm: torch.Tensor, crop_size: int, heatmap_size: int) -> torch.Tensor:
    """Inverse of :func:`crop_to_heatmap`: heatmap pixels ``(*, 2)`` to crop pixels ``(*, 2)``."""
    return (uv_hm + 0.5) * (crop_size / heatmap_size) - 0.5


def render_gaussian_heatmaps(
    uv: torch.Tensor, size: tuple[int, int], sigma: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Render one isotropic Gaussian per keypoint, ``exp(-|p - uv|^2 / (2 sigma^2))``.

    Args:
        uv: ``(*, J, 2)`` keypoint positions in heatmap pixels (Convention above); may lie
            outside the map (the Gaussian is then cut off or absent).
        size: ``(H, W)`` of the maps in pixels.
        sigma: standard deviation in heatmap pixels.
        valid: optional ``(*, J)`` bool/float; keypoints with 0 get an all-zero map.

    Returns:
        ``(*, J, H, W)`` maps with peak 1 at ``uv`` (exactly 1 only when ``uv`` is on a pixel centre).

    Example:
        >>> hm = render_gaussian_heatmaps(torch.tensor([[[3.0, 2.0]]]), (8, 8), sigma=1.0)
        >>> hm.shape, float(hm[0, 0, 2, 3])
        (torch.Size([1, 1, 8, 8]), 1.0)
    """
    check_shape(uv, ("*", "J", 2), "uv")
    H, W = size
    xs = torch.arange(W, device=uv.device, dtype=uv.dtype)
    ys = torch.arange(H, device=uv.device, dtype=uv.dtype)
    dx2 = (xs - uv[..., 0:1]) ** 2  # (*, J, W)
    dy2 = (ys - uv[..., 1:2]) ** 2  # (*, J, H)
    hm = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2.0 * sigma * sigma))  # (*, J, H, W)
    if valid is not None:
        check_shape(valid, tuple(uv.shape[:-1]), "valid")
        hm = hm * valid.to(hm.dtype)[..., None, None]
    return hm


def _argmax_2d(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer peak of each map: ``(x, y)`` as long ``(B, J)`` each, and the peak values ``(B, J)``."""
    B, J, H, W = heatmaps.shape
    val, idx = heatmaps.reshape(B, J, H * W).max(dim=-1)  # (B, J)
    return idx % W, idx // W, val


def _gather(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``heatmaps[b, j, y, x]`` for long ``(B, J)`` indices (clamped to the map), as ``(B, J)``."""
    B, J, H, W = heatmaps.shape
    x = x.clamp(0, W - 1)
    y = y.clamp(0, H - 1)
    return heatmaps.reshape(B, J, H * W).gather(-1, (y * W + x)[..., None])[..., 0]


def soft_argmax(heatmaps: torch.Tensor, beta: float | None = None, window: int | None = None) -> torch.Tensor:
    """Differentiable expected position of each map.

    Args:
        heatmaps: ``(B, J, H, W)``.
        beta: ``None`` treats the map, clamped at 0, as an unnormalised density (exact for
            a Gaussian well inside the map); a number takes ``softmax(beta * heatmap)`` over
            the pixels instead (the integral-regression form for logits).
        window: if given, only pixels within this many pixels (Chebyshev distance) of the
            integer argmax take part, which removes the pull of background noise towards
            the map centre.

    Returns:
        ``(B, J, 2)`` positions ``(u, v)`` in heatmap pixels.

    Example:
        >>> hm = render_gaussian_heatmaps(torch.tensor([[[10.3, 7.6]]]), (32, 32), sigma=2.0)
        >>> [round(float(c), 3) for c in soft_argmax(hm)[0, 0]]
        [10.3, 7.6]
    """
    check_shape(heatmaps, ("B", "J", "H", "W"), "heatmaps")
    B, J, H, W = heatmaps.shape
    flat = heatmaps.reshape(B, J, H * W)
    if beta is None:
        weights = flat.clamp(min=0)
    else:
        weights = torch.softmax(beta * flat, dim=-1)
    xs = torch.arange(W, device=heatmaps.device, dtype=heatmaps.dtype).repeat(H)  # (H*W,)
    ys = torch.arange(H, device=heatmaps.device, dtype=heatmaps.dtype).repeat_interleave(W)  # (H*W,)
    if window is not None:
        px, py, _ = _argmax_2d(heatmaps)
        near = ((xs - px[..., None]).abs() <= window) & ((ys - py[..., None]).abs() <= window)  # (B, J, H*W)
        weights = weights * near.to(weights.dtype)
    total = weights.sum(-1).clamp(min=torch.finfo(weights.dtype).tiny)  # (B, J)
    u = (weights * xs).sum(-1) / total
    v = (weights * ys).sum(-1) / total
    return torch.stack([u, v], dim=-1)


def _quarter_offset(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The classic refinement: a quarter pixel from the argmax toward the higher neighbour, ``(B, J, 2)``."""
    dx = _gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y)
    dy = _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)
    return 0.25 * torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)


def _taylor_offset(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Second-order Taylor step on the log map at the argmax (Zhang et al. 2020, DARK), ``(B, J, 2)``.

    Exact for a Gaussian. Where the 3x3 neighbourhood is not a proper maximum (flat map,
    border, non-negative-definite Hessian), falls back to the quarter-pixel rule.
    """
    eps = 1e-10
    log_h = torch.log(heatmaps.clamp(min=eps))

    def g(ox: int, oy: int) -> torch.Tensor:
        return _gather(log_h, x + ox, y + oy)

    c = g(0, 0)
    dx = 0.5 * (g(1, 0) - g(-1, 0))  # first derivatives by central differences
    dy = 0.5 * (g(0, 1) - g(0, -1))
    dxx = g(1, 0) - 2 * c + g(-1, 0)
    dyy = g(0, 1) - 2 * c + g(0, -1)
    dxy = 0.25 * (g(1, 1) - g(1, -1) - g(-1, 1) + g(-1, -1))
    det = dxx * dyy - dxy * dxy
    # offset = -Hess^-1 @ grad, with the 2x2 inverse written out.
    ox = -(dyy * dx - dxy * dy) / torch.where(det.abs() > eps, det, torch.ones_like(det))
    oy = -(-dxy * dx + dxx * dy) / torch.where(det.abs() > eps, det, torch.ones_like(det))
    _, _, J_h, J_w = heatmaps.shape
    inside = (x > 0) & (x < J_w - 1) & (y > 0) & (y < J_h - 1)
    ok = inside & (det > eps) & (dxx < 0) & (ox.abs() <= 1) & (oy.abs() <= 1)
    taylor = torch.stack([ox, oy], dim=-1)
    return torch.where(ok[..., None], taylor, _quarter_offset(heatmaps, x, y))


def decode_heatmaps(
    heatmaps: torch.Tensor, method: str = "taylor", window: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint positions and confidences from heatmaps.

    Args:
        heatmaps: ``(B, J, H, W)``.
        method: ``"argmax"`` (integer peak), ``"quarter"`` (peak + a quarter pixel toward
            the higher neighbour, per axis), ``"taylor"`` (second-order fit of the log map
            at the peak; exact for Gaussians) or ``"softargmax"`` (density expectation in a
            ``window`` around the peak).
        window: half-size in pixels of the soft-argmax window.

    Returns:
        ``uv (B, J, 2)`` in heatmap pixels and ``conf (B, J)``, the map value at the
        integer peak clamped to ``[0, 1]``.
    """
    check_shape(heatmaps, ("B", "J", "H", "W"), "heatmaps")
    if method not in DECODE_METHODS:
        raise HandannoError(f"unknown heatmap decoding {method!r}; use one of {', '.join(DECODE_METHODS)}")
    heatmaps = heatmaps.detach().float()
    x, y, peak = _argmax_2d(heatmaps)
    base = torch.stack([x, y], dim=-1).to(heatmaps.dtype)
    if method == "argmax":
        uv = base
    elif method == "quarter":
        uv = base + _quarter_offset(heatmaps, x, y)
    elif method == "taylor":
        uv = base + _taylor_offset(heatmaps, x, y)
    else:
        uv = soft_argmax(heatmaps, beta=None, window=window)
    return uv, peak.clamp(0.0, 1.0)


def mirror_averaged(net: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Any:
    """Flip test: the mean of ``net``'s maps of the images and, mirrored back, of their mirror images.

    Hand keypoints keep their names under a horizontal mirror (a right hand becomes a left
    hand, the thumb tip is still the thumb tip), so the mirrored maps need no reordering,
    only flipping back. Under the module Convention a crop and its maps cover the same
    square with aligned pixel centres, so a crop column ``u`` and its mirror ``S - 1 - u``
    fall on map columns ``x`` and ``h - 1 - x``: flipping the maps back is exact, with no
    half-pixel shift. A network's left-right bias cancels in the mean and its noise partly
    averages out; it costs a second forward pass.

    Args:
        net: maps ``(B, 3, S, S)`` images to ``(B, J, h, h)`` maps, or to a list of them
            (one per stage).
        images: ``(B, 3, S, S)`` network input.

    Returns:
        What ``net`` returns, each map the mean of the two passes.

    Example:
        >>> net = lambda x: torch.stack([x[:, 0], x[:, 0].roll(1, dims=-1)], dim=1)  # map 1 biased right
        >>> img = torch.zeros(1, 3, 1, 5); img[..., 2] = 1.0
        >>> mirror_averaged(net, img)[0, :, 0].tolist()
        [[0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.5, 0.0]]
    """
    check_shape(images, ("B", 3, "H", "W"), "images")
    plain, mirrored = net(images), net(images.flip(-1))
    if isinstance(plain, torch.Tensor):
        return 0.5 * (plain + mirrored.flip(-1))
    return [0.5 * (a + b.flip(-1)) for a, b in zip(plain, mirrored, strict=True)]


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Element-wise Adaptive Wing loss (Wang, Bo and Fuxin, ICCV 2019, Eq. 7), same shape as the inputs.

    ``AWing(y, p) = omega * ln(1 + |(y - p) / epsilon|^(alpha - y))`` for ``|y - p| < theta``,
    and ``A |y - p| - C`` beyond, with ``A`` and ``C`` chosen so the two pieces join smoothly.

    Args:
        pred: ``(*)`` predicted heatmap values.
        target: ``(*)`` target values in ``[0, 1]``.
        alpha: exponent offset; the power is ``alpha - y``.
        omega: overall scale of the non-linear part.
        epsilon: the error scale inside the logarithm.
        theta: where the curve switches from logarithmic to linear.

    Example:
        >>> round(float(adaptive_wing(torch.tensor(0.25), torch.tensor(0.0))), 3)  # 14 ln(1 + 0.25^2.1)
        0.742
    """
    delta = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    A = omega * (1.0 / (1.0 + ratio**power)) * power * ratio ** (power - 1.0) / epsilon  # Eq. 7, A
    C = theta * A - omega * torch.log1p(ratio**power)  # Eq. 7, C
    small = omega * torch.log1p((delta / epsilon) ** power)
    large = A * delta - C
    return torch.where(delta < theta, small, large)


def awing_weight_map(target: torch.Tensor, weight: float = 10.0, threshold: float = 0.2) -> torch.Tensor:
    """The paper's loss weight map ``W * M + 1``, ``M`` = target > threshold dilated by 3x3 (Sec. 4.2).

    Args:
        target: ``(B, J, H, W)`` target heatmaps.
        weight: ``W``.
        threshold: foreground threshold on the target.

    Returns:
        ``(B, J, H, W)`` weights (1 on background, ``1 + W`` on and around the peaks).
    """
    check_shape(target, ("B", "J", "H", "W"), "target")
    fg = target > threshold
    # Binary dilation by 3x3 as two separable passes of shifted ORs on bool maps (the same
    # result as a 3x3 max-pool of the float mask, at a third of its time on the CPU).
    rows = fg.clone()
    rows[..., 1:, :] |= fg[..., :-1, :]
    rows[..., :-1, :] |= fg[..., 1:, :]
    mask = rows.clone()
    mask[..., :, 1:] |= rows[..., :, :-1]
    mask[..., :, :-1] |= rows[..., :, 1:]
    return mask.to(target.dtype) * weight + 1.0


class _WeightedAdaptiveWingMean(torch.autograd.Function):
    """``mean(weight * adaptive_wing(pred, target))`` with its gradient computed in the same pass.

    The same numbers as the element-wise :func:`adaptive_wing` through autograd, at about a
    third of the time and memory: autograd would keep a dozen full-size intermediates of the
    piecewise formula (``(B, 21, 128, 128)`` each for the U-Net), where this keeps only the
    gradient. ``d/dp`` of the logarithmic piece is
    ``-omega * power * x^(power - 1) / (1 + x^power) / epsilon * sign(y - p)`` with
    ``x = |y - p| / epsilon``; of the linear piece ``-A * sign(y - p)``.
    """

    @staticmethod
    def forward(ctx, pred, target, weight, alpha, omega, epsilon, theta):  # type: ignore[override]
        with torch.no_grad():
            diff = pred - target
            delta = diff.abs()
            power = alpha - target
            r_pow = torch.exp(power * math.log(theta / epsilon))  # (theta / epsilon) ** power
            A = (omega / (theta * epsilon)) * power * r_pow / (1.0 + r_pow)  # Eq. 7, A
            x = (delta / epsilon).clamp_(min=torch.finfo(delta.dtype).tiny)
            x_pow = torch.exp(power * torch.log(x)).masked_fill_(delta == 0, 0.0)  # x ** power, exactly 0 at 0
            small = delta < theta
            loss = torch.where(small, omega * torch.log1p(x_pow), A * (delta - theta) + omega * torch.log1p(r_pow))
            grad = torch.where(small, (omega / epsilon) * power * x_pow / (x * (1.0 + x_pow)), A)
            grad.mul_(torch.sign(diff)).mul_(weight)
            ctx.save_for_backward(grad)
            ctx.count = loss.numel()
            return (loss * weight).sum() / ctx.count

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * (grad_out / ctx.count), None, None, None, None, None, None


def weighted_adaptive_wing_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Scalar ``mean(weight * adaptive_wing(pred, target))``, differentiable in ``pred``.

    Args:
        pred: ``(B, J, H, W)`` predicted maps.
        target: ``(B, J, H, W)`` target maps in ``[0, 1]`` (no gradient).
        weight: ``(B, J, H, W)`` per-pixel weights; default :func:`awing_weight_map` of ``target``.
        alpha: as :func:`adaptive_wing`.
        omega: as :func:`adaptive_wing`.
        epsilon: as :func:`adaptive_wing`.
        theta: as :func:`adaptive_wing`.

    Example:
        >>> t = render_gaussian_heatmaps(torch.tensor([[[5.0, 6.0]]]), (16, 16), sigma=2.0)
        >>> p = torch.zeros_like(t)
        >>> bool(torch.isclose(weighted_adaptive_wing_loss(p, t), (adaptive_wing(p, t) * awing_weight_map(t)).mean()))
        True
    """
    check_shape(target, tuple(pred.shape), "target")
    if weight is None:
        weight = awing_weight_map(target)
    return _WeightedAdaptiveWingMean.apply(pred, target.detach(), weight.detach(), alpha, omega, epsilon, theta)


def heatmap_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "awing", joint_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean heatmap loss over all pixels: ``"awing"`` (weighted Adaptive Wing) or ``"mse"``.

    Args:
        pred: ``(B, J, H, W)`` predictions.
        target: ``(B, J, H, W)`` rendered targets (:func:`render_gaussian_heatmaps`).
        kind: ``"awing"`` or ``"mse"``.
        joint_weight: ``(B, J)`` weight of each map (0 leaves a keypoint out: one the labels
            mark as not seen); None weighs all 1.

    Returns:
        scalar loss.

    Example:
        >>> t = render_gaussian_heatmaps(torch.tensor([[[5.0, 6.0], [3.0, 3.0]]]), (16, 16), sigma=2.0)
        >>> p = torch.zeros_like(t)
        >>> w = torch.tensor([[1.0, 0.0]])
        >>> bool(torch.isclose(heatmap_loss(p, t, "mse", w), F.mse_loss(p[:, :1], t[:, :1]) / 2))
        True
    """
    check_shape(pred, tuple(target.shape), "pred")
    w = None
    if joint_weight is not None:
        check_shape(joint_weight, tuple(pred.shape[:2]), "joint_weight")
        w = joint_weight.to(pred.dtype)[:, :, None, None]
    if kind == "mse":
        return F.mse_loss(pred, target) if w is None else ((pred - target) ** 2 * w).mean()
    if kind == "awing":
        return weighted_adaptive_wing_loss(pred, target, None if w is None else awing_weight_map(target) * w)
    raise HandannoError(f"unknown heatmap loss {kind!r}; use awing or mse")


__all__ = [
    "DECODE_METHODS",
    "adaptive_wing",
    "awing_weight_map",
    "crop_to_heatmap",
    "decode_heatmaps",
    "heatmap_loss",
    "heatmap_to_crop",
    "mirror_averaged",
    "render_gaussian_heatmaps",
    "soft_argmax",
    "weighted_adaptive_wing_loss",
]
