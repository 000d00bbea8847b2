"""NoamLR on plain PyTorch: counts applied updates, not calls; state and resume."""

import logging
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from noam_plugin import NoamLR, ScheduleMismatchError

W, D = 5, 64


def ref(k, W=W, d_model=D, factor=1.0):
    return factor * d_model**-0.5 * min(k**-0.5, k * W**-1.5)


def make(groups=1, lr=0.0, **params):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(groups)])
    param_groups = [{"params": layer.parameters()} for layer in model]
    optimizer = torch.optim.Adam(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-9)
    scheduler = NoamLR(optimizer, **({"warmup_num_steps": W, "d_model": D} | params))
    return model, optimizer, scheduler


def train_step(model, optimizer, x=None):
    x = torch.randn(3, 4) if x is None else x
    model(x).pow(2).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def group_lrs(optimizer):
    return [float(g["lr"]) for g in optimizer.param_groups]


def test_first_update_uses_lr1_not_zero():
    model, optimizer, scheduler = make()
    assert group_lrs(optimizer) == [ref(1)]
    assert scheduler.last_epoch == 0
    assert scheduler.get_last_lr() == [ref(1)]


@pytest.mark.parametrize("groups", [1, 3])
def test_after_k_updates_lr_is_lr_k_plus_1(groups):
    model, optimizer, scheduler = make(groups)
    for k in range(1, 3 * W):
        train_step(model, optimizer)
        scheduler.step()
        assert scheduler.last_epoch == k
        assert group_lrs(optimizer) == [ref(k + 1)] * groups
        assert scheduler.get_last_lr() == [ref(k + 1)] * groups


def test_lr_used_by_each_update_is_the_formula():
    model, optimizer, scheduler = make()
    used = []
    for _ in range(2 * W):
        used.append(group_lrs(optimizer)[0])
        train_step(model, optimizer)
        scheduler.step()
    assert used == [ref(k) for k in range(1, 2 * W + 1)]


def test_extra_step_calls_change_nothing():
    model, optimizer, scheduler = make(groups=2)
    for k in range(1, 8):
        train_step(model, optimizer)
        for _ in range(4):  # Accelerate steps num_processes times per update
            scheduler.step()
        assert scheduler.last_epoch == k and group_lrs(optimizer) == [ref(k + 1)] * 2


def test_stepping_per_micro_batch_under_accumulation():
    model, optimizer, scheduler = make()
    accumulation = 4
    for micro_batch in range(1, 4 * accumulation + 1):
        model(torch.randn(3, 4)).sum().backward()
        if micro_batch % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()  # the common mistake: once per micro-batch
    assert scheduler.last_epoch == 4
    assert group_lrs(optimizer) == [ref(5)]


def test_grad_scaler_skipped_updates_do_not_count():
    model, optimizer, scheduler = make()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    applied = 0
    for i in range(8):
        loss = model(torch.randn(3, 4)).pow(2).sum()
        if i in (2, 5):
            loss = loss * float("inf")  # inf/nan gradients: GradScaler skips optimizer.step()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        scheduler.step()
        applied += i not in (2, 5)
        assert scheduler.last_epoch == applied
        assert group_lrs(optimizer) == [ref(applied + 1)]
    assert applied == 6


def test_tensor_lr_is_updated_in_place():
    model, optimizer, scheduler = make(lr=torch.tensor(0.0))
    lr_tensor = optimizer.param_groups[0]["lr"]
    for k in range(1, 4):
        train_step(model, optimizer)
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] is lr_tensor
        assert lr_tensor.item() == pytest.approx(ref(k + 1), rel=1e-6)  # float32 tensor
    assert scheduler.get_last_lr() == [ref(4)]


def test_peak_form():
    model, optimizer, scheduler = make(d_model=None, warmup_max_lr=2e-3)
    for _k in range(1, 12):
        train_step(model, optimizer)
        scheduler.step()
    assert group_lrs(optimizer) == [2e-3 * min(12 / W, (W / 12) ** 0.5)]


def test_step_arguments_are_ignored_with_one_warning():
    """DeepSpeed's engine calls step(**lr_kwargs), then step(train_batch_size()) if that raised."""
    model, optimizer, scheduler = make()
    with pytest.warns(UserWarning, match="counts the optimizer updates actually applied"):
        scheduler.step(3)
    scheduler.step(last_batch_iteration=40)
    scheduler.step(epoch=7)
    assert scheduler.last_epoch == 0 and group_lrs(optimizer) == [ref(1)]
    train_step(model, optimizer)
    assert scheduler.last_epoch == 1 and group_lrs(optimizer) == [ref(2)]


def test_not_an_optimizer():
    with pytest.raises(TypeError, match="needs a torch.optim.Optimizer"):
        NoamLR(object(), warmup_num_steps=10, d_model=64)


def test_bind_moves_to_a_new_optimizer_keeping_the_count():
    model, optimizer, scheduler = make()
    for _ in range(3):
        train_step(model, optimizer)
        scheduler.step()
    new_optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler.bind(new_optimizer)
    assert group_lrs(new_optimizer) == [ref(4)]
    train_step(model, optimizer)  # the old optimizer no longer counts
    scheduler.step()
    assert scheduler.last_epoch == 3
    train_step(model, new_optimizer)
    scheduler.step()
    assert scheduler.last_epoch == 4 and group_lrs(new_optimizer) == [ref(5)]


