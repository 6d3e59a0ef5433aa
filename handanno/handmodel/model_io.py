"""Reading hand model files safely: MANO pickles without chumpy, and handanno's open hand model.

Pickles are untrusted input. :func:`read_model_pickle` reads them with a restricted
unpickler that can build nothing but numpy arrays, scipy sparse matrices (as inert
stand-ins) and the chumpy objects MANO uses (as inert stand-ins), then turns everything
into plain numpy arrays. Any other class named in the file is refused before anything
is built, so a malicious pickle cannot run code, and chumpy need not be installed.

Nor can a small file make handanno do unbounded work (a "pickle bomb": a few hundred bytes
of shared references that expand to gigabytes, or an array shape that asks numpy for
terabytes). The file is read only up to :data:`MAX_MODEL_FILE_BYTES`; its pickle operations
are counted and simulated before anything is built (:func:`_check_operations`), bounding
their number, the nesting depth, memo indices and how far shared references expand; numpy
arrays are checked against their data before numpy allocates them; and turning the result
into arrays may build :data:`_MAX_ELEMENTS` array elements in all. Each refusal is a
:class:`~handanno.errors.HandannoError` naming the file.

What a MANO pickle holds (``MANO_RIGHT.pkl``, ``MANO_LEFT.pkl`` from
https://mano.is.tue.mpg.de): a Python 2 pickle (read with ``encoding="latin1"``) of a dict
with ``v_template, f, J_regressor, weights, posedirs, shapedirs, kintree_table,
hands_components, hands_mean, hands_coeffs, J, bs_style, bs_type``. ``J_regressor`` is a
``scipy.sparse.csc.csc_matrix``; ``shapedirs`` is a chumpy expression,
``chumpy.reordering.Select(a=chumpy.ch.Ch(x), idxs, preferred_shape)``; the rest are numpy
arrays and strings.
"""

from __future__ import annotations

import io
import logging
import math
import operator
import os
import pickle
import pickletools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handanno.data.conventions import HAND_SIDES
from handanno.errors import HandannoError
from handanno.handmodel.mano import HandModelData

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

# Bounds on the work one model file may ask for, each far above what hand models need.
#: Largest model file read: MANO_RIGHT.pkl is about 4 MB, handanno's open model 2 MB.
MAX_MODEL_FILE_BYTES = 128 * 2**20
_MAX_OPERATIONS = 4_000_000  # pickle opcodes; MANO: a few thousand, MANO as plain lists of floats ~0.5 million
_MAX_EXPANDED = 2**25  # objects built, summed, a shared one counted at each use; MANO as plain lists: ~2 million
_MAX_NESTING = 100  # containers inside containers; MANO: ~15
_MAX_ELEMENTS = 2**25  # array elements built in all from one file (~270 MB as float64); MANO: ~1 million


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


class _TooLarge(Exception):
    """The file asks for far more work or memory than any hand model needs (a "pickle bomb")."""


def _dims(shape: Any) -> list[int] | None:
    """``shape`` as a list of non-negative ints, or None when it is not one (numpy then reports it)."""
    try:
        if len(shape) > 64:  # numpy's limit on dimensions
            return None
        dims = [operator.index(d) for d in shape]
    except TypeError:
        return None
    return dims if all(d >= 0 for d in dims) else None


_MAX_EMPTY_ELEMENTS = 2**20  # elements of an array made before its data is read; pickles ask for 0


class _CheckedArray(np.ndarray):
    """The ndarray the unpickler builds (``numpy.ndarray`` in a pickle means this class).

    numpy would allocate what a pickle asks for before looking at the data: the shape
    given to ``ndarray(shape, dtype)`` or ``_reconstruct``, and ``__setstate__`` the pickled
    shape of an object array, so a few bytes could ask for terabytes. This class checks
    first. Readers get plain ndarrays (``np.asarray``) in the end.
    """

    def __new__(cls, shape: Any, *args: Any, **kwargs: Any) -> _CheckedArray:
        dims = _dims(shape if isinstance(shape, (tuple, list)) else (shape,))
        if dims is not None and math.prod(dims) > _MAX_EMPTY_ELEMENTS:
            raise _TooLarge(f"an array of shape {tuple(dims)} for numpy to allocate before reading its data")
        return super().__new__(cls, shape, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) in (4, 5) and isinstance(state[-3], np.dtype):
            shape, dtype, data = state[-4], state[-3], state[-1]
            dims = _dims(shape)
            if dims is not None:
                n = math.prod(dims)
                if dtype.hasobject and (not isinstance(data, list) or n > len(data)):
                    raise _TooLarge(f"an object array of shape {tuple(dims)} with fewer values than that")
                if not dtype.hasobject and n * dtype.itemsize > MAX_MODEL_FILE_BYTES:
                    raise _TooLarge(f"an array of shape {tuple(dims)} and dtype {dtype} "
                                    f"({n * dtype.itemsize:,} bytes)")  # fmt: skip
        super().__setstate__(state)


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """The ``_reconstruct`` of numpy, for plain ndarrays, refusing a shape that would allocate much.

    Pickles call it with shape ``(0,)`` and give the real shape to ``__setstate__``.
    """
    if subtype not in (np.ndarray, _CheckedArray):
        raise pickle.UnpicklingError(f"numpy _reconstruct of {subtype!r} is not allowed")
    dims = _dims(shape)
    if dims is not None and math.prod(dims) > _MAX_EMPTY_ELEMENTS:
        raise _TooLarge(f"an array of shape {tuple(dims)} for numpy to allocate before reading its data")
    return _numpy_function("_reconstruct")(_CheckedArray, shape, dtype)


