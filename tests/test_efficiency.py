"""GPU-efficiency switches (issue 16) keep the training what it was: gradient accumulation equals the unsplit
step, activation checkpointing gives the same gradients, the compiled network agrees with eager (inductor on this
CPU) and is not recompiled at PDC's stage switches, a training step reads nothing back from the device between
log steps, and the peak-memory estimate scales as it must."""

from contextlib import contextmanager

import pytest
import torch

from cgar.config import ConfigError, check_world_size, config_from_dict
from cgar.engine import compute_init
from cgar.losses import act_loss
from cgar.memory import estimate_peak_memory
from cgar.model import TRM, TRMConfig
from cgar.train import Trainer
from tests.test_train import VARIANTS, run_config

SMALL = TRMConfig(seq_len=36, vocab_size=8, hidden_size=32, num_heads=2, puzzle_emb_len=1, ffn_multiple=32,
                  H_cycles=2, L_cycles=2, halt_max_steps=4)


def _batch(n: int, cfg: TRMConfig = SMALL, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.randint(1, cfg.vocab_size, (n, cfg.seq_len), generator=g, dtype=torch.int32),
                labels=torch.randint(2, cfg.vocab_size, (n, cfg.seq_len), generator=g, dtype=torch.int32),
                puzzle_identifiers=torch.zeros(n, dtype=torch.int32))


