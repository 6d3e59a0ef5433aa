"""Metrics: hand-worked cases, and FreiHAND's own evaluation code (re-typed) as the oracle."""

import dataclasses

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from handanno.data import metrics as M
from handanno.errors import HandannoError

# --------------------------------------------------------------------------- oracles
# Re-typed from lmb-freiburg/freihand eval.py and utils/eval_util.py, kept as loops.


def _fh_align_w_scale(mtx1, mtx2):
    """FreiHAND eval.py align_w_scale(gt, pred) -> aligned pred."""
    t1, t2 = mtx1.mean(0), mtx2.mean(0)
    mtx1_t, mtx2_t = mtx1 - t1, mtx2 - t2
    s1 = np.linalg.norm(mtx1_t) + 1e-8
    mtx1_t /= s1
    s2 = np.linalg.norm(mtx2_t) + 1e-8
    mtx2_t /= s2
    R, s = orthogonal_procrustes(mtx1_t, mtx2_t)
    mtx2_t = np.dot(mtx2_t, R.T) * s
    return mtx2_t * s1 + t1


class _FhEvalUtil:
    """FreiHAND utils/eval_util.py EvalUtil."""

    def __init__(self, num_kp=21):
        self.data = [[] for _ in range(num_kp)]
        self.num_kp = num_kp

    def feed(self, gt, vis, pred):
        dist = np.sqrt(np.sum(np.square(gt - pred), axis=1))
        for i in range(gt.shape[0]):
            if vis[i]:
                self.data[i].append(dist[i])

    def get_measures(self, val_min, val_max, steps):
        thresholds = np.linspace(val_min, val_max, steps)
        norm = np.trapezoid(np.ones_like(thresholds), thresholds)
        means, aucs, curves = [], [], []
        for i in range(self.num_kp):
            if not self.data[i]:
                continue
            d = np.array(self.data[i])
            means.append(d.mean())
            curve = (d[:, None] <= thresholds[None]).astype(float).mean(0)  # _get_pck per threshold
            curves.append(curve)
            aucs.append(np.trapezoid(curve, thresholds) / norm)
        return np.mean(means), np.mean(aucs), np.mean(np.array(curves), 0)


def _random_hands(rng, B=5, N=21):
    base = rng.normal(scale=0.04, size=(B, N, 3)) + [0.0, 0.0, 0.5]
    pred = base + rng.normal(scale=0.01, size=(B, N, 3))
    return pred, base


# --------------------------------------------------------------------------- MPJPE / PA


def test_translation_of_3mm_gives_mpjpe_3_and_pa_0():
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=0.05, size=(4, 21, 3))
    pred = gt + np.array([0.0, 0.003, 0.0])
    assert M.mpjpe(pred, gt) == pytest.approx(3.0, abs=1e-9)
    assert M.mpvpe(pred, gt) == pytest.approx(3.0, abs=1e-9)
    # 1e-8 m added to each norm (as FreiHAND) perturbs the scale by ~1e-7: ~1e-5 mm here.
    assert M.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-4)


def test_rotated_scaled_copy_has_pa_error_zero_but_large_mpjpe():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=0.05, size=(3, 778, 3))
    R = Rotation.random(3, random_state=2).as_matrix()
    pred = 1.3 * np.einsum("bij,bnj->bni", R, gt) + rng.normal(size=(3, 1, 3))
    assert M.mpvpe(pred, gt) > 10.0
    assert M.pa_mpvpe(pred, gt) == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(M.procrustes_align(pred, gt), gt, atol=1e-9)


def test_convention_procrustes_allows_reflection_as_freihand():
    """FreiHAND's align_w_scale takes scipy's orthogonal matrix as is: a mirror image aligns."""
    rng = np.random.default_rng(3)
    gt = rng.normal(scale=0.05, size=(1, 21, 3))
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    T = M.procrustes_transform(mirrored, gt)
    assert np.linalg.det(T.R[0]) == pytest.approx(-1.0)
    assert M.pa_mpjpe(mirrored, gt) == pytest.approx(0.0, abs=1e-4)


