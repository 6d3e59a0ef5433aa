"""Annotation: detection, segmentation, rendering, fitting and export."""
