"""Synthetic multi-camera hand captures with known answers (``handanno synth``).

A session is a dome of distorted cameras around a posed hand model (the open hand model or
MANO), rendered exactly by per-pixel ray casting (:mod:`handanno.annotate.raycast`), plus
calibration-board views (ChArUco or chessboard) through the same cameras. Everything the later stages estimate
is written next to the images: ``rig.json``, ``ground_truth/``, ``masks_gt/``,
``keypoints2d/`` (ground truth + noise + outliers) and ``calib/board_poses.json``.

The helpers here are pure (arrays in, arrays out, randomness from an explicit
``numpy.random.Generator``); :func:`synthesize` wires them together and hands the files
to :mod:`handanno.annotate.synth_io`.

Convention:
    - World frame: metres, z up; the hand volume's centre is the origin. Cameras follow
      :mod:`handanno.calibration.camera` (``x_cam = R @ x_world + t``, OpenCV axes,
      ``dist = [k1, k2, p1, p2, k3]``, ``image_size = (width, height)``).
    - Images are BGR uint8 ``(H, W, 3)``; masks uint8 ``(H, W)`` 0 / 255.
    - Hand parameters as DESIGN.md: ``pose (48,)`` = 3 global axis-angle + 45 articulation
      axis-angle relative to ``hands_mean``; ``betas (10,)``; ``trans (3,)``; joints are the
      21 FreiHAND keypoints in world metres.
    - Randomness: every stream is ``numpy.random.default_rng([seed, stream, *ids])``, so a
      frame's or camera's draws do not depend on how many frames / cameras are made before
      it, and one seed gives byte-identical sessions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from handanno.annotate import raycast
from handanno.calibration.board import BoardSpec, parse_board_spec
from handanno.calibration.camera import Camera, CameraRig, look_at
from handanno.check import check_shape
from handanno.data.conventions import (
    FREIHAND_FROM_EXTENDED,
    MANO_PARENTS,
    NUM_BETAS,
    NUM_JOINTS,
    NUM_MANO_JOINTS,
)
from handanno.errors import HandannoError
from handanno.models.hand_axes import HandAxes, hand_axes
from handanno.models.hand_axes import unit as _unit

log = logging.getLogger(__name__)

# Random stream ids (first entry after the seed), one per purpose.
_RIG, _SHAPE, _MOTION, _BACKGROUND, _NOISE, _KEYPOINTS, _CALIB, _ALBEDO, _LIGHT = range(1, 10)

# Elevations (degrees) of cameras 0, 1, 2, ... (cycled): a dome with some views from below.
_ELEVATIONS_DEG = (25.0, 50.0, -30.0, 10.0, 65.0, -12.0, 38.0, -42.0)
# Palm-centre keypoints (wrist and the four finger knuckles), FreiHAND order.
_PALM_KEYPOINTS = (0, 5, 9, 13, 17)
# Keypoint visibility: any surface less than this (m) in front of a joint does not hide it...
OCCLUSION_TOLERANCE_M = 0.01
# ... nor does the joint's own skin (the bones meeting at it) less than this in front of it.
OWN_SURFACE_DEPTH_M = 0.03


def _rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(int(i) for i in ids)])


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SynthSettings:
    """Everything :func:`synthesize` needs.

    Attributes:
        out_dir: the session folder to write.
        num_cameras: cameras in the dome (``cam0 .. camN-1``).
        num_frames: frames of hand motion.
        hand: ``"right"`` or ``"left"``.
        model_dir: MANO folder; None uses handanno's open hand model.
        image_size: ``(width, height)`` pixels.
        seed: the one seed of every random draw.
        keypoint_noise_px: std of the Gaussian noise on the written 2D keypoints, pixels.
        outlier_rate: probability that an in-image keypoint is replaced by a random
            wrong position in the image (with a plausible confidence).
        calib_views: number of ChArUco board poses rendered into every camera.
        board: board spec, ``charuco:SXxSY:SQUARE_M:MARKER_M:DICT`` or
            ``chessboard:NXxNY:SQUARE_M`` (:func:`handanno.calibration.board.parse_board_spec`).
        background: ``"texture"`` (procedural clutter per camera) or ``"green"``.
        write_calib: write ``calib/`` (board views and their true poses).
        write_keypoints: write ``keypoints2d/``.
        image_format: ``"jpg"`` (quality 95; about 70 KB and 1 ms per 640x480 image) or
            ``"png"`` (lossless, so background pixels are exact; about 450 KB and 60 ms).
            Applies to ``images/`` and ``calib/``; masks are always PNG.
        image_noise_std: std of the per-frame sensor noise added to every image, in grey
            levels; 0 makes the background pixels of every frame equal to
            :func:`make_background`.
        fps: frame rate of the motion (sets how far the hand moves between frames).
        force: allow writing into a non-empty folder made by an earlier ``synth`` run (its
            synthetic outputs are removed first).
        write_workers: threads that encode and write files.
        progress: show tqdm progress bars.
    """

    out_dir: Path
    num_cameras: int = 8
    num_frames: int = 50
    hand: str = "right"
    model_dir: Path | None = None
    image_size: tuple[int, int] = (640, 480)
    seed: int = 0
    keypoint_noise_px: float = 0.0
    outlier_rate: float = 0.0
    calib_views: int = 20
    board: str = "charuco:7x5:0.04:0.03:DICT_4X4_50"
    background: str = "texture"
    write_calib: bool = True
    write_keypoints: bool = True
    image_format: str = "jpg"
    image_noise_std: float = 1.5
    fps: float = 15.0
    force: bool = False
    write_workers: int = 3
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.model_dir is not None:
            object.__setattr__(self, "model_dir", Path(self.model_dir))
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 16:
            raise HandannoError(f"image size must be WIDTHxHEIGHT with both >= 16, got {self.image_size}")
        object.__setattr__(self, "image_size", size)
        if self.num_cameras < 1 or self.num_frames < 1:
            raise HandannoError("synth needs at least 1 camera and 1 frame")
        if self.hand not in ("right", "left"):
            raise HandannoError(f"--hand must be right or left, got {self.hand!r}")
        if self.background not in ("texture", "green"):
            raise HandannoError(f"--background must be texture or green, got {self.background!r}")
        if self.image_format not in ("png", "jpg"):
            raise HandannoError(f"image format must be png or jpg, got {self.image_format!r}")
        if not 0.0 <= self.outlier_rate <= 1.0:
            raise HandannoError(f"--outlier-rate must be in [0, 1], got {self.outlier_rate}")
        if self.keypoint_noise_px < 0 or self.image_noise_std < 0:
            raise HandannoError("noise levels must be >= 0")
        if self.calib_views < 0:
            raise HandannoError("--calib-views must be >= 0")


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize` made.

    Attributes:
        out_dir: the session folder.
        rig: the true cameras (also in ``rig.json``).
        frame_stems: file stems of the frames, ``"000000"``, ...
        calib_stems: file stems of the calibration views (empty without calibration).
        camera_roles: per camera name, ``"dome"``, ``"close"`` (near and long focal: the
            hand leaves the image in some frames) or ``"offset"`` (aimed beside the hand,
            which sits near the image border).
        timings_s: wall seconds per stage (``rig``, ``motion_mesh``, ``render``,
            ``keypoints``, ``calib``, ``preview``, ``write_wait``, ``total``) plus
            ``write_cpu`` (encode + write seconds summed over the writer threads).
        num_files: files written.
    """

    out_dir: Path
    rig: CameraRig
    frame_stems: tuple[str, ...]
    calib_stems: tuple[str, ...]
    camera_roles: dict[str, str]
    timings_s: dict[str, float] = field(default_factory=dict)
    num_files: int = 0