def test_procrustes_matches_freihand_align_w_scale():
    rng = np.random.default_rng(4)
    pred, gt = _random_hands(rng, B=6)
    ours = M.procrustes_align(pred, gt)
    for b in range(6):
        np.testing.assert_allclose(ours[b], _fh_align_w_scale(gt[b].copy(), pred[b].copy()), atol=1e-12)
    # leading dims are samples; (N, 3) is one sample
    np.testing.assert_allclose(M.procrustes_align(pred[0], gt[0]), ours[0], atol=1e-15)


def test_masked_procrustes_ignores_invisible_points():
    rng = np.random.default_rng(5)
    gt = rng.normal(scale=0.05, size=(2, 21, 3))
    R = Rotation.random(random_state=6).as_matrix()
    pred = 0.8 * gt @ R.T + 0.1
    mask = np.ones((2, 21), dtype=bool)
    mask[:, :3] = False
    pred[:, :3] += 0.5  # outliers, invisible
    assert M.pa_mpjpe(pred, gt, mask) == pytest.approx(0.0, abs=1e-4)
    assert M.pa_mpjpe(pred, gt) > 10.0


def test_mpjpe_averages_like_evalutil_with_visibility():
    """Per-keypoint means over visible samples, then the mean over keypoints (not pooled)."""
    rng = np.random.default_rng(7)
    pred, gt = _random_hands(rng, B=7)
    vis = rng.random((7, 21)) > 0.4
    vis[:, 5] = False  # never visible: left out
    util = _FhEvalUtil()
    for b in range(7):
        util.feed(gt[b], vis[b], pred[b])
    mean_m, auc, curve = util.get_measures(0.0, 0.05, 100)
    assert M.mpjpe(pred, gt, vis) == pytest.approx(mean_m * 1000.0, rel=1e-12)
    err = M.joint_errors_mm(pred, gt)
    assert M.auc_3d(err, mask=vis) == pytest.approx(auc, rel=1e-12)
    np.testing.assert_allclose(M.pck_curve_3d(err, mask=vis), curve, atol=1e-12)
    pooled = err[vis].mean()
    assert abs(M.mpjpe(pred, gt, vis) - pooled) > 1e-6  # the two averages differ here


