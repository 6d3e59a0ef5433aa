"""The one exception type handanno raises for bad input, and the message for disk errors.

Every message names the file, camera or frame involved and says what to do; the CLI
prints it without a traceback. A full, read-only or forbidden disk (:data:`DISK_ERRNOS`) is
reported the same way (:func:`disk_error_message`).
"""

from __future__ import annotations

import errno
import os


class HandannoError(Exception):
    """Bad input or a failed stage, with a message meant for the user."""


#: ``errno`` values of the "the disk will not take this" kind: the user can do something about
#: them (free space, pick another folder), so the CLI reports them in one line.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def disk_error_message(exc: OSError, path: str | os.PathLike | None = None) -> str | None:
    """A one-line message for a full, read-only or forbidden disk, or None for any other error.

    Args:
        exc: the error raised by the operating system.
        path: the file or folder involved; default: the one ``exc`` names, if any.

    Returns:
        The message (it names the path and says what to do), or None when ``exc.errno`` is
        not in :data:`DISK_ERRNOS`.

    Example:
        >>> import errno
        >>> msg = disk_error_message(OSError(errno.ENOSPC, "No space left on device"), "run/last.pt")
        >>> msg.split(";")[0]
        'cannot write run/last.pt: no space left on the device (disk full or quota reached)'
        >>> disk_error_message(OSError(errno.ENOENT, "No such file or directory")) is None
        True
    """
    if exc.errno not in DISK_ERRNOS:
        return None
    if path is None:
        path = exc.filename if exc.filename is not None else exc.filename2
    shown = os.fspath(path) if path is not None else None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"cannot write {shown or 'a file'}: no space left on the device (disk full or quota reached); "
                "free some space or choose a folder on another disk, then run the command again")  # fmt: skip
    if exc.errno == errno.EROFS:
        return (f"cannot write {shown or 'a file'}: the file system is read-only; choose a folder on a writable "
                "disk, then run the command again")  # fmt: skip
    return (f"{shown or 'a file or folder'}: permission denied; choose a folder you may write to (or change the "
            "permissions of this one), then run the command again")  # fmt: skip
