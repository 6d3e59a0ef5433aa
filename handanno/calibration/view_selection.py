"""A diverse subset of board views for calibration, chosen from many frames of board videos (pure).

A board video holds hundreds of instants, most of them near copies of their neighbours;
calibrating on all of them is slow and weights the poses the operator lingered on. Each
instant is described, in every camera that sees the board then, by a few numbers
(:func:`board_view_features`): where the board is in the image, how far and which way it
is tilted, how large it appears. :func:`select_views` then picks instants greedily, each
time the one that adds most: in every camera that sees it, its distance (in those features)
to the nearest instant already picked for that camera (farthest-point selection, per
camera), weighted up for cameras with few views yet, plus a bonus for pairs of cameras that
share few views yet (co-visibility is what ties the cameras' poses together).

Convention:
    - Instants are indexed ``t = 0 .. T-1``, cameras ``c = 0 .. C-1``. A camera that does
      not see the board at ``t`` (or sees too little of it) has NaN features there, as in a
      dense ``(T, C, F)`` array of observations.
    - Features ``F = 5``: ``u / W`` and ``v / H`` of the centre of the found corners (0 to
      1 across the image); ``n_x``, ``n_y`` of the board's unit normal in the camera frame
      (OpenCV axes: x right, y down, z forward; ``sqrt(n_x^2 + n_y^2)`` is the sine of the
      angle between the board's normal and the optical axis); ``s``, the square root of the
      area of the corners' convex hull over the image area (0 to 1).
    - The normal comes from the board-to-image homography under an assumed pinhole camera
      (focal ``focal_px``, principal point at the image centre, no distortion): good enough
      to tell poses apart before the camera is calibrated, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handanno.calibration.board import BoardSpec, Detection
from handanno.check import check_shape
from handanno.errors import HandannoError

NUM_FEATURES = 5
FEATURE_NAMES = ("u", "v", "n_x", "n_y", "size")


@dataclass(frozen=True)
class ViewSelectionSettings:
    """How :func:`select_views` picks instants.

    Attributes:
        max_views: instants to pick at most.
        min_views_per_camera: while a camera has fewer picks than this (and instants left
            that it sees), the next pick is among the instants that camera sees (the camera
            with the fewest picks first): intrinsics need views of their own camera, and a
            camera that sees the board rarely (or only partly, a narrow one) would otherwise
            be outvoted by instants seen by several others.
        min_corners: a camera whose detection has fewer corners does not count as seeing
            the board at that instant.
        max_tilt_deg: ... nor one whose board is turned further than this from its optical
            axis (by the assumed-camera estimate; such views are mostly left out by the
            calibration anyway, ``IntrinsicsSettings.max_view_angle_deg``).
        focal_guess: the assumed focal length as a multiple of the image's larger side.
        weights: ``(F,)`` scale of each feature in the distance (module convention order).
        saturation: a distance at which a view counts as wholly new (its gain stops growing).
        need_weight: what a view adds to its camera besides its novelty (so that repeats still
            count a little for a camera with few views).
        balance_views: a camera's terms are weighted ``b / (b + views of the camera so far)``:
            cameras with many views already gain less, so every camera gets its share.
        pair_weight: weight of ``1 / (1 + views shared so far)`` per pair of cameras seeing it.
    """

    max_views: int = 60
    min_views_per_camera: int = 20
    min_corners: int = 8
    max_tilt_deg: float = 70.0
    focal_guess: float = 1.0
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    saturation: float = 0.6
    need_weight: float = 0.1
    balance_views: float = 10.0
    pair_weight: float = 0.25

    def __post_init__(self) -> None:
        if self.max_views < 1:
            raise HandannoError(f"max_views must be at least 1, got {self.max_views}")
        if len(self.weights) != NUM_FEATURES:
            raise HandannoError(f"weights must have {NUM_FEATURES} entries ({', '.join(FEATURE_NAMES)})")


@dataclass(frozen=True)
class Selection:
    """What :func:`select_views` chose.

    Attributes:
        chosen: ``(K,)`` instant indices in the order they were picked.
        gains: ``(K,)`` the gain of each pick when it was picked (decreasing, roughly).
        candidates: instants where at least one camera sees the board.
        views_per_camera: ``(C,)`` chosen instants each camera sees the board in.
        shared: ``(C, C)`` chosen instants each pair of cameras both see.
    """

    chosen: np.ndarray
    gains: np.ndarray
    candidates: int
    views_per_camera: np.ndarray
    shared: np.ndarray


def board_view_features(detection: Detection, spec: BoardSpec, focal_guess: float = 1.0) -> np.ndarray:
    """``(F,)`` features of one board view (module convention), NaN when it has under 4 corners.

    Args:
        detection: the board's corners in one image.
        spec: the board (for the corners' board-frame positions).
        focal_guess: assumed focal length over the image's larger side.

    Example:
        >>> from handanno.calibration.board import parse_board_spec
        >>> spec = parse_board_spec("chessboard:4x3:0.05")
        >>> uv = spec.object_points()[:, :2] * 1000 + [245.0, 190.0]  # fronto-parallel, centred
        >>> f = board_view_features(Detection(np.arange(12), uv, (640, 480)), spec)
        >>> (np.round(f, 3) + 0.0).tolist()
        [0.5, 0.5, 0.0, 0.0, 0.221]
    """
    import cv2

    W, H = detection.image_size
    if detection.num_corners < 4:
        return np.full(NUM_FEATURES, np.nan)
    uv = detection.corners_px  # (K, 2)
    xy = spec.object_points()[detection.corner_ids, :2]  # (K, 2) board metres
    centre = uv.mean(axis=0) / [W, H]
    hull = cv2.convexHull(uv.astype(np.float32))
    size = np.sqrt(max(cv2.contourArea(hull), 0.0) / (W * H))
    normal = np.array([0.0, 0.0, 1.0])
    if np.linalg.matrix_rank(xy - xy.mean(axis=0), tol=1e-9) == 2:
        Hmat, _ = cv2.findHomography(xy, uv, 0)
        if Hmat is not None:
            f = focal_guess * max(W, H)
            K_inv = np.array([[1 / f, 0, -(W - 1) / 2 / f], [0, 1 / f, -(H - 1) / 2 / f], [0, 0, 1]])
            M = K_inv @ Hmat  # ~ [r1 r2 t] up to scale
            r1 = M[:, 0] / np.linalg.norm(M[:, 0])
            r2 = M[:, 1] / np.linalg.norm(M[:, 1])
            n = np.cross(r1, r2)
            normal = n / np.linalg.norm(n) * np.sign(n[2] or 1.0)  # the side facing away from the camera
    return np.array([centre[0], centre[1], normal[0], normal[1], size])


def view_features(
    detections: list[list[Detection | None]], spec: BoardSpec, settings: ViewSelectionSettings = ViewSelectionSettings()
) -> np.ndarray:
    """``(T, C, F)`` features of every instant in every camera; NaN where the camera does not count as seeing it.

    Args:
        detections: ``T`` lists of ``C`` detections (None: the frame was not searched or
            does not exist in that camera's video).
        spec: the board.
        settings: ``min_corners``, ``max_tilt_deg`` and ``focal_guess`` apply here.
    """
    T = len(detections)
    C = len(detections[0]) if T else 0
    out = np.full((T, C, NUM_FEATURES), np.nan)
    max_sin = np.sin(np.deg2rad(min(settings.max_tilt_deg, 90.0)))
    for t, row in enumerate(detections):
        if len(row) != C:
            raise HandannoError(f"instant {t} has {len(row)} detections, the first {C}")
        for c, det in enumerate(row):
            if det is None or det.num_corners < settings.min_corners:
                continue
            f = board_view_features(det, spec, settings.focal_guess)
            if np.all(np.isfinite(f)) and np.hypot(f[2], f[3]) <= max_sin + 1e-12:
                out[t, c] = f
    return out


def select_views(
    features: np.ndarray, settings: ViewSelectionSettings = ViewSelectionSettings(), quality: np.ndarray | None = None
) -> Selection:
    """Greedily pick up to ``settings.max_views`` diverse, co-visible instants.

    Each step picks the instant ``t`` with the largest gain (ties: the earliest), among the
    instants seen by the camera with the fewest picks while some camera has fewer than
    ``min_views_per_camera`` (and instants left to pick), else among all::

        gain(t) = sum over cameras c seeing t of q[t, c] * (min(1, d_c(t) / saturation) + need_weight) * b / (b + n_c)
                  + pair_weight * sum over pairs c < c' seeing t of 1 / (1 + n_cc')

    where ``d_c(t)`` is the weighted Euclidean feature distance from ``t`` to the nearest
    instant already picked that ``c`` sees (infinite when there is none), ``b`` is
    ``balance_views``, ``n_c`` the picked instants ``c`` sees and ``n_cc'`` those both see. So
    the first pick is an instant seen by the most cameras; later picks move the board to
    poses and image areas a camera lacks, favour cameras with few views and pairs of cameras
    that share few; an instant that only repeats picked ones (``d = 0``) gains only
    ``need_weight`` and the pair bonus.

    Args:
        features: ``(T, C, F)`` from :func:`view_features` (NaN: not seen).
        settings: ``max_views``, ``min_views_per_camera``, ``weights``, ``saturation``,
            ``need_weight``, ``balance_views``, ``pair_weight``.
        quality: ``(T, C)`` weight of each view in ``[0, 1]`` (e.g. the fraction of the
            board's corners found); None: 1.

    Returns:
        The :class:`Selection`.

    Example:
        >>> f = np.full((4, 2, 5), np.nan)
        >>> f[0, 0] = f[1, 0] = [0.2, 0.2, 0.0, 0.0, 0.3]  # t = 0, 1: the same view in camera 0
        >>> f[2, :] = [0.5, 0.5, 0.0, 0.0, 0.3]  # t = 2: both cameras
        >>> f[3, 1] = [0.8, 0.8, 0.3, 0.0, 0.3]  # farther from t = 2 than t = 0 is
        >>> select_views(f, ViewSelectionSettings(max_views=3, min_views_per_camera=0)).chosen.tolist()
        [2, 3, 0]
        >>> select_views(f, ViewSelectionSettings(max_views=3)).chosen.tolist()  # camera 0 (tied, first) is short
        [2, 0, 3]
    """
    check_shape(features, ("T", "C", NUM_FEATURES), "features")
    T, C, _ = features.shape
    seen = np.all(np.isfinite(features), axis=2)  # (T, C)
    q = np.ones((T, C)) if quality is None else np.clip(np.asarray(quality, np.float64), 0.0, 1.0)
    check_shape(q, (T, C), "quality")
    q = np.where(seen, q, 0.0)
    w = np.asarray(settings.weights, np.float64)
    f = np.where(seen[..., None], features, 0.0) * w  # (T, C, F) weighted, 0 where unseen
    nearest = np.full((T, C), np.inf)  # d_c(t)
    n_cam = np.zeros(C)
    n_pair = np.zeros((C, C))
    available = seen.any(axis=1)  # (T,)
    candidates = int(available.sum())
    iu = np.triu_indices(C, 1)
    pair_seen = (seen[:, :, None] & seen[:, None, :])[:, iu[0], iu[1]]  # (T, P)
    chosen, gains = [], []
    while len(chosen) < settings.max_views and available.any():
        novelty = np.minimum(1.0, nearest / settings.saturation)  # (T, C), 1 where c has no pick yet
        need = settings.balance_views / (settings.balance_views + n_cam)  # (C,)
        per_cam = q * (novelty + settings.need_weight) * need  # (T, C), 0 where unseen
        gain = per_cam.sum(axis=1) + settings.pair_weight * (pair_seen / (1.0 + n_pair[iu])).sum(axis=1)  # (T,)
        allowed = available
        short = np.flatnonzero((n_cam < settings.min_views_per_camera) & (seen & available[:, None]).any(axis=0))
        if len(short):
            neediest = short[np.argmin(n_cam[short])]  # fewest picks; ties: the first camera
            allowed = available & seen[:, neediest]
        gain = np.where(allowed, gain, -np.inf)
        t = int(np.argmax(gain))
        chosen.append(t)
        gains.append(float(gain[t]))
        available[t] = False
        cams = np.flatnonzero(seen[t])
        n_cam[cams] += 1
        n_pair[np.ix_(cams, cams)] += 1
        for c in cams:
            d = np.linalg.norm(f[:, c] - f[t, c], axis=1)  # (T,)
            nearest[:, c] = np.minimum(nearest[:, c], d)
    idx = np.array(chosen, np.int64)
    np.fill_diagonal(n_pair, 0)
    return Selection(idx, np.array(gains), candidates, n_cam.astype(np.int64), n_pair.astype(np.int64))
