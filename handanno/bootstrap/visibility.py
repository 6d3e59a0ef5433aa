"""Which keypoints a view sees on the fitted hand: inside the image and not hidden by the hand itself.

The bootstrap trains the detector on the fit's keypoints projected into every view; a
keypoint hidden behind the palm or fingers, or outside the image, has no evidence in the
pixels and is left out of training (its label is kept, marked not visible).

A joint lies inside the hand, so "seen" means: the first surface on its pixel's ray is its
own skin less than :data:`handanno.synth.keypoints.OWN_SURFACE_DEPTH_M` in front of it, or
any surface less than :data:`handanno.synth.keypoints.OCCLUSION_TOLERANCE_M` in front of it
(:func:`handanno.synth.keypoints.keypoint_visibility`, the same test the synthetic data's
keypoints use). The mesh is ray cast exactly through the distorted camera
(:mod:`handanno.synth.raycast`, a few milliseconds per view).
"""

from __future__ import annotations

import numpy as np

from handanno.calibration.camera import Camera
from handanno.check import check_shape
from handanno.synth import raycast
from handanno.synth.keypoints import face_parts, keypoint_visibility


class MeshVisibility:
    """``visibility(camera, joints_world (21, 3), vertices_world (V, 3)) -> (21,) bool`` for one hand model.

    Args:
        faces: ``(F, 3)`` the model's triangles.
        weights: ``(V, 16)`` its skinning weights (which joint's skin each face is).
    """

    def __init__(self, faces: np.ndarray, weights: np.ndarray):
        check_shape(faces, ("F", 3), "faces")
        self.faces = np.asarray(faces, np.int64)
        self.face_part = face_parts(np.asarray(weights, np.float64), self.faces)

    def __call__(self, camera: Camera, joints_world: np.ndarray, vertices_world: np.ndarray) -> np.ndarray:
        """``(21,)`` bool: the keypoint is inside the image and not hidden by the hand."""
        check_shape(joints_world, (21, 3), "joints_world")
        hits = raycast.raycast_mesh(vertices_world, self.faces, camera)
        _, state = keypoint_visibility(joints_world, camera, hits, self.face_part)
        return state == 2
