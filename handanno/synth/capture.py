"""Synthetic multi-camera hand captures with known answers (``handanno synth``).

A session is a dome of distorted cameras around a posed hand model (the open hand model or
MANO), rendered exactly by per-pixel ray casting (:mod:`handanno.synth.raycast`), plus
calibration-board views (ChArUco or chessboard) through the same cameras. Everything the later stages estimate
is written next to the images: ``rig.json``, ``ground_truth/``, ``masks_gt/``,
``keypoints2d/`` (ground truth + noise + outliers) and ``calib/board_poses.json``.

The helpers here are pure (arrays in, arrays out, randomness from an explicit
``numpy.random.Generator``); :func:`synthesize` wires them together and hands the files
to :mod:`handanno.synth.synth_io`.

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

from handanno.calibration.board import BoardSpec, parse_board_spec
from handanno.calibration.camera import Camera, CameraRig, look_at
from handanno.data.conventions import (
    NUM_JOINTS,
)
from handanno.errors import HandannoError
from handanno.handmodel.hand_axes import HandAxes, hand_axes
from handanno.synth import raycast
from handanno.synth.appearance import (
    Lighting,
    add_noise,
    light_visibility,
    make_background,
    make_lighting,
    noise_bank,
    shade_hits,
    skin_albedo,
)
from handanno.synth.boards import BoardTexture, board_texture, board_visibility, make_board_poses, render_board_view
from handanno.synth.keypoints import (
    OCCLUSION_TOLERANCE_M,
    OWN_SURFACE_DEPTH_M,
    face_parts,
    keypoint_parts,
    keypoint_visibility,
    noisy_keypoints,
)
from handanno.synth.motion import (
    HandMotion,
    articulation_trajectory,
    global_rotation_trajectory,
    make_motion,
    smooth_signal,
)
from handanno.synth.streams import (
    _KEYPOINTS,
    _LIGHT,
    _RIG,
)
from handanno.synth.streams import (
    rng as _rng,
)

log = logging.getLogger(__name__)

# Elevations (degrees) of cameras 0, 1, 2, ... (cycled): a dome with some views from below.
_ELEVATIONS_DEG = (25.0, 50.0, -30.0, 10.0, 65.0, -12.0, 38.0, -42.0)


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
        postures: the articulation generator (:data:`handanno.handmodel.articulations.POSTURES`):
            ``"realistic"`` (:func:`~handanno.handmodel.articulations.realistic_articulation_trajectory`:
            published ranges of motion, twist at the knuckles, oblique hinges, fists and grips)
            or ``"anatomical"`` (:func:`~handanno.handmodel.articulations.articulation_trajectory`: flexion
            about the fitter's own anatomical axes, the generator before issue 20, kept for
            comparison and for the figures measured on it: the shipped detector's training, the
            bootstrap and acceptance benchmarks pass it explicitly).
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
    postures: str = "realistic"
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
        from handanno.handmodel.articulations import POSTURES

        if self.postures not in POSTURES:
            raise HandannoError(f"--postures must be one of {', '.join(POSTURES)}, got {self.postures!r}")


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
    from handanno.handmodel.mano import ManoLayer
    from handanno.handmodel.model_io import load_hand_model

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
            hand model the settings name (:func:`handanno.handmodel.model_io.load_hand_model`).

    Returns:
        :class:`SynthResult` with the per-stage wall times.

    Raises:
        HandannoError: bad settings, a non-empty output folder (without ``force``), or a
            hand model that cannot be loaded.
    """
    from handanno.synth import synth_io

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
    motion = make_motion(layer, np.asarray(model.hands_mean), s.hand, s.num_frames, s.fps, s.seed, s.postures)
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
