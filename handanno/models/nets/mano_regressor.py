"""ResNet regressor of the 61 FreiHAND MANO numbers from a hand crop.

The network predicts ``pose`` (48 axis-angle numbers: global rotation in the camera frame,
then 45 articulation numbers relative to ``hands_mean``), ``betas`` (10) and the root as
FreiHAND parametrises it: ``uv_root`` (pixel of keypoint 9, the middle-finger MCP, in the
crop) and ``scale = f / Z_root`` with ``f = (fx + fy) / 2`` of the crop's intrinsics. This
root parametrisation is what the crop determines (where the hand is, how big it looks), and
together with the crop's ``K`` gives the root position in metres (:func:`root_from_uv_scale`).

Convention:
    - Input ``(B, 3, S, S)`` normalised RGB crop (S = 224 by default).
    - ``uv_root`` in crop pixels (pixel (0, 0) = centre of the top-left pixel), ``scale`` in
      pixels per metre, 3D in metres in the crop camera's frame.
    - The head outputs ``uv_root / S`` relative to the crop centre and ``log(scale / S)``
      relative to ``log(scale_ref)``, so a zero output means "centred, typical size".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from handanno.check import check_shape
from handanno.data.conventions import NUM_BETAS, NUM_POSE
from handanno.errors import HandannoError

BACKBONES = ("resnet18", "resnet34", "resnet50")


@dataclass(frozen=True)
class ManoRegressorConfig:
    """Sizes and loss weights of the MANO regressor.

    Attributes:
        crop_size: input crop side in pixels.
        backbone: ``resnet18 | resnet34 | resnet50`` (torchvision, random init).
        width: channels of the first ResNet stage (64 = torchvision); tests use 8.
        hidden: width of the head's hidden layer.
        backbone_weights: optional local ``.pth`` state dict for the backbone (never downloaded).
        scale_ref: typical ``scale / crop_size`` (f / Z per crop pixel), the head's zero point.
        w_pose, w_betas, w_root: weights of the parameter losses (MSE on axis-angle,
            betas, and on normalised ``uv_root`` / ``log scale``).
        w_joints, w_verts: weights of the root-relative 3D keypoint / vertex L1 losses, metres.
        w_2d: weight of the 2D reprojection L1 loss, in crop-normalised units (px / S).
    """

    crop_size: int = 224
    backbone: str = "resnet18"
    width: int = 64
    hidden: int = 512
    backbone_weights: str | None = None
    scale_ref: float = 4.0
    w_pose: float = 1.0
    w_betas: float = 0.1
    w_root: float = 1.0
    w_joints: float = 10.0
    w_verts: float = 10.0
    w_2d: float = 1.0


@dataclass(frozen=True)
class ManoRegression:
    """What the regressor predicts for a batch.

    Attributes:
        pose: ``(B, 48)`` axis-angle, radians (FreiHAND layout).
        betas: ``(B, 10)`` shape coefficients.
        uv_root: ``(B, 2)`` crop pixels of keypoint 9.
        scale: ``(B,)`` ``f / Z_root`` in pixels per metre.
    """

    pose: torch.Tensor
    betas: torch.Tensor
    uv_root: torch.Tensor
    scale: torch.Tensor


def root_from_uv_scale(uv_root: torch.Tensor, scale: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Root keypoint position from FreiHAND's ``uv_root`` and ``scale`` (FreiHAND ``recover_root``).

    ``xyz = [u - cx, v - cy, f] / scale`` with ``f = (fx + fy) / 2``.

    Args:
        uv_root: ``(B, 2)`` pixels.
        scale: ``(B,)`` pixels per metre (``f / Z``).
        K: ``(B, 3, 3)`` intrinsics of the same image.

    Returns:
        ``(B, 3)`` metres, camera frame.
    """
    check_shape(uv_root, ("B", 2), "uv_root")
    check_shape(K, ("B", 3, 3), "K")
    f = 0.5 * (K[:, 0, 0] + K[:, 1, 1])  # (B,)
    xy = uv_root - K[:, :2, 2]  # (B, 2)
    return torch.cat([xy, f[:, None]], dim=1) / scale[:, None]


