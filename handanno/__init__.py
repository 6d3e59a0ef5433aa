"""handanno: automatic hand annotation from synchronized multi-camera captures."""

__version__ = "0.1.0"
