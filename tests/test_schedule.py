"""The pure schedule against the contract's formulas, written out again here."""

import math

import pytest

from noam_plugin import ConfigError, NoamConfig, noam_lr


def reference_d_model(k, W, d_model, factor=1.0):
    return factor * d_model**-0.5 * min(k**-0.5, k * W**-1.5)


def reference_peak(k, W, peak):
    return peak * min(k / W, (W / k) ** 0.5)


@pytest.mark.parametrize("W,d_model,factor", [(4000, 512, 1.0), (4000, 1024, 1.0), (1, 64, 2.0), (10, 7, 0.5)])
def test_d_model_form_equals_paper(W, d_model, factor):
    for k in [1, 2, W - 1, W, W + 1, 2 * W, 10 * W, 123457]:
        if k < 1:
            continue
        assert noam_lr(k, warmup_num_steps=W, d_model=d_model, factor=factor) == reference_d_model(k, W, d_model, factor)


@pytest.mark.parametrize("W,peak", [(4000, 1e-3), (1, 0.5), (37, 3e-4)])
def test_peak_form_reaches_peak_at_warmup_end(W, peak):
    for k in [1, 2, W, W + 1, 5 * W]:
        assert noam_lr(k, warmup_num_steps=W, warmup_max_lr=peak) == reference_peak(k, W, peak)
    assert noam_lr(W, warmup_num_steps=W, warmup_max_lr=peak) == pytest.approx(peak, rel=1e-15)


def test_paper_base_values():
    # Paper base model: d_model 512, warmup 4000; peak 512**-0.5 * 4000**-0.5 ~ 6.99e-4.
    assert noam_lr(4000, warmup_num_steps=4000, d_model=512) == pytest.approx(6.987712429686844e-4, rel=1e-12)
    assert noam_lr(1, warmup_num_steps=4000, d_model=512) == pytest.approx(512**-0.5 * 4000**-1.5, rel=1e-12)


def test_first_update_is_not_zero():
    assert noam_lr(1, warmup_num_steps=4000, d_model=512) > 0
    assert noam_lr(1, warmup_num_steps=4000, warmup_max_lr=1e-3) == pytest.approx(1e-3 / 4000)


def test_curve_rises_then_decays():
    lrs = [noam_lr(k, warmup_num_steps=50, d_model=64) for k in range(1, 500)]
    peak = max(range(len(lrs)), key=lrs.__getitem__) + 1
    assert peak == 50
    assert all(a < b for a, b in zip(lrs[:49], lrs[1:50]))
    assert all(a > b for a, b in zip(lrs[49:], lrs[50:]))


@pytest.mark.parametrize("step", [0, -1, 1.5, True, "3"])
def test_bad_step(step):
    with pytest.raises(ValueError, match="step"):
        noam_lr(step, warmup_num_steps=10, d_model=64)


BAD_PARAMS = [
    (dict(warmup_num_steps=0, d_model=512), "warmup_num_steps", "int >= 1"),
    (dict(warmup_num_steps=4000.0, d_model=512), "warmup_num_steps", "float 4000.0"),
    (dict(warmup_num_steps=True, d_model=512), "warmup_num_steps", "bool True"),
    (dict(warmup_num_steps=10), "d_model / warmup_max_lr", "neither"),
    (dict(warmup_num_steps=10, d_model=512, warmup_max_lr=1e-3), "d_model / warmup_max_lr", "both"),
    (dict(warmup_num_steps=10, d_model=0), "d_model", "int 0"),
    (dict(warmup_num_steps=10, d_model=512, factor=0), "factor", "int 0"),
    (dict(warmup_num_steps=10, d_model=512, factor=-1.0), "factor", "float -1.0"),
    (dict(warmup_num_steps=10, warmup_max_lr=-1e-3), "warmup_max_lr", "float -0.001"),
    (dict(warmup_num_steps=10, warmup_max_lr=math.inf), "warmup_max_lr", "inf"),
    (dict(warmup_num_steps=10, warmup_max_lr=1e-3, factor=2.0), "factor", "only together with d_model"),
]


@pytest.mark.parametrize("params,key,found", BAD_PARAMS)
def test_bad_params_name_key_and_value(params, key, found):
    with pytest.raises(ConfigError) as error:
        NoamConfig(**params)
    assert f"{key}: expected" in str(error.value)
    assert found in str(error.value)


def test_from_params_lists_every_problem_and_suggests_names():
    with pytest.raises(ConfigError) as error:
        NoamConfig.from_params({"warmup_num_step": 10, "d_modle": 512}, source="x.yaml", prefix="scheduler.params.")
    text = str(error.value)
    assert "x.yaml: scheduler.params.warmup_num_step: expected one of" in text
    assert "did you mean 'warmup_num_steps'?" in text
    assert "did you mean 'd_model'?" in text
    assert "scheduler.params.warmup_num_steps: expected an int >= 1 (required), found nothing" in text
    assert len(text.splitlines()) == 4  # two unknown keys, the missing warmup, neither d_model nor peak


def test_auto_left_unresolved_is_explained():
    with pytest.raises(ConfigError, match="filled in only by Accelerate"):
        NoamConfig.from_params({"warmup_num_steps": "auto", "warmup_max_lr": 1e-3}, source="ds.json")
