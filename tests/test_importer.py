"""Importer: every error kind located (file:line: what), skip-mode counts, atomic output, streaming memory."""

import csv
import json
import re
import sys
import tracemalloc
import types

import numpy as np
import pytest

from cgar.data.importer import import_csv, import_puzzle_list, import_puzzles
from cgar.io_utils import DataError
from cgar.sudoku.grid import format_grid, parse_grids, valid_solutions
from cgar.sudoku.rating import CLASS_COLUMNS
from tests.conftest import pattern_grid

HEADER = "source,question,answer,rating"
SOLUTION = format_grid(pattern_grid())


def puzzle(k: int, grid: str = SOLUTION) -> str:
    """Unique puzzle number k: one blank per row (a row missing one digit forces it), placed by k."""
    cells = list(grid)
    for r in range(9):
        cells[r * 9 + (k + r) % 9] = "."
    return "".join(cells)


def count_solutions(text: str, limit: int = 3) -> int:
    """Tiny reference backtracking count (capped), independent of the project's solver."""
    g = [int(ch) if ch not in ".0" else 0 for ch in text]
    peers = [{j for j in range(81) if j != i and (j // 9 == i // 9 or j % 9 == i % 9 or
              (j // 27 == i // 27 and j % 9 // 3 == i % 9 // 3))} for i in range(81)]

    def go() -> int:
        blanks = [i for i in range(81) if not g[i]]
        if not blanks:
            return 1
        cands = {i: set(range(1, 10)) - {g[j] for j in peers[i]} for i in blanks}
        i = min(blanks, key=lambda i: len(cands[i]))
        n = 0
        for d in cands[i]:
            g[i] = d
            n += go()
            g[i] = 0
            if n >= limit:
                break
        return n

    return go()


def deadly_puzzle() -> tuple[str, str]:
    """(puzzle, one solution) with exactly two solutions: a "deadly" a,b / b,a rectangle blanked.

    The rectangle lies on two rows of one band and two columns of different stacks, so swapping a and b in
    it gives a second valid grid. (The pattern grid has no such rectangle, hence this fixed random grid.)
    """
    grid = "831725469479186325265439871387641952512397648694258713946513287753862194128974536"
    cells = list(grid)
    for r, c in ((1, 4), (1, 6), (2, 4), (2, 6)):  # r2c5,r2c7 = 8,3 and r3c5,r3c7 = 3,8
        cells[r * 9 + c] = "."
    return "".join(cells), grid


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def only_input_left(folder, src):
    assert sorted(p.name for p in folder.iterdir()) == [src.name], "output or temp file left behind"


def test_reference_puzzles_are_what_the_tests_assume():
    assert count_solutions(puzzle(0)) == count_solutions(puzzle(5)) == 1
    bad = "12345678." + "........9" + "." * 63
    assert count_solutions(bad) == 0
    deadly, grid = deadly_puzzle()
    assert valid_solutions(parse_grids([SOLUTION, grid])).all() and count_solutions(deadly) == 2


# --- per-row error kinds: (kind, bad CSV line, what the message must say, needs the solver) -------------
GOOD1, GOOD2 = f"a,{puzzle(0)},{SOLUTION},3", f"b,{puzzle(1)},{SOLUTION},4"
WRONG_ANSWER = SOLUTION[1:9] + SOLUTION[0] + SOLUTION[9:]  # row 0 rotated: columns now clash
CONFLICT = "11" + "." * 79
CASES = [
    ("missing_columns", f"a,{puzzle(2)},{SOLUTION}", r"missing columns: expected 4 .*found 3", False),
    ("too_many_columns", f"a,{puzzle(2)},{SOLUTION},1,x", r"too many columns: expected 4 .*found 5", False),
    ("bad_source", f",{puzzle(2)},{SOLUTION},1", r"source '' is empty", False),
    ("wrong_length", f"a,{puzzle(2)[:80]},{SOLUTION},1", r"question: expected 81 characters \(a 9x9 grid\), got 80",
     False),
    ("wrong_length", f"a,{puzzle(2)},{SOLUTION}9,1", r"answer: expected 81 characters \(a 9x9 grid\), got 82", False),
    ("bad_char", f"a,x{puzzle(2)[1:]},{SOLUTION},1", r"question: bad character 'x' at position 1", False),
    ("bad_char", f"a,{puzzle(2)},{SOLUTION[:4]}.{SOLUTION[5:]},1", r"answer: bad character '\.' at position 5", False),
    ("bad_rating", f"a,{puzzle(2)},{SOLUTION},1.5", r"rating '1\.5' is not an integer", False),
    ("givens_conflict", f"a,{CONFLICT},{SOLUTION},1",
     r"givens contradict each other: digit 1 appears 2 times in row 1", False),
    ("invalid_answer", f"a,{'.' * 81},{WRONG_ANSWER},1",
     r"answer is not a valid Sudoku grid: digit 2 appears 2 times in column 1", False),
    ("answer_contradicts_given", f"a,{'..7' + '.' * 78},{SOLUTION},1",
     r"answer contradicts a given at r1c3: question has 7, answer has 3", False),
    ("duplicate", f"a,{puzzle(0).replace('.', '0')},{SOLUTION},1",
     r"duplicate question: same puzzle as line 2", False),
    ("multiple_solutions", "a,{},{},1".format(*deadly_puzzle()),
     r"question has more than one solution", True),
]


@pytest.mark.parametrize("kind,bad,message,unique", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_error_kind_is_located_and_skippable(tmp_path, kind, bad, message, unique):
    src = write(tmp_path / "in.csv", [HEADER, GOOD1, bad, GOOD2])
    dst = tmp_path / "out.csv"
    with pytest.raises(DataError, match=rf"^{re.escape(str(src))}:3: {message}"):
        import_csv(src, dst, check_unique=unique)
    only_input_left(tmp_path, src)

    summary = import_csv(src, dst, on_error="skip", check_unique=unique)
    assert summary["skipped"] == {kind: 1} and summary["rows_read"] == 3 and summary["rows_written"] == 2
    assert summary["examples"][kind][0]["line"] == 3 and re.match(message, summary["examples"][kind][0]["message"])
    rows = read_rows(dst)
    assert rows[0] == [*HEADER.split(","), "cgar_rating", *(CLASS_COLUMNS if unique else ())]  # class: solver on
    assert [r[1] for r in rows[1:]] == [puzzle(0), puzzle(1)]


@pytest.mark.parametrize("content,message,line", [
    ("", r"empty file \(expected the header source,question,answer,rating\)", None),
    (HEADER + "\n", r"empty file: no puzzle rows after the header", None),
    ("a,b,c,d\n" + GOOD1 + "\n", r"wrong header: expected 'source,question,answer,rating'.*, found 'a,b,c,d'", 1),
])
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_file_level_errors_always_raise(tmp_path, content, message, line, on_error):
    src = tmp_path / "in.csv"
    src.write_text(content)
    loc = re.escape(str(src)) + (f":{line}" if line else "")
    with pytest.raises(DataError, match=rf"^{loc}: {message}"):
        import_csv(src, tmp_path / "out.csv", on_error=on_error, check_unique=False)
    only_input_left(tmp_path, src)


def test_failure_keeps_an_existing_output_untouched(tmp_path):
    src = write(tmp_path / "in.csv", [HEADER, GOOD1, CASES[0][1]])
    dst = write(tmp_path / "out.csv", ["old"])
    with pytest.raises(DataError):
        import_csv(src, dst, check_unique=False)
    assert dst.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 2


def test_first_bad_row_wins_across_cheap_and_batched_checks(tmp_path):
    # Line 3 fails a batched (grid) check, line 4 a per-row check: fail-fast must report line 3.
    src = write(tmp_path / "in.csv", [HEADER, GOOD1, f"a,{CONFLICT},{SOLUTION},1", CASES[0][1]])
    with pytest.raises(DataError, match=r":3: givens contradict"):
        import_csv(src, tmp_path / "out.csv", check_unique=False)


def test_valid_csv_round_trips_without_solver(tmp_path, capsys):
    lines = [f"s{k % 2},{puzzle(k).replace('.', '0') if k == 3 else puzzle(k)},{SOLUTION},{k}" for k in range(6)]
    src = write(tmp_path / "in.csv", [HEADER, *lines])
    summary = import_csv(src, tmp_path / "out.csv", check_unique=False, summary_path=tmp_path / "s.json",
                         batch_size=4, progress=True)
    assert "rows" in capsys.readouterr().err  # the tqdm bar, on stderr
    rows = read_rows(tmp_path / "out.csv")
    assert rows[1:] == [[f"s{k % 2}", puzzle(k), SOLUTION, str(k), ""] for k in range(6)]  # '0' -> '.'
    assert summary["rows_written"] == 6 and summary["sources"] == {"s0": 3, "s1": 3}
    assert summary["rating"]["min"] == 0 and summary["rating"]["max"] == 5 and summary["cgar_rating"] is None
    assert json.loads((tmp_path / "s.json").read_text()) == summary


def test_valid_csv_gets_our_rating_with_solver(tmp_path):
    from cgar.sudoku.solver import rate_batch

    src = write(tmp_path / "in.csv", [HEADER, GOOD1, GOOD2])
    summary = import_csv(src, tmp_path / "out.csv")
    rows = read_rows(tmp_path / "out.csv")
    assert [r[:4] for r in rows[1:]] == [GOOD1.split(","), GOOD2.split(",")]
    expected = rate_batch(parse_grids([puzzle(0), puzzle(1)]))
    assert [int(r[4]) for r in rows[1:]] == list(expected) and summary["cgar_rating"]["max"] == max(expected)


def test_answer_differing_from_unique_solution(tmp_path, monkeypatch):
    # A correct solver never disagrees with a valid, given-consistent answer; fake one that does.
    def solve_batch(puzzles, limit=2, parallel=False):
        n = len(puzzles)
        return np.tile(np.roll(pattern_grid(), 1), (n, 1)), np.ones(n, np.int32), np.zeros(n, np.int32)

    fake = types.SimpleNamespace(solve_batch=solve_batch, rate_batch=lambda p: np.zeros(len(p), np.int32))
    monkeypatch.setitem(sys.modules, "cgar.sudoku.solver", fake)
    src = write(tmp_path / "in.csv", [HEADER, GOOD1])
    message = r"in.csv:2: answer differs from the unique solution at r1c1: answer has 1, solution has 8"
    with pytest.raises(DataError, match=message):
        import_csv(src, tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"no valid rows: all 1 rows were rejected \(answer_not_solution=1\)"):
        import_csv(src, tmp_path / "out.csv", on_error="skip")  # skipping everything is still an error


def test_plain_list_with_comments_and_zero_blanks(tmp_path):
    deadly, _ = deadly_puzzle()
    src = write(tmp_path / "my_set.txt", [
        "# a comment", "", puzzle(0).replace(".", "0") + "   # trailing comment", puzzle(1),
        "12345678." + "........9" + "." * 63, deadly, "  ", puzzle(0),
    ])
    with pytest.raises(DataError, match=r"my_set.txt:5: puzzle has no solution"):
        import_puzzle_list(src, tmp_path / "out.csv")
    summary = import_puzzle_list(src, tmp_path / "out.csv", on_error="skip")
    assert summary["skipped"] == {"no_solution": 1, "multiple_solutions": 1, "duplicate": 1}
    assert summary["examples"]["duplicate"][0] == {"line": 8, "message": "duplicate question: same puzzle as line 3"}
    rows = read_rows(tmp_path / "out.csv")
    assert rows[0] == [*HEADER.split(","), "cgar_rating", *CLASS_COLUMNS]
    assert [r[:3] for r in rows[1:]] == [["my_set", puzzle(0), SOLUTION], ["my_set", puzzle(1), SOLUTION]]
    assert all(int(r[3]) >= 0 and r[3] == r[4] for r in rows[1:])  # no rating in a list: ours fills both
    # Without uniqueness checking the two-solution puzzle gets one of its solutions.
    summary = import_puzzle_list(src, tmp_path / "out.csv", source="x", on_error="skip", check_unique=False)
    assert summary["skipped"] == {"no_solution": 1, "duplicate": 1} and summary["sources"] == {"x": 3}


def test_plain_list_structural_errors(tmp_path):
    src = write(tmp_path / "l.txt", ["# x", puzzle(0)[:-1]])
    with pytest.raises(DataError, match=r"l.txt:2: puzzle: expected 81 characters \(a 9x9 grid\), got 80"):
        import_puzzle_list(src, tmp_path / "out.csv")
    write(src, ["# only comments", ""])
    with pytest.raises(DataError, match=r"l.txt: empty file: no puzzle rows \(only blank or comment lines\)"):
        import_puzzle_list(src, tmp_path / "out.csv")
    only_input_left(tmp_path, src)


def test_format_sniffing(tmp_path):
    csv_src = write(tmp_path / "a.csv", [HEADER, GOOD1])
    assert import_puzzles(csv_src, tmp_path / "o1.csv", check_unique=False)["format"] == "csv"
    list_src = write(tmp_path / "l.csv", ["# a list despite its name", puzzle(0)])
    assert import_puzzles(list_src, tmp_path / "o2.csv")["format"] == "list"
    bad_header = write(tmp_path / "b.txt", ["x,y", GOOD1])
    with pytest.raises(DataError, match=r"b.txt:1: cannot tell the format from 'x,y'.*--format"):
        import_puzzles(bad_header, tmp_path / "o4.csv")
    with pytest.raises(DataError, match="wrong header"):
        import_puzzles(bad_header, tmp_path / "o4.csv", format="csv")
    with pytest.raises(ValueError, match="format must be"):
        import_puzzles(csv_src, tmp_path / "o3.csv", format="xml")


def test_streaming_memory_is_bounded(tmp_path):
    # 50k distinct rows (~8.5 MB): a reader that held the file would peak far above the bound.
    n = 50_000
    rng = np.random.default_rng(0)
    src = tmp_path / "big.csv"
    with open(src, "w") as f:
        f.write(HEADER + "\n")
        for i in range(n):
            q = np.frombuffer(SOLUTION.encode(), np.uint8).copy()
            q[rng.choice(81, size=40, replace=False)] = ord(".")
            f.write(f"s,{q.tobytes().decode()},{SOLUTION},{i % 100}\n")
    tracemalloc.start()
    try:
        summary = import_csv(src, tmp_path / "out.csv", check_unique=False, on_error="skip", batch_size=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["rows_read"] == n and summary["rows_written"] + summary["skipped"].get("duplicate", 0) == n
    assert peak < 4e6, f"peak {peak / 1e6:.1f} MB for a {src.stat().st_size / 1e6:.1f} MB file"