def test_state_dict_is_plain_and_weights_only_loadable(tmp_path):
    model, optimizer, scheduler = make()
    for _ in range(7):
        train_step(model, optimizer)
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "sched.pt")
    state = torch.load(tmp_path / "sched.pt", weights_only=True)
    assert state == {
        "type": "NoamLR",
        "updates": 7,
        "warmup_num_steps": W,
        "d_model": D,
        "factor": 1.0,
        "warmup_max_lr": None,
        "warmup_unit": "updates",
        "samples": None,  # no global batch given: samples are not counted
        "tokens": None,  # add_tokens never called
        "samples_per_update": None,
        "world_size": 1,
        # the same keys whatever the parameters (a DCP template must match any saved state: docs/fsdp.md)
        "total_num_steps": None,
        "cooldown_num_steps": None,
        "cooldown_type": None,
        "cooldown_min_lr": None,
        "groups": (),
        "amendments": (),
    }


def test_resume_in_a_fresh_process_continues_the_sequence(tmp_path):
    """Train 6 updates, save everything, then a new interpreter loads and trains 6 more."""
    script = textwrap.dedent(
        f"""
        import sys, json, torch
        from noam_plugin import NoamLR
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
        sched = NoamLR(opt, warmup_num_steps={W}, d_model={D})
        path = {str(tmp_path / "ckpt.pt")!r}
        if sys.argv[1] == "resume":
            ckpt = torch.load(path, weights_only=True)
            model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"]); sched.load_state_dict(ckpt["sched"])
        used = []
        for _ in range(6):
            used.append(opt.param_groups[0]["lr"])
            model(torch.randn(2, 4)).sum().backward(); opt.step(); opt.zero_grad(); sched.step()
        torch.save({{"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}}, path)
        print(json.dumps(used))
        """
    )
    import json

    def run(mode):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run("fresh") + run("resume") == [ref(k) for k in range(1, 13)]


def test_mismatched_params_raise_naming_each_key():
    _, _, saved = make(warmup_num_steps=W, d_model=D)
    _, _, now = make(warmup_num_steps=2 * W, d_model=2 * D)
    with pytest.raises(ScheduleMismatchError) as error:
        now.load_state_dict(saved.state_dict())
    text = str(error.value)
    assert f"warmup_num_steps: checkpoint {W}, now {2 * W}" in text
    assert f"d_model: checkpoint {D}, now {2 * D}" in text
    assert "factor" not in text.split("\n")[1:3]
    assert "allow_param_change" in text


def test_allow_param_change_continues_new_schedule_from_k(caplog):
    model, optimizer, saved = make()
    for _ in range(4):
        train_step(model, optimizer)
        saved.step()
    _, optimizer2, now = make(warmup_num_steps=W, d_model=2 * D, allow_param_change=True)
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        now.load_state_dict(saved.state_dict())
    assert now.last_epoch == 4
    assert group_lrs(optimizer2) == [ref(5, d_model=2 * D)]
    assert "d_model: checkpoint 64, now 128" in caplog.text


def test_adopts_lambdalr_state(caplog):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: D**-0.5 * min((s + 1) ** -0.5, (s + 1) * W**-1.5)
    )
    for _ in range(9):
        train_step(model, optimizer)
        lambda_lr.step()
    _, optimizer2, noam = make()
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        noam.load_state_dict(lambda_lr.state_dict())
    assert noam.last_epoch == 9 and group_lrs(optimizer2) == [ref(10)]
    assert "adopted update count 9 from a torch scheduler state (last_epoch=9)" in caplog.text


def test_adopts_deepspeed_warmuplr_state(caplog):
    from deepspeed.runtime.lr_schedules import WarmupLR

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    warmup = WarmupLR(optimizer, warmup_num_steps=W, warmup_max_lr=1e-3)
    for _ in range(6):  # DeepSpeed's engine steps it once per applied update
        train_step(model, optimizer)
        warmup.step()
    _, optimizer2, noam = make()
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        noam.load_state_dict(warmup.state_dict())
    assert noam.last_epoch == 6 and group_lrs(optimizer2) == [ref(7)]
    assert "DeepSpeed scheduler state (last_batch_iteration=5)" in caplog.text


def test_unknown_or_missing_state_is_a_clear_error():
    _, _, noam = make()
    with pytest.raises(ValueError, match="not a scheduler state this plugin knows"):
        noam.load_state_dict({"foo": 1})
    with pytest.raises(ValueError, match="found NoneType"):
        noam.load_state_dict(None)


# ---------------------------------------------------------------- warmup in samples or tokens


def peak(x, W, top=0.01):
    """Peak form of the contract's formula, at position x of the unit."""
    return top * min(x / W, (W / x) ** 0.5)


def flat(rows):
    return [x for row in rows for x in row]


def used_lrs(optimizer):
    """Record the lr of every group when the optimizer applies an update (after NoamLR's own pre-hook)."""
    seen = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append(group_lrs(opt)))
    return seen


