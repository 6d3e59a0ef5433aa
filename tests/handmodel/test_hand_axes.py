"""Anatomical joint axes of the hand model and the fitter's prior on them."""

import numpy as np
import pytest
import torch

from handanno.annotate import losses
from handanno.handmodel.hand_axes import (
    FREE_JOINTS,
    HINGE_JOINTS,
    MANO_JOINT_BONES,
    PriorStd,
    anatomical_pose_prior,
    hand_axes,
    joint_bases,
)
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model


@pytest.fixture(scope="module", params=["right", "left"])
def rest(request):
    """``(side, (21, 3) keypoints of the flat hand)`` of the open hand model."""
    layer = ManoLayer(load_hand_model(request.param), dtype=torch.float64)
    with torch.no_grad():
        j = layer.keypoints(-layer.pose_mean[None], torch.zeros(1, 10, dtype=torch.float64),
                            torch.zeros(1, 3, dtype=torch.float64))[0].numpy()  # fmt: skip
    return request.param, j


def test_joint_bases_are_twist_flex_side(rest):
    side, j = rest
    axes = hand_axes(j, side)
    bases = joint_bases(axes)  # (15, 3, 3)
    for mano_j, (a, b) in MANO_JOINT_BONES.items():
        B = bases[mano_j - 1]
        np.testing.assert_allclose(B @ B.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(B) > 0
        bone = (j[b] - j[a]) / np.linalg.norm(j[b] - j[a])
        np.testing.assert_allclose(B[0], bone, atol=1e-12)  # twist: about the joint's own bone
        assert B[1] @ axes.flex[mano_j - 1] > 0.99  # flexion (already orthogonal to the bone)


def test_prior_holds_twist_and_hinge_sides_but_not_flexion(rest):
    side, j = rest
    comps, sd = anatomical_pose_prior(hand_axes(j, side), PriorStd(flex=0.6, spread=0.5, twist=0.1, hinge_side=0.2,
                                                                   free=0.7))  # fmt: skip
    np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-12)
    bases = joint_bases(hand_axes(j, side))
    C, S = torch.as_tensor(comps), torch.as_tensor(sd)

    def cost(mano_j: int, axis: int, angle: float = 0.1) -> float:
        art = torch.zeros(1, 45, dtype=torch.float64)
        art[0, 3 * (mano_j - 1) : 3 * mano_j] = torch.as_tensor(angle * bases[mano_j - 1, axis])
        return float(losses.pose_prior_loss(art, C, S)[0])

    for mano_j in range(1, 16):
        if mano_j in FREE_JOINTS:
            np.testing.assert_allclose([cost(mano_j, a) for a in range(3)], (0.1 / 0.7) ** 2, rtol=1e-9)
            continue
        np.testing.assert_allclose(cost(mano_j, 0), 1.0, rtol=1e-9)  # twist: (0.1 / 0.1)^2
        np.testing.assert_allclose(cost(mano_j, 1), (0.1 / 0.6) ** 2, rtol=1e-9)
        want_side = 0.2 if mano_j in HINGE_JOINTS else 0.5
        np.testing.assert_allclose(cost(mano_j, 2), (0.1 / want_side) ** 2, rtol=1e-9)
