"""Training samples from FreiHAND-layout label folders: crops, augmentation, background replacement.

One :class:`HandCropDataset` reads one or several label folders (handanno's ``labels/`` or
the official FreiHAND download, see DESIGN.md) through
:func:`handanno.data.freihand_io.read_freihand` and serves square crops around the hand
with every label mapped into the crop (:mod:`handanno.data.augment` has the maths).
Heatmaps are *not* made here: the trainer renders them on its device from ``uv``, which
is cheaper than shipping ``21 x H x W`` maps through the loader.

Convention:
    - A sample is a dict of tensors (see :meth:`HandCropDataset.__getitem__`): ``image``
      ``(3, S, S)`` RGB uint8 (the trainer normalises it on its device with
      :func:`normalise_images`, ImageNet mean and std); ``uv`` ``(21, 2)``
      crop pixels; ``xyz`` ``(21, 3)`` metres in the crop camera's frame; ``K`` ``(3, 3)``
      the crop's intrinsics; ``side`` 0 = right, 1 = left; ``mano`` ``(61,)`` FreiHAND MANO
      numbers for the crop (``uv_root`` in crop pixels) or zeros with ``has_mano`` False;
      ``verts`` ``(778, 3)`` metres or zeros with ``has_verts`` False; ``crop_to_image``
      ``(2, 3)`` affine from crop pixels back to the label image's pixels; ``index``;
      ``vis`` ``(21,)`` 1.0 for keypoints to train on, 0.0 for those the labels mark as not
      seen (hidden by the hand or outside the image: index.json ``"visible"``).
    - The crop is centred on the bounding box of the projected keypoints, with side
      ``crop_pad`` times the box's larger side (then jittered when augmenting).
    - Label images are right hands (FreiHAND); a flip makes a left hand and sets ``side``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from handanno.data import augment as aug
from handanno.data.conventions import (
    NUM_BETAS,
    NUM_JOINTS,
    NUM_MANO_PARAMS_FREIHAND,
    NUM_POSE,
    NUM_VERTS,
    ROOT_KEYPOINT,
)
from handanno.data.freihand import root_uv_and_scale
from handanno.errors import HandannoError

logger = logging.getLogger(__name__)

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class DataConfig:
    """How samples are cropped and augmented.

    Attributes:
        crop_size: crop side ``S`` in pixels.
        crop_pad: crop side over the larger side of the keypoints' bounding box.
        load_images: False serves geometry only (no ``image``; the lifting network).
        load_verts: serve ``verts`` when the folder has them (the MANO regressor).
        versions: image versions of the official FreiHAND training set to use (``gs``,
            ``hom``, ``sample``, ``auto``); handanno's labels have only ``gs``.
        augment: the random augmentation (used only by training datasets).
        seed: base seed; a sample's randomness depends on (seed, epoch, index) only.
    """

    crop_size: int = 256
    crop_pad: float = 1.4
    load_images: bool = True
    load_verts: bool = False
    versions: tuple[str, ...] = ("gs",)
    augment: aug.AugmentConfig = field(default_factory=aug.AugmentConfig)
    seed: int = 0


def to_chw_rgb(image_bgr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` BGR uint8 to a ``(3, H, W)`` RGB uint8 tensor (what samples carry)."""
    return torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1].transpose(2, 0, 1)))


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB uint8 to float32, ImageNet-normalised, on the tensor's device.

    Samples carry uint8 so that the loader ships a quarter of the bytes and the
    normalisation runs on the accelerator.
    """
    mean = torch.as_tensor(IMAGENET_MEAN_RGB, device=images.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD_RGB, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def to_display(image: torch.Tensor) -> np.ndarray:
    """A sample's ``(3, H, W)`` RGB uint8 image as ``(H, W, 3)`` RGB uint8 numpy, for plots."""
    return image.detach().cpu().numpy().transpose(1, 2, 0).copy()


