"""Puzzle file kinds the importer reads: opening (compressed or not), format detection, and row records.

Formats (`--format`, or detected from the first line that is not blank and not a `#` comment):
- `csv`: Sudoku-Extreme's header `source,question,answer,rating`, optionally followed by the extra columns this
  project writes (`cgar_rating`, `class_rating`, `class_rating_sd`: its own output re-imports); `tsv` is the same
  with tabs. Detection also picks the tab delimiter when the header line holds a tab.
- `kaggle`: a header `quizzes,solutions` or `puzzle,solution` (comma or tab; Kaggle's 1M and 9M sets).
- `tdoku`: lines `puzzle:count:solution` (tdoku's generator/benchmark output; count ignored, solution checked).
- `list`: one puzzle per line, its first whitespace-separated token; `#` lines are comments (they may hold
  commas, as Royle's `sudoku17` first line does).
Header names and fields are whitespace-stripped. Compression is recognised from the first bytes, whatever the
suffix: gzip, bzip2, xz, and zstd when the `zstandard` package is importable.

A record is (line, fields) with fields = (source, question, answer or None, rating text or None), or
(line, RowError) for a row that is structurally wrong (column count, a header repeated mid-file).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
from pathlib import Path
from typing import Iterator, NamedTuple

from cgar.data.puzzle_csv import HEADER
from cgar.io_utils import DataError
from cgar.sudoku.grid import N_CELLS

FORMATS = ("csv", "tsv", "kaggle", "tdoku", "list")
OWN_EXTRA_COLUMNS = ("cgar_rating", "class_rating", "class_rating_sd")  # what this project appends
KAGGLE_HEADERS = (("quizzes", "solutions"), ("puzzle", "solution"))
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_PUZZLE_CHARS = set(".0123456789")


class RowError(NamedTuple):
    kind: str
    message: str


def compression_of(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def open_text(path: str | Path):
    """Text stream of a plain or compressed file (utf-8, BOM dropped, undecodable bytes kept as surrogates so
    the row checks report them with a position)."""
    path = Path(path)
    kind = compression_of(path)
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(path, "zstd-compressed, but the `zstandard` package is not installed "
                                  "(pip install zstandard, or decompress the file first)") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    else:
        raw = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open, None: open}[kind](path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _names(line: str, delimiter: str) -> list[str]:
    return [name.strip().lower() for name in line.strip().split(delimiter)]


def _is_puzzle(token: str) -> bool:
    return len(token) == N_CELLS and set(token) <= _PUZZLE_CHARS


def detect_format(path: str | Path) -> str:
    """The format of a file from its first line that is neither blank nor a `#` comment (see module doc)."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            delimiter = "\t" if "\t" in text else ","
            names = _names(text, delimiter)
            if tuple(names[:4]) == HEADER:
                return "tsv" if delimiter == "\t" else "csv"
            if tuple(names[:2]) in KAGGLE_HEADERS:
                return "kaggle"
            first = text.split(None, 1)[0]
            if _is_puzzle(first.split(":", 1)[0]) and ":" in first:
                return "tdoku"
            if _is_puzzle(first):
                return "list"
            raise DataError(path, f"cannot tell the format from {text[:60]!r}: expected a header "
                                  f"{','.join(HEADER)} or quizzes,solutions / puzzle,solution, a puzzle:count:"
                                  "solution line or an 81-character puzzle; declare it with --format", line=line_no)
    raise DataError(path, "empty file: no puzzle rows (only blank or comment lines)")


def _header_records(path: Path, f, fmt: str, source: str) -> Iterator[tuple[int, object]]:
    """Records of a file with a header row (csv, tsv, kaggle)."""
    lines = enumerate(f, start=1)
    for line_no, line in lines:  # skip leading blank / comment lines up to the header
        if line.strip() and not line.lstrip().startswith("#"):
            break
    else:
        raise DataError(path, f"empty file (expected the header {','.join(HEADER)})")
    header_line = line.rstrip("\r\n")
    delimiter = "\t" if fmt == "tsv" or (fmt == "kaggle" and "\t" in header_line) else ","
    names = _names(header_line, delimiter)
    if fmt == "kaggle":
        if tuple(names[:2]) not in KAGGLE_HEADERS or len(names) != 2:
            raise DataError(path, f"wrong header: expected quizzes,solutions or puzzle,solution, found "
                                  f"{header_line.strip()!r}", line=line_no)
    elif tuple(names[:4]) != HEADER or any(n not in OWN_EXTRA_COLUMNS for n in names[4:]):
        extra = f" optionally followed by {','.join(OWN_EXTRA_COLUMNS)}"
        raise DataError(path, f"wrong header: expected {','.join(HEADER)!r}{extra}, found {header_line.strip()!r}",
                        line=line_no)
    # csv.reader on the remaining lines, so quoted fields work; line numbers are the file's own.
    rest = (line for _, line in lines)
    reader = csv.reader(rest, delimiter=delimiter)
    first_data_line = line_no + 1
    try:
        for row in reader:
            line = first_data_line + reader.line_num - 1
            fields = [x.strip() for x in row]
            if not any(fields):
                continue  # blank line
            if [x.lower() for x in fields] == names:
                yield line, RowError("repeated_header", f"line repeats the header {header_line.strip()!r} "
                                                        "(two files concatenated?)")
                continue
            if len(fields) != len(names):
                kind = "missing_columns" if len(fields) < len(names) else "too_many_columns"
                yield line, RowError(kind, f"{kind.replace('_', ' ')}: expected {len(names)} "
                                           f"({delimiter.join(names)}), found {len(fields)}")
                continue
            if fmt == "kaggle":
                yield line, (source, fields[0], fields[1], None)
            else:
                yield line, (fields[0], fields[1], fields[2], fields[3])
    except csv.Error as e:
        raise DataError(path, f"malformed CSV: {e}", line=first_data_line + reader.line_num - 1) from None


def _line_records(f, fmt: str, source: str) -> Iterator[tuple[int, object]]:
    """Records of a headerless file (list, tdoku)."""
    for line_no, line in enumerate(f, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        token = text.split(None, 1)[0]
        if token.lower().startswith(("source,", "source\t", "quizzes", "puzzle,", "puzzle\t")):
            yield line_no, RowError("repeated_header", f"a header line {text[:40]!r} inside a {fmt} file "
                                                       "(files of two formats concatenated?)")
        elif fmt == "tdoku":
            parts = [p.strip() for p in token.split(":")]
            if len(parts) != 3:
                yield line_no, RowError("bad_tdoku_line", f"expected puzzle:count:solution, found {len(parts)} "
                                                          "':'-separated fields")
            else:
                yield line_no, (source, parts[0], parts[2] or None, None)
        else:
            yield line_no, (source, token, None, None)


def records(path: str | Path, f, fmt: str, source: str) -> Iterator[tuple[int, object]]:
    """(line, fields or RowError) of an open file in a known format; `source` labels formats without one."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in ("csv", "tsv", "kaggle"):
        return _header_records(Path(path), f, fmt, source)
    return _line_records(f, fmt, source)
