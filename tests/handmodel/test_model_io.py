"""The restricted unpickler (MANO pickles without chumpy, malicious pickles refused) and load_hand_model."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from handanno.errors import HandannoError
from handanno.handmodel import model_io as hand_model_io
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import (
    LEFT_FIX_MARKER,
    MODEL_DIR_ENV,
    OPEN_MODEL_FILES,
    load_hand_model,
    read_model_pickle,
)

# ---------------------------------------------------------------------------------------
# Writing pickles shaped like the original MANO files, without chumpy.
# ---------------------------------------------------------------------------------------


class FakeCh:
    """Pickles like chumpy.ch.Ch: its __dict__ minus _parents/_cache (chumpy's __getstate__)."""

    def __init__(self, x):
        self.__dict__.update(
            {"x": np.asarray(x), "_dirty_vars": {"x"}, "_itr": None, "_depends_on_deps": {}, "_make_dense": False}
        )


class FakeSelect:
    """Pickles like chumpy.reordering.Select(a, idxs, preferred_shape)."""

    def __init__(self, a, idxs, preferred_shape):
        self.__dict__.update(
            {"a": a, "idxs": idxs, "preferred_shape": preferred_shape, "_dirty_vars": set(), "_itr": None}
        )


class FakeAdd:
    """A chumpy class handanno does not evaluate (chumpy.ch_ops.add), as SMPL files hold."""

    def __init__(self, a, b):
        self.__dict__.update({"a": a, "b": b})


class FakeOldCsc:
    """Pickles like the csc_matrix of the scipy of 2017: module scipy.sparse.csc, state __dict__."""

    def __init__(self, dense):
        m = scipy.sparse.csc_matrix(dense)
        self.__dict__.update({"_shape": m.shape, "maxprint": 50, "format": "csc"})
        self.__dict__.update({"data": m.data, "indices": m.indices, "indptr": m.indptr})


_FAKES = {
    FakeCh: ("chumpy.ch", "Ch"),
    FakeSelect: ("chumpy.reordering", "Select"),
    FakeAdd: ("chumpy.ch_ops", "add"),
    FakeOldCsc: ("scipy.sparse.csc", "csc_matrix"),
}


def dump_with_foreign_names(obj, path: Path, protocol: int) -> None:
    """Pickle ``obj`` so that the Fake* classes are recorded under chumpy / old scipy names.

    The named modules exist only while pickling (pickle checks that a class is importable
    under its name); they are gone before anything is read back.
    """
    saved = {}
    modules = {}
    for cls, (module, name) in _FAKES.items():
        saved[cls] = (cls.__module__, cls.__name__, cls.__qualname__)
        cls.__module__, cls.__name__, cls.__qualname__ = module, name, name
        for part in ("chumpy", module):
            modules.setdefault(part, types.ModuleType(part))
        setattr(modules[module], name, cls)
    before = {m: sys.modules.get(m) for m in modules}
    try:
        sys.modules.update(modules)
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    finally:
        for m, old in before.items():
            if old is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = old
        for cls, names in saved.items():
            cls.__module__, cls.__name__, cls.__qualname__ = names


def mano_like(d: dict) -> dict:
    """``d`` as the MANO files hold it: shapedirs a Select over a Ch of 20 directions, sparse J_regressor."""
    V = d["v_template"].shape[0]
    x = np.concatenate([d["shapedirs"], np.full((V, 3, 10), 7.0)], axis=2)  # (V, 3, 20); extra dirs unused
    idxs = np.arange(V * 3 * 20).reshape(V, 3, 20)[:, :, :10].ravel()
    out = dict(d)
    out["shapedirs"] = FakeSelect(FakeCh(x), idxs, (V, 3, 10))
    out["hands_mean"] = FakeCh(d["hands_mean"])
    out["J_regressor"] = FakeOldCsc(d["J_regressor"])
    out["J"] = FakeAdd(FakeCh(d["J"]), FakeCh(d["J"]))  # unevaluable, not needed: left out
    return out


def write_plain(d: dict, path: Path, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    return path


def _assert_same_model(got: dict, want: dict) -> None:
    for key in ("v_template", "J_regressor", "weights", "posedirs", "shapedirs", "hands_components", "hands_mean"):
        assert got[key].dtype == np.float64, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert got["f"].dtype == np.int64
    np.testing.assert_array_equal(got["f"], want["f"])
    np.testing.assert_array_equal(got["kintree_table"], want["kintree_table"])


# ---------------------------------------------------------------------------------------
# read_model_pickle
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2])
def test_reads_chumpy_shaped_mano_pickle_without_chumpy(tmp_path, mano_dict, protocol):
    path = tmp_path / "MANO_RIGHT.pkl"
    dump_with_foreign_names(mano_like(mano_dict), path, protocol)
    raw = path.read_bytes()
    assert b"chumpy.reordering" in raw and b"scipy.sparse.csc" in raw  # the names really are in the file
    assert (b"copy_reg\n_reconstructor" in raw) == (protocol == 0)  # protocol 0 builds objects through it
    assert importlib.util.find_spec("chumpy") is None and "chumpy" not in sys.modules

    got = read_model_pickle(path)

    assert "chumpy" not in sys.modules
    _assert_same_model(got, mano_dict)  # shapedirs = Select(Ch(x)) evaluated, J_regressor dense
    assert "J" not in got  # the chumpy.ch_ops.add expression is left out
    assert str(got["bs_style"]) == "lbs"