def uv_scale_from_root(root: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FreiHAND's ``uv_root`` and ``scale`` of a root position: the inverse of :func:`root_from_uv_scale`.

    ``scale = f / Z`` with ``f = (fx + fy) / 2``, ``uv_root = (cx, cy) + scale * (X, Y)``: the
    torch twin of :func:`handanno.data.freihand.root_uv_and_scale`, for batches on the training
    device (as :func:`root_from_uv_scale` is of ``recover_root``).

    Args:
        root: ``(B, 3)`` metres, camera frame.
        K: ``(B, 3, 3)`` intrinsics.

    Returns:
        ``uv_root (B, 2)`` pixels and ``scale (B,)`` pixels per metre.
    """
    check_shape(root, ("B", 3), "root")
    check_shape(K, ("B", 3, 3), "K")
    scale = 0.5 * (K[:, 0, 0] + K[:, 1, 1]) / root[:, 2]
    return K[:, :2, 2] + root[:, :2] * scale[:, None], scale


def _resnet(name: str, width: int) -> nn.Module:
    """A torchvision ResNet with random weights; ``width`` != 64 narrows every stage (same topology)."""
    if name not in BACKBONES:
        raise HandannoError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, name)(weights=None)
    if width == 64:
        return net
    resnet = torchvision.models.resnet
    block = resnet.Bottleneck if name == "resnet50" else resnet.BasicBlock
    layers = [len(net.layer1), len(net.layer2), len(net.layer3), len(net.layer4)]
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, width * 2, layers[1], stride=2)
    net.layer3 = net._make_layer(block, width * 4, layers[2], stride=2)
    net.layer4 = net._make_layer(block, width * 8, layers[3], stride=2)
    net.fc = nn.Linear(width * 8 * block.expansion, 1000)
    return net


class ManoRegressor(nn.Module):
    """ResNet features -> MLP -> 61 numbers, decoded into :class:`ManoRegression`."""

    def __init__(self, config: ManoRegressorConfig):
        super().__init__()
        self.config = config
        self.backbone = _resnet(config.backbone, config.width)
        if config.backbone_weights:
            path = Path(config.backbone_weights)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError, ValueError) as exc:
                raise HandannoError(f"{path}: could not read backbone weights ({exc})") from exc
            if not isinstance(state, dict):
                raise HandannoError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            try:
                missing, _ = self.backbone.load_state_dict(state, strict=False)
            except RuntimeError as exc:
                raise HandannoError(f"{path}: backbone weights do not fit {config.backbone}: {exc}") from exc
            if [k for k in missing if not k.startswith("fc.")]:
                raise HandannoError(f"{path}: backbone weights do not fit {config.backbone} (missing {missing[:3]}...)")
        n_feat = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        n_out = NUM_POSE + NUM_BETAS + 3
        self.head = nn.Sequential(
            nn.Linear(n_feat, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, n_out)
        )
        nn.init.zeros_(self.head[-1].weight)  # start from the mean pose, centred root, typical scale
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Raw head output ``(B, 61)``; see :meth:`decode` for its meaning."""
        check_shape(image, ("B", 3, "S", "S"), "image")
        return self.head(self.backbone(image))

    def decode(self, raw: torch.Tensor) -> ManoRegression:
        """Turn the raw ``(B, 61)`` output into parameters (see module Convention)."""
        check_shape(raw, ("B", NUM_POSE + NUM_BETAS + 3), "raw")
        raw = raw.float()
        S = float(self.config.crop_size)
        pose = raw[:, :NUM_POSE]
        betas = raw[:, NUM_POSE : NUM_POSE + NUM_BETAS]
        uv_root = (raw[:, NUM_POSE + NUM_BETAS : NUM_POSE + NUM_BETAS + 2] + 0.5) * S - 0.5
        scale = S * torch.exp(raw[:, -1] + math.log(self.config.scale_ref))
        return ManoRegression(pose=pose, betas=betas, uv_root=uv_root, scale=scale)

    def root_targets(self, uv_root: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The head-space targets ``(B, 3)`` for ``uv_root (B, 2)`` px and ``scale (B,)`` px/m."""
        S = float(self.config.crop_size)
        uv_n = (uv_root + 0.5) / S - 0.5
        log_s = torch.log(scale / S) - math.log(self.config.scale_ref)
        return torch.cat([uv_n, log_s[:, None]], dim=1)
