"""Articulation priors from posture statistics (:mod:`handanno.handmodel.pose_prior`) and how the fitter picks one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from handanno.annotate import losses
from handanno.annotate.fit_mano import FitSettings, pose_prior_basis
from handanno.errors import HandannoError
from handanno.handmodel import pose_prior
from handanno.handmodel.articulations import sample_articulations
from handanno.handmodel.hand_axes import hand_axes, joint_bases
from handanno.handmodel.mano import HandModelData, ManoLayer
from handanno.handmodel.model_io import OPEN_MODEL_FILES, load_hand_model, read_model_pickle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def open_layer() -> ManoLayer:
    return ManoLayer(load_hand_model("right"))


def test_gaussian_from_samples_recovers_the_covariance_with_its_floor():
    rng = np.random.default_rng(0)
    A = np.linalg.qr(rng.normal(size=(45, 45)))[0]
    sd = np.linspace(0.8, 0.0, 45)  # the last direction is never used
    x = 0.3 + (rng.normal(size=(20000, 45)) * sd) @ A
    st = pose_prior.gaussian_from_samples(x, "test", min_std_rad=0.05)
    np.testing.assert_allclose(st.mean, 0.3, atol=0.02)
    np.testing.assert_allclose(st.components @ st.components.T, np.eye(45), atol=1e-10)
    assert np.all(np.diff(st.stddev) <= 1e-12)  # by decreasing variance
    np.testing.assert_allclose(st.stddev, np.sqrt(np.sort(sd)[::-1] ** 2 + 0.05**2), rtol=0.03)
    assert st.stddev[-1] == pytest.approx(0.05, rel=0.02)  # unused: the floor, not zero
    # the loss in this basis is the Mahalanobis distance of the widened covariance
    cov = np.cov(x, rowvar=False) + 0.05**2 * np.eye(45)
    y = rng.normal(scale=0.2, size=(3, 45))
    want = np.einsum("bi,ij,bj->b", y - st.mean, np.linalg.inv(cov), y - st.mean)
    got = losses.pose_prior_loss(torch.as_tensor(y), torch.as_tensor(st.components), torch.as_tensor(st.stddev),
                                 torch.as_tensor(st.mean)).numpy()  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-8)
    with pytest.raises(HandannoError, match="at least 2"):
        pose_prior.gaussian_from_samples(x[:1], "one")


def test_the_open_models_own_statistics_are_its_hands_coeffs():
    """``model_statistics`` finds the open model's file by its ``hands_mean`` and rebuilds the
    samples from ``hands_coeffs @ hands_components`` (the loader keeps no coefficients)."""
    d = read_model_pickle(OPEN_MODEL_FILES["right"])
    st = pose_prior.model_statistics(d["hands_mean"], "right", min_std_rad=0.0)
    assert st is not None and "open_hand_right" in st.source and st.num_samples == len(d["hands_coeffs"])
    np.testing.assert_allclose(st.mean, 0.0, atol=1e-6)  # hands_mean is the samples' mean
    want = np.sort(np.linalg.eigvalsh(np.cov(d["hands_coeffs"] @ d["hands_components"], rowvar=False)))[::-1]
    np.testing.assert_allclose(st.stddev**2, np.maximum(want, 0), atol=1e-10)
    assert pose_prior.model_statistics(np.full(45, 0.123), "right") is None  # no file with this mean


def test_a_mano_folder_with_hands_coeffs_gives_the_prior(tmp_path, monkeypatch, make_mano_dict):
    """A MANO-format model from $HANDANNO_MODEL_DIR (or registered) carries its own statistics, and
    ``pose_prior="auto"`` uses them for a MANO layer; a non-MANO layer gets the realistic generator's."""
    d = make_mano_dict(seed=3)
    d["hands_coeffs"] = np.random.default_rng(4).normal(scale=[0.5] * 5 + [0.05] * 40, size=(300, 45))
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(d, protocol=2))
    monkeypatch.setenv("HANDANNO_MODEL_DIR", str(tmp_path))
    st = pose_prior.model_statistics(d["hands_mean"], "right")
    assert st is not None and str(tmp_path) in st.source
    assert st.stddev[0] > 0.4 and st.stddev[-1] == pytest.approx(np.hypot(0.05, pose_prior.MIN_STD_RAD), rel=0.2)
    mano = ManoLayer(HandModelData.from_arrays(d, side="right", name="MANO", is_mano=True, source="test"))
    mean, comps, std = pose_prior_basis(mano, np.zeros(10), FitSettings())  # "auto"
    np.testing.assert_allclose(std.numpy(), st.stddev, rtol=1e-5)
    np.testing.assert_allclose(comps.numpy(), st.components, atol=1e-6)
    other = ManoLayer(HandModelData.from_arrays(d, side="right", name="x", is_mano=False, source="test"))
    _, _, std_other = pose_prior_basis(other, np.zeros(10), FitSettings())
    assert not np.allclose(std_other.numpy(), st.stddev)  # the generator's statistics instead


