"""Run configuration: frozen dataclasses loaded from YAML/JSON, with errors that name the key path.

A run config has four sections; every field has the TRM/CGAR paper default, so a YAML file only lists what it
changes. The variants are configs, not code paths:

    baseline: pdc.enabled=false, hsw.enabled=false    pdc:  pdc.enabled=true,  hsw.enabled=false
    hsw:      pdc.enabled=false, hsw.enabled=true     cgar: pdc.enabled=true,  hsw.enabled=true
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad config value; the message starts with the dotted key path (and the file, when known)."""


@dataclass(frozen=True)
class ModelSection:
    hidden_size: int = 512
    expansion: float = 4.0
    ffn_multiple: int = 256  # SwiGLU widths round up to a multiple of this (TRM: 256)
    num_heads: int = 8
    n_layers: int = 2
    mlp_t: bool = True  # token-mixing MLP (TRM's 87.4% Sudoku config); False = attention + RoPE
    H_cycles: int = 3  # T, full depth (evaluation always uses it)
    L_cycles: int = 6  # n
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    puzzle_emb_len: int = 16
    forward_dtype: str = "auto"  # auto = bfloat16 on a GPU with native bf16 (compute capability >= 8.0), else float32


@dataclass(frozen=True)
class TrainSection:
    global_batch_size: int = 768
    epochs: int = 50_000
    epochs_per_iter: int = 5_000  # TRM's eval_interval: epochs concatenated into one shuffled iteration
    max_steps: int | None = None  # stop early (smoke runs); None = the full schedule
    optimizer: str = "adam_atan2"  # adam_atan2 (TRM code) | adamw (TRM paper text)
    lr: float = 1e-4
    lr_warmup_steps: int = 2000
    lr_min_ratio: float = 1.0  # 1.0 = constant after warmup, as TRM
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 1.0
    puzzle_emb_lr: float = 1e-4
    puzzle_emb_weight_decay: float = 1.0
    ema_rate: float = 0.999
    seed: int = 0
    zero_stage: int = 0
    gradient_clipping: float = 0.0  # TRM has none; DeepSpeed's default would be 1.0
    checkpoint_every: int = 1000  # optimizer steps between resumable checkpoints
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    # GPU efficiency; none of these changes what is computed beyond float rounding (tests/test_efficiency.py)
    compile: bool | None = None  # torch.compile the recursion's network; null = on CUDA, off on CPU (see below)
    grad_accum_steps: int = 1  # micro-batches of carry slots per rank and step: less memory, same step; 0 = auto
    activation_checkpointing: bool = False  # recompute the grad cycle's activations in backward: less memory
    # in-training evaluation (cgar/train_eval.py): EMA weights, full depth, on a fixed test subsample and on val
    eval_every: int = 0  # optimizer steps between evaluations (0 = off); the last step is always evaluated when > 0
    eval_subsample: int = 8192  # test puzzles, drawn once with the fixed seed 0 (the same for every run and variant)
    eval_batch_size: int = 768  # global evaluation batch (split over ranks)
    keep_snapshots: int = 0  # EMA snapshots kept in snapshots/ (0 = all; k = the k newest, plus the best by val)
    # gradient statistics (cgar/grad_stats.py): per-supervision-step gradient norms, minibatch-gradient variance
    grad_stats_every: int = 0  # optimizer steps between measurements (0 = off)
    grad_stats_chunks: int = 8  # fixed chunks of the global batch for the minibatch-gradient variance
    tensorboard: bool = True  # write TensorBoard events to the run folder when tensorboard is installed


@dataclass(frozen=True)
class PDCSection:
    enabled: bool = False
    # (progress at which the stage starts, T, n); the paper's (1,2) -> (2,4) -> (3,6) at 30% / 60%
    stages: tuple[tuple[float, int, int], ...] = ((0.0, 1, 2), (0.3, 2, 4), (0.6, 3, 6))


@dataclass(frozen=True)
class HSWSection:
    enabled: bool = False
    mode: str = "paper"  # paper (default: the published per-step weights) | released (CGAR code's scalar)
    decay: float = 0.7  # lambda; see cgar/curriculum.py for both modes and why paper is the default