def project(K: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pinhole projection of ``(N, 3)`` camera-frame points with ``K (3, 3)`` to ``(N, 2)`` pixels."""
    p = xyz @ K.T
    return p[:, :2] / p[:, 2:3]


@dataclass(frozen=True)
class _Folder:
    """One label folder's arrays, checked (see :func:`_load_folder`)."""

    root: Path
    K: np.ndarray  # (N, 3, 3)
    xyz: np.ndarray  # (N, 21, 3) metres
    mano: np.ndarray | None  # (N, 61)
    verts: np.ndarray | None  # (N, 778, 3) metres
    side: np.ndarray  # (N,) 0 right, 1 left (from index.json; FreiHAND is all right hands)
    images: list[Path]  # V * N image files for V image versions; image i has labels i % N
    masks: list[Path] | None  # N mask files, or None
    groups: np.ndarray  # (N,) int64: samples of one capture instant (frame) share a group id
    visible: np.ndarray  # (N, 21) bool: keypoints to train on (index.json "visible"; all True without it)


def _load_folder(root: Path, split: str, versions: Sequence[str], load_verts: bool, need_images: bool) -> _Folder:
    """Read and check one label folder; errors name the file and the sample index."""
    from handanno.data.freihand_io import read_freihand

    labels = read_freihand(root, split=split, version="gs", check_images=need_images)
    if labels.xyz is None:
        raise HandannoError(f"{root}: {split}_xyz.json not found; training needs 3D keypoints")
    N = len(labels.K)
    K, xyz = labels.K, labels.xyz
    behind = (xyz[..., 2] <= 0).any(axis=1)
    if behind.any():
        i = int(np.flatnonzero(behind)[0])
        raise HandannoError(f"{root / f'{split}_xyz.json'}: sample {i} has keypoints behind the camera (z <= 0)")
    verts = None
    if load_verts and labels.verts is not None:
        verts = labels.verts.astype(np.float32)
    side = np.zeros(N, dtype=np.int64)
    if labels.index is not None:
        side = np.array([1 if str(e.get("hand", "right")) == "left" else 0 for e in labels.index], dtype=np.int64)
    images = list(labels.image_paths)
    if not labels.is_handanno and split == "training":  # the official download's other image versions
        for v in versions:
            if v != "gs":
                images += list(read_freihand(root, split, version=v, check_images=need_images).image_paths)
    masks = list(labels.mask_paths) if labels.mask_paths is not None else None
    groups = np.arange(N, dtype=np.int64)
    visible = np.ones((N, NUM_JOINTS), bool)
    if labels.index is not None:
        for i, e in enumerate(labels.index):
            if "visible" in e:
                v = np.asarray(e["visible"], bool)
                if v.shape != (NUM_JOINTS,):
                    raise HandannoError(f"{root / 'index.json'}: sample {i}: 'visible' must hold {NUM_JOINTS} flags")
                visible[i] = v
    if labels.index is not None:  # handanno labels: the cameras of one frame show the same pose
        frames = [str(e.get("frame", i)) for i, e in enumerate(labels.index)]
        _, groups = np.unique(np.array(frames), return_inverse=True)
    return _Folder(root=root, K=K, xyz=xyz, mano=labels.mano, verts=verts, side=side, images=images, masks=masks,
                   groups=groups.astype(np.int64), visible=visible)  # fmt: skip


class HandCropDataset(torch.utils.data.Dataset):
    """Crops around the hand from one or several FreiHAND-layout label folders.

    Args:
        roots: label folders (each holding ``training_K.json`` etc., or a session's ``labels/``).
        config: cropping and augmentation.
        train: augment (True) or serve the deterministic centred crop (False).
        split: ``"training"`` (or ``"evaluation"`` for the official FreiHAND evaluation set).
        indices: optional subset of global sample indices (for train/val splits).

    Raises:
        HandannoError: a folder is missing or malformed: mismatched list lengths, missing
            images, NaN labels; the message names the file and the sample index.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike],
        config: DataConfig,
        train: bool = True,
        split: str = "training",
        indices: Sequence[int] | None = None,
    ):
        if not roots:
            raise HandannoError("no label folder given: pass --labels DIR")
        self.config = config
        self.train = train
        self.epoch = 0
        self.folders = [
            _load_folder(Path(r), split, config.versions, config.load_verts, config.load_images) for r in roots
        ]
        # Global sample i -> (folder, image index); every image is a sample.
        counts = [len(f.images) if config.load_images else len(f.K) for f in self.folders]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.indices = np.arange(self._offsets[-1]) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise HandannoError(f"no samples in {', '.join(str(r) for r in roots)}")

    @property
    def num_total(self) -> int:
        """Samples over all folders, before any subset."""
        return int(self._offsets[-1])

    def group_ids(self) -> np.ndarray:
        """``(num_total,)`` group id of every sample: one group per (folder, frame).

        The image versions of one FreiHAND sample, and the camera views of one handanno
        frame, share a group, so a train/validation split never puts them on both sides.
        """
        out, offset = [], 0
        for f, folder in enumerate(self.folders):
            n_images = int(self._offsets[f + 1] - self._offsets[f])
            out.append(folder.groups[np.arange(n_images) % len(folder.K)] + offset)
            offset += int(folder.groups.max()) + 1 if len(folder.groups) else 0
        return np.concatenate(out)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call before each epoch; workers pick it up when they start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def _locate(self, g: int) -> tuple[_Folder, int, int]:
        f = int(np.searchsorted(self._offsets, g, side="right") - 1)
        folder = self.folders[f]
        image_idx = g - int(self._offsets[f])
        return folder, image_idx, image_idx % len(folder.K)

    def _read_image(self, path: Path, g: int) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise HandannoError(f"{path}: image of sample {g} is not readable (corrupt or unsupported)")
        return img

    def subset(self, indices: Sequence[int], train: bool) -> HandCropDataset:
        """The same folders restricted to global sample ``indices``, augmenting or not (no re-reading)."""
        other = copy.copy(self)
        other.indices = np.asarray(indices, dtype=np.int64)
        other.train = train
        return other

    def _read_mask(self, path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
        if path is None:
            return None
        m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if m is None or m.shape != shape:
            return None
        return m

    def _background(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Another sample's background (its hand filled in) or a procedural texture, ``(size, size, 3)``."""
        cfg = self.config.augment
        if rng.random() >= cfg.bg_procedural:
            g = int(rng.integers(0, self.num_total))
            folder, image_idx, label_idx = self._locate(g)
            img = cv2.imread(str(folder.images[image_idx]), cv2.IMREAD_COLOR)
            mask = None
            if img is not None and folder.masks is not None:
                mask = self._read_mask(folder.masks[label_idx], img.shape[:2])
            if img is not None and mask is not None:
                img = aug.fill_hand_hole(img, mask)
                H, W = img.shape[:2]
                side = min(H, W) * rng.uniform(0.5, 1.0)
                centre = np.array([rng.uniform(side / 2, W - side / 2), rng.uniform(side / 2, H - side / 2)])
                t = aug.crop_transform(centre, side, size, rng.uniform(-np.pi, np.pi), bool(rng.random() < 0.5))
                return aug.warp_image(img, t)
        return aug.procedural_background(size, rng)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One crop and its labels (module Convention lists the keys, shapes and units)."""
        cfg = self.config
        S = cfg.crop_size
        g = int(self.indices[i])
        folder, image_idx, li = self._locate(g)
        rng = np.random.default_rng([cfg.seed, self.epoch, g])
        do_aug = self.train and cfg.augment.enabled

        K, xyz = folder.K[li], folder.xyz[li]
        uv = project(K, xyz)  # (21, 2) label-image pixels
        centre, side = aug.box_crop_frame(aug.keypoint_box(uv), cfg.crop_pad)
        aug_cfg = cfg.augment if do_aug else aug.AugmentConfig(enabled=False)
        shift, zoom, angle, flip = aug.sample_crop_params(rng, aug_cfg, side)
        t = aug.crop_transform(centre + shift, side / zoom, S, angle, flip)

        uv_crop = aug.apply_affine(t.A, uv)
        xyz_crop = xyz @ t.T.T
        K_crop = aug.crop_intrinsics(K, t)
        sample: dict[str, Any] = {
            "uv": torch.from_numpy(uv_crop.astype(np.float32)),
            "xyz": torch.from_numpy(xyz_crop.astype(np.float32)),
            "K": torch.from_numpy(K_crop.astype(np.float32)),
            "side": torch.tensor(int(folder.side[li]) ^ int(flip), dtype=torch.long),
            "crop_to_image": torch.from_numpy(t.A_inv.astype(np.float32)),
            "index": torch.tensor(g, dtype=torch.long),
            "vis": torch.from_numpy(folder.visible[li].astype(np.float32)),
        }

        mano = np.zeros(NUM_MANO_PARAMS_FREIHAND)
        if folder.mano is not None:
            pose = aug.transform_mano_pose(folder.mano[li, :NUM_POSE], t)
            betas = folder.mano[li, NUM_POSE : NUM_POSE + NUM_BETAS]
            uv_root, scale = root_uv_and_scale(xyz_crop[ROOT_KEYPOINT], K_crop)  # FreiHAND's definition
            mano = np.concatenate([pose, betas, uv_root, [float(scale)]])
        sample["mano"] = torch.from_numpy(mano.astype(np.float32))
        sample["has_mano"] = torch.tensor(folder.mano is not None)
        if cfg.load_verts:
            has_verts = folder.verts is not None
            verts = folder.verts[li].astype(np.float64) @ t.T.T if has_verts else np.zeros((NUM_VERTS, 3))
            sample["verts"] = torch.from_numpy(verts.astype(np.float32))
            sample["has_verts"] = torch.tensor(has_verts)

        if cfg.load_images:
            img = self._read_image(folder.images[image_idx], g)
            mask = None
            if do_aug and folder.masks is not None and rng.random() < cfg.augment.bg_prob:
                mask = self._read_mask(folder.masks[li], img.shape[:2])
            crop = aug.warp_image(img, t)
            if mask is not None:
                crop_mask = aug.warp_image(mask, t)
                crop = aug.composite(crop, crop_mask, self._background(rng, S))
            if do_aug:
                crop = aug.colour_jitter(crop, rng, cfg.augment)
                crop = aug.random_blur(crop, rng, cfg.augment)
            sample["image"] = to_chw_rgb(crop)
        return sample


def split_indices(
    n: int, val_fraction: float, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``n`` sample indices, whole groups at a time.

    Args:
        n: number of samples.
        val_fraction: share of the groups held out (at least one group when there are two or more).
        seed: random seed.
        groups: optional ``(n,)`` group id per sample (:meth:`HandCropDataset.group_ids`);
            default: every sample its own group.

    Returns:
        sorted training and validation indices.
    """
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_val = 0 if len(uniq) < 2 or val_fraction <= 0 else max(1, int(round(len(uniq) * val_fraction)))
    val_groups = rng.permutation(uniq)[:n_val]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
