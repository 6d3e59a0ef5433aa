"""How far a calibrated rig is from a reference rig (the truth of a synthetic capture).

Convention:
    Both rigs map world to camera (``x_cam = R @ x_world + t``, metres). Their world frames
    may differ, so both are first expressed in the frame of the reference camera
    (``world = cam0``): ``R' = R_c R_ref^T``, ``t' = t_c - R' t_ref``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handanno.calibration.camera import CameraRig
from handanno.errors import HandannoError


@dataclass(frozen=True)
class RigErrors:
    """Per-camera errors of an estimated rig against a reference, and their maxima.

    Attributes:
        focal_pct: ``(C,)`` ``|f_est / f_true - 1|`` in percent (worse of fx, fy).
        principal_px: ``(C,)`` principal point distance, pixels.
        rotation_deg: ``(C,)`` angle of ``R_est R_true^T``, degrees.
        centre_mm: ``(C,)`` camera centre distance, millimetres.
    """

    cameras: tuple[str, ...]
    focal_pct: np.ndarray
    principal_px: np.ndarray
    rotation_deg: np.ndarray
    centre_mm: np.ndarray

    def summary(self) -> dict[str, float]:
        """Maxima over cameras."""
        return {"max_focal_pct": float(self.focal_pct.max()), "max_principal_px": float(self.principal_px.max()),
                "max_rotation_deg": float(self.rotation_deg.max()), "max_centre_mm": float(self.centre_mm.max())}


def _in_frame_of(rig: CameraRig, ref: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    R0, t0 = rig[ref].R, rig[ref].t
    out = {}
    for cam in rig:
        R = cam.R @ R0.T
        out[cam.name] = (R, cam.t - R @ t0)
    return out


def compare_rigs(estimated: CameraRig, truth: CameraRig, reference: str | None = None) -> RigErrors:
    """Errors of ``estimated`` against ``truth`` over the cameras they share.

    Args:
        estimated: the calibrated rig.
        truth: the reference rig.
        reference: the camera whose frame both are compared in (default: the first shared).
    """
    names = [n for n in truth.names if n in estimated.names]
    if not names:
        raise HandannoError("the two rigs share no camera name")
    ref = reference or names[0]
    est_p, tru_p = _in_frame_of(estimated, ref), _in_frame_of(truth, ref)
    f, pp, rot, ctr = [], [], [], []
    for n in names:
        ke, kt = estimated[n].K, truth[n].K
        f.append(100 * max(abs(ke[0, 0] / kt[0, 0] - 1), abs(ke[1, 1] / kt[1, 1] - 1)))
        pp.append(float(np.linalg.norm(ke[:2, 2] - kt[:2, 2])))
        (Re, te), (Rt, tt) = est_p[n], tru_p[n]
        cos = np.clip((np.trace(Re @ Rt.T) - 1) / 2, -1.0, 1.0)
        rot.append(float(np.degrees(np.arccos(cos))))
        ctr.append(1000 * float(np.linalg.norm(-Re.T @ te + Rt.T @ tt)))
    return RigErrors(tuple(names), np.array(f), np.array(pp), np.array(rot), np.array(ctr))
