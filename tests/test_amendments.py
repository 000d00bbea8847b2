"""Amendments (docs/CONTRACT.md section 4): the amended curve against the rules written again
(tests/integrations/reference.py), config errors naming file and key, and the history check on resume."""

import random
import sys
from pathlib import Path

import pytest
import yaml

from noam_plugin import ConfigError, NoamConfig, ScheduleMismatchError, load_config
from noam_plugin.amendments import Amendment, flow, for_group, history_changes, parse_amendments
from noam_plugin.resume import plan_resume

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_amended, reference_lr  # noqa: E402 - the contract written again

PEAK = {"warmup_num_steps": 10, "warmup_max_lr": 1e-3}
D_MODEL = {"warmup_num_steps": 8, "d_model": 64, "factor": 2.0}
TAILED = {**PEAK, "total_num_steps": 100, "cooldown_num_steps": 20, "cooldown_type": "1-sqrt"}

CASES = {
    "scale": (PEAK, [{"at": 20, "scale": 0.5}]),
    "scales multiply": (PEAK, [{"at": 20, "scale": 0.5}, {"at": 35, "scale": 0.25}, {"at": 35, "scale": 3.0}]),
    "inside the warmup": (D_MODEL, [{"at": 3, "scale": 0.1}]),
    "at 0": (D_MODEL, [{"at": 0, "scale": 2.0}]),
    "rewarm": (PEAK, [{"at": 20, "rewarm_num_steps": 7}]),
    "rollback": (PEAK, [{"at": 20, "scale": 0.5}, {"at": 20, "rewarm_num_steps": 5}]),
    "overlapping rewarms": (PEAK, [{"at": 20, "rewarm_num_steps": 10}, {"at": 25, "rewarm_num_steps": 10}]),
    "add a cooldown": (PEAK, [{"at": 30, "total_num_steps": 60, "cooldown_num_steps": 30}]),
    "extend the run": (TAILED, [{"at": 50, "total_num_steps": 200}]),
    "change the shape mid-cooldown": (TAILED, [{"at": 90, "cooldown_type": "cosine", "cooldown_min_lr": 1e-5}]),
    "all kinds": (
        TAILED,
        [
            {"at": 12, "scale": 0.8},
            {"at": 40, "rewarm_num_steps": 4},
            {"at": 41, "total_num_steps": 150, "cooldown_num_steps": 30},
            {"at": 90, "scale": 0.5},
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_update_follows_the_amendment_rules(case):
    params, amendments = CASES[case]
    config = NoamConfig(**params, amendments=amendments)
    for k in range(1, 230):
        assert config.lr(k) == pytest.approx(
            reference_amended(k, {**params, "amendments": amendments}), rel=1e-12, abs=0
        ), k


def test_before_the_first_amendment_the_curve_is_the_plain_one_bit_for_bit():
    config = NoamConfig(**TAILED, amendments=[{"at": 50, "scale": 0.5}])
    assert [config.lr(k) for k in range(1, 51)] == [reference_lr(k, **TAILED) for k in range(1, 51)]
    assert config.lr(51) != reference_lr(51, **TAILED)


def test_a_rewarm_climbs_back_to_the_curve():
    config = NoamConfig(**PEAK, amendments=[{"at": 30, "rewarm_num_steps": 4}])
    plain = NoamConfig(**PEAK)
    assert config.lr(30) == plain.lr(30)
    assert [config.lr(k) / plain.lr(k) for k in (31, 32, 33, 34, 35)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


def test_random_histories_follow_the_rules():
    rng = random.Random(22)
    for _ in range(150):
        params = dict(rng.choice([PEAK, D_MODEL, TAILED]))
        amendments, at = [], 0
        for _ in range(rng.randint(1, 5)):
            at += rng.randint(0, 40)
            kind = rng.choice(["scale", "rewarm", "tail"])
            if kind == "scale":
                amendments.append({"at": at, "scale": rng.choice([0.5, 0.3, 2.0, 1.1])})
            elif kind == "rewarm" and all(a.get("rewarm_num_steps") is None or a["at"] != at for a in amendments):
                amendments.append({"at": at, "rewarm_num_steps": rng.randint(1, 30)})
            elif kind == "tail" and all("scale" in a or "rewarm_num_steps" in a or a["at"] != at for a in amendments):
                total = max(at, params["warmup_num_steps"]) + rng.randint(2, 80)
                cooldown = rng.randint(1, total - params["warmup_num_steps"])
                shape = rng.choice(["linear", "1-sqrt", "cosine"])
                amendments.append(
                    {"at": at, "total_num_steps": total, "cooldown_num_steps": cooldown, "cooldown_type": shape}
                )
        config = NoamConfig(**params, amendments=amendments)
        for k in range(1, at + 120, 3):
            assert config.lr(k) == pytest.approx(
                reference_amended(k, {**params, "amendments": amendments}), rel=1e-12
            ), (amendments, k)


def test_amendments_naming_groups_are_left_to_those_groups():
    amendments = [{"at": 5, "scale": 0.5}, {"at": 5, "scale": 0.1, "groups": ["embeddings", 2]}]
    config = NoamConfig(**PEAK, amendments=amendments)
    assert config.lr(20) == pytest.approx(
        reference_amended(20, {**PEAK, "amendments": amendments})
    )  # the main curve: 0.5 only
    assert config.lr(20) == pytest.approx(0.5 * reference_lr(20, **PEAK))
    parsed = config.amendments
    assert for_group(parsed) == parsed[:1]
    assert for_group(parsed, "embeddings", 0) == parsed
    assert for_group(parsed, None, 2) == parsed
    assert for_group(parsed, "head", 1) == parsed[:1]


def test_amendments_round_trip_as_plain_values_and_yaml_lines():
    raw = [
        {"at": 5, "scale": 0.5},
        {"at": 7, "rewarm_num_steps": 3, "groups": ["emb", 1]},
        {"at": 9, "total_num_steps": 90, "cooldown_num_steps": 9, "cooldown_type": "cosine"},
    ]
    config = NoamConfig(**PEAK, amendments=raw)
    assert [a.as_dict() for a in config.amendments] == raw
    assert [yaml.safe_load(flow(a)) for a in config.amendments] == raw
    assert flow(config.amendments[0]) == "{at: 5, scale: 0.5}"
    assert NoamConfig(**PEAK, amendments=config.amendments) == config
    assert config.amendments[0].text() == "scale 0.5 from update 6 on"


def yaml_file(tmp_path, amendments: str) -> Path:
    path = tmp_path / "run.yaml"
    lines = "".join(f"      {line}\n" for line in amendments.splitlines())
    path.write_text(
        "scheduler:\n  type: NoamLR\n  params:\n    warmup_num_steps: 100\n    warmup_max_lr: 1.0e-3\n"
        f"    total_num_steps: 1000\n    cooldown_num_steps: 100\n    amendments:\n{lines}"
    )
    return path


def test_amendments_load_from_a_config_file(tmp_path):
    config = load_config(yaml_file(tmp_path, "- {at: 400, scale: 0.5}\n- {at: 400, rewarm_num_steps: 50}"))
    assert [a.kind for a in config.amendments] == ["scale", "rewarm"]
    assert config.lr(401) == pytest.approx(0.5 / 50 * reference_lr(401, warmup_num_steps=100, warmup_max_lr=1e-3))


BAD = {
    "not a list": ("{at: 5, scale: 0.5}", "amendments: expected a list of amendments"),
    "typo": ("- {at: 5, scael: 0.5}", "amendments[0].scael: expected one of at, scale", "did you mean 'scale'?"),
    "no at": ("- {scale: 0.5}", "amendments[0].at: expected an int >= 0", "found nothing"),
    "negative at": ("- {at: -1, scale: 0.5}", "amendments[0].at: expected an int >= 0", "int -1"),
    "float at": ("- {at: 5.0, scale: 0.5}", "amendments[0].at:", "float 5.0"),
    "no change": ("- {at: 5}", "amendments[0]: expected exactly one change", "found none"),
    "two changes": (
        "- {at: 5, scale: 0.5, rewarm_num_steps: 10}",
        "amendments[0]: expected exactly one change",
        "several: scale, rewarm_num_steps",
    ),
    "zero scale": ("- {at: 5, scale: 0}", "amendments[0].scale: expected a finite number > 0", "int 0"),
    "string scale": ("- {at: 5, scale: half}", "amendments[0].scale:", "str 'half'"),
    "zero rewarm": ("- {at: 5, rewarm_num_steps: 0}", "amendments[0].rewarm_num_steps: expected an int >= 1"),
    "out of order": (
        "- {at: 500, scale: 0.5}\n- {at: 400, scale: 0.5}",
        "amendments[1].at: expected at >= 500 (amendments[0].at): the list is the history, in order of at",
        "int 400",
    ),
    "two rewarms at one count": (
        "- {at: 5, rewarm_num_steps: 10}\n- {at: 5, rewarm_num_steps: 20}",
        "amendments[1]: expected one rewarm amendment per at and groups (amendments[0] has the same)",
    ),
    "a cooldown too long": (
        "- {at: 500, total_num_steps: 600, cooldown_num_steps: 550}",
        "amendments[0].cooldown_num_steps: expected at most total_num_steps - warmup_num_steps = 600 - 100 = 500",
        "(with the tail in force from then)",
    ),
    "a total that the cooldown in force does not fit": (
        "- {at: 500, total_num_steps: 150}",
        "amendments[0].cooldown_num_steps: expected at most total_num_steps - warmup_num_steps = 150 - 100",
    ),
    "a bad type": ("- {at: 5, cooldown_type: cosin}", "amendments[0].cooldown_type:", "did you mean 'cosine'?"),
    "a floor above the start": (
        "- {at: 500, cooldown_min_lr: 0.5}",
        "amendments[0].cooldown_min_lr: expected a value below the lr where the cooldown starts",
    ),
    "scales too small": (
        "- {at: 5, scale: 1.0e-60}\n- {at: 6, scale: 1.0e-60}",
        "amendments[1].scale: expected scales whose product stays within 1e-100..1e+100",
    ),
    "empty groups": ("- {at: 5, scale: 0.5, groups: []}", "amendments[0].groups: expected a non-empty list"),
    "bad group": ("- {at: 5, scale: 0.5, groups: [emb, 1.5]}", "amendments[0].groups[1]: expected a group's name"),
    "a group twice": ("- {at: 5, scale: 0.5, groups: [emb, emb]}", "amendments[0].groups: expected each group once"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_amendments_name_file_key_expected_and_found(tmp_path, case):
    text, *pieces = BAD[case]
    path = yaml_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: scheduler.params.amendments"), message
    for piece in pieces:
        assert piece in message, message


def test_keywords_take_amendments_and_refuse_bad_ones():
    assert NoamConfig(**PEAK, amendments=[{"at": 5, "scale": 0.5}]).amendments == (Amendment(at=5, scale=0.5),)
    with pytest.raises(ConfigError, match=r"schedule parameters: amendments\[0\]\.scale: expected a finite number"):
        NoamConfig(**PEAK, amendments=[{"at": 5, "scale": -1}])


HISTORY = [{"at": 100, "scale": 0.5}, {"at": 100, "rewarm_num_steps": 20}, {"at": 300, "scale": 0.5}]


def config_with(amendments, **options):
    return NoamConfig(**PEAK, amendments=amendments, **options)


def check_history(saved, config, count):
    """Resume `config` from a NoamLR state saved at `count` with history `saved`: the one resume decision."""
    state = {"type": "NoamLR", "updates": count, "factor": 1.0, "warmup_unit": "updates", **PEAK}
    if saved:
        state["amendments"] = saved
    return plan_resume(state, config).accept()


def test_a_config_that_extends_the_history_resumes():
    # saved at 350: all three took effect; a new one at the count itself or later is fine
    notes = check_history(HISTORY, config_with(HISTORY + [{"at": 350, "scale": 0.9}]), 350)
    assert notes and "adds {at: 350, scale: 0.9}" in notes[0]
    assert check_history(HISTORY, config_with(HISTORY), 350) == []
    assert check_history([], config_with([{"at": 0, "scale": 2.0}]), 0)


def test_amendments_not_yet_in_force_may_change():
    # saved at 200: the one at 300 changed no applied update yet
    lines, notes = history_changes(HISTORY, HISTORY[:2] + [{"at": 300, "scale": 0.25}], 200)
    assert lines == []
    assert "adds {at: 300, scale: 0.25}" in notes[0] and "drops {at: 300, scale: 0.5}" in notes[0]


@pytest.mark.parametrize(
    "now,pieces",
    [
        (
            HISTORY[1:],
            ["the checkpoint's amendment {at: 100, scale: 0.5}", "is missing", "updates 101-350 ran with it"],
        ),
        (
            [{"at": 100, "scale": 0.4}] + HISTORY[1:],
            ["amendments[0]: the checkpoint has {at: 100, scale: 0.5}, the config {at: 100, scale: 0.4}"],
        ),
        (
            HISTORY + [{"at": 349, "scale": 0.9}],
            ["amendments[3] {at: 349, scale: 0.9}: at 349 is below the checkpoint's count 350", "at >= 350"],
        ),
        ([], ["{at: 100, scale: 0.5}", "{at: 100, rewarm_num_steps: 20}", "{at: 300, scale: 0.5}"]),
    ],
)
def test_a_config_that_rewrites_the_history_is_a_mismatch_naming_the_amendment(now, pieces):
    with pytest.raises(ScheduleMismatchError) as caught:
        check_history(HISTORY, config_with(now), 350)
    for piece in pieces:
        assert piece in str(caught.value)


def test_allow_param_change_logs_a_rewritten_history_instead():
    notes = check_history(HISTORY, config_with([], allow_param_change=True), 350)
    assert "allow_param_change=True" in notes[-1] and "{at: 300, scale: 0.5}" in notes[-1]


def test_a_malformed_saved_history_is_named():
    with pytest.raises(ConfigError, match=r"the checkpoint's amendments: amendments\[0\]\.scale"):
        history_changes([{"at": 1, "scale": "x"}], [], 5)
    assert parse_amendments([{"at": 1, "scale": 1}])[0][0].scale == 1.0


def test_noamlr_saves_the_history_and_resumes_only_a_config_that_extends_it(caplog):
    import torch

    from noam_plugin import NoamLR

    rolled = [{"at": 3, "scale": 0.5}, {"at": 3, "rewarm_num_steps": 2}]

    def run(amendments, state=None, updates=4):
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = NoamLR(optimizer, **PEAK, amendments=amendments)
        if state is not None:
            scheduler.load_state_dict(state)
        used = []
        optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
        for _ in range(updates):
            model(torch.ones(1, 2)).sum().backward()
            optimizer.step()
        return scheduler, used

    first, used = run(rolled)
    assert used == pytest.approx([reference_amended(k, {**PEAK, "amendments": rolled}) for k in range(1, 5)])
    state = first.state_dict()
    assert list(state["amendments"]) == rolled and state["updates"] == 4  # a tuple: one value for DCP
    assert list(torch.load(_saved(state), weights_only=True)["amendments"]) == rolled  # plain values
    more = rolled + [{"at": 4, "scale": 0.8}]
    with caplog.at_level("WARNING", logger="noam_plugin"):
        second, used = run(more, state)
    params = {**PEAK, "amendments": more}
    assert used == pytest.approx([reference_amended(k, params) for k in range(5, 9)], rel=1e-12)
    assert second.get_last_lr() == pytest.approx([reference_amended(9, params)], rel=1e-12)
    assert "adds {at: 4, scale: 0.8}" in caplog.text
    with pytest.raises(ScheduleMismatchError, match=r"\{at: 3, scale: 0.5\}.*is missing"):
        run([], state)
    assert NoamLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), **PEAK).state_dict()["amendments"] == ()


def _saved(state):
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_each_param_group_gets_the_amendments_that_name_it_and_a_typo_is_an_error():
    from noam_plugin.amendments import group_amendments, with_amendments

    amendments = NoamConfig(
        **PEAK, amendments=[{"at": 5, "scale": 0.5}, {"at": 6, "scale": 0.1, "groups": ["embeddings", 2]}]
    ).amendments
    groups = [{"name": "embeddings"}, {"name": "head"}, {}]
    assert group_amendments(amendments, groups) == [amendments, amendments[:1], amendments]
    typo = NoamConfig(**PEAK, amendments=[{"at": 5, "scale": 0.5, "groups": ["embedings", 3]}]).amendments
    with pytest.raises(ConfigError) as caught:
        group_amendments(typo, groups)
    message = str(caught.value)
    assert "amendments[0].groups[0]: expected a name or index of one of the optimizer's 3 param groups" in message
    assert "0 'embeddings', 1 'head', 2 (no name)" in message and "'embedings': no such group" in message
    assert "amendments[0].groups[1]" in message and "3: no such group" in message
    plain = NoamConfig(**PEAK)
    amended = with_amendments(plain, amendments)
    assert amended.lr(20) == pytest.approx(0.05 * plain.lr(20)) and with_amendments(amended, amendments) is amended


def test_amendments_compose_with_per_group_schedules():
    from noam_plugin.groups import GroupCurves

    params = {
        **TAILED,
        "groups": [
            {"name": "embeddings", "warmup_num_steps": 20},
            {"index": 2, "lr_scale": 0.25, "cooldown_num_steps": 40},
        ],
        "amendments": [
            {"at": 30, "scale": 0.5},
            {"at": 30, "rewarm_num_steps": 6, "groups": ["embeddings"]},
            {"at": 50, "total_num_steps": 160, "groups": [2, "head"]},
            {"at": 60, "scale": 0.1, "groups": [3]},
        ],
    }
    config = NoamConfig(**params)
    param_groups = [{"name": "embeddings"}, {"name": "head"}, {"name": "norms"}, {}]
    curves = GroupCurves(config, param_groups)
    for k in range(1, 200):
        want = [reference_amended(k, params, g.get("name"), i) for i, g in enumerate(param_groups)]
        assert curves.lrs(k) == pytest.approx(want, rel=1e-12, abs=0), k
    # each group's own: the embeddings re-warm, head and index 2 end at 160, group 3 at a tenth
    unamended = {**params, "amendments": []}
    assert curves.lrs(31)[0] == pytest.approx(0.5 / 6 * reference_amended(31, unamended, "embeddings"))
    assert curves.lrs(31)[1] == pytest.approx(0.5 * reference_lr(31, **TAILED))
    with pytest.raises(ConfigError, match=r"amendments\[2\]\.groups\[1\]: expected a name or index .* 'head'"):
        GroupCurves(config, [{"name": "embeddings"}, {"name": "x"}, {}])


def test_noamlr_gives_each_param_group_the_amendments_naming_it():
    import torch

    from noam_plugin import NoamLR

    params = {
        **PEAK,
        "amendments": [
            {"at": 3, "scale": 0.5, "groups": ["embeddings"]},
            {"at": 4, "rewarm_num_steps": 3, "groups": [1]},
        ],
    }
    layers = [torch.nn.Linear(2, 2) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [{"params": layers[0].parameters(), "name": "embeddings"}, {"params": layers[1].parameters()}]
        + [{"params": layers[2].parameters(), "name": "head"}],
        lr=0.0,
    )
    scheduler = NoamLR.from_config(optimizer, params)  # no `groups` overrides: the amendments make per-group curves
    used, names = [], ["embeddings", None, "head"]
    optimizer.register_step_pre_hook(lambda opt, *_: used.append([g["lr"] for g in opt.param_groups]))
    for _ in range(9):
        sum(layer(torch.ones(1, 2)).sum() for layer in layers).backward()
        optimizer.step()
    for k, lrs in enumerate(used, 1):
        want = [reference_amended(k, params, name, i) for i, name in enumerate(names)]
        assert lrs == pytest.approx(want, rel=1e-12, abs=0), k
    assert used[4][1] == pytest.approx(reference_lr(5, **PEAK) / 3) and used[4][2] == reference_lr(5, **PEAK)
    assert scheduler.get_last_lr() == pytest.approx([reference_amended(10, params, n, i) for i, n in enumerate(names)])
    typo = [{"at": 3, "scale": 0.5, "groups": ["embedings"]}]
    with pytest.raises(ConfigError, match=r"amendments\[0\]\.groups\[0\].*'embedings': no such group"):
        NoamLR(torch.optim.SGD(layers[0].parameters()), **PEAK, amendments=typo)


def test_in_samples_at_is_a_count_of_samples_seen():
    import torch

    from noam_plugin import NoamLR

    params = {**PEAK, "warmup_num_steps": 40, "warmup_unit": "samples"}
    amendments = [{"at": 42, "scale": 0.5}, {"at": 42, "rewarm_num_steps": 12}]  # inside update 11 (41-44)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = NoamLR(optimizer, **params, amendments=amendments, samples_per_update=4)
    used = []
    optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
    for _ in range(16):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    curve = {key: v for key, v in params.items() if key != "warmup_unit"}
    want = [reference_amended(4 * k, {**curve, "amendments": amendments}) for k in range(1, 17)]
    assert used == pytest.approx(want, rel=1e-12, abs=0)
    assert used[10] == pytest.approx(0.5 * 2 / 12 * reference_lr(44, **curve))  # update 11: 44 samples seen
    assert scheduler.state_dict()["samples"] == 64
