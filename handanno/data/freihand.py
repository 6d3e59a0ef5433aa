"""FreiHAND label conventions as pure functions: MANO vector, root recovery, crops.

The recipes follow lmb-freiburg/freihand ``utils/fh_utils.py`` and ``utils/model.py``
(``split_theta``, ``get_focal_pp``, ``backproject_ortho``, ``recover_root``,
``HandModel.pose_by_root``, ``sample_version``, ``db_size``) so that FreiHAND's own loading
code rebuilds ``training_xyz`` from ``training_mano`` and ``training_K`` for handanno's
labels. Nothing here touches the filesystem (see ``freihand_io.py``) or imports
``handanno.models`` (a hand layer is passed in as an argument).

Convention:
    - 3D in metres in the camera frame of the crop (OpenCV: x right, y down, z forward);
      2D in pixels, pixel ``(0, 0)`` is the centre of the top-left pixel.
    - ``K`` is the 3x3 pinhole matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
    - The FreiHAND MANO vector has 61 numbers: ``pose`` 48 (3 global axis-angle, expressed in
      the camera frame, then 45 articulation axis-angle relative to ``hands_mean``), ``betas``
      10, ``uv_root`` 2 and ``scale`` 1, with ``f = (fx + fy) / 2``, ``pp = (cx, cy)`` and
      ``xyz_root = [uv_root - pp, f] / scale`` the position of keypoint 9 (middle MCP).
      ``training_mano.json`` stores each as ``[[61 numbers]]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from handanno.check import as_float64, check_shape
from handanno.data.conventions import (
    NUM_BETAS,
    NUM_JOINTS,
    NUM_MANO_PARAMS_FREIHAND,
    NUM_POSE,
    ROOT_KEYPOINT,
    SCALE_KEYPOINTS,
)
from handanno.errors import HandannoError
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle, nearest_rotation

FREIHAND_IMAGE_SIZE = 224
# fh_utils.db_size: unique samples per split; the training images exist in 4 versions.
FREIHAND_DB_SIZE = {"training": 32560, "evaluation": 3960}
# fh_utils.sample_version.valid_options(), in the order of their id offsets.
SAMPLE_VERSIONS = ("gs", "hom", "sample", "auto")


# --------------------------------------------------------------------------- versions


def sample_version_id(idx: int, version: str, num_unique: int = FREIHAND_DB_SIZE["training"]) -> int:
    """Image id of sample ``idx`` in one of the 4 training-set versions (``sample_version.map_id``).

    Args:
        idx: sample index in ``[0, num_unique)``.
        version: ``"gs"`` (green screen), ``"hom"`` (homogenised), ``"sample"`` or ``"auto"``
            (two automatic colourisations).
        num_unique: unique samples in the split (FreiHAND training: 32560).

    Returns:
        ``idx + num_unique * k``, ``k`` the version's position in :data:`SAMPLE_VERSIONS`.

    Example:
        >>> sample_version_id(5, "hom")
        32565
    """
    if version not in SAMPLE_VERSIONS:
        raise HandannoError(f"invalid FreiHAND sample version {version!r}: must be one of {list(SAMPLE_VERSIONS)}")
    return int(idx) + int(num_unique) * SAMPLE_VERSIONS.index(version)


# --------------------------------------------------------------------------- rotations


def _check_rotation(R: np.ndarray, name: str, tol: float = 1e-6) -> None:
    check_shape(R, (3, 3), name)
    if not (np.allclose(R @ R.T, np.eye(3), atol=tol) and np.linalg.det(R) > 0):
        raise HandannoError(f"{name} is not a rotation matrix (R R^T != I or det <= 0): {R.tolist()}")


def pose_to_camera_frame(pose: Any, R_cam: Any) -> np.ndarray:
    """Express a MANO pose's global rotation in a camera's frame.

    Args:
        pose: ``(*, 48)`` MANO pose in the world frame: 3 global axis-angle, 45 articulation.
        R_cam: ``(3, 3)`` world-to-camera rotation (``x_cam = R_cam @ x_world + t``).

    Returns:
        ``(*, 48)`` pose with ``R_global' = R_cam @ R_global``; articulation unchanged.

    Convention:
        MANO rotates about its root joint, so the posed mesh of the returned pose (with zero
        translation) equals ``R_cam @`` the world mesh up to a translation; FreiHAND's
        recipe fixes that translation by putting keypoint 9 at ``xyz_root``. The returned
        axis-angle has its angle in ``[0, pi]``.

    Example:
        >>> p = np.zeros(48); p[3:] = 0.1
        >>> q = pose_to_camera_frame(p, np.diag([1.0, -1.0, -1.0]))
        >>> np.round(q[:4], 6).tolist()
        [3.141593, 0.0, 0.0, 0.1]
    """
    p = as_float64(pose, "pose")
    check_shape(p, ("*", NUM_POSE), "pose")
    R = as_float64(R_cam, "R_cam")
    _check_rotation(R, "R_cam")
    R_global = axis_angle_to_matrix(p[..., :3])  # (*, 3, 3)
    out = p.copy()
    out[..., :3] = matrix_to_axis_angle(nearest_rotation(R @ R_global))  # R_global' = R_cam R_global
    return out


# --------------------------------------------------------------------------- MANO vector


class ManoVector(NamedTuple):
    """The four parts of FreiHAND's 61-number MANO vector (``split_theta``)."""

    pose: np.ndarray  # (*, 48) axis-angle, camera frame global rotation
    betas: np.ndarray  # (*, 10)
    uv_root: np.ndarray  # (*, 2) px in the crop
    scale: np.ndarray  # (*,) f / Z_root, px per metre


