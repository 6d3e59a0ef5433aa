"""Appearance of a synthetic capture.

Skin albedo, lighting and shading of ray hits, backgrounds and sensor noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from handanno.calibration.camera import Camera
from handanno.check import check_shape
from handanno.handmodel.hand_axes import unit as _unit
from handanno.synth import raycast
from handanno.synth.streams import (
    _ALBEDO,
    _BACKGROUND,
    _LIGHT,
    _NOISE,
)
from handanno.synth.streams import (
    rng as _rng,
)

log = logging.getLogger(__name__)

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
        scene: the posed hand's scene (:func:`handanno.synth.raycast.build_scene`).
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
