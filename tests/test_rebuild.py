"""Resume with no scheduler state (docs/CONTRACT.md section 4, "No scheduler state saved"; noam_plugin/rebuild.py).

Real optimizers trained for 5 updates, their state saved without the scheduler's, as users do: plain torch with
`sched.load_state_dict` forgotten, and Accelerate with the scheduler left out of `prepare()`. The resumed run
must go on at lr(6), lr(7), ... (the formula written apart, read by a step pre-hook), saying once where the count
came from; where nothing proves it, or the parameters disagree, one error before the first update.
(DeepSpeed and the HF Trainer: tests/integrations/test_cross_check.py.)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "integrations"))
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

from noam_plugin import CountMismatchError, NoamLR  # noqa: E402
from noam_plugin.cli import main  # noqa: E402
from noam_plugin.rebuild import NoSchedulerStateError  # noqa: E402

PEAK = {"warmup_num_steps": 4, "warmup_max_lr": 0.01}


def lr(k):
    return reference_lr(k, **PEAK)


def parts(optimizer_class=torch.optim.AdamW, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = optimizer_class([{"params": [model.weight]}, {"params": [model.bias]}], **kwargs)
    return model, optimizer


def train(model, optimizer, updates):
    used = []
    inner = getattr(optimizer, "optimizer", optimizer)  # inside Accelerate's AcceleratedOptimizer
    hook = inner.register_step_pre_hook(lambda opt, *_: used.append([g["lr"] for g in opt.param_groups]))
    for i in range(updates):
        model(torch.full((2, 4), float(i))).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    hook.remove()
    return used


@pytest.fixture
def saved(tmp_path):
    """A real 5-update AdamW run under NoamLR; torch.save of the model and the optimizer only."""
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **PEAK)
    assert train(model, optimizer, 5) == [[lr(k)] * 2 for k in range(1, 6)]
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    return path, scheduler.state_dict()


def rebuilt_lines(caplog):
    return [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]


@pytest.mark.parametrize("order", ["scheduler first", "optimizer first"])
def test_plain_torch_scheduler_state_forgotten_goes_on_from_adams_step(saved, caplog, order):
    path, _ = saved
    model, optimizer = parts()
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    with caplog.at_level(logging.INFO, logger="noam_plugin"):
        if order == "scheduler first":
            scheduler = NoamLR(optimizer, **PEAK)
            optimizer.load_state_dict(checkpoint["optimizer"])  # sched.load_state_dict(...) forgotten
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler = NoamLR(optimizer, **PEAK)
        assert scheduler.updates == 5 and scheduler.get_last_lr() == [lr(6)] * 2  # right after the load
        assert rebuilt_lines(caplog) == []  # said before the first update, unless a scheduler state comes first
        assert train(model, optimizer, 3) == [[lr(k)] * 2 for k in (6, 7, 8)]
    assert scheduler.updates == 8
    (line,) = rebuilt_lines(caplog)
    assert "count 5 rebuilt from the optimizer state (AdamW's per-parameter step) (all 2 parameters at step 5)" in line


def test_a_scheduler_state_loaded_after_the_optimizer_decides_and_nothing_is_said(saved, caplog):
    path, state = saved
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **PEAK)
    with caplog.at_level(logging.INFO, logger="noam_plugin"):
        optimizer.load_state_dict(torch.load(path, weights_only=True)["optimizer"])
        scheduler.load_state_dict({**state, "updates": 5})
        assert train(model, optimizer, 2) == [[lr(6)] * 2, [lr(7)] * 2]
    assert rebuilt_lines(caplog) == []


def test_starting_afresh_on_purpose(saved):
    path, _ = saved
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **PEAK)
    fresh = scheduler.state_dict()
    optimizer.load_state_dict(torch.load(path, weights_only=True)["optimizer"])
    scheduler.load_state_dict(fresh)
    assert train(model, optimizer, 2) == [[lr(1)] * 2, [lr(2)] * 2]


def test_parameters_at_different_steps_are_refused_before_the_first_update(saved):
    path, _ = saved
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **PEAK)
    optimizer_state = torch.load(path, weights_only=True)["optimizer"]
    optimizer_state["state"][1]["step"] = torch.tensor(4.0)  # the bias' state from another run
    optimizer.load_state_dict(optimizer_state)
    assert scheduler.updates == 0
    with pytest.raises(CountMismatchError, match=r"no scheduler state in this resume .* 2 parameters at steps 4, 5"):
        train(model, optimizer, 1)
    assert model.weight.grad is not None  # the update was not applied (refused in the step pre-hook)


def test_an_optimizer_state_that_proves_no_count_is_refused(tmp_path):
    model, optimizer = parts(torch.optim.SGD, lr=0.1, momentum=0.9)
    first = NoamLR(optimizer, **PEAK)
    train(model, optimizer, 5)
    saved = optimizer.state_dict()
    model, optimizer = parts(torch.optim.SGD, lr=0.1, momentum=0.9)
    scheduler = NoamLR(optimizer, **PEAK)
    optimizer.load_state_dict(saved)
    assert first.updates == 5 and scheduler.updates == 0
    with pytest.raises(NoSchedulerStateError, match=r"nothing proves how many updates were applied .* SGD"):
        train(model, optimizer, 1)


def test_inspect_shows_the_same_decision(saved, capsys, tmp_path):
    path, _ = saved
    assert main(["inspect", str(path)]) == 1  # not a NoamLR state: exit 1, as for any foreign checkpoint
    out = capsys.readouterr().out
    assert "NoamLR adopts 5 when it loads this checkpoint (count 5 rebuilt from the optimizer state in " in out
    assert "(all 2 parameters at step 5)" in out
    sgd = tmp_path / "sgd.pt"
    torch.save({"model": {}, "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(1)}}, "param_groups": []}}, sgd)
    assert main(["inspect", str(sgd)]) == 1
    assert "nothing proves how many updates were applied" in capsys.readouterr().out


def test_accelerate_with_the_scheduler_left_out_of_prepare(tmp_path, caplog):
    accelerate = pytest.importorskip("accelerate")

    def run(updates, load=None):
        accelerator = accelerate.Accelerator(cpu=True)
        model, optimizer = parts()
        model, optimizer = accelerator.prepare(model, optimizer)
        scheduler = NoamLR(optimizer, **PEAK)  # counting works without prepare(): users leave it out
        if load is not None:
            accelerator.load_state(load)
        used = train(model, optimizer, updates)
        return accelerator, scheduler, used

    accelerator, _, used = run(5)
    assert used == [[lr(k)] * 2 for k in range(1, 6)]
    accelerator.save_state(tmp_path / "state")
    assert not list((tmp_path / "state").glob("scheduler*.bin"))  # Accelerate saved only what it prepared
    with caplog.at_level(logging.INFO, logger="noam_plugin"):
        _, scheduler, used = run(3, load=tmp_path / "state")
    assert used == [[lr(k)] * 2 for k in (6, 7, 8)] and scheduler.updates == 8
    assert len(rebuilt_lines(caplog)) == 1


def test_the_optimizers_load_never_fails_for_the_scheduler(saved):
    """Counted in tokens, the count of an optimizer state cannot be continued (tokens seen are unknown): the load
    itself goes through, a scheduler state loaded next decides, and without one the first update is refused."""
    path, _ = saved
    optimizer_state = torch.load(path, weights_only=True)["optimizer"]
    tokens = {**PEAK, "warmup_unit": "tokens"}
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **tokens)
    optimizer.load_state_dict(optimizer_state)  # no error here
    with pytest.raises(ValueError, match="holds no count of the tokens seen"):
        scheduler.add_tokens(8)
        train(model, optimizer, 1)
    model, optimizer = parts()
    scheduler = NoamLR(optimizer, **tokens)
    state = scheduler.state_dict()
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(state)  # decides: a fresh schedule, said by the user
    scheduler.add_tokens(8)
    train(model, optimizer, 1)
    assert scheduler.updates == 1 and scheduler.tokens == 8


def test_samples_seen_are_never_guessed_from_the_batch_now(saved):
    """Adam's step proves 5 updates, not the samples they saw (a batch that grew mid-run makes 5 x 8 wrong): one
    error at the first update, naming both ways out; nothing is trained at a guessed lr."""
    path, _ = saved
    model, optimizer = parts()
    samples = {"warmup_num_steps": 40, "warmup_max_lr": 0.01, "warmup_unit": "samples"}
    scheduler = NoamLR(optimizer, **samples, samples_per_update=8)
    optimizer.load_state_dict(torch.load(path, weights_only=True)["optimizer"])
    with pytest.raises(NoSchedulerStateError, match=r"5 applied updates are proved, but not the samples") as error:
        train(model, optimizer, 1)
    assert "load_state_dict" in str(error.value) and scheduler.updates == 0


def test_samples_seen_stated_by_the_user_continue_exactly(saved):
    path, _ = saved
    model, optimizer = parts()
    samples = {"warmup_num_steps": 40, "warmup_max_lr": 0.01, "warmup_unit": "samples"}
    scheduler = NoamLR(optimizer, **samples, samples_per_update=8)
    optimizer.load_state_dict(torch.load(path, weights_only=True)["optimizer"])
    scheduler.load_state_dict({**scheduler.state_dict(), "updates": 5, "samples": 36})
    used = train(model, optimizer, 1)
    assert used == [[reference_lr(44, warmup_num_steps=40, warmup_max_lr=0.01)] * 2] and scheduler.samples == 44


def test_a_step_with_zero_gradients_is_no_update_to_rebuild():
    """DeepSpeed's fp16/bf16 wrappers step the torch optimizer once with zero gradients at init to create its state
    (initialize_optimizer_states): Adam's step is then 1 with all-zero moments. A NoamLR built on that optimizer
    starts at update 1, not 2."""
    model, optimizer = parts(lr=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # what initialize_optimizer_states does
    optimizer.zero_grad()
    scheduler = NoamLR(optimizer, **PEAK)
    assert scheduler.updates == 0
    used = train(model, optimizer, 2)
    assert used == [[reference_lr(k, **PEAK)] * 2 for k in (1, 2)]