def test_torch_inputs_are_accepted():
    torch = pytest.importorskip("torch")
    gt = torch.zeros(2, 21, 3)
    assert M.mpjpe(gt + 0.002, gt) == pytest.approx(2.0 * np.sqrt(3), rel=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(HandannoError, match="pred points"):
        M.mpjpe(np.zeros((2, 21, 3)), np.zeros((2, 20, 3)))
    with pytest.raises(HandannoError, match="mask"):
        M.mpjpe(np.zeros((2, 21, 3)), np.zeros((2, 21, 3)), mask=np.ones((2, 20)))


# --------------------------------------------------------------------------- F-score


def test_fscore_of_a_known_shift():
    # points 30 mm apart, so each point's nearest neighbour is its own shifted copy
    grid = np.stack(np.meshgrid(*[np.arange(4) * 0.03] * 3, indexing="ij"), -1).reshape(-1, 3)  # (64, 3)
    shift = np.where(np.arange(64)[:, None] < 32, [0.003, 0.0, 0.0], [0.0, 0.008, 0.0])
    pred = grid + shift  # half 3 mm off, half 8 mm off
    f5 = M.fscore(pred, grid, 0.005)
    assert (f5.f, f5.precision, f5.recall) == pytest.approx((0.5, 0.5, 0.5))
    assert M.fscore(pred, grid, 0.015).f == pytest.approx(1.0)
    assert M.fscore(pred, grid, 0.002).f == 0.0


def test_convention_fscore_precision_recall_named_as_freihand():
    """FreiHAND: precision = gt points near pred; recall = pred points near gt."""
    gt = np.random.default_rng(8).normal(scale=0.05, size=(100, 3))
    pred = np.concatenate([gt, gt[:25] + 1.0])  # 25 extra predicted points far away
    r = M.fscore(pred[None], gt[None], 0.005)
    assert r.precision == pytest.approx(1.0)
    assert r.recall == pytest.approx(100 / 125)
    assert r.f == pytest.approx(2 * 0.8 / 1.8)


def test_fscore_matches_open3d_as_freihand_calls_it():
    o3d = pytest.importorskip("open3d")
    rng = np.random.default_rng(9)
    gt = rng.normal(scale=0.03, size=(3, 778, 3))
    pred = gt + rng.normal(scale=0.006, size=(3, 778, 3))

    def cloud(x):
        pc = o3d.geometry.PointCloud()
        pc.points = o3d.utility.Vector3dVector(x)
        return pc

    ours = M.fscores_per_sample(pred, gt, M.FSCORE_THRESHOLDS_M)
    for b in range(3):
        d1 = np.asarray(cloud(gt[b]).compute_point_cloud_distance(cloud(pred[b])))  # each gt point
        d2 = np.asarray(cloud(pred[b]).compute_point_cloud_distance(cloud(gt[b])))  # each pred point
        for t, th in enumerate(M.FSCORE_THRESHOLDS_M):
            recall, precision = np.mean(d2 < th), np.mean(d1 < th)
            f = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
            np.testing.assert_allclose(ours[b, t], [f, precision, recall], atol=1e-12)


# --------------------------------------------------------------------------- PCK / AUC 3D


def test_pck_at_thresholds_counts_less_or_equal():
    err = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(M.pck_curve_3d(err, [0.0, 1.0, 2.5, 4.0]), [0.0, 0.25, 0.5, 1.0])


def test_auc_of_a_constant_error():
    # thresholds t_k = 50 k / 99; PCK jumps to 1 at k = 20 (10.10 mm): area = (79 + 0.5) * 50 / 99
    assert M.auc_3d(np.full((5, 21), 10.0)) == pytest.approx(79.5 / 99, abs=1e-12)
    assert M.auc_3d(np.zeros((2, 21))) == 1.0
    assert M.auc_3d(np.full((2, 21), 60.0)) == 0.0
    assert len(M.AUC_3D_THRESHOLDS_MM) == 100 and M.AUC_3D_THRESHOLDS_MM[-1] == 50.0


def test_nothing_visible_gives_nan():
    z = np.zeros((1, 21, 3))
    assert np.isnan(M.mpjpe(z, z, mask=np.zeros((1, 21))))
    assert np.isnan(M.auc_3d(np.zeros((1, 21)), mask=np.zeros((1, 21))))


# --------------------------------------------------------------------------- 2D


def test_normaliser_is_larger_side_of_visible_gt_bbox():
    gt = np.array([[[10.0, 10.0], [50.0, 110.0], [500.0, 500.0]]])
    assert M.bbox_normaliser_px(gt, [[1, 1, 0]]).tolist() == [100.0]
    assert M.bbox_normaliser_px(gt).tolist() == [490.0]


def test_pck_2d_threshold_is_alpha_times_normaliser():
    gt = np.array([[[0.0, 0.0], [100.0, 40.0], [50.0, 20.0]]])  # normaliser 100 -> 20 px
    pred = gt + np.array([[[19.9, 0.0], [20.1, 0.0], [0.0, 20.0]]])
    r = M.pck_2d(pred, gt)
    assert r.normaliser_px.tolist() == [100.0]
    assert r.pck == pytest.approx(2 / 3)
    assert M.pck_2d(pred, gt, alpha=0.1).pck == 0.0
    # an invisible keypoint neither counts nor widens the box
    r2 = M.pck_2d(pred, gt, visible=[[1, 0, 1]])
    assert r2.normaliser_px.tolist() == [50.0] and r2.pck == 0.0


def test_epe_and_auc_2d():
    gt = np.zeros((2, 21, 2))
    pred = gt + np.array([3.0, 4.0])  # 5 px everywhere
    vis = np.ones((2, 21))
    vis[0, 0] = 0
    assert M.epe_2d(pred, gt, vis) == pytest.approx(5.0)
    # 20 thresholds over 0-30 px (spacing 30/19): PCK = 1 from t_4 = 6.3 px on
    assert M.auc_2d(pred, gt, vis) == pytest.approx((15 + 0.5) / 19)
    assert M.auc_2d(pred, gt, vis, thresholds_px=[0.0, 10.0]) == pytest.approx(0.5)
    nan_gt = gt.copy()
    nan_gt[1, 3] = np.nan  # missing gt keypoint: not visible
    assert M.epe_2d(pred, nan_gt) == pytest.approx(5.0)


# --------------------------------------------------------------------------- summary


def test_evaluate_3d_matches_freihand_main_loop():
    rng = np.random.default_rng(10)
    pred_xyz, gt_xyz = _random_hands(rng, B=4)
    pred_v, gt_v = _random_hands(rng, B=4, N=778)
    m = M.evaluate_3d(pred_xyz, gt_xyz, pred_v, gt_v)

    xyz, xyz_al, mesh, mesh_al = _FhEvalUtil(), _FhEvalUtil(), _FhEvalUtil(778), _FhEvalUtil(778)
    f, fa = [], []
    for b in range(4):
        ones = np.ones(21)
        xyz.feed(gt_xyz[b], ones, pred_xyz[b])
        xyz_al.feed(gt_xyz[b], ones, _fh_align_w_scale(gt_xyz[b].copy(), pred_xyz[b].copy()))
        mesh.feed(gt_v[b], np.ones(778), pred_v[b])
        v_al = _fh_align_w_scale(gt_v[b].copy(), pred_v[b].copy())
        mesh_al.feed(gt_v[b], np.ones(778), v_al)
        f.append([M.fscore(pred_v[b], gt_v[b], t).f for t in (0.005, 0.015)])
        fa.append([M.fscore(v_al, gt_v[b], t).f for t in (0.005, 0.015)])
    f, fa = np.mean(f, 0), np.mean(fa, 0)
    (xm, xa, _), (xam, xaa, _) = xyz.get_measures(0, 0.05, 100), xyz_al.get_measures(0, 0.05, 100)
    (mm, ma, _), (mam, maa, _) = mesh.get_measures(0, 0.05, 100), mesh_al.get_measures(0, 0.05, 100)
    want = {
        "xyz_mean3d": xm * 100, "xyz_auc3d": xa, "xyz_al_mean3d": xam * 100, "xyz_al_auc3d": xaa,
        "mesh_mean3d": mm * 100, "mesh_auc3d": ma, "mesh_al_mean3d": mam * 100, "mesh_al_auc3d": maa,
        "f_score_5": f[0], "f_al_score_5": fa[0], "f_score_15": f[1], "f_al_score_15": fa[1],
    }  # fmt: skip
    got = m.to_freihand_scores()
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_metrics3d_dict_and_text():
    gt = np.random.default_rng(11).normal(scale=0.05, size=(2, 21, 3))
    m = M.evaluate_3d(gt + [0.003, 0.0, 0.0], gt)
    assert m.mpjpe_mm == pytest.approx(3.0) and m.mpvpe_mm is None and m.f5 is None
    d = m.to_dict()
    assert d["num_samples"] == 2 and d["mpjpe_mm"] == pytest.approx(3.0)
    text = m.format()
    assert "MPJPE 3.00 mm" in text and "0-50 mm, 100 thresholds" in text and "F@5mm n/a" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.mpjpe_mm = 1.0  # type: ignore[misc]
    # different vertex counts: unaligned F-scores only
    m2 = M.evaluate_3d(gt, gt, np.zeros((2, 10, 3)), np.zeros((2, 778, 3)))
    assert m2.f5 == 1.0 and m2.pa_f5 is None and m2.mpvpe_mm is None
