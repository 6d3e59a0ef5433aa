"""FreiHAND export: labels from a tiny synthetic session read back, rebuild, and line up with the images.

The session is tiny (4 cameras, 3 frames, 160x120, PNG so that source colours are exact)
so the module runs in a few seconds. The reference labels are exported with a float64
hand model layer, so that FreiHAND's rebuild (also float64) can be compared tightly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from handanno.annotate import export_freihand
from handanno.annotate.export_freihand import export_session, undistorted_crop, undistorted_crop_maps
from handanno.annotate.segment import mesh_mask
from handanno.annotate.session_io import open_session, read_fit
from handanno.calibration.camera import Camera
from handanno.cli import main
from handanno.data.freihand import (
    CropBox,
    crop_affine,
    crop_image,
    crop_intrinsics,
    project_points,
    rebuild_xyz_from_mano,
)
from handanno.data.freihand_io import read_freihand
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.synth.capture import SynthSettings, synthesize

CROP = 224
TIPS = [4, 8, 12, 16, 20]  # FreiHAND keypoints that are surface vertices
INTERIOR = [j for j in range(21) if j not in TIPS]  # joint centres, inside the hand


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "session"
    synthesize(SynthSettings(out_dir=out, num_cameras=4, num_frames=3, image_size=(160, 120), keypoint_noise_px=1.0,
                             write_calib=False, image_format="png", progress=False))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def layer64() -> ManoLayer:
    return ManoLayer(load_hand_model("right"), dtype=torch.float64)


@pytest.fixture(scope="module")
def labels(session_dir, layer64):
    """Ground-truth labels made with the float64 layer: ``(samples written, FreiHANDLabels)``."""
    n = export_session(open_session(session_dir), layer64, source="ground_truth", out_dir=session_dir / "labels_gt",
                       progress=False)  # fmt: skip
    return n, read_freihand(session_dir / "labels_gt")


def _expected_views(session_dir: Path) -> set[tuple[str, str]]:
    """(frame, camera) pairs whose true hand is in front of the camera with >= 80 % of its keypoints in the image."""
    session = open_session(session_dir)
    out = set()
    for f in session.frames:
        joints = read_fit(session.fit_path(f, "ground_truth"))["joints"]
        for cam in session.rig:
            uv = cam.project(joints)
            w, h = cam.image_size
            inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
            if np.all(cam.to_camera(joints)[:, 2] > 0.01) and inside.mean() >= export_freihand.MIN_INSIDE_FRACTION:
                out.add((f, cam.name))
    return out


def test_ground_truth_export_reads_back(session_dir, labels):
    n, lab = labels
    session = open_session(session_dir)
    assert n == len(lab) >= 6  # of 12 views; the synthetic dome's close / offset cameras may lose the hand
    pairs = [(e["frame"], e["camera"]) for e in lab.index]
    assert len(set(pairs)) == n
    assert set(pairs) == _expected_views(session_dir)
    assert lab.model["is_mano"] is False and "not MANO labels" in lab.model["notice"]
    assert all(e["quality"]["accepted"] and e["hand"] == "right" for e in lab.index)
    assert not (session_dir / ".labels_gt.handanno-partial").exists()
    for p in (*lab.image_paths, *lab.mask_paths):
        assert cv2.imread(str(p)).shape == (CROP, CROP, 3)
    np.testing.assert_allclose(lab.scale, np.linalg.norm(lab.xyz[:, 9] - lab.xyz[:, 10], axis=1), rtol=0, atol=1e-12)
    # xyz are the true keypoints in each camera's frame. ground_truth/ joints come from synth's float32
    # layer, the labels from a float64 one: float32 carries ~1e-8 m error on ~0.1 m coordinates, 1e-6 m
    # (conftest TOLERANCES) leaves ~100x headroom.
    cams = {c.name: c for c in session.rig}
    for (frame, cam), xyz in zip(pairs, lab.xyz, strict=True):
        joints_w = read_fit(session.fit_path(frame, "ground_truth"))["joints"]
        np.testing.assert_allclose(xyz, cams[cam].to_camera(joints_w), rtol=0, atol=1e-6)


def test_round_trip_freihand_rebuild(labels, layer64):
    """FreiHAND's own recipe rebuilds training_xyz / training_verts from training_mano and training_K.

    Both sides are float64. The rebuild turns the hand by the camera-frame global rotation
    instead of the world one; the two agree up to the ``1e-8`` guard in smplx's Rodrigues
    (``|rotvec + 1e-8|``, kept for smplx parity), ~1e-8 rad on ~0.1 m lever arms: measured
    1.7e-9 m (xyz) and 2.5e-9 m (verts). The 1e-6 m contract leaves ~400x headroom.
    """
    _, lab = labels
    rebuilt = rebuild_xyz_from_mano(lab.mano, lab.K, layer64)
    assert np.abs(rebuilt.xyz - lab.xyz).max() < 1e-6
    assert np.abs(rebuilt.verts - lab.verts).max() < 1e-6


def test_crops_contain_the_hand(session_dir, labels, layer64):
    _, lab = labels
    session = open_session(session_dir)
    cams = {c.name: c for c in session.rig}
    faces = layer64.faces.numpy()
    colour_err, on_mask, tip_gap = [], [], []
    for i, entry in enumerate(lab.index):
        uv = project_points(lab.xyz[i], lab.K[i])  # (21, 2) crop pixels
        assert np.all((uv > -0.5) & (uv < CROP - 0.5)), f"sample {i}: keypoints outside the crop"
        crop_mask = cv2.imread(str(lab.mask_paths[i]), cv2.IMREAD_GRAYSCALE) > 127
        px = np.round(uv).astype(int)
        on_mask.append(crop_mask[px[INTERIOR, 1], px[INTERIOR, 0]])
        to_mask = cv2.distanceTransform((~crop_mask).astype(np.uint8), cv2.DIST_L2, 5)  # crop px to the mask
        tip_gap.append(to_mask[px[TIPS, 1], px[TIPS, 0]].max())
        # Independent geometry: the mesh rendered straight into the crop camera (pinhole K_crop, no
        # distortion) from training_verts must match the mask cut out of the distorted masks_gt/.
        crop_cam = Camera("crop", lab.K[i], np.zeros(5), np.eye(3), np.zeros(3), (CROP, CROP))
        rendered = mesh_mask(lab.verts[i], faces, crop_cam)
        iou = (rendered & crop_mask).sum() / (rendered | crop_mask).sum()
        # measured 0.92-0.96: masks_gt/ is a pixel-centre mask at 160x120, upsampled 2.6-5.2x here, so its
        # edge is off by up to half a source pixel; a crop shifted by 2 source px drops below ~0.7
        assert iou > 0.88, f"sample {i}: crop mask vs mesh rendered with training_K, IoU {iou:.3f}"
        # The crop's colour at a keypoint equals the captured image's colour where the distorted
        # camera sees that keypoint (bilinear on both; the crop went through JPEG at quality 95).
        cam = cams[entry["camera"]]
        image = cv2.imread(str(session.images[(cam.name, entry["frame"])])).astype(np.float32)
        crop = cv2.imread(str(lab.image_paths[i])).astype(np.float32)
        joints_w = cam.R.T @ (lab.xyz[i] - cam.t).T  # (3, 21) back to the world
        src_uv = cam.project(joints_w.T).astype(np.float32)
        a = cv2.remap(image, src_uv[:, 0:1], src_uv[:, 1:2], cv2.INTER_LINEAR)[:, 0]
        b = cv2.remap(crop, uv[:, 0:1].astype(np.float32), uv[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
        colour_err.append(np.abs(a - b).mean())
    # The 16 joints lie inside the hand's volume, so they project inside its silhouette: all on the mask.
    # Fingertips are surface vertices, often on the silhouette's edge; masks_gt/ marks pixels whose centre
    # hits the mesh, so a tip may land just off it: measured <= 2 crop px (~0.4 source px at the ~5x
    # upsampling of these 160x120 images); 3 px bounds that, a misplaced crop is off by far more.
    assert np.concatenate(on_mask).all()
    assert max(tip_gap) <= 3.0, tip_gap
    # Measured 1.1 grey levels on average (0.8-1.8 per sample: JPEG at q95 and bilinear resampling). Reading
    # the source 2 px off instead lands on another part of the shaded hand or the background: 6-31 per
    # sample, 18 on average.
    assert np.mean(colour_err) < 4.0, colour_err


def test_undistorted_crop_maps_equal_affine_crop_without_distortion():
    K = np.array([[150.0, 0, 81.0], [0, 150.0, 58.5], [0, 0, 1]])
    cam = Camera("c", K, np.zeros(5), np.eye(3), np.zeros(3), (160, 120))
    box = CropBox(40.3, 20.7, 90.0)  # upsampled 224 / 90 = 2.5x: no anti-alias blur on either path
    K_crop = crop_intrinsics(K, box, CROP)
    mx, my = undistorted_crop_maps(cam, K_crop, CROP)
    grid = np.stack(np.meshgrid(np.arange(CROP), np.arange(CROP)), -1).reshape(-1, 2)
    src = np.c_[grid, np.ones(len(grid))] @ np.linalg.inv(crop_affine(box, CROP)).T  # crop px -> image px
    # float32 maps on < 200 px coordinates: eps 1.2e-7 x 200 = 2.4e-5 px
    np.testing.assert_allclose(mx.ravel(), src[:, 0], atol=1e-4)
    np.testing.assert_allclose(my.ravel(), src[:, 1], atol=1e-4)
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a = undistorted_crop(image, cam, K_crop, CROP).astype(int)
    b = crop_image(image, box, CROP, antialias=False).astype(int)
    # both are OpenCV bilinear with 5 fractional bits on the same coordinates; the maps' float32 rounding
    # (above) may flip a rounding: at most 1 grey level apart
    assert np.abs(a - b).max() <= 1


def test_undistorted_crop_follows_the_distortion():
    """Strong distortion: points drawn where OpenCV's distorted camera sees them land where K_crop puts them."""
    K = np.array([[110.0, 0, 79.5], [0, 110.0, 59.5], [0, 0, 1]])
    dist = np.array([-0.32, 0.12, 0.003, -0.002, -0.02])
    cam = Camera("c", K, dist, np.eye(3), np.zeros(3), (160, 120))
    K_crop = crop_intrinsics(K, CropBox(-0.5, -20.5, 160.0), CROP)
    # Oracle: cv2.projectPoints of the 3D ray through each integer crop pixel.
    rng = np.random.default_rng(1)
    crop_px = rng.integers(8, CROP - 8, (200, 2)).astype(np.float64)
    rays = np.c_[crop_px, np.ones(len(crop_px))] @ np.linalg.inv(K_crop).T  # (N, 3), z = 1
    src, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, dist)
    src = src[:, 0]
    mx, my = undistorted_crop_maps(cam, K_crop, CROP)
    r, c = crop_px[:, 1].astype(int), crop_px[:, 0].astype(int)
    np.testing.assert_allclose(mx[r, c], src[:, 0], atol=1e-3)
    np.testing.assert_allclose(my[r, c], src[:, 1], atol=1e-3)
    # Image level: bright dots drawn at the distorted projections show up at the pinhole crop pixels,
    # while a plain affine crop (ignoring the distortion) misses the ones far from the centre.
    pts = np.stack(np.meshgrid(np.linspace(-0.55, 0.55, 7), np.linspace(-0.4, 0.4, 5)), -1).reshape(-1, 2)
    pts3 = np.c_[pts, np.ones(len(pts))]
    uv_dist = cam.project(pts3)
    image = np.zeros((120, 160), np.uint8)
    for u, v in uv_dist:
        cv2.circle(image, (int(round(u * 16)), int(round(v * 16))), 2 * 16, 255, -1, cv2.LINE_AA, 4)
    uv_crop = project_points(pts3, K_crop)
    inside = np.all((uv_crop > 4) & (uv_crop < CROP - 5), axis=1)
    crop = undistorted_crop(image, cam, K_crop, CROP)
    hit = crop[np.round(uv_crop[inside, 1]).astype(int), np.round(uv_crop[inside, 0]).astype(int)]
    assert inside.sum() >= 20 and (hit > 128).all()
    plain = crop_image(image, CropBox(-0.5, -20.5, 160.0), CROP, antialias=False)
    plain_hit = plain[np.round(uv_crop[inside, 1]).astype(int), np.round(uv_crop[inside, 0]).astype(int)]
    assert (plain_hit <= 128).sum() >= 10  # the control: without undistortion 22 of the 35 dots are missed


