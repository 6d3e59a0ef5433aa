"""A round's detection guided by the last round's fits (multiview bootstrapping's re-detection).

After fine-tuning, the bootstrap detects every view again with the new network. Searching the
whole image (then tracking) throws away what the rig already knows: the last round's fit says
where the hand is in every view, also where the detector missed it. So in every fitted frame
each view is detected in a crop framed on the fit's projection (the detector's
:data:`handanno.annotate.detect.BoxDetector`), as the fit's guided re-detection does for single
views (:mod:`handanno.annotate.redetect`). The crop is only a where: the new keypoints are the
network's, and the refit and its acceptance judge them.

Frames without a fit (seen in fewer than two views) keep no keypoints of handanno's, so the
pipeline's detection stage searches and tracks them as usual. A keypoint file the user brought is
never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from handanno.annotate.detect import BoxDetector
from handanno.annotate.redetect import box_on_image, fit_boxes, project_fits
from handanno.annotate.session_io import (
    Session,
    keypoints_made_by_handanno,
    readable_fit,
    write_keypoints_file,
)
from handanno.data.files_io import read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuidedCounts:
    """What :func:`detect_around_fits` did.

    Attributes:
        detected: views detected in a crop around the fit (hand found).
        missed: views detected there where the network did not find the hand (written with conf 0).
        unguided: views of frames without a fit, their handanno keypoints removed (searched again).
        kept: views left as they were: the user's files, damaged images, the hand behind or off the camera.
    """

    detected: int = 0
    missed: int = 0
    unguided: int = 0
    kept: int = 0


def detect_around_fits(session: Session, in_box: BoxDetector, source: str) -> GuidedCounts:
    """Detect every view of every fitted frame in a crop around its fit's projection; write keypoints2d/.

    Args:
        session: the session; its ``fits/`` are the last round's.
        in_box: the new network's box detector.
        source: the ``source`` written in the keypoint files (``"cpm"``), so later runs know
            handanno's detector made them.

    Returns:
        The :class:`GuidedCounts`.
    """
    detected = missed = unguided = kept = 0
    for frame in session.frames:
        rec = readable_fit(session.fit_path(frame))
        if rec is None:
            for cam in session.cameras:
                path = session.keypoints_path(cam, frame)
                if path.is_file() and keypoints_made_by_handanno(path):
                    path.unlink()
                    unguided += 1
            continue
        proj, in_front = project_fits(np.asarray(rec["joints"], np.float64)[None], session.rig)  # (1, C, 21, 2)
        boxes = fit_boxes(proj)[0]  # (C, 4)
        for c, (cam, camera) in enumerate(zip(session.cameras, session.rig, strict=True)):
            path = session.keypoints_path(cam, frame)
            image = session.images.get((cam, frame))
            user_file = path.is_file() and not keypoints_made_by_handanno(path)
            if image is None or user_file or not in_front[0, c] or not box_on_image(boxes[c], camera.image_size):
                kept += 1
                continue
            kp = in_box(read_image(image), boxes[c])
            if kp is None:
                kp = np.zeros((21, 3))
                missed += 1
            else:
                detected += 1
            write_keypoints_file(path, kp, source)
    log.info("guided detection: %d view(s) detected around the last fits (%d without the hand), %d frame view(s) "
             "left to the search, %d kept", detected + missed, missed, unguided, kept)  # fmt: skip
    return GuidedCounts(detected, missed, unguided, kept)
