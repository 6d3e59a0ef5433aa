"""Random streams of the synthetic capture: one seed, one independent stream per purpose.

Every stream is ``numpy.random.default_rng([seed, stream, *ids])``, so a frame's or camera's
draws do not depend on how many frames / cameras are made before it, and one seed gives
byte-identical sessions.
"""

from __future__ import annotations

import numpy as np

# Random stream ids (first entry after the seed), one per purpose.
_RIG, _SHAPE, _MOTION, _BACKGROUND, _NOISE, _KEYPOINTS, _CALIB, _ALBEDO, _LIGHT = range(1, 10)


def rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    """The generator of one stream (``stream`` one of the ids above; ``ids``: frame, camera, ...)."""
    return np.random.default_rng([int(seed), stream, *(int(i) for i in ids)])
