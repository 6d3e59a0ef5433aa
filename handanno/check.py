"""Input checks used everywhere instead of hand-written conditions: shapes, numeric arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from handanno.errors import HandannoError


def check_shape(x: Any, shape: Sequence[str | int], name: str = "tensor") -> None:
    """Check that ``x.shape`` matches a pattern.

    Args:
        x: a numpy array or torch tensor.
        shape: the pattern. Integers must match exactly; strings are free dimensions
            (letters such as ``"B"``; the same letter must take the same size); ``"*"``
            as the first item matches any number of leading dimensions.
        name: what to call ``x`` in the error message.

    Raises:
        HandannoError: naming ``x``, the expected pattern and the actual shape.

    Example:
        >>> import numpy as np
        >>> check_shape(np.zeros((2, 21, 3)), ("B", 21, 3))
        >>> check_shape(np.zeros((4, 5, 2)), ("*", 2))
    """
    actual = tuple(x.shape)
    pattern = list(shape)
    leading = bool(pattern) and pattern[0] == "*"
    if leading:
        pattern = pattern[1:]
        ok = len(actual) >= len(pattern)
        tail = actual[len(actual) - len(pattern):] if ok else ()
    else:
        ok = len(actual) == len(pattern)
        tail = actual
    sizes: dict[str, int] = {}
    if ok:
        for want, got in zip(pattern, tail, strict=True):
            if isinstance(want, int):
                ok = ok and want == got
            elif want in sizes:
                ok = ok and sizes[want] == got
            else:
                sizes[want] = got
    if not ok:
        want_str = "(" + ", ".join(str(s) for s in shape) + ")"
        raise HandannoError(f"{name} must have shape {want_str}, got {actual}")


def as_float64(x: Any, name: str) -> np.ndarray:
    """A numpy float64 copy of an array, a nested list or a (detached) torch tensor.

    Raises:
        HandannoError: naming ``name`` when ``x`` is not numeric.

    Example:
        >>> as_float64([1, 2], "xyz").dtype
        dtype('float64')
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HandannoError(f"{name}: not a numeric array ({exc})") from exc
