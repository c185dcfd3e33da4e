"""Run config: defaults are the paper's, bad keys and types are named with their path."""

import pytest

from cgar.config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_config


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
