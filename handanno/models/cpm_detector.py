"""2D hand keypoint detection with a trained heatmap network (``cpm``, or a ``unet``), for the fitter.

Usage::

    det = CPMDetector.from_checkpoint("runs/cpm/best.pt", device="cuda")
    kp = det.detect([img0, img1], boxes=np.array([[x0, y0, x1, y1], [...]]))  # (2, 21, 3)

Convention:
    - Images are ``(H, W, 3)`` BGR uint8 (OpenCV); output keypoints are ``[u, v, conf]`` in
      full-image pixels (pixel (0, 0) = centre of the top-left pixel), FreiHAND order.
    - ``boxes`` are ``(N, 4)`` ``[x0, y0, x1, y1]`` pixels: the hand's tight bounding box
      (e.g. of its keypoints or mask). The detector crops a square around the box centre
      with side ``crop_pad`` (the training value, 1.4 by default) times the box's larger
      side, the same framing the network was trained on. Without boxes, each whole image
      is the crop (a square of side ``max(H, W)`` around its centre), as for FreiHAND's
      224x224 hand crops.
    - ``conf`` is the heatmap value at the peak, clamped to ``[0, 1]`` (targets have peak 1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import torch

from handanno.check import check_shape
from handanno.data import augment as aug
from handanno.data.datasets import to_chw_rgb
from handanno.device import resolve_device
from handanno.errors import HandannoError
from handanno.models.nets.tasks import Task
from handanno.models.train import load_task, train_config_from_dict


@dataclasses.dataclass
class CPMDetector:
    """A loaded heatmap network and how to frame its crops.

    Attributes:
        task: the ``cpm`` or ``unet`` task (model in eval mode).
        device: where the model runs.
        crop_pad: crop side over the box's larger side.
        batch_size: crops per forward pass.
    """

    task: Task
    device: torch.device
    crop_pad: float = 1.4
    batch_size: int = 16

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> CPMDetector:
        """Load a ``cpm`` (or ``unet``) checkpoint written by ``handanno train``.

        Raises:
            HandannoError: missing or corrupted file, or a checkpoint of another model type.
        """
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        task, ckpt = load_task(path, dev, expected_kind=("cpm", "unet"))
        pad = 1.4
        if ckpt.get("train_config"):
            pad = train_config_from_dict(ckpt["train_config"]).data.crop_pad
        return cls(task=task, device=dev, crop_pad=float(pad))

    def _crops(self, images: Sequence[np.ndarray], boxes: np.ndarray | None) -> tuple[torch.Tensor, np.ndarray]:
        S = self.task.config.crop_size
        crops, inverses = [], []
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise HandannoError(f"image {i} must be (H, W, 3) BGR uint8, got {img.shape} {img.dtype}")
            H, W = img.shape[:2]
            if boxes is None:
                centre, side = np.array([(W - 1) / 2.0, (H - 1) / 2.0]), float(max(H, W))
            else:
                x0, y0, x1, y1 = boxes[i]
                centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
                side = max(float(x1 - x0), float(y1 - y0), 1.0) * self.crop_pad
            t = aug.crop_transform(centre, side, S)
            crops.append(to_chw_rgb(aug.warp_image(img, t)))
            inverses.append(t.A_inv)
        return torch.stack(crops), np.stack(inverses)

    @torch.no_grad()
    def detect(self, images_bgr: Sequence[np.ndarray], boxes: np.ndarray | None = None) -> np.ndarray:
        """Keypoints ``(N, 21, 3)`` ``[u, v, conf]`` in full-image pixels for ``N`` images.

        Args:
            images_bgr: ``N`` images, ``(H, W, 3)`` BGR uint8 (sizes may differ).
            boxes: optional ``(N, 4)`` ``[x0, y0, x1, y1]`` hand boxes, one per image.

        Returns:
            ``(N, 21, 3)`` float64.
        """
        N = len(images_bgr)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64)
            check_shape(boxes, (N, 4), "boxes")
            if not np.all(np.isfinite(boxes)):
                raise HandannoError("boxes hold NaN or inf")
        out = np.zeros((N, 21, 3))
        for start in range(0, N, self.batch_size):
            sl = slice(start, min(start + self.batch_size, N))
            crops, inv = self._crops(images_bgr[sl], None if boxes is None else boxes[sl])
            maps = self.task.forward(self.task.model, {"image": crops.to(self.device)}, train=False)
            uv, conf = self.task.decode(maps)  # crop pixels, (B, 21, 2) and (B, 21)
            uv = uv.cpu().double().numpy()
            uv_img = np.einsum("bij,bkj->bki", inv[:, :, :2], uv) + inv[:, None, :, 2]  # (B, 21, 2)
            out[sl, :, :2] = uv_img
            out[sl, :, 2] = conf.cpu().double().numpy()
        return out
