"""The MANO hand model: its data (plain arrays), linear blend skinning, and a thin torch layer.

This module does no file I/O: :mod:`handanno.handmodel.model_io` reads the model files
into a :class:`HandModelData`, and :class:`ManoLayer` turns MANO parameters into a mesh and
keypoints with the functions below.

Convention:
    - ``pose`` is ``(B, 48)`` axis-angle in radians, as FreiHAND stores it: 3 numbers for the
      global rotation of the root (wrist) joint, then 15 joints x 3 relative to
      ``hands_mean`` (smplx ``MANO(use_pca=False, flat_hand_mean=False)``). The rotation
      applied to joint ``k`` is ``pose[:, 3k:3k+3] + [0, 0, 0, *hands_mean][3k:3k+3]``.
    - ``betas`` is ``(B, 10)`` shape coefficients (unitless); ``trans`` is ``(B, 3)`` metres,
      added to every vertex and joint after skinning (the global rotation is about the
      root joint of the shaped rest pose, not about the origin).
    - Outputs are in metres, in the model's frame (the frame of ``v_template``).
    - Joints: ``mano_joints`` are the 16 MANO joints in MANO order (0 wrist, index 1-3,
      middle 4-6, pinky 7-9, ring 10-12, thumb 13-15); ``joints`` are the 21 FreiHAND
      keypoints: ``cat([mano_joints, vertices[:, tip_vertex_ids]])[:, FREIHAND_FROM_EXTENDED]``
      (see :mod:`handanno.data.conventions`).

The maths is MANO's (Romero et al., "Embodied Hands", SIGGRAPH Asia 2017), which reuses
SMPL's skinning (Loper et al., "SMPL", SIGGRAPH Asia 2015); the implementation follows
smplx ``lbs.py`` and is tested against ``smplx.MANO`` as the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from handanno.check import check_shape
from handanno.data.conventions import (
    FREIHAND_FROM_EXTENDED,
    HAND_SIDES,
    MANO_PARENTS,
    NUM_BETAS,
    NUM_MANO_JOINTS,
    NUM_POSE,
    TIP_VERTEX_IDS,
)
from handanno.errors import HandannoError
from handanno.rotations import axis_angle_to_matrix_torch

NUM_POSE_BASIS = (NUM_MANO_JOINTS - 1) * 9  # 135: (R - I) of the 15 non-root joints

#: The keys a MANO-format model dict must hold (as in ``MANO_RIGHT.pkl``).
REQUIRED_KEYS = (
    "v_template",
    "f",
    "J_regressor",
    "weights",
    "posedirs",
    "shapedirs",
    "kintree_table",
    "hands_components",
    "hands_mean",
)


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class HandModelData:
    """A MANO-format hand model as plain numpy arrays (read-only), float64 unless noted.

    Build it with :meth:`from_arrays` (which checks every shape) or load it with
    :func:`handanno.handmodel.model_io.load_hand_model`.

    Attributes:
        side: ``"right"`` or ``"left"``.
        name: the model's name, e.g. ``"MANO"`` or ``"handanno-open-hand"``.
        is_mano: True for the licensed MANO files.
        v_template: ``(V, 3)`` rest-pose vertices, metres.
        faces: ``(F, 3)`` int64 vertex indices of the triangles.
        J_regressor: ``(16, V)`` dense; rest joints are ``J_regressor @ vertices``.
        weights: ``(V, 16)`` skinning weights.
        posedirs: ``(V, 3, 135)`` pose blend shapes, metres per unit of ``(R - I)``.
        shapedirs: ``(V, 3, 10)`` shape blend shapes, metres per unit beta.
        kintree_table: ``(2, 16)`` int64; row 0 the parent of each joint (-1 for the root),
            row 1 the joint ids.
        hands_components: ``(45, 45)`` PCA basis of the articulation (rows are components).
        hands_mean: ``(45,)`` mean articulation, axis-angle radians.
        tip_vertex_ids: ``(5,)`` int64 fingertip vertices: thumb, index, middle, ring, pinky.
        source: where the model was loaded from (a path or a description).
    """

    side: str
    name: str
    is_mano: bool
    v_template: np.ndarray
    faces: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    posedirs: np.ndarray
    shapedirs: np.ndarray
    kintree_table: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    tip_vertex_ids: np.ndarray
    source: str

    @property
    def num_verts(self) -> int:
        """V, the number of vertices."""
        return int(self.v_template.shape[0])

    @property
    def parents(self) -> np.ndarray:
        """``(16,)`` int64 parent of each joint, -1 for the root."""
        return self.kintree_table[0]

    @classmethod
    def from_arrays(
        cls, d: Mapping[str, Any], side: str, name: str, is_mano: bool, source: str
    ) -> HandModelData:
        """Check and copy a MANO-format dict of arrays into a :class:`HandModelData`.

        ``d`` holds the MANO keys (:data:`REQUIRED_KEYS`; ``J_regressor`` may be a scipy
        sparse matrix) and optionally ``tip_vertex_ids`` (default
        :data:`handanno.data.conventions.TIP_VERTEX_IDS`). Other keys are ignored.
        MANO writes the root's parent in ``kintree_table`` as 2**32 - 1; it becomes -1.

        Args:
            d: the model's arrays, e.g. from :func:`~handanno.handmodel.model_io.read_model_pickle`.
            side: ``"right"`` or ``"left"``.
            name: the model's name.
            is_mano: whether these are the licensed MANO files.
            source: where ``d`` came from; every error message names it.

        Raises:
            HandannoError: a key is missing or has the wrong shape or values; the message
                names the key and ``source``.
        """
        if side not in HAND_SIDES:
            raise HandannoError(f"{source}: side must be 'right' or 'left', got {side!r}")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise HandannoError(
                f"{source}: not a MANO-format hand model, key(s) {', '.join(missing)} missing "
                f"(a MANO model has {', '.join(REQUIRED_KEYS)})"
            )

        def num(key: str, dtype: type) -> np.ndarray:
            value = d[key]
            if hasattr(value, "toarray"):  # scipy.sparse
                value = value.toarray()
            try:
                arr = np.array(value, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise HandannoError(f"{source}: {key} is not a numeric array ({exc})") from None
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise HandannoError(f"{source}: {key} holds NaN or inf values")
            return arr

        v_template = num("v_template", np.float64)
        check_shape(v_template, ("V", 3), f"{source}: v_template")
        V = v_template.shape[0]
        faces = num("f", np.int64)
        check_shape(faces, ("F", 3), f"{source}: f")
        J_regressor = num("J_regressor", np.float64)
        check_shape(J_regressor, (NUM_MANO_JOINTS, V), f"{source}: J_regressor")
        weights = num("weights", np.float64)
        check_shape(weights, (V, NUM_MANO_JOINTS), f"{source}: weights")
        posedirs = num("posedirs", np.float64)
        check_shape(posedirs, (V, 3, NUM_POSE_BASIS), f"{source}: posedirs")
        shapedirs = num("shapedirs", np.float64)
        check_shape(shapedirs, (V, 3, NUM_BETAS), f"{source}: shapedirs")
        kintree_table = num("kintree_table", np.int64)
        check_shape(kintree_table, (2, NUM_MANO_JOINTS), f"{source}: kintree_table")
        hands_components = num("hands_components", np.float64)
        check_shape(hands_components, (NUM_POSE - 3, NUM_POSE - 3), f"{source}: hands_components")
        hands_mean = num("hands_mean", np.float64)
        check_shape(hands_mean, (NUM_POSE - 3,), f"{source}: hands_mean")
        tips = num("tip_vertex_ids", np.int64) if "tip_vertex_ids" in d else TIP_VERTEX_IDS.copy()
        check_shape(tips, (5,), f"{source}: tip_vertex_ids")

        if faces.size and (faces.min() < 0 or faces.max() >= V):
            raise HandannoError(f"{source}: f indexes vertices outside 0..{V - 1}")
        if tips.min() < 0 or tips.max() >= V:
            raise HandannoError(f"{source}: tip_vertex_ids {tips.tolist()} must lie in 0..{V - 1}")
        kintree_table[0, 0] = -1  # MANO stores the root's parent as uint32 2**32 - 1
        if not np.array_equal(kintree_table[0], MANO_PARENTS):
            raise HandannoError(
                f"{source}: kintree_table's parents {kintree_table[0].tolist()} are not MANO's "
                f"{MANO_PARENTS.tolist()}; handanno's joint order needs MANO's kinematic tree"
            )

        return cls(
            side=side,
            name=str(name),
            is_mano=bool(is_mano),
            v_template=_frozen(v_template),
            faces=_frozen(faces),
            J_regressor=_frozen(J_regressor),
            weights=_frozen(weights),
            posedirs=_frozen(posedirs),
            shapedirs=_frozen(shapedirs),
            kintree_table=_frozen(kintree_table),
            hands_components=_frozen(hands_components),
            hands_mean=_frozen(hands_mean),
            tip_vertex_ids=_frozen(tips),
            source=str(source),
        )


@dataclass(frozen=True)
class HandOutput:
    """What :class:`ManoLayer` returns.

    Attributes:
        vertices: ``(B, V, 3)`` posed, translated vertices, metres.
        joints: ``(B, 21, 3)`` keypoints in FreiHAND order, metres.
        mano_joints: ``(B, 16, 3)`` the MANO joints in MANO order, metres.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    mano_joints: torch.Tensor


