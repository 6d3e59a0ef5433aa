"""The open hand model: MANO's format, a closed hand-shaped mesh, clean bending, meaningful shapes.

The model is regenerated once per test session (a few seconds) and compared with the
committed assets; previews are written to tests/outputs/ (look at them).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from handanno.data.conventions import MANO_PARENTS, TIP_VERTEX_IDS
from handanno.handmodel.lbs_reference import lbs
from handanno.handmodel.open_hand.assets import ASSET_DIR, ASSET_FILES, MODEL_VERSION, generate_model, model_digest
from handanno.handmodel.open_hand.poses import curl_pose, flexion_axes, preview_poses
from handanno.handmodel.open_hand.preview import PREVIEW_VIEWS, deformation_report, render_pose
from handanno.handmodel.open_hand.skeleton import FINGERS, SHAPE_BASIS, shape_from_betas, skeleton
from handanno.handmodel.open_hand.skinning import JREG_NEIGHBOURS
from handanno.handmodel.open_hand.surface import self_intersections, signed_volume

OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"
SIDES = ("right", "left")
MIRROR = np.array([-1.0, 1.0, 1.0])
AA_MIRROR = np.array([1.0, -1.0, -1.0])
# MANO joint ids of each digit's chain, and its tip vertex
CHAINS = {"thumb": (13, 14, 15), "index": (1, 2, 3), "middle": (4, 5, 6), "ring": (10, 11, 12), "pinky": (7, 8, 9)}
TIPS = dict(zip(FINGERS, TIP_VERTEX_IDS.tolist(), strict=True))


@pytest.fixture(scope="module")
def generated() -> dict[str, dict]:
    return {side: generate_model(side) for side in SIDES}


@pytest.fixture(scope="module")
def committed() -> dict[str, dict]:
    out = {}
    for side in SIDES:
        with (ASSET_DIR / ASSET_FILES[side]).open("rb") as fh:  # our own file, in the repository
            out[side] = pickle.load(fh)
    return out


def posed(model: dict, full_pose: np.ndarray, betas: np.ndarray | None = None) -> np.ndarray:
    betas = np.zeros((1, 10)) if betas is None else betas[None]
    return lbs(model, full_pose[None], betas, np.zeros((1, 3)))[0][0]


def shaped(model: dict, i: int, beta: float) -> np.ndarray:
    betas = np.zeros(10)
    betas[i] = beta
    return model["v_template"] + model["shapedirs"] @ betas


# ---------------------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_keys_shapes_dtypes(committed, side):
    d = committed[side]
    shapes = {
        "v_template": ((778, 3), np.float64),
        "f": ((1552, 3), np.int64),
        "J_regressor": ((16, 778), np.float64),
        "weights": ((778, 16), np.float64),
        "posedirs": ((778, 3, 135), np.float32),
        "shapedirs": ((778, 3, 10), np.float64),
        "kintree_table": ((2, 16), np.int64),
        "J": ((16, 3), np.float64),
        "hands_components": ((45, 45), np.float64),
        "hands_mean": ((45,), np.float64),
        "hands_coeffs": ((1554, 45), np.float32),
        "tip_vertex_ids": ((5,), np.int64),
    }
    for key, (shape, dtype) in shapes.items():
        assert d[key].shape == shape and d[key].dtype == dtype, key
    assert set(d) == set(shapes) | {"bs_style", "bs_type", "model_name", "version"}
    assert d["model_name"] == "handanno-open-hand" and d["version"] == MODEL_VERSION
    assert (d["bs_style"], d["bs_type"]) == ("lbs", "lrotmin")
    assert (
        d["kintree_table"][0].tolist() == MANO_PARENTS.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    )
    assert d["kintree_table"][1].tolist() == list(range(16))
    np.testing.assert_array_equal(d["tip_vertex_ids"], [744, 320, 443, 555, 672])
    assert not d["posedirs"].any()  # documented: no pose correctives
    np.testing.assert_allclose(d["J"], d["J_regressor"] @ d["v_template"], atol=1e-15)


@pytest.mark.parametrize("side", SIDES)
def test_asset_files_are_small(side):
    assert (ASSET_DIR / ASSET_FILES[side]).stat().st_size < 3_000_000


@pytest.mark.parametrize("side", SIDES)
def test_committed_assets_equal_a_fresh_generation(generated, committed, side):
    """Determinism: the generator (run in this process) gives the committed arrays bit for bit."""
    fresh, file = generated[side], committed[side]
    assert set(fresh) == set(file)
    for key in fresh:
        a, b = np.asarray(fresh[key]), np.asarray(file[key])
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert model_digest(fresh) == model_digest(file)


def test_loads_through_the_safe_loader(monkeypatch):
    from handanno.handmodel.model_io import load_hand_model

    monkeypatch.delenv("HANDANNO_MODEL_DIR", raising=False)
    for side in SIDES:
        model = load_hand_model(side)
        assert model.name == "handanno-open-hand" and not model.is_mano and model.side == side
        assert model.v_template.shape == (778, 3) and model.faces.shape == (1552, 3)


# ---------------------------------------------------------------------------------------
# The surface
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_closed_genus0_surface(committed, side):
    import open3d as o3d
    import trimesh

    d = committed[side]
    mesh = trimesh.Trimesh(d["v_template"], d["f"], process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0 and signed_volume(d["v_template"], d["f"]) > 0  # faces wind outwards
    assert mesh.euler_number == 2  # genus 0: V - E + F = 778 - 2328 + 1552
    assert len(np.unique(np.sort(d["f"], axis=1), axis=0)) == 1552  # no duplicate faces
    o3 = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(d["v_template"]), o3d.utility.Vector3iVector(d["f"]))
    assert o3.is_edge_manifold() and o3.is_vertex_manifold()
    assert len(self_intersections(d["v_template"], d["f"])) == 0
    # no degenerate triangles: the smallest angle of any face is above 5 degrees (6.1 at the webs)
    v = d["v_template"][d["f"]]
    for k in range(3):
        a, b = v[:, (k + 1) % 3] - v[:, k], v[:, (k + 2) % 3] - v[:, k]
        ang = np.degrees(
            np.arccos(np.clip((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1), -1, 1))
        )
        assert ang.min() > 5.0


def test_tips_are_the_most_distal_points(committed):
    """Each fingertip vertex sits at MANO's index and is its digit's farthest point from the last joint."""
    d = committed["right"]
    v, J = d["v_template"], d["J"]
    dominant = np.argmax(d["weights"], axis=1)
    for finger, (_, j2, j3) in CHAINS.items():
        tip = TIPS[finger]
        assert dominant[tip] == j3
        own = np.nonzero(dominant == j3)[0]
        assert own[np.argmax(np.linalg.norm(v[own] - J[j3], axis=1))] == tip
        bone = (J[j3] - J[j2]) / np.linalg.norm(J[j3] - J[j2])
        assert own[np.argmax(v[own] @ bone)] == tip  # the most distal along the finger


def test_convention_right_hand_frame(committed):
    """MANO's frame: fingers along -x, back of the hand +y, thumb on +z; wrist near (0.096, 0.006, 0.006)."""
    d = committed["right"]
    v, J = d["v_template"], d["J"]
    assert np.linalg.norm(J[0] - [0.0957, 0.0064, 0.0062]) < 0.006  # MANO's template wrist joint
    assert np.linalg.norm(J[4]) < 0.01  # middle knuckle near the origin, as in MANO
    for finger in ("index", "middle", "ring", "pinky"):
        assert v[TIPS[finger], 0] < J[0, 0] - 0.14  # fingers point to -x
    assert v[TIPS["thumb"], 2] > J[1, 2] + 0.03  # thumb on the +z side of the index
    assert J[13, 1] < J[1, 1] and v[TIPS["thumb"], 1] < 0  # the thumb sits palmar (-y)
    # the relaxed pose (pose zeros in the layer) curls the fingertips towards the palm (-y)
    relaxed = np.zeros((16, 3))
    relaxed[1:] = d["hands_mean"].reshape(15, 3)
    v_relaxed = posed(d, relaxed)
    for finger in ("index", "middle", "ring", "pinky"):
        assert v_relaxed[TIPS[finger], 1] < v[TIPS[finger], 1] - 0.02