@pytest.mark.parametrize("groups", [1, 2])
def test_samples_unit_with_constant_batch_equals_updates_unit(groups):
    """warmup W*N samples at N samples per update gives the same lr sequence as W updates."""
    N, updates_run = 32, 3 * W
    runs = {}
    for unit, warmup in (("updates", W), ("samples", W * N)):
        model, optimizer, scheduler = make(
            groups, warmup_num_steps=warmup, d_model=None, warmup_max_lr=0.01, warmup_unit=unit, samples_per_update=N
        )
        seen = used_lrs(optimizer)
        for _ in range(updates_run):
            train_step(model, optimizer)
            scheduler.step()
        runs[unit] = seen
        assert scheduler.samples == updates_run * N and scheduler.updates == updates_run
    assert flat(runs["samples"]) == pytest.approx(flat(runs["updates"]), rel=1e-12)
    assert [lrs[0] for lrs in runs["samples"]] == pytest.approx(
        [peak(k, W) for k in range(1, updates_run + 1)], rel=1e-12
    )


def test_samples_unit_first_update_is_not_wasted_and_groups_hold_the_next_lr():
    N, WS = 8, 100
    model, optimizer, scheduler = make(
        2, warmup_num_steps=WS, d_model=None, warmup_max_lr=0.01, warmup_unit="samples", samples_per_update=N
    )
    assert group_lrs(optimizer) == [peak(N, WS)] * 2  # the first update has seen N samples
    for k in range(1, 30):
        train_step(model, optimizer)
        scheduler.step()
        assert scheduler.last_epoch == k and scheduler.samples == k * N
        assert group_lrs(optimizer) == pytest.approx([peak((k + 1) * N, WS)] * 2, rel=1e-12)
        assert scheduler.get_last_lr() == group_lrs(optimizer)


def test_samples_unit_without_global_batch_is_a_clear_error():
    model, optimizer, scheduler = make(warmup_unit="samples")
    with pytest.raises(
        RuntimeError, match=r"does not know the global batch: pass NoamLR\(\.\.\., samples_per_update=N\)"
    ):
        train_step(model, optimizer)
    scheduler.samples_per_update = 4
    train_step(model, optimizer)
    scheduler.step()
    assert scheduler.samples == 4 and scheduler.samples_per_update_from == "set by the training script"


def test_bad_samples_per_update_and_tokens():
    with pytest.raises(
        ValueError, match="samples_per_update: expected an int >= 1 \\(the global batch\\), found int 0"
    ):
        make(samples_per_update=0)
    model, optimizer, scheduler = make(warmup_unit="tokens")
    with pytest.raises(TypeError, match="add_tokens: expected an int >= 0, found int -3"):
        scheduler.add_tokens(-3)
    with pytest.raises(TypeError, match="one-element integer tensor, found a torch.float32 tensor"):
        scheduler.add_tokens(torch.ones(2))


def test_tokens_unit_uses_the_tokens_of_the_update_itself():
    """Update k runs at lr(T_k), T_k = tokens up to and including update k; micro-batches accumulate."""
    WT = 500
    model, optimizer, scheduler = make(2, warmup_num_steps=WT, d_model=None, warmup_max_lr=0.01, warmup_unit="tokens")
    seen = used_lrs(optimizer)
    total, expected = 0, []
    for update in range(12):
        for micro in range(3):  # accumulation 3, loss per micro-batch
            n = 7 + 5 * update + micro
            scheduler.add_tokens(torch.tensor(n) if micro == 1 else n)  # ints and integer tensors
            model(torch.randn(2, 4)).pow(2).sum().backward()
            scheduler.step()  # stepping per micro-batch changes nothing
            total += n
        expected.append(peak(total, WT))
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        assert scheduler.tokens == total and scheduler.updates == update + 1
        assert scheduler.get_last_lr() == pytest.approx([expected[-1]] * 2, rel=1e-12)  # lr of the last update
    assert flat(seen) == pytest.approx(flat([x, x] for x in expected), rel=1e-12)


def test_tokens_unit_resumed_holds_the_last_update_s_lr_until_the_next_is_known():
    # A fresh optimizer (lr 0.0) and only the scheduler's state: between updates the groups keep the last update's.
    model, optimizer, scheduler = make(2, warmup_num_steps=500, d_model=None, warmup_max_lr=0.01, warmup_unit="tokens")
    for n in (40, 60, 80):
        scheduler.add_tokens(n)
        train_step(model, optimizer)
    model, optimizer, fresh = make(2, warmup_num_steps=500, d_model=None, warmup_max_lr=0.01, warmup_unit="tokens")
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.get_last_lr() == group_lrs(optimizer) == [peak(180, 500)] * 2
    fresh.add_tokens(20)
    seen = used_lrs(optimizer)
    train_step(model, optimizer)
    assert flat(seen) == [peak(200, 500)] * 2


def test_tokens_unit_without_tokens_is_a_clear_error():
    model, optimizer, scheduler = make(warmup_unit="tokens")
    with pytest.raises(RuntimeError, match=r"no tokens were reported for update 1\. Call scheduler\.add_tokens\(n\)"):
        train_step(model, optimizer)


def test_updates_unit_counts_samples_and_tokens_without_changing_the_lr():
    """In updates unit add_tokens only counts; the lr stays lr(k+1)."""
    model, optimizer, scheduler = make(samples_per_update=6)
    for k in range(1, 5):
        scheduler.add_tokens(10 * k)
        train_step(model, optimizer)
        scheduler.step()
        assert group_lrs(optimizer) == [ref(k + 1)]
    assert (scheduler.updates, scheduler.samples, scheduler.tokens) == (4, 24, 100)
    state = scheduler.state_dict()
    assert (state["samples"], state["tokens"], state["samples_per_update"], state["warmup_unit"]) == (
        24,
        100,
        6,
        "updates",
    )


