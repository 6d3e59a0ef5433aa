"""Tiny FreiHAND-layout label folders with drawn hands, for tests, benchmarks and smoke runs.

Real labels come from ``handanno synth`` + the FreiHAND exporter or from capture sessions;
these toy folders only need to be cheap and *learnable*: each image shows a drawn hand
skeleton (palm polygon, one colour per finger, so left/right and finger identity are
visible) over a procedural background, with an exact mask and exact labels.

Two flavours:
    - :func:`make_toy_labels` without a hand model writes the official FreiHAND layout
      (``training_K/xyz/scale.json``, ``training/rgb``, ``training/mask``) from a procedural
      skeleton;
    - with a hand model (``HandModelData``) it poses that model and writes handanno's layout
      through :class:`handanno.data.freihand_io.FreiHANDWriter` (adding ``verts``, ``mano``,
      ``index.json``, ``model.json``).

:func:`toy_hand_model` builds a crude 778-vertex MANO-format model (a point cloud along a
skeleton, rigid skinning, no pose blend shapes) for tests that must not depend on a model
file; it is not a hand mesh.

Convention: metres and pixels; camera frame x right, y down, z forward; right hands.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from handanno.data.augment import procedural_background
from handanno.data.conventions import (
    FREIHAND_FROM_EXTENDED,
    MANO_PARENTS,
    NUM_JOINTS,
    NUM_MANO_JOINTS,
    NUM_VERTS,
    TIP_VERTEX_IDS,
)
from handanno.data.files_io import write_image, write_json

# Finger colours (BGR): thumb, index, middle, ring, pinky.
FINGER_COLOURS = ((40, 40, 230), (40, 200, 40), (230, 120, 30), (30, 210, 230), (200, 40, 200))
PALM_COLOUR = (150, 180, 220)

# Rest skeleton of a right hand (metres, hand frame: fingers along -y, thumb on +x), FreiHAND order.
_BASES = np.array([[0.025, -0.025, 0.0], [0.022, -0.085, 0.0], [0.0, -0.09, 0.0], [-0.02, -0.085, 0.0],
                   [-0.037, -0.075, 0.0]])  # fmt: skip
_LENGTHS = np.array([[0.038, 0.032, 0.028], [0.042, 0.025, 0.022], [0.045, 0.028, 0.024], [0.042, 0.026, 0.022],
                     [0.032, 0.02, 0.02]])  # fmt: skip
_DIRECTIONS = np.array([[0.75, -0.66, 0.0], [0.12, -1.0, 0.0], [0.0, -1.0, 0.0], [-0.12, -1.0, 0.0], [-0.3, -1.0, 0.0]])


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    R, _ = cv2.Rodrigues((np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis) * angle).reshape(3, 1))
    return R


def skeleton_keypoints(flex: np.ndarray | None = None) -> np.ndarray:
    """The 21 keypoints ``(21, 3)`` (metres, hand frame, FreiHAND order) with per-joint flexion ``(5, 3)`` radians."""
    flex = np.zeros((5, 3)) if flex is None else np.asarray(flex, dtype=np.float64)
    kp = np.zeros((NUM_JOINTS, 3))
    for f in range(5):
        d = _DIRECTIONS[f] / np.linalg.norm(_DIRECTIONS[f])
        side_axis = np.cross(d, [0.0, 0.0, 1.0])  # bending axis: in the palm plane, across the finger
        p = _BASES[f].copy()
        kp[1 + 4 * f] = p
        for k in range(3):
            d = _rot(side_axis, flex[f, k]) @ d
            p = p + _LENGTHS[f, k] * d
            kp[2 + 4 * f + k] = p
    return kp


def _random_pose_xyz(rng: np.random.Generator) -> np.ndarray:
    flex = rng.uniform(0.0, 0.9, size=(5, 3)) * rng.uniform(0.2, 1.0, size=(5, 1))
    kp = skeleton_keypoints(flex)
    R = (
        _rot([0, 0, 1], rng.uniform(-np.pi, np.pi))
        @ _rot([1, 0, 0], rng.uniform(-0.6, 0.6))
        @ _rot([0, 1, 0], rng.uniform(-0.6, 0.6))
    )
    return kp @ R.T


def _intrinsics(rng: np.random.Generator, size: int) -> np.ndarray:
    f = 1.7 * size * rng.uniform(0.9, 1.1)
    c = (size - 1) / 2.0 + rng.uniform(-0.02, 0.02, size=2) * size
    return np.array([[f, 0.0, c[0]], [0.0, f, c[1]], [0.0, 0.0, 1.0]])


def _place(xyz_rel: np.ndarray, K: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Put a hand (relative keypoints) at a random depth so its bounding box is centred in the image."""
    Z = rng.uniform(0.45, 0.7)
    xyz = xyz_rel - xyz_rel.mean(axis=0) + np.array([0.0, 0.0, Z])
    uv = xyz @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    centre = (uv.min(0) + uv.max(0)) / 2 + rng.uniform(-0.05, 0.05, size=2) * size
    target = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    shift_px = target - centre
    xyz[:, :2] += shift_px * Z / K[0, 0]
    return xyz