def _grads(model: TRM, depth=(2, 2), steps: int = 2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of the last of `steps` training forwards and the gradients of its ACT loss (puzzle rows included)."""
    carry, batch = model.initial_carry(8), _batch(8)
    for _ in range(steps):  # the second step runs on a carry that is no longer the initial one
        model.zero_grad(set_to_none=True)
        carry, out = model(carry, batch, depth=depth, min_halt_steps=torch.zeros(8, dtype=torch.long))
        loss, _ = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads["puzzle_rows"] = model.puzzle_emb.last_rows.grad.clone()
    return out.logits.detach(), grads


def _twins(**overrides) -> tuple[TRM, TRM]:
    torch.manual_seed(0)
    a = TRM(TRMConfig(**{**SMALL.__dict__, **overrides})).train()
    b = TRM(a.config).train()
    b.load_state_dict(a.state_dict())
    return a, b


# ----------------------------------------------------------------------------- memory switches

def test_activation_checkpointing_gives_bitwise_the_same_gradients():
    plain, ckpt = _twins()
    ckpt.checkpoint_grad_cycle = True
    (l0, g0), (l1, g1) = _grads(plain), _grads(ckpt)
    assert torch.equal(l0, l1)
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k


@pytest.mark.parametrize("variant, accum, hsw_mode", [("cgar", 2, "paper"), ("cgar", 4, "paper"),
                                                       ("hsw", 2, "released"), ("baseline", 8, "paper")])
def test_gradient_accumulation_equals_the_unsplit_step(data_dir, tmp_path, variant, accum, hsw_mode):
    """The rank's 16 slots in `accum` micro-batches, one forward + backward each, one optimizer step.

    Step 1 (same weights, same slots): the gradient the optimizer receives, and the puzzle embedding's, equal the
    unsplit step's up to float summation order (rtol 1e-5). Over 12 steps (PDC stage switch, refills, halting, HSW
    weights): the same halting decisions and puzzles in the carry, loss sums within 1e-3 (1e-5, and equal
    accuracies, over the first 2 steps), EMA weights within rtol 1e-4 / atol 1e-6, the tolerance of 1 rank vs 2
    (AdamATan2's atan2 turns a last-bit difference of a near-zero gradient component into a full-size update of
    the other sign, so the live weights drift apart faster than the gradients)."""
    torch.set_num_threads(1)
    rt = compute_init("cpu")
    runs = {}
    for k in (1, accum):
        sections = {**VARIANTS[variant], "train": {"epochs": 8, "grad_accum_steps": k}}
        if variant == "hsw":
            sections["hsw"] = {"enabled": True, "mode": hsw_mode}
        tr = Trainer(config_from_dict(run_config(data_dir, **sections)), tmp_path / f"a{k}", rt)
        assert len(tr.micro_slots) == k and tr.engine.gradient_accumulation_steps() == k
        grads, step = [], tr.engine.optimizer.step

        def capture(*args, tr=tr, grads=grads, step=step, **kwargs):  # the gradient DeepSpeed steps with
            grads.append([p.grad.detach().clone() for p in tr.model.parameters()])
            return step(*args, **kwargs)

        tr.engine.optimizer.step = capture
        sign_grads, sign_step = [], tr.sign_sgd.step
        tr.sign_sgd.step = lambda tr=tr, sign_grads=sign_grads, sign_step=sign_step: (
            sign_grads.append(tr.model.puzzle_emb.last_rows.grad.clone()), sign_step())
        metrics = [tr.train_step() for _ in range(12)]
        tr.check_losses()
        assert len(grads) == len(sign_grads) == 12  # one optimizer step per train step, whatever the split
        runs[k] = tr, metrics, grads, sign_grads
    (one, m1, g1, s1), (split, mk, gk, sk) = runs[1], runs[accum]
    worst = 0.0
    for a, b in zip(g1[0], gk[0]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
        worst = max(worst, float((b - a).abs().max() / a.abs().max().clamp_min(1e-30)))
    torch.testing.assert_close(sk[0], s1[0], rtol=1e-5, atol=1e-5 * float(s1[0].abs().max()))
    print(f"\ngrad_accum_steps {accum}: step-1 gradients differ by at most {worst:.1e} of each tensor's largest")
    assert torch.equal(one.carry.steps, split.carry.steps) and torch.equal(one.carry.halted, split.carry.halted)
    for key in one.carry.data:
        assert torch.equal(one.carry.data[key], split.carry.data[key]), key
    for i, (a, b) in enumerate(zip(m1, mk)):
        assert a["T"] == b["T"] and float(a["count"]) == float(b["count"])
        # argmax metrics: exact while the weights are the same; later a logit tie may break the other way
        keys = ("lm_loss", "q_halt_loss", "loss", "hsw_weight") + ("accuracy", "exact_accuracy") * (i < 2)
        for key in keys:
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5 if i < 2 else 1e-3, abs=1e-9), (i, key)
    for name, v in one.ema.shadow.items():
        torch.testing.assert_close(split.ema.shadow[name], v, rtol=1e-4, atol=1e-6, msg=name)


def test_grad_accum_steps_must_divide_the_rank_batch(data_dir):
    cfg = config_from_dict(run_config(data_dir, train={"grad_accum_steps": 3}))
    with pytest.raises(ConfigError, match=r"train.grad_accum_steps: 3 does not divide the 16 slots per rank"):
        check_world_size(cfg, 1)
    check_world_size(config_from_dict(run_config(data_dir, train={"grad_accum_steps": 4})), 2)  # 8 per rank
    with pytest.raises(ConfigError, match=r"train.grad_accum_steps: 8 does not divide the 4 slots per rank"):
        check_world_size(config_from_dict(run_config(data_dir, train={"grad_accum_steps": 8})), 4)


def test_memory_estimate_scales_with_micro_batch_and_checkpointing():
    model = TRM(TRMConfig(hidden_size=64, num_heads=2)).train()  # 9x9, TRM's 16 prefix positions
    whole, half = estimate_peak_memory(model, 64, 1), estimate_peak_memory(model, 64, 2)
    assert half.micro_batch == 32 and half.per_slot_mib == whole.per_slot_mib > 0
    assert half.activations_gib < 0.55 * whole.activations_gib and half.carry_gib == whole.carry_gib
    model.checkpoint_grad_cycle = True
    ckpt = estimate_peak_memory(model, 64, 1)
    assert ckpt.per_slot_mib < 0.5 * whole.per_slot_mib
    assert model.checkpoint_grad_cycle and model.training  # the probe restored what it changed
    assert model.puzzle_emb._rows is None  # and did not reserve a puzzle-embedding leaf of its own size
    assert "estimated peak memory per rank" in ckpt.line()


# ----------------------------------------------------------------------------- torch.compile

class CountingBackend:
    """A torch.compile backend that runs the captured graph eagerly and counts the compilations."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def test_compiled_network_agrees_with_eager_on_cpu_inductor():
    """Inductor fuses the element-wise ops of the network (fp32 here), which changes rounding only: logits and
    gradients agree with eager to ~1e-5 of their scale after two recursive steps (measured 2026-12-06: logits
    3.8e-5 of up to 3.6, gradients 5.5e-6). The max differences are printed (pytest -s)."""
    torch._dynamo.reset()
    eager, compiled = _twins()
    compiled.compile_net()  # inductor, the default
    assert compiled.compiled and not eager.compiled
    (l0, g0), (l1, g1) = _grads(eager), _grads(compiled)
    print(f"\ncompiled vs eager: max |logit diff| {float((l1 - l0).abs().max()):.2e} (logits up to "
          f"{float(l0.abs().max()):.2f}); max |grad diff| {max(float((g1[k] - g0[k]).abs().max()) for k in g0):.2e}")
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-4)  # logits of size ~4, after two recursive steps
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-3, atol=1e-5, msg=k)


