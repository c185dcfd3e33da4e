"""TRM model: exact sizes and init, post-norm blocks, the no-grad cycles, the ACT carry and halting rule.

Run: .venv/bin/pytest tests/test_model.py
"""

import copy
import math

import pytest
import torch

from cgar.losses import act_loss
import cgar.precision as precision
from cgar.model import TRM, Carry, TRMConfig, draw_min_halt_steps, halting, refill, swiglu_inner, trunc_normal_
from cgar.optim import AdamATan2, SignSGD

TINY = dict(hidden_size=32, num_heads=4)


def make_batch(B, seed=0, cfg=TRMConfig()):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), generator=g, dtype=torch.int32),
        labels=torch.randint(2, cfg.vocab_size, (B, cfg.seq_len), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32),
    )


@pytest.mark.parametrize("mlp_t, expected", [(True, 5_028_866), (False, 6_828_034)])
def test_parameter_counts(mlp_t, expected):
    model = TRM(TRMConfig(mlp_t=mlp_t))
    print(f"TRM mlp_t={mlp_t}: {model.num_params():,} trainable parameters")
    assert model.num_params() == expected
    assert sum(p.numel() for p in model.parameters()) == expected  # nothing frozen hides in parameters()


def test_swiglu_widths_and_no_biases():
    model = TRM(TRMConfig())
    block = model.blocks[0]
    assert block.mlp.gate_up.weight.shape == (2 * 1536, 512) and block.mlp.down.weight.shape == (512, 1536)
    assert block.token_mlp.gate_up.weight.shape == (2 * 512, 97) and block.token_mlp.down.weight.shape == (97, 512)
    assert [n for n, _ in model.named_parameters() if n.endswith("bias")] == ["q_head.bias"]
    attn = TRM(TRMConfig(mlp_t=False)).blocks[0].attn
    assert attn.qkv.weight.shape == (1536, 512) and attn.o_proj.weight.shape == (512, 512)


def test_ffn_multiple_rounds_small_widths_less():
    """The laptop model (hidden 64, 6x6 grid: 36 cells + 1 prefix position) with ffn_multiple 64: channel MLP
    round(4 * 64 * 2/3) = 171 -> 192 (TRM's 256-rounding: 256), token MLP round(4 * 37 * 2/3) = 99 -> 128."""
    cfg = TRMConfig(hidden_size=64, seq_len=36, vocab_size=8, puzzle_emb_len=1, ffn_multiple=64)
    block = TRM(cfg).blocks[0]
    assert block.mlp.gate_up.weight.shape == (2 * 192, 64) and block.mlp.down.weight.shape == (64, 192)
    assert block.token_mlp.gate_up.weight.shape == (2 * 128, 37) and block.token_mlp.down.weight.shape == (37, 128)
    assert swiglu_inner(64, 4.0) == 256 and swiglu_inner(512, 4.0, 64) == 1408  # 1365 -> 1408


def test_trunc_normal_has_requested_std_and_jax_bounds():
    torch.manual_seed(0)
    x = trunc_normal_(torch.empty(400_000), std=0.5)
    sigma = 0.5 / math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
    assert x.std().item() == pytest.approx(0.5, rel=0.01)  # the *actual* std is the requested one
    assert x.abs().max().item() <= 2 * sigma + 1e-6 and x.abs().max().item() > 1.9 * sigma


def test_init_heads_embeddings_and_buffers():
    torch.manual_seed(0)
    model = TRM(TRMConfig())
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    assert model.lm_head.weight.std().item() == pytest.approx(512**-0.5, rel=0.05)
    assert model.embed_tokens.std().item() == pytest.approx(512**-0.5, rel=0.1)
    w = model.blocks[0].mlp.down.weight
    assert w.std().item() == pytest.approx(1536**-0.5, rel=0.02)
    # the puzzle embedding is a zero-initialised buffer: saved, but not a parameter (no AdamATan2, no EMA)
    assert torch.all(model.puzzle_emb.weight == 0) and model.puzzle_emb.weight.shape == (1, 512)
    assert all(p is not model.puzzle_emb.weight for p in model.parameters())
    state = model.state_dict()
    assert {"puzzle_emb.weight", "y_init", "z_init"} <= set(state)
    assert model.y_init.std().item() == pytest.approx(1.0, abs=0.15)


