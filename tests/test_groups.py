"""Per-group schedules (noam_plugin/groups.py): parsing, merging, matching, the lr per group at a count
(compared with the contract's formula written again, tests/integrations/reference.py), and resume changes."""

import json
import math
import sys
from pathlib import Path

import pytest

from noam_plugin import ConfigError, NoamConfig, load_config
from noam_plugin.groups import GroupCurves, GroupMatchError, GroupOverride, group_changes, match, merge
from noam_plugin.state import check_noam_state

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_group_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

MAIN = {"warmup_num_steps": 40, "warmup_max_lr": 1.0e-3}
GROUPS = [
    {"name": "embeddings", "warmup_num_steps": 80},
    {"index": 2, "lr_scale": 0.25},
    {"name": "head", "d_model": 256, "factor": 2.0, "total_num_steps": 300, "cooldown_num_steps": 100},
]
PARAM_GROUPS = [{"name": "body"}, {"name": "embeddings"}, {"name": "norms"}, {"name": "head"}, {}]


def test_each_group_follows_its_own_curve_at_the_shared_count():
    params = {**MAIN, "groups": GROUPS}
    curves = GroupCurves(NoamConfig(**params), PARAM_GROUPS)
    for k in [1, 2, 39, 40, 41, 80, 81, 199, 200, 201, 250, 300, 301, 10_000]:
        expected = [reference_group_lr(k, params, g.get("name"), i) for i, g in enumerate(PARAM_GROUPS)]
        assert curves.lrs(k) == pytest.approx(expected, rel=1e-12), k
    # unmatched groups are the main curve exactly
    assert curves.lrs(7)[0] == curves.lrs(7)[4] == NoamConfig(**MAIN).lr(7)
    assert [curves.label(i) for i in range(5)] == ["main", "name 'embeddings'", "index 2", "name 'head'", "main"]


def test_cooldown_per_group_and_scale_are_independent_of_the_main_curve():
    params = {
        **MAIN,
        "total_num_steps": 500,
        "cooldown_num_steps": 200,
        "groups": [{"name": "a", "cooldown_num_steps": None}],
    }
    curves = GroupCurves(NoamConfig(**params), [{"name": "a"}, {"name": "b"}])
    a, b = curves.lrs(501)
    assert a == pytest.approx(1.0e-3 * math.sqrt(40 / 501)) and b == 0.0  # a keeps the inverse sqrt, b cooled to 0


def test_a_name_selects_every_group_with_it_and_an_index_one():
    overrides = NoamConfig(**MAIN, groups=[{"name": "x", "lr_scale": 2.0}, {"index": 1, "lr_scale": 3.0}]).groups
    assert match(overrides, [{"name": "x"}, {"name": "y"}, {"name": "x"}]) == [0, 1, 0]


@pytest.mark.parametrize(
    "groups,param_groups,pieces",
    [
        (
            [{"name": "embed"}],
            [{"name": "body"}, {}],
            ["groups[0].name", "name 'embed': no such group", "0 'body', 1 (no name)"],
        ),
        ([{"index": 3}], [{"name": "body"}], ["groups[0].index", "index 3: no such group", "0 'body'"]),
        (
            [{"name": "emb"}, {"index": 1}],
            [{"name": "body"}, {"name": "emb"}],
            ["groups[1]", "param group 1 is selected by groups[0] (name 'emb') and by this one"],
        ),
    ],
)
def test_a_selector_matching_nothing_or_a_group_matched_twice_is_one_clear_error(groups, param_groups, pieces):
    with pytest.raises(GroupMatchError) as error:
        GroupCurves(NoamConfig(**MAIN, groups=groups), param_groups)
    text = str(error.value)
    assert len(text.splitlines()) == 1 and all(piece in text for piece in pieces), text


