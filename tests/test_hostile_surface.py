"""Hostile input to the newer surface (issue 29): per-group schedules, amendments, `noam-plugin amend`, saved
states. Each test names the defect class of the issue it covers; the expected values come from the contract's
formula (tests/integrations/reference.py), not from the code under test.
"""

import enum
import io
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "integrations"))
from reference import reference_lr  # noqa: E402

from noam_plugin import NoamLR  # noqa: E402
from noam_plugin.errors import ConfigError  # noqa: E402
from noam_plugin.schedule import NoamConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None, timeout=120):
    """`noam-plugin ARGS` as a real process: (status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=cwd,
    )
    return result.returncode, result.stdout, result.stderr


def config_file(tmp_path: Path, body: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text("scheduler:\n  type: NoamLR\n  params:\n" + "".join(f"    {ln}\n" for ln in body.splitlines()))
    return path


def two_groups(names=("emb", None)):
    model = torch.nn.Linear(2, 2)
    groups = []
    for name, param in zip(names, (model.weight, model.bias)):
        groups.append({"params": [param], **({"name": name} if name is not None else {})})
    return torch.optim.SGD(groups, lr=0.1)


# ----------------------------------------------------------------------------- class 1: degenerate lrs


@pytest.mark.parametrize(
    "params, key",
    [
        ({"groups": [{"index": 0, "lr_scale": 1e-320}]}, "groups[0].lr_scale"),  # below SCALE_RANGE
        ({"groups": [{"index": 0, "lr_scale": 1e-90}], "warmup_max_lr": 1e-240}, "groups[0].lr_scale"),
        ({"groups": [{"name": "emb", "lr_scale": 1e90}], "warmup_max_lr": 1e250}, "groups[0].lr_scale"),
        ({"warmup_max_lr": 1e-300, "amendments": [{"at": 10, "scale": 1e-100}]}, "amendments[0].scale"),
        ({"warmup_max_lr": 1e-250, "amendments": [{"at": 10, "scale": 1e-90, "groups": ["emb"]}]}, "amendments[0]"),
        ({"groups": [{"index": 0, "lr_scale": 10**400}]}, "groups[0].lr_scale"),
        ({"amendments": [{"at": 3, "scale": 10**400}]}, "amendments[0].scale"),
        ({"amendments": [{"at": 3, "scale": float("nan")}]}, "amendments[0].scale"),
    ],
)
def test_every_lr_a_multiplier_gives_is_checked(tmp_path, params, key):
    """Class 1: lr_scale and an amendment's scale are checked like a main lr: every lr they give is above 0.0
    and finite in float64, through validate (one line naming the key) and NoamLR alike."""
    full = {"warmup_num_steps": 4000, "warmup_max_lr": 1e-3, **params}
    with pytest.raises(ConfigError) as err:
        NoamConfig(**full)
    assert key in str(err.value)
    with pytest.raises(ConfigError):
        NoamLR(two_groups(), **full)


def test_a_multiplier_at_its_edge_still_gives_the_contract_lr():
    """Class 1, the other side: a small lr_scale whose lrs are still normal floats is kept, exact."""
    opt = two_groups()
    sched = NoamLR(opt, warmup_num_steps=10, warmup_max_lr=1e-3, groups=[{"name": "emb", "lr_scale": 1e-90}])
    expected = reference_lr(1, warmup_num_steps=10, warmup_max_lr=1e-3)
    assert opt.param_groups[0]["lr"] == expected * 1e-90 and opt.param_groups[1]["lr"] == expected
    assert sched.get_last_lr()[0] > 0


# ----------------------------------------------------------------------------- class 4: validate == NoamLR


@pytest.mark.parametrize(
    "amendments, key",
    [
        ([{"at": 15, "cooldown_num_steps": 5, "groups": ["emb"]}], "amendments[0].cooldown_num_steps"),
        ([{"at": 15, "cooldown_type": "bogus", "groups": ["emb"]}], "amendments[0].cooldown_type"),
        (
            [{"at": 20, "rewarm_num_steps": 3}, {"at": 20, "rewarm_num_steps": 4, "groups": ["emb"]}],
            "amendments[1]",
        ),
        (
            [{"at": 20, "rewarm_num_steps": 3, "groups": [0]}, {"at": 20, "rewarm_num_steps": 4, "groups": ["emb"]}],
            "amendments[1]",
        ),
    ],
)
def test_validate_refuses_what_noamlr_refuses(tmp_path, amendments, key):
    """Class 4: an amendment limited to some groups is checked as NoamLR meets it: validate exits 1 naming the
    entry exactly where building NoamLR on groups it selects raises."""
    import yaml

    params = {"warmup_num_steps": 10, "warmup_max_lr": 1e-3, "amendments": amendments}
    with pytest.raises(ConfigError):
        NoamLR(two_groups(("emb", None)), **params)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": params}}))
    code, out, err = cli("validate", path)
    assert code == 1 and f"scheduler.params.{key}" in err, (out, err)
    assert "Traceback" not in err


def test_overlapping_rewarms_for_groups_that_cannot_meet_pass_both_ways():
    """Class 4, the other side: two re-warms at one count for two names (no group has both) are valid, and
    each group re-warms by its own (t - N) / R."""
    params = {
        "warmup_num_steps": 10,
        "warmup_max_lr": 1e-3,
        "amendments": [
            {"at": 2, "rewarm_num_steps": 3, "groups": ["emb"]},
            {"at": 2, "rewarm_num_steps": 4, "groups": ["out"]},
        ],
    }
    NoamConfig(**params)
    opt = two_groups(("emb", "out"))
    sched = NoamLR(opt, **params)
    for _ in range(2):
        opt.step()
    ref = reference_lr(3, warmup_num_steps=10, warmup_max_lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([ref / 3, ref / 4], rel=1e-15)
    assert sched.last_epoch == 2


# ----------------------------------------------------------------------------- class 5: show without a tail


def test_show_works_on_amendments_with_no_tail(tmp_path):
    path = config_file(tmp_path, "warmup_num_steps: 10\nwarmup_max_lr: 1.0e-3\namendments: [{at: 150, scale: 0.5}]")
    code, out, err = cli("show", path, "--at", "151")
    assert code == 0, err
    expected = 0.5 * reference_lr(151, warmup_num_steps=10, warmup_max_lr=1e-3)
    assert f"{expected:.4e}" in out


# ----------------------------------------------------------------------------- class 6: checked before converted


@pytest.mark.parametrize(
    "value, found",
    [("[1]", "list [1]"), ("{}", "dict {}"), ("'abc'", "str 'abc'"), ("1" + "0" * 400, "int 1000")],
)
def test_amendment_values_are_checked_before_conversion(tmp_path, value, found):
    """Class 6: a cooldown_min_lr of the wrong type or size in an amendment is one line naming file and key, from
    validate and from building NoamLR, never a TypeError / OverflowError."""
    body = f"warmup_num_steps: 10\nwarmup_max_lr: 1.0e-3\namendments: [{{at: 15, cooldown_min_lr: {value}}}]"
    path = config_file(tmp_path, body)
    code, out, err = cli("validate", path)
    assert code == 1 and "Traceback" not in err
    assert f"{path}: scheduler.params.amendments[0].cooldown_min_lr: expected a finite number >= 0" in err
    assert found in err


# ----------------------------------------------------------------------------- class 9: plain values


class Step(enum.IntEnum):
    AT = 3


class Name(str):
    pass


class Lying(float):
    def __float__(self):  # what float() says is not the value compared
        return math.nan


def test_subclasses_are_saved_as_plain_values():
    """Class 9: IntEnum / str / float subclasses in groups, amendments and the main keys are stored as plain
    values: the state loads with torch.load(weights_only=True), and a lying __float__ cannot make a NaN lr."""
    opt = two_groups((Name("emb"), None))
    sched = NoamLR(
        opt,
        warmup_num_steps=Step.AT,
        warmup_max_lr=Lying(1e-3),
        groups=[{"name": Name("emb"), "lr_scale": Lying(0.5), "warmup_num_steps": Step.AT}],
        amendments=[{"at": Step.AT, "scale": Lying(0.5), "groups": [Name("emb")]}],
    )
    for _ in range(4):
        opt.step()
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert list(state["amendments"]) == [{"at": 3, "scale": 0.5, "groups": ["emb"]}]
    assert type(state["amendments"][0]["at"]) is int and type(state["groups"][0]["name"]) is str
    ref = reference_lr(5, warmup_num_steps=3, warmup_max_lr=1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(ref * 0.25, rel=1e-15)
    assert opt.param_groups[1]["lr"] == pytest.approx(ref, rel=1e-15)
    fresh = NoamLR(
        two_groups(("emb", None)),
        **NoamConfig(
            **{k: v for k, v in state.items() if k in ("warmup_num_steps", "warmup_max_lr", "groups", "amendments")}
        ).params,
    )
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 4


# ----------------------------------------------------------------------------- class 8: bounds


def test_lists_past_their_bound_are_one_line(tmp_path):
    from noam_plugin.safe_io import MAX_AMENDMENTS, MAX_GROUP_NAME_CHARS, MAX_GROUPS

    cases = {
        "groups": {"groups": [{"index": i} for i in range(MAX_GROUPS + 1)]},
        "amendments": {"amendments": [{"at": i, "scale": 1.0} for i in range(MAX_AMENDMENTS + 1)]},
        "groups[0].name": {"groups": [{"name": "x" * (MAX_GROUP_NAME_CHARS + 1)}]},
        "amendments[0].groups": {"amendments": [{"at": 1, "scale": 0.5, "groups": list(range(MAX_GROUPS + 1))}]},
    }
    for key, extra in cases.items():
        with pytest.raises(ConfigError) as err:
            NoamConfig.from_params({"warmup_num_steps": 10, "warmup_max_lr": 1e-3, **extra}, source="x")
        text = str(err.value)
        assert f"x: {key}: expected at most" in text or f"x: {key}: expected a non-empty string of at most" in text
        assert len(text) < 2000, text[:300]


def test_a_config_at_the_bounds_is_answered_within_seconds(tmp_path):
    """Class 8: every command that reads a schedule answers one at the bounds (MAX_GROUPS overrides,
    MAX_AMENDMENTS amendments) within seconds, and what it prints stays bounded."""
    import yaml

    from noam_plugin.safe_io import MAX_AMENDMENTS, MAX_GROUPS

    params = {
        "warmup_num_steps": 10,
        "warmup_max_lr": 1e-3,
        "groups": [{"index": i, "lr_scale": 1 + i / MAX_GROUPS} for i in range(MAX_GROUPS)],
        "amendments": [{"at": 100 + i, "scale": 0.999} for i in range(MAX_AMENDMENTS)],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": params}}))
    for command in (["validate", path], ["show", path]):
        start = time.monotonic()
        code, out, err = cli(*command)
        assert code == 0, err[-2000:]
        assert time.monotonic() - start < 30
        assert len(out) < 200_000


# ----------------------------------------------------------------------------- real checkpoints

ACCELERATE_RUN = """
import sys, torch
from accelerate import Accelerator
from noam_plugin import NoamLR
torch.manual_seed(0)
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(
    [{"params": [model.weight], "name": "w"}, {"params": [model.bias], "name": "b"}], lr=0.0
)
amendments = [{"at": 3, "scale": 0.25, "groups": ["w"]}]
scheduler = NoamLR(optimizer, warmup_num_steps=4, warmup_max_lr=1e-3, amendments=amendments)
accelerator = Accelerator(cpu=True)
model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
for _ in range(5):
    accelerator.backward(model(torch.randn(2, 4)).pow(2).sum())
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
print([g["lr"] for g in optimizer.param_groups])
accelerator.save_state(sys.argv[1])
if len(sys.argv) > 2:  # resume the (crafted) folder sys.argv[2] in a fresh Accelerator
    accelerator.load_state(sys.argv[2])