def test_proportions(committed):
    d = committed["right"]
    v, J = d["v_template"], d["J"]
    hand_length = np.linalg.norm(v[TIPS["middle"]] - J[0])
    assert 0.18 <= hand_length <= 0.19
    reach = {f: -v[TIPS[f], 0] for f in TIPS}
    assert reach["middle"] > reach["ring"] > reach["pinky"] and reach["middle"] > reach["index"] > reach["pinky"]
    # phalanx ratios (joint-centre distances): proximal > middle > distal-with-tip? and the
    # metacarpal is the longest bone, as in adult hands
    for finger, (j1, j2, j3) in CHAINS.items():
        p1, p2 = np.linalg.norm(J[j2] - J[j1]), np.linalg.norm(J[j3] - J[j2])
        assert p1 > p2 and 1.2 < p1 / p2 < 1.9, finger
    assert np.linalg.norm(J[4] - J[0]) > np.linalg.norm(J[5] - J[4])
    breadth = np.linalg.norm(J[1] - J[7])  # index to little-finger knuckle centres
    assert 0.055 < breadth < 0.07
    spread = [np.arctan2(J[c, 2] - J[p, 2], J[p, 0] - J[c, 0]) for p, c in ((1, 2), (4, 5), (10, 11), (7, 8))]
    assert np.all(np.diff(np.degrees(spread)) < 0)  # fingers fan out slightly, index to pinky


