"""`python -m cgar.data` end to end: generate chunks -> split -> build -> check, exit codes and messages."""

import json
import subprocess
import sys

import numpy as np

from cgar.sudoku.grid import parse_grids, valid_solutions

MIX = "kaggle_like=0.3,unbiased_like=0.5,lowclue=0,hard=0.2"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cgar.data", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_pipeline_end_to_end(tmp_path):
    for k in (0, 1):
        r = cli("generate", "--seed", 3, "--chunk", k, "--size", 40, "--mix", MIX, "--hard-threshold", 5,
                "--out", f"pool/c{k}.csv", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    again = cli("generate", "--seed", 3, "--chunk", 1, "--size", 40, "--mix", MIX, "--hard-threshold", 5,
                "--out", "pool/again.csv", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "pool/again.csv").read_bytes() == (tmp_path / "pool/c1.csv").read_bytes()

    r = cli("split", "pool/c0.csv", "pool/c1.csv", "--train", "train.csv", "--test", "test.csv", "--test-size", 30,
            "--summary", "split.json", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["test_rows"] == 30 and split["train_rows"] + split["test_rows"] == split["classes"]

    r = cli("build", "--train", "train.csv", "--test", "test.csv", "--out", "ds", "--subsample-size", 20,
            "--num-aug", 5, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    labels = np.load(tmp_path / "ds/train/all__labels.npy")
    assert labels.shape == (120, 81) and valid_solutions(labels.astype(int) - 1).all()

    r = cli("check", "--train", "ds/train", "--test", "ds/test", "--verify-manifest", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["leaks"] == 0 and report["manifests_verified"] == ["ds"]

    # a test puzzle that is a symmetry of a train puzzle: the checker finds it and exits 1
    train_lines = (tmp_path / "train.csv").read_text().splitlines()
    src, q, a, *rest = train_lines[1].split(",")  # rest: rating and the class-rating columns
    flip = lambda s: "".join(s[c * 9 + r] for r in range(9) for c in range(9))  # noqa: E731  (transpose)
    with open(tmp_path / "test.csv", "a") as f:
        f.write(",".join([src, flip(q), flip(a), *rest]) + "\n")
    r = cli("check", "--train", "train.csv", "--test", "test.csv", "--quiet", cwd=tmp_path)
    assert r.returncode == 1 and json.loads(r.stdout)["leaks"] == 1 and "LEAK" in r.stderr
    assert valid_solutions(parse_grids([flip(a)])).all()


def test_bad_input_exits_2_with_a_located_message(tmp_path):
    (tmp_path / "bad.csv").write_text("source,question,answer,rating\nx,123,456,1\n")
    r = cli("import", "bad.csv", "--out", "out.csv", cwd=tmp_path)
    assert r.returncode == 2 and "bad.csv:2: question: expected 81 characters (a 9x9 grid), got 3" in r.stderr
    assert not (tmp_path / "out.csv").exists()
    r = cli("generate", "--seed", 0, "--chunk", 0, "--size", 5, "--mix", "hard=0.5", "--out", "x.csv", cwd=tmp_path)
    assert r.returncode == 2 and "sum to 0.5" in r.stderr
    r = cli("build", "--train", "missing.csv", "--test", "missing.csv", "--out", "ds", cwd=tmp_path)
    assert r.returncode == 2 and "missing.csv" in r.stderr