"""

PEAK = {"warmup_num_steps": 4, "warmup_max_lr": 1e-3}


def accelerate(args, timeout=240):
    from procs import run

    return run([sys.executable, "-c", ACCELERATE_RUN, *args], env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real Accelerate save_state at update 5, param groups 'w' and 'b', 'w' amended from update 3 on."""
    folder = tmp_path_factory.mktemp("accelerate") / "state"
    code, out = accelerate([folder])
    assert code == 0, out[-3000:]
    return folder


def copy(folder: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(folder, where, symlinks=True)
    return where


def test_inspect_and_amend_show_the_lr_a_group_runs_at(saved):
    """Class 2: on a real Accelerate checkpoint with an amendment for group 'w' only, inspect's per-group next lr and
    amend's table are the lrs NoamLR writes (reference formula times the scales), not the main curve's."""
    ref6 = reference_lr(6, **PEAK)
    code, out, err = cli("inspect", saved)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("name 'w'"))
    assert f"{ref6 * 0.25:.6g}" in line, out
    code, out, err = cli("amend", saved, "--scale", "0.5", "--groups", "w")
    assert code == 0, err
    row = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["6"])
    main_new, main_before, w_new, w_before = map(float, row[1:5])
    assert main_new == pytest.approx(ref6, rel=1e-4) and main_before == pytest.approx(ref6, rel=1e-4)
    assert w_before == pytest.approx(ref6 * 0.25, rel=1e-4) and w_new == pytest.approx(ref6 * 0.125, rel=1e-4)


