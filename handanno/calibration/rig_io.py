"""Reading and writing camera rigs: handanno's rig.json and three outside formats.

Formats (``fmt`` names in brackets):

- ``rig``: handanno's ``rig.json`` (DESIGN.md)::

      {"units": "m", "cameras": {"cam0": {"image_size": [w, h], "K": [[..]x3], "dist": [k1, k2, p1, p2, k3],
                                          "R": [[..]x3], "t": [tx, ty, tz]}}}

- ``anipose``: Anipose's ``calibration.toml``, as aniposelib's ``CameraGroup.dump`` writes it:
  one table per camera, ``[cam_0]``, ``[cam_1]``, ... with ``name``, ``size = [w, h]``,
  ``matrix`` (3x3), ``distortions`` (5), ``rotation`` (axis-angle, 3), ``translation`` (3),
  plus a ``[metadata]`` table. aniposelib orders cameras by string-sorting the table names
  (``cam_10`` before ``cam_2``); here they are ordered by camera name, naturally. handanno
  adds ``units`` to ``[metadata]`` (aniposelib keeps ``metadata`` as an opaque dict).
  ``fisheye = true`` cameras are refused (handanno uses the pinhole model only).
- ``easymocap``: EasyMocap's ``intri.yml`` / ``extri.yml`` pair (OpenCV FileStorage YAML,
  ``easymocap/mytools/camera_utils.py``): ``names`` (a list), and per camera ``K_<cam>``
  (3x3), ``dist_<cam>`` (1x5; ``D_<cam>`` is read too), optional ``H_<cam>`` / ``W_<cam>``
  (image height and width; EasyMocap's own tools often leave them out, then an
  ``image_size`` must be given) in ``intri.yml``; ``R_<cam>`` (axis-angle, 3x1),
  ``Rot_<cam>`` (3x3) and ``T_<cam>`` (3x1, metres) in ``extri.yml``. EasyMocap itself
  builds R from ``R_``; both are read and must agree. Written with full float64 precision
  (EasyMocap's own writer keeps 6 decimals).
- ``seed``: the seed project's folder of two JSON files. The original reads one shared
  ``intrinsic`` (3x3) and ``distortion_coefficients`` from ``intrinsic.json`` and, for view
  ``i`` (its video ``<i>.mp4``), ``extrinsic.json["extrinsic<i>"][0]`` =
  ``{"rvec": [[r1], [r2], [r3]], "tvec": [[t1], [t2], [t3]]}`` (world to camera, OpenCV
  ``solvePnP`` output). handanno's layout keeps that and extends it::

      intrinsic.json  {"intrinsic": [[..]x3], "distortion_coefficients": [k1, k2, p1, p2, k3],
                       "image_size": [w, h]}                          shared by every camera
                 or   {"intrinsic0": {"intrinsic": .., "distortion_coefficients": ..,
                                      "image_size": [w, h]}, "intrinsic1": ...}   per camera
      extrinsic.json  {"extrinsic0": [{"rvec": [[r1], [r2], [r3]], "tvec": [[t1], [t2], [t3]]}], ...,
                       "names": ["cam0", ...], "units": "m"}

  Camera ``i`` is the i-th camera in natural name order. ``image_size``, ``names`` and
  ``units`` are handanno's additions (the seed's reader ignores them); without ``names``
  camera ``i`` is named ``"i"`` (the seed's video stem), without ``image_size`` one must be
  given. The per-camera ``intrinsic<i>`` form is written only when the cameras' intrinsics
  differ; the seed's own reader cannot read it (it has one shared intrinsic), so a warning
  is logged.
- ``dat`` (read only): a folder of plain-text ``c<i>.dat`` + ``rot_trans_c<i>.dat`` pairs, as
  TemugeB's ``handpose3d`` / ``python_stereo_camera_calibrate`` write them::

      c0.dat          intrinsic:            rot_trans_c0.dat   R:
                      fx 0 cx                                  r11 r12 r13
                      0 fy cy                                  r21 r22 r23
                      0 0 1                                    r31 r32 r33
                      distortion:                              T:
                      k1 k2 p1 p2 k3                           tx
                                                               ty
                                                               tz

  ``R``, ``T`` are world to camera (``P = K [R | T]``); only the first ``R:`` / ``T:`` block
  is read (``rot_trans_c1.dat`` may go on with a ``#`` comment and a cam0-to-cam1 pair).
  Camera ``i`` is named ``cam<i>``. The files store no image size (give one) and no unit
  (the translations are whatever unit the board was measured in; give ``scale``).

Every reader's result can be scaled: ``scale`` (``handanno rig convert --scale``, ``handanno
import videos --scale``) multiplies every translation after the unit conversion, for rigs
whose unit is not one of :data:`UNITS_TO_M` (a board measured in squares, an unknown unit).

Convention:
    - All formats here store world-to-camera extrinsics, ``x_cam = R @ x_world + t``, with
      OpenCV's pinhole + ``[k1, k2, p1, p2, k3]`` model; axis-angle vectors are OpenCV
      Rodrigues vectors of that R.
    - rig.json is always metres. Anipose and the seed format do not fix a unit (they use
      the board's); ``units`` says which one a file uses (``"m"``, ``"cm"`` or ``"mm"``),
      defaulting to the unit the file records (handanno's additions) or else metres.
      Translations are rescaled to metres on reading and from metres on writing.
    - ``image_size`` is ``(width, height)`` in pixels everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handanno.calibration.camera import Camera, CameraRig, natural_key
from handanno.data.files_io import atomic_write, atomic_write_bytes, read_json, write_json
from handanno.errors import HandannoError
from handanno.rotations import axis_angle_to_matrix

log = logging.getLogger(__name__)

FORMATS = ("rig", "anipose", "easymocap", "seed")  # read and written
READ_FORMATS = (*FORMATS, "dat")  # read only
UNITS_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}

ImageSize = tuple[int, int]

# ----------------------------------------------------------------------------- helpers


def _scale(units: str | None, where: str) -> float:
    """Metres per unit of ``units``."""
    if units not in UNITS_TO_M:
        raise HandannoError(f"{where}: unknown units {units!r}; use one of {', '.join(UNITS_TO_M)}")
    return UNITS_TO_M[units]


def _make_camera(path: Path, name: str, K: Any, dist: Any, R: Any, t: Any, image_size: Any) -> Camera:
    """Build a Camera; a validation error gets the file's path in front."""
    try:
        return Camera(name, K, dist, R, t, image_size)
    except HandannoError as exc:
        raise HandannoError(f"{path}: {exc}") from exc


