"""noam_plugin/resume.py: the one resume decision, without torch (docs/CONTRACT.md section 4)."""

import subprocess
import sys
from pathlib import Path

import pytest

from noam_plugin.errors import ScheduleMismatchError, StateError
from noam_plugin.resume import ResumePlan, plan_resume, validate_state
from noam_plugin.schedule import NoamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

BASE = {"warmup_num_steps": 100, "warmup_max_lr": 0.01}


def state(updates=500, **params):
    """A NoamLR state as state_dict() writes it, spelled out here (not produced by the code under test)."""
    return {
        "type": "NoamLR",
        "updates": updates,
        "samples": updates * 8,
        "tokens": None,
        "samples_per_update": 8,
        "warmup_num_steps": 100,
        "d_model": None,
        "factor": 1.0,
        "warmup_max_lr": 0.01,
        "warmup_unit": "updates",
        "world_size": 2,
        **params,
    }


def test_resume_is_torch_free():
    code = "import sys, noam_plugin.resume; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_same_parameters_continue_from_the_saved_counts():
    plan = plan_resume(state(), NoamConfig(**BASE), samples_per_update=8, world_size=2)
    assert (plan.updates, plan.samples, plan.tokens, plan.count) == (500, 4000, None, 500)
    assert plan.changes == () and plan.accept() == []


def test_a_cooldown_added_after_the_saved_count_is_no_change_and_is_noted():
    cooled = NoamConfig(**BASE, total_num_steps=1000, cooldown_num_steps=400)
    plan = plan_resume(state(), cooled)
    assert plan.differing == [] and len(plan.notes) == 1 and "no parameter change" in plan.notes[0]
    inside = plan_resume(state(updates=700), cooled)  # the cooldown would have started at 600: rewrites 601-700
    assert inside.differing == ["total_num_steps", "cooldown_num_steps", "cooldown_type", "cooldown_min_lr"]
    with pytest.raises(ScheduleMismatchError, match="total_num_steps: checkpoint None, now 1000"):
        inside.accept()


def test_a_changed_curve_is_refused_unless_allowed():
    plan = plan_resume(state(), NoamConfig(warmup_num_steps=100, warmup_max_lr=0.02))
    assert plan.changes == (("warmup_max_lr", 0.01, 0.02),)
    with pytest.raises(ScheduleMismatchError, match="allow_param_change"):
        plan.accept()
    allowed = plan_resume(state(), NoamConfig(warmup_num_steps=100, warmup_max_lr=0.02, allow_param_change=True))
    assert "continuing the new schedule from update 500" in allowed.accept()[-1]


def test_world_size_and_global_batch_changes_are_noted():
    plan = plan_resume(state(), NoamConfig(**BASE), samples_per_update=4, world_size=1)
    assert any("world size 1 (saved with 2)" in n for n in plan.other_notes)
    assert any("from 8 to 4 samples per update" in n for n in plan.other_notes)


def test_a_unit_without_a_saved_count_cannot_continue():
    plan = plan_resume(state(), NoamConfig(**BASE, warmup_unit="tokens", allow_param_change=True))
    assert plan.count is None and "no count of the tokens seen" in plan.missing_count
    with pytest.raises(ValueError, match="no count of the tokens seen"):
        plan.accept()


def test_foreign_states_are_adopted():
    plan = plan_resume({"last_batch_iteration": 41}, NoamConfig(**BASE), samples_per_update=8)
    assert (plan.updates, plan.samples, plan.foreign) == (42, 336, True)
    assert "adopted update count 42" in plan.accept()[0]
    torch_state = plan_resume({"last_epoch": 7, "base_lrs": [0.1]}, NoamConfig(**BASE))
    assert (torch_state.updates, torch_state.samples) == (7, None)