@dataclass(frozen=True)
class RunConfig:
    data_dir: str = "data/sudoku-extreme-1k-aug-1000"
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    pdc: PDCSection = field(default_factory=PDCSection)
    hsw: HSWSection = field(default_factory=HSWSection)

    def __post_init__(self):
        m, t = self.model, self.train
        for key in ("hidden_size", "num_heads", "n_layers", "H_cycles", "L_cycles", "halt_max_steps",
                    "puzzle_emb_len", "ffn_multiple"):
            _check(getattr(m, key) >= 1, f"model.{key}", f"must be >= 1, got {getattr(m, key)}")
        _check(m.hidden_size % m.num_heads == 0, "model.hidden_size",
               f"{m.hidden_size} is not divisible by model.num_heads ({m.num_heads})")
        _check(m.expansion > 0, "model.expansion", f"must be > 0, got {m.expansion}")
        _check(0.0 <= m.halt_exploration_prob <= 1.0, "model.halt_exploration_prob", "must be in [0, 1]")
        for key in ("epochs", "epochs_per_iter", "checkpoint_every", "log_every"):
            _check(getattr(t, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
        _check(t.max_steps is None or t.max_steps >= 1, "train.max_steps", "must be >= 1 (or null: no limit)")
        for key in ("lr", "puzzle_emb_lr"):
            _check(getattr(t, key) > 0, f"train.{key}", f"must be > 0, got {getattr(t, key)}")
        _check(0.0 <= t.ema_rate < 1.0, "train.ema_rate", f"must be in [0, 1), got {t.ema_rate}")
        _check(0.0 <= t.lr_min_ratio <= 1.0, "train.lr_min_ratio", "must be in [0, 1]")
        _check(t.lr_warmup_steps >= 0, "train.lr_warmup_steps", "must be >= 0")
        _check(t.gradient_clipping >= 0, "train.gradient_clipping", "must be >= 0 (0 = no clipping)")
        for key in ("beta1", "beta2"):
            _check(0.0 <= getattr(t, key) < 1.0, f"train.{key}", "must be in [0, 1)")
        _check(self.train.optimizer in ("adam_atan2", "adamw"), "train.optimizer", "must be adam_atan2 or adamw")
        _check(self.train.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda")
        _check(self.hsw.mode in ("paper", "released"), "hsw.mode", "must be paper or released")
        _check(0.0 < self.hsw.decay <= 1.0, "hsw.decay", "must be in (0, 1]")
        _check(self.train.zero_stage in (0, 1, 2), "train.zero_stage", "must be 0, 1 or 2")
        _check(self.train.global_batch_size > 0, "train.global_batch_size", "must be positive")
        _check(t.epochs % t.epochs_per_iter == 0, "train.epochs",
               f"must be a multiple of train.epochs_per_iter ({self.train.epochs_per_iter})")
        for key in ("eval_every", "keep_snapshots", "grad_stats_every", "grad_accum_steps"):
            _check(getattr(self.train, key) >= 0, f"train.{key}", "must be >= 0 (0 = off / all)")
        for key in ("eval_subsample", "eval_batch_size"):
            _check(getattr(self.train, key) >= 1, f"train.{key}", "must be >= 1")
        _check(not self.train.grad_stats_every or 2 <= self.train.grad_stats_chunks <= self.train.global_batch_size,
               "train.grad_stats_chunks",
               f"must be in 2..train.global_batch_size ({self.train.global_batch_size}): a variance needs 2 chunks")
        _check(self.model.forward_dtype in ("auto", "float32", "bfloat16"), "model.forward_dtype",
               "must be auto, float32 or bfloat16")
        starts = [s[0] for s in self.pdc.stages]
        _check(bool(starts) and starts[0] == 0.0 and starts == sorted(starts), "pdc.stages",
               "must start at progress 0.0 and be sorted by progress")
        _check(all(T >= 1 and n >= 1 for _, T, n in self.pdc.stages), "pdc.stages", "T and n must be >= 1")
        _check(all(s < 1.0 for s in starts), "pdc.stages", "every stage must start at progress < 1.0")
        deeper = [(T, n) for _, T, n in self.pdc.stages if T > m.H_cycles or n > m.L_cycles] * self.pdc.enabled
        _check(not deeper, "pdc.stages", f"stage depth {deeper[:1]} exceeds the model's full depth "
               f"(model.H_cycles, model.L_cycles) = ({m.H_cycles}, {m.L_cycles}), which evaluation uses")


def check_world_size(cfg: RunConfig, world: int) -> None:
    """The global batch is split evenly over the ranks, and each rank's slots evenly into
    train.grad_accum_steps micro-batches (DeepSpeed's micro batch = global / world / grad_accum_steps; 0 = auto,
    a divisor chosen by `cgar.memory.fit_micro_batches`)."""
    t = cfg.train
    _check(t.global_batch_size % world == 0, "train.global_batch_size",
           f"{t.global_batch_size} is not divisible by the {world} ranks of this run")
    _check(t.grad_accum_steps == 0 or (t.global_batch_size // world) % t.grad_accum_steps == 0,
           "train.grad_accum_steps",
           f"{t.grad_accum_steps} does not divide the {t.global_batch_size // world} slots per rank "
           f"(train.global_batch_size {t.global_batch_size} over {world} rank(s))")


def compile_enabled(setting: bool | None, device) -> bool:
    """train.compile on `device`: null = on CUDA only. On CPU the compile (~10 s for the laptop model, more at the
    paper shape) buys 1.1-1.2x there (docs/gpu_efficiency.md), not worth it for a 2-minute run."""
    return device.type == "cuda" if setting is None else setting


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _coerce(value, hint, key: str):
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {key}")


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (valid keys: {', '.join(sorted(names))})")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def config_from_dict(data: dict) -> RunConfig:
    return _build(RunConfig, data)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> RunConfig:
    """Read a YAML/JSON run config; errors name the file and the key path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_dict(cfg: RunConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
