"""Write and read labels in the FreiHAND layout: handanno's own and the official download.

Layout (DESIGN.md, "labels/"), ``S`` = 224::

    training/rgb/%08d.jpg     S x S crops centred on the hand (official: 4 versions, see below)
    training/mask/%08d.jpg    S x S masks (one per unique sample)
    training_K.json           list of 3x3 crop intrinsics
    training_xyz.json         list of 21x3 keypoints, camera frame, metres
    training_verts.json       list of 778x3 vertices, camera frame, metres
    training_scale.json       list of |xyz[9] - xyz[10]|, metres
    training_mano.json        list of [[61 numbers]] (see ``handanno.data.freihand``)
    index.json                handanno only: per sample {"id", "frame", "camera", "hand", "quality"}
                              (and "visible": 21 flags, where the exporter was given visibility)
    model.json                handanno only: {"name", "is_mano", ...} of the hand model used

The official download also has ``evaluation_*.json`` and ``evaluation/rgb/%08d.jpg`` (3960
samples, one image version), and stores each training image in 4 versions at ids
``idx + N * k`` for ``k`` = 0 gs, 1 hom, 2 sample, 3 auto (``fh_utils.sample_version``), where
``N`` is the number of samples in the lists (FreiHAND's ``db_size``: 32560); masks are shared.

Writing is atomic and resumable: each image is written atomically as it is added, followed by
a per-sample record in ``.handanno_pending/``; ``close()`` writes every JSON list atomically
and only then removes the records. A writer opened on a folder with finished lists and/or
pending records carries on from there, so an interrupted export never leaves half-written or
mismatched JSON lists behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import (
    NUM_JOINTS,
    NUM_MANO_PARAMS_FREIHAND,
    NUM_VERTS,
    ROOT_KEYPOINT,
    TIP_VERTEX_IDS,
)
from handanno.data.files_io import atomic_write, finite_or_error, read_json, write_image, write_json
from handanno.data.freihand import (
    FREIHAND_IMAGE_SIZE,
    SAMPLE_VERSIONS,
    keypoint_scale,
    recover_root,
    sample_version_id,
    split_mano_vector,
)
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

PENDING_DIR = ".handanno_pending"
SPLITS = ("training", "evaluation")
_LIST_KEYS = ("K", "xyz", "verts", "scale", "mano")
_TIP_KEYPOINTS = (4, 8, 12, 16, 20)  # FreiHAND keypoints that are the TIP_VERTEX_IDS vertices


def _list_path(root: Path, split: str, key: str) -> Path:
    return root / f"{split}_{key}.json"


# --------------------------------------------------------------------------- writer


@dataclasses.dataclass(frozen=True)
class FreiHANDSample:
    """One labelled crop: a (frame, camera, hand) of a session.

    Attributes:
        rgb: ``(S, S, 3)`` uint8 BGR crop.
        mask: ``(S, S)`` uint8 crop of the hand mask (0 background, 255 hand).
        K: ``(3, 3)`` crop intrinsics.
        xyz: ``(21, 3)`` keypoints, crop camera frame, metres.
        verts: ``(778, 3)`` vertices, same frame, metres.
        mano: ``(61,)`` FreiHAND MANO vector (``freihand_mano_vector``).
        frame: the frame stem.
        camera: the camera name.
        hand: ``"right"`` or ``"left"``.
        quality: the fit's quality record (JSON-ready), stored in ``index.json``.
        visible: ``(21,)`` bool, which keypoints are seen in the view (inside the image and
            not hidden by the hand itself), stored in ``index.json`` as ``"visible"``; None
            when unknown (trainers then use every keypoint).
    """

    rgb: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    xyz: np.ndarray
    verts: np.ndarray
    mano: np.ndarray
    frame: str
    camera: str
    hand: str = "right"
    quality: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source_record: str | None = None
    visible: np.ndarray | None = None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` (a hard link where the file system allows, else a copy), atomically."""
    import shutil

    tmp = dst.with_name(f".{dst.name}.adopt")
    tmp.unlink(missing_ok=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_json_list(path: Path, items: Sequence[Any]) -> Path:
    """Write a JSON list item by item (no giant intermediate string), atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w") as fo:
            _dump_items(fo, items)
            fo.flush()
            os.fsync(fo.fileno())

    return atomic_write(path, _write)


def _dump_items(fo: IO[str], items: Sequence[Any]) -> None:
    fo.write("[")
    for i, item in enumerate(items):
        if i:
            fo.write(", ")
        fo.write(json.dumps(item.tolist() if isinstance(item, np.ndarray) else item))
    fo.write("]")


class FreiHANDWriter:
    """Append samples to a FreiHAND-layout labels folder; ``close()`` writes the JSON lists.

    Args:
        out_dir: the labels folder (created if needed).
        model_name: the hand model that made the labels (e.g. ``"MANO_RIGHT"``).
        is_mano: whether that model is MANO (False for the open hand model).
        image_size: side of the crops (FreiHAND: 224).
        tol_m: consistency tolerance in metres: ``recover_root(uv_root, scale, K)`` must be
            within it of ``xyz[9]``, and the fingertip keypoints of their tip vertices.

    Example::

        with FreiHANDWriter(session / "labels", "MANO_RIGHT", is_mano=True) as writer:
            for sample in samples:
                if not writer.contains(sample.frame, sample.camera, sample.hand):
                    writer.add(sample)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        model_name: str,
        is_mano: bool,
        image_size: int = FREIHAND_IMAGE_SIZE,
        tol_m: float = 1e-4,
    ) -> None:
        self.root = Path(out_dir)
        self.image_size = int(image_size)
        self.tol_m = float(tol_m)
        self._closed = False
        self._lists: dict[str, list[Any]] = {k: [] for k in (*_LIST_KEYS, "index")}
        self._keys: set[tuple[str, str, str]] = set()
        self.root.mkdir(parents=True, exist_ok=True)
        self._resume()  # first: a folder that is not handanno's labels fails before anything is written
        self._init_model(str(model_name), bool(is_mano))

    # ---- paths
    @property
    def _pending(self) -> Path:
        return self.root / PENDING_DIR

    def rgb_path(self, idx: int) -> Path:
        """Path of sample ``idx``'s crop."""
        return self.root / "training" / "rgb" / f"{idx:08d}.jpg"

    def mask_path(self, idx: int) -> Path:
        """Path of sample ``idx``'s mask."""
        return self.root / "training" / "mask" / f"{idx:08d}.jpg"

    @property
    def num_samples(self) -> int:
        """Samples in the labels so far (finished, resumed and added)."""
        return len(self._lists["K"])

    def contains(self, frame: str, camera: str, hand: str = "right") -> bool:
        """Whether a sample for this frame, camera and hand is already in the labels."""
        return (str(frame), str(camera), str(hand)) in self._keys

    # ---- set-up
    def _init_model(self, name: str, is_mano: bool) -> None:
        path = self.root / "model.json"
        record = {"name": name, "is_mano": is_mano, "format": "freihand", "writer": "handanno"}
        if not is_mano:
            record["notice"] = "made with a non-MANO hand model: these labels are not MANO labels"
        if path.exists():
            old = read_json(path)
            if not isinstance(old, dict) or old.get("name") != name or old.get("is_mano") != is_mano:
                raise HandannoError(
                    f"{path}: these labels were made with model {old!r}, not {name!r} (is_mano={is_mano}); "
                    "write to another folder or delete this one to start again"
                )
        else:
            write_json(path, record, indent=2)
        self.model = record

    def _resume(self) -> None:
        pending = sorted(self._pending.glob("*.json")) if self._pending.is_dir() else []
        ids = [int(p.stem) for p in pending if p.stem.isdigit()]
        paths = {k: _list_path(self.root, "training", k) for k in _LIST_KEYS} | {"index": self.root / "index.json"}
        present = {k: p for k, p in paths.items() if p.exists()}
        if ids:
            base = ids[0]
            if ids != list(range(base, base + len(ids))):
                raise HandannoError(f"{self._pending}: pending records are not consecutive ({ids[:5]}...); "
                                    "delete the labels folder and export again")  # fmt: skip
        else:
            base = None
        loaded: dict[str, list[Any]] = {}
        for key, path in paths.items():
            if key not in present:
                if base is None and present:
                    raise HandannoError(f"{path}: missing while other label lists exist; the labels folder is "
                                        "incomplete: delete it and export again")  # fmt: skip
                if base:
                    raise HandannoError(f"{path}: missing, but pending records start at sample {base}")
                loaded[key] = []
                continue
            items = read_json(path)
            if not isinstance(items, list):
                raise HandannoError(f"{path}: expected a JSON list")
            if base is not None:
                if len(items) < base:
                    raise HandannoError(f"{path}: has {len(items)} samples, pending records start at {base}")
                items = items[:base]
            loaded[key] = items
        lengths = {paths[k].name: len(v) for k, v in loaded.items()}
        if len(set(lengths.values())) > 1:
            raise HandannoError(f"{self.root}: label lists have different lengths {lengths}; delete the folder "
                                "and export again")  # fmt: skip
        for key, items in loaded.items():
            self._lists[key] = [np.asarray(x, dtype=np.float64) if key != "index" else x for x in items]
        self._lists["mano"] = [m.reshape(NUM_MANO_PARAMS_FREIHAND) for m in self._lists["mano"]]
        for p in pending:
            rec = read_json(p)
            idx = int(p.stem)
            for path in (self.rgb_path(idx), self.mask_path(idx)):
                if not path.is_file():
                    raise HandannoError(f"{p}: its image {path} is missing; delete the record to redo that sample")
            for key in _LIST_KEYS:
                self._lists[key].append(np.asarray(rec[key], dtype=np.float64))
            self._lists["index"].append(rec["index"])
        for entry in self._lists["index"]:
            self._keys.add((str(entry["frame"]), str(entry["camera"]), str(entry.get("hand", "right"))))
        if self.num_samples:
            log.info("%s: resuming with %d samples (%d pending)", self.root, self.num_samples, len(pending))

    # ---- adding
    def _check(self, s: FreiHANDSample) -> dict[str, np.ndarray]:
        where = f"sample frame {s.frame!r} camera {s.camera!r} hand {s.hand!r}"
        S = self.image_size
        check_shape(np.asarray(s.rgb), (S, S, 3), f"{where}: rgb")
        mask = np.asarray(s.mask)
        mask = mask[..., 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
        check_shape(mask, (S, S), f"{where}: mask")
        for img, name in ((s.rgb, "rgb"), (mask, "mask")):
            if np.asarray(img).dtype != np.uint8:
                raise HandannoError(f"{where}: {name} must be uint8, got {np.asarray(img).dtype}")
        out = {
            "K": finite_or_error(s.K, f"{where}: K"),
            "xyz": finite_or_error(s.xyz, f"{where}: xyz"),
            "verts": finite_or_error(s.verts, f"{where}: verts"),
            "mano": finite_or_error(s.mano, f"{where}: mano"),
        }
        check_shape(out["K"], (3, 3), f"{where}: K")
        check_shape(out["xyz"], (NUM_JOINTS, 3), f"{where}: xyz")
        check_shape(out["verts"], (NUM_VERTS, 3), f"{where}: verts")
        if out["mano"].size != NUM_MANO_PARAMS_FREIHAND:
            raise HandannoError(f"{where}: mano must hold 61 numbers, got shape {out['mano'].shape}")
        out["mano"] = out["mano"].reshape(NUM_MANO_PARAMS_FREIHAND)
        parts = split_mano_vector(out["mano"])
        root = recover_root(parts.uv_root, parts.scale, out["K"])
        gap = float(np.linalg.norm(root - out["xyz"][ROOT_KEYPOINT]))
        if not gap <= self.tol_m:
            raise HandannoError(
                f"{where}: mano uv_root/scale recover keypoint 9 at {root.tolist()} but xyz[9] is "
                f"{out['xyz'][ROOT_KEYPOINT].tolist()} ({gap * 1000:.3f} mm apart); compute them with "
                "root_uv_and_scale(xyz[9], K)"
            )
        tip_gap = float(np.abs(out["xyz"][list(_TIP_KEYPOINTS)] - out["verts"][TIP_VERTEX_IDS]).max())
        if not tip_gap <= self.tol_m:
            raise HandannoError(f"{where}: fingertip keypoints are {tip_gap * 1000:.3f} mm from their tip vertices "
                                f"{TIP_VERTEX_IDS.tolist()}: xyz and verts must be in the same frame")  # fmt: skip
        out["scale"] = keypoint_scale(out["xyz"])
        out["mask_img"] = mask
        return out

    def add(self, sample: FreiHANDSample) -> int:
        """Check a sample, write its images and pending record; return its index.

        Raises:
            HandannoError: on a bad shape, NaN, inconsistent ``mano``/``xyz``/``verts``, a
                duplicate (frame, camera, hand), or a closed writer.
        """
        if self._closed:
            raise HandannoError(f"{self.root}: writer already closed")
        key = (str(sample.frame), str(sample.camera), str(sample.hand))
        if key in self._keys:
            raise HandannoError(f"{self.root}: frame {key[0]!r} camera {key[1]!r} hand {key[2]!r} is already labelled")
        arr = self._check(sample)
        idx = self.num_samples
        write_image(self.rgb_path(idx), np.ascontiguousarray(sample.rgb))
        write_image(self.mask_path(idx), np.ascontiguousarray(arr["mask_img"]))
        index = {"id": idx, "frame": key[0], "camera": key[1], "hand": key[2], "quality": dict(sample.quality)}
        if sample.source_record is not None:
            index["source_record"] = sample.source_record
        if sample.visible is not None:
            vis = np.asarray(sample.visible, bool).reshape(-1)
            if vis.shape != (NUM_JOINTS,):
                raise HandannoError(f"{self.root}: frame {key[0]!r} camera {key[1]!r}: visible must hold "
                                    f"{NUM_JOINTS} flags, got {vis.shape}")  # fmt: skip
            index["visible"] = vis.tolist()
        return self._append(index, arr)

    def adopt(self, labels: FreiHANDLabels, i: int) -> int:
        """Carry sample ``i`` of other handanno labels over unchanged; return its index here.

        The crop and mask are hard-linked (copied where links are not possible), so no image
        is decoded or encoded again; the labels were checked when ``labels`` was read.

        Raises:
            HandannoError: ``labels`` are not handanno's, or the sample is already here.
        """
        if self._closed:
            raise HandannoError(f"{self.root}: writer already closed")
        if labels.index is None or labels.xyz is None or labels.verts is None or labels.mano is None:
            raise HandannoError(f"{labels.root}: only handanno's own labels can be carried over")
        entry = dict(labels.index[i])
        key = (str(entry["frame"]), str(entry["camera"]), str(entry.get("hand", "right")))
        if key in self._keys:
            raise HandannoError(f"{self.root}: frame {key[0]!r} camera {key[1]!r} hand {key[2]!r} is already labelled")
        idx = self.num_samples
        _link_or_copy(labels.image_paths[i], self.rgb_path(idx))
        assert labels.mask_paths is not None
        _link_or_copy(labels.mask_paths[i], self.mask_path(idx))
        arr = {"K": labels.K[i], "xyz": labels.xyz[i], "verts": labels.verts[i], "mano": labels.mano[i],
               "scale": np.float64(labels.scale[i])}  # fmt: skip
        return self._append({**entry, "id": idx}, arr)

    def _append(self, index: dict[str, Any], arr: Mapping[str, np.ndarray]) -> int:
        """Write the pending record of a sample whose images are in place, and add it to the lists."""
        idx = self.num_samples
        key = (str(index["frame"]), str(index["camera"]), str(index.get("hand", "right")))
        record = {k: arr[k] for k in _LIST_KEYS} | {"index": index}
        write_json(self._pending / f"{idx:08d}.json", record)
        for k in _LIST_KEYS:
            self._lists[k].append(np.asarray(arr[k], dtype=np.float64))
        self._lists["index"].append(index)
        self._keys.add(key)
        return idx

    # ---- finishing
    def close(self) -> Path:
        """Write all JSON lists atomically, then drop the pending records; return the folder."""
        if self._closed:
            return self.root
        L = self._lists
        _write_json_list(_list_path(self.root, "training", "K"), L["K"])
        _write_json_list(_list_path(self.root, "training", "xyz"), L["xyz"])
        _write_json_list(_list_path(self.root, "training", "verts"), L["verts"])
        _write_json_list(_list_path(self.root, "training", "scale"), [float(s) for s in L["scale"]])
        _write_json_list(_list_path(self.root, "training", "mano"), [m.reshape(1, -1) for m in L["mano"]])
        _write_json_list(self.root / "index.json", L["index"])
        if self._pending.is_dir():
            for p in self._pending.glob("*.json"):
                p.unlink()
            for p in self._pending.iterdir():  # stray temporary files of an interrupted write
                p.unlink()
            self._pending.rmdir()
        self._closed = True
        log.info("%s: wrote %d FreiHAND samples", self.root, self.num_samples)
        return self.root

    def __enter__(self) -> FreiHANDWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        # on an error the pending records stay: a new writer on the folder resumes from them


# --------------------------------------------------------------------------- reader


@dataclasses.dataclass(frozen=True)
class FreiHANDLabels:
    """A split of a FreiHAND-layout folder, as arrays (camera frame, metres, pixels).

    Attributes:
        root: the folder.
        split: ``"training"`` or ``"evaluation"``.
        version: the image version the paths point to (``"gs"``, ``"hom"``, ``"sample"``,
            ``"auto"``).
        K: ``(N, 3, 3)`` crop intrinsics.
        scale: ``(N,)`` ``|xyz[9] - xyz[10]|``, metres.
        xyz: ``(N, 21, 3)`` keypoints, or None when the split ships none (FreiHAND v1 evaluation).
        verts: ``(N, 778, 3)`` vertices, or None.
        mano: ``(N, 61)`` FreiHAND MANO vectors, or None.
        image_paths: ``N`` crop paths for ``version``.
        mask_paths: ``N`` mask paths, or None when the split has no mask folder.
        index: handanno's ``index.json`` entries, or None (official data).
        model: handanno's ``model.json``, or None (official data).
    """

    root: Path
    split: str
    version: str
    K: np.ndarray
    scale: np.ndarray
    xyz: np.ndarray | None
    verts: np.ndarray | None
    mano: np.ndarray | None
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...] | None
    index: tuple[dict[str, Any], ...] | None
    model: dict[str, Any] | None

    def __len__(self) -> int:
        return len(self.K)

    @property
    def is_handanno(self) -> bool:
        """True for labels written by handanno (``model.json`` present)."""
        return self.model is not None


