"""Evaluation metrics from per-puzzle, per-step arrays (pure numpy; `cgar.evaluate` produces the arrays).

Inputs, for N puzzles and S = halt_max_steps supervision steps (16 in the paper):
    cells     uint8  [N, S]  label cells predicted right (argmax == label) after step k+1
    n_cells   uint8  [N]     label cells of the puzzle (81 on Sudoku-Extreme)
    q_halt    float  [N, S]  the halting logit after step k+1 (NaN where the step did not run)
    steps_run uint8  [N]     steps computed: S for the full pass, the halting step in ACT mode
    blank_cells, n_blank     the same as cells / n_cells over the cells blank in the puzzle (optional: tables
                             written before they were recorded lack them, and their blank accuracy is None)

Token accuracy counts every label cell, givens included, which a model copies trivially; blank_token_accuracy is
the same per-puzzle share over the blank cells only (the ones to solve), averaged over the puzzles that have any.

Two protocols are derived from the same arrays:
- TRM/CGAR test protocol (spec §1.4): ACT off, every puzzle runs S steps, metrics at step S. Only defined when
  every puzzle ran S steps (`--mode full`).
- ACT inference (spec §3.6 (b)): a puzzle halts at the first step with q_halt > 0, at the latest at step S; its
  answer is the one at that step. The halting step is the "reasoning steps" count.

Halting accuracy (ours; the CGAR paper does not define it, see spec §3.6): the share of puzzles whose halt
decision at the halting step h agrees with correctness there, (q_halt_h > 0) == all cells right at h. A puzzle
that halts early must be solved; one that runs to the cap without q_halt > 0 must be unsolved at S. TRM's own
`q_halt_accuracy` ((q_halt >= 0) == solved, at step S) is reported beside it.
"""

from __future__ import annotations

import numpy as np

# Difficulty buckets over the tdoku backtrack rating (0 = solved without guessing; the test set's mean is ~22):
# roughly log-spaced so each bucket holds a sizeable share of a hard-skewed test set.
RATING_BINS: tuple[tuple[int, int | None, str], ...] = (
    (0, 0, "0"), (1, 2, "1-2"), (3, 9, "3-9"), (10, 29, "10-29"), (30, 99, "30-99"), (100, None, "100+"))

HALTING_ACCURACY_DEFINITION = (
    "share of puzzles where the halt decision at the ACT halting step h (first step with q_halt > 0, else the "
    "last step) agrees with correctness there: (q_halt_h > 0) == (all cells correct at h)")


def solved(cells: np.ndarray, n_cells: np.ndarray, steps_run: np.ndarray) -> np.ndarray:
    """[N, S] bool: all label cells right after step k+1 (False for steps that did not run)."""
    ran = np.arange(cells.shape[1])[None, :] < steps_run[:, None]
    return (cells == n_cells[:, None]) & ran


def halt_steps(q_halt: np.ndarray, steps_run: np.ndarray) -> np.ndarray:
    """[N] int, 1-based ACT halting step: the first step with q_halt > 0, else the last step run.

    NaN (step not run) compares False, so an ACT-mode table gives back exactly its own halting steps."""
    fire = np.nan_to_num(q_halt, nan=-np.inf) > 0  # [N, S]
    first = np.where(fire.any(1), fire.argmax(1) + 1, q_halt.shape[1])
    return np.minimum(first, steps_run.astype(np.int64))


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def _share(right: np.ndarray, total: np.ndarray) -> np.ndarray:
    """[N, S] per-puzzle share of cells right, right / total (0 where total is 0)."""
    return right / np.maximum(total, 1)[:, None].astype(np.float64)


