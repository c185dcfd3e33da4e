"""Training/eval batch streams: TRM semantics, ranks partition the global batch, exact resume."""

import numpy as np
import pytest
import torch

from cgar.data.build import BuildConfig, build_dataset
from cgar.data.loader import IGNORE_LABEL_ID, TrainStream, eval_batches, load_split
from cgar.io_utils import DataError


@pytest.fixture
def dataset(tmp_path, write_pairs_csv):
    train, *_ = write_pairs_csv("train.csv", 20, seed=1)
    test, *_ = write_pairs_csv("test.csv", 11, seed=2)
    build_dataset(train, test, tmp_path / "ds", BuildConfig(subsample_size=None, num_aug=3, seed=0))
    return tmp_path / "ds"


def test_train_stream_epoch_semantics(dataset):
    split = load_split(dataset, "train")
    s = TrainStream(split, global_batch=8, seed=0, epochs_per_iter=2)
    assert s.batches_per_iter == 5  # 2 epochs x 20 groups = 40 positions = 5 full batches
    batches = [next(s) for _ in range(5)]
    inputs = torch.cat([b["inputs"] for b in batches]).numpy()
    # each epoch visits every group exactly once: map each row back to its group
    all_inputs = np.asarray(split.inputs).astype(np.int32)
    groups = []
    for row in inputs:
        hits = np.flatnonzero((all_inputs == row).all(axis=1))
        groups.append(int(np.searchsorted(split.group_indices, hits[0], side="right") - 1))
    assert sorted(groups[:20]) == list(range(20)) and sorted(groups[20:]) == list(range(20))
    assert batches[0]["inputs"].dtype == torch.int32 and batches[0]["labels"].min() >= 2


def test_ranks_partition_the_global_batch(dataset):
    split = load_split(dataset, "train")
    full = TrainStream(split, 8, seed=3)
    parts = [TrainStream(split, 8, seed=3, rank=r, world=2) for r in range(2)]
    for _ in range(7):  # crosses an iteration boundary (2 batches per iteration)
        want = next(full)["inputs"]
        got = torch.cat([next(p)["inputs"] for p in parts])
        assert torch.equal(want, got)


def test_resume_from_state_dict(dataset):
    split = load_split(dataset, "train")
    a = TrainStream(split, 4, seed=5)
    for _ in range(6):
        next(a)
    b = TrainStream(split, 4, seed=5)
    b.load_state_dict(a.state_dict())
    for _ in range(8):
        assert torch.equal(next(a)["inputs"], next(b)["inputs"])
    with pytest.raises(ValueError, match="seed"):
        TrainStream(split, 4, seed=6).load_state_dict(a.state_dict())


def test_eval_batches_cover_split_once_with_padding(dataset):
    split = load_split(dataset, "test")
    seen = []
    for rank in range(2):
        for batch, idx in eval_batches(split, 4, rank=rank, world=2):
            assert batch["inputs"].shape == (2, 81)
            n = len(idx)
            assert (batch["inputs"][n:] == 0).all() and (batch["labels"][n:] == IGNORE_LABEL_ID).all()
            seen.extend(idx.tolist())
    assert sorted(seen) == list(range(11))


def test_batch_too_large_and_bad_dirs(dataset, tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        TrainStream(load_split(dataset, "train"), 64, seed=0)
    with pytest.raises(DataError, match="not a built dataset split"):
        load_split(tmp_path, "train")
    (dataset / "test/all__labels.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="all__labels.npy: unreadable or truncated"):
        load_split(dataset, "test")


def _corrupt(dataset, split: str, name: str, edit) -> None:
    """Rewrite one array of a built split through `edit(array) -> array` (a loadable .npy with bad values)."""
    p = dataset / split / f"all__{name}.npy"
    np.save(p, edit(np.load(p)), allow_pickle=False)


@pytest.mark.parametrize(
    "name, edit, file, match",
    [
        ("labels", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 85, 99, a).astype(a.dtype),
         "all__labels.npy", r"value 99 at example 1 is outside the vocabulary 0\.\.10"),
        ("inputs", lambda a: (a * 0 + 11).astype(a.dtype), "all__inputs.npy", "value 11 at example 0"),
        ("group_indices", lambda a: np.concatenate([[0, 5, 3], a[3:]]).astype(a.dtype), "all__group_indices.npy",
         "never decrease"),
        ("puzzle_identifiers", lambda a: a + 1, "all__puzzle_identifiers.npy",
         r"identifiers 1\.\.1 exceed the table of num_puzzle_identifiers=1"),
        ("source_ids", lambda a: (a * 0 + 5).astype(a.dtype), "sources.json",
         "lists 2 sources, but all__source_ids.npy uses id 5 \\(at example 0\\)"),
        ("source_ids", lambda a: a[:-1], "all__source_ids.npy", "source ids for 80 examples"),
    ],
)
def test_bad_values_are_refused_naming_the_file(dataset, name, edit, file, match):
    _corrupt(dataset, "train", name, edit)
    with pytest.raises(DataError, match=match) as e:
        load_split(dataset, "train")
    assert e.value.where == str(dataset / "train" / file)
    load_split(dataset, "test")  # the other split is untouched and loads


def test_sources_json_must_list_names(dataset):
    (dataset / "test/sources.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="sources.json: must be a JSON list of source names"):
        load_split(dataset, "test")
