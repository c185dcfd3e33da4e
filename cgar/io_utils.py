"""Atomic file output, checksums and the project's input-error type.

Every file the pipeline writes goes through `atomic_write` (or `atomic_directory` for a set of files):
the content is written under a temporary name in the destination folder and renamed into place only when
complete, so a killed process never leaves a truncated file that a later step could take as finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np


class DataError(ValueError):
    """Bad input, located: `where` is a file path, optionally with a line number ("train.csv:17")."""

    def __init__(self, where: str | os.PathLike, message: str, line: int | None = None):
        self.where = str(where)
        self.line = line
        self.message = message
        loc = f"{self.where}:{line}" if line is not None else self.where
        super().__init__(f"{loc}: {message}")


def _umask() -> int:
    """The process umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; a results file must be as readable as any other file this user creates
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(name)


def _tmp_dir(path: Path, suffix: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    return tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place when the block succeeds.

    An existing directory at `path` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_dir(path, ".tmp")
    try:
        yield tmp
        if path.exists():
            old = _tmp_dir(path, ".old")
            os.replace(path, old / "dir")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_links(files: Iterable[Path], dest: str | os.PathLike) -> None:
    """Make folder `dest` hold exactly `files`: hard links (copies across file systems) in a temporary folder that
    replaces `dest` only when complete, so a kill while publishing leaves the old folder or the new one."""
    with atomic_directory(dest) as tmp:
        for src in files:
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copy2(src, tmp / src.name)


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """The exact bytes `np.save` writes, for hashing without touching disk."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
