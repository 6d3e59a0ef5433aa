"""Initial camera and board poses from per-camera board poses: co-visibility graph and spanning tree.

Every camera sees the board at some instants (file stems) and knows the board's pose in
its own frame there. Two cameras that see the board at the same instant know their
relative pose. The cameras and shared instants form the co-visibility graph (edge weight =
number of shared views); a maximum spanning tree from the root camera chains the
best-connected pairs, each edge's relative pose a robust average over its shared views.

Convention:
    - Poses map "from" frame to "to" frame: ``x_to = R_to_from @ x_from + t_to_from``,
      metres. ``T_a_from_b`` composes as ``T_a_from_c = T_a_from_b @ T_b_from_c``.
    - The root camera's frame is the world during initialisation (``R = I, t = 0``).
    - Camera index ``c`` follows the order of the names given (natural order in the pipeline).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from handanno.calibration.camera import natural_key
from handanno.check import check_shape
from handanno.errors import HandannoError

log = logging.getLogger(__name__)


def compose(R_ab: np.ndarray, t_ab: np.ndarray, R_bc: np.ndarray, t_bc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_a_from_c = T_a_from_b @ T_b_from_c``; ``R (*, 3, 3)``, ``t (*, 3)``."""
    return R_ab @ R_bc, (R_ab @ t_bc[..., None])[..., 0] + t_ab