def freihand_mano_vector(pose_cam: Any, betas: Any, uv_root: Any, scale: Any) -> np.ndarray:
    """Pack FreiHAND's MANO vector.

    Args:
        pose_cam: ``(*, 48)`` pose with the global rotation in the camera frame.
        betas: ``(*, 10)`` shape.
        uv_root: ``(*, 2)`` root pixel in the crop (from :func:`root_uv_and_scale`).
        scale: ``(*,)`` ``f / Z_root``.

    Returns:
        ``(*, 61)`` = ``[pose 48, betas 10, uv_root 2, scale 1]``.

    Example:
        >>> freihand_mano_vector(np.zeros(48), np.zeros(10), [112.0, 100.0], 500.0)[-3:].tolist()
        [112.0, 100.0, 500.0]
    """
    p, b, uv = as_float64(pose_cam, "pose_cam"), as_float64(betas, "betas"), as_float64(uv_root, "uv_root")
    s = as_float64(scale, "scale")
    check_shape(p, ("*", NUM_POSE), "pose_cam")
    lead = p.shape[:-1]
    for arr, n, name in ((b, NUM_BETAS, "betas"), (uv, 2, "uv_root")):
        if arr.shape != (*lead, n):
            raise HandannoError(f"{name} must have shape {(*lead, n)} to match pose_cam {p.shape}, got {arr.shape}")
    if s.shape != lead:
        raise HandannoError(f"scale must have shape {lead} to match pose_cam {p.shape}, got {s.shape}")
    return np.concatenate([p, b, uv, s[..., None]], axis=-1)  # (*, 61)


def split_mano_vector(mano: Any) -> ManoVector:
    """Split FreiHAND's MANO vector (``split_theta``).

    Args:
        mano: ``(*, 61)``, e.g. one stored entry ``[[61 numbers]]`` of shape ``(1, 61)``.

    Returns:
        :class:`ManoVector` with leading dimensions kept.
    """
    v = as_float64(mano, "mano")
    check_shape(v, ("*", NUM_MANO_PARAMS_FREIHAND), "mano")
    return ManoVector(v[..., :48], v[..., 48:58], v[..., 58:60], v[..., 60])


def get_focal_pp(K: Any) -> tuple[np.ndarray, np.ndarray]:
    """FreiHAND's focal length and principal point.

    Args:
        K: ``(*, 3, 3)`` intrinsics.

    Returns:
        ``focal`` ``(*,)`` = ``(fx + fy) / 2`` and ``pp`` ``(*, 2)`` = ``(cx, cy)``, px.
    """
    k = as_float64(K, "K")
    check_shape(k, ("*", 3, 3), "K")
    return 0.5 * (k[..., 0, 0] + k[..., 1, 1]), k[..., :2, 2]


def recover_root(uv_root: Any, scale: Any, K: Any) -> np.ndarray:
    """3D root keypoint from ``uv_root`` and ``scale``: FreiHAND's ``recover_root``.

    Args:
        uv_root: ``(*, 2)`` px.
        scale: ``(*,)`` ``f / Z_root``.
        K: ``(*, 3, 3)`` or ``(3, 3)`` crop intrinsics.

    Returns:
        ``(*, 3)`` keypoint 9 in metres: ``[uv_root - pp, f] / scale`` (``backproject_ortho``).

    Example:
        >>> K = np.array([[100.0, 0, 112], [0, 100.0, 112], [0, 0, 1]])
        >>> recover_root([122.0, 112.0], 200.0, K).tolist()
        [0.05, 0.0, 0.5]
    """
    uv, s = as_float64(uv_root, "uv_root"), as_float64(scale, "scale")
    check_shape(uv, ("*", 2), "uv_root")
    focal, pp = get_focal_pp(K)
    xyz = np.concatenate([uv - pp, np.broadcast_to(focal[..., None], uv[..., :1].shape)], axis=-1)
    return xyz / s[..., None]  # (*, 3)


