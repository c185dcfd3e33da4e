"""Dataset build: reference layout, seeded subsample/augmentation, manifest, atomic output."""

import json

import numpy as np
import pytest

from cgar.data.build import BuildConfig, build_dataset, verify_manifest
from cgar.io_utils import DataError
from cgar.sudoku.grid import givens_consistent, num_givens, valid_solutions


@pytest.fixture
def csvs(write_pairs_csv):
    train, tp, ts = write_pairs_csv("train.csv", 40, seed=10)
    test, qp, qs = write_pairs_csv("test.csv", 15, seed=11)
    return train, test, (tp, ts), (qp, qs)


def load(split_dir, name):
    return np.load(split_dir / f"all__{name}.npy")


def test_reference_layout(csvs, tmp_path):
    train, test, (tp, ts), (qp, qs) = csvs
    out = tmp_path / "ds"
    build_dataset(train, test, out, BuildConfig(subsample_size=10, num_aug=4, seed=0))
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    tr, te = out / "train", out / "test"
    inputs, labels = load(tr, "inputs"), load(tr, "labels")
    assert inputs.shape == labels.shape == (50, 81) and inputs.dtype == np.uint8
    assert inputs.min() >= 1 and inputs.max() <= 10 and labels.min() >= 2 and labels.max() <= 10
    np.testing.assert_array_equal(load(tr, "puzzle_indices"), np.arange(51))
    np.testing.assert_array_equal(load(tr, "group_indices"), np.arange(0, 51, 5))
    assert load(tr, "puzzle_identifiers").dtype == np.int32 and not load(tr, "puzzle_identifiers").any()
    meta = json.loads((tr / "dataset.json").read_text())
    assert meta == {
        "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 81,
        "num_puzzle_identifiers": 1, "total_groups": 10, "mean_puzzle_examples": 1, "total_puzzles": 10,
        "sets": ["all"],
    }
    # every example is a valid pair; originals are rows of the CSV; augmentations keep the givens count
    p, s = inputs.astype(int) - 1, labels.astype(int) - 1
    assert valid_solutions(s).all() and givens_consistent(p, s).all()
    originals = p[::5]
    csv_rows = {row.tobytes() for row in tp.astype(int)}
    assert all(row.tobytes() in csv_rows for row in originals)
    assert (num_givens(p).reshape(10, 5) == num_givens(originals)[:, None]).all()
    # sidecars: each example carries its group's rating and source (CSV ratings are the row index)
    ratings = load(tr, "ratings")
    assert ratings.dtype == np.int32 and (ratings.reshape(10, 5) == ratings[::5, None]).all()
    assert json.loads((te / "sources.json").read_text()) == ["src_a", "src_b"]
    np.testing.assert_array_equal(load(te, "ratings"), np.arange(15))
    np.testing.assert_array_equal(load(te, "source_ids"), np.arange(15) % 2 == 0)  # odd rows are src_a (id 0)
    # test split: every CSV row, in order, not augmented
    np.testing.assert_array_equal(load(te, "inputs").astype(int) - 1, qp)
    np.testing.assert_array_equal(load(te, "group_indices"), np.arange(16))


def test_same_seed_same_bytes_and_seed_matters(csvs, tmp_path):
    train, test, *_ = csvs
    cfg = BuildConfig(subsample_size=8, num_aug=3, seed=5)
    a = build_dataset(train, test, tmp_path / "a", cfg)
    b = build_dataset(train, test, tmp_path / "b", cfg)
    assert a["files"] == b["files"]
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    c = build_dataset(train, test, tmp_path / "c", BuildConfig(subsample_size=8, num_aug=3, seed=6))
    assert c["files"]["train/all__inputs.npy"] != a["files"]["train/all__inputs.npy"]
    assert c["files"]["test/all__inputs.npy"] == a["files"]["test/all__inputs.npy"]


def test_min_difficulty_filters_both_splits(csvs, tmp_path):
    train, test, *_ = csvs  # ratings are the row index 0..n-1
    m = build_dataset(train, test, tmp_path / "ds", BuildConfig(subsample_size=None, num_aug=0, min_difficulty=10))
    assert m["splits"]["train"]["groups"] == 30  # ratings 10..39 of 0..39
    assert m["splits"]["test"]["groups"] == 5  # ratings 10..14 of 0..14


def test_min_difficulty_emptying_test_is_an_error(csvs, tmp_path):
    train, test, *_ = csvs
    with pytest.raises(DataError, match="test.csv: no test rows"):
        build_dataset(train, test, tmp_path / "ds", BuildConfig(num_aug=0, min_difficulty=20))
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]  # no temporary left behind


