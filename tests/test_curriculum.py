"""CGAR schedules against the paper's numbers: PDC stages, the 41.4% depth reduction, HSW weights.

Run: .venv/bin/pytest tests/test_curriculum.py
"""

import pytest
import torch

from cgar.curriculum import (DEFAULT_HSW_MODE, HSW_MODES, PAPER_STAGES, depth_at, depth_reduction,
                             effective_depth, hsw_scale_released, hsw_weight, hsw_weights_paper,
                             mean_effective_depth, stages_from_base, validate_stages)


@pytest.mark.parametrize("progress, depth", [
    (0.0, (1, 2)), (0.29, (1, 2)), (0.2999, (1, 2)), (0.3, (2, 4)), (0.59, (2, 4)), (0.6, (3, 6)), (1.0, (3, 6)),
])
def test_pdc_paper_table(progress, depth):
    assert depth_at(progress) == depth


def test_pdc_from_base_reproduces_the_paper_stages():
    assert stages_from_base(3, 6) == PAPER_STAGES
    assert stages_from_base(1, 1) == ((0.0, 1, 2), (0.3, 1, 2), (0.6, 1, 1))  # the code's floors (T>=1, n>=2)
    assert stages_from_base(6, 12)[:2] == ((0.0, 2, 4), (0.3, 4, 8))


def test_pdc_stage_validation():
    for bad in [(), ((0.1, 1, 2),), ((0.0, 1, 2), (0.6, 2, 4), (0.3, 3, 6)), ((0.0, 0, 2),),
                ((0.0, 1, 2), (0.0, 2, 4)), ((0.0, 1, 2), (1.0, 2, 4))]:
        with pytest.raises(ValueError):
            validate_stages(bad)
    with pytest.raises(ValueError):
        depth_at(1.5)
    assert depth_at(0.7, ((0.0, 2, 3),)) == (2, 3)  # a single stage is a fixed depth (the baseline)


def test_effective_depth_and_the_41_4_percent_reduction():
    assert [effective_depth(T, n) for _, T, n in PAPER_STAGES] == [6, 20, 42]
    assert mean_effective_depth() == pytest.approx(24.6)
    assert depth_reduction() == pytest.approx(0.414, abs=5e-4)
    assert round(100 * depth_reduction(), 1) == 41.4


def test_hsw_paper_weights():
    w = hsw_weights_paper(torch.arange(1, 17))
    # w_3 = 0.49 / 3.32226 = 0.14749 (the spec's "0.148" rounds 0.1475, itself a rounding, up)
    want = [0.301, 0.211, 0.147, 0.103, 0.0723, 0.0506, 0.0354, 0.0248]
    assert [float(f"{x:.3g}") for x in w[:8].tolist()] == want
    assert float(f"{w[-1].item():.2g}") == 0.0014
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (w[0] / w[-1]).item() == pytest.approx(0.7**-15, rel=1e-5)  # ~211, not the "153x" quoted elsewhere
    with pytest.raises(ValueError):
        hsw_weights_paper(torch.tensor([0, 3]))
    unchecked = hsw_weights_paper(torch.arange(1, 17), check=False)  # the same weights, without the range check
    assert torch.equal(unchecked, w)
    assert torch.equal(hsw_weight("paper", None, torch.arange(1, 17), check=False), w)


def test_hsw_released_scale():
    assert hsw_scale_released(torch.zeros(8, dtype=torch.int32)) == 1.0  # the very first step
    assert hsw_scale_released(torch.tensor([0, 1], dtype=torch.int32)) == 1.0  # int(0.5) = 0: truncation
    assert hsw_scale_released(torch.tensor([1, 2], dtype=torch.int32)) == pytest.approx(0.7)  # int(1.5) = 1
    assert hsw_scale_released(torch.tensor([3, 4], dtype=torch.int32)) == pytest.approx(0.7**3)  # int(3.5) = 3
    assert hsw_scale_released(torch.tensor([16, 0, 5, 7], dtype=torch.int32)) == pytest.approx(0.7**7)


def test_hsw_dispatch():
    incoming, steps = torch.tensor([0, 16, 4]), torch.tensor([1, 1, 5])
    assert hsw_weight("off", incoming, steps) is None
    assert torch.allclose(hsw_weight("paper", incoming, steps), hsw_weights_paper(steps))
    assert hsw_weight("released", incoming, steps) == pytest.approx(0.7**6)
    assert DEFAULT_HSW_MODE in HSW_MODES
    with pytest.raises(ValueError):
        hsw_weight("both", incoming, steps)
