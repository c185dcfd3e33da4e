"""Importer file kinds: compression, TSV, Kaggle, tdoku lines, Royle-style lists, its own output, concatenated
files, and the CLI's skip-everything exit code. Every fixture is written by the test."""

import bz2
import gzip
import lzma
import re
import subprocess
import sys

import pytest

from cgar.data.formats import detect_format
from cgar.data.importer import import_puzzles
from cgar.io_utils import DataError
from cgar.sudoku.rating import CLASS_COLUMNS
from tests.test_importer import GOOD1, GOOD2, HEADER, SOLUTION, puzzle, read_rows, write

OUT_HEADER = [*HEADER.split(","), "cgar_rating", *CLASS_COLUMNS]
PLAIN = [HEADER, GOOD1, GOOD2]


def rows_of(src, tmp_path, **kwargs):
    dst = tmp_path / f"out_{src.name}.csv"
    summary = import_puzzles(src, dst, **kwargs)
    return summary, read_rows(dst)


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open),
                                           ("", gzip.open)])  # "": compression is read from the bytes
def test_compressed_csv_imports_like_the_plain_file(tmp_path, suffix, opener):
    plain = write(tmp_path / "plain.csv", PLAIN)
    packed = tmp_path / f"packed.csv{suffix}"
    with opener(packed, "wt") as f:
        f.write(plain.read_text())
    assert detect_format(packed) == "csv"
    (s1, expected), (s2, got) = rows_of(plain, tmp_path), rows_of(packed, tmp_path)
    assert got == expected and s2["rows_written"] == 2 and got[1][:4] == GOOD1.split(",")