# ---------------------------------------------------------------------------------------
# Rigging
# ---------------------------------------------------------------------------------------


def test_weights_and_regressor_rows(committed):
    d = committed["right"]
    W, R = d["weights"], d["J_regressor"]
    assert W.min() >= 0 and R.min() >= 0
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(d["J"], skeleton().joints, atol=1e-7)  # the designed joints (1e-8 m rounding)
    # every joint draws on nearby vertices only
    for j in range(16):
        used = np.nonzero(R[j])[0]
        assert 10 <= len(used) <= JREG_NEIGHBOURS
        assert np.linalg.norm(d["v_template"][used] - d["J"][j], axis=1).max() < 0.03


ALL_FLEX = ("index", "middle", "ring", "pinky", "thumb")


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "digits, joints",
    [
        (("index", "middle", "ring", "pinky", "thumb"), (1, 2)),  # every finger joint; thumb MCP and IP
        (("index", "middle", "ring", "pinky"), (0,)),  # knuckles only
        (("index", "middle", "ring", "pinky"), (1,)),
        (("index", "middle", "ring", "pinky"), (2,)),
        (("index",), (0, 1, 2)),  # one finger alone, its neighbours straight
        (("middle",), (0, 1, 2)),
        (("ring",), (0, 1, 2)),
        (("pinky",), (0, 1, 2)),
        (("thumb",), (1, 2)),
    ],
)
def test_bend_90_degrees(committed, side, digits, joints):
    """90 degrees of flexion: no face folds over or collapses, the volume stays within 15%.

    Fist (all of index..pinky at MCP, PIP, DIP plus thumb MCP and IP): volume -10.3%
    (measured), worst face cosine 0.38, smallest area ratio 0.17. LBS keeps the connectivity,
    so the mesh stays watertight by construction.
    """
    d = committed[side]
    pose = curl_pose(side, {f: [np.pi / 2 if k in joints else 0.0 for k in range(3)] for f in digits})
    if "thumb" in digits:
        pose[13] = 0.0  # the thumb's CMC is a carpometacarpal joint, not a finger joint
    rep = deformation_report(d, pose)
    assert rep.flipped == 0, rep
    assert rep.min_area_ratio > 0.1, rep
    assert abs(rep.volume_ratio - 1.0) < 0.15, rep


def test_fist_volume_change_is_small(committed):
    pose = curl_pose(
        "right",
        {f: [np.pi / 2] * 3 for f in ("index", "middle", "ring", "pinky")} | {"thumb": [0, np.pi / 2, np.pi / 2]},
    )
    rep = deformation_report(committed["right"], pose)
    assert -0.12 < rep.volume_ratio - 1.0 < 0.0  # -10.3% at the time of writing


def test_plausible_poses_rarely_fold_a_face(committed):
    """Poses from the model's own articulation samples (hands_mean + coeffs @ components).

    Measured when written: 5 of these 156 samples turn over at most 4 faces each (at the
    thenar crease under strong thumb opposition, or a web); volume stays within 9%.
    """
    d = committed["right"]
    X = d["hands_mean"] + d["hands_coeffs"].astype(np.float64)[::10] @ d["hands_components"]
    folded = 0
    for x in X:
        pose = np.zeros((16, 3))
        pose[1:] = x.reshape(15, 3)
        rep = deformation_report(d, pose)
        folded += rep.flipped > 0
        assert rep.flipped <= 8 and abs(rep.volume_ratio - 1.0) < 0.12, rep
    assert folded <= 0.05 * len(X)


