"""Calibration boards seen by a synthetic rig.

The printed board as a texture pyramid, board poses that the cameras see, and their rendering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from handanno.calibration.board import BoardSpec, Detection
from handanno.calibration.camera import Camera, CameraRig
from handanno.check import check_shape
from handanno.errors import HandannoError
from handanno.handmodel.hand_axes import unit as _unit
from handanno.synth import raycast
from handanno.synth.appearance import Lighting
from handanno.synth.streams import (
    _CALIB,
)
from handanno.synth.streams import (
    rng as _rng,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- boards


@dataclass(frozen=True)
class BoardTexture:
    """A printed board as an image pyramid for texture sampling.

    Attributes:
        levels: grey uint8 images; level ``k`` has ``px_per_m / 2**k`` pixels per metre.
        px_per_m: resolution of level 0.
        origin_m: ``(x, y)`` board-frame position of the texture's outer top-left corner.
        size_m: ``(width, height)`` of the printed pattern, metres.
        square_m: side of one square, metres.

    Convention:
        Texel ``(i, j)`` of level 0 covers the board points
        ``x in origin_x + [j, j + 1) / px_per_m``, ``y in origin_y + [i, i + 1) / px_per_m``;
        ``cv2.pyrDown`` centres texel ``i`` of level ``k`` on level-0 texel ``2**k i``, i.e. at
        ``origin + (2**k i + 0.5) / px_per_m``. Board frame as :mod:`handanno.calibration.board`
        (x right, y down the printed pattern, z into the board).
    """

    levels: tuple[np.ndarray, ...]
    px_per_m: float
    origin_m: tuple[float, float]
    size_m: tuple[float, float]
    square_m: float


def board_texture(spec: BoardSpec, square_px: int = 160, num_levels: int = 5, blur_texels: float = 0.8) -> BoardTexture:
    """The board's printed pattern at ``square_px`` pixels per square, with a mip pyramid.

    ChArUco: OpenCV's own ``CharucoBoard.generateImage`` (so markers and the legacy pattern
    are exactly OpenCV's), origin at the outer corner of the top-left square. Chessboard:
    ``(nx + 1) x (ny + 1)`` squares, black top-left, whose first inner corner is the board
    origin. Level 0 is blurred by a ``blur_texels`` Gaussian (and each further level by
    ``cv2.pyrDown``'s), so that no level has steps sharper than its texels: sampled at a
    pixel rate near the texel rate (:func:`render_board_view`), the edges land where they
    should instead of snapping to the pixel grid (aliasing moved corners by up to 0.2 px).
    """
    if spec.kind == "charuco":
        sx, sy = spec.size_x, spec.size_y
        img = spec.cv_board().generateImage((sx * square_px, sy * square_px), marginSize=0, borderBits=1)
        origin = (0.0, 0.0)
    else:
        sx, sy = spec.size_x + 1, spec.size_y + 1
        cells = (np.add.outer(np.arange(sy), np.arange(sx)) % 2 * 255).astype(np.uint8)  # (sy, sx), 0 = black
        img = np.kron(cells, np.ones((square_px, square_px), np.uint8))
        origin = (-spec.square_m, -spec.square_m)
    if blur_texels > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_texels, borderType=cv2.BORDER_REPLICATE)
    levels = [img]
    for _ in range(num_levels - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return BoardTexture(tuple(levels), square_px / spec.square_m, origin, (sx * spec.square_m, sy * spec.square_m),
                        spec.square_m)


# Calibration board capture (make_board_poses): how an operator moves the board.
_BOARD_CANDIDATES = 12  # random poses tried per view; the one adding most to what is missing is kept
_BOARD_GOOD_TILT_DEG = 55.0  # a camera sees the board well within this angle between its ray and the normal
_BOARD_VOLUME_M = np.array([0.15, 0.15, 0.12])  # half-extents of the ellipsoid the board centre moves in
_BOARD_GRID = (6, 4)  # cells across and down each image that the board's corners should reach
_BOARD_TILT_DEG = 25.0  # largest turn of the board away from the direction it is aimed at
_BOARD_AIM_P = 0.5  # share of candidates brought to a random point of one camera's image
_BOARD_AIM_FILL = (0.35, 0.9)  # ... where it spans this fraction of the image diagonal
_BOARD_AIM_DEPTH = (0.5, 1.6)  # ... but within this fraction of the camera's distance to the origin


def _board_corners(texture: BoardTexture) -> np.ndarray:
    """``(N, 3)`` the board's inner corners in the board frame (every square corner inside the pattern)."""
    ox, oy = texture.origin_m
    nx = int(round(texture.size_m[0] / texture.square_m)) - 1
    ny = int(round(texture.size_m[1] / texture.square_m)) - 1
    jj, ii = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1))
    return np.stack([ox + jj.ravel() * texture.square_m, oy + ii.ravel() * texture.square_m,
                     np.zeros(nx * ny)], axis=1)