def _resume(state, unit, N, warmup, caplog):
    model, optimizer, scheduler = make(
        2, warmup_num_steps=warmup, d_model=None, warmup_max_lr=0.01, warmup_unit=unit, samples_per_update=N
    )
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        scheduler.load_state_dict(state)
    return model, optimizer, scheduler


def test_resume_with_half_the_global_batch_continues_in_samples(caplog):
    """Saved after 5 updates of 16 samples; resumed at 8 per update: lr(80 + 8 j) for the j-th update."""
    WS = 120
    model, optimizer, scheduler = make(
        warmup_num_steps=WS, d_model=None, warmup_max_lr=0.01, warmup_unit="samples", samples_per_update=16
    )
    for _ in range(5):
        train_step(model, optimizer)
        scheduler.step()
    state = scheduler.state_dict()
    assert (state["updates"], state["samples"], state["samples_per_update"]) == (5, 80, 16)

    model, optimizer, scheduler = _resume(state, "samples", 8, WS, caplog)
    assert (
        "the global batch changed since the checkpoint (from 16 to 8 samples per update); "
        "warmup_unit 'samples' continues from 80 samples seen" in caplog.text
    )
    seen = used_lrs(optimizer)
    for _ in range(6):
        train_step(model, optimizer)
        scheduler.step()
    assert [lrs[0] for lrs in seen] == pytest.approx([peak(80 + 8 * j, WS) for j in range(1, 7)], rel=1e-12)
    assert (scheduler.updates, scheduler.samples) == (11, 128)


def test_resume_with_another_global_batch_in_updates_unit_logs_the_change(caplog):
    model, optimizer, scheduler = make(samples_per_update=16)
    for _ in range(5):
        train_step(model, optimizer)
        scheduler.step()
    model, optimizer, scheduler = make(samples_per_update=8)
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        scheduler.load_state_dict(
            scheduler_state := {**_state_of(5, 80, None, 16), "d_model": D, "warmup_max_lr": None}
        )
    assert scheduler_state["warmup_unit"] == "updates"
    assert (
        "the global batch changed since the checkpoint (from 16 to 8 samples per update); "
        "the schedule continues in updates at update 6" in caplog.text
    )
    assert group_lrs(optimizer) == [ref(6)]


def _state_of(updates, samples, tokens, per_update, **params):
    return {
        "type": "NoamLR",
        "updates": updates,
        "samples": samples,
        "tokens": tokens,
        "samples_per_update": per_update,
        "warmup_num_steps": W,
        "d_model": None,
        "factor": 1.0,
        "warmup_max_lr": 0.01,
        "warmup_unit": "updates",
        "world_size": 1,
        **params,
    }


def test_resume_tokens_unit_continues_from_tokens_seen(caplog):
    WT = 300
    state = _state_of(4, None, 250, None, warmup_num_steps=WT, warmup_unit="tokens")
    model, optimizer, scheduler = _resume(state, "tokens", None, WT, caplog)
    seen = used_lrs(optimizer)
    scheduler.add_tokens(30)
    train_step(model, optimizer)
    scheduler.step()
    assert flat(seen) == pytest.approx([peak(280, WT)] * 2, rel=1e-12) and scheduler.tokens == 280


def test_old_state_without_unit_loads_as_updates_and_unit_change_is_a_mismatch():
    old = {
        "type": "NoamLR",
        "updates": 3,
        "warmup_num_steps": W,
        "d_model": D,
        "factor": 1.0,
        "warmup_max_lr": None,
        "world_size": 1,
    }
    model, optimizer, scheduler = make()
    scheduler.load_state_dict(old)
    assert group_lrs(optimizer) == [ref(4)] and scheduler.samples is None and scheduler.tokens is None
    model, optimizer, scheduler = make(warmup_unit="samples", samples_per_update=4)
    with pytest.raises(ScheduleMismatchError, match="warmup_unit: checkpoint 'updates', now 'samples'"):
        scheduler.load_state_dict(old)


def test_unit_change_allowed_needs_the_count(caplog):
    """updates -> samples with allow_param_change continues from the saved sample count; without one, a clear error."""
    state = _state_of(5, 40, None, 8)
    model, optimizer, scheduler = make(
        warmup_num_steps=80,
        d_model=None,
        warmup_max_lr=0.01,
        warmup_unit="samples",
        samples_per_update=8,
        allow_param_change=True,
    )
    scheduler.load_state_dict(state)
    assert group_lrs(optimizer) == [pytest.approx(peak(48, 80), rel=1e-12)]
    with pytest.raises(ValueError, match="holds no count of the samples seen"):
        scheduler.load_state_dict(_state_of(5, None, None, None))


def test_foreign_state_adopted_in_samples(caplog):
    model, optimizer, scheduler = make(
        warmup_num_steps=64, d_model=None, warmup_max_lr=0.01, warmup_unit="samples", samples_per_update=4
    )
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        scheduler.load_state_dict({"last_batch_iteration": 9})
    assert (
        "adopted update count 10 from a DeepSpeed scheduler state (last_batch_iteration=9) and 40 samples seen "
        "(x 4 per update); the next is update 11" in caplog.text
    )
    assert group_lrs(optimizer) == [pytest.approx(peak(44, 64), rel=1e-12)]
    model, optimizer, scheduler = make(warmup_unit="tokens")
    with pytest.raises(ValueError, match="holds no count of the tokens seen"):
        scheduler.load_state_dict({"last_epoch": 3})