def test_embedding_prefix_layout_and_scale():
    model = TRM(TRMConfig(**TINY))
    with torch.no_grad():
        model.puzzle_emb.weight.fill_(0.25)
    batch = make_batch(2)
    x = model.embed(batch["inputs"], batch["puzzle_identifiers"])  # [2, 97, 32]
    scale = math.sqrt(32)
    assert x.shape == (2, 97, 32)
    assert torch.allclose(x[:, 0], torch.full((2, 32), 0.25 * scale))
    assert torch.all(x[:, 1:16] == 0)
    assert torch.allclose(x[:, 16:], scale * model.embed_tokens[batch["inputs"].long()])


def channel_mlp_inputs(model, x):
    """Run block 0 and capture the input of its channel MLP, i.e. the token-mixing sub-block's output."""
    seen = []
    handle = model.blocks[0].mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    out = model.blocks[0](x, model.rope)
    handle.remove()
    return seen[0], out


def rms(t, dim):
    return t.square().mean(dim).sqrt()


def test_post_norm_mlp_t_normalises_tokens_over_the_97_axis():
    torch.manual_seed(0)
    model = TRM(TRMConfig(**TINY))
    mid, out = channel_mlp_inputs(model, 3 * torch.randn(2, 97, 32))
    # token-mixing RMSNorm ran on the transposed [B, D, L] tensor: RMS over positions is 1 for each channel
    assert torch.allclose(rms(mid, 1), torch.ones(2, 32), atol=1e-4)
    assert not torch.allclose(rms(mid, 2), torch.ones(2, 97), atol=1e-2)
    assert torch.allclose(rms(out, 2), torch.ones(2, 97), atol=1e-4)  # no gain anywhere


def test_post_norm_attention_block_and_non_causal():
    torch.manual_seed(0)
    model = TRM(TRMConfig(mlp_t=False, **TINY))
    x = 3 * torch.randn(2, 97, 32)
    mid, out = channel_mlp_inputs(model, x)
    assert torch.allclose(rms(mid, 2), torch.ones(2, 97), atol=1e-4)
    assert torch.allclose(rms(out, 2), torch.ones(2, 97), atol=1e-4)
    x2 = x.clone()
    x2[:, -1] += 1.0  # the last position changes what position 0 sees: attention is bidirectional
    assert not torch.allclose(model.blocks[0](x2, model.rope)[:, 0], out[:, 0])


@pytest.mark.parametrize("depth", [(3, 2), (1, 2), (2, 3)])
def test_only_the_last_cycle_builds_a_graph(depth):
    T, n = depth
    model = TRM(TRMConfig(**TINY))
    grad_modes = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, a, o: grad_modes.append(torch.is_grad_enabled()))
    carry = model.initial_carry(2)
    carry, out = model(carry, make_batch(2), depth=depth)
    per_cycle = (n + 1) * len(model.blocks)
    assert grad_modes == [False] * (T - 1) * per_cycle + [True] * per_cycle
    assert carry.y.grad_fn is None and carry.z.grad_fn is None and not carry.y.requires_grad
    assert out.logits.shape == (2, 81, 11) and out.q_halt.shape == (2,) and out.q_halt.dtype == torch.float32
    out.logits.float().sum().backward()
    assert model.puzzle_emb.last_rows.grad.shape == (2, 32)  # exposed for SignSGD
    assert model.lm_head.weight.grad is not None


def test_eval_and_no_grad_do_not_record_puzzle_rows():
    model = TRM(TRMConfig(**TINY)).eval()
    model(model.initial_carry(2), make_batch(2))
    assert model.puzzle_emb.last_rows is None