@pytest.mark.parametrize(
    "groups, message",
    [
        ("", "an empty entry"),
        (",,,", "an empty entry"),
        ("\u0663", "none is named '\\u0663'"),
        ("nosuch", "none is named 'nosuch'"),
        ("w,w", "twice"),
        ("9", "none is at index 9"),
        ("index:x", "expected index:N"),
    ],
)
def test_amend_groups_is_read_strictly(saved, groups, message):
    """Class 3: `--groups` never turns odd text into another selection; on a checkpoint that keeps the optimizer
    (Accelerate's optimizer.bin) every name and index is checked against its param groups."""
    code, out, err = cli("amend", saved, "--scale", "0.5", "--groups", groups)
    assert code == 1 and message in err, (out, err)
    assert "Traceback" not in err


def test_amend_groups_ambiguous_digits(tmp_path):
    """Class 3: bare digits where a group is named so too are refused as ambiguous; name:/index: say which."""
    opt = two_groups(("1", None))
    sched = NoamLR(opt, **PEAK, groups=[{"name": "1", "lr_scale": 0.5}])
    opt.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    code, out, err = cli("amend", tmp_path / "s.pt", "--scale", "0.5", "--groups", "1")
    assert code == 1 and "ambiguous" in err and "name:1 or index:1" in err
    code, out, err = cli("amend", tmp_path / "s.pt", "--scale", "0.5", "--groups", "name:1")
    assert code == 0, err
    assert '"groups": ["1"]' in out