# --------------------------------------------------------------------------- rig


def make_rig(num_cameras: int, image_size: tuple[int, int], seed: int) -> tuple[CameraRig, dict[str, str]]:
    """A dome of cameras around the origin with realistic, different intrinsics.

    Camera ``i`` sits at elevation ``_ELEVATIONS_DEG[i % 8]`` (jittered; some below the
    hand), azimuth ``360 i / C`` (jittered), 0.45-0.8 m from the origin, looking at it
    (rolled by up to 4 degrees). Focal lengths make a 0.3 m volume around the hand fill
    65-95 % of the image height (500-1200 px at 640x480, scaled with the image: the hand
    itself spans about a third to a half of it), ``fy / fx`` within 0.5 %, the
    principal point within 5 % of the centre, ``|k1| <= 0.15``, ``|k2| <= 0.05``,
    ``|p1|, |p2| <= 0.002``, ``k3 = 0``. Camera 1 is ``"close"`` (0.42 m, long focal: the
    fingers leave the image in some frames) and camera 3 (camera 2 in a 3-camera rig) is
    ``"offset"`` (aimed 7 cm beside the hand, which then sits near an image border).

    Args:
        num_cameras: C.
        image_size: ``(width, height)``.
        seed: random seed (stream ``_RIG``; camera ``i`` draws from its own stream).

    Returns:
        ``(rig, roles)``: the cameras ``cam0 .. camC-1`` and each one's role.
    """
    W, H = image_size
    scale = min(W / 640.0, H / 480.0)
    close = 1 if num_cameras >= 2 else -1
    offset = 3 if num_cameras >= 4 else (2 if num_cameras == 3 else -1)
    az0 = _rng(seed, _RIG).uniform(0, 2 * np.pi)
    cameras, roles = [], {}
    for i in range(num_cameras):
        rng = _rng(seed, _RIG, i)
        name = f"cam{i}"
        elev = np.deg2rad(_ELEVATIONS_DEG[i % len(_ELEVATIONS_DEG)] + rng.uniform(-6, 6))
        azim = az0 + 2 * np.pi * i / num_cameras + np.deg2rad(rng.uniform(-10, 10))
        radius = rng.uniform(0.45, 0.8)
        fill = rng.uniform(0.65, 0.95)  # fraction of the image height a 0.3 m hand volume fills
        focal = np.clip(fill * H * radius / 0.3, 500 * scale, 1200 * scale)
        target = np.zeros(3)
        role = "dome"
        if i == close:
            role, radius, focal = "close", 0.42, 1000 * scale
        center = radius * np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
        if i == offset:
            role = "offset"
            side = np.cross(center, [0.0, 0.0, 1.0])
            target = 0.07 * side / np.linalg.norm(side)
        R, t = look_at(center, target, np.deg2rad(rng.uniform(-4, 4)))
        fx = focal
        fy = focal * rng.uniform(0.995, 1.005)
        cx = (W - 1) / 2 + rng.uniform(-0.05, 0.05) * W
        cy = (H - 1) / 2 + rng.uniform(-0.05, 0.05) * H
        k1, k2 = rng.uniform(-0.15, 0.1), rng.uniform(-0.05, 0.05)
        dist = [k1, k2, rng.uniform(-2e-3, 2e-3), rng.uniform(-2e-3, 2e-3), 0.0]
        K = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
        cameras.append(Camera(name, K, dist, R, t, (W, H)))
        roles[name] = role
    return CameraRig.from_cameras(cameras), roles


# --------------------------------------------------------------------------- motion


def smooth_signal(rng: np.random.Generator, num_frames: int, fps: float, freq_hz: tuple[float, float] = (0.1, 0.5),
                  num_terms: int = 3) -> np.ndarray:
    """A smooth random signal ``(T,)`` in ``[-1, 1]``: a sum of low-frequency sinusoids.

    Term ``k`` has a random frequency in ``freq_hz``, a random phase and amplitude
    ``1 / (k + 1)``; the sum is divided by the amplitudes' sum, so it never leaves [-1, 1].

    Example:
        >>> x = smooth_signal(np.random.default_rng(0), 50, 15.0)
        >>> x.shape, bool(np.abs(x).max() <= 1), bool(np.abs(np.diff(x)).max() < 0.25)
        ((50,), True, True)
    """
    t = np.arange(num_frames) / fps  # (T,) seconds
    amps = 1.0 / np.arange(1, num_terms + 1)
    freqs = rng.uniform(*freq_hz, size=num_terms)
    phases = rng.uniform(0, 2 * np.pi, size=num_terms)
    return (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0) / amps.sum()