@pytest.mark.parametrize(
    "bad, key, expected",
    [
        ({"updates": "x"}, "updates", "an int >= 0"),
        ({"updates": 2**63 - 1}, "updates", "at most 2**63 - 2"),
        ({"samples": 2**63 - 1}, "samples", "at most 2**63 - 2"),
        ({"warmup_max_lr": -1.0}, "warmup_max_lr", "a finite number > 0"),
    ],
)
def test_one_validation_refuses_a_malformed_state_whole(bad, key, expected):
    with pytest.raises(StateError) as error:
        plan_resume(state(**bad), NoamConfig(**BASE), source="ckpt/scheduler.pt")
    assert f"ckpt/scheduler.pt: {key}: expected " in str(error.value) and expected in str(error.value)
    with pytest.raises(StateError):
        validate_state(state(**bad))


def test_the_largest_count_loads_and_the_next_lr_exists():
    plan = plan_resume(state(updates=2**63 - 2, samples=None), NoamConfig(**BASE))
    assert plan.updates == 2**63 - 2 and plan.accept() == []
    expected = reference_lr(2**63 - 1, **BASE)
    assert NoamConfig(**BASE).lr(plan.updates + 1) == pytest.approx(expected, rel=1e-12)


def test_old_import_paths_still_work():
    from noam_plugin.resume import batch_change_note, resume_changes
    from noam_plugin.schedule import resume_changes as old_changes
    from noam_plugin.state import batch_change_note as old_note

    assert (old_changes, old_note) == (resume_changes, batch_change_note)
    assert isinstance(plan_resume(state(), NoamConfig(**BASE)), ResumePlan)


def test_a_state_without_factor_had_the_default():
    """A hand-made (or older) state may leave out `factor`: it had 1.0, as a config without it does."""
    d_model = {"d_model": 512, "warmup_max_lr": None, "warmup_num_steps": 100}
    saved = state(**d_model)
    del saved["factor"]
    plan = plan_resume(saved, NoamConfig(**d_model))
    assert plan.changes == () and plan.updates == 500
    assert plan_resume(saved, NoamConfig(**d_model, factor=2.0)).changes == (("factor", 1.0, 2.0),)


TAIL = {"total_num_steps": 1000, "cooldown_num_steps": 100}
SAVED_TAIL = {"cooldown_type": "linear", "cooldown_min_lr": 0.0}  # as state_dict() writes them with a cooldown


def test_a_main_tail_change_under_a_tail_amendment_in_force_is_a_change():
    # The amendment at 150 keeps the main cooldown_num_steps (100): updates 201-250 ran in a cooldown from 200.
    # cooldown_num_steps 120 moves the main tail's start to 880 (after the count) but the amended one to 180.
    amended = [{"at": 150, "total_num_steps": 300}]
    saved = state(updates=250, **TAIL, **SAVED_TAIL, amendments=amended)
    now = NoamConfig(**BASE, **{**TAIL, "cooldown_num_steps": 120}, amendments=amended)
    for k in (181, 220, 250):  # the premise: these applied updates would get another lr
        assert now.lr(k) != reference_lr(k, **BASE, total_num_steps=300, cooldown_num_steps=100)
    plan = plan_resume(saved, now)
    assert plan.differing == ["cooldown_num_steps"] and plan.notes == ()
    with pytest.raises(ScheduleMismatchError, match="cooldown_num_steps: checkpoint 100, now 120"):
        plan.accept()
    # A main key the amendment replaces, or a resume before the amendment: every applied update keeps its lr.
    later = NoamConfig(**BASE, **{**TAIL, "total_num_steps": 2000}, amendments=amended)
    assert plan_resume(saved, later).differing == []
    early = state(updates=140, **TAIL, **SAVED_TAIL, amendments=amended)
    assert plan_resume(early, now).differing == []


def test_a_main_key_a_group_amendment_inherits_is_a_change():
    # Group 'emb' alone is amended (a cooldown from 300, keeping total_num_steps from the main parameters).
    amended = [{"at": 150, "cooldown_num_steps": 100, "groups": ["emb"]}]
    saved = state(updates=350, total_num_steps=400, cooldown_num_steps=20, **SAVED_TAIL, amendments=amended)
    now = NoamConfig(**BASE, total_num_steps=500, cooldown_num_steps=20, amendments=amended)
    assert plan_resume(saved, now).differing == ["total_num_steps"]  # emb's updates 301-350 would move
