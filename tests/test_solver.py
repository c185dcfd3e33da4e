import numpy as np
import pytest

from cgar.sudoku import solver
from cgar.sudoku.generate import SourceMix, generate_chunk
from cgar.sudoku.grid import format_grid, givens_consistent, parse_grid, parse_grids, valid_solutions
from cgar.sudoku.reference import reference_solve

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


def search(puzzle, limit, excl=None):
    """(count, guesses, guesses_at_first, solutions) from the numba core."""
    sols = np.zeros((limit, 81), dtype=np.uint8)
    excl = np.zeros(81, dtype=np.int32) if excl is None else excl
    count, guesses, first = solver.search(puzzle, excl, limit, False, solver.new_workspace(), sols)
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
