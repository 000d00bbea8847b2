"""NoamLR on plain PyTorch: counts applied updates, not calls; state and resume."""

import logging
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
    for k in range(1, 12):
        train_step(model, optimizer)
        scheduler.step()
    assert group_lrs(optimizer) == [2e-3 * min(12 / W, (W / 12) ** 0.5)]


def test_step_with_epoch_is_refused():
    _, _, scheduler = make()
    with pytest.raises(TypeError, match="counts applied optimizer updates"):
        scheduler.step(3)


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
        "world_size": 1,
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
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: D**-0.5 * min((s + 1) ** -0.5, (s + 1) * W**-1.5))
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
