"""Run config: defaults are the paper's, bad keys and types are named with their path."""

import pytest

from cgar.config import ConfigError, RunConfig, check_world_size, config_from_dict, config_to_dict, load_config


def test_defaults_are_the_trm_recipe():
    c = RunConfig()
    assert (c.model.hidden_size, c.model.H_cycles, c.model.L_cycles, c.model.halt_max_steps) == (512, 3, 6, 16)
    assert (c.train.global_batch_size, c.train.lr, c.train.weight_decay, c.train.ema_rate) == (768, 1e-4, 1.0, 0.999)
    assert c.train.gradient_clipping == 0.0 and c.pdc.stages == ((0.0, 1, 2), (0.3, 2, 4), (0.6, 3, 6))


def test_round_trip_through_dict():
    c = config_from_dict({"pdc": {"enabled": True}, "hsw": {"enabled": True}, "train": {"lr": 3e-4}})
    assert config_from_dict(config_to_dict(c)) == c


@pytest.mark.parametrize(
    "data, match",
    [
        ({"train": {"lrr": 1}}, r"^train.lrr: unknown key"),
        ({"train": {"global_batch_size": "768"}}, r"^train.global_batch_size: expected an integer"),
        ({"model": {"mlp_t": 1}}, r"^model.mlp_t: expected true/false"),
        ({"hsw": {"mode": "both"}}, r"^hsw.mode: must be paper or released"),
        ({"pdc": {"stages": [[0.3, 1, 2], [0.6, 3, 6]]}}, r"^pdc.stages: must start at progress 0.0"),
        ({"pdc": {"stages": [[0.0, 1]]}}, r"^pdc.stages\[0\]: expected 3 items"),
        ({"train": {"epochs": 10, "epochs_per_iter": 3}}, r"^train.epochs: must be a multiple"),
        ({"model": []}, r"^model: expected a mapping"),
        # issue 11: every value a run would misuse, refused with its key path
        ({"train": {"epochs_per_iter": 0}}, r"^train.epochs_per_iter: must be >= 1, got 0"),
        ({"train": {"checkpoint_every": 0}}, r"^train.checkpoint_every: must be >= 1"),
        ({"train": {"log_every": 0}}, r"^train.log_every: must be >= 1"),
        ({"train": {"epochs": 0}}, r"^train.epochs: must be >= 1"),
        ({"train": {"max_steps": 0}}, r"^train.max_steps: must be >= 1"),
        ({"model": {"halt_max_steps": 0}}, r"^model.halt_max_steps: must be >= 1"),
        ({"model": {"hidden_size": 0}}, r"^model.hidden_size: must be >= 1"),
        ({"model": {"H_cycles": 0}}, r"^model.H_cycles: must be >= 1"),
        ({"model": {"L_cycles": -1}}, r"^model.L_cycles: must be >= 1"),
        ({"model": {"puzzle_emb_len": 0}}, r"^model.puzzle_emb_len: must be >= 1"),
        ({"model": {"hidden_size": 30, "num_heads": 8}}, r"^model.hidden_size: 30 is not divisible by model.num_heads"),
        ({"train": {"lr": 0}}, r"^train.lr: must be > 0"),
        ({"train": {"lr": -1e-4}}, r"^train.lr: must be > 0"),
        ({"train": {"ema_rate": 2.0}}, r"^train.ema_rate: must be in \[0, 1\), got 2.0"),
        ({"train": {"ema_rate": 1.0}}, r"^train.ema_rate: must be in \[0, 1\)"),
        ({"train": {"ema_rate": -0.1}}, r"^train.ema_rate: must be in \[0, 1\)"),
        ({"pdc": {"stages": [[0.0, 0, 2]]}}, r"^pdc.stages: T and n must be >= 1"),
        ({"pdc": {"stages": [[0.0, 1, 2], [1.0, 3, 6]]}}, r"^pdc.stages: every stage must start at progress < 1.0"),
        ({"pdc": {"enabled": True, "stages": [[0.0, 5, 5]]}, "model": {"H_cycles": 2, "L_cycles": 2}},
         r"^pdc.stages: stage depth \[\(5, 5\)\] exceeds the model's full depth .* = \(2, 2\)"),
    ],
)
def test_bad_values_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_load_names_the_file_and_applies_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  lr: 0.001\n  seed: 3\n")
    c = load_config(p, overrides={"train.seed": 4, "hsw.mode": "released"})
    assert c.train.lr == 0.001 and c.train.seed == 4 and c.hsw.mode == "released"
    p.write_text("train:\n  seed: [1\n")
    with pytest.raises(ConfigError, match="run.yaml: cannot read config"):
        load_config(p)
    p.write_text("train:\n  sed: 1\n")
    with pytest.raises(ConfigError, match=r"run.yaml: train.sed: unknown key"):
        load_config(p)


def test_valid_edges_are_accepted():
    c = config_from_dict({"train": {"ema_rate": 0.0, "lr_min_ratio": 0.0, "epochs": 1, "epochs_per_iter": 1},
                          "model": {"H_cycles": 1, "L_cycles": 1}, "pdc": {"enabled": False}})
    assert c.train.ema_rate == 0.0 and c.pdc.stages[-1] == (0.6, 3, 6)  # stages deeper than the model: PDC off


def test_world_size_must_divide_the_global_batch():
    c = config_from_dict({"train": {"global_batch_size": 6}})
    check_world_size(c, 3)
    with pytest.raises(ConfigError, match=r"^train.global_batch_size: 6 is not divisible by the 4 ranks"):
        check_world_size(c, 4)
