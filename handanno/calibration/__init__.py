"""Calibration: cameras, rigs, board detection and bundle adjustment."""
