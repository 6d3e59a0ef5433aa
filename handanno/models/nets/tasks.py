"""What each trainable model does with a batch: forward, loss, predictions and metrics.

A :class:`Task` binds one network (``cpm``, ``unet``, ``mano``, ``lift``) to the dataset's
batches (:mod:`handanno.data.datasets`), so the training loop and the evaluator stay
model-agnostic. Metrics come from :mod:`handanno.data.metrics`.

Convention:
    - 2D errors are reported in pixels of the *label images* (FreiHAND's 224x224 crops):
      predictions in crop pixels are mapped back with each sample's ``crop_to_image``, so
      models with different input sizes are compared on the same scale. PCK@0.2 uses the
      larger side of the ground-truth keypoints' bounding box as the normaliser (DESIGN.md).
    - 3D errors are in millimetres. ``mano`` reports FreiHAND's MPJPE / PA-MPJPE in the
      camera frame and a root-relative MPJPE (root = keypoint 9, FreiHAND's root);
      ``lift`` reports the root-relative error (root = keypoint 0, the wrist, as hand3d),
      with the predicted unitless shape scaled by the ground-truth bone length ``|xyz9 - xyz10|``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from handanno.data import metrics as M
from handanno.data.conventions import NUM_BETAS, NUM_POSE, ROOT_KEYPOINT
from handanno.data.datasets import DataConfig, normalise_images
from handanno.errors import HandannoError
from handanno.models.heatmaps import (
    crop_to_heatmap,
    decode_heatmaps,
    heatmap_loss,
    heatmap_to_crop,
    mirror_averaged,
    render_gaussian_heatmaps,
)
from handanno.models.nets.cpm import CPM, CPMConfig
from handanno.models.nets.lift import Lift, LiftConfig, canonical_frame, flip_left, normalise_root_relative
from handanno.models.nets.mano_regressor import (
    ManoRegressor,
    ManoRegressorConfig,
    root_from_uv_scale,
    uv_scale_from_root,
)
from handanno.models.nets.unet import UNet, UNetConfig

PCK_ALPHA = 0.2
NORMALISER_TEXT = "larger side of the ground-truth keypoints' bounding box"


def _to_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _apply_affine_t(A: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` affine maps applied to ``(B, J, 2)`` points."""
    return uv @ A[:, :, :2].transpose(1, 2) + A[:, None, :, 2]


def _metrics_2d(pred_img: np.ndarray, gt_img: np.ndarray) -> dict[str, Any]:
    pck = M.pck_2d(pred_img, gt_img, alpha=PCK_ALPHA)
    thresholds = np.linspace(0.0, 0.5, 26)
    norm = pck.normaliser_px
    err_rel = np.linalg.norm(pred_img - gt_img, axis=-1) / np.where(norm > 0, norm, 1.0)[:, None]  # (B, J)
    return {
        "epe_px": M.epe_2d(pred_img, gt_img),
        "pck@0.2": pck.pck,
        "pck_normaliser": NORMALISER_TEXT,
        "normaliser_px_mean": float(np.nanmean(norm)),
        "auc_2d": M.auc_2d(pred_img, gt_img),
        "auc_2d_thresholds_px": [float(M.AUC_2D_THRESHOLDS_PX[0]), float(M.AUC_2D_THRESHOLDS_PX[-1])],
        "pck_curve": {"alpha": thresholds.tolist(), "pck": [float((err_rel <= a).mean()) for a in thresholds]},
    }