def _load_list(path: Path, item_shapes: Sequence[tuple[int, ...]], required: bool) -> np.ndarray | None:
    """Read a JSON list of equally shaped numeric items into ``(N, *item_shapes[0])`` float64.

    ``item_shapes[1:]`` are accepted alternatives reshaped to the first (e.g. ``(1, 61)``).
    """
    if not path.exists():
        if required:
            raise HandannoError(f"{path}: file not found")
        return None
    data = read_json(path)
    if not isinstance(data, list):
        raise HandannoError(f"{path}: expected a JSON list of samples, got {type(data).__name__}")
    want = tuple(item_shapes[0])
    if not data:
        return np.zeros((0, *want))
    try:
        arr = np.asarray(data, dtype=np.float64)
        ok = arr.ndim >= 1 and arr.shape[1:] in [tuple(s) for s in item_shapes]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        for i, item in enumerate(data):
            try:
                shape = np.asarray(item, dtype=np.float64).shape
            except (TypeError, ValueError):
                raise HandannoError(f"{path}: sample {i} is not numeric ({str(item)[:60]})") from None
            if shape not in [tuple(s) for s in item_shapes]:
                raise HandannoError(f"{path}: sample {i} has shape {shape}, expected {want}")
        raise HandannoError(f"{path}: could not read as an array of {want} items")  # pragma: no cover
    arr = arr.reshape((len(data), *want))
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise HandannoError(f"{path}: sample {first} holds NaN or inf ({int(bad.sum())} bad samples in all)")
    return arr


