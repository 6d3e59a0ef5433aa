"""Reading hand model files safely: MANO pickles without chumpy, and handanno's open hand model.

Pickles are untrusted input. :func:`read_model_pickle` reads them with a restricted
unpickler that can build nothing but numpy arrays, scipy sparse matrices (as inert
stand-ins) and the chumpy objects MANO uses (as inert stand-ins), then turns everything
into plain numpy arrays. Any other class named in the file is refused before anything
is built, so a malicious pickle cannot run code, and chumpy need not be installed.

What a MANO pickle holds (``MANO_RIGHT.pkl``, ``MANO_LEFT.pkl`` from
https://mano.is.tue.mpg.de): a Python 2 pickle (read with ``encoding="latin1"``) of a dict
with ``v_template, f, J_regressor, weights, posedirs, shapedirs, kintree_table,
hands_components, hands_mean, hands_coeffs, J, bs_style, bs_type``. ``J_regressor`` is a
``scipy.sparse.csc.csc_matrix``; ``shapedirs`` is a chumpy expression,
``chumpy.reordering.Select(a=chumpy.ch.Ch(x), idxs, preferred_shape)``; the rest are numpy
arrays and strings.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handanno.data.conventions import HAND_SIDES
from handanno.errors import HandannoError
from handanno.models.mano import HandModelData

logger = logging.getLogger(__name__)

MANO_URL = "https://mano.is.tue.mpg.de"
MANO_FILES = {"right": "MANO_RIGHT.pkl", "left": "MANO_LEFT.pkl"}
MODEL_DIR_ENV = "HANDANNO_MODEL_DIR"

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: handanno's open hand model, shipped with the package (MANO keys as plain arrays, plus
#: ``tip_vertex_ids`` and ``model_name``).
OPEN_MODEL_FILES = {"right": _ASSETS / "open_hand_right.pkl", "left": _ASSETS / "open_hand_left.pkl"}
OPEN_MODEL_NAME = "handanno-open-hand"

#: A key a left-hand file may carry (any true value) to say its ``shapedirs`` are already
#: fixed, so that :func:`load_hand_model` leaves them alone.
LEFT_FIX_MARKER = "left_shapedirs_fixed"

_ALLOWED_WHAT = "only numpy, scipy.sparse and chumpy arrays are allowed"
_MAX_DEPTH = 32  # nesting of chumpy expressions


# ---------------------------------------------------------------------------------------
# Inert stand-ins: pickle builds these instead of the real classes; they only keep state.
# ---------------------------------------------------------------------------------------


class _StandIn:
    """An object the unpickler builds in place of a chumpy or scipy.sparse object.

    It runs no code of the original class: ``__new__``/``__init__`` ignore their arguments
    and ``__setstate__`` only keeps the pickled state for :func:`_to_plain`.
    """

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        obj = super().__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyStandIn(_StandIn):
    pass


class _SparseStandIn(_StandIn):
    fmt = ""


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str, base: type, **attrs: Any) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (base,), {"qualname": f"{module}.{name}", **attrs})
    return _STAND_INS[key]


def _numpy_function(name: str) -> Callable[..., Any]:
    """The pickle helpers of numpy, whichever of numpy._core (numpy 2) / numpy.core (numpy 1) exists."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    return getattr(numeric if name == "_frombuffer" else multiarray, name)


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copy_reg._reconstructor`` (protocol 0/1 pickles), for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copy_reg._reconstructor called on {cls!r}, which is not allowed")
    return cls.__new__(cls)


def _safe_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode``, which Python 3 writes for bytes in protocol 0-2; latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin-1")


