"""Crop-and-augment maths for training samples: pure numpy/OpenCV functions, no file I/O.

A training crop is an affine warp of a label image. The warp's rotation, zoom and shift are
applied consistently to every label: 2D keypoints go through the affine map itself; 3D
points are rotated about the camera's optical axis by the same angle (an in-plane image
rotation *is* that 3D rotation, with the principal point moved); the crop's intrinsics
follow. A horizontal flip mirrors the image, negates camera x (``x -> -x``) and so turns a
right hand into a left one; MANO axis-angle vectors mirror as ``(x, y, z) -> (x, -y, -z)``
(the relation between MANO_RIGHT and MANO_LEFT). The keypoint *order* does not change
under a flip: keypoint 1 is still the thumb's knuckle, now of a left hand.

Convention:
    - Pixels: ``(u, v)`` = (column, row), pixel (0, 0) is the centre of the top-left pixel
      (OpenCV's ``warpAffine`` convention), so the mirror of ``u`` in an ``S``-wide crop is
      ``S - 1 - u``.
    - ``A`` is the ``(2, 3)`` affine map from label-image pixels to crop pixels,
      ``uv_crop = A[:, :2] @ uv + A[:, 2]``.
    - 3D: metres, camera frame, ``xyz_crop = xyz @ T.T`` with ``T = M @ Rz`` (``M`` =
      ``diag(-1, 1, 1)`` when flipped, else identity). The new intrinsics reproduce the
      warped 2D keypoints exactly when ``fx == fy`` (FreiHAND's cameras); otherwise the 2D
      labels stay exact (they come from ``A``) and the projection differs by the aspect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from handanno.check import check_shape
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle, nearest_rotation


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training crops (all off when ``enabled`` is False).

    Attributes:
        enabled: master switch.
        rot_deg: rotation uniform in ``[-rot_deg, rot_deg]`` degrees.
        scale: zoom log-uniform in ``[1 / scale, scale]``.
        shift: centre shift uniform in ``[-shift, shift]`` times the crop side, per axis.
        flip_prob: probability of a horizontal flip (which swaps the hand side).
        brightness: additive brightness uniform in ``[-b, b]`` times 255.
        contrast: contrast factor uniform in ``[1 - c, 1 + c]``.
        saturation: saturation factor uniform in ``[1 - s, 1 + s]``.
        hue_deg: hue shift uniform in ``[-h, h]`` degrees.
        blur_prob: probability of a Gaussian blur with sigma uniform in ``(0, blur_sigma]`` px.
        blur_sigma: largest blur sigma, crop pixels.
        bg_prob: probability of replacing the background through the mask (samples without
            a mask keep theirs).
        bg_procedural: among replaced backgrounds, the fraction that are procedural
            textures (the rest are other samples' backgrounds with their hand filled in).
    """

    enabled: bool = True
    rot_deg: float = 30.0
    scale: float = 1.25
    shift: float = 0.08
    flip_prob: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.3
    saturation: float = 0.3
    hue_deg: float = 8.0
    blur_prob: float = 0.2
    blur_sigma: float = 1.5
    bg_prob: float = 0.5
    bg_procedural: float = 0.5


@dataclass(frozen=True)
class CropTransform:
    """One sample's crop geometry (see module Convention).

    Attributes:
        A: ``(2, 3)`` label-image pixels -> crop pixels.
        T: ``(3, 3)`` camera-frame 3D map, ``xyz_crop = xyz @ T.T`` (rotation, times the
            mirror when flipped).
        Rz: ``(3, 3)`` the rotation part alone.
        zoom: crop pixels per label-image pixel.
        flip: whether the crop is mirrored.
        crop_size: crop side ``S`` in pixels.
    """

    A: np.ndarray
    T: np.ndarray
    Rz: np.ndarray
    zoom: float
    flip: bool
    crop_size: int

    @property
    def A_inv(self) -> np.ndarray:
        """``(2, 3)`` crop pixels -> label-image pixels."""
        return cv2.invertAffineTransform(self.A)