def test_flexion_axes_curl_towards_the_palm(committed):
    """A positive rotation about :func:`flexion_axes` moves every bone palmar (right: -y, thumb: towards its pad)."""
    d = committed["right"]
    sk = skeleton()
    for finger, chain in CHAINS.items():
        f = sk.fingers[finger]
        for k, j in enumerate(chain):
            pose = np.zeros((16, 3))
            pose[j] = 0.5 * flexion_axes()[j]
            v = posed(d, pose)
            moved = v[TIPS[finger]] - d["v_template"][TIPS[finger]]
            assert moved @ -f.dorsal[k] > 0.005, (finger, k)


# ---------------------------------------------------------------------------------------
# Shape
# ---------------------------------------------------------------------------------------


def _finger_width(model: dict, v: np.ndarray, finger: str, bone: int, at: float) -> float:
    """Width of a digit across its lateral axis, at fraction ``at`` of one bone (from its ring of vertices)."""
    chain = CHAINS[finger]
    J = model["J_regressor"] @ v
    a = J[chain[bone]]
    b = J[chain[bone + 1]] if bone < 2 else v[TIPS[finger]]
    axis = (b - a) / np.linalg.norm(b - a)
    lateral = skeleton().fingers[finger].lateral[bone]
    own = np.nonzero(np.argmax(model["weights"], axis=1) == chain[bone])[0]
    s = (v[own] - a) @ axis / np.linalg.norm(b - a)
    ring = own[np.abs(s - at) < 0.12]
    return float(np.ptp(v[ring] @ lateral))


def test_beta0_is_overall_size(committed):
    d = committed["right"]
    wrist = d["J"][0]
    for beta in (-3.0, 1.0, 3.0):
        np.testing.assert_allclose(shaped(d, 0, beta) - wrist, (1 + 0.06 * beta) * (d["v_template"] - wrist), atol=1e-8)


def test_shape_blendshapes_change_what_they_claim(committed):
    d = committed["right"]
    v0 = d["v_template"]
    R = d["J_regressor"]

    def measures(v: np.ndarray) -> dict[str, float]:
        J = R @ v
        y_palm = v[(np.abs(v[:, 0] - 0.045) < 0.008) & (np.abs(v[:, 2]) < 0.012), 1]
        return {
            "middle_length": np.linalg.norm(v[TIPS["middle"]] - J[4]),
            "index_length": np.linalg.norm(v[TIPS["index"]] - J[1]),
            "ring_length": np.linalg.norm(v[TIPS["ring"]] - J[10]),
            "pinky_length": np.linalg.norm(v[TIPS["pinky"]] - J[7]),
            "thumb_length": np.linalg.norm(v[TIPS["thumb"]] - J[13]),
            "palm_length": np.linalg.norm(J[4] - J[0]),
            "knuckle_span": np.linalg.norm(J[1] - J[7]),
            "palm_thickness": float(np.ptp(y_palm)),
            "finger_width": _finger_width(d, v, "middle", 0, 0.5),
            "tip_width": _finger_width(d, v, "middle", 2, 0.35),
        }

    m0 = measures(v0)
    claims = {  # beta index: {measure: expected relative change for beta = +1}
        1: {"middle_length": 0.05, "pinky_length": 0.05, "palm_length": 0.0, "thumb_length": 0.0},
        2: {"knuckle_span": 0.05, "middle_length": 0.0},
        3: {"palm_thickness": 0.08, "palm_length": 0.0, "knuckle_span": 0.0},
        4: {"finger_width": 0.07, "middle_length": 0.0},
        5: {"thumb_length": 0.06, "middle_length": 0.0},
        6: {"palm_length": 0.05, "middle_length": 0.0},
        7: {"index_length": 0.03, "ring_length": -0.03, "middle_length": 0.0},
        8: {"pinky_length": 0.06, "ring_length": 0.0},
        9: {"tip_width": 0.08, "finger_width": 0.0},
    }
    for i, expect in claims.items():
        m1 = measures(shaped(d, i, 1.0))
        for key, rel in expect.items():
            got = m1[key] / m0[key] - 1.0
            assert abs(got - rel) < 0.02 + 0.25 * abs(rel), (SHAPE_BASIS[i][0], key, got, rel)