def test_reads_numpy1_names(tmp_path, mano_dict):
    """MANO files name numpy.core.multiarray._reconstruct (numpy 1); numpy 2 writes numpy._core."""
    raw = pickle.dumps({k: mano_dict[k] for k in ("v_template", "f")}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "m.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    got = read_model_pickle(path)
    np.testing.assert_array_equal(got["v_template"], mano_dict["v_template"])


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("sparse", ["csc_matrix", "csr_matrix", "csc_array"])
def test_reads_plain_pickles(tmp_path, mano_dict, protocol, sparse):
    d = {**mano_dict, "J_regressor": getattr(scipy.sparse, sparse)(mano_dict["J_regressor"]), "flag": np.True_}
    got = read_model_pickle(write_plain(d, tmp_path / "m.pkl", protocol))
    _assert_same_model(got, mano_dict)
    assert got["flag"].dtype == bool


@pytest.mark.parametrize(
    "func, args, shown",
    [
        (os.system, "touch {marker}", f"{os.system.__module__}.system"),
        (subprocess.Popen, ["touch", "{marker}"], "subprocess.Popen"),
        (eval, "open({marker!r}, 'w')", "builtins.eval"),
    ],
)
def test_refuses_foreign_classes_without_running_them(tmp_path, func, args, shown):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            a = [s.format(marker=str(marker)) for s in args] if isinstance(args, list) else args.format(marker=marker)
            return func, (a,)

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "x": Evil()}, protocol=2))
    with pytest.raises(HandannoError) as err:
        read_model_pickle(path)
    msg = str(err.value)
    assert f"refuses to load class {shown} from {path}" in msg
    assert "not a MANO model (only numpy, scipy.sparse and chumpy arrays are allowed)" in msg
    assert not marker.exists()


def test_refuses_reconstructor_on_allowed_non_stand_in(tmp_path):
    """copy_reg._reconstructor is allowed for the chumpy/scipy stand-ins only."""
    # hand-written protocol 0: copy_reg._reconstructor(numpy.ndarray, object, None)
    raw = b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR."
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    with pytest.raises(HandannoError, match=f"{path}: not a readable hand model pickle"):
        read_model_pickle(path)


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a pickle", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["empty", "text", "png"]
)
def test_not_a_pickle(tmp_path, content):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(content)
    with pytest.raises(HandannoError, match=f"{path}: not a readable hand model pickle") as err:
        read_model_pickle(path)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one message, no chained traceback


def test_truncated_pickle(tmp_path, mano_dict):
    good = pickle.dumps(mano_dict, protocol=2)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(HandannoError, match=f"{path}: not a readable hand model pickle, the file is truncated"):
        read_model_pickle(path)