def test_tokens_unit_after_the_optimizer_state_is_reloaded():
    """optimizer.load_state_dict() makes new param-group dicts (Accelerate's prepare() does): the lr goes to those."""
    model, optimizer, scheduler = make(2, warmup_num_steps=100, d_model=None, warmup_max_lr=0.01, warmup_unit="tokens")
    optimizer.load_state_dict(optimizer.state_dict())
    seen = used_lrs(optimizer)
    scheduler.add_tokens(30)
    train_step(model, optimizer)
    scheduler.step()
    assert flat(seen) == pytest.approx([peak(30, 100)] * 2, rel=1e-12)


def test_overflow_skipped_update_drops_its_tokens_and_lr():
    """What the DeepSpeed integration does around an update the engine skips: a boundary with no inner step."""
    model, optimizer, scheduler = make(warmup_num_steps=100, d_model=None, warmup_max_lr=0.01, warmup_unit="tokens")
    scheduler.add_tokens(40)
    train_step(model, optimizer)
    scheduler.add_tokens(25)
    with scheduler.update_boundary():  # the engine is about to step ...
        assert group_lrs(optimizer) == [peak(65, 100)]
    # ... and skipped it (overflow): no data, lr of the last update again
    assert group_lrs(optimizer) == [peak(40, 100)] and scheduler.get_last_lr() == [peak(40, 100)]
    assert (scheduler.updates, scheduler.tokens) == (1, 40)
    seen = used_lrs(optimizer)
    scheduler.add_tokens(10)
    train_step(model, optimizer)
    assert seen == [[peak(50, 100)]] and scheduler.tokens == 50 and scheduler.updates == 2


def test_update_boundary_counts_several_inner_steps_once():
    """ZeRO steps the inner optimizer once per param group inside one engine update."""
    model, optimizer, scheduler = make(groups=3)
    for k in range(1, 5):
        with scheduler.update_boundary():
            for _ in range(3):
                train_step(model, optimizer)
                assert group_lrs(optimizer) == [ref(k)] * 3  # never changed in the middle of an update
        assert scheduler.last_epoch == k and group_lrs(optimizer) == [ref(k + 1)] * 3


# ---------------------------------------------------------------- whoever steps (docs/CONTRACT.md section 2)


def run_updates(model, optimizer, scheduler, n, step_every=None):
    """n applied updates; scheduler.step() every `step_every` updates (None: never). Returns the lr each used."""
    used = []
    for i in range(1, n + 1):
        used.append(group_lrs(optimizer))
        train_step(model, optimizer)
        if step_every and i % step_every == 0:
            scheduler.step()
    return used


@pytest.mark.parametrize("step_every", [1, 3, 4, None], ids=["every-update", "every-3", "per-epoch-of-4", "never"])
def test_each_applied_update_counts_once_however_often_step_is_called(step_every):
    model, optimizer, scheduler = make(groups=2)
    used = run_updates(model, optimizer, scheduler, 3 * W, step_every)
    assert used == [[ref(k)] * 2 for k in range(1, 3 * W + 1)]
    assert scheduler.last_epoch == 3 * W and scheduler.get_last_lr() == [ref(3 * W + 1)] * 2
    assert scheduler.state_dict()["updates"] == 3 * W


def test_lr_is_right_as_soon_as_optimizer_step_returns():
    model, optimizer, scheduler = make(lr=torch.tensor(0.0))
    lr_tensor = optimizer.param_groups[0]["lr"]
    for k in range(1, 6):
        train_step(model, optimizer)  # no scheduler.step() at all
        assert scheduler.state_dict()["updates"] == k  # current between an update and the next step()
        assert optimizer.param_groups[0]["lr"] is lr_tensor
        assert lr_tensor.item() == pytest.approx(ref(k + 1), rel=1e-6)


def test_many_optimizer_steps_then_one_scheduler_step():
    model, optimizer, scheduler = make()
    for _ in range(4):
        train_step(model, optimizer)
    scheduler.step()
    assert scheduler.last_epoch == 4 and group_lrs(optimizer) == [ref(5)]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_counts_its_own_updates(how):
    import copy
    import pickle

    model, optimizer, scheduler = make(groups=2)
    run_updates(model, optimizer, scheduler, 3, step_every=1)
    if how == "deepcopy":
        model2, optimizer2, scheduler2 = copy.deepcopy((model, optimizer, scheduler))
    else:
        model2, optimizer2, scheduler2 = pickle.loads(pickle.dumps((model, optimizer, scheduler)))
    assert scheduler2.optimizer is optimizer2 and scheduler2.updates == 3
    used_copy = run_updates(model2, optimizer2, scheduler2, 4, step_every=None)
    assert used_copy == [[ref(k)] * 2 for k in range(4, 8)] and scheduler2.last_epoch == 7
    assert scheduler.updates == 3 and group_lrs(optimizer) == [ref(4)] * 2  # the original did not move
    used_original = run_updates(model, optimizer, scheduler, 2, step_every=1)
    assert used_original == [[ref(4)] * 2, [ref(5)] * 2] and scheduler2.updates == 7