def test_amend_accepts_valid_requests(tmp_path):
    """Class 10: a new amendment goes into the history in order of at (before a planned later one); --at
    2**63 - 1 prints and exits 0; --plot x.txt is refused naming the file."""
    opt = two_groups()
    sched = NoamLR(opt, **PEAK, amendments=[{"at": 100, "scale": 0.5}])
    for _ in range(7):
        opt.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    code, out, err = cli("amend", tmp_path / "s.pt", "--scale", "0.5")
    assert code == 0, err
    assert '"amendments": [{"at": 7, "scale": 0.5}, {"at": 100, "scale": 0.5}]' in out
    code, out, err = cli("amend", tmp_path / "s.pt", "--scale", "0.5", "--at", str(2**63 - 1))
    assert code == 0 and "Traceback" not in err, err
    code, out, err = cli("amend", tmp_path / "s.pt", "--scale", "0.5", "--plot", "x.txt")
    assert code == 2 and "x.txt" in err and "'.txt'" in err


def test_symlinks_out_of_the_folder_are_not_followed(saved, tmp_path):
    """Class 7: a symlink from a real checkpoint folder to another run's file is refused by every reader."""
    other = copy(saved, tmp_path / "other")
    evil = copy(saved, tmp_path / "evil")
    (evil / "scheduler.bin").unlink()
    (evil / "scheduler.bin").symlink_to(other / "scheduler.bin")
    for command in (["inspect", evil], ["cooldown", evil, "--over", "5"], ["amend", evil, "--scale", "0.5"]):
        code, out, err = cli(*command)
        assert code == 1 and "a symlink leading out of the checkpoint folder" in err, (command, out, err)
    inner = copy(saved, tmp_path / "inner")  # a symlink inside the folder stays readable
    (inner / "scheduler.bin").rename(inner / "real.bin")
    (inner / "scheduler.bin").symlink_to("real.bin")
    code, out, err = cli("inspect", inner)
    assert code == 0, err


