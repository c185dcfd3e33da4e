"""AdamATan2 and SignSGD against hand-written references; the LR schedule; EMA math and swapping.

Run: .venv/bin/pytest tests/test_optim.py
"""

import math

import numpy as np
import pytest
import torch

from cgar.puzzle_embedding import PuzzleEmbedding
from cgar.optim import EMA, AdamATan2, SignSGD, lr_at, make_optimizer, set_lr


def reference_adam_atan2(p, grads, lrs, b1, b2, wd):
    """adam-atan2 0.0.3's update (its CUDA kernel), element-wise in float64 numpy."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p * (1 - lr * wd)
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        p = p - lr / (1 - b1**t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2**t))
    return p


def run_adam(p0, grads, lrs, wd, opt=None):
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = opt or AdamATan2([p], lr=lrs[0], betas=(0.9, 0.95), weight_decay=wd)
    for g, lr in zip(grads, lrs):
        set_lr(opt, lr)  # the schedule changes lr through param_groups, as a DeepSpeed client optimizer must
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy(), opt


def test_adam_atan2_matches_reference():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) * 10 ** rng.uniform(-3, 1) for _ in range(6)]
    grads[2][0, 0] = 0.0
    lrs = [1e-2, 2e-2, 3e-2, 3e-2, 1e-2, 5e-3]
    got, _ = run_adam(p0, grads, lrs, wd=1.0)
    np.testing.assert_allclose(got, reference_adam_atan2(p0, grads, lrs, 0.9, 0.95, 1.0), rtol=1e-12, atol=1e-14)


# Hand-computed cases of the published 0.0.3 rule,
#     p <- p (1 - lr wd) - lr / (1 - b1^t) * atan2(m, sqrt(v / (1 - b2^t))),
# in closed form (no moment recursion). b1 = 0.9, b2 = 0.95 as TRM; c_t = 1 - b1^t is beta1's bias correction.
B1, B2 = 0.9, 0.95


def steady_gradient_params(p0, g, lr, wd, steps):
    """A constant gradient g: m_t = c_t g and v_t = (1 - b2^t) g^2 exactly, so sqrt(v_t / (1 - b2^t)) = |g| and the
    step is lr / c_t * atan2(c_t g, |g|) = lr * atan(c_t) / c_t * sign(g) (0 where g = 0: atan2(0, 0) = 0)."""
    p = np.array(p0, dtype=np.float64)
    for t in range(1, steps + 1):
        c = 1 - B1**t
        p = p * (1 - lr * wd) - lr * math.atan(c) / c * np.sign(g)
    return p


def alternating_gradient_params(p0, s, lr, steps):
    """g_t = (-1)^(t+1) s: v_t / (1 - b2^t) = s^2 again, and the geometric sum gives
    m_t = (1 - b1) s (-1)^(t+1) (1 - (-b1)^t) / (1 + b1)."""
    p = np.array(p0, dtype=np.float64)
    for t in range(1, steps + 1):
        m = (1 - B1) * s * (-1) ** (t + 1) * (1 - (-B1) ** t) / (1 + B1)
        p = p - lr / (1 - B1**t) * np.arctan2(m, np.abs(s))
    return p


def test_adam_atan2_one_step_by_hand():
    p0, g = [1.0, -2.0, 0.5], np.array([2.0, -0.5, 0.0])
    got, _ = run_adam(p0, [g], [1e-2], wd=0.5)
    # = p0 * 0.995 - 0.01 * atan(0.1) / 0.1 * sign(g): 0.995 - 0.0099668, -1.99 + 0.0099668, 0.4975
    want = np.array([0.995 - 0.1 * math.atan(0.1), -1.99 + 0.1 * math.atan(0.1), 0.4975])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(got, steady_gradient_params(p0, g, 1e-2, 0.5, 1), rtol=1e-14, atol=1e-16)


def test_adam_atan2_ten_steps_by_hand():
    p0, g = [1.0, -2.0, 0.5], np.array([2.0, -0.5, 0.0])
    got, _ = run_adam(p0, [g] * 10, [1e-2] * 10, wd=0.5)
    np.testing.assert_allclose(got, steady_gradient_params(p0, g, 1e-2, 0.5, 10), rtol=1e-13, atol=1e-15)
    s = np.array([3.0, -0.25])  # a varying gradient: the sign flips every step
    got, _ = run_adam([0.2, 0.3], [s * (-1) ** t for t in range(10)], [1e-2] * 10, wd=0.0)
    np.testing.assert_allclose(got, alternating_gradient_params([0.2, 0.3], s, 1e-2, 10), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("t, old_over_new", [(1, 0.788), (10, 0.886), (30, 0.985)])
def test_adam_atan2_bias_correction_is_outside_atan2(t, old_over_new):
    """The issue's figures: under a steady gradient the 0.0.2 rule, lr * atan2(m / c_t, ..) = lr * pi/4, steps
    (pi/4) c_t / atan(c_t) times 0.0.3's. This fails on the old rule (its step t would be exactly lr * pi/4)."""
    lr = 1e-2
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdamATan2([p], lr=lr, betas=(B1, B2), weight_decay=0.0)
    for _ in range(t):
        before = p.item()
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    step = before - p.item()  # the update of step t
    c = 1 - B1**t
    assert step == pytest.approx(lr * math.atan(c) / c, rel=1e-12)
    assert (lr * math.pi / 4) / step == pytest.approx(old_over_new, abs=5e-4)