def test_joints_follow_shape(committed):
    """The regressor carries the joints with the skin: within 3.5 mm of the designed skeleton for betas in [-3, 3].

    (Worst: palm_length at +-3, 3.0 mm at the knuckles, where the palm's vertices are
    interpolated rather than cast.)
    """
    d = committed["right"]
    for i in range(10):
        for beta in (-3.0, 3.0):
            betas = np.zeros(10)
            betas[i] = beta
            J = d["J_regressor"] @ (d["v_template"] + d["shapedirs"] @ betas)
            err = np.linalg.norm(J - skeleton(shape_from_betas(betas)).joints, axis=1).max()
            assert err < 0.0035, (SHAPE_BASIS[i][0], beta, err)


def test_extreme_betas_stay_plausible(committed):
    """Every beta at +-3 keeps an un-self-intersecting hand of adult size, with no face turned over.

    (Random betas ~ N(0, 1) in all ten at once: 1 of 200 draws makes two neighbouring
    fingers touch at a web - measured when written, not tested.)
    """
    d = committed["right"]
    n0 = np.cross(*(d["v_template"][d["f"][:, k]] - d["v_template"][d["f"][:, 0]] for k in (1, 2)))
    for i in range(10):
        for beta in (-3.0, 3.0):
            v = shaped(d, i, beta)
            n = np.cross(v[d["f"][:, 1]] - v[d["f"][:, 0]], v[d["f"][:, 2]] - v[d["f"][:, 0]])
            assert ((n * n0).sum(1) > 0).all(), (i, beta)
            length = np.linalg.norm(v[TIPS["middle"]] - d["J_regressor"][0] @ v)
            assert 0.14 < length < 0.23
            assert len(self_intersections(v, d["f"])) == 0, (SHAPE_BASIS[i][0], beta)


# ---------------------------------------------------------------------------------------
# Articulation space
# ---------------------------------------------------------------------------------------


def test_pose_space(committed):
    d = committed["right"]
    C = d["hands_components"]
    np.testing.assert_allclose(C @ C.T, np.eye(45), atol=1e-7)
    std = d["hands_coeffs"].astype(np.float64).std(axis=0)
    assert np.all(np.diff(std) <= 1e-6)  # by decreasing variance
    assert np.allclose(d["hands_coeffs"].mean(axis=0), 0.0, atol=1e-5)  # centred on hands_mean
    # hands_mean: a relaxed, slightly curled hand - every finger joint flexed 5-40 degrees
    axes = flexion_axes()
    mean = d["hands_mean"].reshape(15, 3)
    flex = np.degrees((mean * axes[1:]).sum(1))
    assert np.all((flex > 5) & (flex < 40)), flex
    # the first component closes the hand: all four fingers' joints flex together
    pc1 = C[0].reshape(15, 3)
    fingers = [j - 1 for f in ("index", "middle", "ring", "pinky") for j in CHAINS[f]]
    signs = np.sign((pc1 * axes[1:]).sum(1))[fingers]
    assert abs(signs.sum()) == len(fingers)


# ---------------------------------------------------------------------------------------
# Left hand
# ---------------------------------------------------------------------------------------


def test_left_is_the_mirror_of_the_right(committed):
    r, left = committed["right"], committed["left"]
    np.testing.assert_array_equal(left["v_template"], r["v_template"] * MIRROR)
    np.testing.assert_array_equal(left["shapedirs"], r["shapedirs"] * MIRROR[None, :, None])
    np.testing.assert_array_equal(left["f"], r["f"][:, ::-1])
    np.testing.assert_array_equal(left["hands_mean"], r["hands_mean"] * np.tile(AA_MIRROR, 15))
    np.testing.assert_array_equal(left["hands_components"], r["hands_components"] * np.tile(AA_MIRROR, 15))
    for key in ("weights", "J_regressor", "kintree_table", "tip_vertex_ids", "hands_coeffs", "posedirs"):
        np.testing.assert_array_equal(left[key], r[key])
    # posing the left with the mirrored pose gives the mirror image of the right, for any shape
    rng = np.random.default_rng(0)
    for _ in range(3):
        pose, betas = rng.normal(0.0, 0.5, (16, 3)), rng.normal(0.0, 1.5, 10)
        np.testing.assert_allclose(posed(left, pose * AA_MIRROR, betas), posed(r, pose, betas) * MIRROR, atol=1e-12)