def test_puzzle_rows_leaf_is_reserved_outside_the_forward_and_fresh_each_step():
    """The grad leaf is allocated by initial_carry (a compiled forward only writes into it) and reused; each
    training forward leaves only its own gradient on it, as the former new-leaf-per-forward did."""
    torch.manual_seed(0)
    model = TRM(TRMConfig(**TINY))
    with torch.no_grad():
        model.puzzle_emb.weight.normal_()
    carry = model.initial_carry(3)
    leaf = model.puzzle_emb._rows
    assert leaf.shape == (3, 32) and leaf.is_leaf and leaf.requires_grad and model.puzzle_emb.last_rows is None
    carry, out = model(carry, make_batch(3), depth=(1, 1))
    out.logits.float().square().sum().backward()
    assert model.puzzle_emb.last_rows is leaf and torch.equal(leaf.detach(), model.puzzle_emb.weight.expand(3, -1))
    fresh = copy.deepcopy(model)
    fresh.puzzle_emb._rows.grad = None  # the expected value: step 2's gradient alone
    grads = []
    for m in (model, fresh):
        _, out = m(carry, make_batch(3, seed=1), depth=(1, 1))
        out.logits.float().square().sum().backward()
        grads.append(m.puzzle_emb.last_rows.grad)
    assert model.puzzle_emb.last_rows is leaf and torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0
    model(model.initial_carry(5), make_batch(5), depth=(1, 1))  # a new batch size gets a new leaf
    assert model.puzzle_emb._rows.shape == (5, 32) and model.puzzle_emb._rows is not leaf


def test_bfloat16_compute_path_on_cpu():
    model = TRM(TRMConfig(forward_dtype="bfloat16", **TINY))
    carry, out = model(model.initial_carry(2), make_batch(2), depth=(1, 1))
    assert carry.y.dtype == torch.bfloat16 and out.logits.dtype == torch.bfloat16
    assert out.q_halt.dtype == torch.float32 and model.lm_head.weight.dtype == torch.float32
    assert TRM(TRMConfig(**TINY)).compute_dtype == torch.float32  # auto on CPU


@pytest.mark.parametrize("capability, auto", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                              ((7, 5), torch.float32)])
def test_auto_forward_dtype_is_bf16_only_where_the_gpu_has_it(monkeypatch, capability, auto):
    """Issue 16: forward_dtype auto picks bf16 on a GPU of compute capability >= 8.0 only; a T4 (7.5) runs fp32 with
    a warning, and an explicit bfloat16 there is refused naming the key. (No GPU here: the capability query is
    replaced; the CPU path is the real one.)"""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    gpu = torch.device("cuda", 0)
    if auto == torch.float32:
        with pytest.warns(UserWarning, match="Fake GPU has no native bf16"):
            assert precision.forward_dtype("auto", gpu) == torch.float32
        with pytest.raises(ValueError, match="model.forward_dtype: bfloat16, but Fake GPU"):
            precision.forward_dtype("bfloat16", gpu)
    else:
        assert precision.forward_dtype("auto", gpu) == torch.bfloat16
        assert precision.forward_dtype("bfloat16", gpu) == torch.bfloat16
    assert precision.forward_dtype("float32", gpu) == torch.float32
    assert precision.forward_dtype("auto", torch.device("cpu")) == torch.float32
    model = TRM(TRMConfig(forward_dtype="bfloat16", **TINY))
    assert model.compute_dtype == torch.bfloat16 and model.float().compute_dtype == torch.bfloat16  # follows .to()


def test_fp32_y_z_init_give_the_reference_bf16_bits():
    """TRM stores H_init / L_init in bf16; we keep fp32 and cast at refill. Loading TRM's bf16 buffers is exact and
    the refilled carry holds exactly their bits; exporting ours to a bf16 buffer rounds as our refill does."""
    torch.manual_seed(0)
    model = TRM(TRMConfig(forward_dtype="bfloat16", **TINY))
    reference = {k: trunc_normal_(torch.empty(32), std=1.0).bfloat16() for k in ("y_init", "z_init")}
    model.load_state_dict({**model.state_dict(), **reference})
    assert model.y_init.dtype == torch.float32 and torch.equal(model.y_init.bfloat16(), reference["y_init"])
    carry = model.initial_carry(2)
    out = refill(carry, make_batch(2), model.y_init, model.z_init)  # all slots halted: all refilled
    assert out.y.dtype == torch.bfloat16
    assert torch.equal(out.y, reference["y_init"].expand(2, 97, 32)) and torch.equal(out.z[1, 5], reference["z_init"])
    fresh = TRM(TRMConfig(forward_dtype="bfloat16", **TINY))  # the other way: our fp32 init into a bf16 buffer
    exported = torch.empty(32, dtype=torch.bfloat16).copy_(fresh.y_init)
    assert torch.equal(refill(carry, make_batch(2), fresh.y_init, fresh.z_init).y[0, 0], exported)