def test_two_different_scheduler_states_are_not_guessed(saved, tmp_path):
    """Class 11: scheduler.bin and scheduler_1.bin with different counts, or a file holding `scheduler` and
    `lr_scheduler` that differ, are refused naming both; a state with `updates` and `last_epoch` that disagree
    is refused by inspect and by load_state_dict."""
    two = copy(saved, tmp_path / "two")
    state = torch.load(two / "scheduler.bin", weights_only=True)
    torch.save({**state, "updates": 99}, two / "scheduler_1.bin")
    code, out, err = cli("inspect", two)
    assert code == 1 and "2 different scheduler states" in err and "updates 99" in err and "updates 5" in err
    torch.save({"scheduler": state, "lr_scheduler": {**state, "updates": 99}}, tmp_path / "both.pt")
    code, out, err = cli("inspect", tmp_path / "both.pt")
    assert code == 1 and "'scheduler': updates 5" in err and "'lr_scheduler': updates 99" in err
    torch.save({"updates": 3, "last_epoch": 8}, tmp_path / "mixed.pt")
    code, out, err = cli("inspect", tmp_path / "mixed.pt")
    assert code == 1 and "not guessed" in err, (out, err)
    sched = NoamLR(two_groups(), **PEAK)
    with pytest.raises(ConfigError, match="not guessed"):
        sched.load_state_dict({"updates": 3, "last_epoch": 8})
    assert sched.last_epoch == 0


def test_engine_resume_of_crafted_states_is_one_clear_error(saved, tmp_path):
    """Class 13: accelerator.load_state of a real folder whose scheduler.bin was crafted (a degenerate lr_scale,
    an ambiguous count) stops with one error naming the key, before anything is restored."""
    for name, change, piece in [
        ("scale", {"groups": [{"index": 0, "lr_scale": 1e-320}]}, "groups[0].lr_scale"),
        ("mixed", {"type": None, "last_epoch": 8}, "not guessed"),
        (
            "enum",
            {"amendments": [{"at": 3, "scale": 0.25, "groups": ["w"]}, {"at": 4, "scale": float("inf")}]},
            "amendments[1].scale",
        ),
    ]:
        crafted = copy(saved, tmp_path / name)
        state = torch.load(crafted / "scheduler.bin", weights_only=True)
        torch.save({**state, **change}, crafted / "scheduler.bin")
        code, out = accelerate([tmp_path / f"{name}-out", crafted])
        assert code != 0 and piece in out, out[-3000:]
        assert "Error" in out


# ----------------------------------------------------------------------------- class 12: messages show what differs


def test_messages_show_what_differs(tmp_path):
    """Class 12: a confusable or decomposed group name is escaped; groups="emb" is reported as the str it is; a
    meta-device lr tensor and a lying float are one clear error or their real value."""
    from noam_plugin.errors import OptimizerError

    opt = two_groups(("emb", None))
    with pytest.raises(ConfigError, match="groups: expected a list of overrides.*found str 'emb'"):
        NoamLR(opt, **PEAK, groups="emb")
    for name, shown in (("\u0435mb", "\\u0435mb"), ("e\u0301mb", "e\\u0301mb"), ("a\u202eb", "a\\u202eb")):
        with pytest.raises(ConfigError) as err:
            NoamLR(two_groups(("emb", None)), **PEAK, groups=[{"name": name, "lr_scale": 0.5}])
        assert shown in str(err.value) and name not in str(err.value)
    model = torch.nn.Linear(2, 2)
    meta = torch.optim.SGD([{"params": [model.weight], "lr": torch.tensor(0.1, device="meta")}], lr=0.1)
    with pytest.raises(OptimizerError, match="meta device"):
        NoamLR(meta, **PEAK)


