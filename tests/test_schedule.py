"""The pure schedule against the contract's formulas, written out again here."""

import math

import pytest

from noam_plugin import ConfigError, NoamConfig, noam_lr
from noam_plugin.schedule import COOLDOWN_KEYS


def reference_d_model(k, W, d_model, factor=1.0):
    return factor * d_model**-0.5 * min(k**-0.5, k * W**-1.5)


def reference_peak(k, W, peak):
    return peak * min(k / W, (W / k) ** 0.5)


@pytest.mark.parametrize("W,d_model,factor", [(4000, 512, 1.0), (4000, 1024, 1.0), (1, 64, 2.0), (10, 7, 0.5)])
def test_d_model_form_equals_paper(W, d_model, factor):
    for k in [1, 2, W - 1, W, W + 1, 2 * W, 10 * W, 123457]:
        if k < 1:
            continue
        assert noam_lr(k, warmup_num_steps=W, d_model=d_model, factor=factor) == reference_d_model(
            k, W, d_model, factor
        )


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


# ---------------------------------------------------------------- cooldown tail (issue 14)


def reference_cooldown(t, W, T, C, kind="linear", m=0.0, d_model=None, factor=1.0, peak=None):
    """docs/CONTRACT.md section 1, written out again."""
    noam = (lambda k: reference_d_model(k, W, d_model, factor)) if d_model else (lambda k: reference_peak(k, W, peak))
    s = T - C
    if t <= s:
        return noam(t)
    x = min(1, (t - s) / (C + 1))
    f = {"linear": 1 - x, "1-sqrt": 1 - math.sqrt(x), "cosine": (1 + math.cos(math.pi * x)) / 2}[kind]
    return m + (noam(s) - m) * f


@pytest.mark.parametrize("kind", ["linear", "1-sqrt", "cosine"])
@pytest.mark.parametrize("form", [dict(d_model=512, factor=2.0), dict(peak=1e-3)])
def test_cooldown_equals_the_formula(kind, form):
    W, T, C, m = 40, 300, 100, 1e-5
    kwargs = dict(d_model=form.get("d_model"), factor=form.get("factor", 1.0), warmup_max_lr=form.get("peak"))
    for t in [1, 39, 40, 41, 199, 200, 201, 202, 250, 299, 300, 301, 302, 10_000]:
        got = noam_lr(
            t,
            warmup_num_steps=W,
            total_num_steps=T,
            cooldown_num_steps=C,
            cooldown_type=kind,
            cooldown_min_lr=m,
            **kwargs,
        )
        assert got == pytest.approx(reference_cooldown(t, W, T, C, kind, m, **form), rel=1e-13, abs=0), t
    lrs = [
        noam_lr(
            t,
            warmup_num_steps=W,
            total_num_steps=T,
            cooldown_num_steps=C,
            cooldown_type=kind,
            cooldown_min_lr=m,
            **kwargs,
        )
        for t in range(200, 303)
    ]
    assert all(a > b for a, b in zip(lrs[:101], lrs[1:101]))  # strictly down through update T
    assert lrs[100] > m and lrs[101] == lrs[102] == m  # no update before T at m; every one after it


def test_cooldown_defaults_linear_to_zero_and_continuity():
    config = NoamConfig(warmup_num_steps=10, warmup_max_lr=1.0, total_num_steps=20, cooldown_num_steps=10)
    assert (config.cooldown_type, config.cooldown_min_lr, config.cooldown_start) == ("linear", 0.0, 10)
    assert config.lr(10) == 1.0 and config.lr(11) == pytest.approx(10 / 11) and config.lr(20) == pytest.approx(1 / 11)
    assert config.lr(21) == 0.0
    # a cooldown of the whole post-warmup part, and of one update
    one = NoamConfig(warmup_num_steps=10, warmup_max_lr=1.0, total_num_steps=50, cooldown_num_steps=1)
    assert one.lr(49) == reference_peak(49, 10, 1.0) and one.lr(50) == pytest.approx(reference_peak(49, 10, 1.0) / 2)


def test_total_without_cooldown_leaves_the_curve():
    config = NoamConfig(warmup_num_steps=10, d_model=64, total_num_steps=100)
    assert [config.lr(k) for k in (5, 100, 1000)] == [reference_d_model(k, 10, 64) for k in (5, 100, 1000)]
    assert config.schedule_params["total_num_steps"] == 100 and "cooldown_num_steps" not in config.schedule_params


