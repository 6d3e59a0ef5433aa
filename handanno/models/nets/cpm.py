"""Convolutional Pose Machine: the 2D keypoint network (PoseNet) of Zimmermann & Brox's hand3d.

Layer sizes follow hand3d's ``ColorHandPose3DNetwork.inference_pose2d`` (lmb-freiburg/hand3d,
``nets/ColorHandPose3DNetwork.py``): a VGG-style encoder of blocks ``[2, 2, 4, 2]`` 3x3 convs
with ``[64, 128, 256, 512]`` channels and max-pooling after the first three blocks (stride 8),
then ``conv4_3..4_6`` (256) and ``conv4_7`` (128) giving the encoding; stage 1 is two 1x1
convs (512, 21); each later stage takes ``concat(previous scores, encoding)`` through five
7x7 convs (128), a 1x1 conv (128) and a 1x1 conv to 21 score maps. Every stage's maps are
returned for intermediate supervision. ``width`` scales every channel count (tests use 1/16).

Convention:
    - Input ``(B, 3, S, S)`` normalised RGB crop, ``S`` divisible by 8 (256 in hand3d).
    - Output: list of ``num_stages`` score maps ``(B, J, S/8, S/8)`` (32x32 for S = 256),
      heatmap pixels aligned to the crop as in :mod:`handanno.models.heatmaps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from handanno.check import check_shape
from handanno.data.conventions import NUM_JOINTS
from handanno.models.nets.weights_init import init_relu_layers

STRIDE = 8


@dataclass(frozen=True)
class CPMConfig:
    """Sizes of the CPM.

    Attributes:
        crop_size: input crop side in pixels (divisible by 8).
        width: multiplier on every channel count (1.0 = hand3d).
        num_stages: 1 initial + refinement stages (hand3d: 3).
        num_joints: keypoints (21).
        sigma_px: Gaussian target width in heatmap pixels.
        loss: ``"mse"`` (hand3d) or ``"awing"``.
        decode: heatmap decoding, see :func:`handanno.models.heatmaps.decode_heatmaps`.
        flip_test: outside training, average the maps of each crop with those of its mirror
            image (:func:`handanno.models.heatmaps.mirror_averaged`; two forward passes).
        batch_norm: BatchNorm after every hidden conv. hand3d has none (it starts from
            VGG / pre-trained weights); from scratch it trains several times faster. False
            gives hand3d's layers exactly.
    """

    crop_size: int = 256
    width: float = 1.0
    num_stages: int = 3
    num_joints: int = NUM_JOINTS
    sigma_px: float = 1.5
    loss: str = "mse"
    decode: str = "taylor"
    flip_test: bool = False
    batch_norm: bool = True

    @property
    def heatmap_size(self) -> int:
        """Side of the output maps in pixels."""
        return self.crop_size // STRIDE


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def _conv_relu(cin: int, cout: int, k: int, bn: bool) -> list[nn.Module]:
    if bn:
        return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]


class CPM(nn.Module):
    """hand3d's PoseNet2D; see the module docstring for the layers."""

    def __init__(self, config: CPMConfig):
        super().__init__()
        self.config = config
        w, J, bn = config.width, config.num_joints, config.batch_norm
        layers: list[nn.Module] = []
        cin = 3
        for n_layers, cout, pool in zip((2, 2, 4, 2), (64, 128, 256, 512), (True, True, True, False), strict=True):
            for _ in range(n_layers):
                layers += _conv_relu(cin, _ch(cout, w), 3, bn)
                cin = _ch(cout, w)
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
        for _ in range(4):  # conv4_3 .. conv4_6
            layers += _conv_relu(cin, _ch(256, w), 3, bn)
            cin = _ch(256, w)
        layers += _conv_relu(cin, _ch(128, w), 3, bn)  # conv4_7: the encoding
        self.encoder = nn.Sequential(*layers)
        enc = _ch(128, w)
        self.stage1 = nn.Sequential(*_conv_relu(enc, _ch(512, w), 1, bn), nn.Conv2d(_ch(512, w), J, 1))
        stages = []
        for _ in range(config.num_stages - 1):
            body: list[nn.Module] = []
            cin = J + enc
            for _ in range(5):
                body += _conv_relu(cin, _ch(128, w), 7, bn)
                cin = _ch(128, w)
            body += _conv_relu(cin, _ch(128, w), 1, bn)
            body.append(nn.Conv2d(_ch(128, w), J, 1))
            stages.append(nn.Sequential(*body))
        self.stages = nn.ModuleList(stages)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for the ReLU convs, small weights for the score layers (first maps near zero).

        hand3d started from VGG / pre-trained weights; this is for training from scratch.
        """
        init_relu_layers(self, score_layers=[self.stage1[-1], *(st[-1] for st in self.stages)])

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Score maps of every stage.

        Args:
            image: ``(B, 3, S, S)`` normalised crops.

        Returns:
            list of ``num_stages`` tensors ``(B, J, S/8, S/8)``; the last is the prediction.
        """
        check_shape(image, ("B", 3, "S", "S"), "image")
        encoding = self.encoder(image)  # (B, C, S/8, S/8)
        maps = [self.stage1(encoding)]
        for stage in self.stages:
            maps.append(stage(torch.cat([maps[-1], encoding], dim=1)))
        return maps