def _missing_files(paths: Sequence[Path], what: str, version: str | None = None) -> None:
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        i = missing[0]
        ver = f", version {version!r}" if version else ""
        raise HandannoError(f"{paths[i]}: {what} of sample {i}{ver} not found ({len(missing)} missing in all)")


def read_freihand(
    root: str | os.PathLike, split: str = "training", version: str = "gs", check_images: bool = True
) -> FreiHANDLabels:
    """Read a FreiHAND-layout split: handanno's labels or the official FreiHAND download.

    Args:
        root: the folder holding ``<split>_K.json`` etc. and ``<split>/rgb``.
        split: ``"training"`` or ``"evaluation"``.
        version: training image version, ``"gs"`` (default), ``"hom"``, ``"sample"`` or
            ``"auto"``; the evaluation split and handanno's labels have only ``"gs"``.
        check_images: check that every image (and mask, when the split has a mask folder)
            exists.

    Returns:
        :class:`FreiHANDLabels`.

    Raises:
        HandannoError: naming the file and sample index, for a missing file, lists of
            different lengths, a badly shaped or non-finite sample, or a missing image.
    """
    root = Path(root)
    if not root.is_dir():
        raise HandannoError(f"{root}: FreiHAND folder not found")
    if split not in SPLITS:
        raise HandannoError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if version not in SAMPLE_VERSIONS:
        raise HandannoError(f"version must be one of {list(SAMPLE_VERSIONS)}, got {version!r}")
    model_path = root / "model.json"
    model = read_json(model_path) if model_path.exists() else None
    if version != "gs" and (split == "evaluation" or model is not None):
        what = "the evaluation split" if split == "evaluation" else "handanno labels"
        raise HandannoError(f"{root}: {what} have a single image version ('gs'), got version {version!r}")
    handanno = model is not None

    K = _load_list(_list_path(root, split, "K"), [(3, 3)], required=True)
    assert K is not None
    scale = _load_list(_list_path(root, split, "scale"), [(), (1,)], required=True)
    xyz = _load_list(_list_path(root, split, "xyz"), [(NUM_JOINTS, 3)], required=handanno)
    verts = _load_list(_list_path(root, split, "verts"), [(NUM_VERTS, 3)], required=handanno)
    mano = _load_list(
        _list_path(root, split, "mano"), [(NUM_MANO_PARAMS_FREIHAND,), (1, NUM_MANO_PARAMS_FREIHAND)], handanno
    )
    N = len(K)
    for key, arr in (("scale", scale), ("xyz", xyz), ("verts", verts), ("mano", mano)):
        if arr is not None and len(arr) != N:
            raise HandannoError(
                f"{_list_path(root, split, key)} has {len(arr)} samples but {_list_path(root, split, 'K')} has {N}"
            )
    assert scale is not None

    index = None
    if handanno and split == "training":
        entries = read_json(root / "index.json")
        if not isinstance(entries, list) or len(entries) != N:
            n = len(entries) if isinstance(entries, list) else "no list of"
            raise HandannoError(f"{root / 'index.json'} has {n} entries but {_list_path(root, split, 'K')} has {N}")
        index = tuple(entries)

    rgb_dir, mask_dir = root / split / "rgb", root / split / "mask"
    image_paths = tuple(rgb_dir / f"{sample_version_id(i, version, N):08d}.jpg" for i in range(N))
    mask_paths = tuple(mask_dir / f"{i:08d}.jpg" for i in range(N)) if (mask_dir.is_dir() or handanno) else None
    if check_images:
        _missing_files(image_paths, "image", version)
        if mask_paths is not None:
            _missing_files(mask_paths, "mask")
    return FreiHANDLabels(
        root=root, split=split, version=version, K=K, scale=scale.reshape(N), xyz=xyz, verts=verts, mano=mano,
        image_paths=image_paths, mask_paths=mask_paths, index=index, model=model,
    )  # fmt: skip
