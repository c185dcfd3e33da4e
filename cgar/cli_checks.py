"""Argument checks shared by the CLIs: refuse a bad value when the command starts, not after the work."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cgar.io_utils import DataError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def check_writable(out_dir: Path) -> None:
    """Create `out_dir` and write (and remove) a probe file in it, so a read-only or missing folder fails at once."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test."):
            pass
    except OSError as e:
        raise DataError(out_dir, f"--out-dir is not writable ({e.strerror or e})") from None
