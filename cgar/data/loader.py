"""Batches for training and evaluation, with TRM's `puzzle_dataset.py` semantics, seeded and resumable.

Training (spec §1.7): an *iteration* is `epochs_per_iter` epochs; each epoch is a random permutation of the
groups (original puzzles), and each group contributes one random example (the original or one of its
augmentations). The iteration's example list is cut into global batches and a final partial batch is dropped.
The iteration's randomness comes from Philox(seed + iteration) as in TRM, so a position (iteration, batch)
is all a checkpoint needs to resume the exact stream. Rank r of W takes rows [r*B/W, (r+1)*B/W) of each
global batch B.

Evaluation: the split in order, in global batches; the rank's slice is padded to the local batch size with
pad inputs and ignored labels, and the number of real rows is returned alongside.

Batches are dicts of int32 tensors: inputs [b, L] (tokens 1..n+1), labels [b, L] (2..n+1, or -100 = ignore),
puzzle_identifiers [b]; L = n*n cells of the dataset's grid (81 for the paper's 9x9, 36 for 6x6, 16 for 4x4).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from cgar.config import ConfigError
from cgar.io_utils import DataError
from cgar.sudoku.grid import GridShape, shape_of

IGNORE_LABEL_ID = -100
_EXPECTED_META = {"pad_id": 0, "ignore_label_id": 0}


def grid_dims(shape: GridShape) -> dict[str, int]:
    """dataset.json's seq_len / vocab_size for a grid: one token per cell; 0 pad, 1 blank, 2..n+1 digits."""
    return {"seq_len": shape.cells, "vocab_size": shape.n + 2}


