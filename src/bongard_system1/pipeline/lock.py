"""One pipeline run per work directory: an flock-based file lock plus a side file naming the holder.

The lock lives at ``WORKDIR/checkpoints/.pipeline.lock``; the holder writes its pid (and start time)
to ``.pipeline.lock.pid``. The kernel releases an flock when its process dies, so a SIGKILLed run
never leaves a stale lock; the side file only names the holder while the lock is held.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import filelock

from ..errors import System1Error

LOCK_NAME = ".pipeline.lock"
PID_NAME = ".pipeline.lock.pid"
UNKNOWN_HOLDER = "pid unknown"
UNNAMED_HOLDER_WAIT_S = 1.0     # how long a locked lock whose holder names nobody is tried again


class PipelineLock:
    """Non-blocking exclusive lock on a work directory; use as a context manager."""

    def __init__(self, workdir):
        self.workdir = Path(workdir).resolve()
        self.dir = self.workdir / "checkpoints"
        self.lock_path = self.dir / LOCK_NAME
        self.pid_path = self.dir / PID_NAME
        self._lock: filelock.BaseFileLock | None = None
        self._pid_file_gone = False

    def holder(self) -> str:
        """The holder's pid (and start time) as written in the side file, or ``pid unknown``."""
        try:
            text = self.pid_path.read_text(encoding="utf-8").strip()
        except OSError:
            return UNKNOWN_HOLDER
        return text or UNKNOWN_HOLDER

    def acquire(self) -> "PipelineLock":
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise System1Error(f"cannot write to work directory {self.workdir}: {exc.strerror or exc}") from None
        replaced = 0
        deadline = time.monotonic() + UNNAMED_HOLDER_WAIT_S
        while True:
            lock = filelock.FileLock(str(self.lock_path), timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                holder = self.holder()
                if holder == UNKNOWN_HOLDER and time.monotonic() < deadline:
                    # A holder names itself right after it locks and unnames itself right before it
                    # lets go (``reset all`` even unlinks the lock file): between the two, look again.
                    time.sleep(0.05)
                    continue
                raise System1Error(f"another pipeline run holds the lock on {self.workdir} ({holder}); "
                                   "wait for it to finish or stop that process") from None
            except OSError as exc:
                raise System1Error(f"cannot lock work directory {self.workdir}: {exc.strerror or exc}") from None
            if self._names_locked_file(lock):
                break
            lock.release()      # the file was unlinked (``reset all``) after we opened it: lock the new one
            replaced += 1
            if replaced == 5:
                raise System1Error(f"cannot lock work directory {self.workdir}: its lock file keeps being replaced")
        self._lock = lock
        try:
            self.pid_path.write_text(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n",
                                     encoding="utf-8")
        except OSError:
            pass
        return self

    def _names_locked_file(self, lock) -> bool:
        """Whether the lock path still names the file this process holds locked. ``reset all`` unlinks
        the lock file while it holds it; a process that opened that file just before and locks it
        just after would otherwise run beside one that locks the new file at the same path."""
        fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
        if fd is None:           # a filelock without this attribute: nothing to compare
            return True
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
        except OSError:
            return False

    def unlink_files(self) -> None:
        """Remove the lock's files while holding it (``reset all``): see :meth:`_names_locked_file`."""
        for path in (self.pid_path, self.lock_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._pid_file_gone = True      # release must not unlink a pid file a new run writes meanwhile

    def release(self) -> None:
        if self._lock is None:
            return
        if not self._pid_file_gone:
            try:
                self.pid_path.unlink()
            except OSError:
                pass
        try:
            self._lock.release()
        finally:
            self._lock = None

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock now (a quick try-and-release; creates nothing new)."""
        if not self.lock_path.exists():
            return False
        lock = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return True
        except OSError:
            return False
        lock.release()
        return False

    def __enter__(self) -> "PipelineLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