def test_checkpoint_texts_are_escaped(tmp_path):
    """Class 12: a `latest` tag with a tab, an escape or U+202E is printed escaped; world_size True or -3 in a
    file is no process count."""
    sched = NoamLR(two_groups(), **PEAK)
    state = sched.state_dict()
    for tag in ("a\tb", "x\x1b[31my", "r\u202eev"):
        folder = tmp_path / f"ds{len(tag)}{ord(tag[1])}"
        folder.mkdir()
        (folder / "latest").write_text(tag)
        code, out, err = cli("inspect", folder)
        assert code == 1 and tag not in err and "does not exist" in err, err
        assert "\x1b" not in err and "\u202e" not in err and "\t" not in err
    for world in (True, -3):
        torch.save({"scheduler": state, "world_size": world}, tmp_path / "w.pt")
        code, out, err = cli("inspect", tmp_path / "w.pt")
        assert code == 0, err
        assert "not a process count" in out and f"processes    {world} " not in out, out


# ----------------------------------------------------------------------------- class 8: commands at the bounds


def test_commands_on_a_state_at_the_bounds(tmp_path):
    """Class 8: inspect, cooldown and amend on a saved state with MAX_GROUPS overrides answer within seconds,
    and a resume that differs in every override is an error of bounded size."""
    from noam_plugin.errors import ScheduleMismatchError
    from noam_plugin.safe_io import MAX_GROUPS

    groups = [{"index": i, "lr_scale": 1 + i / MAX_GROUPS, "warmup_num_steps": 2 + i % 7} for i in range(MAX_GROUPS)]
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight]}] + [{"params": []} for _ in range(MAX_GROUPS - 1)], lr=0.1)
    sched = NoamLR(opt, **PEAK, groups=groups)
    for _ in range(10):
        opt.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    for command in (["inspect"], ["cooldown", "--over", "5"], ["amend", "--scale", "0.5"]):
        start = time.monotonic()
        code, out, err = cli(command[0], tmp_path / "s.pt", *command[1:])
        assert code == 0, err[-2000:]
        assert time.monotonic() - start < 60, command
        assert max(map(len, out.splitlines())) < 20_000
    fresh = torch.optim.SGD([{"params": [model.weight]}] + [{"params": []} for _ in range(MAX_GROUPS - 1)], lr=0.1)
    other = NoamLR(fresh, **PEAK, groups=[{**g, "lr_scale": 3.0} for g in groups])
    with pytest.raises(ScheduleMismatchError) as err:
        other.load_state_dict(sched.state_dict())
    assert len(str(err.value)) < 20_000 and "more differences" in str(err.value)


# ----------------------------------------------------------------------------- class 13: probes of our own

from test_hostile import copy_checkpoint  # noqa: E402
from test_hostile import zero2 as zero2  # noqa: E402, F401 - the fixture: a real one-process ZeRO-2 checkpoint

DS_LOAD = """
import sys, torch, deepspeed
import noam_plugin  # noqa: F401
torch.manual_seed(0)
model = torch.nn.Linear(4, 4)
config = {"train_batch_size": 2, "zero_optimization": {"stage": 2},
          "scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": 10, "d_model": 16}}}
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
engine.load_checkpoint(sys.argv[1])
print("loaded at", engine.lr_scheduler.last_epoch)
"""


def deepspeed_env():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    return {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}


def test_deepspeed_resume_of_crafted_states_is_one_clear_error(zero2, tmp_path):
    """Class 13: engine.load_checkpoint of a real ZeRO-2 folder whose lr_scheduler state was crafted stops with one
    error naming the key; the untouched copy loads at update 3."""
    from procs import run

    good = copy_checkpoint(zero2, tmp_path / "good")
    code, out = run([sys.executable, "-c", DS_LOAD, good], env=deepspeed_env(), timeout=240)
    assert code == 0 and "loaded at 3" in out, out[-3000:]
    for name, change, piece in [
        ("scale", {"groups": ({"index": 0, "lr_scale": 1e-320},)}, "groups[0].lr_scale"),
        ("mixed", {"type": None, "last_epoch": 8}, "not guessed"),
        (
            "rewarms",
            {"amendments": ({"at": 1, "rewarm_num_steps": 2}, {"at": 1, "rewarm_num_steps": 3})},
            "amendments[1]",
        ),
    ]:
        crafted = copy_checkpoint(zero2, tmp_path / name)
        file = crafted / "global_step3" / "mp_rank_00_model_states.pt"
        data = torch.load(file, weights_only=False)  # a file this test's own DeepSpeed run wrote
        data["lr_scheduler"] = {**data["lr_scheduler"], **change}
        torch.save(data, file)
        code, out = run([sys.executable, "-c", DS_LOAD, crafted], env=deepspeed_env(), timeout=240)
        assert code != 0 and piece in out and "loaded at" not in out, (name, out[-3000:])
        code, text, err = cli("inspect", crafted)
        assert code == 1 and piece in err and "Traceback" not in err, (name, text, err)