def test_a_model_folder_given_as_model_dir_gives_its_statistics(tmp_path, monkeypatch, make_mano_dict):
    """``--model-dir`` (not only $HANDANNO_MODEL_DIR): the layer knows the file it was loaded from, so the
    fit's prior ("auto" for MANO) comes from that file's hands_coeffs."""
    monkeypatch.delenv("HANDANNO_MODEL_DIR", raising=False)
    d = make_mano_dict(seed=5)
    d["hands_coeffs"] = np.random.default_rng(6).normal(scale=0.3, size=(200, 45))
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(d, protocol=2))
    assert pose_prior.model_statistics(d["hands_mean"], "right") is None  # not found without the layer's file
    layer = ManoLayer(load_hand_model("right", model_dir=tmp_path))
    assert layer.source == str(tmp_path / "MANO_RIGHT.pkl")
    st = pose_prior.model_statistics(np.asarray(d["hands_mean"]), "right", source=layer.source)
    assert st is not None and str(tmp_path / "MANO_RIGHT.pkl") in st.source and st.num_samples == 200
    _, _, std = pose_prior_basis(layer, np.zeros(10), FitSettings())  # "auto": the model's own statistics
    np.testing.assert_allclose(std.numpy(), st.stddev, rtol=1e-5)


def test_generator_statistics_are_deterministic_and_cached(open_layer):
    a = pose_prior.generator_statistics(open_layer, "realistic", sessions=40, frames=4)
    b = pose_prior.generator_statistics(open_layer, "realistic", sessions=40, frames=4)
    assert a is b  # cached
    pose_prior._CACHE.clear()
    c = pose_prior.generator_statistics(open_layer, "realistic", sessions=40, frames=4)
    np.testing.assert_array_equal(a.stddev, c.stddev)
    np.testing.assert_array_equal(a.mean, c.mean)
    assert a.num_samples == 160 and "realistic" in a.source


def test_realistic_statistics_allow_what_the_anatomical_prior_forbids(open_layer):
    """The realistic generator's postures twist and move sideways at the hinges (on the joints' own
    [twist, flex, side] axes); the anatomical generator's never do: a prior from the first does
    not assume what the old generator assumed."""
    with torch.no_grad():
        rest = open_layer.keypoints(-open_layer.pose_mean[None], torch.zeros(1, 10), torch.zeros(1, 3))[0].numpy()
    axes = hand_axes(rest.astype(np.float64), "right")
    bases = joint_bases(axes)
    spread = {}
    for kind in ("realistic", "anatomical"):
        x = sample_articulations(axes, 120, kind, seed=5, frames=3)  # (N, 15, 3)
        spread[kind] = np.degrees(np.einsum("jab,njb->nja", bases, x).std(0))  # (15, 3) twist, flex, side
    hinges = [1, 2, 4, 5, 7, 8, 10, 11]  # PIP, DIP of the four fingers (0-based)
    assert spread["anatomical"][hinges][:, [0, 2]].max() < 1e-6
    assert spread["realistic"][hinges, 0].mean() > 3.0 and spread["realistic"][hinges, 2].mean() > 2.0
    assert spread["realistic"][[0, 3, 6, 9], 0].mean() > 4.0  # MCP twist
    assert spread["realistic"][:12, 1].mean() > 25.0  # and plenty of flexion