BAD = [
    ({"groups": {"name": "x"}}, "scheduler.params.groups:", "a list of overrides"),
    ({"groups": ["x"]}, "scheduler.params.groups[0]:", "found str 'x'"),
    ({"groups": [{"lr_scale": 2}]}, "scheduler.params.groups[0]:", "exactly one selector"),
    ({"groups": [{"name": "x", "index": 1}]}, "scheduler.params.groups[0]:", "found both (name='x', index=1)"),
    ({"groups": [{"name": ""}]}, "scheduler.params.groups[0].name:", "a non-empty string"),
    ({"groups": [{"index": -1}]}, "scheduler.params.groups[0].index:", "an int >= 0"),
    ({"groups": [{"index": True}]}, "scheduler.params.groups[0].index:", "found bool True"),
    ({"groups": [{"name": "x", "lr_scale": 0}]}, "scheduler.params.groups[0].lr_scale:", "a finite number > 0"),
    ({"groups": [{"name": "x", "lr_scale": "auto"}]}, "scheduler.params.groups[0].lr_scale:", "found str 'auto'"),
    ({"groups": [{"name": "x", "warmup_num_step": 5}]}, "scheduler.params.groups[0].warmup_num_step:", "did you mean"),
    (
        {"groups": [{"name": "x", "warmup_unit": "samples"}]},
        "scheduler.params.groups[0].warmup_unit:",
        "holds for all groups",
    ),
    ({"groups": [{"name": "x"}, {"name": "x"}]}, "scheduler.params.groups[1]:", "already selected by groups[0]"),
    ({"groups": [{"name": "x", "warmup_num_steps": 0}]}, "scheduler.params.groups[0].warmup_num_steps:", "an int >= 1"),
    ({"groups": [{"name": "x", "factor": 2.0}]}, "scheduler.params.groups[0].factor:", "only together with d_model"),
    (
        {"total_num_steps": 100, "groups": [{"name": "x", "warmup_num_steps": 100}]},
        "scheduler.params.groups[0].total_num_steps:",
        "(this group's curve: the main parameters with name 'x''s keys)",
    ),
    (
        {"groups": [{"name": "x", "cooldown_type": "cosine"}]},
        "scheduler.params.groups[0].cooldown_type:",
        "only together with cooldown_num_steps",
    ),
    (
        {"total_num_steps": 100, "groups": [{"name": "x", "cooldown_num_steps": 50, "cooldown_min_lr": 1.0}]},
        "scheduler.params.groups[0].cooldown_min_lr:",
        "below the lr where the cooldown starts",
    ),
]


@pytest.mark.parametrize("params,key,piece", BAD)
def test_bad_groups_name_the_key_and_what_was_found(params, key, piece):
    with pytest.raises(ConfigError) as error:
        NoamConfig.from_params({**MAIN, **params}, source="x.yaml", prefix="scheduler.params.")
    text = str(error.value)
    assert len(text.splitlines()) == 1, text
    assert text.startswith("x.yaml: " + key) and piece in text, text


def test_a_bad_main_curve_still_reports_bad_group_entries_once():
    with pytest.raises(ConfigError) as error:
        NoamConfig.from_params({"warmup_num_steps": 0, "warmup_max_lr": 1.0, "groups": [{"nam": "x"}]}, source="x")
    text = str(error.value)
    assert "warmup_num_steps: expected an int >= 1" in text and "groups[0].nam:" in text, text


def test_overrides_pick_the_form_and_can_drop_the_cooldown():
    main = NoamConfig(warmup_num_steps=10, d_model=512, factor=2.0, total_num_steps=100, cooldown_num_steps=20)
    peak = merge(main.schedule_params, GroupOverride("name", "x", (("warmup_max_lr", 0.1),)))
    assert "d_model" not in peak and "factor" not in peak and peak["warmup_max_lr"] == 0.1
    plain = merge(main.schedule_params, GroupOverride("name", "x", (("cooldown_num_steps", None),)))
    assert plain == {
        "warmup_num_steps": 10,
        "d_model": 512,
        "factor": 2.0,
        "warmup_unit": "updates",
        "total_num_steps": 100,
    }


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_files_carry_groups(tmp_path, suffix):
    block = {"scheduler": {"type": "NoamLR", "params": {**MAIN, "groups": GROUPS}}}
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(block))
    else:
        path.write_text(
            "scheduler:\n  type: NoamLR\n  params:\n    warmup_num_steps: 40\n    warmup_max_lr: 1.0e-3\n"
            "    groups:\n      - {name: embeddings, warmup_num_steps: 80}\n      - {index: 2, lr_scale: 0.25}\n"
            "      - {name: head, d_model: 256, factor: 2.0, total_num_steps: 300, cooldown_num_steps: 100}\n"
        )
    config = load_config(path)
    assert config.schedule_params["groups"] == GROUPS
    assert NoamConfig(**config.schedule_params) == config  # what the DeepSpeed factory and state_dict() pass on


def test_a_bad_group_in_a_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps({"scheduler": {"type": "NoamLR", "params": {**MAIN, "groups": [{"name": "e", "lr_scal": 2}]}}})
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(
        f"{path}: scheduler.params.groups[0].lr_scal: "
    ) and "did you mean 'lr_scale'" in str(error.value)