def test_refill_resets_halted_slots_and_keeps_the_others():
    B, L, D = 4, 97, 8
    old = make_batch(B, seed=1)
    new = make_batch(B, seed=2)
    halted = torch.tensor([True, False, True, False])
    carry = Carry(y=torch.randn(B, L, D), z=torch.randn(B, L, D), steps=torch.tensor([16, 3, 5, 7], dtype=torch.int32),
                  halted=halted, data=old)
    y0, z0 = torch.randn(D), torch.randn(D)
    out = refill(carry, new, y0, z0)
    for i in range(B):
        if halted[i]:
            assert torch.all(out.y[i] == y0) and torch.all(out.z[i] == z0) and out.steps[i] == 0
            assert all(torch.equal(out.data[k][i], new[k][i]) for k in new)
        else:
            assert torch.equal(out.y[i], carry.y[i]) and torch.equal(out.z[i], carry.z[i])
            assert out.steps[i] == carry.steps[i]
            assert all(torch.equal(out.data[k][i], old[k][i]) for k in old)  # keeps its *old* puzzle


def test_forward_counts_steps_and_fills_from_initial_carry():
    model = TRM(TRMConfig(**TINY))
    batch = make_batch(3)
    carry, _ = model(model.initial_carry(3), batch, depth=(1, 1))
    assert torch.equal(carry.steps, torch.ones(3, dtype=torch.int32))
    assert all(torch.equal(carry.data[k], batch[k]) for k in batch)
    carry, _ = model(carry, make_batch(3, seed=9), depth=(1, 1))  # q_halt = -5: nobody halted, data kept
    assert torch.equal(carry.steps, torch.full((3,), 2, dtype=torch.int32))
    assert all(torch.equal(carry.data[k], batch[k]) for k in batch)


def test_halting_rule():
    B = 20_000
    g = torch.Generator().manual_seed(0)
    yes, no = torch.ones(B), -torch.ones(B)
    steps = lambda k: torch.full((B,), k, dtype=torch.int32)  # noqa: E731
    explore = lambda p: draw_min_halt_steps(B, 16, p, g)  # noqa: E731
    # always at max steps; never early in eval, whatever q says
    assert halting(steps(16), no, 16, training=True, min_steps=explore(0.1)).all()
    assert not halting(steps(15), yes, 16, training=False).any()
    assert halting(steps(16), no, 16, training=False).all()
    # training without exploration: q_halt > 0 halts
    assert halting(steps(1), yes, 16, training=True, min_steps=explore(0.0)).all()
    assert not halting(steps(3), no, 16, training=True).any()
    # exploration: a ~10% share must continue past step 1 even with q_halt > 0
    frac = 1 - halting(steps(1), yes, 16, training=True, min_steps=explore(0.1)).float().mean().item()
    assert frac == pytest.approx(0.1, abs=0.01)
    # with every slot exploring, the min halting step is uniform on 2..16: P(halt by step k) = (k - 1) / 15
    for k in (1, 2, 9, 16):
        p = halting(steps(k), yes, 16, training=True, min_steps=explore(1.0)).float().mean().item()
        assert p == pytest.approx((k - 1) / 15, abs=0.015)
    # reproducible from the generator state
    a = draw_min_halt_steps(64, 16, 0.5, torch.Generator().manual_seed(7))
    b = draw_min_halt_steps(64, 16, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0} | set(range(2, 17))