def _board_candidates(rig: CameraRig, mid_board: np.ndarray, board_diag_m: float, num: int, anchor_p: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """``(num, 4, 4)`` random world-from-board poses as an operator holds them (see :func:`make_board_poses`).

    Args:
        rig: the cameras.
        mid_board: ``(3,)`` the board's centre in the board frame.
        board_diag_m: the printed pattern's diagonal, metres.
        num: poses to draw.
        anchor_p: ``(C,)`` probability of each camera to be the one the board is turned to.
        rng: random generator.
    """
    C = len(rig)
    centers = np.stack([c.center for c in rig])
    poses = np.zeros((num, 4, 4))
    poses[:, 3, 3] = 1.0
    for j in range(num):
        a = int(rng.choice(C, p=anchor_p))
        if rng.random() < _BOARD_AIM_P:
            # brought to a random point of the anchor camera's image, at a distance where it fills a
            # random fraction of the image diagonal (within the dome)
            cam = rig[a]
            W, H = cam.image_size
            depth = cam.K[0, 0] * board_diag_m / (rng.uniform(*_BOARD_AIM_FILL) * np.hypot(W, H))
            depth = np.clip(depth, *(np.linalg.norm(cam.center) * np.array(_BOARD_AIM_DEPTH)))
            xy = cam.undistort(rng.uniform([0, 0], [W - 1, H - 1])[None])[0]
            center_w = cam.R.T @ (np.array([xy[0], xy[1], 1.0]) * depth - cam.t)
        else:
            u = _unit(rng.normal(size=3)) * rng.uniform(0, 1) ** (1 / 3)  # uniform in the unit ball
            center_w = u * _BOARD_VOLUME_M
        to_cams = _unit(centers - center_w)  # (C, 3) from the board to each camera
        if C == 1 or rng.random() < 0.1:
            # the dome's centre line: flat, towards the cameras above (or below) the volume
            up = np.sign(to_cams[a, 2]) or 1.0
            toward = np.array([0.0, 0.0, up])
        else:
            near = np.argsort(-(to_cams @ to_cams[a]))[1:3]  # the two nearest cameras as seen from the board
            group = np.concatenate([[a], near[: int(rng.integers(1, min(2, C - 1) + 1))]])
            toward = _unit(rng.dirichlet(np.ones(len(group))) @ to_cams[group])
        tilt = Rotation.from_rotvec(_unit(rng.normal(size=3)) * np.deg2rad(rng.uniform(0, _BOARD_TILT_DEG)))
        z = -tilt.apply(toward)  # the printed side (-z) faces the viewers
        x = np.cross([0.0, 0.0, 1.0], z)
        x = _unit(x if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0.0, 0.0]))
        x = Rotation.from_rotvec(z * np.deg2rad(rng.uniform(-90, 90))).apply(x)
        R = np.stack([x, np.cross(z, x), z], 1)  # columns: board axes in world
        poses[j, :3, :3] = R
        poses[j, :3, 3] = center_w - R @ mid_board
    return poses