# ---------------------------------------------------------------------------------------
# Functional core: tensors in, tensors out (follows smplx lbs.py; rotations: handanno.rotations).
# ---------------------------------------------------------------------------------------


def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """Per-vertex shape offsets ``B_S(betas)`` (Eq. 4, MANO).

    Args:
        betas: ``(B, S)`` shape coefficients.
        shapedirs: ``(V, 3, S)`` shape blend shapes, metres per unit beta.

    Returns:
        ``(B, V, 3)`` offsets, metres.
    """
    # offsets[b, v, k] = sum_s betas[b, s] * shapedirs[v, k, s]
    return torch.einsum("bs,vks->bvk", betas, shapedirs)


def vertices_to_joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joints regressed from vertices, ``J = J_regressor @ vertices`` (Eq. 10, SMPL).

    Args:
        J_regressor: ``(J, V)``.
        vertices: ``(B, V, 3)`` metres.

    Returns:
        ``(B, J, 3)`` metres.
    """
    # joints[b, j, k] = sum_v J_regressor[j, v] * vertices[b, v, k]
    return torch.einsum("jv,bvk->bjk", J_regressor, vertices)


def rigid_transforms(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain the joint rotations down the kinematic tree (Eq. 4, SMPL).

    Args:
        rot_mats: ``(B, J, 3, 3)`` rotation of each joint relative to its parent.
        joints: ``(B, J, 3)`` rest-pose joint positions, metres.
        parents: the parent of each joint, ``parents[0] == -1`` and ``parents[j] < j``.

    Returns:
        ``posed_joints`` ``(B, J, 3)`` metres and ``rel_transforms`` ``(B, J, 4, 4)``: the
        world transform of each joint with its rest position removed (``G'_k`` of SMPL), so
        that a rest-pose point ``x`` skinned to joint ``k`` lands at ``G'_k @ [x, 1]``.
    """
    B, J = joints.shape[:2]
    check_shape(rot_mats, (B, J, 3, 3), "rot_mats")
    # Python-int indexing only: no index tensors to copy to the GPU on every call.
    rel_joints = torch.stack(
        [joints[:, 0]] + [joints[:, j] - joints[:, parents[j]] for j in range(1, J)], dim=1
    )  # (B, J, 3) each joint relative to its parent
    local = torch.cat(
        [F.pad(rot_mats, (0, 0, 0, 1)), F.pad(rel_joints[..., None], (0, 0, 0, 1), value=1.0)], dim=3
    )  # (B, J, 4, 4) [R | t; 0 0 0 1]
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[parents[j]] @ local[:, j])  # (B, 4, 4)
    world = torch.stack(chain, dim=1)  # (B, J, 4, 4)
    posed_joints = world[:, :, :3, 3]  # (B, J, 3)
    # G'_k = G_k - [0 | G_k[:3, :3] @ j_k]: removes the rest position of joint k
    offset = torch.einsum("bjrc,bjc->bjr", world[:, :, :3, :3], joints)  # (B, J, 3)
    offset_h = F.pad(offset, (0, 1))[..., None]  # (B, J, 4, 1), last row 0
    rel = torch.cat([world[..., :3], world[..., 3:] - offset_h], dim=3)  # (B, J, 4, 4)
    return posed_joints, rel  # (B, J, 3), (B, J, 4, 4)