def test_adam_atan2_is_scale_invariant_and_bounded():
    rng = np.random.default_rng(1)
    p0, grads = rng.normal(size=5), [rng.normal(size=5) for _ in range(4)]
    a, _ = run_adam(p0, grads, [1e-2] * 4, wd=0.0)
    b, _ = run_adam(p0, [1000 * g for g in grads], [1e-2] * 4, wd=0.0)
    np.testing.assert_allclose(a, b, rtol=1e-12)  # why a global loss scale (released HSW) barely matters
    # each step is below lr for betas (0.9, 0.95): by Cauchy-Schwarz, |m_t| / sqrt(v_t / (1 - b2^t)) <= k_t =
    # (1 - b1) sqrt((1 - b2^t) / (1 - b2) * sum_{j<t} (b1^2 / b2)^j), and lr atan(k_t) / (1 - b1^t) is largest
    # at t = 1, atan(0.1) / 0.1 lr = 0.997 lr (evaluated for t < 10^5)
    assert np.all(np.abs(a - p0) <= 4 * 1e-2)


def test_adam_atan2_state_dict_resume():
    rng = np.random.default_rng(2)
    p0, grads = rng.normal(size=4), [rng.normal(size=4) for _ in range(5)]
    full, _ = run_adam(p0, grads, [1e-2] * 5, wd=0.1)
    half, opt = run_adam(p0, grads[:3], [1e-2] * 3, wd=0.1)
    p = torch.nn.Parameter(torch.tensor(half))
    resumed = AdamATan2([p], lr=1e-2, weight_decay=0.1)
    resumed.load_state_dict(opt.state_dict())
    for g in grads[3:]:
        p.grad = torch.tensor(g)
        resumed.step()
    np.testing.assert_allclose(p.detach().numpy(), full, rtol=1e-12)


def test_make_optimizer():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adam_atan2", p, 1e-4, 1.0), AdamATan2)
    adamw = make_optimizer("adamw", p, 1e-4, 1.0)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError):
        make_optimizer("sgd", p, 1e-4, 1.0)


def test_sign_sgd_sums_per_id_then_takes_the_sign():
    emb = PuzzleEmbedding(3, 2).train()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 2.0], [0.5, 0.5]]))
    before = emb.weight.clone()
    opt = SignSGD(emb, lr=0.1, weight_decay=0.5)
    rows = emb(torch.tensor([0, 0, 2]))  # id 1 absent
    (rows * torch.tensor([[3.0, 1.0], [-1.0, -4.0], [-2.0, 0.0]])).sum().backward()
    opt.step()
    decay = 1 - 0.1 * 0.5
    expected = torch.stack([
        before[0] * decay - 0.1 * torch.tensor([1.0, -1.0]),  # summed grad (2, -3)
        before[1],  # absent: no update and no decay
        before[2] * decay - 0.1 * torch.tensor([-1.0, 0.0]),  # sign(0) = 0
    ])
    assert torch.allclose(emb.weight, expected)
    assert emb.last_rows is None  # consumed: a second step() is a no-op
    opt.step()
    assert torch.allclose(emb.weight, expected)