def _checked_frombuffer(*args: Any, **kwargs: Any) -> np.ndarray:
    """The ``_frombuffer`` of numpy (protocol 5 pickles); its array, too, checks a later ``__setstate__``."""
    return _numpy_function("_frombuffer")(*args, **kwargs).view(_CheckedArray)


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
            checked = {"_reconstruct": _checked_reconstruct, "_frombuffer": _checked_frombuffer}
            return checked.get(name) or _numpy_function(name)
        if module == "numpy" and name == "ndarray":
            return _CheckedArray
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
# Counting the work a pickle asks for, before unpickling it.
# ---------------------------------------------------------------------------------------


class _Node:
    """What the simulation knows of an object: how many objects it expands to, how deep it nests."""

    __slots__ = ("size", "depth")

    def __init__(self, size: int, depth: int) -> None:
        self.size = size
        self.depth = depth


_MARK = object()
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # change their first operand
_LEAVES = {  # push a new object made of no other: numbers, strings, empty containers, globals
    op.name
    for op in pickletools.opcodes
    if not op.stack_before and op.stack_after not in ([], [pickletools.markobject])
} - _MEMO_GETS


def _pop(stack: list, n: int) -> list[_Node]:
    if n > len(stack) or any(x is _MARK for x in stack[len(stack) - n :]):
        raise pickle.UnpicklingError("the pickle's stack runs out (the file is corrupt)")
    items = stack[len(stack) - n :]
    del stack[len(stack) - n :]
    return items


def _pop_to_mark(stack: list) -> list[_Node]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise pickle.UnpicklingError("the pickle has no mark where it needs one (the file is corrupt)")


def _check_operations(data: bytes) -> None:
    """Run the pickle's operations on sizes only, refusing a file that asks for far too much.

    Each object is simulated by a :class:`_Node` holding how many objects it expands to
    when every shared (memo) reference is followed, and how deeply it nests; the sizes of
    all objects built (and of what is added to them) are summed. This bounds the
    unpickler's own work: hashing a tuple visits its expansion (a dict key or set member
    made of shared tuples can take longer than the age of the universe), and a memo index
    makes the unpickler allocate a table that large. Lists that grow after they are shared
    are counted at the time they are shared; :func:`_expanded_count` bounds what is built
    from the loaded objects later.

    Raises:
        _TooLarge: more than :data:`_MAX_OPERATIONS` operations, a memo index beyond the
            operations read, objects expanding to more than :data:`_MAX_EXPANDED` in all,
            or nesting deeper than :data:`_MAX_NESTING`.
        ValueError, pickle.UnpicklingError: the file is not a well-formed pickle.
    """
    stack: list = []
    memo: dict[int, _Node] = {}
    expanded = 0  # objects built so far, with every shared reference expanded
    for count, (op, arg, _pos) in enumerate(pickletools.genops(data), start=1):
        if count > _MAX_OPERATIONS:
            raise _TooLarge(f"more than {_MAX_OPERATIONS:,} pickle operations")
        name = op.name
        if name in _LEAVES:
            stack.append(_Node(1, 0))
        elif name in ("PROTO", "FRAME", "STOP"):
            continue
        elif name == "MARK":
            stack.append(_MARK)
        elif name in _MEMO_PUTS or name == "MEMOIZE":
            index = len(memo) if name == "MEMOIZE" else int(arg)
            if index > count:  # a pickler numbers them 0, 1, 2, ...; the unpickler allocates up to the index
                raise _TooLarge(f"a memo index of {index:,} after only {count:,} operations")
            memo[index] = _pop(stack, 1)[0]
            stack.append(memo[index])
        elif name in _MEMO_GETS:
            if int(arg) not in memo:
                raise pickle.UnpicklingError(f"memo index {arg} is used before it is set (the file is corrupt)")
            stack.append(memo[int(arg)])
        elif name == "DUP":
            stack.extend(_pop(stack, 1) * 2)
        elif name == "POP":
            if stack and stack[-1] is _MARK:
                stack.pop()
            else:
                _pop(stack, 1)
        elif name == "POP_MARK":
            _pop_to_mark(stack)
        else:
            before = op.stack_before
            if pickletools.markobject in before:
                items = _pop_to_mark(stack)
                operands = _pop(stack, before.index(pickletools.markobject)) + items
            else:
                operands = _pop(stack, len(before))
            if name in _IN_PLACE:
                node, added = operands[0], operands[1:]
                grown = sum(x.size for x in added)
                node.size += grown
                node.depth = max([node.depth] + [x.depth + 1 for x in added])
            else:
                node = _Node(1 + sum(x.size for x in operands), 1 + max((x.depth for x in operands), default=0))
                grown = node.size
            expanded += grown  # bounds the work of each object and of all of them (a big key in many dicts)
            if expanded > _MAX_EXPANDED:
                raise _TooLarge(f"more than {_MAX_EXPANDED:,} objects once its shared references are expanded")
            if node.depth > _MAX_NESTING:
                raise _TooLarge(f"data nested more than {_MAX_NESTING} levels deep")
            stack.extend([node] * len(op.stack_after))


