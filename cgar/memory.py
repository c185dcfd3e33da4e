"""Peak training memory, estimated before step 1 from the tensors autograd really saves (printed by cgar.train).

Saved activations dominate at the paper shape (hidden 512, batch 768: tens of GB), and they scale with the slots
in one forward, so they are *measured*, not modelled: one grad-mode supervision step of 1 and of 2 slots is run
under `torch.autograd.graph.saved_tensors_hooks`, which sees every tensor autograd keeps for backward; the
difference is the per-slot cost (the rest, such as the weights cast to bf16 once per call, does not grow with the
batch). It is the eager model's figure: a compiled network saves less (inductor recomputes cheap element-wise ops
in its backward), so for `train.compile` it is an upper bound.

    peak = weights + gradients + optimizer moments + EMA copy          (fp32, 5 copies of the parameters)
         + carry (y, z of every slot, in the forward dtype)
         + saved activations of one micro-batch                        (/ train.grad_accum_steps)
         + the working set of one network application                  (what the no-grad cycles hold at once)

With `train.activation_checkpointing` the grad cycle keeps only the inputs of its n + 1 network applications and
recomputes one application at a time in backward, so its saved activations become the inputs plus one
application's worth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cgar.model import TRM

GIB = 2**30


class SavedBytes:
    """Context manager: the bytes of the distinct storages autograd saves for backward inside it, parameters
    excluded (they are counted once, as weights)."""

    def __init__(self, model: TRM):
        self.skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.seen[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> "SavedBytes":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _step_saved_bytes(model: TRM, slots: int, depth: tuple[int, int]) -> tuple[int, int]:
    """(saved bytes of one grad-mode supervision step of `slots` slots, those of one network application)."""
    cfg, dev, dt = model.config, model.y_init.device, model.compute_dtype
    y = torch.zeros(slots, cfg.total_len, cfg.hidden_size, device=dev, dtype=dt)
    inputs = torch.ones(slots, cfg.seq_len, dtype=torch.int32, device=dev)
    ids = torch.zeros(slots, dtype=torch.int32, device=dev)
    with torch.enable_grad():
        with SavedBytes(model) as step:
            model.recur(y, y.clone(), inputs, ids, depth)
        with SavedBytes(model) as one:
            model._net(y, y)  # eager network, checkpointing aside
    return step.total, one.total


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gib: float  # parameters, gradients, two optimizer moments, the EMA copy (fp32)
    carry_gib: float  # y, z of the rank's slots
    activations_gib: float  # saved for backward by one micro-batch
    working_gib: float  # one network application's tensors, alive at once in the no-grad cycles
    per_slot_mib: float  # saved activations per slot, the measured slope
    micro_batch: int

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.carry_gib + self.activations_gib + self.working_gib

    def line(self) -> str:
        return (f"estimated peak memory per rank {self.total_gib:.1f} GiB: activations {self.activations_gib:.1f} "
                f"({self.micro_batch} slots per micro-batch x {self.per_slot_mib:.1f} MiB), carry "
                f"{self.carry_gib:.2f}, weights + gradients + optimizer + EMA {self.weights_gib:.2f}, working set "
                f"{self.working_gib:.2f}")

    def as_dict(self) -> dict:
        return {**asdict(self), "total_gib": self.total_gib}


def estimate_peak_memory(model: TRM, local_batch: int, grad_accum_steps: int | tuple[int, ...] = 1,
                         depth: tuple[int, int] | None = None) -> MemoryEstimate | list[MemoryEstimate]:
    """Peak memory of a training step of `local_batch` slots in `grad_accum_steps` micro-batches at `depth`
    (None: full depth, the deepest PDC stage); a tuple of micro-batch counts gives a list, from one probe. Runs
    two tiny grad-mode steps on the model's device; the model's weights and mode are left as they were."""
    cfg = model.config
    T, n = depth or (cfg.H_cycles, cfg.L_cycles)
    # the probe runs the eager network without checkpointing (no compile for its batch sizes), in eval mode (no
    # puzzle-embedding leaf: it must not resize the trainer's); all three are restored
    was = model.training, model._net_impl, model.checkpoint_grad_cycle
    model.eval()
    model._net_impl, model.checkpoint_grad_cycle = model._net, False
    try:
        (s1, net1), (s2, net2) = (_step_saved_bytes(model, b, (T, n)) for b in (1, 2))
    finally:
        model.train(was[0])
        model._net_impl, model.checkpoint_grad_cycle = was[1], was[2]
    checkpointing = was[2]
    per_slot, fixed = s2 - s1, 2 * s1 - s2
    per_net = net2 - net1
    itemsize = torch.empty((), dtype=model.compute_dtype).element_size()
    state = cfg.total_len * cfg.hidden_size * itemsize  # one slot's y or z
    if checkpointing:  # keep the n + 1 applications' inputs, recompute one at a time
        per_slot = per_slot - (n + 1) * per_net + (n + 1) * 2 * state + per_net
    params = sum(p.numel() for p in model.parameters()) * 4

    def at(k: int) -> MemoryEstimate:
        micro = local_batch // k
        return MemoryEstimate(
            weights_gib=5 * params / GIB,
            carry_gib=local_batch * (2 * state + 3 * cfg.seq_len * 4) / GIB,
            activations_gib=(fixed + micro * per_slot) / GIB,
            working_gib=micro * per_net / GIB,
            per_slot_mib=per_slot / 2**20,
            micro_batch=micro,
        )

    return [at(k) for k in grad_accum_steps] if isinstance(grad_accum_steps, tuple) else at(grad_accum_steps)


def fit_micro_batches(model: TRM, local_batch: int, budget_bytes: float | None) -> tuple[int, MemoryEstimate]:
    """train.grad_accum_steps: 0 (auto): the fewest micro-batches (a divisor of the rank's slots) whose estimated
    peak fits `budget_bytes` (None: no limit, 1). When none fits, one slot per micro-batch."""
    divisors = tuple(k for k in range(1, local_batch + 1) if local_batch % k == 0)
    if budget_bytes is None:
        return 1, estimate_peak_memory(model, local_batch, 1)
    estimates = estimate_peak_memory(model, local_batch, divisors)
    fits = [(k, e) for k, e in zip(divisors, estimates) if e.total_gib * GIB <= budget_bytes]
    return fits[0] if fits else (divisors[-1], estimates[-1])


def device_budget(device: torch.device, share: float = 0.9) -> float | None:
    """What a rank may plan to use: `share` of the GPU's memory (the rest: CUDA context, allocator slack); None
    on CPU, where training never needs to split its batch."""
    if device.type != "cuda":
        return None
    return share * torch.cuda.get_device_properties(device).total_memory
