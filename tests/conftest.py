"""Shared fixtures: devices, dtypes with their tolerances, and a tiny random MANO-format model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from handanno.data.augment import keypoint_box

# Tolerances for comparing a computation in a given dtype with a reference. Hand geometry is
# ~0.1 m in magnitude and goes through ~10 chained float ops (rotations, matmuls over 16
# joints), so float32 (eps 1.2e-7) accumulates to ~1e-7 m: atol 1e-6 m (1 um) leaves 10x
# headroom; float64 (eps 2.2e-16) likewise to ~1e-15 m, atol 1e-12 m.
TOLERANCES = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
}

_CUDA = torch.cuda.is_available()


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not _CUDA, reason="no CUDA")])]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch device under test: the CPU, and CUDA when there is one."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The float type under test."""
    return request.param


@pytest.fixture
def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """``{"rtol": .., "atol": ..}`` for ``dtype`` (see TOLERANCES for why these values)."""
    return TOLERANCES[dtype]


def random_mano_dict(seed: int = 0, num_verts: int = 778, num_faces: int = 200) -> dict[str, object]:
    """A random model with MANO's keys, shapes and dtypes (not a hand; for tests only).

    Like the MANO files: ``f`` uint32, ``kintree_table`` with 2**32 - 1 as the root's parent,
    plus ``hands_coeffs``, ``J``, ``bs_style``, ``bs_type``. ``num_verts`` must exceed 672 so
    that the fingertip vertex ids exist.
    """
    rng = np.random.default_rng(seed)
    V = num_verts
    v_template = rng.normal(scale=0.03, size=(V, 3))
    J_regressor = np.zeros((16, V))
    for j in range(16):  # each joint: a convex combination of 20 vertices, as MANO's sparse regressor
        idx = rng.choice(V, size=20, replace=False)
        J_regressor[j, idx] = rng.random(20)
    J_regressor /= J_regressor.sum(axis=1, keepdims=True)
    weights = rng.random((V, 16)) ** 4
    weights /= weights.sum(axis=1, keepdims=True)
    parents = [2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    return {
        "v_template": v_template,
        "f": rng.integers(0, V, size=(num_faces, 3)).astype(np.uint32),
        "J_regressor": J_regressor,
        "weights": weights,
        "posedirs": rng.normal(scale=1e-3, size=(V, 3, 135)),
        "shapedirs": rng.normal(scale=5e-3, size=(V, 3, 10)),
        "kintree_table": np.array([parents, list(range(16))], dtype=np.int64),
        "hands_components": np.linalg.qr(rng.normal(size=(45, 45)))[0],
        "hands_mean": rng.normal(scale=0.2, size=45),
        "hands_coeffs": rng.normal(size=(8, 45)),
        "J": J_regressor @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@pytest.fixture
def make_mano_dict() -> Callable[..., dict[str, object]]:
    """Factory: ``make_mano_dict(seed=0, num_verts=778, num_faces=200)``, see :func:`random_mano_dict`."""
    return random_mano_dict


@pytest.fixture
def mano_dict() -> dict[str, object]:
    """A tiny random MANO-format model dict (seed 0)."""
    return random_mano_dict(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (opt in: ``pytestmark = pytest.mark.usefixtures(...)``).

    These tests' tensors are small, and on a shared 2-core machine a second thread turns each
    op into a wait for the other (a fit took 59 s with 2 threads and 19 s with 1 under load).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class OracleDetector:
    """A stand-in for a trained heatmap network: ``detect(images, boxes)`` from known keypoints.

    ``truth[id(image)]`` holds each image's ``(21, 2)`` keypoints (None: no hand). A crop
    framed as in training (side 1.4 x the keypoints' box, hand centred) gets the true
    keypoints with confidence 1; off-centre or mis-scaled crops get keypoints pulled towards
    the crop centre and lower confidence; crops of images without a hand get confidence 0.05.
    """

    crop_pad = 1.4

    def __init__(self):
        self.truth: dict[int, np.ndarray | None] = {}
        self.crops = 0

    def detect(self, images, boxes):
        out = np.zeros((len(images), 21, 3))
        for i, (img, box) in enumerate(zip(images, boxes, strict=True)):
            self.crops += 1
            gt = self.truth[id(img)]
            side = 1.4 * max(box[2] - box[0], box[3] - box[1])
            centre = (box[:2] + box[2:]) / 2
            if gt is None:
                out[i, :, :2] = centre
                out[i, :, 2] = 0.05
                continue
            gt_box = keypoint_box(gt)
            gt_side, gt_centre = 1.4 * (gt_box[2:] - gt_box[:2]).max(), (gt_box[:2] + gt_box[2:]) / 2
            off = np.linalg.norm(centre - gt_centre) / side  # hand off-centre, fraction of the crop
            zoom = np.log(side / gt_side) / np.log(1.25)  # framing off, in units of the training zoom range
            out[i, :, :2] = gt + 0.3 * (centre - gt_centre) + 0.02 * zoom * (gt - gt_centre)
            out[i, :, 2] = np.exp(-0.5 * zoom**2 - 0.5 * (off / 0.15) ** 2)
        return out


@pytest.fixture
def oracle_detector() -> type[OracleDetector]:
    """The :class:`OracleDetector` class (tests of the hand search and tracking)."""
    return OracleDetector