def test_left_shapedirs_have_no_mano_sign_bug(committed):
    """MANO_LEFT.pkl's shapedirs[:, 0] has the wrong sign; ours scale the left hand about its own wrist."""
    left = committed["left"]
    wrist = left["J"][0]
    assert wrist[0] < 0  # the left wrist is at -x
    np.testing.assert_allclose(shaped(left, 0, 1.0) - wrist, 1.06 * (left["v_template"] - wrist), atol=1e-8)


# ---------------------------------------------------------------------------------------
# Layers: smplx and handanno's ManoLayer agree with the numpy oracle
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_smplx_mano_loads_and_agrees(committed, side):
    import smplx
    import torch
    from smplx.utils import Struct

    d = committed[side]
    layer = smplx.MANO("", data_struct=Struct(**d), is_rhand=side == "right", use_pca=False, flat_hand_mean=False,
                       dtype=torch.float64)  # fmt: skip
    rng = np.random.default_rng(1)
    pose, betas, trans = rng.normal(0, 0.4, (3, 48)), rng.normal(0, 1, (3, 10)), rng.normal(0, 0.1, (3, 3))
    out = layer(betas=torch.tensor(betas), global_orient=torch.tensor(pose[:, :3]), hand_pose=torch.tensor(pose[:, 3:]),
                transl=torch.tensor(trans))  # fmt: skip
    full = pose.copy()
    full[:, 3:] += d["hands_mean"]
    verts, joints = lbs(d, full.reshape(3, 16, 3), betas, trans)
    # smplx casts the model arrays to float32 on loading: 1e-6 m covers that rounding
    np.testing.assert_allclose(out.vertices.numpy(), verts, atol=1e-6)
    np.testing.assert_allclose(out.joints.numpy()[:, :16], joints, atol=1e-6)


@pytest.mark.parametrize("side", SIDES)
def test_mano_layer_agrees_with_the_oracle(committed, side):
    import torch

    from handanno.handmodel.mano import HandModelData, ManoLayer

    d = committed[side]
    model = HandModelData.from_arrays(d, side=side, name=d["model_name"], is_mano=False, source="test")
    layer = ManoLayer(model, dtype=torch.float64)
    rng = np.random.default_rng(2)
    pose, betas, trans = rng.normal(0, 0.4, (4, 48)), rng.normal(0, 1, (4, 10)), rng.normal(0, 0.1, (4, 3))
    out = layer(torch.tensor(pose), torch.tensor(betas), torch.tensor(trans))
    full = pose.copy()
    full[:, 3:] += d["hands_mean"]
    verts, joints = lbs(d, full.reshape(4, 16, 3), betas, trans)
    # both float64 on the same arrays; the layer's Rodrigues uses smplx's |aa + 1e-8| angle
    # guard, which moves a vertex ~0.1 m from its joint by ~1e-9 m: 1e-8 m covers it (the
    # required agreement is 1e-5 m)
    np.testing.assert_allclose(out.vertices.numpy(), verts, atol=1e-8)
    np.testing.assert_allclose(out.mano_joints.numpy(), joints, atol=1e-8)
    np.testing.assert_allclose(out.joints.numpy()[:, [4, 8, 12, 16, 20]], verts[:, TIP_VERTEX_IDS], atol=1e-8)


# ---------------------------------------------------------------------------------------
# Looking at it
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_previews(committed, side):
    """Writes tests/outputs/open_hand[_left]_{open,relaxed,fist,pinch}.png: open them and look."""
    from handanno.data.files_io import write_image

    d = committed[side]
    poses = preview_poses(d, side)
    tips = d["tip_vertex_ids"]
    pinch = posed(d, poses["pinch"])
    assert np.linalg.norm(pinch[tips[0]] - pinch[tips[1]]) < 0.008  # thumb tip meets index tip
    prefix = "open_hand" if side == "right" else "open_hand_left"
    for name in ("open", "relaxed", "fist", "pinch"):
        img = render_pose(d, poses[name], side)
        assert img.shape == (360, 360 * len(PREVIEW_VIEWS), 3)
        skin = (img.astype(int).sum(axis=2) < 720).mean()
        assert 0.08 < skin < 0.6  # a hand fills a fair part of each view
        inside_out = (img[..., 2] > 120) & (img[..., 0] < 60) & (img[..., 1] < 60)
        assert inside_out.sum() == 0  # no back faces seen (they are drawn red)
        write_image(OUTPUTS / f"{prefix}_{name}.png", img)