_NUMPY_MODULES = {
    "numpy.core.multiarray": ("_reconstruct", "scalar"),
    "numpy._core.multiarray": ("_reconstruct", "scalar"),
    "numpy.core.numeric": ("_frombuffer",),
    "numpy._core.numeric": ("_frombuffer",),
}
_SPARSE_MODULES = {
    "scipy.sparse",
    "scipy.sparse.csc",
    "scipy.sparse._csc",
    "scipy.sparse.csr",
    "scipy.sparse._csr",
}
_SPARSE_NAMES = {"csc_matrix": "csc", "csc_array": "csc", "csr_matrix": "csr", "csr_array": "csr"}
_BUILTINS = {"set": set, "frozenset": frozenset, "object": object}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a MANO-format model pickle needs; refuses everything else."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        """The object for a ``module.name`` in the file, or a refusal naming it and the file."""
        if module in _NUMPY_MODULES and name in _NUMPY_MODULES[module]:
            return _numpy_function(name)
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _stand_in(module, name, _SparseStandIn, fmt=_SPARSE_NAMES[name])
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in(module, name, _ChumpyStandIn)
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_encode
        raise HandannoError(
            f"handanno refuses to load class {_py3_name(module, name)} from {self._path}: "
            f"not a MANO model ({_ALLOWED_WHAT})"
        )


def _py3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 spells it (pickles of protocol < 3 hold Python 2 names)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


# ---------------------------------------------------------------------------------------
# From stand-ins to plain arrays.
# ---------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """A value that cannot be turned into a numeric array (kept out of the result)."""


def _chumpy_value(obj: _ChumpyStandIn, depth: int) -> np.ndarray:
    """What chumpy's ``compute_r`` would give for the expressions MANO uses."""
    state = obj.state if isinstance(obj.state, dict) else {}
    kind = obj.qualname
    if kind == "chumpy.ch.Ch" and "x" in state:  # Ch.compute_r: self.x
        return np.asarray(_to_plain(state["x"], depth + 1))
    if kind == "chumpy.reordering.Select" and {"a", "idxs"} <= state.keys():
        # Select.compute_r: a.r.ravel()[idxs], reshaped to preferred_shape when it has one
        a = np.asarray(_to_plain(state["a"], depth + 1))
        out = a.ravel()[np.asarray(_to_plain(state["idxs"], depth + 1), dtype=np.int64)]
        return out.reshape(state["preferred_shape"]) if "preferred_shape" in state else out
    if kind == "chumpy.reordering.Reshape" and {"a", "newshape"} <= state.keys():
        return np.asarray(_to_plain(state["a"], depth + 1)).reshape(state["newshape"])
    if kind == "chumpy.reordering.transpose" and "a" in state:
        return np.transpose(np.asarray(_to_plain(state["a"], depth + 1)), axes=state.get("axes"))
    raise _Unsupported(f"a {kind} expression, which handanno cannot evaluate without chumpy")