def _read_bounded(f: Any) -> bytes:
    """The whole file, read in pieces (one ``read`` of the limit would allocate the limit) up to the limit."""
    chunks: list[bytes] = []
    total = 0
    while chunk := f.read(2**20):
        total += len(chunk)
        if total > MAX_MODEL_FILE_BYTES:
            raise _TooLarge(f"more than {MAX_MODEL_FILE_BYTES:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(path: Path, why: _TooLarge) -> HandannoError:
    return HandannoError(
        f"{path}: refused to read it: it holds {why}, far more than any hand model (MANO_RIGHT.pkl is about "
        f"4 MB); it is not a MANO model file: download MANO from {MANO_URL} again"
    )


# ---------------------------------------------------------------------------------------
# From stand-ins to plain arrays.
# ---------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """A value that cannot be turned into a numeric array (kept out of the result)."""


class _Work:
    """What turning one file's objects into arrays may still build, and the stand-ins already evaluated."""

    def __init__(self) -> None:
        self.elements_left = _MAX_ELEMENTS
        self.done: dict[int, np.ndarray | None] = {}  # id(stand-in) -> its value (None: being evaluated)

    def spend(self, n: int) -> None:
        """Count ``n`` more array elements built, refusing to go past :data:`_MAX_ELEMENTS` in all."""
        if n > self.elements_left:
            raise _TooLarge(f"values that expand to more than {_MAX_ELEMENTS:,} array elements")
        self.elements_left -= n


def _expanded_count(value: Any, limit: int) -> int:
    """How many elements ``np.asarray(value)`` would build, counted without building anything.

    Lists and tuples are expanded, a shared one counted at each use (and at least 1, so
    that nests of empty lists count too), arrays by their size, strings by their length.

    Raises:
        _TooLarge: more than ``limit`` elements, a list inside itself, or nesting deeper
            than :data:`_MAX_NESTING`.
    """
    counted: dict[int, int] = {}  # id -> count (-1: being counted)

    def count(v: Any, depth: int) -> int:
        if isinstance(v, np.ndarray):
            return max(v.size, 1)
        if isinstance(v, (str, bytes)):
            return max(len(v), 1)
        if not isinstance(v, (list, tuple)):
            return 1
        if id(v) in counted:
            if counted[id(v)] < 0:
                raise _TooLarge("a list that contains itself")
            return counted[id(v)]
        if depth > _MAX_NESTING:
            raise _TooLarge(f"lists nested more than {_MAX_NESTING} levels deep")
        counted[id(v)] = -1
        total = 0
        for item in v:
            total += count(item, depth + 1)
            if total > limit:
                raise _TooLarge(f"values that expand to more than {_MAX_ELEMENTS:,} array elements")
        counted[id(v)] = max(total, 1)
        return counted[id(v)]

    return count(value, 0)


def _as_array(value: Any, work: _Work, dtype: Any = None) -> np.ndarray:
    """``np.asarray(value, dtype)``, its size counted against ``work`` before it is built."""
    work.spend(_expanded_count(value, work.elements_left))
    return np.asarray(value, dtype=dtype)


def _chumpy_value(obj: _ChumpyStandIn, work: _Work, depth: int) -> np.ndarray:
    """What chumpy's ``compute_r`` would give for the expressions MANO uses (each evaluated once)."""
    if id(obj) in work.done:
        if work.done[id(obj)] is None:
            raise _Unsupported("a chumpy expression that contains itself")
        return work.done[id(obj)]
    work.done[id(obj)] = None
    try:
        out = _evaluate_chumpy(obj, work, depth)
    except BaseException:
        del work.done[id(obj)]
        raise
    work.done[id(obj)] = out
    return out


def _evaluate_chumpy(obj: _ChumpyStandIn, work: _Work, depth: int) -> np.ndarray:
    state = obj.state if isinstance(obj.state, dict) else {}
    kind = obj.qualname
    if kind == "chumpy.ch.Ch" and "x" in state:  # Ch.compute_r: self.x
        out = _as_array(_to_plain(state["x"], work, depth + 1), work)
    elif kind == "chumpy.reordering.Select" and {"a", "idxs"} <= state.keys():
        # Select.compute_r: a.r.ravel()[idxs], reshaped to preferred_shape when it has one
        a = _as_array(_to_plain(state["a"], work, depth + 1), work)
        idxs = _as_array(_to_plain(state["idxs"], work, depth + 1), work, dtype=np.int64)
        work.spend(a.size + idxs.size)  # the ravel (maybe a copy) and the result
        out = a.ravel()[idxs]
        out = out.reshape(state["preferred_shape"]) if "preferred_shape" in state else out
    elif kind == "chumpy.reordering.Reshape" and {"a", "newshape"} <= state.keys():
        out = _as_array(_to_plain(state["a"], work, depth + 1), work).reshape(state["newshape"])
    elif kind == "chumpy.reordering.transpose" and "a" in state:
        out = np.transpose(_as_array(_to_plain(state["a"], work, depth + 1), work), axes=state.get("axes"))
    else:
        raise _Unsupported(f"a {kind} expression, which handanno cannot evaluate without chumpy")
    return out


def _sparse_value(obj: _SparseStandIn, work: _Work) -> np.ndarray:
    """The dense array of a pickled csc/csr matrix (state: data, indices, indptr, _shape)."""
    import scipy.sparse

    state = obj.state if isinstance(obj.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    if shape is None or not {"data", "indices", "indptr"} <= state.keys():
        raise _Unsupported(f"a {obj.qualname} without its data")
    dims = _dims(shape)
    if dims is None or len(dims) != 2:
        raise ValueError(f"a {obj.qualname} of shape {shape!r}")
    work.spend(math.prod(dims))  # the dense array, before it is built
    make = scipy.sparse.csc_matrix if obj.fmt == "csc" else scipy.sparse.csr_matrix
    arrays = (_as_array(state["data"], work), _as_array(state["indices"], work), _as_array(state["indptr"], work))
    return make(arrays, shape=tuple(dims)).toarray()


def _to_plain(value: Any, work: _Work, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise _Unsupported("a chumpy expression nested too deeply")
    if isinstance(value, _ChumpyStandIn):
        return _chumpy_value(value, work, depth)
    if isinstance(value, _SparseStandIn):
        return _sparse_value(value, work)
    return value


def _to_array(value: Any, work: _Work) -> np.ndarray:
    """A plain value as float64 / int64 / bool / str numpy array."""
    value = _to_plain(value, work)
    if isinstance(value, bytes):
        value = value.decode("latin1")
    if isinstance(value, str):
        return np.asarray(value)
    if isinstance(value, (set, frozenset, dict)) or value is None:
        raise _Unsupported(f"a {type(value).__name__}")
    try:
        arr = _as_array(value, work)
    except (TypeError, ValueError) as exc:
        raise _Unsupported(f"not an array ({exc})") from None
    if arr.dtype.kind in "fiu":
        work.spend(arr.size)  # the copy below
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
            class outside the allowed set; or it asks for far more work or memory than a
            hand model needs (a "pickle bomb", see the module docstring). The message names
            the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _read_bounded(f)
        _check_operations(data)
        raw = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except HandannoError:
        raise
    except _TooLarge as why:
        raise _refusal(path, why) from None
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
    work = _Work()
    for key, value in raw.items():
        if not isinstance(key, (str, bytes, int)):
            logger.debug("%s: a key of type %s left out", path, type(key).__name__)
            continue
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        try:
            out[key] = _to_array(value, work)
        except _TooLarge as why:
            raise _refusal(path, why) from None
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
