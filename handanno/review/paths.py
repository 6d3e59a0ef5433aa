"""Paths the review page serves: each resolved (symlinks followed) and refused unless it lies inside the session."""

from __future__ import annotations

import os
from pathlib import Path

from handanno.errors import HandannoError


class OutsideSession(HandannoError):
    """A path that resolves outside the session folder (``..``, an absolute path, a symlink out)."""


def inside_session(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` resolved, if it lies inside the resolved ``root``; else :class:`OutsideSession`.

    A relative ``path`` is taken relative to ``root``. Symlinks are followed before the check,
    so a link inside the session that points out of it is refused.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> inside_session(root, "images/cam0/000000.png") == root.resolve() / "images/cam0/000000.png"
        True
        >>> inside_session(root, "../../etc/passwd")
        Traceback (most recent call last):
        ...
        handanno.review.paths.OutsideSession: ../../etc/passwd: outside the session folder ...
    """
    base = Path(root).resolve()
    target = (base / path).resolve()  # an absolute ``path`` replaces ``base`` here, and is then checked
    if target != base and base not in target.parents:
        raise OutsideSession(f"{path}: outside the session folder {base}; the review page serves only files inside it")
    return target
