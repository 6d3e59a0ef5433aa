"""Initialisation of networks trained from scratch (no pre-trained weights ship with handanno)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def init_relu_layers(module: nn.Module, score_layers: Iterable[nn.Module] = (), score_std: float = 0.01) -> None:
    """He-normal weights and zero biases for every conv and linear layer of ``module``.

    PyTorch's default (uniform, variance ``1 / (3 fan_in)``, random biases) shrinks the signal
    about six-fold per conv + ReLU. In the lifting network, after the six encoder convs the
    features of 32x32 Gaussian score maps hardly depended on the maps (their spread over a
    batch of different hands was 4-6 % of their size); Adam then fitted the mean pose through
    the biases within ~60 steps and the encoders never recovered: the whole network predicted
    one constant hand. hand3d starts from Xavier weights and near-zero biases for the same
    reason (or from pre-trained VGG weights, for its CPM).

    Args:
        module: the network; its ``Conv2d`` and ``Linear`` layers are set in place.
        score_layers: output layers (no ReLU after them) that get ``N(0, score_std^2)``
            weights instead, so the first outputs are near zero.
        score_std: standard deviation of those weights.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 1))
        >>> init_relu_layers(net, score_layers=[net[2]])
        >>> float(net[0].bias.abs().max()), round(float(net[0].weight.std()), 1), float(net[2].weight.std()) < 0.02
        (0.0, 0.2, True)
    """
    small = {id(m) for m in score_layers}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if id(m) in small:
                nn.init.normal_(m.weight, std=score_std)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = ["init_relu_layers"]
