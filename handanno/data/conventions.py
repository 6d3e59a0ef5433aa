"""The lookup tables of the FreiHAND keypoint order and the MANO hand model, in one place.

Convention:
    - 21 keypoints in FreiHAND order: 0 wrist; thumb 1-4, index 5-8, middle 9-12,
      ring 13-16, pinky 17-20, each finger from the knuckle (MCP/CMC) to the tip.
    - MANO has 16 joints: 0 wrist, index 1-3, middle 4-6, pinky 7-9, ring 10-12,
      thumb 13-15 (each from the knuckle outwards), and 778 vertices.
    - Fingertips are MANO vertices 744 (thumb), 320 (index), 443 (middle), 555 (ring),
      672 (pinky). The field disagrees on these (smplx uses 744/320/443/554/671, manopth
      745/317/444/556/673); these are handanno's, pinned by tests. The open hand model
      puts its own fingertip vertices at the same indices.
    - Units: metres for 3D, pixels for 2D.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21
NUM_MANO_JOINTS = 16
NUM_VERTS = 778
NUM_BETAS = 10
NUM_POSE = 48  # 3 global axis-angle + 15 joints x 3 axis-angle
NUM_MANO_PARAMS_FREIHAND = 61  # pose 48, betas 10, uv_root 2, scale 1

JOINT_NAMES = (
    "wrist",
    "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")

# Parent of each FreiHAND keypoint (-1 for the wrist): the skeleton's bones.
FREIHAND_PARENTS = np.array(
    [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19], dtype=np.int64
)
BONES = tuple((int(p), c) for c, p in enumerate(FREIHAND_PARENTS) if p >= 0)  # 20 (parent, child)

# MANO joint index -> FreiHAND keypoint index (DESIGN.md).
MANO_TO_FREIHAND = {0: 0, 1: 5, 2: 6, 3: 7, 4: 9, 5: 10, 6: 11, 7: 17, 8: 18, 9: 19,
                    10: 13, 11: 14, 12: 15, 13: 1, 14: 2, 15: 3}  # fmt: skip

# MANO's kinematic tree: parent of each of the 16 joints.
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)

# Fingertip vertex ids in FreiHAND finger order (thumb, index, middle, ring, pinky).
TIP_VERTEX_IDS = np.array([744, 320, 443, 555, 672], dtype=np.int64)

# "Extended" MANO order: the 16 joints, then the 5 tips (thumb, index, middle, ring, pinky).
# FreiHAND keypoint i is extended[FREIHAND_FROM_EXTENDED[i]].
FREIHAND_FROM_EXTENDED = np.array(
    [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20], dtype=np.int64
)

# Root keypoint used by FreiHAND's uv_root / scale: the middle finger's MCP.
ROOT_KEYPOINT = 9
# FreiHAND's scale keypoints: |xyz[9] - xyz[10]|.
SCALE_KEYPOINTS = (9, 10)

# Left/right mirror: x -> -x in the hand's frame.
HAND_SIDES = ("right", "left")


def _check_tables() -> None:
    """Self-consistency of the tables above (run at import; cheap)."""
    for mano_j, fh in MANO_TO_FREIHAND.items():
        assert FREIHAND_FROM_EXTENDED[fh] == mano_j
    for finger, fh_tip in enumerate((4, 8, 12, 16, 20)):
        assert FREIHAND_FROM_EXTENDED[fh_tip] == NUM_MANO_JOINTS + finger
    assert sorted(FREIHAND_FROM_EXTENDED.tolist()) == list(range(NUM_JOINTS))


_check_tables()
