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
from handanno.models.checkpoints import load_task, train_config_from_dict
from handanno.models.nets.tasks import Task


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
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", flip_test: bool | None = None
    ) -> CPMDetector:
        """Load a ``cpm`` (or ``unet``) checkpoint written by ``handanno train``.

        Args:
            path: the checkpoint.
            device: where to run it.
            flip_test: average each crop's maps with its mirror image's (twice the time);
                None: as the checkpoint's config says.

        Raises:
            HandannoError: missing or corrupted file, or a checkpoint of another model type.
        """
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        task, ckpt = load_task(path, dev, expected_kind=("cpm", "unet"))
        if flip_test is not None:
            task.set_flip_test(flip_test)  # type: ignore[attr-defined]
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
                centre, side = aug.box_crop_frame(boxes[i], self.crop_pad)  # the training crops' framing
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

    def detect_in_box(self, image_bgr: np.ndarray, box: np.ndarray, refine_iters: int = 1) -> np.ndarray:
        """``(21, 3)`` ``[u, v, conf]`` keypoints of the hand expected in ``box``, full-image pixels.

        One crop framed on ``box`` (``[x0, y0, x1, y1]``, the hand's tight box, e.g. a fit's
        projection), then ``refine_iters`` crops framed on the previous pass's keypoints.
        """
        kp = self.detect([image_bgr], np.asarray(box, np.float64).reshape(1, 4))[0]
        for _ in range(refine_iters):
            kp = self.detect([image_bgr], aug.keypoint_box(kp)[None])[0]
        return kp


# --------------------------------------------------------------------------- finding and tracking the hand


def search_boxes(width: int, height: int, crop_pad: float = 1.4, min_crop_px: float = 96.0, step: float = 1.5,
                 overlap: float = 0.5) -> np.ndarray:  # fmt: skip
    """Hand boxes whose padded crops tile an image at several scales (the first, full-image pass).

    The detector frames a box as a square crop of ``crop_pad`` times the box's larger side, the
    framing it was trained on; a hand far smaller than the image is found by trying crops of
    side ``max(W, H)``, ``max(W, H) / step``, ... down to ``min_crop_px``, each scale's crops
    overlapping by ``overlap`` of their side, and keeping the crop the network is surest of.

    Args:
        width: image width ``W``, pixels.
        height: image height ``H``, pixels.
        crop_pad: the detector's crop side over the box side.
        min_crop_px: smallest crop side tried, pixels.
        step: ratio between successive crop sides (within the training zoom range, 1.25).
        overlap: overlap of neighbouring crops, fraction of their side.

    Returns:
        ``(N, 4)`` float64 ``[x0, y0, x1, y1]`` boxes (square, side = crop side / ``crop_pad``).

    Example:
        >>> b = search_boxes(640, 480)  # crops of 640, 427, 284, 190 and 126 pixels
        >>> len(b), sorted({round(float(s)) for s in 1.4 * (b[:, 2] - b[:, 0])}, reverse=True)
        (117, [640, 427, 284, 190, 126])
    """
    boxes = []
    side = float(max(width, height))
    while True:
        stride = side * (1.0 - overlap)
        centres = []
        for extent in (width, height):
            n = max(1, int(np.ceil((extent - side) / stride - 1e-9)) + 1) if side < extent else 1
            lo, hi = side / 2.0, extent - side / 2.0
            centres.append(np.linspace(lo, hi, n) if n > 1 else np.array([(extent - 1) / 2.0]))
        half = side / crop_pad / 2.0
        for cy in centres[1]:
            for cx in centres[0]:
                boxes.append([cx - half, cy - half, cx + half, cy + half])
        side /= step
        if side < min_crop_px:
            break
    return np.asarray(boxes, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class TrackSettings:
    """How :class:`HandTracker` finds and follows the hand.

    Attributes:
        min_mean_conf: mean heatmap peak over the 21 keypoints below which the hand counts as
            not found in the view (no keypoints are written for it).
        refine_iters: passes that re-crop around the last pass's keypoints.
        min_crop_px: smallest crop side of the full-image search, pixels.
        search_step: ratio between the search's crop sides.
    """

    min_mean_conf: float = 0.3
    refine_iters: int = 2
    min_crop_px: float = 96.0
    search_step: float = 1.5


class HandTracker:
    """Coarse-to-fine hand keypoints per camera with a heatmap network: search, refine, track.

    The first frame of a camera (or one after the hand was lost) searches the whole image
    (:func:`search_boxes`) and keeps the crop with the highest mean keypoint confidence; each
    frame then re-crops around its own keypoints ``refine_iters`` times. The next frame of the
    same camera starts from this frame's keypoint box, so the search runs once per camera.

    Args:
        detector: a :class:`CPMDetector` (anything with ``detect(images, boxes)`` and ``crop_pad``).
        settings: the :class:`TrackSettings`.
    """

    def __init__(self, detector: CPMDetector, settings: TrackSettings = TrackSettings()):
        self.detector = detector
        self.settings = settings
        self._last_box: dict[str, np.ndarray] = {}
        self.searches = 0

    def _search(self, image: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        boxes = search_boxes(W, H, self.detector.crop_pad, self.settings.min_crop_px, self.settings.search_step)
        kp = self.detector.detect([image] * len(boxes), boxes)  # (N, 21, 3)
        self.searches += 1
        return kp[int(np.argmax(kp[:, :, 2].mean(axis=1)))]

    def _refine(self, image: np.ndarray, kp: np.ndarray) -> np.ndarray:
        for _ in range(self.settings.refine_iters):
            kp = self.detector.detect([image], aug.keypoint_box(kp)[None])[0]
        return kp

    def __call__(self, image: np.ndarray, camera: str = "") -> np.ndarray | None:
        """``(21, 3)`` ``[u, v, conf]`` image-pixel keypoints of the hand in ``image``, or None if not found.

        Args:
            image: ``(H, W, 3)`` BGR uint8.
            camera: which camera the image is from (tracking is per camera; frames in order).
        """
        ok = self.settings.min_mean_conf
        kp = None
        if camera in self._last_box:
            kp = self._refine(image, self.detector.detect([image], self._last_box[camera][None])[0])
            if kp[:, 2].mean() < ok:
                kp = None
        if kp is None:
            kp = self._refine(image, self._search(image))
        if kp[:, 2].mean() < ok:
            self._last_box.pop(camera, None)
            return None
        self._last_box[camera] = aug.keypoint_box(kp)
        return kp

    def detect_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """A :data:`handanno.annotate.detect.BoxDetector`: the hand expected in ``box``, or None if not found.

        Detects in ``box`` (``[x0, y0, x1, y1]`` pixels), refines once around the result
        (as :meth:`CPMDetector.detect_in_box`); None when the mean confidence is under
        ``min_mean_conf``. No search, and the per-camera tracking is left as it was.
        """
        kp = self.detector.detect([image], np.asarray(box, np.float64).reshape(1, 4))[0]
        kp = self.detector.detect([image], aug.keypoint_box(kp)[None])[0]
        return None if kp[:, 2].mean() < self.settings.min_mean_conf else kp