def keypoint_box(keypoints: np.ndarray) -> np.ndarray:
    """The tight ``[x0, y0, x1, y1]`` box (pixels) of ``(J, 2+)`` keypoints ``[u, v, ...]``.

    Example:
        >>> keypoint_box(np.array([[3.0, 7.0], [1.0, 9.0], [2.0, 8.0]])).tolist()
        [1.0, 7.0, 3.0, 9.0]
    """
    uv = np.asarray(keypoints)[:, :2]
    return np.concatenate([uv.min(axis=0), uv.max(axis=0)])


def box_crop_frame(box: np.ndarray, crop_pad: float) -> tuple[np.ndarray, float]:
    """How handanno frames a hand: a square crop centred on ``box``, ``crop_pad`` x its larger side.

    The side is at least ``crop_pad`` pixels; augmentation comes on top. The training crops
    (:class:`handanno.data.datasets.HandCropDataset`) and the detector at run time
    (:class:`handanno.annotate.detect_cpm.CPMDetector`) both frame with it, so the network
    sees the hand at the zoom it was trained on.

    Args:
        box: ``(4,)`` ``[x0, y0, x1, y1]`` pixels (e.g. :func:`keypoint_box`).
        crop_pad: crop side over the box's larger side.

    Returns:
        ``(centre (2,), side)`` in pixels, for :func:`crop_transform`.

    Example:
        >>> c, side = box_crop_frame(np.array([10.0, 20.0, 30.0, 60.0]), 1.5)
        >>> c.tolist(), side
        ([20.0, 40.0], 60.0)
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), max(x1 - x0, y1 - y0, 1.0) * crop_pad


def crop_transform(
    center_uv: np.ndarray, side_px: float, crop_size: int, angle_rad: float = 0.0, flip: bool = False
) -> CropTransform:
    """The crop that maps a square of ``side_px`` around ``center_uv`` onto ``crop_size`` pixels.

    The square is rotated by ``angle_rad`` (counter-clockwise in the image as displayed,
    i.e. the content turns by ``+angle`` about the crop centre) and then mirrored if ``flip``.

    Args:
        center_uv: ``(2,)`` centre in label-image pixels.
        side_px: side of the square in label-image pixels.
        crop_size: output side ``S``.
        angle_rad: in-plane rotation, radians.
        flip: mirror horizontally.

    Returns:
        the :class:`CropTransform`.

    Example:
        >>> t = crop_transform(np.array([100.0, 50.0]), 40.0, 20)
        >>> apply_affine(t.A, np.array([[100.0, 50.0], [81.0, 31.0]])).round(3).tolist()
        [[9.5, 9.5], [0.0, 0.0]]
    """
    zoom = crop_size / side_px
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    # Image rotation by +angle with v pointing down: [u', v'] = [[c, s], [-s, c]] [u, v].
    R2 = np.array([[c, s], [-s, c]])
    half = (crop_size - 1) / 2.0
    lin = zoom * R2
    A = np.concatenate([lin, (np.array([half, half]) - lin @ center_uv)[:, None]], axis=1)  # (2, 3)
    Rz = np.eye(3)
    Rz[:2, :2] = R2  # the same rotation of camera x, y (z, the optical axis, is unchanged)
    T = Rz.copy()
    if flip:
        F = np.array([[-1.0, 0.0, crop_size - 1.0], [0.0, 1.0, 0.0]])
        A = F[:, :2] @ A + np.concatenate([np.zeros((2, 2)), F[:, 2:]], axis=1)
        T = np.diag([-1.0, 1.0, 1.0]) @ Rz
    return CropTransform(A=A, T=T, Rz=Rz, zoom=zoom, flip=flip, crop_size=crop_size)


def apply_affine(A: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through the ``(2, 3)`` affine map ``A``."""
    check_shape(uv, ("N", 2), "uv")
    return uv @ A[:, :2].T + A[:, 2]