def _make_rig(path: Path, cameras: Sequence[Camera]) -> CameraRig:
    if not cameras:
        raise HandannoError(f"{path}: no cameras found")
    try:
        return CameraRig(tuple(cameras))
    except HandannoError as exc:
        raise HandannoError(f"{path}: {exc}") from exc


def _rodrigues(rvec: Any, where: str) -> np.ndarray:
    """``(3,)`` axis-angle (any nesting of 3 numbers) to a ``(3, 3)`` rotation matrix; errors name ``where``."""
    try:
        r = np.asarray(rvec, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"{where} is not numeric ({exc})") from exc
    if r.size != 3 or not np.all(np.isfinite(r)):
        raise HandannoError(f"{where} must be 3 finite numbers (axis-angle), got {np.shape(rvec)}")
    return axis_angle_to_matrix(r)


def _vector3(value: Any, where: str) -> np.ndarray:
    """Any nesting of 3 numbers (``[x, y, z]`` or ``[[x], [y], [z]]``) to ``(3,)``."""
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"{where} is not numeric ({exc})") from exc
    if v.size != 3:
        raise HandannoError(f"{where} must have 3 numbers, got shape {np.shape(value)}")
    return v


def _check_size_arg(image_size: Any) -> ImageSize | None:
    if image_size is None:
        return None
    try:
        w, h = (int(s) for s in image_size)
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"image_size must be (width, height), got {image_size!r}") from exc
    if w <= 0 or h <= 0:
        raise HandannoError(f"image_size must be positive, got {image_size!r}")
    return (w, h)