def test_zstd_csv_when_the_library_is_installed(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    packed = tmp_path / "p.csv.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress("\n".join(PLAIN).encode() + b"\n"))
    assert rows_of(packed, tmp_path)[1][1][:4] == GOOD1.split(",")


def test_zstd_without_the_library_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails as if not installed
    packed = tmp_path / "p.csv.zst"
    packed.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(DataError, match=r"p.csv.zst: zstd-compressed, but the `zstandard` package is not installed"):
        import_puzzles(packed, tmp_path / "o.csv")


def test_tsv_and_whitespace_around_header_and_fields(tmp_path):
    tsv = write(tmp_path / "t.tsv", ["source\tquestion\tanswer\trating ",
                                     f" a\t{puzzle(0)} \t{SOLUTION}\t 3", f"b\t{puzzle(1)}\t{SOLUTION}\t4  "])
    spaced = write(tmp_path / "s.csv", ["source, question ,answer,rating ", GOOD1.replace(",", " , "), GOOD2 + " "])
    assert detect_format(tsv) == "tsv" and detect_format(spaced) == "csv"
    for src in (tsv, spaced):
        summary, rows = rows_of(src, tmp_path)
        assert summary["format"] == detect_format(src)
        assert [r[:4] for r in rows[1:]] == [GOOD1.split(","), GOOD2.split(",")], src.name


@pytest.mark.parametrize("names", ["quizzes,solutions", "puzzle,solution", "puzzle\tsolution"])
def test_kaggle_csvs(tmp_path, names):
    sep = "\t" if "\t" in names else ","
    src = write(tmp_path / "kaggle_set.csv", [names, f"{puzzle(0).replace('.', '0')}{sep}{SOLUTION}",
                                             f"{puzzle(1)}{sep}{SOLUTION}"])
    assert detect_format(src) == "kaggle"
    summary, rows = rows_of(src, tmp_path)
    assert rows[0] == OUT_HEADER and summary["sources"] == {"kaggle_set": 2}
    assert [r[:3] for r in rows[1:]] == [["kaggle_set", puzzle(0), SOLUTION], ["kaggle_set", puzzle(1), SOLUTION]]
    assert all(r[3] == r[4] for r in rows[1:])  # no rating column: ours fills `rating` too
    bad = write(tmp_path / "k2.csv", [names, f"{puzzle(0)}{sep}{SOLUTION[::-1]}"])
    with pytest.raises(DataError, match=r"k2.csv:2: answer contradicts a given"):
        import_puzzles(bad, tmp_path / "o.csv")


def test_tdoku_colon_lines(tmp_path):
    src = write(tmp_path / "tdoku_out.txt", [f"{puzzle(0)}:1:{SOLUTION}", f"{puzzle(1)}:12:", "x:y"])
    assert detect_format(src) == "tdoku"
    with pytest.raises(DataError, match=r"tdoku_out.txt:3: expected puzzle:count:solution, found 2"):
        import_puzzles(src, tmp_path / "o.csv")
    summary, rows = rows_of(src, tmp_path, on_error="skip", source="td")
    assert summary["skipped"] == {"bad_tdoku_line": 1}
    assert [r[:3] for r in rows[1:]] == [["td", puzzle(0), SOLUTION], ["td", puzzle(1), SOLUTION]]
    wrong = write(tmp_path / "w.txt", [f"{puzzle(0)}:1:{SOLUTION[:-1]}7"])
    with pytest.raises(DataError, match=r"w.txt:1: answer is not a valid Sudoku grid"):
        import_puzzles(wrong, tmp_path / "o.csv")


def test_royle_style_list_with_commas_in_its_comment(tmp_path):
    src = write(tmp_path / "sudoku17.txt", ["# 49,151 puzzles, minimum 17 clues, G. Royle, 2005",
                                           puzzle(0).replace(".", "0"), puzzle(1) + "  ", ""])
    assert detect_format(src) == "list"
    summary, rows = rows_of(src, tmp_path)
    assert summary["format"] == "list" and summary["sources"] == {"sudoku17": 2}
    assert [r[1] for r in rows[1:]] == [puzzle(0), puzzle(1)]


def test_own_output_reimports_to_the_same_rows(tmp_path):
    listed = write(tmp_path / "l.txt", [puzzle(k) for k in range(4)])
    _, first = rows_of(listed, tmp_path)
    again = write(tmp_path / "again.csv", [",".join(r) for r in first])
    assert detect_format(again) == "csv"
    summary, second = rows_of(again, tmp_path)
    assert second == first and summary["rows_written"] == 4
    # the generator's chunks (class-rating columns, no cgar_rating) import too, keeping their rows
    from cgar.sudoku.generate import SourceMix, write_chunk

    write_chunk(tmp_path / "chunk.csv", 1, 0, 5, SourceMix(unbiased_like=1.0, kaggle_like=0, lowclue=0, hard=0))
    generated = read_rows(tmp_path / "chunk.csv")
    summary, imported = rows_of(tmp_path / "chunk.csv", tmp_path)
    assert summary["format"] == "csv" and [r[:4] + r[5:] for r in imported[1:]] == [r for r in generated[1:]]


def test_concatenated_csvs_name_the_second_header(tmp_path):
    src = write(tmp_path / "cat.csv", [HEADER, GOOD1, HEADER + " ", GOOD2])
    with pytest.raises(DataError, match=re.escape(f"cat.csv:3: line repeats the header {HEADER!r}")):
        import_puzzles(src, tmp_path / "o.csv")
    summary, rows = rows_of(src, tmp_path, on_error="skip")
    assert summary["skipped"] == {"repeated_header": 1} and [r[1] for r in rows[1:]] == [puzzle(0), puzzle(1)]
    in_list = write(tmp_path / "cat.txt", [puzzle(0), HEADER, puzzle(1)])
    with pytest.raises(DataError, match=r"cat.txt:2: a header line 'source,question"):
        import_puzzles(in_list, tmp_path / "o.csv")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cgar.data", "import", *map(str, args), "--quiet"],
                          capture_output=True, text=True, timeout=timeout)


def test_cli_skip_exits_2_when_nothing_is_left_and_always_prints_counts(tmp_path):
    bad = write(tmp_path / "bad.csv", [HEADER, f"a,{puzzle(0)[:80]},{SOLUTION},1", f"a,{puzzle(1)},{SOLUTION},x"])
    r = cli(bad, "--out", tmp_path / "o.csv", "--on-error", "skip")
    assert r.returncode == 2, r.stderr
    assert "no valid rows: all 2 rows were rejected (bad_rating=1, wrong_length=1)" in r.stderr
    assert not (tmp_path / "o.csv").exists(), "a header-only output was written"
    mixed = write(tmp_path / "mixed.csv", [HEADER, GOOD1, f"a,{puzzle(1)},{SOLUTION},x"])
    r = cli(mixed, "--out", tmp_path / "o.csv", "--on-error", "skip", "--class-copies", "2")
    assert r.returncode == 0, r.stderr
    assert "1/2 rows written; skipped: bad_rating=1" in r.stderr
    r = cli(write(tmp_path / "ok.csv", PLAIN), "--out", tmp_path / "o.csv", "--class-copies", "0")
    assert r.returncode == 0 and "2/2 rows written; skipped: none" in r.stderr, r.stderr
    assert read_rows(tmp_path / "o.csv")[0] == [*HEADER.split(","), "cgar_rating"]  # k = 0: no class columns
