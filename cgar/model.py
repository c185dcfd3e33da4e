"""Tiny Recursive Model (TRM, arXiv 2510.04871) for Sudoku-Extreme, with its ACT carry.

Numerics follow the reference code (SamsungSAILMontreal/TinyRecursiveModels `trm.py`, `layers.py`):
one 2-block network `net` does both updates, z <- net(z + y + x) (n times) and y <- net(y + z); post-norm
RMSNorm without gain; SwiGLU MLPs; the `mlp_t` variant mixes tokens with an MLP over the 97 positions.
Code names: y is the reference's z_H, z is its z_L; T = H_cycles, n = L_cycles.

Training (spec §1.4) runs ONE supervision step per optimizer step over a persistent batch of slots:

    carry = model.initial_carry(B)
    for batch in loader:
        carry, out = model(carry, batch, depth=(T, n), generator=g)   # refill, recurse, count, halt
        loss, metrics = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)

Evaluation: `model.eval()`, a fresh carry per batch, 16 calls at full depth; no slot halts early.
The puzzle embedding is a buffer trained by SignSGD (`cgar.optim.SignSGD`), not a Parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from cgar.act import Carry, StepOutput, draw_min_halt_steps, halting, refill  # noqa: F401  (also cgar.model's API)
from cgar.precision import forward_dtype
from cgar.puzzle_embedding import PuzzleEmbedding

IGNORE_LABEL_ID = -100


@dataclass(frozen=True)
class TRMConfig:
    vocab_size: int = 11  # 0 pad, 1 blank, 2..10 digits
    seq_len: int = 81
    puzzle_emb_len: int = 16  # prefix positions; position 0 holds the puzzle embedding, 1..15 are zeros
    num_puzzle_identifiers: int = 1  # Sudoku: one shared puzzle embedding
    hidden_size: int = 512
    expansion: float = 4.0
    ffn_multiple: int = 256  # SwiGLU widths round up to this (TRM: 256; the laptop model: 64, see swiglu_inner)
    num_heads: int = 8  # attention variant only
    n_layers: int = 2  # blocks in `net`
    mlp_t: bool = True  # token-mixing MLP (87.4% config); False = attention + RoPE (74.7%)
    H_cycles: int = 3  # T, full depth
    L_cycles: int = 6  # n, full depth
    halt_max_steps: int = 16  # N_sup
    halt_exploration_prob: float = 0.1
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    forward_dtype: str = "auto"  # auto = bfloat16 on a GPU with native bf16, float32 elsewhere (`forward_dtype`)

    @property
    def total_len(self) -> int:
        return self.seq_len + self.puzzle_emb_len  # 97


# ----------------------------------------------------------------------------- init and layers

def trunc_normal_(t: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """JAX/flax truncated normal: cut at +-bound sigma, with sigma raised so the *result* has std `std`.

    torch.nn.init.trunc_normal_ keeps sigma = std, which gives a smaller actual std (0.88 std at +-2).
    The std of N(0,1) truncated to [-b, b] is sqrt(1 - 2 b phi(b) / (Phi(b) - Phi(-b))).
    """
    with torch.no_grad():
        if std == 0:
            return t.zero_()
        mass = math.erf(bound / math.sqrt(2))  # Phi(b) - Phi(-b)
        pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
        sigma = std / math.sqrt(1 - 2 * bound * pdf / mass)
        # inverse-CDF sampling of the truncated standard normal, then scale
        t.uniform_(-mass, mass).erfinv_().mul_(math.sqrt(2) * sigma)
        return t.clamp_(-bound * sigma, bound * sigma)


class Linear(nn.Module):
    """Bias-free by default, truncated LeCun normal init (std 1/sqrt(fan_in)); fp32 weights cast to the input dtype."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(fan_out, fan_in), std=fan_in**-0.5))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis, no gain, computed in fp32."""
    h = x.float()
    return (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


def swiglu_inner(dim: int, expansion: float, multiple: int = 256) -> int:
    """TRM's SwiGLU width: round(expansion * dim * 2/3) rounded up to a multiple of 256 (512 -> 1536, 97 -> 512).

    `multiple` (model.ffn_multiple) is 256 in TRM. At hidden 64 that pads the channel MLP from 171 to 256 and the
    token MLP of a 6x6 grid (37 positions) from 99 to 256, so a small model spends most of its FLOPs on padding;
    the laptop config rounds to 64 instead (192 and 128)."""
    return -(-round(expansion * dim * 2 / 3) // multiple) * multiple


class SwiGLU(nn.Module):
    """down(silu(gate) * up), inner width `swiglu_inner(dim, expansion)`."""

    def __init__(self, dim: int, expansion: float, multiple: int = 256):
        super().__init__()
        inner = swiglu_inner(dim, expansion, multiple)
        self.gate_up = Linear(dim, 2 * inner)  # fused gate and up projections
        self.down = Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Rotary(nn.Module):
    """RoPE tables over the 97 positions, [L, head_dim] fp32, 'rotate half' layout (as TRM/HF Llama)."""

    def __init__(self, head_dim: int, length: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [L, head_dim]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, L, H, hd]; rotate in fp32, return in x's dtype
        h = x.float()
        h1, h2 = h.chunk(2, dim=-1)
        rotated = torch.cat((-h2, h1), dim=-1)
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]  # [L, 1, hd]
        return (h * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention with a fused qkv projection, RoPE and torch SDPA."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = Linear(dim, 3 * dim)
        self.o_proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rotary) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).unbind(2)  # each [B, L, H, hd]
        q, k = rope(q), rope(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, hd]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Post-norm block: token mixing (MLP over positions, or attention), then the channel SwiGLU."""

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        if cfg.mlp_t:
            self.token_mlp = SwiGLU(cfg.total_len, cfg.expansion, cfg.ffn_multiple)  # mixes the 97 positions
        else:
            self.attn = Attention(cfg.hidden_size, cfg.num_heads)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion, cfg.ffn_multiple)

    def forward(self, x: torch.Tensor, rope: Rotary | None) -> torch.Tensor:
        # x: [B, L=97, D]
        if hasattr(self, "token_mlp"):
            xt = x.transpose(1, 2)  # [B, D, L]
            # still transposed: this RMSNorm normalises each channel over the 97 positions (as TRM)
            x = rms_norm(xt + self.token_mlp(xt), self.eps).transpose(1, 2)
        else:
            x = rms_norm(x + self.attn(x, rope), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


# ----------------------------------------------------------------------------- the model

class TRM(nn.Module):
    def __init__(self, config: TRMConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = nn.Parameter(trunc_normal_(torch.empty(cfg.vocab_size, D), std=1 / self.embed_scale))
        self.puzzle_emb = PuzzleEmbedding(cfg.num_puzzle_identifiers, D)
        self.rope = None if cfg.mlp_t else Rotary(D // cfg.num_heads, cfg.total_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.lm_head = Linear(D, cfg.vocab_size)
        self.q_head = Linear(D, 2, bias=True)  # (q_halt, q_continue); q_continue is unused (no_ACT_continue)
        with torch.no_grad():  # q ~ sigmoid(-5): start far from halting
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # fixed initial y, z (TRM's H_init, L_init): not trained, but saved since they are random.
        # Kept fp32 and cast at refill, where TRM samples and stores them in the forward dtype (bf16 on GPU).
        # Deliberately: with the same values both give the same bits (a bf16 value is exact in fp32, and the
        # refill cast rounds as TRM's load-time copy into bf16 does, both ways; tested), and a bit-identical
        # *random* init is out of reach anyway: TRM draws every weight under torch.device("cuda") from the CUDA
        # generator in its own module order, we draw on CPU, so a seed gives the same init on every device.
        self.register_buffer("y_init", trunc_normal_(torch.empty(D), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(D), std=1.0))
        self._compute_dtype = forward_dtype(cfg.forward_dtype, self.embed_tokens.device)
        self._net_impl = self._net  # what `net` runs: the eager `_net`, or its torch.compile'd form (`compile_net`)
        self.checkpoint_grad_cycle = False  # recompute the grad cycle's activations in backward (saves memory)

    def num_params(self) -> int:
        """Trainable parameters (excludes the puzzle-embedding buffer): 5,028,866 mlp_t / 6,828,034 attention."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self._compute_dtype

    def _apply(self, fn, *args, **kwargs):
        """Every .to() / .cuda() / .float() ends here: the forward dtype follows the device the model is on."""
        out = super()._apply(fn, *args, **kwargs)
        self._compute_dtype = forward_dtype(self.config.forward_dtype, self.embed_tokens.device)
        return out

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, slots: slice | None = None
              ) -> torch.Tensor:
        """x = sqrt(D) * [puzzle vector, 15 zero rows, 81 token embeddings] -> [B, 97, D]."""
        cfg, dt = self.config, self.compute_dtype
        tok = F.embedding(inputs.long(), self.embed_tokens.to(dt))  # [B, 81, D]
        puz = self.puzzle_emb(puzzle_identifiers, slots).to(dt)  # [B, D]
        prefix = F.pad(puz, (0, (cfg.puzzle_emb_len - 1) * cfg.hidden_size)).view(-1, cfg.puzzle_emb_len,
                                                                                 cfg.hidden_size)
        return self.embed_scale * torch.cat((prefix, tok), dim=1)

    def _net(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        h = h + injection
        for block in self.blocks:
            h = block(h, self.rope)
        return h

    def net(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """The single 2-block network; the input injection is added first. h, injection: [B, 97, D]."""
        return self._net_impl(h, injection)

    def compile_net(self, **options) -> None:
        """torch.compile the network, the hot path: every one of a step's T (n + 1) applications runs it.

        One function of fixed shape [B, 97, D], whatever the depth (T, n), so PDC's stage switches reuse the graphs:
        dynamo keeps one for the no-grad cycles, two for the grad cycle (its first application's state has no
        grad, the next ones' has) and one for evaluation; a second batch size (evaluation's ACT compaction,
        gradient statistics' chunks) makes the batch axis dynamic (one recompile).
        The rest of the step (embedding, refill, heads, halting, loss) stays eager. `options`: torch.compile's."""
        self._net_impl = torch.compile(self._net, **options)

    @property
    def compiled(self) -> bool:
        return self._net_impl != self._net  # bound methods compare equal when they are the same method

    def _grad_net(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """`net` for the grad cycle: with checkpoint_grad_cycle (training), only its inputs are kept for backward
        and its activations are recomputed there, the same ops on the same values (bitwise equal gradients)."""
        if self.checkpoint_grad_cycle and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self.net, h, injection, use_reentrant=False)
        return self.net(h, injection)

    def recur(self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor,
              depth: tuple[int, int] | None = None, slots: slice | None = None):
        """One supervision step of T cycles x (n z-updates + 1 y-update); only the last cycle has grad.

        Returns (y, z) detached for the carry, logits [B, 81, vocab] and q_halt [B] fp32. slots: see `forward`.
        """
        T, n = depth or (self.config.H_cycles, self.config.L_cycles)
        if T < 1 or n < 1:
            raise ValueError(f"depth (T, n) must be positive, got {(T, n)}")
        x = self.embed(inputs, puzzle_identifiers, slots)  # [B, 97, D]
        with torch.no_grad():  # T-1 cycles improve (y, z) without building a graph
            for _ in range(T - 1):
                for _ in range(n):
                    z = self.net(z, y + x)
                y = self.net(y, z)
        for _ in range(n):  # the last cycle: backprop through its n + 1 net applications
            z = self._grad_net(z, y + x)
        y = self._grad_net(y, z)
        logits = self.lm_head(y)[:, self.config.puzzle_emb_len:]  # [B, 81, vocab]
        q_halt = self.q_head(y[:, 0]).float()[:, 0]  # [B], read from prefix position 0
        return y.detach(), z.detach(), logits, q_halt

    def initial_carry(self, batch_size: int, device: torch.device | str | None = None) -> Carry:
        """All slots halted, so the first forward fills every slot from its batch. In training mode it also
        reserves the puzzle embedding's grad leaf for the B slots, outside any compiled forward."""
        cfg = self.config
        device = device if device is not None else self.embed_tokens.device
        if self.training:
            self.puzzle_emb.reserve(batch_size)
        state = torch.zeros(batch_size, cfg.total_len, cfg.hidden_size, dtype=self.compute_dtype, device=device)
        ints = dict(dtype=torch.int32, device=device)
        return Carry(
            y=state, z=state.clone(),
            steps=torch.zeros(batch_size, **ints),
            halted=torch.ones(batch_size, dtype=torch.bool, device=device),
            data=dict(inputs=torch.zeros(batch_size, cfg.seq_len, **ints),
                      labels=torch.full((batch_size, cfg.seq_len), IGNORE_LABEL_ID, **ints),
                      puzzle_identifiers=torch.zeros(batch_size, **ints)),
        )

    def forward(self, carry: Carry, batch: dict[str, torch.Tensor], depth: tuple[int, int] | None = None,
                min_halt_steps: torch.Tensor | None = None, generator: torch.Generator | None = None,
                slots: slice | None = None) -> tuple[Carry, StepOutput]:
        """Refill halted slots from `batch`, run one supervision step at `depth` = (T, n) (None = full depth),
        count it, and decide halting (training: ACT with exploration minimums `min_halt_steps` [B], drawn from
        `generator` when not given; eval: max steps only). slots: with gradient accumulation, which of the slots
        reserved by `initial_carry` this carry and batch are (a micro-batch; None: all of them)."""
        carry = refill(carry, batch, self.y_init, self.z_init)
        d = carry.data
        y, z, logits, q_halt = self.recur(carry.y, carry.z, d["inputs"], d["puzzle_identifiers"], depth, slots)
        with torch.no_grad():
            steps = carry.steps + 1
            cfg = self.config
            if self.training and min_halt_steps is None:
                min_halt_steps = draw_min_halt_steps(len(steps), cfg.halt_max_steps, cfg.halt_exploration_prob,
                                                     generator, generator.device if generator else steps.device)
            halted = halting(steps, q_halt, cfg.halt_max_steps, self.training, min_halt_steps)
        return Carry(y, z, steps, halted, d), StepOutput(logits, q_halt)
