"""Multiview bootstrapping (``handanno bootstrap``): the 2D detector learns from the rig's own fits."""
