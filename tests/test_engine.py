"""DeepSpeed engine setup and atomic checkpoints (single process, CPU, gloo)."""

import deepspeed
import pytest
import torch

from cgar.engine import Checkpointer, compute_init, ds_config
from cgar.io_utils import DataError


@pytest.fixture(scope="module")
def runtime():
    return compute_init("cpu")


def make_engine(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config(4, 1))
    return engine


def train(engine, steps, gen):
    for _ in range(steps):
        x = torch.randn(4, 6, generator=gen)
        loss = engine(x).pow(2).mean()
        engine.backward(loss)
        engine.step()


def params(engine):
    return torch.cat([p.detach().flatten() for p in engine.module.parameters()])


def test_config_has_no_clipping_and_global_batch(runtime):
    cfg = ds_config(768, 4)
    assert cfg["gradient_clipping"] == 0.0 and cfg["train_micro_batch_size_per_gpu"] == 192
    with pytest.raises(ValueError, match="not divisible"):
        ds_config(768, 5)
    engine = make_engine()
    assert engine.gradient_clipping() == 0.0


def test_save_load_resumes_exactly(runtime, tmp_path):
    ck = Checkpointer(tmp_path / "ckpt", keep=2)
    gen = torch.Generator().manual_seed(1)
    a = make_engine()
    train(a, 3, gen)
    ck.save(a, 3, {"step": 3, "ema": params(a)}, {"gen": gen.get_state()}, rank=0)
    train(a, 4, gen)
    want = params(a)

    b = make_engine(seed=99)  # different init: everything must come from the checkpoint
    shared, rank_state = ck.load(b, rank=0)
    assert shared["step"] == 3
    gen_b = torch.Generator()
    gen_b.set_state(rank_state["gen"])
    train(b, 4, gen_b)
    assert torch.equal(params(b), want)


def test_latest_only_names_complete_checkpoints(runtime, tmp_path):
    ck = Checkpointer(tmp_path / "ckpt", keep=2)
    e = make_engine()
    for step in (1, 2, 3):
        ck.save(e, step, {"step": step}, {}, rank=0)
    assert ck.latest_tag() == "step0000003"
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step*")) == ["step0000002", "step0000003"]
    # a save killed half-way leaves only a hidden temporary: latest still names step 3, next save cleans up
    (tmp_path / "ckpt/.tmp-step0000004").mkdir()
    assert ck.latest_tag() == "step0000003"
    ck.save(e, 5, {"step": 5}, {}, rank=0)
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))


def test_missing_and_corrupt_checkpoints_are_clear_errors(runtime, tmp_path):
    ck = Checkpointer(tmp_path / "ckpt")
    e = make_engine()
    assert ck.load(e, rank=0) is None  # fresh run
    ck.save(e, 1, {"step": 1}, {}, rank=0)
    model_file = next((tmp_path / "ckpt/step0000001").glob("*model_states.pt"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(DataError, match="step0000001: corrupt checkpoint"):
        ck.load(e, rank=0)
    (tmp_path / "ckpt/latest").write_text("step0000009\n")
    with pytest.raises(DataError, match="latest: names checkpoint 'step0000009', which does not exist"):
        ck.load(e, rank=0)
