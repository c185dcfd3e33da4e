"""Stablemax cross-entropy and TRM's ACT loss, against hand computations.

Run: .venv/bin/pytest tests/test_losses.py
"""

import math

import pytest
import torch

from cgar.losses import act_loss, log_stablemax, reduce_metrics, stablemax_cross_entropy


def s(x):
    return 1 / (1 - x) if x < 0 else x + 1


def stablemax_nll(row, label):
    return -math.log(s(row[label]) / sum(s(v) for v in row))


def test_stablemax_against_direct_float64():
    torch.manual_seed(0)
    logits = (4 * torch.randn(3, 5, 11)).to(torch.bfloat16)
    labels = torch.randint(0, 11, (3, 5), dtype=torch.int32)
    labels[0, 1] = labels[2, 4] = -100
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64
    x = logits.double().tolist()
    for b in range(3):
        for t in range(5):
            want = 0.0 if labels[b, t] == -100 else stablemax_nll(x[b][t], int(labels[b, t]))
            assert got[b, t].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert torch.allclose(log_stablemax(torch.zeros(4, dtype=torch.float64)).exp().sum(), torch.tensor(1.0).double())


def test_stablemax_gradient_is_finite_at_logit_one():
    logits = torch.tensor([[[1.0, 0.0, -3.0], [2.0, 1.0, 1.0]]], requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([[2, 0]])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def tiny_case():
    # B = 3 sequences of 3 tokens over a 4-symbol vocabulary
    logits = torch.tensor([
        [[3.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [-2.0, -1.0, 1.0, 0.0]],  # argmax 0, 1, 2
        [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]],  # argmax 1, 0, 3
        [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
    ], requires_grad=True)
    labels = torch.tensor([[0, 1, 2], [1, 2, -100], [-100, -100, -100]])  # row 2: padding, no labels
    q_halt = torch.tensor([0.5, -1.0, 2.0])
    halted = torch.tensor([True, True, False])
    steps = torch.tensor([3, 16, 1], dtype=torch.int32)
    return logits, labels, q_halt, halted, steps


def bce(z, y):
    return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))


def test_act_loss_matches_hand_computation():
    logits, labels, q_halt, halted, steps = tiny_case()
    x = logits.detach().tolist()
    lm0 = sum(stablemax_nll(x[0][t], [0, 1, 2][t]) for t in range(3)) / 3
    lm1 = (stablemax_nll(x[1][0], 1) + stablemax_nll(x[1][1], 2)) / 2
    # row 0 is all correct -> target 1; row 1 is wrong at token 1 -> 0; row 2 has no labels -> "all correct" 1
    q = [bce(0.5, 1), bce(-1.0, 0), bce(2.0, 1)]
    per_sample = [lm0 + 0.5 * q[0], lm1 + 0.5 * q[1], 0.5 * q[2]]

    loss, m = act_loss(logits, q_halt, labels, halted, steps)
    assert loss.item() == pytest.approx(sum(per_sample), rel=1e-6)  # BCE is fp32, as TRM
    assert m["lm_loss"].item() == pytest.approx(lm0 + lm1, rel=1e-9)
    assert m["q_halt_loss"].item() == pytest.approx(sum(q), rel=1e-6)
    # metrics over halted rows with labels (rows 0 and 1)
    assert m["count"].item() == 2
    assert m["accuracy"].item() == pytest.approx(1.0 + 0.5)
    assert m["exact_accuracy"].item() == 1
    assert m["q_halt_accuracy"].item() == 2  # row 0: q>=0 and correct; row 1: q<0 and wrong
    assert m["steps"].item() == 3 + 16
    loss.backward()
    assert logits.grad[2].abs().sum() == 0  # ignored tokens give no gradient

    means = reduce_metrics({k: v.item() for k, v in m.items()}, batch_size=3)
    assert means["accuracy"] == pytest.approx(0.75) and means["steps"] == pytest.approx(9.5)
    assert means["lm_loss"] == pytest.approx((lm0 + lm1) / 3) and means["count"] == 2


def test_act_loss_weights_scalar_and_per_sample():
    logits, labels, q_halt, halted, steps = tiny_case()
    base, _ = act_loss(logits, q_halt, labels, halted, steps)
    scaled, m = act_loss(logits, q_halt, labels, halted, steps, weight=0.49)
    assert scaled.item() == pytest.approx(0.49 * base.item(), rel=1e-12)
    assert m["lm_loss"].item() == act_loss(logits, q_halt, labels, halted, steps)[1]["lm_loss"].item()  # unweighted
    w = torch.tensor([1.0, 0.0, 0.0])
    only_first, _ = act_loss(logits, q_halt, labels, halted, steps, weight=w)
    first, _ = act_loss(logits[:1], q_halt[:1], labels[:1], halted[:1], steps[:1])
    assert only_first.item() == pytest.approx(first.item(), rel=1e-12)
