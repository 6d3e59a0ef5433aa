"""Pinhole cameras with OpenCV distortion: pure projection functions and small value objects.

Convention:
    - World to camera: ``x_cam = R @ x_world + t`` (metres). The camera looks down +z,
      x to the right, y down (OpenCV).
    - ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; pixel (0, 0) is the centre of
      the top-left pixel.
    - ``dist = [k1, k2, p1, p2, k3]`` (OpenCV's 5-coefficient model) applied to normalised
      coordinates ``(x/z, y/z)`` before K.
    - ``image_size = (width, height)`` in pixels.

The numpy and torch functions share one implementation of the distortion polynomial, so the
fitter (torch, batched, differentiable) and calibration (numpy) can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from handanno.check import check_shape
from handanno.errors import HandannoError
from handanno.rotations import axis_angle_to_matrix, matrix_to_axis_angle, nearest_rotation

Array = Any  # np.ndarray or torch.Tensor


def _stack(parts: list, like: Array) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def distort_normalized(xy: Array, dist: Array) -> Array:
    """Apply OpenCV's 5-coefficient distortion to normalised image coordinates.

    Args:
        xy: ``(*, N, 2)`` normalised coordinates ``(x/z, y/z)``.
        dist: ``(*, 5)`` ``[k1, k2, p1, p2, k3]``, broadcast against ``xy``'s leading dims.

    Returns:
        ``(*, N, 2)`` distorted normalised coordinates.

    Convention:
        ``r2 = x^2 + y^2``, ``x' = x (1 + k1 r2 + k2 r2^2 + k3 r2^3) + 2 p1 x y + p2 (r2 + 2 x^2)``,
        ``y' = y (1 + ...) + p1 (r2 + 2 y^2) + 2 p2 x y`` (OpenCV ``projectPoints``).
    """
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))  # each (*, 1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return _stack([xd, yd], xy)


def world_to_camera(points_world: Array, R: Array, t: Array) -> Array:
    """``(*, N, 3)`` world points to ``(*, N, 3)`` camera coordinates, ``R @ x + t``.

    ``R`` is ``(*, 3, 3)`` and ``t`` is ``(*, 3)``.
    """
    return (points_world @ _transpose(R)) + t[..., None, :]


def _transpose(m: Array) -> Array:
    return m.transpose(-1, -2) if isinstance(m, torch.Tensor) else np.swapaxes(m, -1, -2)


def project_points(points_world: Array, K: Array, dist: Array, R: Array, t: Array, min_depth: float = 1e-6) -> Array:
    """Project world points into pixels, with distortion; numpy or torch, batched.

    Args:
        points_world: ``(*, N, 3)`` metres.
        K: ``(*, 3, 3)`` intrinsics. Leading dims of K, dist, R and t broadcast against
            each other (a camera batch ``(C, ...)`` against points ``(C, N, 3)`` or
            ``(B, C, N, 3)`` with cameras ``(1, C, ...)``).
        dist: ``(*, 5)`` ``[k1, k2, p1, p2, k3]``.
        R: ``(*, 3, 3)`` world-to-camera rotation.
        t: ``(*, 3)`` world-to-camera translation, metres.
        min_depth: depths below this are clamped before the division, so points behind
            the camera give finite (meaningless) pixels instead of inf; check depth
            separately where it matters.

    Returns:
        ``(*, N, 2)`` pixel coordinates ``(u, v)``.

    Example:
        >>> import numpy as np
        >>> K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
        >>> uv = project_points(np.array([[0.1, 0.0, 1.0]]), K, np.zeros(5), np.eye(3), np.zeros(3))
        >>> uv.round(3).tolist()
        [[370.0, 240.0]]
    """
    check_shape(points_world, ("*", 3), "points_world")
    xc = world_to_camera(points_world, R, t)
    z = xc[..., 2:3]
    z = z.clamp(min=min_depth) if isinstance(z, torch.Tensor) else np.maximum(z, min_depth)
    xy = xc[..., :2] / z
    xy = distort_normalized(xy, dist)
    u = K[..., 0, 0, None] * xy[..., 0] + K[..., 0, 1, None] * xy[..., 1] + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * xy[..., 1] + K[..., 1, 2, None]
    return _stack([u, v], xy)


def undistort_points(uv_px: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pixels ``(N, 2)`` to undistorted normalised coordinates ``(N, 2)`` (OpenCV, iterative).

    The pixels are first mapped to distorted normalised coordinates with ``K^-1`` (so a
    non-zero skew ``K[0, 1]`` is honoured, which ``cv2.undistortPoints`` ignores), then
    OpenCV inverts the distortion with an identity camera matrix. NaN rows stay NaN.
    """
    import cv2

    check_shape(uv_px, ("N", 2), "uv_px")
    out = np.full(uv_px.shape, np.nan)
    ok = np.all(np.isfinite(uv_px), axis=1)
    if ok.any():
        K = np.asarray(K, np.float64)
        y_d = (uv_px[ok, 1] - K[1, 2]) / K[1, 1]
        x_d = (uv_px[ok, 0] - K[0, 2] - K[0, 1] * y_d) / K[0, 0]
        pts = np.stack([x_d, y_d], axis=-1).reshape(-1, 1, 2)  # (n, 1, 2) distorted, normalised
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-15)  # eps in normalised units
        und = cv2.undistortPoints(pts, np.eye(3), np.asarray(dist, np.float64), R=None, P=None, criteria=crit)
        out[ok] = und.reshape(-1, 2)
    return out


