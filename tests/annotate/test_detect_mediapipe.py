"""MediaPipe keypoints: the pure conversions always; the real detector only where MediaPipe is installed.

CI does not install the optional extra (``pip install 'handanno[mediapipe]'``), so every test
that runs MediaPipe skips cleanly without it.
"""

import importlib.util
import sys

import numpy as np
import pytest

from handanno.annotate import detect_mediapipe as dm
from handanno.data.conventions import JOINT_NAMES
from handanno.errors import HandannoError


def _have_mediapipe() -> bool:
    try:
        return importlib.util.find_spec("mediapipe") is not None  # cheap: does not import it
    except (ImportError, ValueError):
        return False


HAVE_MEDIAPIPE = _have_mediapipe()
needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe not installed (optional extra)")


def test_convention_landmarks_to_pixels():
    """MediaPipe's 0 and 1 are the image's outer edges; handanno's pixel (0, 0) is the top-left pixel's centre."""
    W, H = 64, 48
    xy = np.full((21, 2), 0.5)
    xy[1] = (0.5 / W, 0.5 / H)  # centre of pixel (0, 0)
    xy[2] = (0.0, 0.0)  # the top-left corner of the image: still inside
    xy[3] = (1.0, 1.0)  # the bottom-right corner: still inside
    xy[4] = (1.02, 0.5)  # beyond the right edge
    xy[5] = (0.5, -0.01)  # above the top edge
    xy[6] = (np.nan, 0.5)
    kp = dm.landmarks_to_keypoints(xy, (W, H), 0.8)
    assert kp.shape == (21, 3)
    np.testing.assert_allclose(kp[0], [W / 2 - 0.5, H / 2 - 0.5, 0.8])
    np.testing.assert_allclose(kp[1], [0.0, 0.0, 0.8], atol=1e-12)
    np.testing.assert_allclose(kp[2], [-0.5, -0.5, 0.8])
    np.testing.assert_allclose(kp[3], [W - 0.5, H - 0.5, 0.8])
    assert kp[4, 2] == 0 and kp[5, 2] == 0  # outside: missing
    assert kp[6, 2] == 0 and np.all(np.isfinite(kp))  # not finite: missing, and no NaN written


def test_hand_side_is_unmirrored():
    assert dm.hand_side_from_label("Left") == "right"
    assert dm.hand_side_from_label("Right") == "left"
    with pytest.raises(HandannoError, match="handedness"):
        dm.hand_side_from_label("Both")


@pytest.mark.parametrize(
    ("labels", "scores", "hand", "want"),
    [
        (["Right", "Left"], [0.9, 0.8], "right", 1),  # "Left" is the right hand
        (["Right", "Left"], [0.9, 0.8], "left", 0),
        (["Left", "Left"], [0.6, 0.7], "right", 1),  # best of the wanted side
        (["Right", "Right"], [0.6, 0.95], "right", 1),  # no right hand: the best detection
        ([], [], "right", None),
    ],
)
def test_choose_detection(labels, scores, hand, want):
    assert dm.choose_detection(labels, scores, hand) == want


def test_missing_mediapipe_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe...` raise ImportError
    with pytest.raises(HandannoError, match=r"pip install 'handanno\[mediapipe\]'"):
        dm.MediaPipeDetector()


def test_bad_arguments():
    with pytest.raises(HandannoError, match="hand"):
        dm.MediaPipeDetector(hand="both")
    with pytest.raises(HandannoError, match="model_complexity"):
        dm.MediaPipeDetector(settings=dm.MediaPipeSettings(model_complexity=2))


@needs_mediapipe
def test_landmark_order_is_freihand_order():
    from mediapipe.python.solutions.hands import HandLandmark

    names = [lm.name for lm in sorted(HandLandmark, key=int)]
    assert len(names) == 21 and names[0] == "WRIST"
    # same finger, same position along it (knuckle to tip); MediaPipe's thumb CMC is FreiHAND's "thumb_mcp"
    for mp_name, ours in zip(names[1:], JOINT_NAMES[1:], strict=True):
        assert mp_name.split("_")[0].lower() == ours.split("_")[0], (mp_name, ours)
    assert [n.rsplit("_", 1)[-1] for n in names[1:5]] == ["CMC", "MCP", "IP", "TIP"]
    for f in range(1, 5):
        assert [n.rsplit("_", 1)[-1] for n in names[1 + 4 * f : 5 + 4 * f]] == ["MCP", "PIP", "DIP", "TIP"]


@pytest.fixture(scope="module")
def detectors():
    if not HAVE_MEDIAPIPE:
        pytest.skip("mediapipe not installed (optional extra)")
    with dm.MediaPipeDetector("right") as right, dm.MediaPipeDetector("left") as left:
        yield {"right": right, "left": left}


@needs_mediapipe
@pytest.mark.slow
def test_mediapipe_finds_a_drawn_hand_in_freihand_order(detectors, draw_hand):
    """On a drawn hand (palm + five finger strokes, 150 px) MediaPipe's keypoints land on the
    drawn joints: every keypoint is nearest to the drawn joint of the same index, and the
    median error is a few px (measured 2.9 px; the wrist differs most, ~25 px, because the
    drawing puts it at the end of a stump). Tolerance 8 px: ~5 % of the hand's size."""
    img, _, kp_true = draw_hand(w=320, h=240, size=150.0, seed=0)
    kp = detectors["right"](img)
    assert kp is not None and kp.shape == (21, 3)
    assert np.all((kp[:, 2] > 0.5) & (kp[:, 2] <= 1.0))
    d = np.linalg.norm(kp[:, None, :2] - kp_true[None, :, :2], axis=2)  # (21, 21)
    assert (d.argmin(axis=1) == np.arange(21)).all()
    assert np.median(np.diag(d)) < 8.0


@needs_mediapipe
@pytest.mark.slow
def test_mediapipe_picks_the_requested_hand(detectors, draw_hand):
    """A hand and its mirror image side by side are a right and a left hand: each side request
    gets its own, and the two choices differ (MediaPipe labels them oppositely)."""
    img, _, _ = draw_hand(w=320, h=240, size=150.0, seed=0)
    both = np.hstack([img, img[:, ::-1]])
    W = img.shape[1]
    a = detectors["right"](both)
    b = detectors["left"](both)
    assert a is not None and b is not None
    assert (a[:, 0].mean() < W) != (b[:, 0].mean() < W)
    # MediaPipe calls the drawing "Left" (a mirrored right hand): unmirrored, it is the right hand
    assert a[:, 0].mean() < W
    assert detectors["right"](np.zeros((120, 160, 3), np.uint8)) is None