def test_no_groups_keeps_the_state_it_always_had():
    assert "groups" not in NoamConfig(**MAIN).schedule_params
    assert NoamConfig(**MAIN, groups=[]) == NoamConfig(**MAIN)


def test_saved_states_with_groups_are_checked():
    state = {"type": "NoamLR", "updates": 3, **NoamConfig(**MAIN, groups=GROUPS).schedule_params}
    assert check_noam_state(state) == []
    problems = check_noam_state({**state, "groups": [{"name": "x", "lr_scale": -1}]})
    assert [p.key for p in problems] == ["groups[0].lr_scale"]


def _saved(**params):
    return NoamConfig(**params).schedule_params


def test_resume_names_each_group_change_with_both_values():
    saved = _saved(**MAIN, groups=[{"name": "emb", "warmup_num_steps": 80}, {"index": 2, "lr_scale": 0.25}])
    now = NoamConfig(**MAIN, groups=[{"name": "emb", "warmup_num_steps": 60}, {"name": "head", "lr_scale": 2.0}])
    changes, notes = group_changes(saved, now, 100)
    assert changes == [
        ("groups[name='emb'].warmup_num_steps", 80, 60),
        ("groups[index=2].lr_scale", 0.25, 1.0),
        ("groups[name='head'].lr_scale", 1.0, 2.0),
    ]
    assert notes == []
    assert group_changes(saved, NoamConfig(**MAIN, groups=saved["groups"]), 100) == ([], [])


def test_a_main_change_is_left_to_the_main_comparison():
    saved = _saved(**MAIN, groups=[{"name": "emb", "lr_scale": 2.0}])
    now = NoamConfig(warmup_num_steps=40, warmup_max_lr=2.0e-3, groups=[{"name": "emb", "lr_scale": 2.0}])
    assert group_changes(saved, now, 10) == ([], [])


def test_a_main_key_a_group_curve_inherits_is_that_group_s_change():
    # emb ends at 300 with the main cooldown_num_steps: 100 -> 120 moves its cooldown from 200 to 180, while the
    # main one (from 900 to 880) still starts after the count.
    main = {**MAIN, "total_num_steps": 1000}
    groups = [{"name": "emb", "total_num_steps": 300}]
    saved = _saved(**main, cooldown_num_steps=100, groups=groups)
    now = NoamConfig(**main, cooldown_num_steps=120, groups=groups)
    changes, _ = group_changes(saved, now, 250)  # emb's updates 181-250 would get another lr
    assert changes == [("groups[name='emb'].cooldown_num_steps", 100, 120)]
    assert group_changes(saved, now, 150)[0] == []  # both of emb's starts are after the count


def test_a_group_cooldown_decided_at_resume_is_no_change_when_it_starts_later():
    saved = _saved(**MAIN, groups=[{"name": "emb", "warmup_num_steps": 80}])
    cooled = [{"name": "emb", "warmup_num_steps": 80, "total_num_steps": 1000, "cooldown_num_steps": 300}]
    changes, notes = group_changes(saved, NoamConfig(**MAIN, groups=cooled), 700)
    assert changes == [] and len(notes) == 1
    assert notes[0].startswith("NoamLR, param groups with name 'emb': ") and "no parameter change" in notes[0]
    changes, _ = group_changes(saved, NoamConfig(**MAIN, groups=cooled), 701)  # inside it: rewrites update 701
    assert [c[0] for c in changes] == ["groups[name='emb'].total_num_steps", "groups[name='emb'].cooldown_num_steps"]
    assert changes[0][1:] == (None, 1000)


def test_a_hundred_groups_cost_one_curve_each():
    groups = [{"index": i, "lr_scale": 1 + i / 100} for i in range(0, 100, 2)]
    curves = GroupCurves(NoamConfig(**MAIN, groups=groups), [{} for _ in range(100)])
    lrs = curves.lrs(50)
    assert len(lrs) == 100 and lrs[1] == NoamConfig(**MAIN).lr(50) and lrs[2] == pytest.approx(lrs[1] * 1.02)


def test_an_unchanged_group_with_its_own_cooldown_says_nothing():
    groups = [{"name": "head", "total_num_steps": 90, "cooldown_num_steps": 30}]
    assert group_changes(_saved(**MAIN, groups=groups), NoamConfig(**MAIN, groups=groups), 50) == ([], [])