def look_at(center, target=(0.0, 0.0, 0.0), roll_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``(R (3, 3), t (3,) metres)`` of a camera at ``center`` looking at ``target``.

    World z is up: the camera's x (right) is ``forward x up``, its y points down, then the
    camera is rolled by ``roll_rad`` about its optical axis. Undefined when looking straight
    up or down.

    Example:
        >>> R, t = look_at([0.0, -1.0, 0.0])
        >>> R.round(6).tolist(), t.round(6).tolist()
        ([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [0.0, 0.0, 1.0])
    """
    center = np.asarray(center, np.float64)
    z = np.asarray(target, np.float64) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])  # right = forward x up
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # rows: camera axes in world coordinates
    if roll_rad:
        c, s = np.cos(roll_rad), np.sin(roll_rad)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R
    return R, -R @ center


def rotation_error(R: np.ndarray, where: str) -> None:
    """Raise unless ``R`` is a proper rotation (orthonormal, det +1) within 1e-4."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise HandannoError(f"{where}: R must be a finite 3x3 matrix, got shape {R.shape}")
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(R) - 1) > 1e-4:
        raise HandannoError(
            f"{where}: R is not a rotation matrix (R R^T - I max {np.abs(R @ R.T - np.eye(3)).max():.2e}, "
            f"det {np.linalg.det(R):.4f}); check the file's R (world-to-camera, row-major)"
        )


def _five_coefficients(dist: np.ndarray, where: str) -> np.ndarray:
    """``[k1, k2, p1, p2]`` pads with k3 = 0; longer OpenCV vectors are accepted only if the extra terms are 0."""
    if dist.size == 4:
        return np.concatenate([dist, [0.0]])
    if dist.size > 5 and np.all(dist[5:] == 0):
        return dist[:5]
    if dist.size != 5:
        raise HandannoError(
            f"{where}: field dist must be [k1, k2, p1, p2, k3] (5 numbers), got {dist.size}; "
            "handanno uses OpenCV's 5-coefficient model"
        )
    return dist


@dataclass(frozen=True)
class Camera:
    """One calibrated camera: an immutable value object around the pure functions above.

    Attributes:
        name: the camera's name (its folder under ``images/``).
        K: ``(3, 3)`` intrinsics, pixels.
        dist: ``(5,)`` ``[k1, k2, p1, p2, k3]``.
        R: ``(3, 3)`` world-to-camera rotation.
        t: ``(3,)`` world-to-camera translation, metres.
        image_size: ``(width, height)`` pixels.
    """

    name: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        where = f"camera {self.name!r}"
        for attr, shape in (("K", (3, 3)), ("dist", (5,)), ("R", (3, 3)), ("t", (3,))):
            try:
                value = np.array(getattr(self, attr), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise HandannoError(f"{where}: field {attr} is not numeric ({exc})") from exc
            if attr == "dist":
                value = _five_coefficients(value.ravel(), where)
            if value.shape != shape:
                raise HandannoError(f"{where}: field {attr} must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise HandannoError(f"{where}: field {attr} has NaN or inf values")
            value.setflags(write=False)
            object.__setattr__(self, attr, value)
        rotation_error(self.R, where)
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0 or np.any(self.K[2] != (0, 0, 1)) or self.K[1, 0] != 0:
            raise HandannoError(f"{where}: field K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        try:
            size = tuple(int(s) for s in self.image_size)
            integral = all(float(s) == int(s) for s in self.image_size)
        except (TypeError, ValueError, OverflowError):
            size, integral = (), False
        if len(size) != 2 or not integral or min(size) <= 0:
            raise HandannoError(
                f"{where}: field image_size must be [width, height] in whole pixels, got {self.image_size}"
            )
        object.__setattr__(self, "image_size", size)

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` camera centre in world coordinates, ``-R^T t``."""
        return -self.R.T @ self.t

    @property
    def rvec(self) -> np.ndarray:
        """``(3,)`` axis-angle of R, radians (of its nearest rotation, as OpenCV's Rodrigues)."""
        return matrix_to_axis_angle(nearest_rotation(self.R))

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """``(*, N, 3)`` world points to ``(*, N, 2)`` pixels."""
        return project_points(np.asarray(points_world, np.float64), self.K, self.dist, self.R, self.t)

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """``(*, N, 3)`` world points to camera coordinates."""
        return world_to_camera(np.asarray(points_world, np.float64), self.R, self.t)

    def undistort(self, uv_px: np.ndarray) -> np.ndarray:
        """``(N, 2)`` pixels to undistorted normalised coordinates."""
        return undistort_points(np.asarray(uv_px, np.float64), self.K, self.dist)

    def projection_matrix(self) -> np.ndarray:
        """``(3, 4)`` ``K [R | t]`` (no distortion)."""
        return self.K @ np.hstack([self.R, self.t[:, None]])

    def with_pose(self, R: np.ndarray, t: np.ndarray) -> Camera:
        """A copy with another extrinsic pose."""
        return Camera(self.name, self.K, self.dist, R, t, self.image_size)

    def to_params(self) -> np.ndarray:
        """``(15,)`` ``[rvec 3, t 3, fx, fy, cx, cy, k1, k2, p1, p2, k3]`` for optimisers."""
        return np.concatenate([self.rvec, self.t, [self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]], self.dist])

    @classmethod
    def from_params(cls, name: str, params: np.ndarray, image_size: tuple[int, int]) -> Camera:
        """Inverse of :meth:`to_params` (zero skew)."""
        p = np.asarray(params, np.float64)
        K = np.array([[p[6], 0, p[8]], [0, p[7], p[9]], [0, 0, 1]])
        return cls(name, K, p[10:15], axis_angle_to_matrix(p[:3]), p[3:6], image_size)

    def to_dict(self) -> dict:
        """The camera's entry of rig.json."""
        return {
            "image_size": list(self.image_size),
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping) -> Camera:
        """Build from a rig.json entry; errors name the camera and the field."""
        missing = [k for k in ("image_size", "K", "dist", "R", "t") if k not in d]
        if missing:
            raise HandannoError(f"camera {name!r}: missing field(s) {', '.join(missing)}")
        return cls(name, d["K"], d["dist"], d["R"], d["t"], d["image_size"])


@dataclass(frozen=True)
class CameraTensors:
    """``C`` cameras stacked as torch tensors, in rig order (:meth:`CameraRig.tensors`); conventions above.

    Attributes:
        K: ``(C, 3, 3)`` intrinsics, pixels.
        dist: ``(C, 5)`` ``[k1, k2, p1, p2, k3]``, unitless.
        R: ``(C, 3, 3)`` world-to-camera rotations.
        t: ``(C, 3)`` world-to-camera translations, metres.
        image_size: ``(C, 2)`` int64 ``(width, height)``, pixels.

    Example:
        >>> cam = Camera("cam0", np.diag([500.0, 500.0, 1.0]), np.zeros(5), np.eye(3), np.zeros(3), (640, 480))
        >>> cams = CameraRig((cam,)).tensors(dtype=torch.float64)
        >>> tuple(cams.K.shape), cams.R.dtype, cams.image_size.tolist()
        ((1, 3, 3), torch.float64, [[640, 480]])
    """

    K: torch.Tensor
    dist: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: torch.Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CameraTensors:
        """A copy on ``device``, K, dist, R and t in ``dtype`` (None keeps either; ``image_size`` stays int64)."""
        return CameraTensors(
            **{k: getattr(self, k).to(device=device, dtype=dtype) for k in ("K", "dist", "R", "t")},
            image_size=self.image_size.to(device=device),
        )


def natural_key(name: str) -> tuple:
    """Sort key so that ``cam2`` comes before ``cam10``."""
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class CameraRig:
    """Named cameras in natural name order (``cam2`` before ``cam10``)."""

    cameras: tuple[Camera, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        cams = tuple(sorted(self.cameras, key=lambda c: natural_key(c.name)))
        names = [c.name for c in cams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise HandannoError(f"rig has duplicate camera names: {', '.join(dupes)}")
        object.__setattr__(self, "cameras", cams)

    @classmethod
    def from_cameras(cls, cameras: Iterable[Camera]) -> CameraRig:
        """Build from any iterable of cameras."""
        return cls(tuple(cameras))

    @property
    def names(self) -> list[str]:
        """Camera names in order."""
        return [c.name for c in self.cameras]

    def __len__(self) -> int:
        return len(self.cameras)

    def __iter__(self) -> Iterator[Camera]:
        return iter(self.cameras)

    def __getitem__(self, key: str | int) -> Camera:
        if isinstance(key, int):
            return self.cameras[key]
        for c in self.cameras:
            if c.name == key:
                return c
        raise HandannoError(f"camera {key!r} is not in the rig (cameras: {', '.join(self.names)})")

    def subset(self, names: Iterable[str]) -> CameraRig:
        """The rig restricted to ``names``."""
        return CameraRig(tuple(self[n] for n in names))

    def stacked(self) -> dict[str, np.ndarray]:
        """Arrays over cameras: ``K (C,3,3)``, ``dist (C,5)``, ``R (C,3,3)``, ``t (C,3)``, ``image_size (C,2)``."""
        return {
            "K": np.stack([c.K for c in self.cameras]),
            "dist": np.stack([c.dist for c in self.cameras]),
            "R": np.stack([c.R for c in self.cameras]),
            "t": np.stack([c.t for c in self.cameras]),
            "image_size": np.array([c.image_size for c in self.cameras], dtype=np.int64),
        }

    def tensors(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> CameraTensors:
        """:meth:`stacked` as torch tensors on ``device``: ``dtype``, but ``image_size`` int64."""
        s = self.stacked()
        return CameraTensors(
            **{k: torch.as_tensor(s[k], device=device, dtype=dtype) for k in ("K", "dist", "R", "t")},
            image_size=torch.as_tensor(s["image_size"], device=device, dtype=torch.int64),
        )

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points to ``(C, N, 2)`` pixels in every camera."""
        s = self.stacked()
        pts = np.broadcast_to(np.asarray(points_world, np.float64), (len(self), *np.shape(points_world)))
        return project_points(pts, s["K"], s["dist"], s["R"], s["t"])