def crop_intrinsics(K: np.ndarray, t: CropTransform) -> np.ndarray:
    """Intrinsics ``(3, 3)`` of the crop for 3D points already mapped by ``t.T``.

    Derivation: ``A K x = K' Rz x`` with ``K' = [[z fx, 0, c'x], [0, z fy, c'y]]`` and
    ``c' = z R2 c + a``; a flip then maps ``c'x -> S - 1 - c'x`` (and x -> -x in 3D).
    """
    check_shape(K, (3, 3), "K")
    K_new = np.array(K, dtype=np.float64).copy()
    K_new[0, 0] *= t.zoom
    K_new[1, 1] *= t.zoom
    K_new[0, 1] = 0.0
    lin = t.zoom * t.Rz[:2, :2]
    if t.flip:  # undo the mirror on A to get the rotation-only offset
        a = t.A[:, 2].copy()
        a[0] = (t.crop_size - 1.0) - a[0]
    else:
        a = t.A[:, 2]
    c_new = lin @ K[:2, 2] + a
    if t.flip:
        c_new[0] = (t.crop_size - 1.0) - c_new[0]
    K_new[:2, 2] = c_new
    return K_new


def mirror_axis_angle(pose: np.ndarray) -> np.ndarray:
    """Mirror axis-angle vectors ``(..., 3k)`` across the x = 0 plane: ``(x, y, z) -> (x, -y, -z)``.

    This is how MANO_LEFT's parameters relate to MANO_RIGHT's for mirrored hands
    (``M R(a) M = R(-M a)`` for ``M = diag(-1, 1, 1)``); it holds for the global rotation
    and for the articulation relative to ``hands_mean`` alike (the two ``hands_mean`` are
    mirrors of each other).

    Example:
        >>> mirror_axis_angle(np.array([0.1, 0.2, 0.3, 1.0, -1.0, 2.0])).tolist()
        [0.1, -0.2, -0.3, 1.0, 1.0, -2.0]
    """
    out = np.array(pose, dtype=np.float64).reshape(-1, 3).copy()
    out[:, 1:] *= -1.0
    return out.reshape(np.shape(pose))