def invert(R_ab: np.ndarray, t_ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_b_from_a`` from ``T_a_from_b``; ``R (*, 3, 3)``, ``t (*, 3)``."""
    R_ba = np.swapaxes(R_ab, -1, -2)
    return R_ba, -(R_ba @ t_ab[..., None])[..., 0]


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """``(*)`` geodesic angle between rotations ``(*, 3, 3)``, degrees.

    Example:
        >>> from scipy.spatial.transform import Rotation
        >>> float(rotation_angle_deg(np.eye(3), Rotation.from_rotvec([0, 0, 0.1]).as_matrix())).__round__(4)
        5.7296
    """
    rel = np.swapaxes(R_a, -1, -2) @ R_b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    axis = np.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1
    )
    sin = np.linalg.norm(axis, axis=-1) / 2.0  # atan2 stays accurate near 0, where arccos loses half the digits
    return np.rad2deg(np.arctan2(sin, cos))


def average_rotations(Rs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Chordal L2 mean of rotations via quaternions (Markley et al. 2007).

    The mean quaternion is the eigenvector of ``sum_i w_i q_i q_i^T`` with the largest
    eigenvalue; it is independent of each quaternion's sign.

    Args:
        Rs: ``(N, 3, 3)``.
        weights: ``(N,)`` non-negative, or ``None`` for equal weights.

    Returns:
        ``(3, 3)`` the mean rotation.
    """
    from scipy.spatial.transform import Rotation

    check_shape(Rs, ("N", 3, 3), "Rs")
    q = Rotation.from_matrix(np.array(Rs, np.float64)).as_quat()  # (N, 4)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, np.float64)
    M = np.einsum("n,ni,nj->ij", w, q, q)  # (4, 4) sum_n w_n q_n q_n^T
    _, vecs = np.linalg.eigh(M)
    return Rotation.from_quat(vecs[:, -1]).as_matrix()


def robust_average_pose(
    Rs: np.ndarray, ts: np.ndarray, inlier_deg: float = 2.0, inlier_k: float = 3.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Robust mean of poses: quaternion mean of the rotations after trimming, median translation.

    Rotations further than ``max(inlier_deg, inlier_k * median deviation)`` from a first
    chordal mean are dropped before a second mean; the translation is the per-axis median
    over the kept poses.

    Args:
        Rs: ``(N, 3, 3)``.
        ts: ``(N, 3)`` metres.
        inlier_deg: rotation deviations under this are always kept, degrees.
        inlier_k: trim factor on the median deviation.

    Returns:
        ``R (3, 3)``, ``t (3,)`` and the number of poses kept.
    """
    check_shape(Rs, ("N", 3, 3), "Rs")
    check_shape(ts, (Rs.shape[0], 3), "ts")
    R0 = average_rotations(Rs)
    dev = rotation_angle_deg(R0[None], Rs)  # (N,)
    keep = dev <= max(inlier_deg, inlier_k * float(np.median(dev)))
    R = average_rotations(Rs[keep])
    t = np.median(ts[keep], axis=0)
    return R, t, int(keep.sum())


def covisibility(views_per_camera: Sequence[set[str]]) -> np.ndarray:
    """``(C, C)`` int matrix: number of views (stems) each pair of cameras shares; 0 diagonal."""
    C = len(views_per_camera)
    W = np.zeros((C, C), np.int64)
    for a in range(C):
        for b in range(a + 1, C):
            W[a, b] = W[b, a] = len(views_per_camera[a] & views_per_camera[b])
    return W


def maximum_spanning_tree(weights: np.ndarray, root: int = 0) -> tuple[tuple[int, int], ...]:
    """Prim's algorithm on a co-visibility matrix: heaviest edges first, grown from ``root``.

    Args:
        weights: ``(C, C)`` symmetric non-negative; 0 means no edge.
        root: the starting camera.

    Returns:
        Edges ``(parent, child)`` in the order the tree reached each child (so a parent
        always comes before its children); cameras not reachable from ``root`` are in no edge.

    Example:
        >>> W = np.array([[0, 5, 1], [5, 0, 9], [1, 9, 0]])
        >>> maximum_spanning_tree(W)
        ((0, 1), (1, 2))
    """
    check_shape(weights, ("C", "C"), "weights")
    C = weights.shape[0]
    in_tree = np.zeros(C, bool)
    in_tree[root] = True
    heap = [(-int(weights[root, c]), root, c) for c in range(C) if c != root and weights[root, c] > 0]
    heapq.heapify(heap)
    edges = []
    while heap:
        _, parent, child = heapq.heappop(heap)
        if in_tree[child]:
            continue
        in_tree[child] = True
        edges.append((parent, child))
        for c in range(C):
            if not in_tree[c] and weights[child, c] > 0:
                heapq.heappush(heap, (-int(weights[child, c]), child, c))
    return tuple(edges)


@dataclass(frozen=True)
class ExtrinsicsInit:
    """Initial poses of all cameras and boards, in the root camera's frame.

    Attributes:
        camera_names: ``C`` names, index order of the arrays.
        R_cam_from_root: ``(C, 3, 3)``; t_cam_from_root: ``(C, 3)`` metres.
        stems: ``V`` view stems seen by at least one camera, natural order.
        R_root_from_board: ``(V, 3, 3)``; t_root_from_board: ``(V, 3)`` metres.
        tree: ``(parent, child, shared_views)`` edges of the spanning tree.
        covisibility: ``(C, C)`` shared view counts.
    """

    camera_names: tuple[str, ...]
    R_cam_from_root: np.ndarray
    t_cam_from_root: np.ndarray
    stems: tuple[str, ...]
    R_root_from_board: np.ndarray
    t_root_from_board: np.ndarray
    tree: tuple[tuple[int, int, int], ...]
    covisibility: np.ndarray


BoardPoses = Mapping[str, tuple[np.ndarray, np.ndarray]]  # stem -> (R_cam_from_board, t_cam_from_board)


def initialize_extrinsics(
    camera_names: Sequence[str], board_poses: Sequence[BoardPoses], root: int = 0
) -> ExtrinsicsInit:
    """Chain relative camera poses along a maximum spanning tree of the co-visibility graph.

    Args:
        camera_names: ``C`` names (for messages and the result).
        board_poses: per camera, stem -> ``(R_cam_from_board (3, 3), t_cam_from_board (3,))``.
        root: index of the camera whose frame is the world (identity pose).

    Returns:
        The :class:`ExtrinsicsInit`.

    Raises:
        HandannoError: some cameras share no board view (same stem) with the root's
            group; the message names them.
    """
    C = len(camera_names)
    if len(board_poses) != C:
        raise HandannoError(f"initialize_extrinsics: {C} names but {len(board_poses)} pose sets")
    views = [set(p) for p in board_poses]
    W = covisibility(views)
    edges = maximum_spanning_tree(W, root)
    reached = {root} | {child for _, child in edges}
    if len(reached) < C:
        lost = [camera_names[c] for c in range(C) if c not in reached]
        group = [camera_names[c] for c in sorted(reached)]
        raise HandannoError(
            f"camera(s) {', '.join(lost)} share no board view with the rest of the rig "
            f"(connected to {camera_names[root]}: {', '.join(group)}); views are matched by file stem, so take "
            "images where the board is seen at the same instant by one of them and a connected camera"
        )
    R_cam = np.zeros((C, 3, 3))
    t_cam = np.zeros((C, 3))
    R_cam[root] = np.eye(3)
    tree = []
    for parent, child in edges:
        shared = sorted(views[parent] & views[child], key=natural_key)
        # T_child_from_parent = T_child_from_board @ T_board_from_parent, per shared view
        Rp = np.stack([board_poses[parent][s][0] for s in shared])  # (S, 3, 3)
        tp = np.stack([board_poses[parent][s][1] for s in shared])  # (S, 3)
        Rc = np.stack([board_poses[child][s][0] for s in shared])
        tc = np.stack([board_poses[child][s][1] for s in shared])
        R_rel, t_rel = compose(Rc, tc, *invert(Rp, tp))  # (S, 3, 3), (S, 3)
        R_cp, _, kept = robust_average_pose(R_rel, t_rel)
        # translations again with the averaged rotation: t = t_child - R_cp t_parent
        t_cp = np.median(tc - (R_cp @ tp[..., None])[..., 0], axis=0)
        R_cam[child], t_cam[child] = compose(R_cp, t_cp, R_cam[parent], t_cam[parent])
        tree.append((parent, child, len(shared)))
        log.debug(
            "tree edge %s -> %s: %d shared views, %d kept", camera_names[parent], camera_names[child], len(shared), kept
        )

    stems = tuple(sorted(set().union(*views), key=natural_key))
    R_board = np.zeros((len(stems), 3, 3))
    t_board = np.zeros((len(stems), 3))
    for v, stem in enumerate(stems):
        Rs, ts = [], []
        for c in range(C):
            if stem in board_poses[c]:
                R_cb, t_cb = board_poses[c][stem]
                # T_root_from_board = T_root_from_cam @ T_cam_from_board
                R_rb, t_rb = compose(*invert(R_cam[c], t_cam[c]), np.asarray(R_cb), np.asarray(t_cb))
                Rs.append(R_rb)
                ts.append(t_rb)
        R_board[v], t_board[v], _ = robust_average_pose(np.stack(Rs), np.stack(ts))
    return ExtrinsicsInit(tuple(camera_names), R_cam, t_cam, stems, R_board, t_board, tuple(tree), W)