class Task:
    """Base class: a model plus how it meets the data. Subclasses set the class attributes.

    Attributes:
        kind: the model type name.
        primary_metric: the validation metric for early stopping and "best" checkpoints.
        higher_is_better: direction of ``primary_metric``.
    """

    kind = ""
    primary_metric = ""
    higher_is_better = True
    config_cls: type = object

    def __init__(self, config: Any):
        self.config = config
        self.model: nn.Module = self.build_model()

    def build_model(self) -> nn.Module:
        """Construct the network from ``self.config``."""
        raise NotImplementedError

    def data_config(self, base: DataConfig) -> DataConfig:
        """The dataset settings this model needs (crop size, what to load)."""
        raise NotImplementedError

    def to(self, device: torch.device) -> Task:
        """Move the model (and any buffers the task holds) to ``device``."""
        self.model.to(device)
        return self

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> Any:
        """Run ``model`` (this task's network, possibly DDP-wrapped) on a device batch."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss and its named parts (floats, for logging)."""
        raise NotImplementedError

    def collect(self, outputs: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Predictions and ground truth of a batch as numpy arrays (concatenated over batches by the caller)."""
        raise NotImplementedError

    def metrics(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        """Validation / evaluation metrics from the concatenated :meth:`collect` output."""
        raise NotImplementedError


# --------------------------------------------------------------------------- heatmap models


class _HeatmapTask(Task):
    primary_metric = "pck@0.2"
    higher_is_better = True

    @override
    def data_config(self, base: DataConfig) -> DataConfig:
        return dataclasses.replace(base, crop_size=self.config.crop_size, load_images=True, load_verts=False)

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Gaussian target maps ``(B, J, h, h)`` rendered on the batch's device."""
        h = self.config.heatmap_size
        uv_hm = crop_to_heatmap(batch["uv"].float(), self.config.crop_size, h)
        return render_gaussian_heatmaps(uv_hm, (h, h), self.config.sigma_px)

    def final_maps(self, outputs: Any) -> torch.Tensor:
        """The prediction's heatmaps ``(B, J, h, h)``."""
        return outputs[-1] if isinstance(outputs, list) else outputs

    def decode(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-pixel keypoints ``(B, J, 2)`` and confidences ``(B, J)``."""
        uv_hm, conf = decode_heatmaps(self.final_maps(outputs).float(), self.config.decode)
        return heatmap_to_crop(uv_hm, self.config.crop_size, self.config.heatmap_size), conf

    def set_flip_test(self, on: bool) -> None:
        """Switch the flip test (see the model config's ``flip_test``) on or off for evaluation."""
        self.config = dataclasses.replace(self.config, flip_test=bool(on))

    @override
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> Any:
        images = normalise_images(batch["image"])
        if self.config.flip_test and not train:
            return mirror_averaged(model, images)
        return model(images)

    @override
    def collect(self, outputs: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        uv, conf = self.decode(outputs)
        A = batch["crop_to_image"].float()
        return {
            "pred_uv_img": _to_np(_apply_affine_t(A, uv)),
            "gt_uv_img": _to_np(_apply_affine_t(A, batch["uv"].float())),
            "pred_uv_crop": _to_np(uv),
            "gt_uv_crop": _to_np(batch["uv"].float()),
            "conf": _to_np(conf),
        }

    @override
    def metrics(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        out = _metrics_2d(collected["pred_uv_img"], collected["gt_uv_img"])
        if "pred_uv_crop" in collected:
            # The same error in the model's input crop (side crop_size, framing crop_pad x the hand's
            # box) and rescaled to a 128x128 crop of that framing: comparable across input sizes.
            epe_crop = M.epe_2d(collected["pred_uv_crop"], collected["gt_uv_crop"])
            out["epe_crop_px"] = epe_crop
            out["crop_size_px"] = int(self.config.crop_size)
            out["epe_128_px"] = epe_crop * 128.0 / float(self.config.crop_size)
        out["num_samples"] = int(len(collected["gt_uv_img"]))
        return out


class CPMTask(_HeatmapTask):
    """hand3d's PoseNet; loss summed over the stages (intermediate supervision)."""

    kind = "cpm"
    config_cls = CPMConfig

    @override
    def build_model(self) -> nn.Module:
        return CPM(self.config)

    @override
    def loss(
        self, outputs: list[torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.targets(batch)
        parts = [heatmap_loss(o.float(), target, self.config.loss, batch.get("vis")) for o in outputs]
        total = torch.stack(parts).sum()
        return total, {f"stage{i + 1}": float(p.detach()) for i, p in enumerate(parts)}


class UNetTask(_HeatmapTask):
    """U-Net at the crop's resolution, Adaptive Wing loss by default."""

    kind = "unet"
    config_cls = UNetConfig

    @override
    def build_model(self) -> nn.Module:
        return UNet(self.config)

    @override
    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = heatmap_loss(outputs.float(), self.targets(batch), self.config.loss, batch.get("vis"))
        return total, {self.config.loss: float(total.detach())}


# --------------------------------------------------------------------------- MANO regressor


class ManoTask(Task):
    """ResNet regressor of the FreiHAND MANO vector, supervised through the hand model layer.

    Args:
        config: the regressor's settings.
        hand_layers: ``{"right": ManoLayer, "left": ManoLayer}``; the left layer is needed
            only when flipped (left) samples occur. Built from
            :func:`handanno.handmodel.model_io.load_hand_model` when None.
        model_dir: the MANO folder for that loader (None: ``$HANDANNO_MODEL_DIR`` or the open model).
    """

    kind = "mano"
    config_cls = ManoRegressorConfig
    primary_metric = "rr_mpjpe_mm"
    higher_is_better = False

    def __init__(
        self, config: ManoRegressorConfig, hand_layers: dict[str, nn.Module] | None = None, model_dir: str | None = None
    ):
        super().__init__(config)
        if hand_layers is None:
            from handanno.handmodel.mano import ManoLayer
            from handanno.handmodel.model_io import load_hand_model

            hand_layers = {side: ManoLayer(load_hand_model(side, model_dir)) for side in ("right", "left")}
        self.hand_layers = hand_layers

    @override
    def build_model(self) -> nn.Module:
        return ManoRegressor(self.config)

    def hand_model_info(self) -> dict[str, Any]:
        """Name of the hand model the losses used (stored in checkpoints)."""
        right = self.hand_layers.get("right")
        return {"name": getattr(right, "name", None), "is_mano": bool(getattr(right, "is_mano", False))}

    @override
    def data_config(self, base: DataConfig) -> DataConfig:
        return dataclasses.replace(base, crop_size=self.config.crop_size, load_images=True, load_verts=True)

    @override
    def to(self, device: torch.device) -> Task:
        self.model.to(device)
        for layer in self.hand_layers.values():
            layer.to(device)
        return self

    @override
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        return model(normalise_images(batch["image"]))

    def _unwrapped(self) -> ManoRegressor:
        return self.model  # type: ignore[return-value]

    def hand(self, pose: torch.Tensor, betas: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints ``(B, 21, 3)`` and vertices ``(B, V, 3)`` relative to keypoint 9, in metres.

        Each sample goes through the layer of its side (``side`` ``(B,)``: 0 right, 1 left).
        """
        B = pose.shape[0]
        joints = pose.new_zeros(B, 21, 3)
        verts: torch.Tensor | None = None
        for s, name in ((0, "right"), (1, "left")):
            sel = side == s
            if not bool(sel.any()):
                continue
            layer = self.hand_layers.get(name)
            if layer is None:
                raise HandannoError(f"a {name} hand model is needed for flipped samples; pass both hand models")
            out = layer(pose[sel], betas[sel], pose.new_zeros(int(sel.sum()), 3))
            root = out.joints[:, ROOT_KEYPOINT : ROOT_KEYPOINT + 1]
            joints[sel] = out.joints - root
            if verts is None:
                verts = pose.new_zeros(B, out.vertices.shape[1], 3)
            verts[sel] = out.vertices - root
        assert verts is not None
        return joints, verts

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Camera-frame keypoints ``xyz (B, 21, 3)`` and ``verts (B, V, 3)`` (metres), crop ``uv (B, 21, 2)``."""
        pred = self._unwrapped().decode(outputs.float())
        K = batch["K"].float()
        root = root_from_uv_scale(pred.uv_root, pred.scale, K)  # (B, 3)
        joints_rel, verts_rel = self.hand(pred.pose, pred.betas, batch["side"])
        xyz = joints_rel + root[:, None]
        verts = verts_rel + root[:, None]
        p = xyz @ K.transpose(1, 2)
        uv = p[..., :2] / p[..., 2:3].clamp(min=1e-6)
        return {
            "xyz": xyz,
            "verts": verts,
            "uv": uv,
            "pose": pred.pose,
            "betas": pred.betas,
            "uv_root": pred.uv_root,
            "scale": pred.scale,
        }

    @override
    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        outputs = outputs.float()
        net = self._unwrapped()
        pred = net.decode(outputs)
        S = float(cfg.crop_size)
        parts: dict[str, torch.Tensor] = {}
        has_mano = batch["has_mano"].float()  # (B,)
        gt = batch["mano"].float()
        n_mano = has_mano.sum().clamp(min=1.0)
        if cfg.w_pose:
            parts["pose"] = (((pred.pose - gt[:, :NUM_POSE]) ** 2).mean(1) * has_mano).sum() / n_mano
        if cfg.w_betas:
            err_betas = ((pred.betas - gt[:, NUM_POSE : NUM_POSE + NUM_BETAS]) ** 2).mean(1)
            parts["betas"] = (err_betas * has_mano).sum() / n_mano
        # The root from the ground-truth keypoints (present whether or not the MANO vector is).
        xyz_gt = batch["xyz"].float()
        uv_root_gt, scale_gt = uv_scale_from_root(xyz_gt[:, ROOT_KEYPOINT], batch["K"].float())
        if cfg.w_root:
            root_raw = outputs[:, NUM_POSE + NUM_BETAS :]
            parts["root"] = F.mse_loss(root_raw, net.root_targets(uv_root_gt, scale_gt))
        pr = self.predict(outputs, batch)
        root_gt = xyz_gt[:, ROOT_KEYPOINT : ROOT_KEYPOINT + 1]
        rel_pred = pr["xyz"] - pr["xyz"][:, ROOT_KEYPOINT : ROOT_KEYPOINT + 1]
        if cfg.w_joints:
            parts["joints"] = (rel_pred - (xyz_gt - root_gt)).abs().mean()
        if cfg.w_verts and "verts" in batch:
            has_v = batch["has_verts"].float()
            if bool(has_v.any()):
                v_rel = pr["verts"] - pr["xyz"][:, ROOT_KEYPOINT : ROOT_KEYPOINT + 1]
                err = (v_rel - (batch["verts"].float() - root_gt)).abs().mean(dim=(1, 2))
                parts["verts"] = (err * has_v).sum() / has_v.sum()
        if cfg.w_2d:
            parts["2d"] = ((pr["uv"] - batch["uv"].float()).abs() / S).mean()
        weights = {
            "pose": cfg.w_pose,
            "betas": cfg.w_betas,
            "root": cfg.w_root,
            "joints": cfg.w_joints,
            "verts": cfg.w_verts,
            "2d": cfg.w_2d,
        }
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}  # type: ignore[return-value]

    @override
    def collect(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        pr = self.predict(outputs, batch)
        A = batch["crop_to_image"].float()
        out = {
            "pred_xyz": _to_np(pr["xyz"]),
            "gt_xyz": _to_np(batch["xyz"]),
            "pred_uv_img": _to_np(_apply_affine_t(A, pr["uv"])),
            "gt_uv_img": _to_np(_apply_affine_t(A, batch["uv"].float())),
        }
        if "has_verts" in batch and bool(batch["has_verts"].all()):
            out["pred_verts"] = _to_np(pr["verts"])
            out["gt_verts"] = _to_np(batch["verts"])
        return out

    @override
    def metrics(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        pred, gt = collected["pred_xyz"], collected["gt_xyz"]
        have_verts = "pred_verts" in collected and len(collected["pred_verts"]) == len(gt)
        m3 = M.evaluate_3d(
            pred,
            gt,
            collected.get("pred_verts") if have_verts else None,
            collected.get("gt_verts") if have_verts else None,
        )
        r = ROOT_KEYPOINT
        out: dict[str, Any] = m3.to_dict()
        out["rr_mpjpe_mm"] = M.mpjpe(pred - pred[:, r : r + 1], gt - gt[:, r : r + 1])
        out["rr_root_keypoint"] = r
        out.update(_metrics_2d(collected["pred_uv_img"], collected["gt_uv_img"]))
        return out


# --------------------------------------------------------------------------- lifting


class LiftTask(Task):
    """hand3d's PosePrior + ViewPoint on Gaussian score maps rendered from the 2D keypoints."""

    kind = "lift"
    config_cls = LiftConfig
    primary_metric = "rr_epe_mm"
    higher_is_better = False

    @override
    def build_model(self) -> nn.Module:
        return Lift(self.config)

    @override
    def data_config(self, base: DataConfig) -> DataConfig:
        return dataclasses.replace(base, crop_size=self.config.crop_size, load_images=False, load_verts=False)

    def scoremaps(self, uv_crop: torch.Tensor, train: bool) -> torch.Tensor:
        """``(B, J, h, h)`` Gaussian maps from crop keypoints ``(B, J, 2)`` (noised when training)."""
        cfg = self.config
        if train and cfg.uv_noise_px > 0:
            uv_crop = uv_crop + cfg.uv_noise_px * torch.randn_like(uv_crop)
        h = cfg.heatmap_size
        return render_gaussian_heatmaps(crop_to_heatmap(uv_crop, cfg.crop_size, h), (h, h), cfg.sigma_px)

    @override
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> Any:
        maps = self.scoremaps(batch["uv"].float(), train)
        hand_side = F.one_hot(batch["side"], 2).to(maps.dtype)  # right = [1, 0], left = [0, 1]
        return model(maps, hand_side)

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``can (B, J, 3)`` (right-hand convention), ``R (B, 3, 3)``, ``rel (B, J, 3)`` unitless, ``bone (B,)`` m."""
        rel, bone = normalise_root_relative(batch["xyz"].float())
        can, R = canonical_frame(rel)
        return flip_left(can, batch["side"]), R, rel, bone

    @override
    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        can, R, _, _ = self.targets(batch)
        l_can = F.mse_loss(outputs.coords_can.float(), can)
        l_rot = F.mse_loss(outputs.rot.float(), R)
        return l_can + self.config.w_rot * l_rot, {"can": float(l_can.detach()), "rot": float(l_rot.detach())}

    @override
    def collect(self, outputs: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        _, _, rel, bone = self.targets(batch)
        rel_pred = Lift.root_relative(outputs, batch["side"])
        return {"pred_rel_m": _to_np(rel_pred * bone[:, None, None]), "gt_rel_m": _to_np(rel * bone[:, None, None])}

    @override
    def metrics(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        pred, gt = collected["pred_rel_m"], collected["gt_rel_m"]
        err = M.joint_errors_mm(pred, gt)
        return {
            "rr_epe_mm": M.mpjpe(pred, gt),
            "rr_epe_median_mm": float(np.median(err)),
            "rr_root_keypoint": 0,
            "rr_scale": "ground-truth bone length |xyz9 - xyz10|",
            "pa_mpjpe_mm": M.pa_mpjpe(pred, gt),
            "auc_3d": M.auc_3d(err),
            "num_samples": int(len(gt)),
        }


TASKS: dict[str, type[Task]] = {t.kind: t for t in (CPMTask, UNetTask, ManoTask, LiftTask)}
MODEL_KINDS = tuple(TASKS)


def make_task(kind: str, model_config: dict[str, Any] | Any | None = None, **kwargs: Any) -> Task:
    """Build the task for ``kind`` from a config dataclass, a dict of its fields, or defaults.

    Raises:
        HandannoError: unknown ``kind`` or config fields.
    """
    if kind not in TASKS:
        raise HandannoError(f"unknown model type {kind!r}; use one of {', '.join(MODEL_KINDS)}")
    cls = TASKS[kind]
    if model_config is None:
        cfg = cls.config_cls()
    elif isinstance(model_config, dict):
        try:
            cfg = cls.config_cls(**model_config)
        except (TypeError, ValueError) as exc:
            raise HandannoError(f"model config does not fit a {kind} model: {exc}") from exc
    else:
        cfg = model_config
    return cls(cfg, **kwargs)
