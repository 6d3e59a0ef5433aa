"""Finding and tracking the hand with a heatmap network: the search windows and the tracker's logic.

The tracker is driven by an *oracle* network (``oracle_detector`` in conftest.py) that answers
like a trained one: confident and accurate when a crop frames the hand as in training (crop
side = 1.4 x the keypoints' box, hand centred), less so the further off, unsure without a hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from handanno.annotate.detect_cpm import HandTracker, TrackSettings, search_boxes

PAD = 1.4


def _hand(rng: np.random.Generator, centre, size: float) -> np.ndarray:
    """21 keypoints spread over a ``size``-pixel box around ``centre``."""
    return np.asarray(centre) + size * (rng.random((21, 2)) - 0.5)


def test_search_windows_cover_every_hand_position_and_size():
    """For any hand between the smallest crop and the image, some window frames it as in training."""
    W, H = 640, 480
    boxes = search_boxes(W, H, PAD, min_crop_px=96, step=1.5)
    sides = PAD * (boxes[:, 2] - boxes[:, 0])
    assert np.allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.max() == pytest.approx(max(W, H)) and sides.min() >= 96
    levels = np.unique(sides.round(6))[::-1]
    assert np.allclose(levels[:-1] / levels[1:], 1.5)
    rng = np.random.default_rng(0)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    slack = 0.25 * sides[:, None] + 0.5 * np.maximum(0.0, sides[:, None] - [W, H])  # half a stride per axis
    for _ in range(300):
        crop = np.exp(rng.uniform(np.log(sides.min() / np.sqrt(1.5)), np.log(H)))  # the crop the hand needs
        c = rng.uniform(crop / PAD / 2, [W - crop / PAD / 2, H - crop / PAD / 2])
        zoom_ok = np.abs(np.log(sides / crop)) <= np.log(1.5) / 2 + 1e-9  # zoom within sqrt(1.5) < 1.25
        centre_ok = np.all(np.abs(centres - c) <= slack, axis=1)
        assert np.any(zoom_ok & centre_ok), (crop, c)


def test_tracker_searches_once_then_follows_the_hand(oracle_detector):
    rng = np.random.default_rng(1)
    det = oracle_detector()
    tracker = HandTracker(det, TrackSettings(min_crop_px=96))
    img = np.zeros((480, 640, 3), np.uint8)
    gt = _hand(rng, (470, 130), 120)
    det.truth[id(img)] = gt
    kp = tracker(img, "cam0")
    assert tracker.searches == 1 and kp is not None
    assert np.abs(kp[:, :2] - gt).max() < 1.0 and kp[:, 2].mean() > 0.9
    crops_first = det.crops
    for step in range(1, 6):  # the hand moves 15 px a frame: followed without another search
        img2 = np.zeros_like(img)
        gt = gt + [15, 10]
        det.truth[id(img2)] = gt
        kp = tracker(img2, "cam0")
        assert np.abs(kp[:, :2] - gt).max() < 1.0, step
    assert tracker.searches == 1 and det.crops - crops_first == 5 * (1 + TrackSettings().refine_iters)
    other = np.zeros_like(img)  # another camera searches on its own
    det.truth[id(other)] = _hand(rng, (100, 380), 90)
    assert tracker(other, "cam1") is not None and tracker.searches == 2


def test_tracker_reports_a_missing_hand_and_searches_again(oracle_detector):
    rng = np.random.default_rng(2)
    det = oracle_detector()
    tracker = HandTracker(det)
    imgs = [np.zeros((240, 320, 3), np.uint8) for _ in range(3)]
    det.truth[id(imgs[0])] = _hand(rng, (160, 120), 80)
    det.truth[id(imgs[1])] = None
    det.truth[id(imgs[2])] = _hand(rng, (80, 170), 70)
    assert tracker(imgs[0], "c") is not None
    assert tracker(imgs[1], "c") is None and tracker.searches == 2  # tracked box fails, search fails too
    kp = tracker(imgs[2], "c")
    assert tracker.searches == 3 and np.abs(kp[:, :2] - det.truth[id(imgs[2])]).max() < 1.0