def test_eval_runs_all_sixteen_steps():
    model = TRM(TRMConfig(**TINY)).eval()
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # the model "wants" to halt at once
        carry = model.initial_carry(2)
        for k in range(1, 17):
            carry, _ = model(carry, make_batch(2), depth=(1, 1))
            assert carry.halted.all() == (k == 16)


@pytest.fixture
def one_thread():
    """Tiny matmuls: a second intra-op thread only adds sync cost, and on a busy 2-core box it is 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_model_overfits_a_few_puzzles(one_thread):
    torch.manual_seed(0)
    model = TRM(TRMConfig(halt_max_steps=4, **TINY))
    opt = AdamATan2(model.parameters(), lr=3e-3, weight_decay=0.0)
    batch, gen = make_batch(8, seed=3), torch.Generator().manual_seed(0)
    carry, losses = model.initial_carry(8), []
    for _ in range(100):
        carry, out = model(carry, batch, depth=(1, 2), generator=gen)
        loss, metrics = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)
        (loss / 8).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(metrics["lm_loss"].item() / 8)  # the q_halt term is noisy while halting is learned
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)  # ~2.1 -> ~0.35 here


# ----------------------------------------------------------------------------- torch.compile

@pytest.mark.parametrize("mlp_t, training", [(True, True), (False, True), (True, False)])
def test_compiled_forward_is_one_graph(mlp_t, training):
    """Dynamo traces the whole forward (refill, T x n recursion, heads, halting) into one graph: the puzzle
    embedding's grad leaf is reserved by initial_carry, outside it. (Creating it inside the forward gave 7 graphs
    and 6 breaks.) Training passes min_halt_steps, as the trainer does."""
    torch._dynamo.reset()
    model = TRM(TRMConfig(mlp_t=mlp_t, **TINY)).train(training)
    carry = model.initial_carry(2)
    kw = dict(min_halt_steps=torch.zeros(2, dtype=torch.long)) if training else {}
    explained = torch._dynamo.explain(model)(carry, make_batch(2), depth=(2, 2), **kw)
    reasons = [b.reason for b in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), reasons


def test_compiled_training_steps_equal_eager(one_thread):
    """Two full training steps (forward, ACT loss, backward, SignSGD, AdamATan2; the second from the carried state)
    through torch.compile(fullgraph=True) and in eager, from the same weights: the logits, q_halt, carry, the
    puzzle rows' gradient, every parameter gradient and the updated weights agree.

    Backend aot_eager: Dynamo's graph and AOTAutograd's joint forward/backward (which functionalises the write
    into the puzzle leaf), run on eager aten kernels; inductor is left out because compiling it on this 2-core
    CPU takes ~70 s. Tolerance rtol = atol = 1e-5 (fp32) to allow a different accumulation order in the
    compiled backward; measured here: 0 (bitwise equal). The graph is compiled once for both steps."""
    from torch._dynamo.backends.registry import lookup_backend

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = TRM(TRMConfig(halt_max_steps=4, **TINY))
    with torch.no_grad():
        eager.puzzle_emb.weight.normal_()  # non-zero rows, so their gradient is not trivially symmetric
    compiled = copy.deepcopy(eager)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    def two_steps(model, forward):
        opt, sign_sgd = AdamATan2(model.parameters(), lr=1e-2, weight_decay=0.1), SignSGD(model.puzzle_emb, lr=1e-2)
        carry, record = model.initial_carry(4), []
        for step in range(2):
            carry, out = forward(carry, make_batch(4, seed=step), depth=(2, 2),
                                 min_halt_steps=torch.tensor([0, 2, 0, 3]))
            loss, _ = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)
            (loss / 4).backward()
            record += [out.logits, out.q_halt, carry.y, carry.z, carry.halted, model.puzzle_emb.last_rows.grad.clone()]
            record += [p.grad.clone() for p in model.parameters()]
            sign_sgd.step()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return record + [t.detach().clone() for t in model.state_dict().values()]

    want = two_steps(eager, eager)
    got = two_steps(compiled, torch.compile(compiled, backend=counting_backend, fullgraph=True))
    assert len(graphs) == 1
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.detach(), w.detach(), rtol=1e-5, atol=1e-5)
