"""Sharded evaluation: shard ranges are whole batches covering every example once, K shards merged give exactly
the unsharded eval.json and eval.parquet, and the merge refuses incomplete or mismatched shards."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from cgar import eval_shards, evaluate
from cgar.eval_shards import shard_range
from tests.test_evaluate import N_TEST, _cli, checkpoint, data_dir  # noqa: F401  (fixtures)

TIMING = ("wall_s", "puzzles_per_s")


def test_shard_ranges():
    assert [shard_range(13, 4, i, 2) for i in range(2)] == [(0, 8), (8, 13)]
    assert [shard_range(13, 4, i, 3) for i in range(3)] == [(0, 4), (4, 8), (8, 13)]
    assert [shard_range(8, 4, i, 3) for i in range(3)] == [(0, 0), (0, 4), (4, 8)]  # more shards than batches
    for n, gb, k in ((423168, 768, 7), (1, 16, 4), (100, 10, 10), (101, 10, 3)):
        ranges = [shard_range(n, gb, i, k) for i in range(k)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(a % gb == 0 for a, _ in ranges if a < n)  # every shard starts at a batch border
    with pytest.raises(evaluate.DataError, match="expected I/K"):
        eval_shards.parse_shard("2/2")


def _evaluate(args, tmp_path):
    """The evaluate CLI in its own process (with a timeout): an in-process call would tear down the default process
    group, which DeepSpeed's communication backend of later tests in this session still refers to."""
    r = _cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_sharded_equals_unsharded(data_dir, checkpoint, tmp_path):  # noqa: F811
    common = ["--checkpoint", checkpoint, "--data", data_dir, "--batch-size", 4, "--device", "cpu"]
    _evaluate(common + ["--out-dir", tmp_path / "one"], tmp_path)
    k = 3
    for i in range(k):
        _evaluate(common + ["--out-dir", tmp_path / "shards", "--shard", f"{i}/{k}"], tmp_path)
    tables = [tmp_path / "shards" / f"eval.shard{i}of{k}.parquet" for i in range(k)]
    assert [json.loads(t.with_suffix(".json").read_text())["range"] for t in tables] == [[0, 4], [4, 8], [8, N_TEST]]
    assert eval_shards.main([*map(str, tables), "--data", str(data_dir), "--out-dir", str(tmp_path / "merged")]) == 0

    one = json.loads((tmp_path / "one/eval.json").read_text())
    merged = json.loads((tmp_path / "merged/eval.json").read_text())
    assert list(merged) == list(one)  # the same fields, in the same order
    assert {k: v for k, v in merged.items() if k not in TIMING} == {k: v for k, v in one.items() if k not in TIMING}
    assert merged["num_puzzles"] == N_TEST and merged["overall"] == one["overall"]
    assert pq.read_table(tmp_path / "merged/eval.parquet").equals(pq.read_table(tmp_path / "one/eval.parquet"))
    assert {"n_blank", "blank_cells_correct"} <= set(pq.read_schema(tmp_path / "merged/eval.parquet").names)
    assert 0 <= merged["overall"]["blank_token_accuracy"] < 1
    assert all(g["blank_token_accuracy"] is not None for g in merged["by_source"].values())

    # a missing shard, a shard of another K, a shard of another evaluation: refused, naming the file
    with pytest.raises(evaluate.DataError, match=r"expected shards 0..2 of eval once each, got \[0, 2\]"):
        eval_shards.merge([tables[0], tables[2]], data_dir, "test", tmp_path / "x")
    shutil.copy(tables[1], tmp_path / "shards/eval.shard1of4.parquet")
    with pytest.raises(evaluate.DataError, match="shards of different evaluations"):
        eval_shards.merge([tables[0], tmp_path / "shards/eval.shard1of4.parquet", tables[2]], data_dir, "test",
                          tmp_path / "x")
    rec = json.loads(tables[1].with_suffix(".json").read_text())
    tables[1].with_suffix(".json").write_text(json.dumps({**rec, "step": 999}))
    with pytest.raises(evaluate.DataError, match=r"shard1of3.parquet: differs from shard 0 in \['step'\]"):
        eval_shards.merge(tables, data_dir, "test", tmp_path / "x")
    assert not (tmp_path / "x").exists()
