"""Per-puzzle evaluation results: the `Results` records the evaluation loops of `cgar.evaluate` fill, their
merge over ranks and shards, and the per-puzzle table (eval.parquet) and eval.json written from them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cgar.data.loader import SplitArrays
from cgar.eval_metrics import HALTING_ACCURACY_DEFINITION, RATING_BINS, halt_steps, solved, summarize_all
from cgar.io_utils import DataError, atomic_write, atomic_write_json


@dataclass
class Results:
    """Per-puzzle, per-step records (rank-local while running), filled in place; rows [0, n) are used."""

    example: np.ndarray  # int64 [C]: index in the split
    cells: np.ndarray  # uint8 [C, S]: label cells right (argmax == label) after step k+1
    n_cells: np.ndarray  # uint8 [C]: label cells of the puzzle
    q_halt: np.ndarray  # float32 [C, S]: halting logit after step k+1, NaN where the step did not run
    steps_run: np.ndarray  # uint8 [C]
    n: int = 0
    # the same counts over the cells blank in the puzzle (the ones to solve): token accuracy counts the givens too,
    # which the model copies trivially. None only for a table written before they were recorded (`from_table`)
    blank_cells: np.ndarray | None = None  # uint8 [C, S]
    n_blank: np.ndarray | None = None  # uint8 [C]

    @classmethod
    def empty(cls, capacity: int, steps: int) -> "Results":
        return cls(np.full(capacity, -1, np.int64), np.zeros((capacity, steps), np.uint8),
                   np.zeros(capacity, np.uint8), np.full((capacity, steps), np.nan, np.float32),
                   np.zeros(capacity, np.uint8), blank_cells=np.zeros((capacity, steps), np.uint8),
                   n_blank=np.zeros(capacity, np.uint8))

    def add(self, idx: np.ndarray) -> np.ndarray:
        """Reserve rows for examples `idx`; returns their row positions."""
        pos = np.arange(self.n, self.n + len(idx))
        self.example[pos] = idx
        self.n += len(idx)
        return pos

    def record(self, pos: np.ndarray, step0: np.ndarray | int, q: torch.Tensor, cells: torch.Tensor,
               n_cells: torch.Tensor, blank: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One supervision step for rows `pos` (step0: 0-based step index, scalar or per row); `blank`: the
        (right cells, label cells) counts over the puzzle's blank cells."""
        self.q_halt[pos, step0] = q.cpu().numpy()
        self.cells[pos, step0] = cells.cpu().numpy()
        self.n_cells[pos] = n_cells.cpu().numpy()
        self.steps_run[pos] = np.asarray(step0) + 1
        self.blank_cells[pos, step0] = blank[0].cpu().numpy()
        self.n_blank[pos] = blank[1].cpu().numpy()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "n" and getattr(self, f.name) is not None}

    def trimmed(self) -> "Results":
        return Results(**{k: v[: self.n] for k, v in self._arrays().items()}, n=self.n)

    @classmethod
    def from_table(cls, table: dict[str, np.ndarray]) -> "Results":
        """The results of a per-puzzle table read back (`read_table`); blank counts None if it predates them."""
        return cls(**{field: table[col] for col, field in TABLE_COLUMNS.items() if col in table},
                   n=len(table["example"]))

    def summary(self, ratings: np.ndarray | None = None, sources: np.ndarray | None = None) -> dict:
        """`summarize_all` of rows [0, n) (ratings / sources: per example of the split, or None)."""
        r = self.trimmed()
        return summarize_all(r.cells, r.n_cells, r.q_halt, r.steps_run,
                             None if ratings is None else ratings[r.example],
                             None if sources is None else sources[r.example], r.blank_cells, r.n_blank)

    @classmethod
    def merge(cls, parts: list["Results"]) -> "Results":
        """Concatenate the ranks' results, ordered by example index (optional fields: only if every part has them)."""
        names = set.intersection(*(set(p._arrays()) for p in parts))
        cat = {f.name: np.concatenate([getattr(p, f.name)[: p.n] for p in parts])
               for f in dataclasses.fields(cls) if f.name in names}
        order = np.argsort(cat["example"], kind="stable")
        return cls(**{k: v[order] for k, v in cat.items()}, n=len(order))