def test_no_recompilation_across_pdc_stages_and_eval_batch_sizes():
    """The network has one shape whatever (T, n): a PDC run through stages (1, 1), (2, 2), (1, 2), (2, 1) compiles
    3 graphs, all by the first step at T >= 2, n >= 2 (no grad; grad on a state without grad; grad on a state with
    grad, the 2nd..n-th z-update), and evaluation adds one graph for inference plus at most one when a second
    batch size (ACT compaction) makes the batch axis dynamic; a third and fourth batch size add none."""
    torch._dynamo.reset()
    counter = CountingBackend()
    model = TRM(SMALL).train()
    model.compile_net(backend=counter)
    carry, batch = model.initial_carry(8), _batch(8)
    seen = []
    for depth in [(1, 1), (2, 2), (1, 2), (2, 1), (2, 2)]:
        carry, out = model(carry, batch, depth=depth, min_halt_steps=torch.zeros(8, dtype=torch.long))
        act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)[0].backward()
        seen.append(counter.graphs)
    assert seen == [1, 3, 3, 3, 3], seen  # (1, 1): one grad graph; (2, 2) adds the other two, once
    model.eval()
    with torch.inference_mode():
        for b in (8, 5, 3, 2):
            model(model.initial_carry(b), _batch(b))
    assert counter.graphs <= 5, counter.graphs


# ----------------------------------------------------------------------------- no host reads in a step

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")


@contextmanager
def count_host_reads():
    """Count calls that read a tensor's value back to the host (on a GPU each waits for the device). On this CPU
    they are free, so they are counted instead of timed: a sync-free step has none."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            calls.append(name)
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("variant, train", [("cgar", {}), ("hsw", {"grad_accum_steps": 2}), ("baseline", {})])
def test_a_training_step_reads_nothing_back_between_log_steps(data_dir, tmp_path, variant, train):
    """Issue 16: no host synchronisation inside a training step except at log / eval / checkpoint steps. Steps
    2..4 of a run logging every 5 read no tensor value (exploration drawn on the device, deferred NaN and HSW
    checks, metrics summed on the device); the log step reads (it must)."""
    torch.set_num_threads(1)
    rt = compute_init("cpu")
    sections = {**VARIANTS[variant], "train": {"epochs": 4, **train}}
    if variant == "hsw":
        sections["hsw"] = {"enabled": True, "mode": "released"}  # the mode that read the batch mean per step
    tr = Trainer(config_from_dict(run_config(data_dir, **sections)), tmp_path, rt)
    tr.train_step()  # step 1: lazy state (optimizer moments) is created here
    with count_host_reads() as calls:
        for _ in range(3):  # steps 2, 3, 4
            tr.train_step()
    assert calls == [], calls
    with count_host_reads() as calls:
        tr.train_step()  # step 5: the log step of the run loop checks the deferred losses
        tr.check_losses()
    assert calls, "the check at a log step must read the losses back"


def test_auto_micro_batches_pick_the_fewest_that_fit():
    """train.grad_accum_steps: 0 splits the rank's slots into the fewest micro-batches whose estimated peak fits the
    budget (90% of the GPU's memory; no limit on CPU)."""
    from cgar.memory import GIB, fit_micro_batches

    model = TRM(TRMConfig(hidden_size=64, num_heads=2)).train()
    whole, half, quarter = estimate_peak_memory(model, 64, (1, 2, 4))
    assert fit_micro_batches(model, 64, None)[0] == 1
    assert fit_micro_batches(model, 64, whole.total_gib * GIB)[0] == 1
    k, est = fit_micro_batches(model, 64, (whole.total_gib + half.total_gib) / 2 * GIB)
    assert k == 2 and est.micro_batch == 32 and est.total_gib == half.total_gib
    assert fit_micro_batches(model, 64, (half.total_gib + quarter.total_gib) / 2 * GIB)[0] == 4
    assert fit_micro_batches(model, 64, 1.0)[0] == 64  # nothing fits: one slot at a time


def test_auto_micro_batches_in_a_cpu_run_is_one(data_dir, tmp_path):
    rt = compute_init("cpu")
    tr = Trainer(config_from_dict(run_config(data_dir, train={"grad_accum_steps": 0})), tmp_path, rt)
    assert len(tr.micro_slots) == 1 and tr.engine.gradient_accumulation_steps() == 1
