"""Gradient statistics (cgar/grad_stats.py): hand-computed variance, linearity of the per-step group gradients."""

import pytest
import torch

from cgar.curriculum import hsw_weights_paper
from cgar.grad_stats import chunk_variance, flat_grads, measure, slot_steps
from cgar.losses import act_loss
from cgar.model import TRM, Carry, TRMConfig, draw_min_halt_steps

CFG = TRMConfig(hidden_size=16, num_heads=2, halt_max_steps=4, H_cycles=2, L_cycles=2, forward_dtype="float32")
B = 12


def _batch(g: torch.Generator) -> dict:
    labels = torch.randint(2, 11, (B, 81), generator=g, dtype=torch.int32)
    blank = torch.rand(B, 81, generator=g) < 0.6
    return {"inputs": torch.where(blank, torch.ones_like(labels), labels), "labels": labels,
            "puzzle_identifiers": torch.zeros(B, dtype=torch.int32)}


@pytest.fixture(scope="module")
def state():
    """A tiny model and a carry whose slots are at mixed supervision steps (a few training-mode steps with
    exploration), plus the next step's batch and exploration minimums."""
    torch.manual_seed(0)
    model = TRM(CFG)
    g = torch.Generator().manual_seed(1)
    carry = model.initial_carry(B)
    with torch.no_grad():
        for _ in range(5):
            mh = draw_min_halt_steps(B, CFG.halt_max_steps, 0.5, g)
            carry, _ = model(carry, _batch(g), depth=(1, 2), min_halt_steps=mh)
            carry.halted = carry.halted | (torch.rand(B, generator=g) < 0.3)  # mix restarts in (as q_halt would)
    return model, carry, _batch(g), draw_min_halt_steps(B, CFG.halt_max_steps, 0.5, g)


def test_slot_steps_by_hand():
    c = Carry(None, None, torch.tensor([0, 2, 3, 4], dtype=torch.int32), torch.tensor([True, False, False, True]), {})
    assert slot_steps(c).tolist() == [1, 3, 4, 1]  # halted slots restart at step 1


def test_chunk_variance_by_hand():
    var, rel = chunk_variance(torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]]))
    # mean (2, 1); squared deviations 1+1, 1+1, 0+4 = 8; / (C - 1) = 4; ||mean||^2 = 5
    assert var == pytest.approx(4.0) and rel == pytest.approx(0.8)


def test_group_gradients_add_up_to_the_full_batch_gradient(state):
    model, carry, batch, mh = state
    params = [p for p in model.parameters() if p.requires_grad]
    t = slot_steps(carry)
    assert len(set(t.tolist())) >= 3, "the fixture should mix supervision steps"
    model.eval()
    try:
        everyone = torch.arange(B)
        (full,) = flat_grads(model, params, carry, batch, (2, 2), mh, everyone, [None])
        groups = [flat_grads(model, params, carry, batch, (2, 2), mh, torch.nonzero(t == s).flatten(), [None])[0]
                  for s in range(1, CFG.halt_max_steps + 1)]
        w = hsw_weights_paper(t, 0.7, CFG.halt_max_steps)
        (weighted,) = flat_grads(model, params, carry, batch, (2, 2), mh, everyone, [w])
    finally:
        model.train()
    assert full.norm() > 0
    torch.testing.assert_close(torch.stack(groups).sum(0), full, rtol=1e-4, atol=1e-6)
    # and the HSW-weighted gradient is the step-weighted sum of the same groups
    lam = [float(hsw_weights_paper(torch.tensor([s]), 0.7, CFG.halt_max_steps)) for s in range(1, 5)]
    torch.testing.assert_close(sum(a * g for a, g in zip(lam, groups)), weighted, rtol=1e-4, atol=1e-7)
    # the same full gradient as a plain training-mode forward of the whole batch (what the training step computes)
    new, out = model(carry, batch, depth=(2, 2), min_halt_steps=mh)
    loss, _ = act_loss(out.logits, out.q_halt, new.data["labels"], new.halted, new.steps)
    ref = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(loss, params)])
    torch.testing.assert_close(full, ref, rtol=1e-4, atol=1e-6)


def test_measure_matches_its_definition(state):
    model, carry, batch, mh = state
    params = [p for p in model.parameters() if p.requires_grad]
    t = slot_steps(carry)
    w = hsw_weights_paper(t, 0.7, CFG.halt_max_steps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = measure(model, carry, batch, (2, 2), mh, w, chunks=3, global_batch=B)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in params)  # autograd.grad: nothing accumulated
    assert stats["slots_by_step"] == [int((t == s).sum()) for s in range(1, 5)]
    model.eval()
    chunks_u, chunks_w = [], []
    for c in range(3):
        gu, gw = flat_grads(model, params, carry, batch, (2, 2), mh, torch.arange(4 * c, 4 * c + 4), [None, w])
        chunks_u.append(gu / 4)
        chunks_w.append(gw / 4)
    s1 = torch.nonzero(t == 1).flatten()
    (g1,) = flat_grads(model, params, carry, batch, (2, 2), mh, s1, [None])
    model.train()
    assert stats["grad_norm_by_step"][0] == pytest.approx(float(g1.norm()) / len(s1), rel=1e-5)
    var_u, rel_u = chunk_variance(torch.stack(chunks_u))
    var_w, rel_w = chunk_variance(torch.stack(chunks_w))
    assert stats["var_unweighted"] == pytest.approx(var_u, rel=1e-5)
    assert stats["var_weighted_rel"] == pytest.approx(rel_w, rel=1e-5)
    assert stats["variance_reduction"] == pytest.approx(1 - rel_w / rel_u, rel=1e-4, abs=1e-6)
    assert stats["var_weighted"] < stats["var_unweighted"]  # the weights (<= 0.37 here) shrink the estimates
    # no weights, or one scalar for the whole loss (released mode): the relative variance cannot change
    assert measure(model, carry, batch, (2, 2), mh, None, 3, B)["variance_reduction"] == 0.0
    released = measure(model, carry, batch, (2, 2), mh, 0.49, 3, B)
    assert released["variance_reduction"] == 0.0
    assert released["var_weighted"] == pytest.approx(0.49**2 * released["var_unweighted"])