BAD_COOLDOWN = [
    (dict(total_num_steps=10), "total_num_steps: expected an int > warmup_num_steps (10)", "found int 10"),
    (dict(total_num_steps=50.0), "total_num_steps: expected an int > warmup_num_steps", "found float 50.0"),
    (dict(cooldown_num_steps=5), "cooldown_num_steps: expected total_num_steps next to it", "without total_num_steps"),
    (
        dict(total_num_steps=50, cooldown_num_steps=41),
        "cooldown_num_steps: expected at most total_num_steps - warmup_num_steps = 50 - 10 = 40",
        "found int 41",
    ),
    (dict(total_num_steps=50, cooldown_num_steps=0), "cooldown_num_steps: expected an int >= 1", "found int 0"),
    (
        dict(cooldown_type="linear"),
        "cooldown_type: expected cooldown_type only together with cooldown_num_steps",
        "linear",
    ),
    (
        dict(total_num_steps=50, cooldown_num_steps=5, cooldown_type="sqrt"),
        "cooldown_type: expected one of linear, 1-sqrt, cosine",
        "did you mean '1-sqrt'?",
    ),
    (
        dict(cooldown_min_lr=0.0),
        "cooldown_min_lr: expected cooldown_min_lr only together with cooldown_num_steps",
        "0.0",
    ),
    (
        dict(total_num_steps=50, cooldown_num_steps=5, cooldown_min_lr=-1e-5),
        "cooldown_min_lr: expected a finite number >= 0",
        "float -1e-05",
    ),
    (
        dict(total_num_steps=50, cooldown_num_steps=5, cooldown_min_lr=0.5),
        "cooldown_min_lr: expected a value below the lr where the cooldown starts (0.0471405 at update 45)",
        "found float 0.5",
    ),
]


@pytest.mark.parametrize("params,expected,found", BAD_COOLDOWN)
def test_bad_cooldown_is_one_clear_problem(params, expected, found):
    with pytest.raises(ConfigError) as error:
        NoamConfig.from_params(
            {"warmup_num_steps": 10, "warmup_max_lr": 0.1, **params}, source="x.yaml", prefix="scheduler.params."
        )
    text = str(error.value)
    assert len(text.splitlines()) == 1, text
    assert text.startswith("x.yaml: scheduler.params.") and expected in text and found in text


@pytest.mark.parametrize("unit", ["updates", "samples", "tokens"])
def test_resume_changes_decides_by_the_count_in_the_unit(unit):
    """A cooldown that starts at or after the saved count rewrites no applied update; one before it does."""
    from noam_plugin.schedule import resume_changes

    base = NoamConfig(warmup_num_steps=100, warmup_max_lr=0.01, warmup_unit=unit)
    cooled = NoamConfig(
        warmup_num_steps=100, warmup_max_lr=0.01, warmup_unit=unit, total_num_steps=1000, cooldown_num_steps=300
    )  # starts after 700
    later = NoamConfig(
        warmup_num_steps=100,
        warmup_max_lr=0.01,
        warmup_unit=unit,
        total_num_steps=2000,
        cooldown_num_steps=300,
        cooldown_type="cosine",
    )  # starts after 1700
    saved, saved_cooled = base.schedule_params, cooled.schedule_params
    assert resume_changes(saved, base, 5000) == ([], [])
    blocking, notes = resume_changes(saved, cooled, 700)
    assert blocking == [] and len(notes) == 1
    assert f"now linear cooldown over {unit} 701-1000" in notes[0] and "no parameter change" in notes[0]
    assert resume_changes(saved, cooled, 701)[0] == list(COOLDOWN_KEYS)
    assert resume_changes(saved, cooled, None)[0] == list(COOLDOWN_KEYS)  # count unknown: cannot tell
    assert resume_changes(saved_cooled, later, 650)[0] == []  # moved later, before it began
    assert resume_changes(saved_cooled, later, 900)[0] == ["total_num_steps", "cooldown_type"]  # inside the old one
    assert resume_changes(saved_cooled, cooled, 900) == ([], [])  # same tail, even inside it
    assert resume_changes(saved_cooled, base, 700)[0] == []  # dropped before it began
    other = NoamConfig(
        warmup_num_steps=100, warmup_max_lr=0.02, warmup_unit=unit, total_num_steps=1000, cooldown_num_steps=300
    )
    assert resume_changes(saved, other, 10)[0] == ["warmup_max_lr", *COOLDOWN_KEYS]  # the curve itself changed
    total_only = NoamConfig(warmup_num_steps=100, warmup_max_lr=0.01, warmup_unit=unit, total_num_steps=1000)
    assert resume_changes(saved, total_only, 5000)[0] == []  # total_num_steps alone shapes nothing


def test_old_states_have_no_tail():
    from noam_plugin.schedule import saved_params

    old = {"type": "NoamLR", "updates": 3, "warmup_num_steps": 4, "d_model": 64, "factor": 1.0, "warmup_max_lr": None}
    assert {k: saved_params(old)[k] for k in COOLDOWN_KEYS} == dict.fromkeys(COOLDOWN_KEYS)
    assert all(k not in NoamConfig(warmup_num_steps=4, d_model=64).schedule_params for k in COOLDOWN_KEYS)
