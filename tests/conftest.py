"""Shared fixtures: devices, dtypes with their tolerances, and a tiny random MANO-format model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
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


# --------------------------------------------------------------------------- a drawn hand
# (for the segmentation and detector tests: no renderer, no model, a known mask and skeleton)
SKIN_BGR = (105, 145, 215)


def _textured_background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Clutter: smooth colour fields, random rectangles and stripes, pixel noise (no skin tones)."""
    low = rng.uniform(20, 200, (6, 8, 3)).astype(np.float32)
    low[..., 2] *= 0.6  # keep the red channel low: no patch looks like skin
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        col = rng.uniform(0, 180, 3) * np.array([1.0, 1.0, 0.6])
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(4, w // 10)), y0 + int(rng.integers(4, h // 10))),
                      col.tolist(), -1)
    for x in range(0, w, 23):
        cv2.line(img, (x, 0), (x + h // 3, h), (40.0, 90.0, 30.0), 2)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def drawn_hand(w: int = 320, h: int = 240, size: float = 150.0, seed: int = 0):
    """An image of a skin-coloured hand (palm ellipse + five finger strokes) on clutter.

    Returns:
        ``image (H, W, 3)`` uint8, ``mask (H, W)`` bool (the drawn hand) and ``keypoints
        (21, 3)`` ``[u, v, 1]`` in FreiHAND order along the drawn fingers.
    """
    rng = np.random.default_rng(seed)
    img = _textured_background(w, h, rng)
    cx, cy = w / 2, h / 2 + 0.2 * size
    S = size
    mask = np.zeros((h, w), np.uint8)
    palm = (cx, cy)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(0.24 * S), int(0.26 * S)), 0, 0, 360, 1, -1)
    kp = np.zeros((21, 3))
    kp[0] = (cx, cy + 0.3 * S, 1)
    cv2.line(mask, (int(cx), int(cy)), (int(cx), int(cy + 0.32 * S)), 1, int(0.3 * S))  # wrist
    # (knuckle offset from the palm centre, direction angle from "up", length, width), index..pinky then thumb
    fingers = {
        5: ((-0.15, -0.2), -0.18, 0.42, 0.085),
        9: ((-0.04, -0.24), -0.04, 0.47, 0.09),
        13: ((0.07, -0.22), 0.1, 0.43, 0.085),
        17: ((0.17, -0.16), 0.3, 0.33, 0.075),
        1: ((-0.15, 0.1), -1.0, 0.4, 0.095),
    }
    for k0, ((dx, dy), ang, length, width) in fingers.items():
        base = np.array([palm[0] + dx * S, palm[1] + dy * S])
        d = np.array([np.sin(ang), -np.cos(ang)])
        pts = [base + d * length * S * t for t in (0.0, 0.4, 0.7, 1.0)]
        for j, p in enumerate(pts):
            kp[k0 + j] = (p[0], p[1], 1)
        cv2.line(mask, tuple(int(v) for v in pts[0]), tuple(int(v) for v in pts[-1]), 1, int(width * S))
    m = mask > 0
    shade = 1.0 + 0.12 * np.sin(np.arange(w) / 17.0)[None, :, None]
    skin = np.clip(np.array(SKIN_BGR, np.float32) * shade + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)
    img[m] = skin[m]
    return img, m, kp


@pytest.fixture(scope="session")
def draw_hand() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`drawn_hand`, for tests of segmentation and detection."""
    return drawn_hand


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""The project's shared real test data (../shared/data beside the checkout)."""


@pytest.fixture(scope="session")
def charuco_dir() -> Path:
    """OpenCV's ChArUco test photos (../shared/data/opencv_charuco); the test is skipped, saying so, without them."""
    path = SHARED_DATA / "opencv_charuco"
    if not (path / "choriginal.jpg").is_file():
        pytest.skip(f"OpenCV ChArUco test images not found at {path}")
    return path