def _board_views_in_cameras(rig: CameraRig, corners: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which cameras see each pose well, and the image cell of every corner.

    Returns:
        ``good (P, C)`` bool: the front faces the camera within ``_BOARD_GOOD_TILT_DEG`` and at
        least a third of the corners (and 6) are in its image; ``cell (P, C, N)`` int, the
        ``_BOARD_GRID`` cell of each corner, -1 outside the image.
    """
    P, N = len(poses), len(corners)
    gx, gy = _BOARD_GRID
    pts = corners[None] @ np.swapaxes(poses[:, :3, :3], 1, 2) + poses[:, None, :3, 3]  # (P, N, 3)
    mid = pts.mean(axis=1)  # (P, 3)
    normal = poses[:, :3, 2]  # (P, 3) board +z, away from the printed side's viewers
    good = np.zeros((P, len(rig)), bool)
    cell = np.full((P, len(rig), N), -1)
    for c, cam in enumerate(rig):
        W, H = cam.image_size
        ray = _unit(mid - cam.center)  # (P, 3) from the camera to the board
        cos_tilt = np.einsum("pk,pk->p", ray, normal)  # > 0: the camera sees the printed side
        depth = cam.to_camera(pts)[..., 2]
        uv = cam.project(pts)  # (P, N, 2)
        xy = cam.to_camera(pts)[..., :2] / np.maximum(depth, 1e-9)[..., None]
        lin = xy * np.diag(cam.K)[:2] + cam.K[:2, 2]  # undistorted pixels: no fold-back of the distortion
        inside = ((depth > 1e-3) & (uv[..., 0] >= 2) & (uv[..., 0] <= W - 3) & (uv[..., 1] >= 2) & (uv[..., 1] <= H - 3)
                  & (np.abs(lin[..., 0] - W / 2) < 0.75 * W) & (np.abs(lin[..., 1] - H / 2) < 0.75 * H))
        good[:, c] = (cos_tilt > np.cos(np.deg2rad(_BOARD_GOOD_TILT_DEG))) & (inside.sum(1) >= max(6, N // 3))
        col = np.clip(uv[..., 0] * gx // W, 0, gx - 1).astype(int)
        row = np.clip(uv[..., 1] * gy // H, 0, gy - 1).astype(int)
        cell[:, c] = np.where(inside, row * gx + col, -1)
    return good, cell


def make_board_poses(rig: CameraRig, texture: BoardTexture, num_views: int, seed: int) -> np.ndarray:
    """Board poses ``(N, 4, 4)`` world-from-board, as an operator moves the board through the shared volume.

    An operator waves the board through the volume the cameras share, turned towards a few
    neighbouring cameras at a time, and watches the live views to bring it where views are
    still missing. Each view is the best of ``_BOARD_CANDIDATES`` random poses, each drawn as:

    - a camera to turn to (the *anchor*), with probability ``1 / (1 + views so far)**2``;
    - the board centre uniform in an ellipsoid of half-extents ``_BOARD_VOLUME_M`` around the
      origin, or (with probability ``_BOARD_AIM_P``) on the ray of a uniform random pixel of
      the anchor's image, where the board spans ``_BOARD_AIM_FILL`` of the image diagonal
      (clipped to ``_BOARD_AIM_DEPTH`` times the camera's distance to the origin): this is
      how the corners and borders of every image get covered, often with the board partly
      outside the image;
    - the printed side facing a random point between the anchor and one or two of its
      nearest neighbours as seen from the board (9 poses in 10), or straight up or down the
      dome's centre line; then turned by up to ``_BOARD_TILT_DEG`` off that direction and
      rolled by up to 90 deg about its normal.

    A camera sees a pose *well* when the front faces it within ``_BOARD_GOOD_TILT_DEG`` and
    a third of the corners (at least 6) are in its image. The kept candidate maximises, over
    the cameras that see it well, ``2 / (1 + views so far)`` plus the ``_BOARD_GRID`` cells of
    the image its corners reach (each weighted ``1 / (1 + views that reached it)``, summed
    and divided by the number of cells), plus ``0.5 / (1 + shared views so far)`` per pair
    of them. So 2-4 cameras see most poses well (on a dome of 8 cameras), every camera's
    views spread over its image, and each camera sees the board in a subset of the poses
    only (others see it edge-on, from behind, partly or not at all). Deterministic per
    ``seed``; view ``i`` draws from its own stream, so the first views of a longer capture
    are the views of a shorter one.

    The board's front (the printed side) faces its ``-z`` axis.
    """
    C = len(rig)
    corners = _board_corners(texture)
    ox, oy = texture.origin_m
    mid_board = np.array([ox + texture.size_m[0] / 2, oy + texture.size_m[1] / 2, 0.0])
    diag = float(np.hypot(*texture.size_m))
    ncell = _BOARD_GRID[0] * _BOARD_GRID[1]
    views = np.zeros(C)  # good views per camera so far
    hits = np.zeros((C, ncell))  # good views reaching each cell of each camera's image
    shared = np.zeros((C, C))  # good views shared by each pair of cameras
    poses = np.zeros((num_views, 4, 4))
    for i in range(num_views):
        need = 1 / (1 + views) ** 2
        cand = _board_candidates(rig, mid_board, diag, _BOARD_CANDIDATES, need / need.sum(), _rng(seed, _CALIB, i))
        good, cell = _board_views_in_cameras(rig, corners, cand)
        score = np.zeros(len(cand))
        reach = np.zeros((len(cand), C, ncell), bool)
        for c in range(C):
            for j in range(len(cand)):
                reach[j, c, cell[j, c][cell[j, c] >= 0]] = True
        for j in range(len(cand)):
            seen = np.flatnonzero(good[j])
            score[j] = (2 * np.sum(1 / (1 + views[seen]))
                        + np.sum(reach[j, seen] / (1 + hits[seen])) / ncell
                        + 0.5 * np.sum(np.triu(1 / (1 + shared[np.ix_(seen, seen)]), 1)))
        best = int(np.argmax(score))
        seen = np.flatnonzero(good[best])
        views[seen] += 1
        hits[seen] += reach[best, seen]
        shared[np.ix_(seen, seen)] += 1
        poses[i] = cand[best]
    return poses


def board_visibility(camera: Camera, spec: BoardSpec, pose: np.ndarray) -> tuple[bool, int]:
    """Whether ``camera`` sees the board's front, and how many corners project inside the image."""
    corners = spec.object_points()  # (N, 3) board frame
    pts = corners @ pose[:3, :3].T + pose[:3, 3]
    front = bool((camera.center - pose[:3, 3]) @ pose[:3, 2] < 0)
    z = camera.to_camera(pts)[:, 2]
    uv = camera.project(pts)
    W, H = camera.image_size
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    return front, int(inside.sum()) if front else 0


def _sample_texture(texture: BoardTexture, tx: np.ndarray, ty: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Trilinear texture samples ``(n,)`` float at board points ``(tx, ty)`` (metres from the pattern's corner).

    ``level (n,)``: the (fractional) pyramid level of each sample; bilinear on the two levels
    around it, blended linearly. Outside the pattern: white paper (255).
    """
    out = np.zeros(len(tx))
    k0 = np.floor(level).astype(np.int64)
    frac = level - k0
    width = 1024  # cv2.remap wants maps under 32767 rows and columns
    rows = -(-len(tx) // width)
    for k in range(int(k0.min()), min(int(k0.max()) + 2, len(texture.levels))):
        weight = np.where(k0 == k, 1.0 - frac, 0.0) + np.where(k0 == k - 1, frac, 0.0)
        use = np.flatnonzero(weight > 0)
        if not len(use):
            continue
        ppm = texture.px_per_m / 2**k
        half = 0.5 / 2**k  # pyrDown centres texel i of level k on level-0 texel 2**k i
        map_x = np.full(rows * width, -1e4, np.float32)
        map_y = np.full(rows * width, -1e4, np.float32)
        map_x[: len(use)] = tx[use] * ppm - half
        map_y[: len(use)] = ty[use] * ppm - half
        tex = cv2.remap(texture.levels[k], map_x.reshape(rows, width), map_y.reshape(rows, width), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        out[use] += weight[use] * tex.reshape(-1)[: len(use)]
    return out


def render_board_view(camera: Camera, texture: BoardTexture, pose: np.ndarray, background: np.ndarray,
                      lighting: Lighting, margin_m: float | None = None) -> np.ndarray:
    """Render a board pose into one camera, exactly through its distortion, BGR uint8 ``(H, W, 3)``.

    Every pixel's undistorted ray meets the board plane; the front shows the board texture
    inside the squares' area and white paper in a margin around it (half a square by
    default); the back shows plain grey over the same area. The texture is sampled
    trilinearly from the pyramid level whose texels match the pixel's footprint on the
    board (the square root of the area one pixel covers there, from the pixel-to-board
    derivatives), so oblique and distant boards are filtered as a sensor would integrate
    them rather than aliased. Brightness follows the key light (Lambert + ambient). The
    result is blurred by a 0.6 px Gaussian (lens). Sensor noise is added by the caller.

    Args:
        camera: the camera.
        texture: :func:`board_texture` of the board.
        pose: ``(4, 4)`` world-from-board.
        background: ``(H, W, 3)`` the camera's background.
        lighting: the scene light.
        margin_m: white border width, metres (None: half a square).
    """
    W, H = camera.image_size
    check_shape(background, (H, W, 3), "background")
    ox, oy = texture.origin_m
    bw, bh = texture.size_m
    margin = 0.5 * texture.square_m if margin_m is None else margin_m
    R_wb, t_wb = pose[:3, :3], pose[:3, 3]
    grid = raycast.pixel_ray_grid(camera)
    c_b = R_wb.T @ (camera.center - t_wb)  # (3,) camera centre in board frame
    d_b = raycast.rotate_rows(camera.R @ R_wb, grid.x_n, grid.y_n)  # (H*W, 3): R_wb^T R^T (x_n, y_n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -c_b[2] / d_b[:, 2]  # ray parameter = camera-frame depth of the plane hit
        tx = c_b[0] + s * d_b[:, 0] - ox  # board x from the pattern's outer corner
        ty = c_b[1] + s * d_b[:, 1] - oy
    on = grid.valid & (s > 0) & (tx >= -margin) & (tx <= bw + margin) & (ty >= -margin) & (ty <= bh + margin)
    front = c_b[2] < 0  # the printed side faces -z
    facing = -R_wb[:, 2] if front else R_wb[:, 2]
    shade = 0.75 + 0.3 * max(0.0, float(lighting.direction @ facing))
    img = background.copy().reshape(-1, 3)
    if on.any():
        if front:
            # texels per pixel: sqrt |det d(tx, ty) / d(u, v)| (central differences; the plane is smooth)
            idx = np.flatnonzero(on)
            v, u = np.divmod(idx, W)
            right, left = np.where(u < W - 1, idx + 1, idx), np.where(u > 0, idx - 1, idx)
            down, up = np.where(v < H - 1, idx + W, idx), np.where(v > 0, idx - W, idx)
            du, dv = (right - left).astype(np.float64), ((down - up) // W).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                area = (tx[right] - tx[left]) * (ty[down] - ty[up]) - (tx[down] - tx[up]) * (ty[right] - ty[left])
                footprint = np.sqrt(np.abs(area) / (du * dv)) * texture.px_per_m
            footprint = np.where(np.isfinite(footprint), footprint, 1.0)
            level = np.clip(np.log2(np.maximum(footprint, 1e-6)), 0, len(texture.levels) - 1)
            tex = _sample_texture(texture, tx[idx], ty[idx], level)
            value = (25.0 + (235.0 - 25.0) / 255.0 * tex) * shade  # printed black .. white paper
        else:
            value = np.full(int(on.sum()), 130.0 * shade)  # the grey back of the board
        img[on] = np.clip(np.round(value), 0, 255).astype(np.uint8)[:, None]
    return cv2.GaussianBlur(img.reshape(H, W, 3), (0, 0), 0.6)


# --------------------------------------------------------------------------- detections without images


@dataclass(frozen=True)
class SyntheticViewSettings:
    """What a simulated detector sees.

    Attributes:
        noise_px: standard deviation of the Gaussian noise added to each coordinate, px.
        max_tilt_deg: corners are seen only when the board faces the camera within this
            angle (angle between the board normal and the viewing ray).
        min_corners: fewer visible corners than this give an empty detection.
        margin_px: corners closer than this to the image border are dropped.
    """

    noise_px: float = 0.0
    max_tilt_deg: float = 75.0
    min_corners: int = 6
    margin_px: float = 2.0


def synthetic_detections(
    camera: Camera,
    spec: BoardSpec,
    R_world_from_board: np.ndarray,
    t_world_from_board: np.ndarray,
    settings: SyntheticViewSettings = SyntheticViewSettings(),
    rng: np.random.Generator | None = None,
) -> list[Detection]:
    """What a detector would report for the board at given poses (for tests and simulation).

    Args:
        camera: the camera.
        spec: the board; a chessboard is all-or-nothing (as ``findChessboardCorners``).
        R_world_from_board: ``(V, 3, 3)``.
        t_world_from_board: ``(V, 3)`` metres.
        settings: noise and visibility rules.
        rng: random generator for the noise (required when ``noise_px > 0``).

    Returns:
        ``V`` detections (empty where the board is not seen).

    Convention:
        ``x_world = R_world_from_board @ x_board + t_world_from_board``; the printed side is
        seen when the board's +z axis points away from the camera.
    """
    check_shape(R_world_from_board, ("V", 3, 3), "R_world_from_board")
    check_shape(t_world_from_board, (R_world_from_board.shape[0], 3), "t_world_from_board")
    V = R_world_from_board.shape[0]
    obj = spec.object_points()  # (N, 3)
    pts_world = obj[None] @ np.swapaxes(R_world_from_board, 1, 2) + t_world_from_board[:, None]  # (V, N, 3)
    pts_cam = camera.to_camera(pts_world)  # (V, N, 3)
    uv = camera.project(pts_world)  # (V, N, 2)
    normal_cam = (camera.R @ R_world_from_board)[:, :, 2]  # (V, 3) board +z in the camera frame
    rays = pts_cam / np.linalg.norm(pts_cam, axis=-1, keepdims=True)  # (V, N, 3)
    cos_tilt = np.einsum("vnk,vk->vn", rays, normal_cam)  # (V, N)
    W, H = camera.image_size
    m = settings.margin_px
    # The distortion polynomial folds back far outside the image; keep corners whose
    # undistorted direction is within the image too (a generous 1.5x frame).
    xy = pts_cam[..., :2] / np.maximum(pts_cam[..., 2:3], 1e-9)
    lin_uv = xy * np.diag(camera.K)[:2] + camera.K[:2, 2]
    inside = (
        (pts_cam[..., 2] > 1e-3)
        & (cos_tilt > np.cos(np.deg2rad(settings.max_tilt_deg)))
        & (uv[..., 0] >= m) & (uv[..., 0] <= W - 1 - m) & (uv[..., 1] >= m) & (uv[..., 1] <= H - 1 - m)
        & (np.abs(lin_uv[..., 0] - W / 2) < 0.75 * W) & (np.abs(lin_uv[..., 1] - H / 2) < 0.75 * H)
    )  # fmt: skip
    if settings.noise_px > 0:
        if rng is None:
            raise HandannoError("synthetic_detections: noise_px > 0 needs an rng")
        uv = uv + rng.normal(0.0, settings.noise_px, uv.shape)
    out = []
    for v in range(V):
        keep = inside[v]
        if spec.kind == "chessboard" and not keep.all():
            keep = np.zeros_like(keep)
        if keep.sum() < settings.min_corners:
            out.append(Detection.empty(camera.image_size))
            continue
        ids = np.flatnonzero(keep)
        out.append(Detection(ids, uv[v, ids], camera.image_size, spec.num_markers))
    return out


@dataclass(frozen=True)
class BoardPoseSample:
    """Random board poses around a point, facing given directions (for simulation).

    Attributes:
        center_m: ``(3,)`` where the boards gather, world metres.
        spread_m: standard deviation of the board centre around ``center_m``, metres.
        max_tilt_deg: random tilt of the board normal away from its facing direction.
    """

    center_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spread_m: float = 0.15
    max_tilt_deg: float = 35.0


def random_board_poses(
    spec: BoardSpec,
    facing_world: np.ndarray,
    sample: BoardPoseSample,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Random board poses whose printed side faces the given directions.

    Args:
        spec: the board (its centre is put at the sampled point).
        facing_world: ``(V, 3)`` unit vectors from the board towards the viewer it faces.
        sample: where and how much to scatter.
        rng: random generator.

    Returns:
        ``R_world_from_board (V, 3, 3)`` and ``t_world_from_board (V, 3)``.
    """
    from scipy.spatial.transform import Rotation

    check_shape(facing_world, ("V", 3), "facing_world")
    V = facing_world.shape[0]
    nx, ny = spec.inner_corners
    offset = 1.0 if spec.kind == "charuco" else 0.0
    board_centre = np.array([(offset + (nx - 1) / 2) * spec.square_m, (offset + (ny - 1) / 2) * spec.square_m, 0.0])
    Rs, ts = [], []
    for v in range(V):
        f = facing_world[v] / np.linalg.norm(facing_world[v])
        z = -f  # board +z points away from the viewer
        tilt = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(sample.max_tilt_deg) / 2).as_matrix()
        z = tilt @ z
        helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z], axis=1)
        spin = Rotation.from_rotvec(z * rng.uniform(-np.pi, np.pi)).as_matrix()
        R = spin @ R
        centre = np.asarray(sample.center_m) + rng.normal(0.0, sample.spread_m, 3)
        Rs.append(R)
        ts.append(centre - R @ board_centre)
    return np.stack(Rs), np.stack(ts)