def parse_image_size(text: str) -> ImageSize:
    """Parse ``"WxH"`` (e.g. ``"1280x720"``) into ``(width, height)``.

    Example:
        >>> parse_image_size("1280x720")
        (1280, 720)
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise HandannoError(f"image size must look like WIDTHxHEIGHT, e.g. 1280x720; got {text!r}")
    return int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------- rig.json


def rig_to_dict(rig: CameraRig) -> dict:
    """The rig.json document of ``rig`` (cameras in natural name order)."""
    return {"units": "m", "cameras": {cam.name: cam.to_dict() for cam in rig}}


def rig_from_dict(doc: Any, path: str | os.PathLike = "rig.json") -> CameraRig:
    """Build a rig from a parsed rig.json document; errors name ``path``, the camera and the field."""
    path = Path(path)
    if not isinstance(doc, Mapping):
        raise HandannoError(f"{path}: a rig.json must be a JSON object with 'units' and 'cameras'")
    if "units" not in doc:
        raise HandannoError(f'{path}: missing "units"; rig.json must say "units": "m"')
    if doc["units"] != "m":
        raise HandannoError(
            f'{path}: units {doc["units"]!r} are not supported; rig.json is always in metres ("units": "m"). '
            "Convert the translations to metres, or import the file with `handanno rig convert` and its units option"
        )
    cams = doc.get("cameras")
    if not isinstance(cams, Mapping) or not cams:
        raise HandannoError(f'{path}: "cameras" must be a non-empty object of camera name -> parameters')
    cameras = []
    for name, entry in cams.items():
        if not isinstance(entry, Mapping):
            raise HandannoError(f"{path}: camera {name!r}: entry must be an object with image_size, K, dist, R, t")
        try:
            cameras.append(Camera.from_dict(str(name), entry))
        except HandannoError as exc:
            raise HandannoError(f"{path}: {exc}") from exc
    return _make_rig(path, cameras)


def read_rig(path: str | os.PathLike) -> CameraRig:
    """Read a rig.json.

    Args:
        path: the rig.json file.

    Returns:
        The rig, cameras in natural name order (``cam2`` before ``cam10``).

    Raises:
        HandannoError: naming the file (missing, not JSON, truncated), and where it applies
            the camera and the field (wrong shape, R not a rotation, units not ``"m"``).
    """
    path = Path(path)
    return rig_from_dict(read_json(path, made_by_handanno=False), path)


def write_rig(rig: CameraRig, path: str | os.PathLike) -> Path:
    """Write ``rig`` as rig.json, atomically (temporary file + rename); returns the path."""
    return write_json(path, rig_to_dict(rig), indent=2)


# ----------------------------------------------------------------------------- Anipose


def _toml_string(s: str) -> str:
    """A TOML basic string (escapes quotes, backslashes and control characters)."""
    out = []
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    """A TOML value for strings, bools, ints, finite floats and (nested) lists of them."""
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise HandannoError(f"cannot write the non-finite number {f} to TOML")
        return repr(f)  # shortest repr that round-trips float64 exactly
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)) + "]"
    raise HandannoError(f"cannot write a {type(v).__name__} to TOML")


_TOML_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(k: str) -> str:
    return k if _TOML_BARE_KEY.fullmatch(k) else _toml_string(k)


def anipose_text(rig: CameraRig, units: str = "m", metadata: Mapping[str, Any] | None = None) -> str:
    """The calibration.toml text of ``rig`` (aniposelib ``CameraGroup.dump`` layout).

    Args:
        rig: the cameras; ``[cam_i]`` is the i-th in natural name order.
        units: the unit of the written translations (``"m"``, ``"cm"``, ``"mm"``);
            recorded as ``units`` in ``[metadata]``.
        metadata: extra scalar entries for ``[metadata]``.
    """
    scale = _scale(units, "anipose export")
    lines: list[str] = []
    for i, cam in enumerate(rig):
        lines += [
            f"[cam_{i}]",
            f"name = {_toml_string(cam.name)}",
            f"size = {_toml_value(list(cam.image_size))}",
            f"matrix = {_toml_value(cam.K)}",
            f"distortions = {_toml_value(cam.dist)}",
            f"rotation = {_toml_value(cam.rvec)}",
            f"translation = {_toml_value(cam.t / scale)}",
            "",
        ]
    meta = {"units": units, **dict(metadata or {})}
    lines.append("[metadata]")
    lines += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def read_anipose(
    path: str | os.PathLike, *, units: str | None = None, image_size: Any = None
) -> CameraRig:
    """Read an Anipose ``calibration.toml``.

    Args:
        path: the TOML file.
        units: the unit of its translations; default: ``[metadata] units`` if the file has
            it (handanno writes it), else metres.
        image_size: ``(width, height)`` for cameras without ``size``.

    Returns:
        The rig (translations in metres), cameras in natural name order. A table without
        ``name`` is named after its table (``cam_0``).
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HandannoError(f"{path}: file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HandannoError(f"{path}: not a valid TOML file ({exc})") from exc
    meta = doc.get("metadata", {})
    if units is None:
        units = meta.get("units", "m") if isinstance(meta, Mapping) else "m"
    scale = _scale(units, str(path))
    fallback_size = _check_size_arg(image_size)
    tables = sorted(((k, v) for k, v in doc.items() if k != "metadata" and isinstance(v, Mapping)),
                    key=lambda kv: natural_key(kv[0]))
    cameras = []
    for key, d in tables:
        name = str(d.get("name", key))
        where = f"{path}: camera {name!r} (table [{key}])"
        if d.get("fisheye", False):
            raise HandannoError(f"{where}: fisheye cameras are not supported (handanno uses OpenCV's pinhole model)")
        missing = [f for f in ("matrix", "distortions", "rotation", "translation") if f not in d]
        if missing:
            raise HandannoError(f"{where}: missing field(s) {', '.join(missing)}")
        size = d.get("size", fallback_size)
        if size is None:
            raise HandannoError(f"{where}: no size = [width, height]; give the image size (--image-size WxH)")
        R = _rodrigues(d["rotation"], f"{where}: field rotation")
        t = _vector3(d["translation"], f"{where}: field translation") * scale
        cameras.append(_make_camera(path, name, d["matrix"], d["distortions"], R, t, size))
    return _make_rig(path, cameras)


def write_anipose(rig: CameraRig, path: str | os.PathLike, *, units: str = "m") -> Path:
    """Write ``rig`` as an Anipose calibration.toml, atomically; see :func:`anipose_text`."""
    return atomic_write_bytes(path, anipose_text(rig, units).encode("utf-8"))


# ----------------------------------------------------------------------------- EasyMocap

_EASYMOCAP_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _easymocap_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(intri, extri)`` for a folder or for either file of the pair."""
    path = Path(path)
    if path.suffix.lower() in (".yml", ".yaml"):
        name = path.name
        if "intri" in name:
            return path, path.with_name(name.replace("intri", "extri"))
        if "extri" in name:
            return path.with_name(name.replace("extri", "intri")), path
        raise HandannoError(f"{path}: an EasyMocap file is named intri.yml or extri.yml")
    return path / "intri.yml", path / "extri.yml"


def _open_filestorage(path: Path) -> Any:
    import cv2

    if not path.is_file():
        raise HandannoError(f"{path}: file not found")
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except Exception as exc:  # OpenCV raises cv2.error or SystemError on parse errors
        raise HandannoError(f"{path}: not a readable OpenCV YAML file ({exc})") from exc
    if not fs.isOpened():
        raise HandannoError(f"{path}: not a readable OpenCV YAML file")
    return fs


def _fs_names(fs: Any, path: Path) -> list[str]:
    node = fs.getNode("names")
    if node.isNone() or not node.isSeq() or node.size() == 0:
        raise HandannoError(f"{path}: missing the 'names' list of cameras")
    names = []
    for i in range(node.size()):
        item = node.at(i)
        names.append(item.string() if item.isString() else str(int(item.real())))
    return [n for n in names if n != "none"]  # EasyMocap skips 'none' entries


def _fs_mat(fs: Any, key: str) -> np.ndarray | None:
    node = fs.getNode(key)
    if node.isNone():
        return None
    if node.isInt() or node.isReal():
        return np.array([[node.real()]])
    m = node.mat()
    return None if m is None else np.asarray(m, dtype=np.float64)


def read_easymocap(
    path: str | os.PathLike, *, image_size: Any = None, units: str | None = None
) -> CameraRig:
    """Read EasyMocap's ``intri.yml`` + ``extri.yml``.

    Args:
        path: the folder holding both files, or either file.
        image_size: ``(width, height)`` for cameras without ``H_``/``W_`` entries (EasyMocap's
            own writers usually leave them out); required then.
        units: the unit of ``T_``; EasyMocap requires metres, the default.

    Returns:
        The rig, cameras in natural name order.
    """
    intri_path, extri_path = _easymocap_paths(path)
    scale = _scale(units or "m", str(extri_path))
    fallback_size = _check_size_arg(image_size)
    intri, extri = _open_filestorage(intri_path), _open_filestorage(extri_path)
    try:
        names = _fs_names(intri, intri_path)
        cameras = []
        for name in names:
            where_i, where_e = f"{intri_path}: camera {name!r}", f"{extri_path}: camera {name!r}"
            K = _fs_mat(intri, f"K_{name}")
            dist = _fs_mat(intri, f"dist_{name}")
            dist = _fs_mat(intri, f"D_{name}") if dist is None else dist
            if K is None or dist is None:
                raise HandannoError(f"{where_i}: missing {'K_' if K is None else 'dist_'}{name}")
            H, W = _fs_mat(intri, f"H_{name}"), _fs_mat(intri, f"W_{name}")
            if H is not None and W is not None and H.size == 1 and W.size == 1 and H.item() > 0 and W.item() > 0:
                size: Any = (W.item(), H.item())
            elif fallback_size is not None:
                size = fallback_size
            else:
                raise HandannoError(
                    f"{where_i}: no image size (H_{name}/W_{name}); give it with --image-size WxH "
                    "(image_size=(width, height))"
                )
            rvec, Rot, T = _fs_mat(extri, f"R_{name}"), _fs_mat(extri, f"Rot_{name}"), _fs_mat(extri, f"T_{name}")
            if T is None or (rvec is None and Rot is None):
                raise HandannoError(f"{where_e}: missing {'T_' if T is None else 'R_'}{name}")
            R = _rodrigues(rvec, f"{where_e}: field R_{name}") if rvec is not None else Rot
            if rvec is not None and Rot is not None:
                if Rot.shape != (3, 3) or np.abs(Rot - R).max() > 1e-4:
                    raise HandannoError(
                        f"{where_e}: R_{name} (axis-angle) and Rot_{name} (matrix) disagree; "
                        "EasyMocap uses R_, fix or delete Rot_"
                    )
            t = _vector3(T, f"{where_e}: field T_{name}") * scale
            cameras.append(_make_camera(intri_path, name, K, dist.reshape(-1), R, t, size))
    finally:
        intri.release()
        extri.release()
    return _make_rig(intri_path, cameras)


def write_easymocap(rig: CameraRig, path: str | os.PathLike, *, units: str = "m") -> tuple[Path, Path]:
    """Write ``rig`` as EasyMocap ``intri.yml`` + ``extri.yml`` (each file atomically).

    Args:
        rig: the cameras; names must be letters, digits, ``_`` or ``-`` (OpenCV key rules,
            and EasyMocap cuts names at ``.``).
        path: the folder, or the ``intri.yml`` path.
        units: the unit of ``T_`` (EasyMocap expects metres).

    Returns:
        The two paths written.
    """
    import cv2

    intri_path, extri_path = _easymocap_paths(path)
    scale = _scale(units, str(extri_path))
    for cam in rig:
        if not _EASYMOCAP_NAME.fullmatch(cam.name):
            raise HandannoError(
                f"{intri_path}: camera {cam.name!r}: EasyMocap names may hold only letters, digits, '_' and '-'"
            )

    def _names(fs: Any) -> None:
        fs.startWriteStruct("names", cv2.FILE_NODE_SEQ)
        for cam in rig:
            fs.write("", cam.name)
        fs.endWriteStruct()

    def _writer(fill: Callable[[Any], None]) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            fs = cv2.FileStorage(str(tmp), cv2.FILE_STORAGE_WRITE)
            try:
                _names(fs)
                fill(fs)
            finally:
                fs.release()

        return write

    def fill_intri(fs: Any) -> None:
        for cam in rig:
            fs.write(f"K_{cam.name}", cam.K)
            fs.write(f"dist_{cam.name}", cam.dist.reshape(1, 5))
            fs.write(f"H_{cam.name}", int(cam.image_size[1]))
            fs.write(f"W_{cam.name}", int(cam.image_size[0]))

    def fill_extri(fs: Any) -> None:
        for cam in rig:
            fs.write(f"R_{cam.name}", cam.rvec.reshape(3, 1))
            fs.write(f"Rot_{cam.name}", cam.R)
            fs.write(f"T_{cam.name}", (cam.t / scale).reshape(3, 1))

    atomic_write(intri_path, _writer(fill_intri))
    atomic_write(extri_path, _writer(fill_extri))
    return intri_path, extri_path


# ----------------------------------------------------------------------------- seed


def _seed_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    folder = path.parent if path.name in ("intrinsic.json", "extrinsic.json") else path
    return folder / "intrinsic.json", folder / "extrinsic.json"


def _one_entry(value: Any, where: str) -> Mapping:
    """The seed stores ``[{...}]`` (it reads ``[0]``); a bare ``{...}`` is accepted too."""
    if isinstance(value, list) and len(value) >= 1:
        value = value[0]
    if not isinstance(value, Mapping):
        raise HandannoError(f"{where} must be [{{...}}] or {{...}}")
    return value


def read_seed(
    path: str | os.PathLike, *, image_size: Any = None, units: str | None = None
) -> CameraRig:
    """Read the seed format: ``intrinsic.json`` + ``extrinsic.json`` (layout in the module docstring).

    Args:
        path: the folder, or either of the two files.
        image_size: ``(width, height)`` where the files give none (the seed never did: it
            resized every frame to 1200x900 before using K).
        units: the unit of ``tvec``; default: the file's ``"units"`` if any, else metres.

    Returns:
        The rig, cameras in natural name order.
    """
    intri_path, extri_path = _seed_paths(path)
    intri, extri = read_json(intri_path, made_by_handanno=False), read_json(extri_path, made_by_handanno=False)
    for p, doc in ((intri_path, intri), (extri_path, extri)):
        if not isinstance(doc, Mapping):
            raise HandannoError(f"{p}: must be a JSON object")
    indices = sorted(int(m.group(1)) for k in extri if (m := re.fullmatch(r"extrinsic(\d+)", k)))
    if not indices:
        raise HandannoError(f"{extri_path}: no 'extrinsic<i>' entries")
    if indices != list(range(len(indices))):
        raise HandannoError(f"{extri_path}: extrinsic entries must be numbered 0..{len(indices) - 1}, got {indices}")
    names = extri.get("names")
    if names is None:
        names = [str(i) for i in indices]
    elif not isinstance(names, list) or len(names) != len(indices):
        raise HandannoError(f"{extri_path}: 'names' must list one name per extrinsic entry ({len(indices)})")
    scale = _scale(units if units is not None else extri.get("units", "m"), str(extri_path))
    fallback_size = _check_size_arg(image_size)
    shared = "intrinsic" in intri
    cameras = []
    for i, name in zip(indices, names, strict=True):
        name = str(name)
        if shared:
            entry, where_i = intri, f"{intri_path}: camera {name!r}"
        else:
            if f"intrinsic{i}" not in intri:
                raise HandannoError(f"{intri_path}: no 'intrinsic' (shared) nor 'intrinsic{i}' (camera {name!r})")
            entry = _one_entry(intri[f"intrinsic{i}"], f"{intri_path}: 'intrinsic{i}'")
            where_i = f"{intri_path}: camera {name!r} ('intrinsic{i}')"
        missing = [f for f in ("intrinsic", "distortion_coefficients") if f not in entry]
        if missing:
            raise HandannoError(f"{where_i}: missing field(s) {', '.join(missing)}")
        size = entry.get("image_size", intri.get("image_size", fallback_size))
        if size is None:
            raise HandannoError(f"{where_i}: no image_size; give it with --image-size WxH (image_size=(width, height))")
        ext = _one_entry(extri[f"extrinsic{i}"], f"{extri_path}: 'extrinsic{i}'")
        where_e = f"{extri_path}: camera {name!r} ('extrinsic{i}')"
        if "rvec" not in ext or "tvec" not in ext:
            raise HandannoError(f"{where_e}: needs 'rvec' and 'tvec'")
        R = _rodrigues(ext["rvec"], f"{where_e}: field rvec")
        t = _vector3(ext["tvec"], f"{where_e}: field tvec") * scale
        try:
            dist = np.asarray(entry["distortion_coefficients"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise HandannoError(f"{where_i}: field distortion_coefficients is not numeric ({exc})") from exc
        cameras.append(_make_camera(intri_path, name, entry["intrinsic"], dist, R, t, size))
    return _make_rig(intri_path, cameras)


def write_seed(rig: CameraRig, path: str | os.PathLike, *, units: str = "m") -> tuple[Path, Path]:
    """Write ``rig`` in the seed format (each file atomically); returns the two paths.

    Shared intrinsics (every camera has the same K, dist and image size) are written in the
    seed's own form; otherwise per camera (``intrinsic<i>``), which the seed's reader cannot
    read (a warning is logged).
    """
    intri_path, extri_path = _seed_paths(path)
    scale = _scale(units, str(extri_path))
    cams = list(rig)
    first = cams[0]
    shared = all(
        np.array_equal(c.K, first.K) and np.array_equal(c.dist, first.dist) and c.image_size == first.image_size
        for c in cams
    )

    def intr(c: Camera) -> dict:
        return {"intrinsic": c.K.tolist(), "distortion_coefficients": c.dist.tolist(), "image_size": list(c.image_size)}

    if shared:
        intri_doc: dict = intr(first)
    else:
        log.warning("%s: cameras have different intrinsics; written per camera ('intrinsic<i>'), "
                    "which the seed's own reader (one shared 'intrinsic') cannot read", intri_path)
        intri_doc = {f"intrinsic{i}": intr(c) for i, c in enumerate(cams)}
    extri_doc: dict = {
        f"extrinsic{i}": [{"rvec": c.rvec.reshape(3, 1).tolist(), "tvec": (c.t / scale).reshape(3, 1).tolist()}]
        for i, c in enumerate(cams)
    }
    extri_doc["names"] = [c.name for c in cams]
    extri_doc["units"] = units
    write_json(intri_path, intri_doc, indent=2)
    write_json(extri_path, extri_doc, indent=2)
    return intri_path, extri_path


# ----------------------------------------------------------------------------- dat (handpose3d)

_DAT_INTRINSICS = re.compile(r"c(\d+)\.dat")
_DAT_EXTRINSICS = re.compile(r"rot_trans_c(\d+)\.dat")


def _dat_blocks(path: Path) -> list[tuple[str, list[list[float]]]]:
    """``[(label, rows of numbers), ...]`` of a ``label:`` + number-rows text file, in file order.

    Blank lines and ``#`` comments are skipped; a line of numbers before any label is an error.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise HandannoError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise HandannoError(f"{path}: not a readable text file ({exc})") from exc
    blocks: list[tuple[str, list[list[float]]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith(":"):
            blocks.append((line[:-1].strip(), []))
            continue
        if not blocks:
            raise HandannoError(f"{path}: line {lineno}: numbers before any 'name:' line")
        try:
            row = [float(x) for x in line.split()]
        except ValueError as exc:
            raise HandannoError(f"{path}: line {lineno}: not a row of numbers ({raw.strip()!r})") from exc
        blocks[-1][1].append(row)
    return blocks


def _dat_block(path: Path, blocks: list[tuple[str, list[list[float]]]], label: str,
               shape: tuple[int, ...]) -> np.ndarray:
    """The first block named ``label`` (any case), reshaped to ``shape`` (its numbers in reading order)."""
    for name, rows in blocks:
        if name.lower() == label.lower():
            values = np.array([x for row in rows for x in row], dtype=np.float64)
            if values.size != int(np.prod(shape)):
                layout = f" ({'x'.join(map(str, shape))})" if len(shape) > 1 else ""
                raise HandannoError(
                    f"{path}: '{name}:' must hold {int(np.prod(shape))} numbers{layout}, got {values.size}"
                )
            if not np.all(np.isfinite(values)):
                raise HandannoError(f"{path}: '{label}:' has NaN or inf values")
            return values.reshape(shape)
    raise HandannoError(f"{path}: no '{label}:' block")


def _dat_folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() or _DAT_INTRINSICS.fullmatch(path.name) or _DAT_EXTRINSICS.fullmatch(path.name):
        return path.parent
    return path


def read_dat(path: str | os.PathLike, *, image_size: Any = None, units: str | None = None) -> CameraRig:
    """Read a folder of ``c<i>.dat`` + ``rot_trans_c<i>.dat`` files (layout in the module docstring).

    Args:
        path: the folder, or any one of its ``.dat`` files.
        image_size: ``(width, height)`` of every camera's images; required (the files have none).
        units: the unit of ``T``; default metres. The files do not say: pass the real unit,
            or scale the result (``load_any_rig(..., scale=...)``).

    Returns:
        The rig, camera ``i`` named ``cam<i>``, in natural name order; translations ``T``
        times the unit's metres.

    Raises:
        HandannoError: no ``c<i>.dat`` in the folder, a missing ``rot_trans_c<i>.dat``, a
            block missing or of the wrong size (naming the file), or no image size.
    """
    folder = _dat_folder(path)
    if not folder.is_dir():
        raise HandannoError(f"{folder}: folder not found")
    indices = sorted(int(m.group(1)) for f in folder.iterdir() if (m := _DAT_INTRINSICS.fullmatch(f.name)))
    if not indices:
        raise HandannoError(f"{folder}: no c<i>.dat files (intrinsics) in this folder")
    scale = _scale(units or "m", str(folder))
    size = _check_size_arg(image_size)
    if size is None:
        raise HandannoError(
            f"{folder}: c<i>.dat files do not store the image size; give it with --image-size WxH "
            "(image_size=(width, height))"
        )
    cameras = []
    for i in indices:
        intri_path, extri_path = folder / f"c{i}.dat", folder / f"rot_trans_c{i}.dat"
        if not extri_path.is_file():
            raise HandannoError(
                f"{extri_path}: file not found (camera 'cam{i}' has {intri_path.name} but no extrinsics)"
            )
        intri, extri = _dat_blocks(intri_path), _dat_blocks(extri_path)
        K = _dat_block(intri_path, intri, "intrinsic", (3, 3))
        dist = _dat_block(intri_path, intri, "distortion", (5,))
        R = _dat_block(extri_path, extri, "R", (3, 3))
        t = _dat_block(extri_path, extri, "T", (3,)) * scale
        cameras.append(_make_camera(intri_path, f"cam{i}", K, dist, R, t, size))
    return _make_rig(folder, cameras)


def scale_rig(rig: CameraRig, scale: float) -> CameraRig:
    """``rig`` with every translation multiplied by ``scale`` (camera centres and baselines scale with it).

    Example:
        >>> cam = Camera("cam0", np.eye(3), np.zeros(5), np.eye(3), [1.0, 2.0, 3.0], (64, 48))
        >>> scale_rig(CameraRig((cam,)), 0.5)["cam0"].t.tolist()
        [0.5, 1.0, 1.5]
    """
    if not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale) and scale > 0):
        raise HandannoError(f"scale must be a finite number > 0, got {scale!r}")
    return CameraRig(tuple(cam.with_pose(cam.R, cam.t * float(scale)) for cam in rig))


# ----------------------------------------------------------------------------- dispatch


def detect_format(path: str | os.PathLike, *, for_writing: bool = False) -> str:
    """Which format ``path`` names (one of :data:`FORMATS`).

    Files go by name: ``intrinsic.json`` / ``extrinsic.json`` are the seed format, any other
    ``*.json`` is rig.json, ``*.toml`` Anipose, ``*.yml`` / ``*.yaml`` EasyMocap, ``*.dat``
    the ``dat`` folder it lies in (reading only). A folder goes by what it holds
    (``rig.json``, then ``calibration.toml``, then ``intri.yml``, then ``intrinsic.json``,
    then ``c<i>.dat``); writing to a folder needs the format named.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.name in ("intrinsic.json", "extrinsic.json"):
        return "seed"
    if suffix == ".dat" and not for_writing:
        return "dat"
    if suffix == ".json":
        return "rig"
    if suffix == ".toml":
        return "anipose"
    if suffix in (".yml", ".yaml"):
        return "easymocap"
    if path.is_dir() and not for_writing:
        for fname, fmt in (("rig.json", "rig"), ("calibration.toml", "anipose"), ("intri.yml", "easymocap"),
                           ("intrinsic.json", "seed")):
            if (path / fname).is_file():
                return fmt
        if any(_DAT_INTRINSICS.fullmatch(f.name) for f in path.iterdir()):
            return "dat"
        raise HandannoError(
            f"{path}: no rig.json, calibration.toml, intri.yml or intrinsic.json in this folder (nor c<i>.dat files)"
        )
    if path.is_file() and not for_writing:
        raise HandannoError(f"{path}: unknown calibration format (expected .json, .toml, .yml, .dat or a folder)")
    raise HandannoError(
        f"{path}: cannot tell the format from this path; name the format ({', '.join(FORMATS)})"
        if for_writing else f"{path}: not found"
    )


def _in_folder(path: Path, fmt: str) -> Path:
    """For a folder, the file of ``fmt`` inside it."""
    if not path.is_dir() or fmt == "dat":
        return path
    return path / {"rig": "rig.json", "anipose": "calibration.toml", "easymocap": "intri.yml",
                   "seed": "intrinsic.json"}[fmt]


def load_any_rig(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    image_size: Any = None,
    units: str | None = None,
    scale: float | None = None,
) -> CameraRig:
    """Read a rig in any supported format (see :func:`detect_format`).

    Args:
        path: a file or a folder.
        fmt: force a format (one of :data:`READ_FORMATS`) instead of detecting it.
        image_size: ``(width, height)`` for formats or cameras that lack it.
        units: unit of the file's translations (not for rig.json, which is metres).
        scale: multiply every translation by this after the unit conversion (:func:`scale_rig`),
            for files in another unit, e.g. 0.043 for translations in units of 4.3 cm.

    Returns:
        The rig in natural camera-name order, translations in metres.
    """
    rig = _load_any_rig(path, fmt=fmt, image_size=image_size, units=units)
    if scale is not None:
        rig = scale_rig(rig, scale)
    elif (fmt or detect_format(path)) == "dat" and units is None:
        log.warning("%s: c<i>.dat files do not record their unit; the translations are taken as metres. "
                    "Give the scale (--scale) if they are not", path)
    return rig


def _load_any_rig(path: str | os.PathLike, *, fmt: str | None, image_size: Any, units: str | None) -> CameraRig:
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in READ_FORMATS:
        raise HandannoError(f"unknown rig format {fmt!r}; use one of {', '.join(READ_FORMATS)}")
    target = _in_folder(path, fmt)
    if fmt == "dat":
        return read_dat(target, image_size=image_size, units=units)
    if fmt == "rig":
        if units not in (None, "m"):
            raise HandannoError(f"{target}: rig.json is always in metres; units {units!r} do not apply")
        rig = read_rig(target)
        if image_size is not None:
            log.info("%s: image size given but rig.json has its own; ignored", target)
        return rig
    if fmt == "anipose":
        return read_anipose(target, units=units, image_size=image_size)
    if fmt == "easymocap":
        return read_easymocap(target, image_size=image_size, units=units)
    return read_seed(target, image_size=image_size, units=units)


def save_any_rig(
    rig: CameraRig, path: str | os.PathLike, *, fmt: str | None = None, units: str = "m"
) -> list[Path]:
    """Write ``rig`` in the format that ``path`` (or ``fmt``) names; returns the files written.

    A folder path needs ``fmt``; it then gets ``rig.json``, ``calibration.toml``,
    ``intri.yml`` + ``extri.yml`` or ``intrinsic.json`` + ``extrinsic.json``.
    """
    path = Path(path)
    fmt = fmt or detect_format(path, for_writing=True)
    if fmt == "dat":
        raise HandannoError(f"{path}: the dat format (c<i>.dat files) is read only; write rig.json or another format")
    if fmt not in FORMATS:
        raise HandannoError(f"unknown rig format {fmt!r}; use one of {', '.join(FORMATS)}")
    is_file = path.suffix.lower() in (".json", ".toml", ".yml", ".yaml")
    if fmt == "rig":
        if units != "m":
            raise HandannoError(f"{path}: rig.json is always in metres; units {units!r} do not apply")
        return [write_rig(rig, path if is_file else path / "rig.json")]
    if fmt == "anipose":
        return [write_anipose(rig, path if is_file else path / "calibration.toml", units=units)]
    if fmt == "easymocap":
        return list(write_easymocap(rig, path, units=units))
    return list(write_seed(rig, path, units=units))


@dataclass(frozen=True)
class RigConversion:
    """What :func:`convert_rig` did.

    Attributes:
        names: the camera names, in order.
        src_fmt: the input's format; dst_fmt: the output's.
        written: the files written.
    """

    names: tuple[str, ...]
    src_fmt: str
    dst_fmt: str
    written: tuple[Path, ...]

    def summary(self) -> str:
        """One line for the user."""
        return (f"converted {len(self.names)} camera(s) ({', '.join(self.names)}) from {self.src_fmt} "
                f"to {self.dst_fmt}: {', '.join(str(p) for p in self.written)}")


def convert_rig(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    src_fmt: str | None = None,
    dst_fmt: str | None = None,
    image_size: Any = None,
    src_units: str | None = None,
    dst_units: str = "m",
    scale: float | None = None,
) -> RigConversion:
    """Read a rig in one format and write it in another (:func:`load_any_rig` + :func:`save_any_rig`).

    ``scale`` multiplies the translations (after ``src_units``), see :func:`load_any_rig`.
    """
    src_fmt = src_fmt or detect_format(src)
    dst_fmt = dst_fmt or detect_format(dst, for_writing=True)
    rig = load_any_rig(src, fmt=src_fmt, image_size=image_size, units=src_units, scale=scale)
    written = save_any_rig(rig, dst, fmt=dst_fmt, units=dst_units)
    return RigConversion(tuple(rig.names), src_fmt, dst_fmt, tuple(written))
