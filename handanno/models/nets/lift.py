"""Lifting 2D score maps to 3D: hand3d's PosePrior and ViewPoint networks (Zimmermann & Brox 2017).

Layer sizes follow lmb-freiburg/hand3d ``nets/PosePriorNetwork.py`` (variant ``proposed``):
both networks take the 21 score maps at 32x32 and the hand side as a one-hot ``(B, 2)``.
PosePrior: three pairs of 3x3 convs (stride 1, then 2) with 32/64/128 channels (32 -> 4 px),
flatten, concat hand side, FC 512, 512 (dropout 0.2 each, hand3d's keep 0.8), FC 63 = the
canonical coordinates. ViewPoint: the same with 64/128/256 channels, FC 256, 128 (dropout
0.25), then the rotation from the canonical frame to the camera frame: hand3d's three
numbers ``u``, the axis-angle vector (angle = ``|u|``), or with ``rotation="6d"`` six numbers,
two vectors made orthonormal by Gram-Schmidt (Zhou et al. 2019, "On the continuity of rotation
representations"). Measured on 4,023 samples of 84 synthetic sessions (15 CPU epochs, held-out
seed, docs/performance.md): root-relative error 30.8 mm with the axis-angle viewpoint, 48.0 mm
with the 6D one (PA-MPJPE 10.2 / 11.4 mm), so hand3d's axis-angle stays the default.

Convention (the canonical frame, after hand3d's ``utils/canonical_trafo.py``):
    - Keypoints are first made root-relative (root = keypoint 0, the wrist) and divided by
      the bone length ``|xyz[9] - xyz[10]|`` (FreiHAND's ``scale``): ``rel`` is unitless.
    - The canonical frame puts keypoint 9 (middle MCP) on the +y axis and keypoint 17
      (pinky MCP) in the xy-plane with x > 0; ``z = x cross y``. Row vectors throughout:
      ``rel = can @ R`` and ``can = rel @ R.T``; ``R``'s rows are the canonical axes in camera
      coordinates. (hand3d puts the middle MCP on -y via an extra half turn; this frame
      differs from it by that fixed rotation.)
    - Left hands are mirror images: their canonical coordinates are stored with ``z``
      negated (:func:`flip_left`), so the network predicts one (right-hand) shape space,
      as hand3d's ``flip_right_hand`` does the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handanno.check import check_shape
from handanno.data.conventions import NUM_JOINTS, SCALE_KEYPOINTS
from handanno.models.nets.weights_init import init_relu_layers

ROTATION_OUTPUTS = {"6d": 6, "axis_angle": 3}  # ViewPoint's output size per rotation representation
ROOT_ID = 0  # wrist
ALIGN_ID = 9  # middle MCP: on +y
PLANE_ID = 17  # pinky MCP: in the xy-plane, x > 0


@dataclass(frozen=True)
class LiftConfig:
    """Sizes of the lifting networks.

    Attributes:
        heatmap_size: side of the input score maps (32 in hand3d; divisible by 8).
        crop_size: side of the virtual crop the score maps cover, in pixels.
        sigma_px: Gaussian width of the input maps, heatmap pixels.
        uv_noise_px: std of the noise added to the keypoints before rendering (training only), crop pixels.
        width: multiplier on every channel / unit count (tests use 1/8).
        num_joints: keypoints (21).
        w_rot: weight of the rotation-matrix MSE relative to the canonical-coordinate MSE.
        dropout_prior: dropout after each PosePrior FC layer (hand3d: 0.2, i.e. keep 0.8).
        dropout_viewpoint: dropout after each ViewPoint FC layer (hand3d: 0.25).
        rotation: the ViewPoint output: ``"6d"`` (two vectors, Gram-Schmidt) or ``"axis_angle"``
            (hand3d's three numbers).
    """

    heatmap_size: int = 32
    crop_size: int = 256
    sigma_px: float = 3.0
    uv_noise_px: float = 2.5
    width: float = 1.0
    num_joints: int = NUM_JOINTS
    w_rot: float = 1.0
    dropout_prior: float = 0.2
    dropout_viewpoint: float = 0.25
    rotation: str = "axis_angle"

    def __post_init__(self) -> None:
        if self.rotation not in ROTATION_OUTPUTS:
            raise ValueError(f"rotation {self.rotation!r}: use one of {', '.join(ROTATION_OUTPUTS)}")


@dataclass(frozen=True)
class LiftOutput:
    """What the lifting networks predict.

    Attributes:
        coords_can: ``(B, J, 3)`` canonical coordinates (right-hand convention, unitless).
        rot: ``(B, 3, 3)`` rotation, canonical -> camera, row-vector convention ``rel = can @ rot``.
    """

    coords_can: torch.Tensor
    rot: torch.Tensor


def rotation_from_axis_angle(u: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``(B, 3)`` axis-angle (angle = norm, radians) to ``(B, 3, 3)`` rotations.

    Example:
        >>> R = rotation_from_axis_angle(torch.tensor([[0.0, 0.0, 1.5707963]]))
        >>> [round(float(v), 3) for v in R[0, 0]]
        [0.0, -1.0, 0.0]
    """
    check_shape(u, ("B", 3), "u")
    theta = torch.sqrt((u * u).sum(-1, keepdim=True) + 1e-8)  # (B, 1), hand3d's +1e-8
    k = u / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    Kx = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(-1, 3, 3)  # (B, 3, 3) cross matrix
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=u.dtype, device=u.device).expand_as(Kx)
    return eye + s * Kx + (1 - c) * (Kx @ Kx)