def test_lr_warmup_then_constant():
    assert lr_at(0, 1e-4) == 0.0
    assert lr_at(1, 1e-4) == pytest.approx(1e-4 / 2000)
    assert lr_at(1000, 1e-4) == pytest.approx(0.5e-4)
    assert lr_at(2000, 1e-4) == 1e-4
    assert lr_at(65_100, 1e-4, total_steps=65_100) == 1e-4  # min_ratio 1.0: constant (TRM)


def test_lr_cosine_option():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)


def tiny_module():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    m.register_buffer("buf", torch.ones(2))
    m.bias.requires_grad_(False)  # frozen params are not averaged
    return m


def test_ema_update_math_and_swap():
    m = tiny_module()
    ema = EMA(m, decay=0.999)
    assert set(ema.shadow) == {"weight"}
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.shadow["weight"], 0.001 * (w0 + 1.0) + 0.999 * w0)
    live = m.weight.detach().clone()
    with ema.swapped(m):
        assert torch.equal(m.weight, ema.shadow["weight"])
    assert torch.equal(m.weight, live)
    with pytest.raises(RuntimeError), ema.swapped(m):  # live weights come back on error too
        raise RuntimeError
    assert torch.equal(m.weight, live)


def test_ema_foreach_update_is_bitwise_the_per_tensor_loop():
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    emas = [EMA(m, decay=0.99, foreach=f) for m, f in zip(models, (False, True))]
    for step in range(5):  # move the weights by the same random amounts, then average
        noise = [torch.randn_like(p) for p in models[0].parameters()]
        for m, ema in zip(models, emas):
            with torch.no_grad():
                for p, d in zip(m.parameters(), noise):
                    p.add_(d)
            ema.update(m)
    loop, fused = emas
    assert loop.shadow.keys() == fused.shadow.keys() and len(loop.shadow) == 4
    for k in loop.shadow:
        assert torch.equal(loop.shadow[k], fused.shadow[k]), k
        assert not torch.equal(loop.shadow[k], dict(models[0].named_parameters())[k])  # really averaged


def test_ema_state_dict_round_trip():
    m = tiny_module()
    ema = EMA(m)
    with torch.no_grad():
        m.weight.mul_(3)
    ema.update(m)
    fresh = EMA(tiny_module())
    fresh.load_state_dict(ema.state_dict())
    assert torch.equal(fresh.shadow["weight"], ema.shadow["weight"]) and fresh.decay == 0.999
    fresh.copy_to(m)
    assert torch.equal(m.weight, ema.shadow["weight"])


def test_adam_atan2_as_deepspeed_client_optimizer():
    """DeepSpeed takes one client optimizer: it must step it, keep our lr changes, and leave the puzzle rows'
    gradient (not a parameter) for SignSGD."""
    import deepspeed

    from cgar.engine import compute_init, ds_config
    from cgar.model import TRM, TRMConfig

    compute_init("cpu")
    torch.manual_seed(0)
    model = TRM(TRMConfig(hidden_size=32, num_heads=4))
    engine, opt, *_ = deepspeed.initialize(model=model, optimizer=AdamATan2(model.parameters(), lr=0.0),
                                           config=ds_config(2, 1))
    assert isinstance(engine.optimizer, AdamATan2)
    batch = dict(inputs=torch.ones(2, 81, dtype=torch.int32), labels=torch.full((2, 81), 2, dtype=torch.int32),
                 puzzle_identifiers=torch.zeros(2, dtype=torch.int32))
    w0 = model.lm_head.weight.detach().clone()
    set_lr(engine.optimizer, 1e-2)
    _, out = engine(model.initial_carry(2), batch, depth=(1, 1))
    engine.backward(out.logits.float().sum())
    engine.step()
    step = (model.lm_head.weight - w0).abs().max().item()
    assert 1e-3 < step <= 1e-2 * math.pi / 2  # moved by the new lr, bounded as atan2 is
    assert model.puzzle_emb.last_rows.grad is not None