def articulation_trajectory(axes: HandAxes, num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth, anatomically bounded finger motion as full MANO joint axis-angles ``(T, 15, 3)``.

    Every session holds its own hand posture, about which the fingers move: a grip strength
    ``g ~ U(0, 1)`` shared by the hand and one ``u ~ U(0, 1)`` per finger give each finger's
    mean curl ``0.5 g + 0.5 u`` (open hands, fists, pointing and in between); the curl then
    moves by up to 0.35 about it, 60 % a shared signal and 40 % its own (0.15-0.6 Hz). MCP
    flexes in [-10, 80] deg, PIP in [0, 100] deg, DIP = 0.7 PIP (tendon coupling). The
    knuckles spread by up to about 12 deg, less when curled. The thumb's mean opposition
    ``0.4 g + 0.6 u`` moves likewise; its CMC moves in front of the palm (0-40 deg) and across
    it (-15-25 deg), MCP 0-50 deg, IP -10-70 deg. Angles are "full" (relative to the flat
    hand), not relative to ``hands_mean``.
    """
    T = num_frames
    freq = (0.15, 0.6)
    common = smooth_signal(rng, T, fps, freq)
    out = np.zeros((T, 15, 3))
    d2r = np.pi / 180
    # MANO finger joints (first of three) and their spread direction / weight.
    fingers = {"index": (1, -1.0), "middle": (4, -0.2), "ring": (10, 0.6), "pinky": (7, 1.3)}
    spread_amt = 0.5 + 0.5 * smooth_signal(rng, T, fps, (0.05, 0.3))  # (T,) in [0, 1]
    grip = rng.uniform(0.0, 1.0)
    for j0, spread_dir in fingers.values():
        mean_curl = 0.5 * grip + 0.5 * rng.uniform(0.0, 1.0)
        curl = np.clip(mean_curl + 0.35 * (0.6 * common + 0.4 * smooth_signal(rng, T, fps, freq)), 0.0, 1.0)  # (T,)
        pip = np.clip(curl + 0.2 * smooth_signal(rng, T, fps), 0.0, 1.0)
        mcp_deg = -10 + 90 * curl
        pip_deg = 100 * pip
        dip_deg = 0.7 * pip_deg + 5 * smooth_signal(rng, T, fps)
        spread_deg = spread_dir * 9 * spread_amt * (1 - 0.7 * curl)
        out[:, j0 - 1] = mcp_deg[:, None] * d2r * axes.flex[j0 - 1] + spread_deg[:, None] * d2r * axes.spread[j0 - 1]
        out[:, j0] = pip_deg[:, None] * d2r * axes.flex[j0]
        out[:, j0 + 1] = np.clip(dip_deg, 0, 75)[:, None] * d2r * axes.flex[j0 + 1]
    mean_thumb = 0.4 * grip + 0.6 * rng.uniform(0.0, 1.0)
    thumb = np.clip(mean_thumb + 0.35 * (0.5 * common + 0.5 * smooth_signal(rng, T, fps, freq)), 0, 1)  # (T,)
    cmc_front = 40 * thumb
    cmc_across = -15 + 40 * np.clip(thumb + 0.2 * smooth_signal(rng, T, fps), 0, 1)
    mcp = 50 * np.clip(thumb + 0.15 * smooth_signal(rng, T, fps), 0, 1)
    ip = -10 + 80 * np.clip(thumb + 0.2 * smooth_signal(rng, T, fps), 0, 1)
    n, s = axes.palm_normal, axes.thumb_side
    d_thumb = _unit(np.cross(axes.spread[12], s))  # in-plane direction of the thumb's first bone
    front_axis = _unit(np.cross(d_thumb, n))
    out[:, 12] = (cmc_front[:, None] * front_axis + cmc_across[:, None] * axes.spread[12]) * d2r
    out[:, 13] = mcp[:, None] * d2r * axes.flex[13]
    out[:, 14] = ip[:, None] * d2r * axes.flex[14]
    return out


def global_rotation_trajectory(axes: HandAxes, rest_joints: np.ndarray, num_frames: int, fps: float,
                               rng: np.random.Generator) -> np.ndarray:
    """Wrist orientation over time, ``(T, 3, 3)`` world-from-rest rotations.

    The base orientation points the fingers up (world +z, tilted by 10-30 deg) with the
    palm towards a random horizontal direction; on top, a smooth rotation of up to about
    50 deg about the vertical and 20 deg about the horizontal axes.
    """
    f = _unit(rest_joints[9] - rest_joints[0])
    n = axes.palm_normal
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(10, 30))
    palm_dir = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    finger_dir = _unit(np.array([0.0, 0.0, 1.0]) * np.cos(tilt) - palm_dir * np.sin(tilt))
    palm_dir = _unit(palm_dir - finger_dir * (palm_dir @ finger_dir))
    n_rest = _unit(n - f * (n @ f))
    src = np.stack([f, n_rest, np.cross(f, n_rest)], 1)  # columns: rest axes
    dst = np.stack([finger_dir, palm_dir, np.cross(finger_dir, palm_dir)], 1)
    R_base = dst @ src.T  # (3, 3): rest -> world
    rotvec = np.stack([
        np.deg2rad(20) * smooth_signal(rng, num_frames, fps, (0.05, 0.3)),
        np.deg2rad(20) * smooth_signal(rng, num_frames, fps, (0.05, 0.3)),
        np.deg2rad(50) * smooth_signal(rng, num_frames, fps, (0.05, 0.25)),
    ], 1)  # (T, 3) world axes
    return Rotation.from_rotvec(rotvec).as_matrix() @ R_base  # (T, 3, 3)


@dataclass(frozen=True)
class HandMotion:
    """A hand sequence in the model's parameter space and its posed meshes.

    Attributes:
        pose: ``(T, 48)`` 3 global axis-angle + 45 articulation relative to ``hands_mean``.
        betas: ``(10,)`` shape, fixed over the session.
        trans: ``(T, 3)`` metres.
        vertices: ``(T, V, 3)`` world metres (float64 copies of the layer's output).
        joints: ``(T, 21, 3)`` FreiHAND keypoints, world metres.
        faces: ``(F, 3)`` int64.
        rest_vertices: ``(V, 3)`` the flat hand (articulation 0, no global rotation), palm
            centre at the origin (for albedo patterns).
        axes: the articulation axes the motion was built with.
    """

    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    faces: np.ndarray
    rest_vertices: np.ndarray
    axes: HandAxes


def _run_layer(layer, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray):
    import torch

    T = pose.shape[0]
    with torch.no_grad():
        out = layer(
            torch.as_tensor(pose, dtype=torch.float32),
            torch.as_tensor(np.broadcast_to(betas, (T, NUM_BETAS)).copy(), dtype=torch.float32),
            torch.as_tensor(trans, dtype=torch.float32),
        )
    return out.vertices.double().numpy(), out.joints.double().numpy()


def make_motion(layer, hands_mean: np.ndarray, side: str, num_frames: int, fps: float, seed: int) -> HandMotion:
    """Draw a shape and a smooth motion and pose the hand model for every frame.

    Betas are ``N(0, 1)`` clipped to [-2, 2]. The articulation comes from
    :func:`articulation_trajectory`, the wrist rotation from
    :func:`global_rotation_trajectory`; the translation keeps the palm centre within a
    few cm of the origin (smooth drift of up to 3 cm per axis).

    Args:
        layer: a ``ManoLayer`` (``layer(pose (B,48), betas (B,10), trans (B,3))`` ->
            ``vertices (B,V,3)``, ``joints (B,21,3)``; ``layer.faces (F,3)``).
        hands_mean: ``(45,)`` the model's mean articulation (pose is relative to it).
        side: ``"right"`` or ``"left"``.
        num_frames: T.
        fps: frames per second of the motion.
        seed: random seed.

    Returns:
        :class:`HandMotion`. The pose and betas are exactly what was fed to the layer (float32
        values), so the layer reproduces the ground truth.
    """
    hands_mean = np.asarray(hands_mean, np.float64).reshape(45)
    betas = np.clip(_rng(seed, _SHAPE).normal(size=NUM_BETAS), -2.0, 2.0).astype(np.float32).astype(np.float64)
    flat = np.concatenate([np.zeros(3), -hands_mean])[None]  # (1, 48): full articulation 0
    rest_v, rest_j = _run_layer(layer, flat, betas, np.zeros((1, 3)))
    rest_v, rest_j = rest_v[0], rest_j[0]
    axes = hand_axes(rest_j, side)
    rng = _rng(seed, _MOTION)
    full = articulation_trajectory(axes, num_frames, fps, rng)  # (T, 15, 3)
    R = global_rotation_trajectory(axes, rest_j, num_frames, fps, rng)  # (T, 3, 3)
    pose = np.concatenate([Rotation.from_matrix(R).as_rotvec(), full.reshape(num_frames, 45) - hands_mean], 1)
    pose = pose.astype(np.float32).astype(np.float64)  # (T, 48): what the layer sees
    drift = 0.03 * np.stack([smooth_signal(rng, num_frames, fps, (0.05, 0.3)) for _ in range(3)], 1)  # (T, 3)
    _, j0 = _run_layer(layer, pose, betas, np.zeros((num_frames, 3)))
    palm = j0[:, list(_PALM_KEYPOINTS)].mean(1)  # (T, 3)
    trans = (drift - palm).astype(np.float32).astype(np.float64)
    verts, joints = _run_layer(layer, pose, betas, trans)
    faces = np.asarray(layer.faces.cpu().numpy() if hasattr(layer.faces, "cpu") else layer.faces, np.int64)
    return HandMotion(pose, betas, trans, verts, joints, faces, rest_v - rest_j[list(_PALM_KEYPOINTS)].mean(0), axes)


# --------------------------------------------------------------------------- appearance


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.power(np.asarray(c, np.float64) / 255.0, 2.2)


_SKIN_TONES_RGB = ((236, 196, 170), (224, 172, 140), (198, 140, 105), (160, 105, 75), (110, 70, 50))


def skin_albedo(rest_vertices: np.ndarray, faces: np.ndarray, palm_normal: np.ndarray, seed: int) -> np.ndarray:
    """Per-vertex linear RGB albedo ``(V, 3)``: a skin tone with smooth blotches, a pinker palm.

    The tone is one of five (light to dark) jittered by a few percent; three random plane
    waves (wavelengths 2-6 cm) modulate it by about 6 %; vertices whose rest normal faces
    the palm side are a little lighter and redder.
    """
    rng = _rng(seed, _ALBEDO)
    tone = np.array(_SKIN_TONES_RGB[rng.integers(len(_SKIN_TONES_RGB))], np.float64) * rng.uniform(0.95, 1.05, 3)
    base = _srgb_to_linear(np.clip(tone, 0, 255))  # (3,)
    v = np.asarray(rest_vertices, np.float64)
    waves = np.zeros(len(v))
    for _ in range(3):
        k = _unit(rng.normal(size=3)) * 2 * np.pi / rng.uniform(0.02, 0.06)
        waves += np.sin(v @ k + rng.uniform(0, 2 * np.pi)) / 3
    palm = np.clip(raycast.vertex_normals(v, faces) @ palm_normal, 0, 1)  # (V,)
    albedo = base[None] * (1 + 0.06 * waves[:, None])
    albedo *= 1 + palm[:, None] * np.array([0.10, 0.0, -0.04])[None]
    return np.clip(albedo, 0, 1)


@dataclass(frozen=True)
class Lighting:
    """A directional key light plus hemisphere ambient (world frame, linear RGB).

    Attributes:
        direction: ``(3,)`` unit vector towards the light.
        key: ``(3,)`` key light colour and intensity.
        sky: ``(3,)`` ambient from above (normals along +z).
        ground: ``(3,)`` ambient from below.
        specular: strength of the Blinn-Phong highlight.
        shininess: its exponent.
    """

    direction: np.ndarray
    key: np.ndarray
    sky: np.ndarray
    ground: np.ndarray
    specular: float = 0.05
    shininess: float = 24.0


def make_lighting(seed: int) -> Lighting:
    """A random lighting: key light 35-70 deg above the horizon, warm-ish, soft hemisphere fill."""
    rng = _rng(seed, _LIGHT)
    az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(35, 70))
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    key = rng.uniform(0.85, 1.05) * np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.85, 0.97)])
    return Lighting(d, key, np.array([0.36, 0.37, 0.40]), np.array([0.16, 0.15, 0.14]))


def shade_hits(
    hits: raycast.RayHits,
    camera: Camera,
    faces: np.ndarray,
    vertex_normals: np.ndarray,
    albedo: np.ndarray,
    lighting: Lighting,
    gain_rgb: np.ndarray,
    light_vis: np.ndarray | None = None,
) -> np.ndarray:
    """Colours of the hit pixels, BGR uint8 ``(N, 3)`` in the order of ``hits.pixel_index``.

    Smooth (interpolated) normals facing the camera; wrapped Lambert key light (wrap 0.35,
    a soft terminator like skin's subsurface light), hemisphere ambient, Blinn-Phong
    highlight; ``gain_rgb`` is the camera's exposure x white balance; sRGB gamma 2.2.

    Args:
        hits: the cast.
        camera: the camera.
        faces: ``(F, 3)``.
        vertex_normals: ``(V, 3)`` world unit normals of the posed mesh.
        albedo: ``(V, 3)`` linear RGB.
        lighting: the light.
        gain_rgb: ``(3,)`` per-channel gain.
        light_vis: ``(V,)`` fraction of the key light each vertex sees
            (:func:`light_visibility`, interpolated here; None: all of it). Shadows fade out where the surface
            turns away from the light anyway (``n . l < 0.3``), which hides the jagged
            "shadow terminator" of a coarse mesh.
    """
    idx = hits.pixel_index
    n = _unit(raycast.interpolate_vertex_attributes(hits, faces, vertex_normals) + 1e-12)  # (N, 3)
    rays = raycast.camera_rays_world(camera, idx)[:, 3:].astype(np.float64)  # (N, 3) towards the scene
    view = -_unit(rays)
    n = np.where((np.sum(n * view, 1) < 0)[:, None], -n, n)  # face the camera
    a = raycast.interpolate_vertex_attributes(hits, faces, albedo)  # (N, 3)
    ndl = n @ lighting.direction
    diffuse = np.clip((ndl + 0.35) / 1.35, 0, 1)
    if light_vis is not None:
        light_vis = raycast.interpolate_vertex_attributes(hits, faces, light_vis[:, None])[:, 0]  # (N,)
        fade = np.clip(ndl / 0.3, 0, 1) ** 2  # shadowing only where the light would be bright
        light_vis = 1.0 - (1.0 - light_vis) * fade
        diffuse = diffuse * (0.2 + 0.8 * light_vis)
    hemi = 0.5 + 0.5 * n[:, 2]
    ambient = lighting.ground[None] + hemi[:, None] * (lighting.sky - lighting.ground)[None]  # (N, 3)
    half = _unit(view + lighting.direction[None])
    spec = lighting.specular * np.clip(np.sum(n * half, 1), 0, 1) ** lighting.shininess * (ndl > 0)
    if light_vis is not None:
        spec = spec * light_vis
    rgb = a * (ambient + diffuse[:, None] * lighting.key[None]) + spec[:, None] * lighting.key[None]
    rgb = np.clip(rgb * gain_rgb[None], 0, 1) ** (1 / 2.2)
    return np.round(rgb[:, ::-1] * 255).astype(np.uint8)  # RGB -> BGR


# Directions (relative, before normalising) of the shadow rays: a small area light, about 8 deg wide.
_LIGHT_JITTER = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.87], [-0.5, 0.87], [-1.0, 0.0], [-0.5, -0.87],
                          [0.5, -0.87]]) * 0.07  # fmt: skip


def light_visibility(scene, vertices: np.ndarray, vertex_normals: np.ndarray, lighting: Lighting) -> np.ndarray:
    """``(V,)`` float in [0, 1]: the fraction of the key light each vertex sees (soft shadows).

    Seven rays per vertex towards a small area light (directions spread about 8 deg
    around ``lighting.direction``), leaving the surface 1.5 mm along the vertex normal.
    Shading interpolates it across faces, which gives shadow edges a penumbra about one
    face wide, and costs ``7 V`` rays per frame for all cameras together instead of rays
    per pixel.

    Args:
        scene: the posed hand's scene (:func:`handanno.annotate.raycast.build_scene`).
        vertices: ``(V, 3)`` world, metres.
        vertex_normals: ``(V, 3)`` unit outward normals.
        lighting: the light.
    """
    check_shape(vertices, ("V", 3), "vertices")
    V = len(vertices)
    d = lighting.direction
    t1 = _unit(np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0]))
    t2 = np.cross(d, t1)
    K = len(_LIGHT_JITTER)
    rays = np.empty((K, V, 6), np.float32)
    origin = vertices + 1.5e-3 * vertex_normals
    for k, (a, b) in enumerate(_LIGHT_JITTER):
        rays[k, :, :3] = origin
        rays[k, :, 3:] = _unit(d + a * t1 + b * t2)
    blocked = np.isfinite(scene.cast_rays(rays.reshape(K * V, 6))["t_hit"]).reshape(K, V)
    return 1.0 - blocked.mean(0)


def make_background(image_size: tuple[int, int], kind: str, seed: int, camera_index: int) -> np.ndarray:
    """A static background of one camera, BGR uint8 ``(H, W, 3)``.

    ``"texture"``: a two-colour gradient, a floor/table band, low-frequency blotches,
    8-18 random rectangles (some rotated) and circles in muted or vivid colours, slightly
    out of focus, with vignetting. ``"green"``: a green screen with uneven lighting.
    """
    W, H = image_size
    rng = _rng(seed, _BACKGROUND, camera_index)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
    vignette = (1 - 0.18 * r2)[..., None]
    if kind == "green":
        base = np.array([55, 170, 45], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        ang = rng.uniform(0, 2 * np.pi)
        ramp = ((xx * np.cos(ang) + yy * np.sin(ang)) / max(W, H))[..., None]
        img = base[None, None] * (0.92 + 0.16 * ramp) * vignette
        img += cv2.resize(rng.normal(0, 3, (max(H // 40, 2), max(W // 40, 2), 3)).astype(np.float32), (W, H),
                          interpolation=cv2.INTER_CUBIC)
        return np.clip(img, 0, 255).astype(np.uint8)
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(ang) + yy * np.sin(ang)) / (W + H) + 0.5
    img = (c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]).astype(np.float32)
    horizon = rng.uniform(0.55, 0.9) * H
    floor = rng.uniform(30, 170, 3).astype(np.float32)
    img = np.where((yy > horizon + 0.1 * (xx - W / 2) * rng.uniform(-1, 1))[..., None], floor[None, None], img)
    for cells, amp, chroma in ((80, 14.0, 0.5), (16, 7.0, 0.2), (4, 4.0, 0.1)):  # blotches to fine grain
        shape = (max(H // cells, 2), max(W // cells, 2))
        lum = rng.normal(0, amp, (*shape, 1))
        small = (lum + chroma * rng.normal(0, amp, (*shape, 3))).astype(np.float32)
        img += cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(8, 19)):
        vivid = rng.random() < 0.3
        color = rng.uniform(0, 255, 3) if vivid else rng.uniform(50, 200) + rng.normal(0, 20, 3)
        color = tuple(float(c) for c in np.clip(color, 0, 255))
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        size = rng.uniform(0.05, 0.35) * min(W, H)
        if rng.random() < 0.35:
            cv2.circle(img, (int(cx), int(cy)), int(size / 2), color, -1, cv2.LINE_AA)
        else:
            box = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.2, 1.5)), rng.uniform(-30, 30)))
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], color, cv2.LINE_AA)
            if rng.random() < 0.5:
                edge = tuple(0.6 * c for c in color)
                cv2.polylines(img, [np.round(box).astype(np.int32)], True, edge, 2, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    return np.clip(img.astype(np.float32) * vignette, 0, 255).astype(np.uint8)


def noise_bank(image_size: tuple[int, int], std: float, seed: int, size: int = 6) -> np.ndarray:
    """``(size, H, W, 3)`` int16 Gaussian sensor-noise fields, drawn once per session."""
    W, H = image_size
    rng = _rng(seed, _NOISE)
    return np.round(rng.normal(0, std, (size, H, W, 3)).astype(np.float32)).astype(np.int16)


def add_noise(image: np.ndarray, bank: np.ndarray | None, seed: int, *ids: int) -> np.ndarray:
    """``image`` plus one field of ``bank``, picked and rolled by ``(seed, *ids)``."""
    if bank is None:
        return image
    rng = _rng(seed, _NOISE, *ids)
    H, W = image.shape[:2]
    field_ = np.roll(bank[rng.integers(len(bank))], (int(rng.integers(H)), int(rng.integers(W))), axis=(0, 1))
    return np.clip(image.astype(np.int16) + field_, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- keypoints


def keypoint_parts() -> tuple[frozenset[int], ...]:
    """For each FreiHAND keypoint, the MANO joints whose skin is "its own" surface.

    A joint's own surface is the skin of the bones that meet at it: MANO joint ``m`` and its
    parent (e.g. the index PIP owns the proximal and middle phalanges; an MCP owns the palm
    and the proximal phalanx); a fingertip owns its distal phalanx.
    """
    distal = {16: 15, 17: 3, 18: 6, 19: 12, 20: 9}  # extended tip index -> distal MANO joint
    parts = []
    for e in FREIHAND_FROM_EXTENDED:
        e = int(e)
        if e >= NUM_MANO_JOINTS:
            parts.append(frozenset({distal[e]}))
        else:
            parts.append(frozenset({e, max(int(MANO_PARENTS[e]), 0)}))
    return tuple(parts)


_KEYPOINT_PARTS = keypoint_parts()


def keypoint_visibility(joints_world: np.ndarray, camera: Camera, hits: raycast.RayHits,
                        face_part: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Projections of the keypoints and which are inside the image / visible / occluded.

    Joints lie inside the hand, so "visible" means: the first surface on the keypoint's
    pixel ray is its own skin (see :func:`keypoint_parts`) less than
    :data:`OWN_SURFACE_DEPTH_M` in front of it, or any surface less than
    :data:`OCCLUSION_TOLERANCE_M` in front of it (or nothing at all).

    Args:
        joints_world: ``(21, 3)`` metres.
        camera: the camera.
        hits: the hand's ray cast in this camera.
        face_part: ``(F,)`` MANO joint that dominates each face's skinning weights; None
            uses the depth test alone.

    Returns:
        ``uv_px (21, 2)`` and ``state (21,)`` int: 0 outside the image (or behind the
        camera), 1 inside but occluded, 2 visible.
    """
    W, H = camera.image_size
    uv = camera.project(joints_world)  # (21, 2)
    z = camera.to_camera(joints_world)[:, 2]
    inside = (z > 1e-3) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
    px = np.clip(np.round(uv).astype(np.int64), 0, [W - 1, H - 1])
    in_front = z - hits.depth_m[px[:, 1], px[:, 0]]  # (21,) how far the first hit is in front (m); -inf: none
    visible = in_front < OCCLUSION_TOLERANCE_M
    if face_part is not None:
        f = hits.face_ids[px[:, 1], px[:, 0]]
        part = np.where(f >= 0, face_part[np.maximum(f, 0)], -1)
        own = np.array([int(part[j]) in _KEYPOINT_PARTS[j] for j in range(len(part))])
        visible |= own & (in_front < OWN_SURFACE_DEPTH_M)
    state = np.where(inside, np.where(visible, 2, 1), 0)
    return uv, state


def face_parts(weights: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F,)`` the MANO joint with the largest skinning weight summed over each face's vertices."""
    check_shape(weights, ("V", 16), "weights")
    return np.argmax(weights[faces].sum(axis=1), axis=1)  # (F, 16) -> (F,)


def noisy_keypoints(uv_px: np.ndarray, state: np.ndarray, image_size: tuple[int, int], noise_px: float,
                    outlier_rate: float, rng: np.random.Generator) -> np.ndarray:
    """A detector-like ``(21, 3)`` ``[u, v, conf]`` array from ground-truth projections.

    Visible keypoints get conf in [0.75, 1.0], occluded ones [0.25, 0.55] (a detector
    still guesses them); both get Gaussian noise of ``noise_px``. With probability
    ``outlier_rate`` an in-image keypoint becomes a uniformly random position in the image
    with conf in [0.3, 0.9]. Keypoints outside the image are ``[0, 0, 0]`` (missing).
    """
    W, H = image_size
    J = len(uv_px)
    out = np.zeros((J, 3))
    conf = np.where(state == 2, rng.uniform(0.75, 1.0, J), rng.uniform(0.25, 0.55, J))
    noisy = uv_px + rng.normal(0, 1, (J, 2)) * noise_px
    outlier = rng.random(J) < outlier_rate
    wrong = rng.uniform([0, 0], [W - 1, H - 1], (J, 2))
    conf = np.where(outlier, rng.uniform(0.3, 0.9, J), conf)
    noisy = np.where(outlier[:, None], wrong, noisy)
    keep = state > 0
    out[keep, :2] = noisy[keep]
    out[keep, 2] = conf[keep]
    return out


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


# --------------------------------------------------------------------------- drawing


def preview_sheet(images: list[np.ndarray], names: list[str], uv_px: np.ndarray, valid: np.ndarray,
                  tile_width: int = 320) -> np.ndarray:
    """All cameras of one frame in a grid, each tile with its name and the skeleton.

    Uses :mod:`handanno.annotate.overlay` (the project's skeleton colours per finger,
    ``conventions.BONES``).

    Args:
        images: C images ``(H, W, 3)`` BGR.
        names: C camera names.
        uv_px: ``(C, 21, 2)`` keypoint projections, full-resolution pixels.
        valid: ``(C, 21)`` bool, keypoints in front of the camera and inside the image.
        tile_width: tile width, pixels.

    Returns:
        ``(rows * h, cols * tile_width, 3)`` BGR uint8.
    """
    from handanno.annotate import overlay

    tiles = []
    for img, name, uv, ok in zip(images, names, uv_px, valid, strict=True):
        H, W = img.shape[:2]
        scale = tile_width / W
        tile = cv2.resize(img, (tile_width, int(round(H * scale))), interpolation=cv2.INTER_AREA)
        kp = np.concatenate([uv * scale, ok[:, None].astype(np.float64)], axis=1)  # (21, 3) [u, v, conf]
        tile = overlay.draw_skeleton(tile, kp, min_conf=0.5, thickness=1)
        tiles.append(overlay.put_label(tile, [name]))
    return overlay.contact_sheet(tiles, tile_width=tile_width)


# --------------------------------------------------------------------------- the session


def ground_truth_record(hand: str, model_name: str, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray,
                        joints: np.ndarray, camera_names: list[str], visible: dict[str, bool]) -> dict:
    """The ``ground_truth/<frame>.json`` content (the keys of ``fits/``).

    ``quality`` says what a perfect fit would: reprojection error 0 px and mask IoU 1.0 in
    every camera that sees the hand (cameras that do not see it are left out), accepted.
    """
    return {
        "hand": hand,
        "model": model_name,
        "pose": [float(x) for x in pose],
        "betas": [float(x) for x in betas],
        "trans": [float(x) for x in trans],
        "joints": [[float(x) for x in j] for j in joints],
        "quality": {
            "reproj_err_px": {n: 0.0 for n in camera_names if visible[n]},
            "mask_iou": {n: 1.0 for n in camera_names if visible[n]},
            "accepted": True,
            "reasons": [],
        },
    }


def _load_model(settings: SynthSettings):
    from handanno.models.hand_model_io import load_hand_model
    from handanno.models.mano import ManoLayer

    model = load_hand_model(side=settings.hand, model_dir=settings.model_dir)
    return model, ManoLayer(model), model.name


def synthesize(settings: SynthSettings, load_model: Callable | None = None) -> SynthResult:
    """Make a synthetic session in ``settings.out_dir`` (see DESIGN.md's session layout).

    Writes ``rig.json``, ``images/<cam>/<frame>.jpg|png``, ``masks_gt/<cam>/<frame>.png``,
    ``ground_truth/<frame>.json``, ``keypoints2d/<cam>/<frame>.json`` (unless
    ``write_keypoints`` is off), ``calib/<cam>/<view>.jpg|png`` and ``calib/board_poses.json``
    (unless ``write_calib`` is off or ``calib_views`` is 0), ``preview.png`` (all cameras of
    the middle frame with the ground-truth skeleton) and ``synth.json`` (the settings, the
    camera roles and the keypoint-confidence rule). Frame and view stems are ``%06d``.

    Args:
        settings: what to make.
        load_model: ``() -> (model, layer, model_name)`` where ``model`` has ``hands_mean
            (45,)`` and ``weights (V, 16)`` and ``layer`` is a ``ManoLayer``; None loads the
            hand model the settings name (:func:`handanno.models.hand_model_io.load_hand_model`).

    Returns:
        :class:`SynthResult` with the per-stage wall times.

    Raises:
        HandannoError: bad settings, a non-empty output folder (without ``force``), or a
            hand model that cannot be loaded.
    """
    from handanno.annotate import synth_io

    s = settings
    timings: dict[str, float] = {k: 0.0 for k in ("rig", "motion_mesh", "render", "keypoints", "calib", "preview")}
    t_start = time.perf_counter()
    # everything that can fail on bad input happens before the folder is touched
    spec = parse_board_spec(s.board) if s.write_calib and s.calib_views > 0 else None
    synth_io.check_out_dir(s.out_dir, s.force)

    t0 = time.perf_counter()
    rig, roles = make_rig(s.num_cameras, s.image_size, s.seed)
    names = rig.names
    timings["rig"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model, layer, model_name = load_model() if load_model is not None else _load_model(s)
    motion = make_motion(layer, np.asarray(model.hands_mean), s.hand, s.num_frames, s.fps, s.seed)
    albedo = skin_albedo(motion.rest_vertices, motion.faces, motion.axes.palm_normal, s.seed)
    face_part = face_parts(np.asarray(model.weights), motion.faces)
    timings["motion_mesh"] = time.perf_counter() - t0

    record = _session_record(s, roles, model_name, motion, make_lighting(s.seed))
    synth_io.prepare_out_dir(s.out_dir, s.force, {**record, "complete": False})

    lighting = make_lighting(s.seed)
    backgrounds = [make_background(s.image_size, s.background, s.seed, i) for i in range(len(rig))]
    gains = [_rng(s.seed, _LIGHT, i).uniform(0.9, 1.12) * _rng(s.seed, _LIGHT, 100 + i).uniform(0.96, 1.04, 3)
             for i in range(len(rig))]
    bank = noise_bank(s.image_size, s.image_noise_std, s.seed) if s.image_noise_std > 0 else None
    stems = tuple(f"{f:06d}" for f in range(s.num_frames))
    preview_frame = s.num_frames // 2
    preview_images: list[np.ndarray] = []
    preview_uv = np.zeros((len(rig), NUM_JOINTS, 2))
    preview_valid = np.zeros((len(rig), NUM_JOINTS), bool)
    ext = s.image_format

    with synth_io.SessionWriter(s.out_dir, workers=s.write_workers) as writer:
        writer.write_rig(rig)
        frames = range(s.num_frames)
        if s.progress:
            from tqdm import tqdm

            frames = tqdm(frames, desc="synth frames", unit="frame")
        for f in frames:
            t0 = time.perf_counter()
            verts, faces = motion.vertices[f], motion.faces
            scene = raycast.build_scene(verts, faces)
            vn = raycast.vertex_normals(verts, faces)
            light_vis = light_visibility(scene, verts, vn, lighting)  # (V,), shared by the cameras
            visible = {}
            casts = []
            for i, cam in enumerate(rig):
                hits = raycast.raycast_mesh(verts, faces, cam, scene)
                idx = hits.pixel_index
                img = backgrounds[i].copy()
                if len(idx):
                    colors = shade_hits(hits, cam, faces, vn, albedo, lighting, gains[i], light_vis)
                    img.reshape(-1, 3)[idx] = colors
                img = add_noise(img, bank, s.seed, f, i)
                visible[cam.name] = bool(len(idx))
                casts.append(hits)
                writer.image(f"images/{cam.name}/{stems[f]}.{ext}", img)
                writer.image(f"masks_gt/{cam.name}/{stems[f]}.png", hits.hit_mask.astype(np.uint8) * 255)
                if f == preview_frame:
                    preview_images.append(img)
            timings["render"] += time.perf_counter() - t0

            t0 = time.perf_counter()
            for i, cam in enumerate(rig):
                uv, state = keypoint_visibility(motion.joints[f], cam, casts[i], face_part)
                if f == preview_frame:
                    preview_uv[i], preview_valid[i] = uv, state > 0
                if s.write_keypoints:
                    kp = noisy_keypoints(uv, state, s.image_size, s.keypoint_noise_px, s.outlier_rate,
                                         _rng(s.seed, _KEYPOINTS, f, i))
                    writer.json(f"keypoints2d/{cam.name}/{stems[f]}.json",
                                {"keypoints": np.round(kp, 4).tolist(), "source": "synth"})
            writer.json(f"ground_truth/{stems[f]}.json",
                        ground_truth_record(s.hand, model_name, motion.pose[f], motion.betas, motion.trans[f],
                                            motion.joints[f], names, visible))
            timings["keypoints"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        writer.image("preview.png", preview_sheet(preview_images, names, preview_uv, preview_valid))
        timings["preview"] = time.perf_counter() - t0

        calib_stems: tuple[str, ...] = ()
        if spec is not None:
            t0 = time.perf_counter()
            calib_stems = _write_calibration(writer, rig, spec, s, backgrounds, lighting, bank)
            timings["calib"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    synth_io.write_session_record(s.out_dir, {**record, "complete": True})  # last: the session is whole
    timings["write_wait"] = time.perf_counter() - t0
    timings["write_cpu"] = writer.cpu_seconds
    timings["total"] = time.perf_counter() - t_start
    log.info("synth: %d cameras x %d frames in %.1f s (%s)", len(rig), s.num_frames, timings["total"],
             ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    return SynthResult(s.out_dir, rig, stems, calib_stems, roles, timings, writer.num_files + 1)


def _write_calibration(writer, rig: CameraRig, spec: BoardSpec, s: SynthSettings, backgrounds: list[np.ndarray],
                       lighting: Lighting, bank: np.ndarray | None) -> tuple[str, ...]:
    texture = board_texture(spec)
    poses = make_board_poses(rig, texture, s.calib_views, s.seed)
    stems = tuple(f"{v:06d}" for v in range(s.calib_views))
    views = {}
    it = range(s.calib_views)
    if s.progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth calib views", unit="view")
    for v in it:
        front, corners = {}, {}
        for i, cam in enumerate(rig):
            img = render_board_view(cam, texture, poses[v], backgrounds[i], lighting)
            img = add_noise(img, bank, s.seed, 1_000_000 + v, i)
            writer.image(f"calib/{cam.name}/{stems[v]}.{s.image_format}", img)
            front[cam.name], corners[cam.name] = board_visibility(cam, spec, poses[v])
        views[stems[v]] = {"R": poses[v, :3, :3].tolist(), "t": poses[v, :3, 3].tolist(),
                           "front_facing": front, "corners_in_image": corners}
    writer.json("calib/board_poses.json", {
        "board": {"spec": str(spec), "kind": spec.kind, "size": [spec.size_x, spec.size_y],
                  "square_m": spec.square_m, "marker_m": spec.marker_m, "dictionary": spec.dictionary},
        "convention": ("x_world = R @ p_board + t (metres), p_board in handanno.calibration.board's frame "
                       "(BoardSpec.object_points(): ChArUco origin at the outer corner of the top-left square, "
                       "chessboard origin at the first inner corner; x along size_x, y along size_y, z into the "
                       "board: the printed side faces -z)"),
        "views": views,
    }, indent=1)
    return stems


def _session_record(s: SynthSettings, roles: dict[str, str], model_name: str, motion: HandMotion,
                    lighting: Lighting) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()
                if k not in ("out_dir", "force", "progress", "write_workers")}
    settings["image_size"] = list(s.image_size)
    return {
        "generator": "handanno synth",
        "settings": settings,
        "model": model_name,
        "camera_roles": roles,
        "betas": motion.betas.tolist(),
        "light_direction_world": lighting.direction.tolist(),
        "image_files": f"images/<cam>/<frame>.{s.image_format}",
        "keypoint_confidence": ("visible: U(0.75, 1.0); occluded: U(0.25, 0.55); outlier: U(0.3, 0.9); "
                                "outside the image: 0 with u = v = 0. Occluded: the first surface on the "
                                f"keypoint's pixel ray is more than {OCCLUSION_TOLERANCE_M} m in front of it, "
                                f"or more than {OWN_SURFACE_DEPTH_M} m if it is the joint's own skin"),
    }


__all__ = [
    "SynthSettings", "SynthResult", "synthesize", "make_rig", "make_motion", "hand_axes", "HandAxes",
    "articulation_trajectory", "global_rotation_trajectory", "smooth_signal", "HandMotion", "skin_albedo",
    "Lighting", "make_lighting", "shade_hits", "light_visibility", "make_background", "noise_bank", "add_noise",
    "keypoint_parts", "keypoint_visibility", "face_parts", "noisy_keypoints", "BoardTexture", "board_texture",
    "make_board_poses", "board_visibility", "render_board_view", "preview_sheet", "ground_truth_record",
]  # fmt: skip
