"""U-Net heatmap regressor (Ronneberger et al. 2015) for 21 hand keypoints.

Convention:
    - Input ``(B, 3, S, S)`` normalised RGB crop, ``S`` divisible by ``2**depth`` (128 by default).
    - Output ``(B, J, S / r, S / r)`` heatmaps, ``r = heatmap_stride``: at the crop's own
      resolution by default (``r = 1``, heatmap pixel = crop pixel); with ``r = 2`` or ``4`` the
      decoder stops that many levels early (the maps of SimpleBaseline / HRNet are at 1/4), which
      saves its costliest full-resolution levels. Trained against Gaussians with the Adaptive
      Wing loss (Wang et al. 2019) or MSE; decoded to sub-pixel positions either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handanno.check import check_shape
from handanno.data.conventions import NUM_JOINTS
from handanno.errors import HandannoError


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the U-Net.

    Attributes:
        crop_size: input crop side in pixels (divisible by ``2**depth``).
        base_channels: channels of the first level; level ``i`` has ``base * 2**i``.
        depth: number of down-sampling steps.
        num_joints: keypoints (21).
        sigma_px: Gaussian target width in heatmap pixels (crop pixels when ``heatmap_stride`` is 1).
        loss: ``"awing"`` (default) or ``"mse"``.
        decode: heatmap decoding, see :func:`handanno.models.heatmaps.decode_heatmaps`.
        flip_test: outside training, average the maps of each crop with those of its mirror
            image (:func:`handanno.models.heatmaps.mirror_averaged`; two forward passes).
        heatmap_stride: crop pixels per heatmap pixel, a power of two up to ``2**depth``.
    """

    crop_size: int = 128
    base_channels: int = 32
    depth: int = 4
    num_joints: int = NUM_JOINTS
    sigma_px: float = 2.0
    loss: str = "awing"
    decode: str = "taylor"
    flip_test: bool = False
    heatmap_stride: int = 1

    def __post_init__(self) -> None:
        levels = self.heatmap_stride.bit_length() - 1
        if self.heatmap_stride < 1 or 2**levels != self.heatmap_stride or levels > self.depth:
            raise HandannoError(f"unet heatmap_stride {self.heatmap_stride}: use a power of two from 1 to "
                                f"2**depth = {2**self.depth}")  # fmt: skip
        if self.crop_size % 2**self.depth:
            raise HandannoError(f"unet crop_size {self.crop_size} is not divisible by 2**depth = {2**self.depth}")

    @property
    def skipped_levels(self) -> int:
        """Decoder levels left out: ``log2(heatmap_stride)``."""
        return self.heatmap_stride.bit_length() - 1

    @property
    def heatmap_size(self) -> int:
        """Side of the output maps in pixels: ``crop_size / heatmap_stride``."""
        return self.crop_size // self.heatmap_stride


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; bilinear up-sampling, one 1x1 head to J maps.

    Example:
        >>> net = UNet(UNetConfig(crop_size=64, base_channels=4, depth=3, heatmap_stride=2))
        >>> tuple(net(torch.zeros(2, 3, 64, 64)).shape)
        (2, 21, 32, 32)
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        chans = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList(
            [_double_conv(3, chans[0])] + [_double_conv(chans[i], chans[i + 1]) for i in range(config.depth)]
        )
        top = config.skipped_levels  # the finest level the decoder reaches
        self.up = nn.ModuleList(
            [_double_conv(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(top, config.depth))]
        )
        self.head = nn.Conv2d(chans[top], config.num_joints, 1)
        # Start from (nearly) zero maps: the Adaptive Wing loss pulls small background values to
        # 0 only slowly (its gradient there goes as |p|^1.1), so a default-initialised head spent
        # the first ~500 steps (2 epochs of 4,196 samples) on the background at the trivial loss,
        # while from zero the keypoints start to localise at once (EPE 67 -> 24 px at step 100).
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``(B, J, S / r, S / r)`` for crops ``(B, 3, S, S)`` (``r = heatmap_stride``)."""
        check_shape(image, ("B", 3, "S", "S"), "image")
        skips = []
        x = image
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