def summarize(cells: np.ndarray, n_cells: np.ndarray, q_halt: np.ndarray, steps_run: np.ndarray,
              blank_cells: np.ndarray | None = None, n_blank: np.ndarray | None = None) -> dict:
    """All metrics of one group of puzzles (see the module docstring); step-S metrics are None unless every
    puzzle ran all S steps, blank-cell ones None without blank_cells / n_blank."""
    N, S = cells.shape
    ok = solved(cells, n_cells, steps_run)  # [N, S]
    tok = _share(cells, n_cells)  # [N, S] token accuracy
    h = halt_steps(q_halt, steps_run)  # [N]
    rows, hi = np.arange(N), h - 1
    ok_h, fire_h = ok[rows, hi], q_halt[rows, hi] > 0  # at the halting step
    full = N > 0 and bool((steps_run == S).all())
    # a puzzle with no blank cell (none in practice) has no blank accuracy: left out, not counted as 0
    blank_s = blank_h = None
    if blank_cells is not None:
        has = n_blank > 0
        blank = _share(blank_cells, n_blank)  # [N, S]
        blank_s, blank_h = _mean(blank[has, -1]), _mean(blank[rows, hi][has])  # step S / the halting step
    out = {
        "n": int(N),
        # TRM/CGAR protocol: ACT off, step S
        "exact_accuracy": _mean(ok[:, -1]) if full else None,
        "token_accuracy": _mean(tok[:, -1]) if full else None,
        "blank_token_accuracy": blank_s if full else None,
        "q_halt_accuracy": _mean((q_halt[:, -1] >= 0) == ok[:, -1]) if full else None,
        "exact_accuracy_by_step": ok.mean(0).tolist() if full else None,
        # an oracle that stops at the first solved step: how much the step cap and halting leave on the table
        "solved_at_any_step": _mean(ok.any(1)) if full else None,
        "mean_first_solved_step": _mean(ok.argmax(1)[ok.any(1)] + 1.0) if full else None,
        "act": {
            "exact_accuracy": _mean(ok_h),
            "token_accuracy": _mean(tok[rows, hi]),
            "blank_token_accuracy": blank_h,
            "mean_halt_step": _mean(h.astype(np.float64)),
            "step_reduction": None if N == 0 else 1.0 - float(h.mean()) / S,
            "halt_step_histogram": np.bincount(h, minlength=S + 1)[1:].tolist(),  # steps 1..S
            "halting_accuracy": _mean(fire_h == ok_h),
            "halted_by_q": _mean(fire_h),  # share that halted on q_halt > 0 rather than the step cap
            "halt_precision": _mean(ok_h[fire_h]),  # solved share of those
        },
    }
    return out


def rating_labels(ratings: np.ndarray) -> np.ndarray:
    """[N] bucket label of each rating (see RATING_BINS)."""
    labels = np.empty(len(ratings), dtype=object)
    for lo, hi, name in RATING_BINS:
        labels[(ratings >= lo) & (ratings <= (np.iinfo(np.int64).max if hi is None else hi))] = name
    return labels


def summarize_all(cells: np.ndarray, n_cells: np.ndarray, q_halt: np.ndarray, steps_run: np.ndarray,
                  ratings: np.ndarray | None = None, sources: np.ndarray | None = None,
                  blank_cells: np.ndarray | None = None, n_blank: np.ndarray | None = None) -> dict:
    """{"overall": ..., "by_rating": {bucket: ...}, "by_source": {name: ...}}; empty groups are left out.

    ratings: [N] int or None; sources: [N] source names (object) or None (a dataset built without sidecars)."""
    arrays = (cells, n_cells, q_halt, steps_run, blank_cells, n_blank)

    def group(mask):
        return summarize(*(None if a is None else a[mask] for a in arrays))

    out = {"overall": summarize(*arrays), "by_rating": {}, "by_source": {}}
    if ratings is not None:
        labels = rating_labels(ratings)
        out["by_rating"] = {name: group(labels == name) for *_, name in RATING_BINS if (labels == name).any()}
    if sources is not None:
        out["by_source"] = {str(s): group(sources == s) for s in sorted(set(sources.tolist()))}
    return out