def rotate_global_orient(pose: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Left-multiply the global rotation ``pose[:3]`` (axis-angle) by ``R (3, 3)``; ``(48,)`` in and out."""
    out = np.array(pose, dtype=np.float64).copy()
    out[:3] = matrix_to_axis_angle(nearest_rotation(R @ axis_angle_to_matrix(out[:3])))
    return out


def transform_mano_pose(pose: np.ndarray, t: CropTransform) -> np.ndarray:
    """FreiHAND ``pose (48,)`` for the crop: the global rotation turned by ``Rz``, then mirrored if flipped."""
    check_shape(pose, (48,), "pose")
    out = rotate_global_orient(pose, t.Rz)
    return mirror_axis_angle(out) if t.flip else out


def warp_image(image: np.ndarray, t: CropTransform, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The ``(S, S[, 3])`` crop of ``image`` (borders replicated, so the hand never meets a black edge)."""
    return cv2.warpAffine(image, t.A, (t.crop_size, t.crop_size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast, saturation and hue of a ``(H, W, 3)`` BGR uint8 image.

    Every step is a 256-entry lookup table on uint8 channels (OpenCV's 8-bit HSV: hue in
    ``[0, 180)``), so the cost is a few passes over the bytes.
    """
    levels = np.arange(256, dtype=np.float32)
    img = image
    if cfg.saturation > 0 or cfg.hue_deg > 0:
        h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
        hue_lut = np.round(levels + rng.uniform(-cfg.hue_deg, cfg.hue_deg) / 2.0) % 180.0
        sat_lut = np.clip(levels * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation), 0, 255)
        h = cv2.LUT(h, hue_lut.astype(np.uint8))
        s = cv2.LUT(s, np.round(sat_lut).astype(np.uint8))
        img = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2BGR)
    mean = float(np.mean(cv2.mean(img)[:3]))
    lut = (levels - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    lut = lut + 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
    return cv2.LUT(img, np.round(np.clip(lut, 0, 255)).astype(np.uint8))


def random_blur(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Gaussian blur with probability ``cfg.blur_prob``."""
    if rng.random() >= cfg.blur_prob or cfg.blur_sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(rng.uniform(0.3, cfg.blur_sigma)))


def procedural_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random texture ``(size, size, 3)`` BGR uint8: smooth colour noise, a gradient and random shapes."""
    cells = int(rng.integers(2, 9))
    noise = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
    img = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    grad = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]  # (size, size)
    img = img + grad[..., None] * rng.uniform(-60, 60, size=3).astype(np.float32)
    fine = cv2.resize(rng.normal(0, 1, size=(size // 4 + 1, size // 4 + 1)).astype(np.float32), (size, size))
    img = img + fine[..., None] * rng.uniform(0, 25)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        p1 = tuple(int(c) for c in rng.integers(0, size, size=2))
        p2 = tuple(int(c) for c in rng.integers(0, size, size=2))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.line(img, p1, p2, colour, int(rng.integers(1, max(2, size // 20))))
        elif kind == 1:
            cv2.rectangle(img, p1, p2, colour, -1)
        else:
            cv2.circle(img, p1, int(rng.integers(2, max(3, size // 6))), colour, -1)
    return img


def fill_hand_hole(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace the hand pixels of ``image`` by a smooth fill of the surrounding background.

    Normalised convolution: a wide blur of the background pixels divided by the blur of
    the background indicator, so the hole takes the colours around it.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        mask: ``(H, W)`` uint8, > 127 on the hand.

    Returns:
        ``(H, W, 3)`` BGR uint8 with no hand.
    """
    H, W = mask.shape
    hole = cv2.dilate((mask > 127).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
    keep = 1.0 - hole
    # The fill is smooth, so compute it at 1/8 resolution (64x fewer pixels) and upsample.
    small = (max(1, W // 8), max(1, H // 8))
    num = cv2.resize(image.astype(np.float32) * keep[..., None], small, interpolation=cv2.INTER_AREA)
    den = cv2.resize(keep, small, interpolation=cv2.INTER_AREA)
    sigma = max(small) / 8.0
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)[..., None]
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), image.astype(np.float32).mean(axis=(0, 1)))
    fill = cv2.resize(fill.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    out = image.astype(np.float32) * keep[..., None] + fill * hole[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The hand of ``image`` (through the ``(H, W)`` uint8 ``mask``) over ``background``, both ``(H, W, 3)``.

    The mask edge is softened by one pixel so the cut-out does not leave a hard seam the
    network could learn.
    """
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 1.0)[..., None]
    out = image.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)
    return np.clip(out, 0, 255).astype(np.uint8)


def sample_crop_params(
    rng: np.random.Generator, cfg: AugmentConfig, side_px: float
) -> tuple[np.ndarray, float, float, bool]:
    """Random ``(shift_px (2,), zoom factor, angle_rad, flip)`` for a crop of ``side_px`` (identity when disabled)."""
    if not cfg.enabled:
        return np.zeros(2), 1.0, 0.0, False
    shift = rng.uniform(-cfg.shift, cfg.shift, size=2) * side_px
    zoom = math.exp(rng.uniform(-math.log(cfg.scale), math.log(cfg.scale))) if cfg.scale > 1 else 1.0
    angle = math.radians(rng.uniform(-cfg.rot_deg, cfg.rot_deg))
    flip = bool(rng.random() < cfg.flip_prob)
    return shift, zoom, angle, flip
