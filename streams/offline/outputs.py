"""Output files that cannot destroy inputs: a path check before anything is opened, and atomic writes.

``check_outputs`` refuses an output that is (or links to) an input, and two outputs that are the same
file, before anything is opened for writing. ``AtomicOutput`` writes to a temporary file beside the
target and renames it over the target only when the work succeeded: a run that fails (a missing input,
a refused log, Ctrl-C) leaves the previous file as it was.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any


class OutputError(Exception):
    """An output that would overwrite an input or another output, or cannot be created: exit code 2."""


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same resolved path (symbolic links followed, even to a file
    not yet created), or, when both exist, the same inode (hard links)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): only the resolved path can match
        return False


def _is_special(path: str | Path) -> bool:
    """An existing non-regular file (``/dev/null``, a FIFO): written in place, and never compared."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_outputs(inputs: Iterable[str | Path], outputs: Mapping[str, str | Path | None]) -> None:
    """Raise ``OutputError`` if an output (flag -> path; None: not asked for) is an input or another output.

    Called before any output is opened, so that a refused command has changed nothing."""
    named = [(flag, path) for flag, path in outputs.items() if path is not None and not _is_special(path)]
    for index, (flag, path) in enumerate(named):
        for source in inputs:
            if _same_file(path, source):
                raise OutputError(f"{flag} {path} is the input {source}: writing it would destroy the input")
        for other_flag, other in named[:index]:
            if _same_file(path, other):
                raise OutputError(f"{other_flag} {other} and {flag} {path} are the same file: give two different files")


class AtomicOutput:
    """A file written whole or not at all.

    ``open()`` creates a temporary file in the target's directory (symbolic links to the target are
    followed, so the file they point to is replaced); ``commit()`` renames it over the target;
    ``discard()`` removes it and leaves the target untouched. As a context manager, the file is committed
    when the block ends normally and discarded on any exception, ``KeyboardInterrupt`` included. A
    target that exists and is not a regular file (``/dev/null``, a FIFO) is written in place.
    """

    def __init__(self, path: str | Path, *, binary: bool = False) -> None:
        self.path = Path(path)
        self.binary = binary
        self._fh: IO[Any] | None = None
        self._tmp: Path | None = None

    def open(self) -> IO[Any]:
        mode = "wb" if self.binary else "w"
        encoding = None if self.binary else "utf-8"
        try:
            if _is_special(self.path):
                self._fh = open(self.path, mode, encoding=encoding)  # noqa: SIM115 - closed in commit/discard
                return self._fh
            target = Path(os.path.realpath(self.path))
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        self._tmp = tmp
        try:
            if target.exists():
                os.chmod(fd, stat.S_IMODE(target.stat().st_mode))  # a replaced file keeps its permissions
            self._fh = os.fdopen(fd, mode, encoding=encoding)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return self._fh

    def commit(self) -> None:
        """Called once the work succeeded: the target becomes the new content."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            if self._tmp is not None:
                os.fsync(fh.fileno())
        finally:
            fh.close()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            try:
                os.replace(tmp, os.path.realpath(self.path))
            except OSError as exc:  # e.g. the target is now a directory
                tmp.unlink(missing_ok=True)
                raise OutputError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    def discard(self) -> None:
        """Called when the work failed: the temporary file goes, the target stays as it was."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> IO[Any]:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()
