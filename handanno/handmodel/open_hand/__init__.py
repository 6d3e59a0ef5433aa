"""handanno's open hand model: a procedurally generated hand in MANO's format.

MANO is licensed and never shipped; this package builds an open replacement with MANO's
keys, shapes and kinematic tree, from nothing but anatomical numbers, so that every stage
of handanno runs on either model. ``python -m handanno.handmodel.open_hand --out
handanno/assets`` writes ``open_hand_right.pkl`` and ``open_hand_left.pkl``.

How the surface is made (all pure functions):

1. ``skeleton.skeleton`` places the 16 MANO joints and the 5 fingertips from
   ``skeleton.HandShape`` (adult proportions: bone lengths after published averages of
   metacarpal and phalanx lengths, in joint-centre distances).
2. ``sdf.hand_sdf`` is an implicit surface: tapered elliptical capsules for the phalanges,
   smoothly blended (polynomial smooth-min) to a palm of metacarpal capsules, palmar pads,
   thenar and hypothenar eminences and a wrist stump cut flat.
3. ``surface.hand_topology`` is a fixed, hand-designed mesh connectivity (``topology``:
   rings of vertices around each finger, a grid for the palm, webs, a wrist cap; genus 0,
   V = 778, F = 1552) with a rule per vertex saying where to cast a ray from;
   ``surface.build_surface`` casts the rays onto the implicit surface and evens out the
   vertices with a few steps of tangential smoothing, each followed by projection back
   onto the surface.
4. Skinning weights blend across each joint over a short zone along the bone axis;
   the joint regressor writes every joint as a convex combination of nearby vertices
   (``skinning``); the 10 shape blend shapes are central differences of the generator over
   one standard deviation of 10 anatomical measurements (``skeleton.SHAPE_BASIS``,
   ``surface.shape_directions``); the articulation PCA comes from a synthetic distribution
   of plausible poses around a relaxed mean (``poses``).
5. The vertices are permuted at the end so that the fingertips sit at MANO's indices
   (``handanno.data.conventions.TIP_VERTEX_IDS``; ``assets``).

Modules, each importing only those above it: ``skeleton`` (shape parameters, joints, bone
frames), ``sdf`` (the implicit surface, ray casting), ``topology`` (vertex blocks, faces,
rays), ``surface`` (the mesh, its final triangles, mesh checks), ``skinning`` (weights and
joint regressor), ``poses`` (flexion axes, pose space, named poses), ``preview`` (open3d
renders, deformation report) and ``assets`` (the MANO-format dicts, the left hand, the
files). The numpy LBS oracle is :mod:`handanno.handmodel.lbs_reference`.

Convention:
    Right hand in MANO's canonical frame, metres: fingers point along -x, the back of the
    hand faces +y (the palm faces -y), the thumb is on the +z side. As in MANO's template,
    the middle finger's knuckle (MCP) is near the origin and the wrist joint at about
    x = +0.093 m, so global rotations and translations mean nearly the same on both models.
    The left hand is the mirror image, x -> -x. Axis-angle articulations are relative to
    the parent joint, in the rest frame (MANO's convention); a finger joint flexes (curls
    towards the palm) by a positive rotation about its lateral axis ``cross(dorsal, bone)``
    (about +z for the right hand's fingers).

What is approximate: ``posedirs`` are all zero (no pose correctives: plain linear blend
skinning); ``hands_coeffs`` are the coefficients of the synthetic pose samples, not of
captured hands.
"""
