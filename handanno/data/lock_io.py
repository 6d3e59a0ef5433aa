"""One writer per folder: an advisory lock file that names its holder and frees itself when the holder dies.

``handanno fit`` and ``handanno export`` take ``SESSION/.handanno.lock`` for their whole run,
so a second command on the same session stops at once with a message naming the first
(its command, process id, host and start time) instead of interleaving its writes.

The lock is an ``flock`` on the file: the kernel drops it when the holding process ends,
however it ends (``kill -9`` included), so a lock left by a dead process is taken over
without anyone deleting anything (stale-lock recovery). The holder's description in the
file is only for the message.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from handanno.errors import HandannoError

log = logging.getLogger(__name__)

LOCK_NAME = ".handanno.lock"


def _holder_text(path: Path) -> str:
    try:
        d = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(d, dict) or "pid" not in d:
        return "another process"
    return (f"`{d.get('command', 'handanno')}` (process {d.get('pid')} on {d.get('host', '?')}, "
            f"started {d.get('started', '?')})")  # fmt: skip


class FolderLock:
    """Exclusive lock on ``folder/.handanno.lock`` for the life of a ``with`` block.

    Args:
        folder: the folder to lock (a session).
        command: what the holder is doing, shown to anyone who finds the folder locked.

    Raises:
        HandannoError: on entering, when another process holds the lock; the message names
            it and says what to do.
    """

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock (see the class docstring)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise HandannoError(
                    f"{self.folder} is in use by {_holder_text(self.path)}; wait for it to finish (two runs on one "
                    "session would overwrite each other's files). If that process is gone, run again: its lock "
                    "is released when it ends"
                ) from None
            # the holder before us may have removed the file after we opened it: lock the file that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        info = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "argv": sys.argv[:8]}  # fmt: skip
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and remove the file (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