def rotation_from_6d(a: torch.Tensor) -> torch.Tensor:
    """Two 3-vectors ``(B, 6)`` to rotations ``(B, 3, 3)`` by Gram-Schmidt; the rows are the orthonormal axes.

    Row 0 is ``a[:, :3]`` normalised, row 1 the part of ``a[:, 3:]`` orthogonal to it, row 2
    their cross product, so the result is a proper rotation (det +1) for any input.

    Example:
        >>> R = rotation_from_6d(torch.tensor([[2.0, 0.0, 0.0, 1.0, 3.0, 0.0]]))
        >>> R[0].tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    check_shape(a, ("B", 6), "a")
    b1 = F.normalize(a[:, :3], dim=-1)
    b2 = F.normalize(a[:, 3:] - (b1 * a[:, 3:]).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=1)


def normalise_root_relative(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Root-relative keypoints divided by the bone length ``|xyz[9] - xyz[10]|``.

    Args:
        xyz: ``(B, J, 3)`` metres.

    Returns:
        ``rel (B, J, 3)`` unitless and ``bone (B,)`` metres.
    """
    check_shape(xyz, ("B", NUM_JOINTS, 3), "xyz")
    a, b = SCALE_KEYPOINTS
    bone = (xyz[:, a] - xyz[:, b]).norm(dim=-1).clamp(min=1e-9)  # (B,)
    return (xyz - xyz[:, ROOT_ID : ROOT_ID + 1]) / bone[:, None, None], bone