def _crash_after(monkeypatch, n: int) -> None:
    orig = export_freihand._sample
    made = {"n": 0}

    def crash(*args, **kwargs):
        if made["n"] == n:
            raise RuntimeError("simulated crash")
        sample = orig(*args, **kwargs)
        made["n"] += sample is not None
        return sample

    monkeypatch.setattr(export_freihand, "_sample", crash)


def _count_samples(monkeypatch) -> dict[str, int]:
    orig = export_freihand._sample
    made = {"n": 0}

    def count(*args, **kwargs):
        sample = orig(*args, **kwargs)
        made["n"] += sample is not None
        return sample

    monkeypatch.setattr(export_freihand, "_sample", count)
    return made


def test_interrupted_export_resumes(session_dir, layer64, labels, monkeypatch):
    """A crash mid-export leaves the old labels/ untouched; the next run resumes from labels.partial."""
    n_full, ref = labels
    out = session_dir / "labels_resume"
    session = open_session(session_dir)
    n_old = export_session(open_session(session_dir, "0:1"), layer64, source="ground_truth", out_dir=out,
                           progress=False)  # fmt: skip
    old_xyz = (out / "training_xyz.json").read_bytes()
    assert 0 < n_old < n_full

    with monkeypatch.context() as m:
        _crash_after(m, 5)
        with pytest.raises(RuntimeError, match="simulated crash"):
            export_session(session, layer64, source="ground_truth", out_dir=out, progress=False)
    assert (out / "training_xyz.json").read_bytes() == old_xyz  # labels/ is the old, complete one
    partial = session_dir / ".labels_resume.handanno-partial"
    # frame 0's samples were carried over from the old labels, then 5 were made
    assert len(list((partial / ".handanno_pending").glob("*.json"))) == n_old + 5
    assert not (partial / "training_xyz.json").exists()

    made = _count_samples(monkeypatch)
    assert export_session(session, layer64, source="ground_truth", out_dir=out, progress=False) == n_full
    assert made["n"] == n_full - n_old - 5  # only what was missing was made
    assert not partial.exists()
    lab = read_freihand(out)
    assert [(e["frame"], e["camera"]) for e in lab.index] == [(e["frame"], e["camera"]) for e in ref.index]
    np.testing.assert_array_equal(lab.xyz, ref.xyz)
    np.testing.assert_array_equal(lab.K, ref.K)
    np.testing.assert_array_equal(lab.mano, ref.mano)
    for a, b in zip(lab.image_paths, ref.image_paths, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_stale_partial_export_starts_again(session_dir, layer64, labels, monkeypatch):
    """A partial export is not resumed once a record changed (a refit) or with another source / filter."""
    n_full, ref = labels
    session = open_session(session_dir)
    out = session_dir / "labels_stale"
    partial = session_dir / ".labels_stale.handanno-partial"
    record = session.fit_path(session.frames[0], "ground_truth")
    original = record.read_bytes()
    try:
        for change in ("record", "filter"):
            if out.exists():
                shutil.rmtree(out)
            with monkeypatch.context() as m:
                _crash_after(m, 3)
                with pytest.raises(RuntimeError, match="simulated crash"):
                    export_session(session, layer64, source="ground_truth", out_dir=out, progress=False)
            assert len(list((partial / ".handanno_pending").glob("*.json"))) == 3
            if change == "record":  # the record was rewritten after the partial export started
                record.write_text(json.dumps(json.loads(original), indent=2))
            with monkeypatch.context() as m:
                made = _count_samples(m)
                n = export_session(session, layer64, source="ground_truth", out_dir=out, progress=False,
                                   only_accepted=change != "filter")  # fmt: skip
            assert made["n"] == n_full, change  # all made again, none resumed
            assert n == n_full and not partial.exists()
            lab = read_freihand(out)
            np.testing.assert_array_equal(lab.xyz, ref.xyz)
            assert not (out / ".handanno_export_source").exists()
            record.write_bytes(original)
    finally:
        record.write_bytes(original)


def test_only_accepted_fits_are_exported(session_dir, layer64, tmp_path):
    """fits/ as written by the fitter: a frame whose quality is not accepted gives no samples."""
    session = open_session(session_dir)
    fits = session_dir / "fits"
    fits.mkdir(exist_ok=True)
    try:
        for k, f in enumerate(session.frames):
            rec = json.loads(session.fit_path(f, "ground_truth").read_text())
            rec["quality"]["accepted"] = k != 1
            rec["quality"]["reasons"] = [] if k != 1 else ["median mask IoU 0.41 < 0.6"]
            (fits / f"{f}.json").write_text(json.dumps(rec))
        export_session(session, layer64, source="fits", out_dir=tmp_path / "labels", progress=False)
        frames = {e["frame"] for e in read_freihand(tmp_path / "labels").index}
        assert frames == {session.frames[0], session.frames[2]}
    finally:
        for p in fits.glob("*.json"):
            p.unlink()
        fits.rmdir()
    with pytest.raises(HandannoError, match="no records to export"):
        export_session(session, layer64, source="fits", out_dir=tmp_path / "none", progress=False)
    with pytest.raises(HandannoError, match="fits or ground_truth"):
        export_session(session, layer64, source="masks", progress=False)


def test_export_command(session_dir, labels):
    """``handanno export`` (float32 layer, as users run it) agrees with the float64 export to 1e-6 m.

    float32 forward kinematics on ~0.1 m coordinates carry ~1e-8 m of rounding (conftest TOLERANCES:
    atol 1e-6 m for float32, ~100x headroom).
    """
    _, ref = labels
    out = session_dir / "labels_cli"
    res = CliRunner().invoke(main, ["export", "--session", str(session_dir), "--source", "ground_truth",
                                    "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"{len(ref)} samples" in res.output and "non-MANO" in res.output
    lab = read_freihand(out)
    np.testing.assert_allclose(lab.xyz, ref.xyz, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lab.verts, ref.verts, rtol=0, atol=1e-6)
    res = CliRunner().invoke(main, ["export", "--session", str(session_dir), "--source", "ground_truth",
                                    "--out", str(out), "--hand", "left"])  # fmt: skip
    assert res.exit_code == 2 and "right hand" in res.output