def test_a_second_scheduler_on_the_same_optimizer_is_refused():
    from torch.optim.lr_scheduler import LambdaLR

    model, optimizer, scheduler = make()
    with pytest.raises(RuntimeError, match="already scheduled by a NoamLR.*Keep one"):
        NoamLR(optimizer, warmup_num_steps=3, d_model=32)
    with pytest.raises(RuntimeError, match="already scheduled by a NoamLR"):
        LambdaLR(optimizer, lambda step: 1.0)
    run_updates(model, optimizer, scheduler, 2)
    assert group_lrs(optimizer) == [ref(3)]  # the refused ones changed nothing
    del scheduler  # a dropped NoamLR frees its optimizer for a new scheduler
    replacement = NoamLR(optimizer, warmup_num_steps=3, d_model=32)
    assert replacement.updates == 0


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"updates": "12"}, "updates"),
        ({"updates": 12.7}, "updates"),
        ({"updates": True}, "updates"),
        ({"updates": -1}, "updates"),
        ({"samples": "lots"}, "samples"),
        ({"tokens": 1.5}, "tokens"),
        ({"samples_per_update": 0}, "samples_per_update"),
        ({"world_size": "two"}, "world_size"),
    ],
)
def test_a_malformed_state_is_refused_whole(bad, key):
    model, optimizer, scheduler = make()
    run_updates(model, optimizer, scheduler, 2)
    state = {**scheduler.state_dict(), "updates": 9, **bad}
    with pytest.raises(ValueError) as error:
        scheduler.load_state_dict(state)
    assert f": {key}: expected" in str(error.value)
    assert scheduler.updates == 2 and group_lrs(optimizer) == [ref(3)]  # nothing changed


def test_a_state_without_updates_and_foreign_states_with_bad_counts_are_refused():
    _, _, scheduler = make()
    state = scheduler.state_dict()
    del state["updates"]
    with pytest.raises(ValueError, match="updates: expected an int >= 0 .required., found nothing"):
        scheduler.load_state_dict(state)
    with pytest.raises(ValueError, match="last_batch_iteration: expected an int >= -1, found str '3'"):
        scheduler.load_state_dict({"last_batch_iteration": "3"})
    with pytest.raises(ValueError, match="last_epoch: expected an int >= 0, found float 2.5"):
        scheduler.load_state_dict({"last_epoch": 2.5})
    assert scheduler.updates == 0


# ---------------------------------------------------------------- cooldown tail (issue 14)


def tail(k, W, T, C, kind="linear", m=0.0, top=0.01):
    """docs/CONTRACT.md section 1 with the cooldown, peak form, written out again."""
    s = T - C
    if k <= s:
        return peak(k, W, top)
    x = min(1, (k - s) / (C + 1))
    f = {"linear": 1 - x, "1-sqrt": 1 - x**0.5, "cosine": (1 + math.cos(math.pi * x)) / 2}[kind]
    return m + (peak(s, W, top) - m) * f


@pytest.mark.parametrize("kind", ["linear", "1-sqrt", "cosine"])
def test_cooldown_in_updates_every_update_and_the_log_past_the_end(kind, caplog):
    W2, T, C = 4, 12, 5
    model, optimizer, scheduler = make(
        2,
        warmup_num_steps=W2,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=T,
        cooldown_num_steps=C,
        cooldown_type=kind,
        cooldown_min_lr=1e-4,
    )
    seen = used_lrs(optimizer)
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        for _ in range(T + 3):
            train_step(model, optimizer)
            scheduler.step()
    assert flat(seen) == pytest.approx(flat([tail(k, W2, T, C, kind, 1e-4)] * 2 for k in range(1, T + 4)), rel=1e-12)
    assert flat(seen)[-6:] == [1e-4] * 6  # updates T+1.. run at cooldown_min_lr
    past = [r.message for r in caplog.records if "past total_num_steps" in r.message]
    assert past == [
        "NoamLR: past total_num_steps (12 updates): the cooldown is over, updates from here on run at "
        "cooldown_min_lr 0.0001"
    ]


def test_total_without_cooldown_and_an_amendment_trains_past_the_planned_end(caplog):
    # total_num_steps alone is the planned end (no tail): past it the curve goes on, scaled from the amendment on.
    model, optimizer, scheduler = make(
        1,
        warmup_num_steps=4,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=12,
        amendments=[{"at": 6, "scale": 0.5}],
    )
    seen = used_lrs(optimizer)
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        for _ in range(16):
            train_step(model, optimizer)
    want = [peak(k, 4) * (0.5 if k > 6 else 1.0) for k in range(1, 17)]
    assert flat(seen) == pytest.approx(want, rel=1e-12)
    assert "past total_num_steps" not in caplog.text  # no cooldown, so none is over


def test_per_group_curves_say_once_that_the_cooldown_is_over(caplog):
    T, C = 12, 5
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    optimizer = torch.optim.Adam([{"params": layer.parameters()} for layer in model], lr=0.0)
    scheduler = NoamLR(  # noqa: F841 - kept alive: a dropped NoamLR stops scheduling
        optimizer,
        warmup_num_steps=4,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=T,
        cooldown_num_steps=C,
        cooldown_min_lr=1e-4,
        groups=[{"index": 1, "lr_scale": 0.5}],
    )
    seen = used_lrs(optimizer)
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        for _ in range(T + 3):
            train_step(model, optimizer)
    assert flat(seen) == pytest.approx(
        flat([tail(k, 4, T, C, m=1e-4), tail(k, 4, T, C, m=1e-4) / 2] for k in range(1, T + 4)), rel=1e-12
    )
    past = [r.message for r in caplog.records if "past total_num_steps" in r.message]
    assert past == [
        "NoamLR: past total_num_steps (12 updates): the cooldown is over, updates from here on run at "
        "cooldown_min_lr 0.0001 (times the scales in force)"
    ]