def read_meta(meta_path: Path) -> tuple[dict, GridShape]:
    """A split's dataset.json and the grid it holds, checked: seq_len and vocab_size must both be those of one
    supported grid (9x9: 81 / 11, 6x6: 36 / 8, 4x4: 16 / 6)."""
    if not meta_path.is_file():
        raise DataError(meta_path, f"missing: {meta_path.parent} is not a built dataset split "
                        "(run `python -m cgar.data build`)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(meta_path, f"not valid JSON ({e})") from None
    for key, want in _EXPECTED_META.items():
        if meta.get(key) != want:
            raise DataError(meta_path, f"{key} is {meta.get(key)!r}, expected {want!r} for Sudoku")
    try:
        shape = shape_of(meta.get("seq_len"))
    except (ValueError, TypeError):  # TypeError: an unhashable value (a list)
        raise DataError(meta_path, f"seq_len is {meta.get('seq_len')!r}, expected the cells of a supported grid: "
                        "81 (9x9), 36 (6x6) or 16 (4x4)") from None
    want = grid_dims(shape)["vocab_size"]
    if meta.get("vocab_size") != want:
        raise DataError(meta_path, f"vocab_size is {meta.get('vocab_size')!r}, expected {want} for seq_len "
                        f"{shape.cells} (a {shape.name} grid: pad, blank and {shape.n} digits)")
    if meta.get("grid", shape.name) != shape.name:  # the field is ours (HRM/TRM's datasets lack it): optional
        raise DataError(meta_path, f"grid is {meta['grid']!r}, but seq_len {shape.cells} is a {shape.name} grid")
    return meta, shape


def dataset_dims(data_dir: str | os.PathLike, split: str = "train") -> dict[str, int]:
    """{seq_len, vocab_size} of a built dataset (from `<data_dir>/<split>/dataset.json`): the model's input size."""
    _, shape = read_meta(Path(data_dir) / split / "dataset.json")
    return grid_dims(shape)


@dataclass(frozen=True)
class SplitArrays:
    """One split of a built dataset; inputs and labels are memory-mapped (uint8 [N, seq_len])."""

    path: Path
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray  # int32[N]
    puzzle_indices: np.ndarray  # int32[N+1]
    group_indices: np.ndarray  # int32[G+1]
    meta: dict
    shape: GridShape  # the grid, told by dataset.json's seq_len

    @property
    def seq_len(self) -> int:
        return self.shape.cells

    @property
    def vocab_size(self) -> int:
        return grid_dims(self.shape)["vocab_size"]

    def fitting(self, model, where):
        """`model` (a TRM), checked to read this split's grid: a checkpoint trained on another grid is refused here,
        naming `where` (its file), instead of failing inside torch."""
        cfg = model.config
        if (cfg.seq_len, cfg.vocab_size) != (self.seq_len, self.vocab_size):
            raise DataError(where, f"model has seq_len {cfg.seq_len} / vocab_size {cfg.vocab_size}, but {self.path} "
                            f"holds {self.shape.name} grids (seq_len {self.seq_len}, vocab_size {self.vocab_size})")
        return model

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


def load_split(data_dir: str | os.PathLike, split: str) -> SplitArrays:
    """Open `<data_dir>/<split>/` written by `python -m cgar.data build` (or HRM/TRM's build script)."""
    d = Path(data_dir) / split
    meta, shape = read_meta(d / "dataset.json")
    arrays = {}
    for name, mmap in (("inputs", "r"), ("labels", "r"), ("puzzle_identifiers", None),
                       ("puzzle_indices", None), ("group_indices", None)):
        p = d / f"all__{name}.npy"
        try:
            arrays[name] = np.load(p, mmap_mode=mmap, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(p, "missing array file") from None
        except ValueError as e:
            raise DataError(p, f"unreadable or truncated .npy file ({e})") from None
    n, L = len(arrays["inputs"]), shape.cells
    for name in ("inputs", "labels"):
        if arrays[name].shape != (n, L):
            raise DataError(d / f"all__{name}.npy", f"must be [N, {L}] (seq_len {L} in dataset.json, "
                            f"N = {n} inputs), got {list(arrays[name].shape)}")
    if len(arrays["puzzle_indices"]) != n + 1 or arrays["group_indices"][-1] != n:
        raise DataError(d, "puzzle_indices/group_indices do not match the number of examples")
    _check_values(d, meta, arrays)
    return SplitArrays(d, meta=meta, shape=shape, **arrays)


def _check_values(d: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Values a training would silently misuse: tokens outside the vocabulary (a label of 99 is never predicted
    and only lowers the accuracy), groups out of order, identifiers past the embedding table, bad source ids."""
    vocab = meta["vocab_size"]
    for name in ("inputs", "labels"):
        a = arrays[name]
        if len(a) and int(a.max()) >= vocab:  # uint8: never negative
            row = int(np.flatnonzero((np.asarray(a) >= vocab).any(axis=1))[0])
            raise DataError(d / f"all__{name}.npy", f"value {int(a[row].max())} at example {row} is outside the "
                            f"vocabulary 0..{vocab - 1}")
    for name in ("group_indices", "puzzle_indices"):
        a = arrays[name]
        if a[0] != 0 or (np.diff(a) < 0).any():
            raise DataError(d / f"all__{name}.npy", "must start at 0 and never decrease")
    ids, table = arrays["puzzle_identifiers"], meta.get("num_puzzle_identifiers")
    if len(ids) and table is not None and (ids.min() < 0 or ids.max() >= table):
        raise DataError(d / "all__puzzle_identifiers.npy", f"identifiers {int(ids.min())}..{int(ids.max())} "
                        f"exceed the table of num_puzzle_identifiers={table} (dataset.json)")
    src_path, names_path = d / "all__source_ids.npy", d / "sources.json"
    if src_path.is_file() and names_path.is_file():
        try:
            names = json.loads(names_path.read_text())
            src = np.load(src_path, allow_pickle=False)
        except (json.JSONDecodeError, ValueError) as e:
            raise DataError(names_path, f"unreadable sources sidecar ({e})") from None
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise DataError(names_path, "must be a JSON list of source names")
        if len(src) != len(ids):
            raise DataError(src_path, f"has {len(src)} source ids for {len(ids)} examples")
        bad = (src < 0) | (src >= len(names))
        if bad.any():
            raise DataError(names_path, f"lists {len(names)} sources, but all__source_ids.npy uses id "
                            f"{int(src[bad][0])} (at example {int(np.flatnonzero(bad)[0])})")


def collate(split: SplitArrays, rows: np.ndarray, local_batch: int) -> dict[str, torch.Tensor]:
    """Gather rows -> int32 tensors; ignore-label 0 -> -100; pad to local_batch with pad/ignore rows."""
    inputs = split.inputs[rows].astype(np.int32)
    labels = split.labels[rows].astype(np.int32)
    labels[labels == split.meta["ignore_label_id"]] = IGNORE_LABEL_ID
    ids = split.puzzle_identifiers[rows].astype(np.int32)
    pad = local_batch - len(rows)
    if pad > 0:
        inputs = np.pad(inputs, ((0, pad), (0, 0)), constant_values=split.meta["pad_id"])
        labels = np.pad(labels, ((0, pad), (0, 0)), constant_values=IGNORE_LABEL_ID)
        ids = np.pad(ids, (0, pad), constant_values=split.meta.get("blank_identifier_id", 0))
    return {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(ids)}


def _local_slice(global_batch: int, rank: int, world: int) -> slice:
    if global_batch % world:
        raise ValueError(f"global batch size {global_batch} is not divisible by world size {world}")
    local = global_batch // world
    return slice(rank * local, (rank + 1) * local)


class TrainStream:
    """Endless stream of local training batches; `state_dict()` is the exact resume position."""

    def __init__(self, split: SplitArrays, global_batch: int, seed: int, epochs_per_iter: int = 1,
                 rank: int = 0, world: int = 1):
        self.split, self.global_batch, self.seed = split, global_batch, seed
        self.epochs_per_iter, self.rank, self.world = epochs_per_iter, rank, world
        self.local = _local_slice(global_batch, rank, world)
        self.batches_per_iter = (epochs_per_iter * split.num_groups) // global_batch
        if self.batches_per_iter == 0:
            raise ConfigError(
                f"train.global_batch_size: {global_batch} exceeds the {epochs_per_iter} x {split.num_groups} "
                f"examples of one "
                f"iteration of {split.path}; raise epochs_per_iter or lower the batch size"
            )
        self.iteration, self.batch = 1, 0  # TRM counts iterations from 1 (Philox(seed + 1) first)
        self._rows: np.ndarray | None = None

    def _iteration_rows(self) -> np.ndarray:
        """Example index of every position of the current iteration (before batching)."""
        rng = np.random.Generator(np.random.Philox(seed=self.seed + self.iteration))
        g = self.split.group_indices
        order = np.concatenate([rng.permutation(self.split.num_groups) for _ in range(self.epochs_per_iter)])
        return rng.integers(g[order], g[order + 1])  # one example per visited group

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"data stream seed {state['seed']} in the checkpoint != configured seed {self.seed}")
        self.iteration, self.batch, self._rows = state["iteration"], state["batch"], None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.batch >= self.batches_per_iter:
            self.iteration, self.batch, self._rows = self.iteration + 1, 0, None
        if self._rows is None:
            self._rows = self._iteration_rows()
        start = self.batch * self.global_batch
        rows = self._rows[start : start + self.global_batch][self.local]
        self.batch += 1
        return collate(self.split, rows, self.local.stop - self.local.start)


def eval_batches(split: SplitArrays, global_batch: int, rank: int = 0, world: int = 1,
                 start: int = 0, stop: int | None = None) -> Iterator[tuple[dict[str, torch.Tensor], np.ndarray]]:
    """Yield (padded local batch, example indices of its real rows) over examples [start, stop)."""
    local = _local_slice(global_batch, rank, world)
    stop = split.num_examples if stop is None else stop
    for b0 in range(start, stop, global_batch):
        idx = np.arange(b0, min(b0 + global_batch, stop))[local]
        yield collate(split, idx, local.stop - local.start), idx