def test_deepspeed_folders_symlinks_and_a_foreign_universal_folder(zero2, tmp_path):
    """Classes 7 and 11 on a real ZeRO-2 checkpoint: its model-states file a symlink to another run's is refused;
    convert-universal does not replace a TAG_universal folder that holds someone's files."""
    other = copy_checkpoint(zero2, tmp_path / "other")
    evil = copy_checkpoint(zero2, tmp_path / "evil")
    states = evil / "global_step3" / "mp_rank_00_model_states.pt"
    states.unlink()
    states.symlink_to(other / "global_step3" / "mp_rank_00_model_states.pt")
    code, out, err = cli("inspect", evil)
    assert code == 1 and "a symlink leading out of the checkpoint folder" in err, (out, err)
    taken = copy_checkpoint(zero2, tmp_path / "taken")
    (taken / "global_step3_universal").mkdir()
    (taken / "global_step3_universal" / "notes.txt").write_text("mine")
    code, out, err = cli("convert-universal", taken, timeout=300)
    assert code == 1 and "not a universal checkpoint" in err and "notes.txt" in err, (out, err)
    assert (taken / "global_step3_universal" / "notes.txt").read_text() == "mine"


def test_to_universal_killed_midway_leaves_no_out_and_a_rerun_works(zero2, tmp_path):
    """Class 13: SIGKILL inside DeepSpeed's converter during to-universal leaves SAVED as it was and no OUT (only a
    hidden temporary); a rerun writes OUT whole."""
    import signal

    from test_universal import saved_state

    saved = saved_state(zero2, tmp_path / "saved")
    before = {p.relative_to(saved): p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    command = [sys.executable, "-u", "-m", "noam_plugin", "to-universal", str(saved), str(out)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True
    )
    seen = ""
    for line in proc.stdout:
        seen += line
        if "Extracting ZeRO fragments" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen[-3000:]
    assert not out.exists()
    assert {p.relative_to(saved): p.read_bytes() for p in saved.rglob("*") if p.is_file()} == before
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    code, text, err = cli("inspect", out)
    assert code == 0 and "k            3 optimizer updates applied" in text, (text, err)


def test_dcp_folders_after_the_new_checks(tmp_path):
    """Class 13: a real torch.distributed.checkpoint save with a crafted NoamLR state nested two levels down is
    refused naming the file and the key; two different states are not guessed between; .metadata a symlink out
    is refused."""
    import shutil

    import torch.distributed.checkpoint as dcp

    sched = NoamLR(two_groups(), **PEAK)
    state = sched.state_dict()
    cases = {
        "scale": ({"app": {"sched": {**state, "groups": ({"index": 0, "lr_scale": 1e-320},)}}}, "groups[0].lr_scale"),
        "two": ({"a": {"sched": state}, "b": {"sched": {**state, "updates": 9}}}, "2 different scheduler states"),
    }
    for name, (content, piece) in cases.items():
        dcp.save(content, checkpoint_id=str(tmp_path / name), no_dist=True)
        code, out, err = cli("inspect", tmp_path / name)
        assert code == 1 and piece in err and "Traceback" not in err, (name, out, err)
    dcp.save({"app": {"sched": state}}, checkpoint_id=str(tmp_path / "good"), no_dist=True)
    code, out, err = cli("inspect", tmp_path / "good")
    assert code == 0, err
    evil = tmp_path / "evil"
    shutil.copytree(tmp_path / "good", evil)
    (evil / ".metadata").unlink()
    (evil / ".metadata").symlink_to(tmp_path / "two" / ".metadata")
    code, out, err = cli("inspect", evil)
    assert code == 1 and "a symlink leading out of the checkpoint folder" in err, (out, err)


# ----------------------------------------------------------------------------- found by the second round


def test_second_round_findings(tmp_path):
    """The fresh cases that found defects: a loaded IntEnum `updates` and an IntEnum global batch stay plain in
    the state (class 9); an HF Trainer folder's trainer_state.json as a symlink out is not read (class 7), and its
    scheduler.pt and the engine's copy that differ are not guessed between (class 11)."""
    import shutil

    class Count(enum.IntEnum):
        THREE = 3
        EIGHT = 8

    sched = NoamLR(two_groups(), warmup_num_steps=80, warmup_max_lr=1e-3, warmup_unit="samples")
    sched.samples_per_update = Count.EIGHT
    state = sched.state_dict()
    state["updates"] = Count.THREE
    state["samples"] = 24
    sched.load_state_dict(state)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=True)
    assert type(again["updates"]) is int and type(again["samples_per_update"]) is int

    plain = NoamLR(two_groups(), **PEAK)
    torch.save(plain.state_dict(), tmp_path / "s.pt")
    folder = tmp_path / "checkpoint-0"
    folder.mkdir()
    shutil.copy(tmp_path / "s.pt", folder / "scheduler.pt")
    (tmp_path / "outside.json").write_text('{"global_step": 999}')
    (folder / "trainer_state.json").symlink_to(tmp_path / "outside.json")
    code, out, err = cli("inspect", folder)
    assert code == 1 and "999" not in out and "a symlink leading out" in err, (out, err)
    (folder / "trainer_state.json").unlink()
    (folder / "trainer_state.json").write_text('{"global_step": 0}')
    (folder / "global_step0").mkdir()
    torch.save(
        {"lr_scheduler": {**plain.state_dict(), "updates": 77}}, folder / "global_step0" / "mp_rank_00_model_states.pt"
    )
    (folder / "latest").write_text("global_step0")
    code, out, err = cli("inspect", folder)
    assert code == 1 and "2 different scheduler states" in err and "updates 77" in err, (out, err)