def root_uv_and_scale(xyz_root: Any, K: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ``uv_root`` and ``scale`` that :func:`recover_root` turns back into ``xyz_root``.

    Args:
        xyz_root: ``(*, 3)`` keypoint 9 in metres, camera frame, ``Z > 0``.
        K: ``(*, 3, 3)`` or ``(3, 3)`` crop intrinsics.

    Returns:
        ``uv_root`` ``(*, 2)`` = ``pp + f * (X, Y) / Z`` and ``scale`` ``(*,)`` = ``f / Z``.

    Convention:
        ``uv_root`` is the pixel of keypoint 9 in the crop when ``fx == fy``; otherwise it
        is what FreiHAND's recipe needs to recover the root exactly (it uses the mean focal
        ``f`` for both axes), which differs from the projection by ``(fx - f) * X / Z`` px.

    Example:
        >>> K = np.array([[100.0, 0, 112], [0, 100.0, 112], [0, 0, 1]])
        >>> uv, s = root_uv_and_scale([0.05, 0.0, 0.5], K); uv.tolist(), float(s)
        ([122.0, 112.0], 200.0)
    """
    xyz = as_float64(xyz_root, "xyz_root")
    check_shape(xyz, ("*", 3), "xyz_root")
    if not np.all(xyz[..., 2] > 0):
        raise HandannoError(f"xyz_root must lie in front of the camera (Z > 0), got Z = {xyz[..., 2].tolist()}")
    focal, pp = get_focal_pp(K)
    scale = focal / xyz[..., 2]  # f / Z
    return pp + xyz[..., :2] * scale[..., None], scale


def keypoint_scale(xyz: Any) -> np.ndarray:
    """FreiHAND's ``scale`` label: ``|xyz[9] - xyz[10]|``, metres.

    Args:
        xyz: ``(*, 21, 3)`` keypoints, metres.

    Returns:
        ``(*,)`` the length of the middle finger's proximal bone.
    """
    x = as_float64(xyz, "xyz")
    check_shape(x, ("*", NUM_JOINTS, 3), "xyz")
    a, b = SCALE_KEYPOINTS
    return np.linalg.norm(x[..., a, :] - x[..., b, :], axis=-1)


def project_points(xyz: Any, K: Any) -> np.ndarray:
    """Pinhole projection (FreiHAND ``projectPoints``).

    Args:
        xyz: ``(*, N, 3)`` points, metres, camera frame.
        K: ``(*, 3, 3)`` or ``(3, 3)``.

    Returns:
        ``(*, N, 2)`` pixels.
    """
    x, k = as_float64(xyz, "xyz"), as_float64(K, "K")
    check_shape(x, ("*", "N", 3), "xyz")
    check_shape(k, ("*", 3, 3), "K")
    uvw = np.einsum("...ij,...nj->...ni", k, x)  # K @ x per point, (*, N, 3)
    return uvw[..., :2] / uvw[..., 2:]


class RebuiltHand(NamedTuple):
    """Keypoints and vertices rebuilt from a FreiHAND MANO vector (camera frame, metres)."""

    xyz: np.ndarray  # (*, 21, 3)
    verts: np.ndarray  # (*, 778, 3)


def _layer_dtype_device(hand_layer: Any) -> tuple[Any, Any]:
    import torch

    buffers = getattr(hand_layer, "buffers", None)
    if callable(buffers):
        for buf in buffers():
            if torch.is_tensor(buf) and buf.is_floating_point():
                return buf.dtype, buf.device
    return torch.float64, torch.device("cpu")


def rebuild_xyz_from_mano(mano: Any, K: Any, hand_layer: Any) -> RebuiltHand:
    """FreiHAND's recipe (``pose_hand`` / ``pose_by_root``): MANO vector + K -> keypoints, vertices.

    Runs the hand layer with the pose and betas and zero translation, then translates the
    hand so that keypoint 9 lands on :func:`recover_root` ``(uv_root, scale, K)``.

    Args:
        mano: ``(61,)`` or ``(1, 61)`` with ``K`` of shape ``(3, 3)``; or ``(B, 61)`` /
            ``(B, 1, 61)`` with ``K`` of shape ``(B, 3, 3)``.
        K: crop intrinsics, see above.
        hand_layer: callable ``(pose (B, 48), betas (B, 10), trans (B, 3))`` torch tensors ->
            object with ``.joints`` ``(B, 21, 3)`` (FreiHAND order) and ``.vertices``
            ``(B, 778, 3)``, e.g. ``handanno.handmodel.mano.ManoLayer``. Inputs are made with
            the dtype and device of its first floating buffer (float64 CPU if none): use a
            float64 layer for exact comparisons.

    Returns:
        :class:`RebuiltHand`: ``(21, 3)``/``(778, 3)`` for one sample, ``(B, ...)`` batched.
    """
    import torch

    k = as_float64(K, "K")
    single = k.ndim == 2
    check_shape(k, (3, 3) if single else ("B", 3, 3), "K")
    B = 1 if single else k.shape[0]
    v = as_float64(mano, "mano")
    if v.size != B * NUM_MANO_PARAMS_FREIHAND:
        raise HandannoError(f"mano must hold {B} x 61 numbers to match K {k.shape}, got shape {v.shape}")
    parts = split_mano_vector(v.reshape(B, NUM_MANO_PARAMS_FREIHAND))
    dtype, device = _layer_dtype_device(hand_layer)
    with torch.no_grad():
        out = hand_layer(
            torch.as_tensor(parts.pose, dtype=dtype, device=device),
            torch.as_tensor(parts.betas, dtype=dtype, device=device),
            torch.zeros((B, 3), dtype=dtype, device=device),
        )
    joints = out.joints.detach().cpu().numpy().astype(np.float64)  # (B, 21, 3)
    verts = out.vertices.detach().cpu().numpy().astype(np.float64)  # (B, 778, 3)
    root = recover_root(parts.uv_root, parts.scale, k if not single else k[None])  # (B, 3)
    t = root - joints[:, ROOT_KEYPOINT]  # pose_by_root: global_t = xyz_root - xyz[root_id]
    xyz, verts = joints + t[:, None], verts + t[:, None]
    return RebuiltHand(xyz[0], verts[0]) if single else RebuiltHand(xyz, verts)


# --------------------------------------------------------------------------- crops


class CropBox(NamedTuple):
    """A square image region: left edge ``x0``, top edge ``y0`` and side ``size_px``.

    Edges are in the pixel-centre convention: the whole of a ``W x H`` image is the box
    ``(-0.5, -0.5, W)`` when ``W == H``.
    """

    x0: float
    y0: float
    size_px: float


def hand_crop_box(uv_px: Any, enlarge: float = 1.5, min_size_px: float = 16.0) -> CropBox:
    """Square box centred on the keypoints' bounding box, its side enlarged.

    Args:
        uv_px: ``(N, 2)`` keypoints in pixels; NaN rows (missing) are ignored.
        enlarge: side = ``enlarge *`` the larger side of the keypoints' bounding box.
        min_size_px: lower bound on the side.

    Returns:
        :class:`CropBox` (it may extend past the image; :func:`crop_image` pads with zeros).

    Example:
        >>> hand_crop_box([[100.0, 50.0], [140.0, 150.0]], enlarge=2.0)
        CropBox(x0=20.0, y0=0.0, size_px=200.0)
    """
    uv = as_float64(uv_px, "uv_px")
    check_shape(uv, ("N", 2), "uv_px")
    uv = uv[np.all(np.isfinite(uv), axis=1)]
    if len(uv) == 0:
        raise HandannoError("hand_crop_box: no finite keypoint to centre the crop on")
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    centre = 0.5 * (lo + hi)
    side = max(float(enlarge) * float((hi - lo).max()), float(min_size_px))
    return CropBox(float(centre[0] - side / 2), float(centre[1] - side / 2), side)


def crop_affine(box: CropBox | tuple[float, float, float], out_size: int = FREIHAND_IMAGE_SIZE) -> np.ndarray:
    """The 3x3 affine map from image pixels to crop pixels.

    Args:
        box: ``(x0, y0, size_px)`` in source pixels (:class:`CropBox`).
        out_size: side of the crop in pixels.

    Returns:
        ``(3, 3)`` ``A`` with ``u' = s * (u - x0) - 0.5``, ``v' = s * (v - y0) - 0.5``,
        ``s = out_size / size_px``.

    Convention:
        Pixel centres at integers in both images, so the box's left edge ``x0`` maps to the
        crop's left edge ``-0.5`` and its right edge ``x0 + size_px`` to ``out_size - 0.5``.
        (In edge-based coordinates, ``u + 0.5``, this is ``u' = s * (u - x0)``.)

    Example:
        >>> crop_affine((-0.5, -0.5, 224), 224).tolist() == np.eye(3).tolist()
        True
    """
    x0, y0, size = (float(v) for v in box)
    if not (np.isfinite([x0, y0, size]).all() and size > 0):
        raise HandannoError(f"crop box must have finite edges and a positive size, got {tuple(box)}")
    s = out_size / size
    return np.array([[s, 0.0, -s * x0 - 0.5], [0.0, s, -s * y0 - 0.5], [0.0, 0.0, 1.0]])


def crop_intrinsics(
    K: Any, box: CropBox | tuple[float, float, float], out_size: int = FREIHAND_IMAGE_SIZE
) -> np.ndarray:
    """Intrinsics of a square crop: ``K_crop = A @ K`` with ``A`` from :func:`crop_affine`.

    Args:
        K: ``(3, 3)`` intrinsics of the (undistorted) full image.
        box: the crop's :class:`CropBox` in that image.
        out_size: side of the crop in pixels (FreiHAND: 224).

    Returns:
        ``(3, 3)`` intrinsics of the crop: ``fx, fy, skew`` times ``s``, principal point
        mapped by ``A``.

    Example:
        >>> K = np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
        >>> crop_intrinsics(K, (416.0, 136.0, 448), 224).tolist()  # centred: pp at the crop's centre
        [[500.0, 0.0, 111.5], [0.0, 500.0, 111.5], [0.0, 0.0, 1.0]]
    """
    k = as_float64(K, "K")
    check_shape(k, (3, 3), "K")
    return crop_affine(box, out_size) @ k


def crop_image(
    image: np.ndarray,
    box: CropBox | tuple[float, float, float],
    out_size: int = FREIHAND_IMAGE_SIZE,
    interpolation: str = "linear",
    antialias: bool = True,
    border_value: float = 0.0,
) -> np.ndarray:
    """Warp a square box of an image to an ``out_size`` crop (matches :func:`crop_intrinsics`).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8 or float32 image.
        box: :class:`CropBox` in the image's pixels.
        out_size: side of the crop in pixels.
        interpolation: ``"linear"`` (images) or ``"nearest"`` (label masks).
        antialias: when shrinking (``s < 1``), blur first with a Gaussian of
            ``sigma = (1 / s - 1) / 2`` px (symmetric, so the geometry is unchanged).
        border_value: fill for parts of the box outside the image.

    Returns:
        ``(out_size, out_size[, C])`` crop, same dtype as ``image``.

    Convention:
        ``cv2.warpAffine`` with the map of :func:`crop_affine`; OpenCV puts pixel centres at
        integers, as handanno does, so a point projected through ``crop_intrinsics(K, box)``
        lands on the same content as in the full image.
    """
    import cv2

    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise HandannoError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    flags = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}.get(interpolation)
    if flags is None:
        raise HandannoError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    H, W = img.shape[:2]
    A = crop_affine(box, out_size)
    s = A[0, 0]
    src = img
    if antialias and s < 1.0 and interpolation == "linear":
        sigma = (1.0 / s - 1.0) / 2.0
        pad = int(np.ceil(4 * sigma)) + 2
        x0, y0, size = (float(v) for v in box)
        rx0, ry0 = max(int(np.floor(x0)) - pad, 0), max(int(np.floor(y0)) - pad, 0)
        rx1, ry1 = min(int(np.ceil(x0 + size)) + pad + 1, W), min(int(np.ceil(y0 + size)) + pad + 1, H)
        if rx1 <= rx0 or ry1 <= ry0:  # box entirely outside the image
            return np.full((out_size, out_size, *img.shape[2:]), border_value, dtype=img.dtype)
        roi = np.ascontiguousarray(img[ry0:ry1, rx0:rx1])
        src = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        A = A @ np.array([[1.0, 0.0, rx0], [0.0, 1.0, ry0], [0.0, 0.0, 1.0]])  # roi pixel -> image pixel
    n_ch = 1 if img.ndim == 2 else img.shape[2]
    out = cv2.warpAffine(
        src, A[:2], (out_size, out_size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * min(n_ch, 4),
    )  # fmt: skip
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel
        out = out[:, :, None]
    return out
