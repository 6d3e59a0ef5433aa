"""One row of the bootstrap's table: how well a session's detections and fits hold together.

Every figure but the last group needs no ground truth, so the loop can judge a round on a
real capture:

- ``views_found``: views with a detected hand (at least 4 keypoints with ``conf >=
  min_keypoint_conf``) among ``views_total``;
- ``consistency_px``: multi-view consistency, the median over detected keypoints of the
  distance between the detection and the reprojection of the keypoint's robust
  triangulation from every view (outlier views included, so a view that disagrees raises it);
- ``frames_accepted`` of ``frames_total``; ``fit_reproj_px`` and ``fit_mask_iou``: the mean
  over fitted frames of the median over views of the fit's keypoint error and mask IoU;

and, where the session has ``ground_truth/`` (synthetic captures): ``epe_px`` and
``epe_median_px`` of the detected keypoints against the projected true keypoints, and the
fits' ``mpjpe_mm`` / ``pa_mpvpe_mm`` (:func:`handanno.annotate.quality.evaluate_against_ground_truth`).
"""

from __future__ import annotations

import numpy as np

from handanno.annotate.quality import evaluate_against_ground_truth
from handanno.annotate.session_io import Session, read_session_keypoints, readable_fit
from handanno.annotate.triangulate import triangulate_frames
from handanno.handmodel.mano import ManoLayer

MIN_KEYPOINTS = 4  # a view with fewer confident keypoints counts as "hand not found"


def views_found(kp: np.ndarray, min_keypoint_conf: float = 0.2) -> np.ndarray:
    """``(F, C)`` bool from ``(F, C, 21, 3)`` keypoints: the view has at least 4 confident keypoints."""
    return (kp[..., 2] >= min_keypoint_conf).sum(axis=-1) >= MIN_KEYPOINTS


def consistency_errors(session: Session, kp: np.ndarray, min_keypoint_conf: float = 0.2) -> np.ndarray:
    """Distances (px) of every confident detected keypoint to the reprojection of its robust triangulation.

    Args:
        session: the session (its rig).
        kp: ``(F, C, 21, 3)`` keypoints ``[u, v, conf]``.
        min_keypoint_conf: keypoints under it are left out.

    Returns:
        ``(N,)`` float64 pixels, over frames seen in two views or more.
    """
    found = views_found(kp, min_keypoint_conf)
    frames = np.flatnonzero(found.sum(axis=1) >= 2)
    if len(frames) == 0:
        return np.zeros(0)
    tri = triangulate_frames(session.rig, kp[frames], min_keypoint_conf).joints3d  # (F', 21, 3)
    errs = []
    for c, cam in enumerate(session.rig):
        uv = cam.project(tri.reshape(-1, 3)).reshape(len(frames), 21, 2)
        det = kp[frames, c]
        ok = (det[..., 2] >= min_keypoint_conf) & np.isfinite(uv).all(-1) & found[frames, c][:, None]
        errs.append(np.linalg.norm(uv[ok] - det[ok][:, :2], axis=1))
    return np.concatenate(errs)


def detection_errors(session: Session, kp: np.ndarray, min_keypoint_conf: float = 0.2) -> np.ndarray | None:
    """Distances (px) of detected keypoints to the projected true keypoints (``ground_truth/``), or None."""
    errs = []
    for b, frame in enumerate(session.frames):
        gt = readable_fit(session.fit_path(frame, "ground_truth"))
        if gt is None:
            return None
        joints = np.asarray(gt["joints"], np.float64)
        for c, cam in enumerate(session.rig):
            det = kp[b, c]
            ok = det[:, 2] >= min_keypoint_conf
            if ok.sum() >= MIN_KEYPOINTS:
                errs.append(np.linalg.norm(cam.project(joints)[ok] - det[ok, :2], axis=1))
    return np.concatenate(errs) if errs else np.zeros(0)


def round_metrics(session: Session, layer: ManoLayer, min_keypoint_conf: float = 0.2) -> dict:
    """The table row of the session as it stands (keypoints2d/ and fits/); see the module docstring."""
    kp = read_session_keypoints(session)
    found = views_found(kp, min_keypoint_conf)
    cons = consistency_errors(session, kp, min_keypoint_conf)
    fits = [r for f in session.frames if (r := readable_fit(session.fit_path(f))) is not None]

    def median_of(rec: dict, key: str) -> float | None:
        vals = [v for v in (rec["quality"].get(key) or {}).values() if v is not None]
        return float(np.median(vals)) if vals else None

    reproj = [v for r in fits if (v := median_of(r, "reproj_err_px")) is not None]
    iou = [v for r in fits if (v := median_of(r, "mask_iou")) is not None]
    row = {
        "views_found": int(found.sum()),
        "views_total": int(found.size),
        "consistency_px": float(np.median(cons)) if len(cons) else None,
        "frames_accepted": int(sum(bool(r["quality"].get("accepted")) for r in fits)),
        "frames_fitted": len(fits),
        "frames_total": len(session.frames),
        "fit_reproj_px": float(np.mean(reproj)) if reproj else None,
        "fit_mask_iou": float(np.mean(iou)) if iou else None,
    }
    if session.ground_truth_dir.is_dir():
        epe = detection_errors(session, kp, min_keypoint_conf)
        if epe is not None and len(epe):
            row["epe_px"] = float(np.mean(epe))
            row["epe_median_px"] = float(np.median(epe))
        acc = evaluate_against_ground_truth(session, layer)
        if acc is not None:
            row["mpjpe_mm"] = acc["mpjpe_mm"]
            row["pa_mpvpe_mm"] = acc["pa_mpvpe_mm"]
    return row


def better(row: dict, best: dict) -> bool:
    """Whether a round improves on the best so far: more frames accepted, or as many and more consistent.

    Example:
        >>> better({"frames_accepted": 10, "consistency_px": 3.0}, {"frames_accepted": 9, "consistency_px": 2.0})
        True
        >>> better({"frames_accepted": 9, "consistency_px": 2.5}, {"frames_accepted": 9, "consistency_px": 2.0})
        False
    """
    if row["frames_accepted"] != best["frames_accepted"]:
        return row["frames_accepted"] > best["frames_accepted"]
    a, b = row.get("consistency_px"), best.get("consistency_px")
    return a is not None and (b is None or a < 0.98 * b)


def progressed(row: dict, earlier: list[dict]) -> bool:
    """Whether a round improves on every earlier one in accepted frames or in multi-view consistency (by 2 %).

    The loop goes on while rounds progress in either; the round the session ends with is
    chosen apart (:func:`better`, among rounds no worse than round 0).

    Example:
        >>> rows = [{"frames_accepted": 20, "consistency_px": 3.9}]
        >>> progressed({"frames_accepted": 19, "consistency_px": 3.0}, rows)
        True
        >>> progressed({"frames_accepted": 20, "consistency_px": 3.85}, rows)
        False
    """
    if row["frames_accepted"] > max(r["frames_accepted"] for r in earlier):
        return True
    seen = [r["consistency_px"] for r in earlier if r.get("consistency_px") is not None]
    a = row.get("consistency_px")
    return a is not None and (not seen or a < 0.98 * min(seen))