def draw_hand(
    uv: np.ndarray, size: int, background: np.ndarray, thickness: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a hand skeleton at keypoints ``uv (21, 2)`` px on ``background (S, S, 3)``; return image and mask.

    The palm is a filled polygon (wrist and the five knuckles), each finger a thick line in
    its colour, joints small dark dots.
    """
    img = background.copy()
    mask = np.zeros((size, size), np.uint8)
    t = thickness or max(2, size // 28)
    sh = 4  # sub-pixel precision bits for cv2 drawing
    P = np.round(uv * (1 << sh)).astype(np.int32)
    palm = P[[0, 1, 5, 9, 13, 17]]
    cv2.fillPoly(img, [palm], PALM_COLOUR, lineType=cv2.LINE_AA, shift=sh)
    cv2.fillPoly(mask, [palm], 255, shift=sh)
    for f in range(5):
        chain = [0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f]
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            cv2.line(img, tuple(P[a]), tuple(P[b]), FINGER_COLOURS[f], t, cv2.LINE_AA, sh)
            cv2.line(mask, tuple(P[a]), tuple(P[b]), 255, t, cv2.LINE_8, sh)
    for j in range(NUM_JOINTS):
        cv2.circle(img, tuple(P[j]), max(1, t // 2) << sh, (30, 30, 30), -1, cv2.LINE_AA, sh)
    return img, mask


def _project(K: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    p = xyz @ K.T
    return p[:, :2] / p[:, 2:]


def make_toy_labels(
    out: str | os.PathLike, num_samples: int, image_size: int = 224, seed: int = 0, hand_model=None
) -> Path:
    """Write a toy label folder (module docstring); return its path.

    Args:
        out: the folder to create.
        num_samples: number of samples.
        image_size: side of the square images in pixels (FreiHAND: 224).
        seed: random seed.
        hand_model: optional ``HandModelData`` (right hand); with it the folder also holds
            ``verts`` and ``mano`` (handanno layout).

    Returns:
        ``Path(out)``.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    if hand_model is not None:
        return _make_with_model(out, num_samples, image_size, rng, hand_model)
    Ks, xyzs, scales = [], [], []
    for i in range(num_samples):
        K = _intrinsics(rng, image_size)
        xyz = _place(_random_pose_xyz(rng), K, image_size, rng)
        img, mask = draw_hand(_project(K, xyz), image_size, procedural_background(image_size, rng))
        write_image(out / "training" / "rgb" / f"{i:08d}.jpg", img)
        write_image(out / "training" / "mask" / f"{i:08d}.jpg", mask)
        Ks.append(K)
        xyzs.append(xyz)
        scales.append(float(np.linalg.norm(xyz[9] - xyz[10])))
    write_json(out / "training_K.json", Ks)
    write_json(out / "training_xyz.json", xyzs)
    write_json(out / "training_scale.json", scales)
    return out


def _make_with_model(out: Path, n: int, size: int, rng: np.random.Generator, hand_model) -> Path:
    import torch

    from handanno.data.freihand import root_uv_and_scale
    from handanno.data.freihand_io import FreiHANDSample, FreiHANDWriter
    from handanno.handmodel.mano import ManoLayer

    layer = ManoLayer(hand_model, dtype=torch.float64)
    with FreiHANDWriter(out, hand_model.name, is_mano=hand_model.is_mano, image_size=size) as writer:
        for i in range(n):
            K = _intrinsics(rng, size)
            pose = np.concatenate([rng.normal(0, 0.8, 3), rng.normal(0, 0.25, 45)])
            betas = rng.normal(0, 0.5, 10)
            with torch.no_grad():
                o = layer(torch.tensor(pose[None]), torch.tensor(betas[None]), torch.zeros(1, 3, dtype=torch.float64))
            joints, verts = o.joints[0].numpy(), o.vertices[0].numpy()
            shift = _place(joints, K, size, rng) - joints
            xyz, verts = joints + shift[0], verts + shift[0]
            uv_root, scale = root_uv_and_scale(xyz[9], K)
            mano = np.concatenate([pose, betas, uv_root, [float(scale)]])
            img, mask = draw_hand(_project(K, xyz), size, procedural_background(size, rng))
            writer.add(FreiHANDSample(rgb=img, mask=mask, K=K, xyz=xyz, verts=verts, mano=mano,
                                      frame=f"{i:06d}", camera="cam0"))  # fmt: skip
    return out


def toy_hand_model(side: str = "right"):
    """A crude MANO-format model (``HandModelData``): 778 points along the rest skeleton, rigid skinning.

    Joint ``j`` is exactly vertex ``j`` (``J_regressor`` one-hot), the fingertips are the
    vertices :data:`TIP_VERTEX_IDS`, ``posedirs`` are zero, ``hands_mean`` is zero, and
    ``shapedirs`` scale the hand (beta 0) plus small random directions. The left model is
    the exact mirror (x -> -x) of the right, so mirrored poses give mirrored hands.
    """
    from handanno.handmodel.mano import HandModelData

    rng = np.random.default_rng(12345)
    kp = skeleton_keypoints()  # (21, 3) FreiHAND order
    extended = np.zeros((NUM_MANO_JOINTS + 5, 3))
    extended[FREIHAND_FROM_EXTENDED] = kp  # MANO order + tips
    joints16 = extended[:NUM_MANO_JOINTS]
    tips = extended[NUM_MANO_JOINTS:]
    V = NUM_VERTS
    owner = np.arange(V) % NUM_MANO_JOINTS  # the joint each vertex is skinned to
    tip_owner = {0: 15, 1: 3, 2: 6, 3: 12, 4: 9}  # thumb, index, middle, ring, pinky -> last MANO joint
    children = {int(p): c for c, p in enumerate(MANO_PARENTS) if p >= 0}
    v = np.zeros((V, 3))
    for i in range(V):
        j = owner[i]
        end = joints16[children[j]] if j in children else joints16[j] + (joints16[j] - joints16[MANO_PARENTS[j]]) * 0.8
        v[i] = joints16[j] + rng.uniform(0, 1) * (end - joints16[j]) + rng.normal(0, 0.006, 3)
    v[:NUM_MANO_JOINTS] = joints16
    for f, vid in enumerate(TIP_VERTEX_IDS):
        v[vid] = tips[f]
        owner[vid] = tip_owner[f]
    weights = np.zeros((V, NUM_MANO_JOINTS))
    weights[np.arange(V), owner] = 1.0
    J_regressor = np.zeros((NUM_MANO_JOINTS, V))
    J_regressor[np.arange(NUM_MANO_JOINTS), np.arange(NUM_MANO_JOINTS)] = 1.0
    shapedirs = rng.normal(0, 0.0005, (V, 3, 10))
    shapedirs[:, :, 0] = 0.05 * (v - v[0])
    if side == "left":
        v = v * np.array([-1.0, 1.0, 1.0])
        shapedirs = shapedirs * np.array([-1.0, 1.0, 1.0])[None, :, None]
    d = {
        "v_template": v,
        "f": np.array([[0, 1, 2], [2, 3, 4]]),
        "J_regressor": J_regressor,
        "weights": weights,
        "posedirs": np.zeros((V, 3, 135)),
        "shapedirs": shapedirs,
        "kintree_table": np.stack([MANO_PARENTS, np.arange(NUM_MANO_JOINTS)]),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
        "tip_vertex_ids": TIP_VERTEX_IDS,
    }
    return HandModelData.from_arrays(d, side=side, name="toy-hand", is_mano=False, source="toy_hand_model()")
