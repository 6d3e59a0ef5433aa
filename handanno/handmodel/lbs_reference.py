"""The numpy LBS reference next to the layer: MANO's forward pass in plain float64 numpy.

A slow, obvious oracle for the batched layers (``handanno.handmodel.mano.ManoLayer`` and
smplx's ``MANO``): :func:`lbs` poses a MANO-format model dict. Its rotations come from
:func:`handanno.rotations.axis_angle_to_matrix`, whose arithmetic is this oracle's.

Convention:
    Axis-angle in radians, MANO joint order (0 the wrist), metres.
"""

from __future__ import annotations

import numpy as np

from handanno.check import check_shape
from handanno.data.conventions import NUM_BETAS, NUM_MANO_JOINTS
from handanno.rotations import axis_angle_to_matrix


def lbs(model: dict, full_pose: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MANO's forward pass in numpy, float64: the same maths as smplx's ``lbs``.

    Args:
        model: a MANO-format dict (``v_template, shapedirs, posedirs, J_regressor,
            weights, kintree_table``).
        full_pose: ``(B, 16, 3)`` axis-angle of every joint (global first), absolute
            (any ``hands_mean`` already added).
        betas: ``(B, 10)``.
        trans: ``(B, 3)`` metres.

    Returns:
        vertices ``(B, V, 3)`` and the 16 posed joints ``(B, 16, 3)``, metres.

    Convention:
        Eq. (1)-(4) of SMPL/MANO: ``v_shaped = T + S beta``, ``J = R_J v_shaped``,
        ``v_posed = v_shaped + P (R(theta) - I)``, then blend of the joints' rigid
        transforms with the skinning weights, plus ``trans``.
    """
    full_pose = np.asarray(full_pose, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    check_shape(full_pose, ("B", NUM_MANO_JOINTS, 3), "full_pose")
    B = full_pose.shape[0]
    check_shape(betas, (B, NUM_BETAS), "betas")
    check_shape(trans, (B, 3), "trans")
    parents = np.asarray(model["kintree_table"], dtype=np.int64)[0].copy()
    parents[0] = -1
    v_shaped = model["v_template"][None] + np.einsum("vck,bk->bvc", model["shapedirs"], betas)  # (B, V, 3)
    J = np.einsum("jv,bvc->bjc", model["J_regressor"], v_shaped)  # (B, 16, 3)
    R = axis_angle_to_matrix(full_pose)  # (B, 16, 3, 3)
    feat = (R[:, 1:] - np.eye(3)).reshape(B, -1)  # (B, 135)
    v_posed = v_shaped + np.einsum("vck,bk->bvc", np.asarray(model["posedirs"], dtype=np.float64), feat)
    G = np.zeros((B, NUM_MANO_JOINTS, 4, 4))
    for j in range(NUM_MANO_JOINTS):
        local = np.zeros((B, 4, 4))
        local[:, :3, :3] = R[:, j]
        local[:, :3, 3] = J[:, j] - (J[:, parents[j]] if j > 0 else 0.0)
        local[:, 3, 3] = 1.0
        G[:, j] = local if j == 0 else G[:, parents[j]] @ local
    posed_joints = G[:, :, :3, 3].copy()
    G[:, :, :3, 3] -= np.einsum("bjcd,bjd->bjc", G[:, :, :3, :3], J)  # transforms relative to the rest pose
    T = np.einsum("vj,bjcd->bvcd", model["weights"], G)  # (B, V, 4, 4)
    verts = np.einsum("bvcd,bvd->bvc", T[:, :, :3, :3], v_posed) + T[:, :, :3, 3]
    return verts + trans[:, None], posed_joints + trans[:, None]
