"""noam_plugin.state: saved scheduler states checked without torch, every bad key named (issue 12)."""

import pytest

from noam_plugin.errors import StateError
from noam_plugin.state import check_noam_state, check_state, foreign_updates

GOOD = {
    "type": "NoamLR",
    "updates": 12,
    "samples": 96,
    "tokens": None,
    "samples_per_update": 8,
    "warmup_num_steps": 40,
    "d_model": 64,
    "factor": 0.5,
    "warmup_max_lr": None,
    "warmup_unit": "updates",
    "world_size": 2,
}
DROP = object()

# changes to GOOD -> the (key, expected, found) of each problem, in order
BAD = {
    "updates_str": ({"updates": "12"}, [("updates", "an int >= 0", "str '12'")]),
    "updates_float": ({"updates": 12.7}, [("updates", "an int >= 0", "float 12.7")]),
    "updates_bool": ({"updates": True}, [("updates", "an int >= 0", "bool True")]),
    "updates_negative": ({"updates": -1}, [("updates", "an int >= 0", "int -1")]),
    "updates_none": ({"updates": None}, [("updates", "an int >= 0", "NoneType None")]),
    "updates_missing": (
        {"updates": DROP},
        [("updates", "an int >= 0 (required)", "nothing")],
    ),
    "updates_huge": ({"updates": 2**64}, [("updates", "an int >= 0 and at most 2**63 - 2", "18446744073709551616")]),
    "updates_last": ({"updates": 2**63 - 1}, [("updates", "an int >= 0 and at most 2**63 - 2", "9223372036854775807")]),
    "tokens_last": ({"tokens": 2**63 - 1}, [("tokens", "an int >= 0 and at most 2**63 - 2", "922337")]),
    "samples_str": ({"samples": "lots"}, [("samples", "an int >= 0 or None", "str 'lots'")]),
    "tokens_float": ({"tokens": 3.0}, [("tokens", "an int >= 0 or None", "float 3.0")]),
    "batch_zero": ({"samples_per_update": 0}, [("samples_per_update", "an int >= 1 or None", "int 0")]),
    "world_bool": ({"world_size": False}, [("world_size", "an int >= 1 or None", "bool False")]),
    "type_missing": ({"type": DROP}, [("type", "'NoamLR'", "nothing")]),
    "unknown_key": (
        {"updtes": 1},
        [("updtes", "only the keys of NoamLR.state_dict()", "unknown key (did you mean 'updates'?)")],
    ),
    "warmup_zero": ({"warmup_num_steps": 0}, [("warmup_num_steps", "an int >= 1", "int 0")]),
    "both_forms": ({"warmup_max_lr": 1e-3}, [("d_model / warmup_max_lr", "exactly one of them", "both")]),
    "unit": ({"warmup_unit": "epochs"}, [("warmup_unit", "one of updates, samples, tokens", "str 'epochs'")]),
    "several": (
        {"updates": "x", "samples": -1},
        [("updates", "an int >= 0", "str 'x'"), ("samples", "an int >= 0 or None", "int -1")],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_noam_states_name_each_key(case):
    changes, expected = BAD[case]
    state = {k: v for k, v in {**GOOD, **changes}.items() if v is not DROP}
    problems = check_noam_state(state)
    assert len(problems) == len(expected), problems
    for problem, (key, wanted, found) in zip(problems, expected):
        assert problem.key == key and problem.expected.startswith(wanted) and found in problem.found, problem
    with pytest.raises(StateError) as info:
        check_state(state, "ckpt/scheduler.bin")
    assert all(line.startswith("ckpt/scheduler.bin: ") for line in str(info.value).splitlines())


def test_good_states_pass():
    assert check_noam_state(GOOD) == []
    old = {
        k: v
        for k, v in GOOD.items()
        if k not in ("warmup_unit", "samples", "tokens", "samples_per_update", "world_size")
    }
    assert check_noam_state(old) == []  # a state from before warmup_unit and the data counts
    assert check_noam_state({**GOOD, "d_model": None, "warmup_max_lr": 1e-3, "factor": 1.0}) == []
    check_state({"last_epoch": 4})


def test_not_a_dict():
    (problem,) = check_noam_state([1, 2])
    assert (problem.key, problem.found) == ("(state)", "list [1, 2]")


@pytest.mark.parametrize(
    "state, adopted, problem",
    [
        ({"last_batch_iteration": -1}, (0, "a DeepSpeed scheduler state (last_batch_iteration=-1)"), None),
        ({"last_batch_iteration": 6}, (7, "a DeepSpeed scheduler state (last_batch_iteration=6)"), None),
        ({"last_epoch": 4, "base_lrs": [0.1]}, (4, "a torch scheduler state (last_epoch=4)"), None),
        ({"base_lrs": [0.1]}, None, None),
        (
            {"last_batch_iteration": "5"},
            None,
            "last_batch_iteration: expected an int >= -1, found str '5'",
        ),
        ({"last_batch_iteration": -2}, None, "last_batch_iteration: expected an int >= -1"),
        ({"last_batch_iteration": 6.0}, None, "found float 6.0"),
        (
            {"last_epoch": -3},
            None,
            "last_epoch: expected an int >= 0, found int -3",
        ),
        ({"last_epoch": True}, None, "found bool True"),
    ],
)
def test_foreign_counts(state, adopted, problem):
    if problem is None:
        assert foreign_updates(state) == adopted
    else:
        with pytest.raises(StateError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
            foreign_updates(state, "run/lambdalr.pt")


def test_scheduler_module_reexports_the_same_function():
    from noam_plugin import scheduler, state

    assert scheduler.foreign_updates is state.foreign_updates