def mano_forward(
    full_pose: torch.Tensor,
    betas: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs_flat: torch.Tensor,
    J_regressor: torch.Tensor | None,
    lbs_weights: torch.Tensor,
    parents: Sequence[int],
    joints_rest: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear blend skinning of the MANO model, ``M(betas, theta)`` (Eq. 1-2, MANO).

    Args:
        full_pose: ``(B, 16 * 3)`` absolute axis-angle of every joint (``hands_mean``
            already added), radians.
        betas: ``(B, 10)``.
        v_template: ``(V, 3)`` metres.
        shapedirs: ``(V, 3, 10)``.
        posedirs_flat: ``(135, V * 3)``, i.e. ``posedirs.reshape(V * 3, 135).T``.
        J_regressor: ``(16, V)``.
        lbs_weights: ``(V, 16)``.
        parents: the 16 parents, ``parents[0] == -1``.
        joints_rest: ``(B, 16, 3)`` the shaped rest joints, when the caller has them (then
            ``J_regressor`` may be None and ``v_template`` may be any subset of the
            vertices, with the matching rows of ``shapedirs``, ``posedirs_flat`` and
            ``lbs_weights``).

    Returns:
        ``vertices`` ``(B, V, 3)`` and ``joints`` ``(B, 16, 3)`` in metres, before any
        translation.
    """
    B = full_pose.shape[0]
    V = v_template.shape[0]
    J = lbs_weights.shape[1]
    check_shape(full_pose, (B, J * 3), "full_pose")
    check_shape(betas, (B, "S"), "betas")

    v_shaped = v_template + blend_shapes(betas, shapedirs)  # (B, V, 3)  Eq. 2 without B_P
    if joints_rest is None:
        joints = vertices_to_joints(J_regressor, v_shaped)  # (B, J, 3)  Eq. 10 (SMPL)
    else:
        check_shape(joints_rest, (B, J, 3), "joints_rest")
        joints = joints_rest

    rot_mats = axis_angle_to_matrix_torch(full_pose.reshape(B * J, 3)).view(B, J, 3, 3)  # (B, J, 3, 3)
    eye = torch.eye(3, dtype=full_pose.dtype, device=full_pose.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(B, (J - 1) * 9)  # (B, 135)  R_n(theta) - R_n(theta*)
    pose_offsets = (pose_feature @ posedirs_flat).view(B, V, 3)  # (B, V, 3)  Eq. 3 (MANO): B_P
    v_posed = v_shaped + pose_offsets  # (B, V, 3)  Eq. 2 (MANO): T_P

    posed_joints, rel = rigid_transforms(rot_mats, joints, parents)  # (B, J, 3), (B, J, 4, 4)
    # Eq. 7 (SMPL): each vertex moves by the weighted sum of its joints' transforms
    T = torch.einsum("vj,bjrc->bvrc", lbs_weights, rel[:, :, :3, :])  # (B, V, 3, 4)
    vertices = torch.einsum("bvrc,bvc->bvr", T[..., :3], v_posed) + T[..., 3]  # (B, V, 3)
    return vertices, posed_joints


# ---------------------------------------------------------------------------------------
# The layer: buffers + the functions above.
# ---------------------------------------------------------------------------------------


class ManoLayer(torch.nn.Module):
    """MANO as a torch module: FreiHAND-style ``(pose, betas, trans)`` to mesh and keypoints.

    Equals ``smplx.MANO(data_struct=..., use_pca=False, flat_hand_mean=False)`` called as
    ``(betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans)`` (tested),
    plus the 21 FreiHAND keypoints. The layer has buffers only, no parameters, and none of
    them is saved in a ``state_dict`` (so checkpoints never carry the MANO arrays).

    Convention:
        See the module docstring: ``pose`` ``(B, 48)`` radians relative to ``hands_mean``,
        ``betas`` ``(B, 10)``, ``trans`` ``(B, 3)`` metres; outputs in metres; ``joints`` in
        FreiHAND order. Every input must have the same ``B``: expand a shared ``betas``
        explicitly, ``betas.expand(B, -1)``.

    Args:
        model: the hand model's arrays.
        dtype: the float type of the buffers (and of the inputs forward expects).

    Attributes:
        side: ``"right"`` or ``"left"``.
        name: the model's name.
        is_mano: whether the model is the licensed MANO.
        faces: ``(F, 3)`` long buffer.
        num_verts: V.
        device: where the buffers are (there are no parameters: ``next(layer.parameters())``
            fails; use this).
        dtype: the float type of the buffers.
    """

    def __init__(self, model: HandModelData, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not dtype.is_floating_point:
            raise HandannoError(f"ManoLayer dtype must be a float type, got {dtype}")
        self.side = model.side
        self.name = model.name
        self.is_mano = model.is_mano
        self.source = model.source  # the file it was read from (its pose statistics are found there)
        self.num_verts = model.num_verts
        self._parents = tuple(int(p) for p in model.parents)
        V = self.num_verts

        def buf(name: str, arr: np.ndarray, dt: torch.dtype = dtype) -> None:
            # not persistent: checkpoints of networks holding this layer must not carry the
            # model's arrays (the MANO licence forbids redistributing them)
            self.register_buffer(name, torch.tensor(np.asarray(arr), dtype=dt), persistent=False)

        buf("faces", model.faces, torch.long)  # (F, 3)
        buf("v_template", model.v_template)  # (V, 3)
        buf("shapedirs", model.shapedirs)  # (V, 3, 10)
        buf("posedirs_flat", model.posedirs.reshape(V * 3, NUM_POSE_BASIS).T)  # (135, V * 3)
        buf("J_regressor", model.J_regressor)  # (16, V)
        buf("lbs_weights", model.weights)  # (V, 16)
        buf("pose_mean", np.concatenate([np.zeros(3), model.hands_mean]))  # (48,)
        buf("tip_vertex_ids", model.tip_vertex_ids, torch.long)  # (5,)
        buf("freihand_from_extended", FREIHAND_FROM_EXTENDED, torch.long)  # (21,)
        # The keypoints alone need the regressed joints and the 5 tip vertices: precompute
        # their shape blend (J_regressor is linear) so keypoint-only fitting skips the mesh.
        tips = np.asarray(model.tip_vertex_ids)
        buf("J_template", model.J_regressor @ model.v_template)  # (16, 3)
        buf("J_shapedirs", np.einsum("jv,vcs->jcs", model.J_regressor, model.shapedirs))  # (16, 3, 10)
        buf("tip_template", model.v_template[tips])  # (5, 3)
        buf("tip_shapedirs", model.shapedirs[tips])  # (5, 3, 10)
        buf("tip_posedirs_flat", model.posedirs[tips].reshape(len(tips) * 3, NUM_POSE_BASIS).T)  # (135, 15)
        buf("tip_weights", model.weights[tips])  # (5, 16)

    @property
    def device(self) -> torch.device:
        """The device of the buffers (the layer has no parameters to ask)."""
        return self.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        """The float type of the buffers, which forward's inputs must have."""
        return self.v_template.dtype

    def extra_repr(self) -> str:
        """Name, side and vertex count, for ``print(layer)``."""
        return f"name={self.name!r}, side={self.side!r}, num_verts={self.num_verts}"

    def _check_input(self, x: torch.Tensor, what: str) -> None:
        ref = self.v_template
        if x.dtype != ref.dtype or x.device != ref.device:
            raise HandannoError(
                f"{what} is {x.dtype} on {x.device} but the hand model layer is {ref.dtype} on "
                f"{ref.device}; move one of them (layer.to(device, dtype) or tensor.to(...))"
            )

    def _check_pose_inputs(self, pose: torch.Tensor, betas: torch.Tensor, trans: torch.Tensor) -> None:
        check_shape(pose, ("B", NUM_POSE), "pose")
        B = pose.shape[0]
        check_shape(betas, (B, NUM_BETAS), "betas")
        check_shape(trans, (B, 3), "trans")
        for x, what in ((pose, "pose"), (betas, "betas"), (trans, "trans")):
            self._check_input(x, what)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor, trans: torch.Tensor) -> HandOutput:
        """Pose and shape the hand.

        Args:
            pose: ``(B, 48)`` axis-angle radians: global rotation, then 15 joints relative to
                ``hands_mean``.
            betas: ``(B, 10)`` shape coefficients.
            trans: ``(B, 3)`` translation, metres.

        Returns:
            :class:`HandOutput` with ``vertices`` ``(B, V, 3)``, ``joints`` ``(B, 21, 3)``
            (FreiHAND order) and ``mano_joints`` ``(B, 16, 3)``, all in metres.

        Raises:
            HandannoError: a shape, dtype or device does not match.
        """
        self._check_pose_inputs(pose, betas, trans)

        full_pose = pose + self.pose_mean  # (B, 48)
        vertices, mano_joints = mano_forward(
            full_pose,
            betas,
            self.v_template,
            self.shapedirs,
            self.posedirs_flat,
            self.J_regressor,
            self.lbs_weights,
            self._parents,
        )  # (B, V, 3), (B, 16, 3)
        vertices = vertices + trans[:, None, :]  # (B, V, 3)
        mano_joints = mano_joints + trans[:, None, :]  # (B, 16, 3)
        tips = vertices[:, self.tip_vertex_ids]  # (B, 5, 3)
        extended = torch.cat([mano_joints, tips], dim=1)  # (B, 21, 3) MANO order + tips
        joints = extended[:, self.freihand_from_extended]  # (B, 21, 3) FreiHAND order
        return HandOutput(vertices=vertices, joints=joints, mano_joints=mano_joints)

    def flat_keypoints(self, betas: np.ndarray | None = None) -> np.ndarray:
        """``(21, 3)`` float64 keypoints of the flat hand (every joint at articulation 0), metres, at the origin.

        ``betas`` ``(10,)`` (None: the mean shape, computed once and kept). The skeleton the
        anatomical axes, bone proportions and joint ranges are measured on.
        """
        key = (self.pose_mean.device, self.dtype)
        if betas is None and getattr(self, "_flat_cache", (None,))[0] == key:
            return self._flat_cache[1].copy()
        b = torch.zeros(1, 10) if betas is None else torch.as_tensor(np.asarray(betas, np.float64).reshape(1, 10))
        with torch.no_grad():
            zeros = torch.zeros(1, 3, dtype=self.dtype, device=self.pose_mean.device)
            rest = self.keypoints(-self.pose_mean[None], b.to(dtype=self.dtype, device=zeros.device), zeros)[0]
        out = rest.double().cpu().numpy()
        if betas is None:
            self._flat_cache = (key, out.copy())
        return out

    def keypoints(self, pose: torch.Tensor, betas: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """The 21 FreiHAND keypoints only, ``(B, 21, 3)`` metres: equal to ``forward(...).joints``.

        Skins just the 5 fingertip vertices (the 16 joints come from the kinematic chain),
        so it costs a small fraction of the full mesh; the fitter's keypoint stages use it.
        """
        self._check_pose_inputs(pose, betas, trans)
        full_pose = pose + self.pose_mean  # (B, 48)
        tips, mano_joints = mano_forward(
            full_pose,
            betas,
            self.tip_template,
            self.tip_shapedirs,
            self.tip_posedirs_flat,
            None,
            self.tip_weights,
            self._parents,
            joints_rest=self.J_template + blend_shapes(betas, self.J_shapedirs),
        )  # (B, 5, 3), (B, 16, 3)
        extended = torch.cat([mano_joints, tips], dim=1) + trans[:, None, :]  # (B, 21, 3)
        return extended[:, self.freihand_from_extended]  # (B, 21, 3) FreiHAND order

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """The 16 joints ``J(betas)`` of the shaped template, before articulation and translation.

        Joint 0 is the root the global rotation turns about: the posed root is always
        ``rest_joints(betas)[:, 0] + trans``, and changing the global rotation by ``R`` turns
        every output point ``x`` into ``R @ (x - root) + root`` with ``root`` the posed root.

        Args:
            betas: ``(B, 10)``.

        Returns:
            ``(B, 16, 3)`` metres, MANO joint order.
        """
        check_shape(betas, ("B", NUM_BETAS), "betas")
        self._check_input(betas, "betas")
        v_shaped = self.v_template + blend_shapes(betas, self.shapedirs)  # (B, V, 3)
        return vertices_to_joints(self.J_regressor, v_shaped)  # (B, 16, 3)
