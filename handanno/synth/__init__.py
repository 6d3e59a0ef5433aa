"""Synthetic captures with known answers (``handanno synth``).

Hand motion, appearance, calibration boards, ray casting and the session writer.
"""