def canonical_frame(rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical coordinates and the rotation back to the camera frame (module Convention).

    Args:
        rel: ``(B, J, 3)`` root-relative keypoints (any units).

    Returns:
        ``can (B, J, 3)`` with ``rel = can @ R``, and ``R (B, 3, 3)`` a proper rotation.
    """
    check_shape(rel, ("B", NUM_JOINTS, 3), "rel")
    y = F.normalize(rel[:, ALIGN_ID], dim=-1)  # (B, 3)
    p = rel[:, PLANE_ID]
    x = F.normalize(p - (p * y).sum(-1, keepdim=True) * y, dim=-1)
    z = torch.cross(x, y, dim=-1)
    R = torch.stack([x, y, z], dim=1)  # (B, 3, 3), rows = canonical axes in camera coordinates
    return rel @ R.transpose(1, 2), R


def flip_left(coords_can: torch.Tensor, is_left: torch.Tensor) -> torch.Tensor:
    """Negate canonical ``z`` where ``is_left`` ``(B,)`` is true: maps between left and right shapes ``(B, J, 3)``."""
    sign = 1.0 - 2.0 * is_left.to(coords_can.dtype)  # (B,)
    flipped = coords_can.clone()
    flipped[..., 2] = coords_can[..., 2] * sign[:, None]
    return flipped


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def _encoder(J: int, chans: tuple[int, ...], width: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    cin = J
    for c in chans:
        c = _ch(c, width)
        layers += [nn.Conv2d(cin, c, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(inplace=True)]
        cin = c
    return nn.Sequential(*layers, nn.Flatten()), cin


def _mlp(n_in: int, units: tuple[int, ...], n_out: int, dropout: float, width: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for u in units:
        u = _ch(u, width)
        layers += [nn.Linear(n_in, u), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        n_in = u
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


class PosePrior(nn.Module):
    """Score maps + hand side -> canonical coordinates ``(B, J, 3)``."""

    def __init__(self, config: LiftConfig):
        super().__init__()
        self.conv, c = _encoder(config.num_joints, (32, 64, 128), config.width)
        n_flat = c * (config.heatmap_size // 8) ** 2
        self.fc = _mlp(n_flat + 2, (512, 512), config.num_joints * 3, config.dropout_prior, config.width)

    def forward(self, scoremaps: torch.Tensor, hand_side: torch.Tensor) -> torch.Tensor:
        """``(B, J, H, H)`` maps and ``(B, 2)`` one-hot side to ``(B, J, 3)``."""
        B, J = scoremaps.shape[:2]
        return self.fc(torch.cat([self.conv(scoremaps), hand_side], dim=1)).reshape(B, J, 3)


class ViewPoint(nn.Module):
    """Score maps + hand side -> rotation canonical -> camera ``(B, 3, 3)``."""

    def __init__(self, config: LiftConfig):
        super().__init__()
        self.conv, c = _encoder(config.num_joints, (64, 128, 256), config.width)
        n_flat = c * (config.heatmap_size // 8) ** 2
        self.rotation = config.rotation
        self.fc = _mlp(n_flat + 2, (256, 128), ROTATION_OUTPUTS[config.rotation], config.dropout_viewpoint,
                       config.width)  # fmt: skip

    def forward(self, scoremaps: torch.Tensor, hand_side: torch.Tensor) -> torch.Tensor:
        """``(B, J, H, H)`` maps and ``(B, 2)`` one-hot side to ``(B, 3, 3)``."""
        out = self.fc(torch.cat([self.conv(scoremaps), hand_side], dim=1))
        return rotation_from_6d(out) if self.rotation == "6d" else rotation_from_axis_angle(out)


class Lift(nn.Module):
    """PosePrior + ViewPoint."""

    def __init__(self, config: LiftConfig):
        super().__init__()
        self.config = config
        self.pose_prior = PosePrior(config)
        self.viewpoint = ViewPoint(config)
        init_relu_layers(self)

    def forward(self, scoremaps: torch.Tensor, hand_side: torch.Tensor) -> LiftOutput:
        """Canonical coordinates and viewpoint for ``(B, J, H, H)`` maps and a ``(B, 2)`` one-hot side.

        The side is ``[1, 0]`` for a right hand and ``[0, 1]`` for a left one.
        """
        check_shape(
            scoremaps, ("B", self.config.num_joints, self.config.heatmap_size, self.config.heatmap_size), "scoremaps"
        )
        check_shape(hand_side, (scoremaps.shape[0], 2), "hand_side")
        return LiftOutput(coords_can=self.pose_prior(scoremaps, hand_side), rot=self.viewpoint(scoremaps, hand_side))

    @staticmethod
    def root_relative(out: LiftOutput, is_left: torch.Tensor) -> torch.Tensor:
        """Unitless root-relative keypoints ``(B, J, 3)`` in the camera frame: ``flip(can) @ R``."""
        return flip_left(out.coords_can, is_left) @ out.rot