def test_not_a_dict_and_missing(tmp_path):
    path = write_plain([1, 2], tmp_path / "m.pkl")  # type: ignore[arg-type]
    with pytest.raises(HandannoError, match="holds a list, not a MANO-format dict"):
        read_model_pickle(path)
    with pytest.raises(HandannoError, match="nope.pkl: hand model file not found"):
        read_model_pickle(tmp_path / "nope.pkl")


# ---------------------------------------------------------------------------------------
# load_hand_model: folders, environment, open model, notices
# ---------------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)


@pytest.fixture
def open_model(tmp_path, monkeypatch, make_mano_dict):
    """Stand-in open model files (until the real asset ships), as the generator writes them."""
    for side, seed in (("right", 10), ("left", 11)):
        d = {**make_mano_dict(seed), "tip_vertex_ids": np.array([744, 320, 443, 555, 672]), "model_name": "open-test"}
        monkeypatch.setitem(OPEN_MODEL_FILES, side, write_plain(d, tmp_path / f"open_hand_{side}.pkl"))


def test_open_model_files_are_in_the_package():
    for side, path in hand_model_io.OPEN_MODEL_FILES.items():
        assert path.is_absolute() and path.name == f"open_hand_{side}.pkl"
        assert path.parent == Path(hand_model_io.__file__).resolve().parent.parent / "assets"


def test_loads_mano_folder(tmp_path, mano_dict, no_env, caplog):
    dump_with_foreign_names(mano_like(mano_dict), tmp_path / "MANO_RIGHT.pkl", 2)
    with caplog.at_level(logging.INFO, logger="handanno"):
        model = load_hand_model("right", tmp_path)
    assert model.is_mano and model.name == "MANO" and model.side == "right"
    assert model.source == str(tmp_path / "MANO_RIGHT.pkl")
    assert model.tip_vertex_ids.tolist() == [744, 320, 443, 555, 672]
    np.testing.assert_array_equal(model.shapedirs, mano_dict["shapedirs"])
    assert "open hand model" not in caplog.text