@pytest.mark.parametrize("unit", ["samples", "tokens"])
def test_cooldown_in_data_units_reads_the_curve_at_the_data_seen(unit):
    N, W2, T, C = 8, 40, 120, 50
    model, optimizer, scheduler = make(
        1,
        warmup_num_steps=W2,
        d_model=None,
        warmup_max_lr=0.01,
        warmup_unit=unit,
        total_num_steps=T,
        cooldown_num_steps=C,
        cooldown_type="cosine",
        samples_per_update=N,
    )
    seen, total, expected = used_lrs(optimizer), 0, []
    for update in range(18):
        n = N if unit == "samples" else 6 + update % 4
        if unit == "tokens":
            scheduler.add_tokens(n)
        total += n
        expected.append(tail(total, W2, T, C, "cosine"))
        train_step(model, optimizer)
        scheduler.step()
    assert flat(seen) == pytest.approx(expected, rel=1e-12)
    assert total > T and expected[-1] == 0.0


def test_cooldown_decided_at_resume_through_torch_save(tmp_path, caplog):
    """A run without a cooldown, saved with torch.save, resumed with one starting at the saved count: no error, a log
    line, and the same lrs as a run planned with it; one starting before it is a parameter change."""
    W2, T, C = 4, 14, 6  # the cooldown starts after update 8
    model, optimizer, first = make(1, warmup_num_steps=W2, d_model=None, warmup_max_lr=0.01)
    for _ in range(8):
        train_step(model, optimizer)
        first.step()
    torch.save(first.state_dict(), tmp_path / "sched.pt")
    state = torch.load(tmp_path / "sched.pt", weights_only=True)
    assert state["total_num_steps"] is None  # no tail (the key is there: one layout for every config)

    model, optimizer, resumed = make(
        1,
        warmup_num_steps=W2,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=T,
        cooldown_num_steps=C,
        cooldown_type="1-sqrt",
    )
    with caplog.at_level(logging.WARNING, logger="noam_plugin"):
        resumed.load_state_dict(state)
    assert "the checkpoint (at update 8) had no cooldown; now 1-sqrt cooldown over updates 9-14" in caplog.text
    seen = used_lrs(optimizer)
    for _ in range(7):
        train_step(model, optimizer)
        resumed.step()
    assert flat(seen) == pytest.approx([tail(k, W2, T, C, "1-sqrt") for k in range(9, 16)], rel=1e-12)
    saved_with_tail = resumed.state_dict()
    assert (saved_with_tail["total_num_steps"], saved_with_tail["cooldown_type"]) == (14, "1-sqrt")

    early = dict(warmup_num_steps=W2, d_model=None, warmup_max_lr=0.01, total_num_steps=12, cooldown_num_steps=6)
    with pytest.raises(ScheduleMismatchError) as error:
        make(1, **early)[2].load_state_dict(state)  # starts after update 6: updates 7 and 8 would change
    assert "total_num_steps: checkpoint None, now 12" in str(error.value)
    assert "cooldown_num_steps: checkpoint None, now 6" in str(error.value)
    allowed = make(1, **early, allow_param_change=True)[2]
    allowed.load_state_dict(state)
    assert allowed.get_last_lr() == pytest.approx([tail(9, W2, 12, 6)], rel=1e-12)
    # the saved tail loaded again, inside it: same parameters, nothing to say
    again = make(
        1,
        warmup_num_steps=W2,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=T,
        cooldown_num_steps=C,
        cooldown_type="1-sqrt",
    )[2]
    again.load_state_dict(saved_with_tail)
    assert again.last_epoch == 15 and again.get_last_lr() == [0.0]


def test_cooldown_survives_pickle():
    import pickle

    model, optimizer, scheduler = make(
        1,
        warmup_num_steps=4,
        d_model=None,
        warmup_max_lr=0.01,
        total_num_steps=10,
        cooldown_num_steps=3,
        cooldown_type="cosine",
    )
    optimizer2, scheduler2 = pickle.loads(pickle.dumps((optimizer, scheduler)))
    assert scheduler2.config == scheduler.config and scheduler2.lr_at(9) == tail(9, 4, 10, 3, "cosine")


