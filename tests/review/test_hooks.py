"""review.json obeyed by the rest: export leaves out rejected frames, fit leaves out ignored views, bootstrap trains
on the frames export keeps."""

from __future__ import annotations

import json

from handanno.annotate.export_freihand import export_labels
from handanno.annotate.session_io import fit_up_to_date, open_session, read_fit
from handanno.bootstrap.rounds import _accepted_frames
from handanno.data.freihand_io import read_freihand
from handanno.data.review_io import update_review

from .conftest import CAMERAS, quick_fit


def _samples(labels) -> set[tuple[str, str]]:
    return {(e["frame"], e["camera"]) for e in labels.index}


def _not_accepted_by_thresholds(root, frame: str) -> None:
    path = root / "fits" / f"{frame}.json"
    rec = json.loads(path.read_text())
    rec["quality"]["accepted"], rec["quality"]["reasons"] = False, ["median mask IoU 0.41 < 0.6"]
    path.write_text(json.dumps(rec))


def test_export_obeys_the_reviewer(fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    _not_accepted_by_thresholds(root, "000002")
    export_labels(root, progress=False)
    assert {f for f, _ in _samples(read_freihand(root / "labels"))} == {"000000", "000001"}
    update_review(root, "000001", decision="reject", reason="index finger off")
    update_review(root, "000002", decision="accept")  # the reviewer overrules the thresholds
    update_review(root, "000000", ignore=("cam3", True))
    export_labels(root, progress=False)
    samples = _samples(read_freihand(root / "labels"))
    assert {f for f, _ in samples} == {"000000", "000002"}
    assert ("000000", "cam3") not in samples and ("000000", "cam2") in samples  # an ignored view has no sample
    assert {("000002", c) for c in CAMERAS} <= samples


def test_fit_leaves_out_ignored_views_and_refits_when_the_review_changes(fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    fits = root / "fits"
    before = {p.name: p.stat().st_mtime_ns for p in fits.glob("*.json")}
    update_review(root, "000001", ignore=("cam1", True))
    update_review(root, "000002", decision="reject")  # a decision alone does not refit
    session = open_session(root)
    assert session.ignored_views == {"000001": ("cam1",)} and ("cam1", "000001") in session.bad_views
    assert not fit_up_to_date(session, "000001") and fit_up_to_date(session, "000002")
    quick_fit(root, silhouette=True)  # segmentation on: the ignored view gets no mask either
    after = {p.name: p.stat().st_mtime_ns for p in fits.glob("*.json")}
    assert [n for n in after if after[n] != before[n]] == ["000001.json"]  # only that frame was fitted again
    rec = read_fit(fits / "000001.json")
    assert rec["ignored_views"] == ["cam1"]
    assert rec["quality"]["reproj_err_px"]["cam1"] is None and rec["quality"]["reproj_err_px"]["cam0"] is not None
    assert rec["quality"]["mask_iou"]["cam1"] is None
    assert not (root / "masks" / "cam1" / "000001.png").exists()  # the view's mask was not made nor used
    assert (root / "keypoints2d" / "cam1" / "000001.json").is_file()  # and nothing of the user's was touched
    # the reviewer takes the view back: the frame is fitted again, with it
    update_review(root, "000001", ignore=("cam1", False))
    quick_fit(root)
    rec = read_fit(fits / "000001.json")
    assert "ignored_views" not in rec and rec["quality"]["reproj_err_px"]["cam1"] is not None


def test_bootstrap_trains_on_the_frames_export_keeps(fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    _not_accepted_by_thresholds(root, "000002")
    assert _accepted_frames(open_session(root)) == ["000000", "000001"]
    update_review(root, "000000", decision="reject")
    update_review(root, "000002", decision="accept")
    assert _accepted_frames(open_session(root)) == ["000001", "000002"]
