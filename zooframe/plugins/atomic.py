"""Files written whole or not at all.

A file is written to a temporary file beside it, flushed to the disk and renamed over the old
one, so a reader (or a run resumed after a crash) sees the old file or the new one, never a part
of either. A full disk or a read-only folder is one :class:`WriteError` that names the file, and
the old file is left as it was. A symbolic link where the file goes is refused rather than
written through: a link planted in a run folder must not let a run overwrite a file outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .errors import ZooframeError

TEMP_PREFIX, TEMP_SUFFIX = ".zooframe-", ".tmp"


class WriteError(ZooframeError):
    """A file that could not be written (full disk, no permission, a link in its place); ``path``
    is the file, and what was there before is unchanged."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path}: {reason}")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, follow_symlink: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file for ``path``; when the block ends without an error, it replaces
    ``path``. With ``follow_symlink``, a link at ``path`` is resolved and its target replaced
    (for a file the user named); without it, a link there is a :class:`WriteError`."""
    path = _target(path, follow_symlink)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a run's files are as readable as any other
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(path, _reason(exc)) from None
        raise
    _sync_folder(path.parent)


def probe(path: str | Path, *, follow_symlink: bool = False) -> None:
    """Raise the :class:`WriteError` that writing ``path`` would raise, before the work that makes
    its content is done; the folders up to it are created."""
    path = _target(path, follow_symlink)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, f"the folder {exc.filename} cannot be created ({_reason(exc)})") from None
    fd, tmp = _temporary(path)
    os.close(fd)
    os.unlink(tmp)


def _target(path: str | Path, follow_symlink: bool) -> Path:
    path = Path(path)
    if path.is_symlink():
        if not follow_symlink:
            raise WriteError(path, "it is a symbolic link, and zooframe does not write through links in its folders; "
                                   "remove the link")
        path = path.resolve()
    if path.is_dir():
        raise WriteError(path, "it is a directory; name a file")
    return path


def _temporary(path: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}-", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise WriteError(path, _reason(exc)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Flush the rename itself to the disk (a crash right after it must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename stands all the same
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str, **options: Any) -> None:
    with atomic_write(path, "w", **options) as f:
        f.write(text)


def write_json(path: str | Path, data: Any, **options: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n", **options)


def save_torch(path: str | Path, obj: Any, **options: Any) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path, "wb", **options) as f:
        torch.save(obj, f)


def leftovers(folder: str | Path) -> list[Path]:
    """Temporary files that a process killed mid-write left in ``folder``."""
    folder = Path(folder)
    return sorted(folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")) if folder.is_dir() else []
