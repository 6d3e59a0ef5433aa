"""The posture generators of ``handanno synth --postures``: realistic and anatomical (the default)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from handanno.annotate.quality import JOINT_LIMITS_DEG
from handanno.cli import main
from handanno.errors import HandannoError
from handanno.handmodel import articulations
from handanno.handmodel.hand_axes import hand_axes, joint_bases
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.synth import motion
from handanno.synth.capture import SynthSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["right", "left"])
def hand(request):
    """``(side, model, layer, axes of the flat mean hand)``."""
    model = load_hand_model(request.param)
    layer = ManoLayer(model)
    flat = np.concatenate([np.zeros(3), -model.hands_mean])[None]
    _, rest = motion._run_layer(layer, flat, np.zeros(10), np.zeros((1, 3)))
    return request.param, model, layer, hand_axes(rest[0], request.param)


def test_realistic_postures_stay_inside_the_anatomical_ranges_with_margin(hand):
    """Every joint angle on its [twist, flex, side] axes stays 7 deg or more inside the ranges the
    fit's acceptance test allows (the thumb's CMC is free), for both hands."""
    side, _, _, axes = hand
    x = articulations.sample_articulations(axes, 150, "realistic", seed=1, frames=4)
    deg = np.degrees(np.einsum("jab,njb->nja", joint_bases(axes), x))  # (N, 15, 3)
    margin = np.minimum(deg - JOINT_LIMITS_DEG[..., 0], JOINT_LIMITS_DEG[..., 1] - deg).min(0)
    assert margin.min() > 7.0, (side, margin.round(1))


def test_realistic_postures_span_fists_and_open_hands(hand):
    """Sessions hold postures from flat hands to fists (MCP + PIP flexion per finger), and the
    joints twist and move sideways, unlike the anatomical generator's."""
    _, _, _, axes = hand
    bases = joint_bases(axes)
    curls, twist = [], []
    for seed in range(40):
        x = articulations.realistic_articulation_trajectory(axes, 10, 15.0, np.random.default_rng(seed))
        c = np.degrees(np.einsum("jab,tjb->tja", bases, x)).mean(0)  # (15, 3)
        curls.append(c[[0, 3, 6, 9], 1].mean() + c[[1, 4, 7, 10], 1].mean())  # MCP + PIP flexion
        twist.append(np.abs(c[:12, 0]).mean())
    curls = np.array(curls)
    assert (curls > 160).sum() >= 4 and (curls < 40).sum() >= 4, np.sort(curls).round()
    assert np.mean(twist) > 2.0


@pytest.mark.parametrize("postures", ["realistic", "anatomical"])
def test_motion_is_smooth_both_generators(hand, postures):
    side, model, layer, _ = hand
    m = motion.make_motion(layer, model.hands_mean, side, 40, 15.0, seed=4, postures=postures)
    step = np.linalg.norm(np.diff(m.joints, axis=0), axis=2).max()
    assert step < 0.02  # no keypoint jumps more than 2 cm between frames at 15 fps
    acc = np.linalg.norm(m.joints[:-2] - 2 * m.joints[1:-1] + m.joints[2:], axis=2)
    assert acc.max() < 0.004  # no kinks: smooth in time (soft joint limits)
    again = motion.make_motion(layer, model.hands_mean, side, 40, 15.0, seed=4, postures=postures)
    np.testing.assert_array_equal(m.pose, again.pose)  # deterministic


def test_the_generators_differ_and_bad_names_are_refused(hand):
    side, model, layer, axes = hand
    a = motion.make_motion(layer, model.hands_mean, side, 3, 15.0, seed=0, postures="realistic")
    b = motion.make_motion(layer, model.hands_mean, side, 3, 15.0, seed=0, postures="anatomical")
    np.testing.assert_array_equal(a.betas, b.betas)  # the same hand
    assert np.abs(a.pose[:, 3:] - b.pose[:, 3:]).max() > 0.1  # in other postures
    with pytest.raises(HandannoError, match="postures"):
        motion.make_motion(layer, model.hands_mean, side, 3, 15.0, seed=0, postures="mano")
    with pytest.raises(HandannoError, match="postures"):
        articulations.sample_articulations(axes, 2, "mano")
    with pytest.raises(HandannoError, match="--postures"):
        SynthSettings("out", postures="mano")
    assert SynthSettings("out").postures == "realistic"  # the default; anatomical for comparison


def test_cli_postures_option(tmp_path):
    out = tmp_path / "s"
    res = CliRunner().invoke(main, ["synth", str(out), "--cameras", "2", "--frames", "2", "--image-size", "96x72",
                                    "--calib-views", "0", "--postures", "realistic"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "synth.json").read_text())["settings"]["postures"] == "realistic"
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "t"), "--postures", "mano"])
    assert res.exit_code != 0 and "mano" in res.output