@pytest.mark.parametrize("unit", ["updates", "samples", "tokens"])
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_a_step_at_lr_zero_set_by_someone_else_is_not_an_update(unit, lr_kind):
    """torch.distributed.checkpoint initialises an optimizer without state by one step() at lr 0 on zero grads
    (torch.distributed.checkpoint.state_dict._init_optim_state), then restores the lr: not a training update."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    lr = torch.tensor(0.0) if lr_kind == "tensor" else 0.0
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # no momentum: never any state, DCP steps at every call
    params = {"warmup_num_steps": 12, "warmup_max_lr": 0.01, "warmup_unit": unit}
    scheduler = NoamLR(optimizer, **params, samples_per_update=2)
    weights = model.weight.detach().clone()
    get_state_dict(model, optimizer)  # the zero-lr initialisation step
    assert torch.equal(model.weight, weights) and (scheduler.updates, scheduler.samples) == (0, 0)
    for k in range(1, 4):
        if unit == "tokens":
            scheduler.add_tokens(2)
        train_step(model, optimizer)
        get_state_dict(model, optimizer)  # as at every DCP save
        assert scheduler.updates == k, (unit, k)
    next_at = {"updates": 4, "samples": 8, "tokens": 6}[unit]
    if unit != "tokens":
        assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(peak(next_at, 12), rel=1e-6)


class PerGroupStepper:
    """A wrapper that applies one update as one inner step() per param group, as ZeRO-1/2 do (not DeepSpeed)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def step(self):
        groups = self.optimizer.param_groups
        for group in list(groups):
            self.optimizer.param_groups = [group]
            self.optimizer.step()
        self.optimizer.param_groups = groups


def test_a_wrapper_stepping_once_per_group_counts_once_also_for_a_later_noamlr():
    model, optimizer, _ = make(groups=3)
    del _  # make() attached a NoamLR; dropped, it frees the optimizer
    wrapper = PerGroupStepper(optimizer)
    first = NoamLR(wrapper, warmup_num_steps=W, d_model=D)
    for k in range(1, 4):
        model(torch.randn(3, 4)).pow(2).sum().backward()
        wrapper.step()
        assert first.updates == k and group_lrs(optimizer) == [ref(k + 1)] * 3
    del first
    second = NoamLR(wrapper, warmup_num_steps=W, d_model=D)  # a new schedule on the same wrapper
    wrapper.step()
    assert second.updates == 1 and group_lrs(optimizer) == [ref(2)] * 3


def test_from_config_keeps_every_key_options_included(tmp_path):
    from noam_plugin import load_config

    path = tmp_path / "noam.yaml"
    path.write_text(
        "scheduler:\n  type: NoamLR\n  params:\n    warmup_num_steps: 5\n    d_model: 64\n"
        "    total_num_steps: 20\n    cooldown_num_steps: 4\n    allow_param_change: true\n"
    )
    for config in (path, str(path), load_config(path)):
        _, optimizer = make()[:2]
        scheduler = NoamLR.from_config(optimizer, config)
        assert scheduler.config == load_config(path) and scheduler.config.allow_param_change
        assert scheduler.get_last_lr() == [ref(1)]
    _, optimizer = make()[:2]
    from_mapping = NoamLR.from_config(
        optimizer, {"warmup_num_steps": 5, "warmup_max_lr": 0.01, "warmup_unit": "samples"}, samples_per_update=4
    )
    assert from_mapping.samples_per_update == 4 and from_mapping.get_last_lr() == [0.01 * min(4 / 5, (5 / 4) ** 0.5)]
    with pytest.raises(ValueError, match="NoamLR.from_config: warmup_num_step: expected one of"):
        NoamLR.from_config(make()[1], {"warmup_num_step": 5, "d_model": 64})


# ------------------------------------------------------------ last_update_lr: what a logger shows for update k


@pytest.mark.parametrize("groups", [1, 2])
def test_last_update_lr_is_the_lr_the_update_ran_at(groups):
    model, optimizer, scheduler = make(groups=groups)
    ran = []
    optimizer.register_step_pre_hook(lambda opt, a, kw: ran.append(group_lrs(opt)))
    assert scheduler.last_update_lr is None  # no update yet
    for k in range(1, 8):
        train_step(model, optimizer)
        assert scheduler.last_update_lr == ran[-1] == [ref(k)] * groups
        assert scheduler.get_last_lr() == [ref(k + 1)] * groups


def test_last_update_lr_skipped_update_keeps_the_last_applied_one():
    model, optimizer, scheduler = make()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for i in range(4):
        loss = model(torch.randn(3, 4)).pow(2).sum() * (float("inf") if i == 2 else 1.0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    assert scheduler.updates == 3 and scheduler.last_update_lr == [ref(3)]


def test_last_update_lr_after_a_resume_is_the_curve_at_the_restored_count():
    model, optimizer, scheduler = make()
    for _ in range(4):
        train_step(model, optimizer)
    state = scheduler.state_dict()
    _, _, fresh = make()
    fresh.load_state_dict(state)
    assert fresh.last_update_lr == [ref(4)]
    _, _, samples = make(warmup_unit="samples", samples_per_update=8, warmup_num_steps=40)
    samples.load_state_dict(
        {
            **state,
            "samples": 24,
            "samples_per_update": 8,
            "warmup_unit": "samples",
            "warmup_num_steps": 40,
            "updates": 3,
        }
    )
    assert samples.last_update_lr == [ref(24, W=40)]


def test_last_update_lr_in_samples_and_tokens():
    model, optimizer, scheduler = make(warmup_unit="samples", samples_per_update=6, warmup_num_steps=30)
    train_step(model, optimizer)
    train_step(model, optimizer)
    assert scheduler.last_update_lr == [ref(12, W=30)]
    model, optimizer, scheduler = make(warmup_unit="tokens", warmup_num_steps=100)
    for tokens in (30, 50):
        scheduler.add_tokens(tokens)
        train_step(model, optimizer)
    assert scheduler.last_update_lr == [ref(80, W=100)]
