"""cgar.trace: one puzzle's prediction per supervision step agrees with the full evaluation of the same puzzle."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cgar.data.loader import eval_batches, load_split
from cgar.evaluate import Results, evaluate_full
from cgar.model import TRM, TRMConfig
from cgar.trace import main, tokens_to_digits

S = 4
TINY = TRMConfig(hidden_size=32, num_heads=2, halt_max_steps=S, H_cycles=2, L_cycles=2)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = TRM(TINY)
    path = tmp_path_factory.mktemp("trace") / "model.pt"
    torch.save({"model_config": dataclasses.asdict(TINY), "state_dict": model.state_dict(), "step": 7}, path)
    return path, model


def test_tokens_to_digits():
    assert tokens_to_digits(np.array([0, 1, 2, 10])) == [0, 0, 1, 9]


def test_trace_matches_the_full_evaluation(data_dir, model_path, tmp_path):
    path, model = model_path
    torch.set_num_threads(1)
    split = load_split(data_dir, "test")
    res = evaluate_full(model, eval_batches(split, 4), Results.empty(split.num_examples, S))
    for index in (0, 3):
        out = tmp_path / f"trace{index}.json"
        assert main(["--checkpoint", str(path), "--data", str(data_dir), "--index", str(index), "--out", str(out)]) == 0
        t = json.loads(out.read_text())
        assert t["step"] == 7 and t["max_steps"] == S and t["index"] == index
        assert len(t["predictions"]) == S and all(len(p) == 81 for p in t["predictions"])
        assert t["puzzle"] == tokens_to_digits(split.inputs[index]) and 0 not in t["solution"]
        # the right-cell count per step is the one the evaluator recorded for this puzzle
        assert t["cells_correct"] == res.cells[index].tolist()
        right = [sum(p == s for p, s in zip(pred, t["solution"])) for pred in t["predictions"]]
        assert right == t["cells_correct"]  # the digits drawn are the predictions that were scored
        np.testing.assert_allclose(t["q_halt"], res.q_halt[index], rtol=1e-5)


def test_bad_index_is_named(data_dir, model_path, tmp_path, capsys):
    assert main(["--checkpoint", str(model_path[0]), "--data", str(data_dir), "--index", "999",
                 "--out", str(tmp_path / "t.json")]) == 2
    assert "--index: 999 is outside the 8 examples of test" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