def test_third_round_findings(tmp_path):
    """Fresh cases, third round: `show` draws the curve of a group that only an amendment names (class 2), with
    the lrs NoamLR writes; an optimizer's confusable group name is listed escaped (class 12); a checkpoint path
    with a newline and an escape sequence is printed escaped on one line (class 12)."""
    body = "warmup_num_steps: 10\nwarmup_max_lr: 1.0e-3\n"
    body += "amendments: [{at: 12, total_num_steps: 30, cooldown_num_steps: 10, groups: [b]}]"
    code, out, err = cli("show", config_file(tmp_path, body), "--at", "25")
    assert code == 0, err
    rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["25"] and "%" not in ln]
    row = rows[-1]  # the per-group table: the main curve, then the group 'b'
    assert "name 'b'" in out
    opt = two_groups((None, "b"))
    sched = NoamLR(
        opt,
        warmup_num_steps=10,
        warmup_max_lr=1e-3,
        amendments=[{"at": 12, "total_num_steps": 30, "cooldown_num_steps": 10, "groups": ["b"]}],
    )
    for _ in range(24):
        opt.step()
    assert sched.last_epoch == 24
    assert float(row[1]) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-4)
    assert float(row[2]) == pytest.approx(opt.param_groups[1]["lr"], rel=1e-4)
    assert float(row[1]) == pytest.approx(reference_lr(25, warmup_num_steps=10, warmup_max_lr=1e-3), rel=1e-4)
    with pytest.raises(ConfigError) as err:
        NoamLR(two_groups(("\u0430", None)), **PEAK, amendments=[{"at": 1, "scale": 0.5, "groups": ["a"]}])
    assert "0 '\\u0430'" in str(err.value)
    folder = tmp_path / "a\nb\x1b[2J"
    folder.mkdir()
    code, out, err = cli("inspect", folder)
    assert code == 1 and "\x1b" not in err and err.count("\n") == 1 and "a\\x0ab" in err, repr(err)