def _sparse_value(obj: _SparseStandIn) -> np.ndarray:
    """The dense array of a pickled csc/csr matrix (state: data, indices, indptr, _shape)."""
    import scipy.sparse

    state = obj.state if isinstance(obj.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    if shape is None or not {"data", "indices", "indptr"} <= state.keys():
        raise _Unsupported(f"a {obj.qualname} without its data")
    make = scipy.sparse.csc_matrix if obj.fmt == "csc" else scipy.sparse.csr_matrix
    arrays = (np.asarray(state["data"]), np.asarray(state["indices"]), np.asarray(state["indptr"]))
    return make(arrays, shape=tuple(int(s) for s in shape)).toarray()


def _to_plain(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise _Unsupported("a chumpy expression nested too deeply")
    if isinstance(value, _ChumpyStandIn):
        return _chumpy_value(value, depth)
    if isinstance(value, _SparseStandIn):
        return _sparse_value(value)
    return value


def _to_array(value: Any) -> np.ndarray:
    """A plain value as float64 / int64 / bool / str numpy array."""
    value = _to_plain(value)
    if isinstance(value, bytes):
        value = value.decode("latin1")
    if isinstance(value, str):
        return np.asarray(value)
    if isinstance(value, (set, frozenset, dict)) or value is None:
        raise _Unsupported(f"a {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _Unsupported(f"not an array ({exc})") from None
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind in "bU":
        return arr
    raise _Unsupported(f"an array of dtype {arr.dtype}")


def read_model_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MANO-format model pickle into plain numpy arrays, safely and without chumpy.

    Reads the original MANO files (Python 2 pickles with chumpy objects and a scipy sparse
    ``J_regressor``) and any pickle of the same keys as plain arrays. The unpickler builds
    only numpy arrays, scipy csc/csr matrices and chumpy objects, the last two as inert
    stand-ins evaluated here (chumpy ``Ch`` to its ``x``; ``Select`` to
    ``a.ravel()[idxs].reshape(preferred_shape)``, chumpy's own ``compute_r``; also
    ``Reshape`` and ``transpose``). Any other class in the file is refused before it is
    built. No left-hand fix is applied here (see :func:`load_hand_model`).

    Args:
        path: the pickle.

    Returns:
        Every key whose value is numeric, as a numpy array: floats as float64, integers as
        int64 (so ``f`` is int64), sparse matrices dense; strings as 0-d ``str`` arrays.
        Keys holding anything else (say an unevaluable chumpy expression) are left out,
        with a debug log line.

    Raises:
        HandannoError: the file is missing, not a pickle, truncated, not a dict, or names a
            class outside the allowed set; the message names the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = _RestrictedUnpickler(f, path).load()
    except HandannoError:
        raise
    except FileNotFoundError:
        raise HandannoError(f"{path}: hand model file not found") from None
    except IsADirectoryError:
        raise HandannoError(f"{path}: is a folder, not a hand model file") from None
    except Exception as exc:  # any failure of a corrupt pickle is the same user error
        raise HandannoError(
            f"{path}: not a readable hand model pickle, the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc}); download it again"
        ) from None
    if not isinstance(raw, dict):
        raise HandannoError(f"{path}: holds a {type(raw).__name__}, not a MANO-format dict of arrays")

    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        try:
            out[key] = _to_array(value)
        except _Unsupported as why:
            logger.debug("%s: key %r left out: %s", path, key, why)
        except (ValueError, TypeError, IndexError) as exc:
            raise HandannoError(f"{path}: key {key!r} is corrupt ({type(exc).__name__}: {exc})") from None
    return out


# ---------------------------------------------------------------------------------------
# The left-hand fix.
# ---------------------------------------------------------------------------------------


def _flag(d: dict[str, np.ndarray], key: str) -> bool:
    """True when ``d[key]`` is a single true value (a number, a bool or "true"/"yes"/"1")."""
    if key not in d or np.asarray(d[key]).size != 1:
        return False
    value = np.asarray(d[key]).item()
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def fix_left_shapedirs(
    left: dict[str, np.ndarray], right: dict[str, np.ndarray] | None, is_mano: bool, source: str
) -> tuple[dict[str, np.ndarray], str]:
    """Undo the sign error of the original MANO_LEFT.pkl in ``shapedirs[:, 0, :]``.

    The released left model ships the right hand's shape blend shapes unchanged, so its
    x components point the wrong way for a mirrored hand (vchoutas/smplx issue #48); the
    fix negates ``shapedirs[:, 0, :]``. Whether a file needs it is decided as follows:

    1. A right model is given (``MANO_RIGHT.pkl`` from the same folder) with the same shape:
       if the left ``shapedirs[:, 0, :]`` equals the right one (``np.allclose``) the left is
       the buggy original and is fixed; if it equals minus the right one it is already
       fixed and left alone. If it is neither, rule 2 decides (and a warning is logged).
    2. Otherwise: a MANO model (``is_mano``) is fixed unless it carries the key
       :data:`LEFT_FIX_MARKER` with a true value; any other model (the open hand model is
       generated correctly) is left alone.

    Args:
        left: the left model's arrays (not modified).
        right: the right model's arrays, or None.
        is_mano: whether ``left`` is a licensed MANO file.
        source: the left file, for log lines.

    Returns:
        The arrays (a new dict with a new ``shapedirs`` when fixed) and a short note of
        what was decided.
    """
    sd = left.get("shapedirs")
    if sd is None or sd.ndim != 3 or sd.shape[1] != 3:
        return left, "no usable shapedirs, nothing fixed"
    fix: bool | None = None
    note = ""
    if right is not None and np.shape(right.get("shapedirs")) == sd.shape:
        r0, l0 = right["shapedirs"][:, 0, :], sd[:, 0, :]
        if np.allclose(l0, r0, rtol=1e-5, atol=1e-9):
            fix, note = True, "its shapedirs[:, 0, :] equal the right hand's (the original MANO sign error)"
        elif np.allclose(l0, -r0, rtol=1e-5, atol=1e-9):
            fix, note = False, "its shapedirs[:, 0, :] are already minus the right hand's"
        else:
            logger.warning("%s: left and right shapedirs are unrelated; deciding the left fix without them", source)
    if fix is None:
        if not is_mano:
            fix, note = False, "not a MANO file"
        elif _flag(left, LEFT_FIX_MARKER):
            fix, note = False, f"the file is marked {LEFT_FIX_MARKER}"
        else:
            fix, note = True, "a MANO left-hand file without a right-hand file to compare with"
    if not fix:
        return left, f"shapedirs left as they are: {note}"
    fixed = dict(left)
    fixed["shapedirs"] = sd.copy()
    fixed["shapedirs"][:, 0, :] *= -1.0
    return fixed, f"negated shapedirs[:, 0, :] (known sign error of MANO_LEFT.pkl): {note}"


# ---------------------------------------------------------------------------------------
# Finding and loading a hand model.
# ---------------------------------------------------------------------------------------


def _text(d: dict[str, np.ndarray], key: str) -> str | None:
    value = d.get(key)
    if value is None or np.asarray(value).dtype.kind != "U":
        return None
    return str(np.asarray(value).item())


def _model_dir_hint() -> str:
    return (
        f"download MANO from {MANO_URL} (free registration) and put MANO_RIGHT.pkl / MANO_LEFT.pkl "
        f"in it; with no model folder (no --model-dir and no {MODEL_DIR_ENV}) handanno uses its "
        "open hand model, whose labels are not MANO labels"
    )


def load_hand_model(side: str = "right", model_dir: str | os.PathLike | None = None) -> HandModelData:
    """Load the hand model for one side: MANO from a model folder, or handanno's open model.

    The folder is ``model_dir`` if given, else the environment variable
    ``HANDANNO_MODEL_DIR`` if set and not empty; it must hold ``MANO_RIGHT.pkl`` /
    ``MANO_LEFT.pkl`` (the original files, or pickles of the same keys as plain arrays).
    With neither, the open hand model shipped in ``handanno/assets`` is used and one notice
    line is logged (at WARNING) saying its labels are not MANO labels.

    A left-hand MANO file gets its ``shapedirs[:, 0, :]`` sign error fixed as
    :func:`fix_left_shapedirs` describes (comparing with ``MANO_RIGHT.pkl`` of the same
    folder when there is one); the open model is never changed.

    Args:
        side: ``"right"`` or ``"left"``.
        model_dir: the MANO model folder, or None.

    Returns:
        The model's arrays. A file from the folder is ``name="MANO"``, ``is_mano=True``
        unless it carries a ``model_name`` other than ``"MANO"``; the open model is
        ``is_mano=False`` with its own ``model_name``.

    Raises:
        HandannoError: unknown side; the folder or file is missing (the message says which
            file, where it was looked for and where MANO can be obtained); the file is not
            a valid model.
    """
    if side not in HAND_SIDES:
        raise HandannoError(f"hand side must be 'right' or 'left', got {side!r}")
    given_by = "--model-dir"
    if model_dir is None:
        env = os.environ.get(MODEL_DIR_ENV, "").strip()
        if env:
            model_dir, given_by = env, f"${MODEL_DIR_ENV}"

    if model_dir is None:
        path = Path(OPEN_MODEL_FILES[side])
        if not path.is_file():
            raise HandannoError(
                f"handanno's open hand model {path} is missing from this installation: reinstall handanno, "
                f"or use MANO: download it from {MANO_URL} and pass --model-dir DIR (or set {MODEL_DIR_ENV}) "
                "with MANO_RIGHT.pkl / MANO_LEFT.pkl in DIR"
            )
        d = read_model_pickle(path)
        name = _text(d, "model_name") or OPEN_MODEL_NAME
        logger.warning(
            "Using handanno's open hand model (%s, %s hand): labels made with it are not MANO labels; "
            "pass --model-dir DIR with MANO_RIGHT.pkl / MANO_LEFT.pkl from %s for MANO labels",
            name,
            side,
            MANO_URL,
        )
        return HandModelData.from_arrays(d, side=side, name=name, is_mano=False, source=str(path))

    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise HandannoError(f"hand model folder {folder} (from {given_by}) does not exist: {_model_dir_hint()}")
    path = folder / MANO_FILES[side]
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.pkl"))
        holds = f"it holds {', '.join(present)}" if present else "it holds no .pkl files"
        raise HandannoError(
            f"{MANO_FILES[side]} not found: looked for {path} (model folder from {given_by}; {holds}); "
            f"{_model_dir_hint()}"
        )
    d = read_model_pickle(path)
    model_name = _text(d, "model_name")
    is_mano = model_name is None or model_name == "MANO"
    name = "MANO" if is_mano else model_name
    if side == "left":
        right = None
        right_path = folder / MANO_FILES["right"]
        if right_path.is_file():
            try:
                right = read_model_pickle(right_path)
            except HandannoError as exc:
                logger.warning("could not read %s to check the left-hand fix: %s", right_path, exc)
        d, note = fix_left_shapedirs(d, right, is_mano=is_mano, source=str(path))
        logger.info("%s: %s", path, note)
    logger.info("Using hand model %s (%s hand) from %s", name, side, path)
    return HandModelData.from_arrays(d, side=side, name=name, is_mano=is_mano, source=str(path))