def test_model_dir_from_env_and_arg_wins(tmp_path, mano_dict, make_mano_dict, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env_dir.mkdir()
    arg_dir.mkdir()
    write_plain(mano_dict, env_dir / "MANO_RIGHT.pkl")
    write_plain(make_mano_dict(5), arg_dir / "MANO_RIGHT.pkl")
    monkeypatch.setenv(MODEL_DIR_ENV, str(env_dir))
    assert load_hand_model("right").source == str(env_dir / "MANO_RIGHT.pkl")
    assert load_hand_model("right", arg_dir).source == str(arg_dir / "MANO_RIGHT.pkl")


def test_open_model_when_no_folder(open_model, no_env, caplog):
    with caplog.at_level(logging.INFO, logger="handanno"):
        model = load_hand_model("right")
    assert not model.is_mano and model.name == "open-test"
    notices = [r for r in caplog.records if "open hand model" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    msg = notices[0].getMessage()
    assert "not MANO labels" in msg and "--model-dir" in msg and "https://mano.is.tue.mpg.de" in msg


def test_missing_folder_message(tmp_path, no_env):
    with pytest.raises(HandannoError) as err:
        load_hand_model("right", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "does not exist" in msg and "--model-dir" in msg
    assert "https://mano.is.tue.mpg.de" in msg and "open hand model" in msg


def test_missing_folder_from_env_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(HandannoError, match=f"from \\${MODEL_DIR_ENV}"):
        load_hand_model("left")


def test_missing_file_message(tmp_path, mano_dict, no_env):
    write_plain(mano_dict, tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(HandannoError) as err:
        load_hand_model("left", tmp_path)
    msg = str(err.value)
    assert msg.startswith("MANO_LEFT.pkl not found: looked for " + str(tmp_path / "MANO_LEFT.pkl"))
    assert "it holds MANO_RIGHT.pkl" in msg and "https://mano.is.tue.mpg.de" in msg and "open hand model" in msg


def test_missing_open_model_message(tmp_path, monkeypatch, no_env):
    monkeypatch.setitem(OPEN_MODEL_FILES, "right", tmp_path / "open_hand_right.pkl")
    with pytest.raises(HandannoError, match="open hand model .* is missing from this installation"):
        load_hand_model("right")


def test_unknown_side():
    with pytest.raises(HandannoError, match="'right' or 'left'"):
        load_hand_model("both")


def test_corrupt_file_in_folder_names_it(tmp_path, no_env):
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(HandannoError, match=f"{tmp_path / 'MANO_RIGHT.pkl'}: not a readable"):
        load_hand_model("right", tmp_path)


# ---------------------------------------------------------------------------------------
# The left-hand shapedirs fix
# ---------------------------------------------------------------------------------------


def _left_of(d: dict, fixed: bool) -> dict:
    """A left model whose shapedirs are the right's (the original bug) or mirrored (fixed)."""
    left = {**d, "v_template": d["v_template"] * np.array([-1.0, 1.0, 1.0])}
    sd = d["shapedirs"].copy()
    if fixed:
        sd[:, 0, :] *= -1
    left["shapedirs"] = sd
    return left


def test_left_fix_original_pair(tmp_path, mano_dict, no_env):
    """The released pair: left shapedirs equal the right ones -> shapedirs[:, 0, :] negated, rest untouched."""
    dump_with_foreign_names(mano_like(mano_dict), tmp_path / "MANO_RIGHT.pkl", 2)
    dump_with_foreign_names(mano_like(_left_of(mano_dict, fixed=False)), tmp_path / "MANO_LEFT.pkl", 2)
    model = load_hand_model("left", tmp_path)
    np.testing.assert_array_equal(model.shapedirs[:, 0, :], -mano_dict["shapedirs"][:, 0, :])
    np.testing.assert_array_equal(model.shapedirs[:, 1:, :], mano_dict["shapedirs"][:, 1:, :])
    assert model.side == "left" and model.is_mano


def test_left_fix_already_fixed_pair(tmp_path, mano_dict, no_env):
    write_plain(mano_dict, tmp_path / "MANO_RIGHT.pkl")
    write_plain(_left_of(mano_dict, fixed=True), tmp_path / "MANO_LEFT.pkl")
    model = load_hand_model("left", tmp_path)
    np.testing.assert_array_equal(model.shapedirs, _left_of(mano_dict, fixed=True)["shapedirs"])


def test_left_fix_without_right(tmp_path, mano_dict, no_env):
    """Alone, a MANO left file is fixed unless it carries the marker."""
    write_plain(_left_of(mano_dict, fixed=False), tmp_path / "MANO_LEFT.pkl")
    np.testing.assert_array_equal(load_hand_model("left", tmp_path).shapedirs[:, 0], -mano_dict["shapedirs"][:, 0])
    write_plain({**_left_of(mano_dict, fixed=True), LEFT_FIX_MARKER: True}, tmp_path / "MANO_LEFT.pkl")
    np.testing.assert_array_equal(load_hand_model("left", tmp_path).shapedirs[:, 0], -mano_dict["shapedirs"][:, 0])


def test_left_fix_not_for_other_models(tmp_path, mano_dict, no_env):
    """A non-MANO model (model_name set) in a folder, and the open model, are never changed."""
    write_plain({**_left_of(mano_dict, fixed=False), "model_name": "my-hand"}, tmp_path / "MANO_LEFT.pkl")
    model = load_hand_model("left", tmp_path)
    assert not model.is_mano and model.name == "my-hand"
    np.testing.assert_array_equal(model.shapedirs, mano_dict["shapedirs"])


def test_left_fix_not_for_open_model(open_model, make_mano_dict, no_env):
    model = load_hand_model("left")
    np.testing.assert_array_equal(model.shapedirs, make_mano_dict(11)["shapedirs"])


# ---------------------------------------------------------------------------------------
# End to end: file -> layer
# ---------------------------------------------------------------------------------------


def test_chumpy_file_through_the_layer(tmp_path, mano_dict, no_env):
    dump_with_foreign_names(mano_like(mano_dict), tmp_path / "MANO_RIGHT.pkl", 2)
    layer = ManoLayer(load_hand_model("right", tmp_path))
    out = layer(torch.zeros(2, 48), torch.zeros(2, 10), torch.zeros(2, 3))
    assert out.vertices.shape == (2, 778, 3) and torch.isfinite(out.vertices).all()


_SHIPPED = OPEN_MODEL_FILES["right"].is_file() and OPEN_MODEL_FILES["left"].is_file()


@pytest.mark.skipif(not _SHIPPED, reason="the open hand model asset is not generated yet")
@pytest.mark.parametrize("side", ["right", "left"])
def test_shipped_open_model_loads_and_runs(side, no_env):
    model = load_hand_model(side)
    assert not model.is_mano and model.side == side
    layer = ManoLayer(model)
    out = layer(torch.zeros(1, 48), torch.zeros(1, 10), torch.zeros(1, 3))
    assert out.joints.shape == (1, 21, 3) and torch.isfinite(out.vertices).all()
    assert torch.equal(out.joints[:, [4, 8, 12, 16, 20]], out.vertices[:, model.tip_vertex_ids])


# ---------------------------------------------------------------------------------------
# Pickle bombs: small files that ask for gigabytes or ages of work are refused before it
# ---------------------------------------------------------------------------------------

_reconstruct = np.zeros(0).__reduce__()[0]  # numpy's array reconstructors, as pickles name them
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]


class _Reduce:
    """Pickles as ``func(*args)`` (then ``__setstate__(state)``), whatever ``func`` is."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _bomb_shared_lists(path):
    """[[a, a], [a, a]] nested 19 times over 64 floats: ~700 bytes, 2**19 * 64 = 33.5 million floats as an array."""
    a = [0.5] * 64
    for _ in range(19):
        a = [a, a]
    path.write_bytes(pickle.dumps({"v_template": a}, protocol=2))


def _bomb_shared_tuple_key(path):
    """A dict key of 2**25 tuples built from one another: hashing it visits each one (at 60 levels: forever)."""
    t = ()
    for _ in range(25):
        t = (t, t)
    body = pickle.dumps(t, protocol=2)[2:-1]  # without PROTO and STOP; never hashed here
    path.write_bytes(b"\x80\x02}" + body + b"K\x01s.")  # {t: 1}


def _bomb_deep_tuple_key(path):
    """A dict key of 10,000 tuples one inside the other (hashing and printing it recurse that deep)."""
    path.write_bytes(b"\x80\x02})" + b"\x85" * 10_000 + b"K\x01s.")  # {((((),),),...): 1}


def _bomb_memo_index(path):
    """An empty dict stored under memo index 2**24: the unpickler makes its memo table that long (128 MB)."""
    path.write_bytes(b"\x80\x02}r" + (2**24).to_bytes(4, "little") + b".")


def _bomb_array_shape(path):
    """numpy's _reconstruct asked for a (10**6, 10**6) int8 array, 1 TB, before any data is read."""
    bomb = _Reduce(_reconstruct, (np.ndarray, (10**6, 10**6), b"b"))
    path.write_bytes(pickle.dumps({"v_template": bomb}, protocol=2))


def _bomb_object_array_shape(path):
    """An object array whose state says (10**6, 10**6) and holds no values: numpy allocates 8 TB first."""
    bomb = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (10**6, 10**6), np.dtype(object), False, []))
    path.write_bytes(pickle.dumps({"v_template": bomb}, protocol=2))


def _bomb_ndarray_called(path):
    """numpy.ndarray((10**6, 10**6), object) called by the pickle: 8 TB, zero-filled."""
    path.write_bytes(pickle.dumps({"v_template": _Reduce(np.ndarray, ((10**6, 10**6), np.dtype(object)))}, protocol=2))


def _bomb_frombuffer_then_state(path):
    """An array from _frombuffer (protocol 5), then given the state of a (10**6, 10**6) object array."""
    state = (1, (10**6, 10**6), np.dtype(object), False, [])
    bomb = _Reduce(_frombuffer, (b"", np.dtype("u1"), (0,), "C"), state)
    path.write_bytes(pickle.dumps({"v_template": bomb}, protocol=5))


def _bomb_sparse_shape(path):
    """A csc matrix of shape (10**12, 1) with one entry: its dense array would take 8 TB."""
    m = FakeOldCsc.__new__(FakeOldCsc)
    m.__dict__.update({"_shape": (10**12, 1), "maxprint": 50, "format": "csc", "data": np.ones(1),
                       "indices": np.zeros(1, np.int32), "indptr": np.array([0, 1], np.int32)})  # fmt: skip
    dump_with_foreign_names({"J_regressor": m}, path, 2)


_BOMBS = {f.__name__.removeprefix("_bomb_"): f for f in (_bomb_shared_lists, _bomb_shared_tuple_key,
                                                         _bomb_deep_tuple_key, _bomb_memo_index, _bomb_array_shape,
                                                         _bomb_object_array_shape, _bomb_ndarray_called,
                                                         _bomb_frombuffer_then_state, _bomb_sparse_shape)}  # fmt: skip


def _read_measured(path):
    """read_model_pickle(path)'s error, seconds taken and peak traced memory (numpy's arrays included)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(HandannoError) as err:
            read_model_pickle(path)
        return err.value, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bomb", list(_BOMBS))
def test_pickle_bombs_are_refused_quickly_with_bounded_memory(tmp_path, bomb):
    path = tmp_path / "MANO_RIGHT.pkl"
    _BOMBS[bomb](path)
    assert path.stat().st_size < 16_000
    error, seconds, peak = _read_measured(path)
    assert f"{path}: refused to read it: it holds " in str(error) and "not a MANO model file" in str(error)
    assert seconds < 2.0  # the unchecked reader: seconds to forever (the tuple key of 60 levels)
    assert peak < 16 * 2**20  # the unchecked reader: 130 MB (memo index) to terabytes (shapes)


def test_lists_growing_after_they_are_shared_are_counted_before_numpy_builds_them(tmp_path):
    """A list is shared n times while empty and filled afterwards: 60 kB of pickle, n * n floats as an array.

    The check of the operations counts a list when it is shared; what it holds in the end is
    counted when the arrays are built.
    """
    n = 6000  # 36 million floats: 288 MB, and as much again for the float64 copy
    raw = (b"\x80\x02}" + b"X\x0a\x00\x00\x00v_template"
           + b"(]q\x00" + b"h\x00" * (n - 1) + b"l"  # MARK, a = [] (memo 0), a again n - 1 times, LIST: [a] * n
           + b"s"  # {"v_template": [a] * n}
           + b"h\x00(" + (b"G" + struct.pack(">d", 0.5)) * n + b"e"  # a.extend([0.5] * n)
           + b"0.")  # fmt: skip
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(raw)
    error, seconds, peak = _read_measured(path)
    assert "more than 33,554,432 array elements" in str(error) and f"{path}: refused" in str(error)
    assert seconds < 2.0 and peak < 16 * 2**20


def test_file_size_and_operation_count_are_bounded(tmp_path, mano_dict, monkeypatch):
    path = write_plain(mano_dict, tmp_path / "MANO_RIGHT.pkl", protocol=2)
    size = path.stat().st_size
    monkeypatch.setattr(hand_model_io, "MAX_MODEL_FILE_BYTES", size - 1)
    with pytest.raises(HandannoError, match=f"refused to read it: it holds more than {size - 1:,} bytes"):
        read_model_pickle(path)
    monkeypatch.setattr(hand_model_io, "MAX_MODEL_FILE_BYTES", size)
    assert read_model_pickle(path).keys() >= {"v_template", "f"}
    monkeypatch.setattr(hand_model_io, "_MAX_OPERATIONS", 1000)
    with pytest.raises(HandannoError, match="it holds more than 1,000 pickle operations"):
        read_model_pickle(write_plain({"v_template": [0.5] * 2000}, tmp_path / "lists.pkl"))


def test_model_as_plain_lists_is_within_the_bounds(tmp_path, mano_dict):
    """The limits leave room: every key as nested lists of floats (~500,000 operations) still reads."""
    plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in mano_dict.items()}
    got = read_model_pickle(write_plain(plain, tmp_path / "MANO_RIGHT.pkl", protocol=2))
    _assert_same_model(got, mano_dict)
