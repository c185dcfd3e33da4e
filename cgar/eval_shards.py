"""Sharded evaluation: K jobs by example range, merged into the outputs of one unsharded run.

    python -m cgar.evaluate ... --shard 0/4 --out-dir run/eval_shards   # -> eval.shard0of4.{json,parquet}
    python -m cgar.eval_shards --data DATA --out-dir run run/eval_shards/eval.shard*of4.parquet   # -> eval.{json,parquet}

Shard i of K takes a contiguous run of whole global batches (`shard_range`), so every batch it evaluates is the
batch the unsharded run evaluates at the same place (same puzzles, same padding): per-puzzle results are bitwise
the same, and the merge, which concatenates them and computes the metrics once from all of them, writes exactly
the unsharded eval.json and eval.parquet (wall_s is the shards' sum and puzzles_per_s follows from it; tested).
A shard is one job that either completes or is redone on its own. Full mode only gives this equality: ACT mode
refills slots across batch borders, so its sharded per-puzzle numbers agree only within float tolerance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from cgar.data.loader import load_split
from cgar.io_utils import DataError

# fields only a shard's record has (num_examples: the whole evaluation's), and fields that differ between shards;
# every other field must agree, or the shards are not parts of one evaluation
SHARD_ONLY = ("shard", "range", "num_examples")
PER_SHARD = ("num_puzzles", "wall_s", "puzzles_per_s", "row_steps")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/K' -> (i, K), 0 <= i < K."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise DataError("--shard", f"{text!r}: expected I/K with 0 <= I < K, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_range(num_examples: int, global_batch: int, shard: int, shards: int) -> tuple[int, int]:
    """Examples [start, stop) of shard `shard` of `shards`: whole global batches, as even as possible (a shard
    is empty only when there are fewer batches than shards)."""
    batches = -(-num_examples // global_batch)
    lo, hi = shard * batches // shards, (shard + 1) * batches // shards
    return min(lo * global_batch, num_examples), min(hi * global_batch, num_examples)


def shard_stem(stem: str, shard: int, shards: int) -> str:
    return f"{stem}.shard{shard}of{shards}"


def merge(tables: list[Path], data: Path, split_name: str, out_dir: Path) -> dict:
    """Check that the shard outputs beside `tables` (<stem>.shardIofK.parquet + .json) are all K shards of one
    evaluation, covering every example once, and write <stem>.json / <stem>.parquet from them."""
    from cgar.eval_results import Results, read_table, sidecars, write_outputs

    names = [re.fullmatch(r"(.+)\.shard(\d+)of(\d+)\.parquet", Path(t).name) for t in tables]
    bad = [str(t) for t, m in zip(tables, names) if m is None]
    if bad:
        raise DataError(bad[0], "not a shard table (<stem>.shard<I>of<K>.parquet)")
    stems, ks = {m.group(1) for m in names}, {int(m.group(3)) for m in names}
    if len(stems) != 1 or len(ks) != 1:
        raise DataError(tables[0], f"shards of different evaluations: stems {sorted(stems)}, K {sorted(ks)}")
    (stem,), (k,) = stems, ks
    by_shard = {int(m.group(2)): Path(t) for t, m in zip(tables, names)}
    if sorted(by_shard) != list(range(k)) or len(tables) != k:
        raise DataError(tables[0].parent, f"expected shards 0..{k - 1} of {stem} once each, got {sorted(by_shard)}")
    records, parts, stop = [], [], 0
    for i in range(k):
        rec = json.loads(by_shard[i].with_suffix(".json").read_text())
        a, b = rec["range"]
        if a != stop:
            raise DataError(by_shard[i], f"covers examples [{a}, {b}), expected it to start at {stop}")
        stop = b
        parts.append(Results.from_table(read_table(by_shard[i])))
        records.append(rec)
    first = records[0]
    if stop != first["num_examples"]:
        raise DataError(by_shard[k - 1], f"shards end at example {stop}, the evaluation has {first['num_examples']}")
    for i, rec in enumerate(records[1:], 1):
        diff = sorted(key for key in set(rec) | set(first)
                      if key not in PER_SHARD + SHARD_ONLY[:2] and rec.get(key) != first.get(key))
        if diff:
            raise DataError(by_shard[i], f"differs from shard 0 in {diff}: not the same evaluation")
    merged = Results.merge(parts)
    if (merged.example != np.arange(stop)).any():
        raise DataError(tables[0].parent, f"the shards do not hold examples 0..{stop - 1} once each")
    ratings, sources = sidecars(load_split(data, split_name))
    wall = sum(r["wall_s"] for r in records)
    totals = {"wall_s": round(wall, 3), "puzzles_per_s": round(stop / wall, 3) if wall else None,
              "row_steps": int(merged.steps_run.astype(np.int64).sum())}
    info = {key: totals.get(key, value) for key, value in first.items()  # the unsharded record's key order
            if key not in SHARD_ONLY and key != "num_puzzles"}
    return write_outputs(out_dir, stem, merged, ratings, sources, info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.eval_shards", description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", type=Path, help="every <stem>.shard<I>of<K>.parquet (its .json beside it)")
    ap.add_argument("--data", type=Path, required=True, help="the built dataset the shards evaluated")
    ap.add_argument("--out-dir", type=Path, required=True, help="where <stem>.json and <stem>.parquet go")
    a = ap.parse_args(argv)
    try:
        first = json.loads(a.tables[0].with_suffix(".json").read_text())
        rec = merge(a.tables, a.data, first["split"], a.out_dir)
    except (DataError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {len(a.tables)} shards: {rec['num_puzzles']} puzzles, exact {rec['overall']['exact_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