def gather(res: Results) -> Results | None:
    """Rank 0 gets every rank's results merged by example index; other ranks get None."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return Results.merge([res])
    parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(res.trimmed(), parts, dst=0)
    return Results.merge(parts) if dist.get_rank() == 0 else None


def sidecars(split: SplitArrays) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-example ratings [N] and source names [N] from the build's sidecars (None if the split lacks them,
    e.g. one built by the HRM/TRM script)."""
    try:
        ratings = np.load(split.path / "all__ratings.npy", allow_pickle=False)
        ids = np.load(split.path / "all__source_ids.npy", allow_pickle=False)
        names = np.array(json.loads((split.path / "sources.json").read_text()), dtype=object)
    except FileNotFoundError:
        return None, None
    if len(ratings) != split.num_examples or len(ids) != split.num_examples:
        raise DataError(split.path, "ratings/source_ids sidecars do not match the number of examples")
    return ratings, names[ids]


# table column -> Results field, for the columns read back (`Results.from_table`); the last two are absent from
# tables written before blank cells were recorded
TABLE_COLUMNS = {"example": "example", "cells_correct": "cells", "n_cells": "n_cells", "q_halt": "q_halt",
                 "steps_run": "steps_run", "blank_cells_correct": "blank_cells", "n_blank": "n_blank"}


def to_arrow(res: Results, ratings: np.ndarray | None, sources: np.ndarray | None):
    """One row per puzzle: example, source, rating, steps_run, halt_step (ACT: first q_halt > 0, else S),
    n_cells, n_blank (label cells blank in the puzzle), and per step 1..S the lists solved (bool), cells_correct
    (uint8), q_halt (float32), blank_cells_correct (uint8: the right ones of the blank cells). Results without
    blank counts (merged from old tables) leave the two blank columns out."""
    import pyarrow as pa

    S = res.cells.shape[1]

    def per_step(a, typ):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), typ), S)

    ex = res.example
    return pa.table({
        "example": pa.array(ex, pa.int64()),
        "source": (pa.nulls(len(ex), pa.string()) if sources is None
                   else pa.array(sources[ex], pa.string()).dictionary_encode()),
        "rating": pa.array(ratings[ex], pa.int32()) if ratings is not None else pa.nulls(len(ex), pa.int32()),
        "steps_run": pa.array(res.steps_run, pa.uint8()),
        "halt_step": pa.array(halt_steps(res.q_halt, res.steps_run), pa.uint8()),
        "n_cells": pa.array(res.n_cells, pa.uint8()),
        "solved": per_step(solved(res.cells, res.n_cells, res.steps_run), pa.bool_()),
        "cells_correct": per_step(res.cells, pa.uint8()),
        "q_halt": per_step(res.q_halt, pa.float32()),
        **({} if res.blank_cells is None else {"n_blank": pa.array(res.n_blank, pa.uint8()),
                                               "blank_cells_correct": per_step(res.blank_cells, pa.uint8())}),
    })


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """eval.parquet -> numpy arrays (per-step columns as [N, S])."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    out = {}
    for name in t.column_names:
        col = t.column(name).combine_chunks()
        if hasattr(col.type, "list_size"):
            out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        else:
            out[name] = np.asarray(col.to_pylist() if name == "source" else col.to_numpy(zero_copy_only=False))
    return out


def write_outputs(out_dir: Path, stem: str, res: Results, ratings, sources, info: dict,
                  metrics: bool = True) -> dict:
    """<stem>.parquet and <stem>.json (both atomic; without metrics: the info only, as a shard writes it);
    returns the json record."""
    import pyarrow.parquet as pq

    with atomic_write(out_dir / f"{stem}.parquet") as f:
        pq.write_table(to_arrow(res, ratings, sources), f)
    record = {**info, "num_puzzles": int(res.n)}
    if not metrics:
        atomic_write_json(out_dir / f"{stem}.json", record)
        return record
    record = {**record,
              "definitions": {"halting_accuracy": HALTING_ACCURACY_DEFINITION,
                              "rating_buckets": [name for *_, name in RATING_BINS]},
              **res.summary(ratings, sources)}
    atomic_write_json(out_dir / f"{stem}.json", record)
    return record
