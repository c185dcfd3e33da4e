import numpy as np
import pytest

from cgar.sudoku import solver
from cgar.sudoku.generate import SourceMix, generate_chunk
from cgar.sudoku.generate_kernels import easy_batch
from cgar.sudoku.grid import (SUDOKU_4, SUDOKU_6, format_grid, givens_consistent, parse_grid, parse_grids,
                              shape_of, valid_solutions)
from cgar.sudoku.reference import reference_solve

SMALL = [pytest.param(SUDOKU_6, id="6x6"), pytest.param(SUDOKU_4, id="4x4")]

# Three published Sudoku-Extreme rows (sudoku_data.md §0): (question, answer, tdoku rating in the CSV, our
# rating). Our ratings (+LC, lowest-index MRV, values ascending, one run on the stored string) are the
# prototype's golden values from §5.7.
PUBLISHED = [
    ("5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..",
     "583427169974136528216859374792364851351298746648715293865971432137642985429583617", 18, 164),
    (".9...12...3..284.6.6.....8..7....14..2..5.7....3.....2.1.9........7.5....872.6..4",
     "598461273731528496264397581879632145426159738153874962615943827342785619987216354", 1, 2),
    (".....8..1.6.9..2...4.52.9..4..6......9..45..6....924..9......7........3.35.2..6..",
     "529768341763914285148523967435671829892345716617892453984136572276459138351287694", 60, 52),
]


@pytest.fixture(scope="module")
def generated():
    """300 unique puzzles: mostly easy sources plus some hill-climbed hard ones (uint8[N, 81] each).

    A low hard threshold keeps the chain's warm-up short; the hard puzzles still need many guesses."""
    mix = SourceMix(kaggle_like=0.2, unbiased_like=0.7, lowclue=0.0, hard=0.1)
    rows = generate_chunk(11, 0, 300, mix, hard_threshold=10)
    return parse_grids([r[1] for r in rows]), parse_grids([r[2] for r in rows])