def test_manifest_verifies_and_detects_tampering(csvs, tmp_path):
    train, test, *_ = csvs
    out = tmp_path / "ds"
    m = build_dataset(train, test, out, BuildConfig(subsample_size=5, num_aug=2, seed=1))
    assert m["splits"]["train"]["examples"] == 15 and m["config"]["seed"] == 1
    assert set(m["files"]) >= {f"{s}/all__{n}.npy" for s in ("train", "test") for n in ("inputs", "labels")}
    verify_manifest(out)
    labels = out / "test/all__labels.npy"
    arr = np.load(labels)
    arr[0, 0] = 2 if arr[0, 0] != 2 else 3
    np.save(labels, arr)
    with pytest.raises(DataError, match=r"test/all__labels.npy: sha256 .* does not match manifest.json"):
        verify_manifest(out)


def test_bad_answer_names_file_and_line(tmp_path, write_pairs_csv):
    train, *_ = write_pairs_csv("train.csv", 5, seed=2)
    lines = train.read_text().splitlines()
    src, q, a, r = lines[3].split(",")
    lines[3] = ",".join([src, q, a[:-1] + ("1" if a[-1] != "1" else "2"), r])
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train.csv:4: answer is not a valid grid"):
        build_dataset(train, train, tmp_path / "ds", BuildConfig(num_aug=1))
    assert not (tmp_path / "ds").exists()


def test_rebuild_replaces_existing_output(csvs, tmp_path):
    train, test, *_ = csvs
    out = tmp_path / "ds"
    build_dataset(train, test, out, BuildConfig(subsample_size=4, num_aug=1, seed=0))
    m = build_dataset(train, test, out, BuildConfig(subsample_size=6, num_aug=1, seed=0))
    assert np.load(out / "train/all__inputs.npy").shape == (12, 81)
    assert m == json.loads((out / "manifest.json").read_text())


def test_non_utf8_bytes_are_refused_with_file_and_line(write_pairs_csv, tmp_path):
    """Issue 11: a stray byte that is not UTF-8 (a Latin-1 file, a corrupt copy) names its file and line, in the
    build and in the split step alike, instead of a UnicodeDecodeError traceback."""
    from cgar.data.split import read_pool

    train, *_ = write_pairs_csv("train.csv", 6, seed=1)
    test, *_ = write_pairs_csv("test.csv", 3, seed=2)
    lines = train.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"src_", b"sr\xffc_", 1)  # line 4 of the file (header = line 1)
    train.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"train.csv:4: not valid UTF-8 \(byte 0xff\)"):
        build_dataset(train, test, tmp_path / "ds", BuildConfig(subsample_size=None, num_aug=1))
    with pytest.raises(DataError, match=r"train.csv:4: not valid UTF-8 \(byte 0xff\)"):
        read_pool([train])
    assert not (tmp_path / "ds").exists()


def with_class_rating(src, dst):
    """Copy of a puzzle CSV with class_rating = 100 - 2.25 * rating (so the two orders are opposite)."""
    lines = src.read_text().splitlines()
    out = [lines[0] + ",class_rating,class_rating_sd"]
    for line in lines[1:]:
        rating = int(line.rsplit(",", 1)[1])
        out.append(f"{line},{100 - 2.25 * rating:.2f},1.00")
    dst.write_text("\n".join(out) + "\n")
    return dst


def test_difficulty_is_the_class_rating_when_the_csv_has_it(csvs, tmp_path):
    train, test, *_ = csvs
    ctrain, ctest = with_class_rating(train, tmp_path / "ctrain.csv"), with_class_rating(test, tmp_path / "ctest.csv")
    cfg = BuildConfig(subsample_size=None, num_aug=0, min_difficulty=80)
    m = build_dataset(ctrain, ctest, tmp_path / "ds", cfg)  # auto: class_rating >= 80 <=> rating <= 8
    assert m["difficulty_column"] == {"train": "class_rating", "test": "class_rating"}
    assert m["splits"]["train"]["groups"] == 9 and m["splits"]["test"]["groups"] == 9
    # sidecar: the class rating rounded half to even: 100 - 2.25 * r for r = 0..8 (97.75 -> 98, 95.5 -> 96, ...)
    assert load(tmp_path / "ds" / "test", "ratings").tolist() == [100, 98, 96, 93, 91, 89, 86, 84, 82]
    plain = build_dataset(ctrain, ctest, tmp_path / "ds2", BuildConfig(subsample_size=None, num_aug=0,
                                                                      min_difficulty=10, difficulty="rating"))
    assert plain["difficulty_column"]["test"] == "rating" and plain["splits"]["test"]["groups"] == 5
    with pytest.raises(DataError, match=r"train.csv:1: difficulty column 'class_rating' is not in the header"):
        build_dataset(train, test, tmp_path / "ds3", BuildConfig(num_aug=0, difficulty="class_rating"))
    with pytest.raises(ValueError, match="difficulty must be one of"):
        BuildConfig(difficulty="tdoku")