@pytest.fixture(scope="module", params=SMALL)
def small(request):
    """(shape, puzzles, answers, blanked): 150 random minimal puzzles of a small shape, their solutions, and 150
    grids with random cells blanked (from unique to many solutions), built by the generator's kernel."""
    shape = request.param
    q, a = (np.empty((150, shape.cells), dtype=np.uint8) for _ in range(2))
    easy_batch(5, len(q), 0, 0, shape.cells, q, a, solver.tables(shape))
    rng = np.random.default_rng(1)
    blanked = a.copy()
    for g in blanked:
        g[rng.choice(shape.cells, size=int(rng.integers(shape.cells // 2, shape.cells)), replace=False)] = 0
    return shape, q, a, blanked


def search(puzzle, limit, excl=None):
    """(count, guesses, guesses_at_first, solutions) from the numba core."""
    cells = len(puzzle)
    sols = np.zeros((limit, cells), dtype=np.uint8)
    excl = np.zeros(cells, dtype=np.int32) if excl is None else excl
    ws = solver.new_workspace(shape_of(cells))
    count, guesses, first = solver.search(puzzle, excl, limit, False, ws, sols)
    return count, guesses, first, sols[:count]


@pytest.mark.parametrize("question, answer, _tdoku, ours", PUBLISHED)
def test_published_rows(question, answer, _tdoku, ours):
    assert format_grid(solver.solve(question)) == answer
    assert solver.count_solutions(question) == 1
    assert solver.rate(question) == ours
    ref = reference_solve(parse_grid(question), limit=1)
    assert ref.guesses == ours and format_grid(ref.solutions[0]) == answer


def test_batch_matches_single_calls_and_answers(generated):
    puzzles, answers = generated
    sols, counts, guesses = solver.solve_batch(puzzles, limit=2)
    assert (counts == 1).all()
    assert (sols == answers).all()
    assert valid_solutions(sols).all() and givens_consistent(puzzles, sols).all()
    assert (guesses == solver.rate_batch(puzzles)).all()
    assert [solver.rate(p) for p in puzzles[:20]] == guesses[:20].tolist()
    assert (guesses > 0).any() and (guesses == 0).any()  # the sample exercises both paths


def test_parallel_batch_is_identical(generated):
    puzzles, _ = generated
    serial = solver.solve_batch(puzzles, limit=2)
    parallel = solver.solve_batch(puzzles, limit=2, parallel=True)
    for a, b in zip(serial, parallel):
        assert (a == b).all()


def test_reference_parity_unique(generated):
    """Same solution, same count and same guess count (limit 1 and limit 2) as the pure-Python solver."""
    puzzles, _ = generated
    for p in puzzles:
        for limit in (1, 2):
            count, guesses, _, sols = search(p, limit)
            ref = reference_solve(p, limit=limit)
            assert count == len(ref.solutions) and guesses == ref.guesses
            assert (sols == np.array(ref.solutions, dtype=np.uint8)).all()


def test_reference_parity_multiple_solutions_and_exclusions(generated):
    puzzles, answers = generated
    rng = np.random.default_rng(0)
    for p, a in zip(puzzles[:80], answers[:80]):
        holes = p.copy()
        holes[rng.choice(np.flatnonzero(holes), size=3, replace=False)] = 0  # usually several solutions
        count, guesses, first, sols = search(holes, 3)
        ref = reference_solve(holes, limit=3)
        assert (count, guesses) == (len(ref.solutions), ref.guesses)
        assert (sols == np.array(ref.solutions, dtype=np.uint8)).all()
        assert first == reference_solve(holes, limit=1).guesses
        # "is there a solution with cell c != its value?" as one search with a root exclusion mask
        c = int(rng.choice(np.flatnonzero(p == 0)))
        excl = np.zeros(81, dtype=np.int32)
        excl[c] = 1 << (int(a[c]) - 1)
        count, guesses, _, _ = search(p, 1, excl)
        ref = reference_solve(p, limit=1, excl={c: {int(a[c])}})
        assert count == len(ref.solutions) == 0 and guesses == ref.guesses


def test_removing_a_clue_of_a_minimal_puzzle_gives_two_solutions():
    question = parse_grid(PUBLISHED[0][0])
    assert solver.count_solutions(question) == 1
    counts = []
    for c in np.flatnonzero(question):
        p = question.copy()
        p[c] = 0
        counts.append(solver.count_solutions(p, limit=2))
    assert 2 in counts  # not every clue of a forum puzzle is needed, but some are
    p = question.copy()
    p[np.flatnonzero(question)[np.array(counts) == 2][0]] = 0
    sols, counts2, _ = solver.solve_batch(p, limit=5)
    assert counts2[0] >= 2 and valid_solutions(sols).all() and givens_consistent(p, sols).all()


def test_contradictions_give_no_solution():
    clash = parse_grid(PUBLISHED[1][0])
    clash[1], clash[2] = 5, 5  # two 5s in row 0
    assert solver.count_solutions(clash) == 0 and solver.solve(clash) is None
    # no clashing givens, but cell 0 sees 1..8 in its row and 9 in its column: no candidate left
    dead = np.zeros(81, dtype=np.uint8)
    dead[1:9] = np.arange(1, 9)
    dead[9 * 4] = 9
    assert solver.count_solutions(dead) == 0
    assert reference_solve(dead).solutions == [] and reference_solve(clash).solutions == []


def test_empty_grid_and_limits():
    empty = np.zeros(81, dtype=np.uint8)
    assert solver.count_solutions(empty, limit=2) == 2
    assert solver.count_solutions(empty, limit=7) == 7
    assert valid_solutions(solver.solve(empty)).all()
    full = parse_grid(PUBLISHED[0][1])
    assert solver.count_solutions(full) == 1 and solver.rate(full) == 0


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        solver.solve(np.zeros(80, dtype=np.uint8))
    with pytest.raises(ValueError, match="0 \\(blank\\) or 1..9"):
        solver.solve(np.full(81, 10))
    with pytest.raises(ValueError, match="integer dtype"):
        solver.solve(np.zeros(81, dtype=np.float32))
    with pytest.raises(ValueError, match="limit"):
        solver.solve_batch(np.zeros((1, 81), dtype=np.uint8), limit=0)
    assert solver.solve_batch(np.zeros((0, 81), dtype=np.uint8))[1].shape == (0,)


# ------------------------------------------------------------------------------------ small shapes (6x6, 4x4)


def test_small_shapes_match_the_reference(small):
    """Solutions, counts and guess counts (limits 1-3) agree with the pure-Python solver, on unique puzzles and
    on blanked grids with several solutions; the batch API agrees with the core."""
    shape, q, a, blanked = small
    for p in np.concatenate([q[:60], blanked[:90]]):
        for limit in (1, 3):
            count, guesses, _, sols = search(p, limit)
            ref = reference_solve(p, limit=limit)
            assert count == len(ref.solutions) and guesses == ref.guesses
            assert (sols == np.array(ref.solutions, dtype=np.uint8).reshape(-1, shape.cells)).all()
    sols, counts, guesses = solver.solve_batch(q, limit=2)
    assert (counts == 1).all() and (sols == a).all() and valid_solutions(sols).all()
    assert guesses.tolist() == [reference_solve(p).guesses for p in q]
    for x, y in zip(solver.solve_batch(blanked, limit=2), solver.solve_batch(blanked, limit=2, parallel=True)):
        assert (x == y).all()


def test_small_shapes_count_solutions(small):
    shape, q, _, blanked = small
    # every clue of a random minimal puzzle is needed: dropping any one leaves at least two solutions
    for p in q[:10]:
        for c in np.flatnonzero(p):
            holed = p.copy()
            holed[c] = 0
            assert solver.count_solutions(holed, limit=2) == 2
    # exact counts below the limit (a minimal puzzle less one clue has 2 to ~10 solutions): puzzles with exactly
    # two solutions count 2 under a larger limit too
    rng = np.random.default_rng(2)
    holed = q[:60].copy()
    for p in holed:
        p[rng.choice(np.flatnonzero(p))] = 0
    exact = [len(reference_solve(p, limit=10).solutions) for p in holed]
    assert 2 in exact
    assert solver.solve_batch(holed, limit=10)[1].tolist() == exact
    assert solver.solve_batch(blanked, limit=3)[1].tolist() == [len(reference_solve(p, 3).solutions) for p in blanked]
    if shape == SUDOKU_4:
        assert solver.count_solutions(np.zeros(16, dtype=np.uint8), limit=1000) == 288  # all 4x4 Sudokus


def test_small_shapes_contradictions_and_validation(small):
    shape, q, a, _ = small
    clash = a[0].copy()
    clash[:2] = 0
    clash[0] = clash[1] = 1  # two 1s in row 0
    assert solver.count_solutions(clash) == 0 and solver.solve(clash) is None
    assert reference_solve(clash).solutions == []
    with pytest.raises(ValueError, match=f"1..{shape.n}"):
        solver.solve(np.full(shape.cells, shape.n + 1))
    full = a[0]
    assert solver.count_solutions(full) == 1 and solver.rate(full) == 0
    assert format_grid(solver.solve(format_grid(q[0]))) == format_grid(a[0])  # a string tells its shape too
