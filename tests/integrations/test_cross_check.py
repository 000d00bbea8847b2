"""The count cross-check (docs/CONTRACT.md section 2; noam_plugin/integrations/cross_check.py).

DeepSpeed: real engines in 2 real processes (the `deepspeed` launcher, CPU, gloo) where NoamLR's count is
made to disagree with `global_steps - skipped_steps` (a NoamLR state of another run, loaded by hand or
found in a checkpoint): each must raise CountMismatchError naming both counts; normal runs, and a run
that starts a fresh schedule on a loaded engine (the offset kept in its checkpoints), must not. The HF
Trainer (no DeepSpeed) and Lightning (NoamCountCheck) in process, on one CPU process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from needs import need  # a framework that does not import is a failure, not a skip
from reference import reference_lr  # docs/CONTRACT.md section 1, written again

from noam_plugin import CountMismatchError, NoamLR

PEAK = {"warmup_num_steps": 3, "warmup_max_lr": 0.01}


def lr(k):
    return reference_lr(k, **PEAK)


def other_runs_state(updates: int) -> dict:
    """The state of a NoamLR (same parameters) that applied `updates` updates in another run."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    noam = NoamLR(optimizer, **PEAK)
    for _ in range(updates):
        optimizer.step()
    return noam.state_dict()


def test_check_counts_names_both_counts_and_the_route():
    from noam_plugin.integrations.cross_check import check_counts

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    noam = NoamLR(optimizer, **PEAK)
    noam.load_state_dict(other_runs_state(5))
    check_counts(noam, 5, framework="X", counter="x.steps", route="here")
    check_counts(noam, 6, framework="X", counter="x.steps", route="here", at_most=True)
    with pytest.raises(CountMismatchError) as error:
        check_counts(noam, 8, framework="X", counter="x.steps", route="the save at 8")
    message = str(error.value)
    assert "NoamLR counted 5 applied optimizer updates, X counted 8 (x.steps), compared at the save at 8" in message
    with pytest.raises(CountMismatchError, match=r"counted 5 \(\+ offset 2 from before NoamLR took over = 7\)"):
        check_counts(noam, 8, framework="X", counter="x.steps", route="r", offset=2)
    assert isinstance(error.value, RuntimeError)


# ------------------------------------------------------------------ HF Trainer (no DeepSpeed), in process


def _trainer(tmp_path, noam_state=None, **extra):
    need("transformers")
    from tiny import tiny_trainer

    return tiny_trainer(tmp_path, PEAK, noam_state, **{"max_steps": 4, **extra})


@pytest.mark.window  # the Trainer without DeepSpeed on both ends of the window
def test_trainer_normal_run_with_saves_passes(tmp_path):
    trainer = _trainer(tmp_path, save_strategy="steps", save_steps=2)
    trainer.train()
    assert trainer.state.global_step == trainer.lr_scheduler.updates == 4
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "checkpoint-4").is_dir()


def test_trainer_with_another_runs_noam_state_raises_at_train_begin(tmp_path):
    trainer = _trainer(tmp_path, noam_state=other_runs_state(5), save_strategy="no")
    with pytest.raises(CountMismatchError) as error:
        trainer.train()
    message = str(error.value)
    assert "NoamLR counted 5 applied" in message and "the HF Trainer counted 0 (state.global_step)" in message
    assert "train begin" in message


def _resumed_lrs(tmp_path, checkpoint, optimizer_class=None, max_steps=8):
    """A fresh Trainer resumed from `checkpoint` for max_steps in all: the lr of each update (a step pre-hook)."""
    trainer = _trainer(tmp_path / "again", optimizer_class=optimizer_class, max_steps=max_steps, save_strategy="no")
    used = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer, used


@pytest.mark.parametrize("optimizer_class", [None, torch.optim.AdamW], ids=["sgd", "adamw"])
def test_trainer_checkpoint_without_scheduler_pt_rebuilds_the_count(tmp_path, caplog, optimizer_class):
    """docs/CONTRACT.md section 4, no scheduler state: the Trainer's global_step proves k = 5."""
    first = _trainer(tmp_path, optimizer_class=optimizer_class, max_steps=5, save_strategy="steps", save_steps=5)
    first.train()
    (tmp_path / "checkpoint-5" / "scheduler.pt").unlink()
    with caplog.at_level("INFO", logger="noam_plugin"):
        trainer, used = _resumed_lrs(tmp_path, tmp_path / "checkpoint-5", optimizer_class)
    assert used == pytest.approx([lr(k) for k in (6, 7, 8)], rel=1e-12)
    assert trainer.lr_scheduler.updates == trainer.state.global_step == 8
    shown = "\n".join(r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage())
    assert "count 5 rebuilt from the Trainer's global_step (5)" in shown, caplog.text  # the Trainer loads
    # optimizer.pt only together with scheduler.pt: the optimizer's state is not restored, so it proves nothing


def test_trainer_adopted_foreign_state_passes_the_count_check(tmp_path):
    """issue 36.2: a LambdaLR state at 2 in checkpoint-5's scheduler.pt is refused, as a NoamLR state at 2 is."""
    first = _trainer(tmp_path, max_steps=5, save_strategy="steps", save_steps=5)
    first.train()
    torch.save({"last_epoch": 2, "base_lrs": [0.1, 0.1], "_step_count": 3}, tmp_path / "checkpoint-5" / "scheduler.pt")
    with pytest.raises(CountMismatchError, match=r"NoamLR counted 2 .* the HF Trainer counted 5"):
        _resumed_lrs(tmp_path, tmp_path / "checkpoint-5")


# ------------------------------------------------------------------ Lightning (opt-in NoamCountCheck), in process


def _fit(tmp_path, noam_state=None):
    pl = need("lightning.pytorch")
    from noam_plugin.integrations.lightning import NoamCountCheck

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.lin(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            noam = NoamLR(optimizer, **PEAK)
            if noam_state is not None:
                noam.load_state_dict(noam_state)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": noam, "interval": "step"}}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        callbacks=[NoamCountCheck(), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


def test_lightning_normal_run_with_checkpoints_passes(tmp_path):
    trainer = _fit(tmp_path)
    assert trainer.global_step == trainer.lr_scheduler_configs[0].scheduler.updates == 4


def test_lightning_with_another_runs_noam_state_raises(tmp_path):
    with pytest.raises(CountMismatchError, match=r"NoamLR counted 5 .* Lightning counted 0 \(trainer.global_step\)"):
        _fit(tmp_path, noam_state=other_runs_state(5))


def test_lightning_resume_without_a_scheduler_state_rebuilds_the_count(tmp_path, caplog):
    """A NoamLR Lightning never sees (built in configure_optimizers, not returned: counting works without Lightning
    stepping it), so the checkpoint holds no scheduler state: global_step and AdamW's step prove k = 4."""
    pl = need("lightning.pytorch")
    from noam_plugin.integrations.lightning import NoamCountCheck

    used: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.lin(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters())
            self.noam = NoamLR(optimizer, **PEAK)
            optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
            return optimizer

    def fit(steps, ckpt_path=None):
        torch.manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps,
            callbacks=[NoamCountCheck(), checkpoint],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        module = Module()
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2), ckpt_path=ckpt_path)
        return module

    fit(4)
    (saved,) = tmp_path.glob("*.ckpt")
    assert not torch.load(saved, weights_only=False)["lr_schedulers"]  # Lightning saved no scheduler state
    used.clear()
    with caplog.at_level("INFO", logger="noam_plugin"):
        module = fit(6, ckpt_path=saved)
    assert used == pytest.approx([lr(5), lr(6)], rel=1e-12) and module.noam.updates == 6
    lines = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(lines) == 1 and "count 4 rebuilt from Lightning's trainer.global_step (4)" in lines[0], lines
    assert "the optimizer state (AdamW's per-parameter step) agrees" in lines[0]


# ------------------------------------------------------------------ DeepSpeed, 2 real processes


def test_deepspeed_counts_made_to_disagree_raise_and_normal_runs_do_not(tmp_path):
    need("deepspeed")
    from test_deepspeed import single_node

    ckpt = {name: str(tmp_path / name) for name in ("a", "b", "c", "d")}
    state_a = str(tmp_path / "state_a.pt")

    def crafted(name, **entries):  # a copy of checkpoint a (3 updates) with model-states entries replaced
        ckpt[name] = str(tmp_path / name)
        return {"name": f"craft_{name}", "craft": {"from": ckpt["a"], "to": ckpt[name], "set": entries}}

    warmup_10, lambda_1 = {"last_batch_iteration": 9}, {"last_epoch": 1, "base_lrs": [0.01, 0.01], "_step_count": 2}
    jobs = [
        {"name": "first", "updates": 3, "save": ckpt["a"], "keep_state": state_a},
        {"name": "other_state_at_save", "updates": 2, "state_from": state_a, "save": ckpt["b"]},
        {"name": "other_state_at_first_update", "state_from": state_a, "state_first": True, "updates": 2},
        {"name": "scheduler_dropped", "load": ckpt["a"], "load_scheduler": False, "updates": 2, "save": ckpt["c"]},
        {"name": "resume_after_drop", "load": ckpt["c"], "updates": 1, "save": ckpt["d"]},
        {"name": "resume", "load": ckpt["a"], "updates": 1},
        {"name": "tamper", "tamper": ckpt["a"], "count": 7},
        {"name": "tampered_checkpoint", "load": ckpt["a"]},
        crafted("warmup", lr_scheduler=warmup_10),
        {"name": "warmup_ahead", "load": ckpt["warmup"], "updates": 1},
        crafted("lambda", lr_scheduler=lambda_1),
        {"name": "lambda_behind", "load": ckpt["lambda"], "updates": 1},
        crafted("warmup_agrees", lr_scheduler={"last_batch_iteration": 2}),
        {"name": "warmup_adopted", "load": ckpt["warmup_agrees"], "updates": 1},
        crafted("nostate", lr_scheduler=None),
        {"name": "no_state", "load": ckpt["nostate"], "updates": 2},
        crafted("disagree", lr_scheduler=None, global_steps=4),
        {"name": "optimizer_disagrees", "load": ckpt["disagree"]},
        crafted("negative", lr_scheduler=None, global_steps=-3),
        {"name": "negative_steps", "load": ckpt["negative"]},
        crafted("offset", noam_plugin_count_offset="5"),
        {"name": "offset_str", "load": ckpt["offset"]},
        crafted("badstate", lr_scheduler={"type": "NoamLR", "updates": -1, **PEAK}),
        {"name": "bad_state", "load": ckpt["badstate"]},
    ]
    launch, out = single_node("cross", "ds_cross_check.py", {"params": PEAK, "jobs": jobs}, tmp_path)
    launch.wait()

    def job(name):
        found = [json.loads((out / f"{name}.rank{rank}.json").read_text()) for rank in (0, 1)]
        assert found[0].keys() == found[1].keys(), name
        return found

    for name, used, updates in [("first", [1, 2, 3], 3), ("resume", [4], 4), ("warmup_adopted", [4], 4)]:
        for result in job(name):
            assert "error" not in result, result.get("trace")
            assert result["used"] == pytest.approx([lr(k) for k in used], rel=1e-12) and result["updates"] == updates
    for result in job("other_state_at_save"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 3 applied" in result["error"] and "DeepSpeed counted 2" in result["error"]
        assert "global_steps 2 - skipped_steps 0" in result["error"] and "save_checkpoint(" in result["error"]
    assert not list(Path(ckpt["b"]).glob("*/mp_rank_*")), "a mismatching state was saved"
    for result in job("other_state_at_first_update"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 4 applied" in result["error"] and "DeepSpeed counted 1" in result["error"]
        assert "engine update 1" in result["error"]
    # load_lr_scheduler_states=False (docs/CONTRACT.md section 4, no scheduler state): the count is rebuilt from
    # global_steps - skipped_steps and the optimizer's step, never restarted at 1
    for result in job("scheduler_dropped"):
        assert "error" not in result, result.get("trace")
        assert result["after_load"] == {"updates": 3, "global_steps": 3}
        assert result["used"] == pytest.approx([lr(4), lr(5)], rel=1e-12)
        assert (result["updates"], result["engine_count"]) == (5, 5)
    for result in job("resume_after_drop"):
        assert "error" not in result, result.get("trace")
        assert result["after_load"] == {"updates": 5, "global_steps": 5}
        assert result["used"] == pytest.approx([lr(6)], rel=1e-12)
    for result in job("no_state"):  # the checkpoint holds no scheduler state at all
        assert "error" not in result, result.get("trace")
        assert result["after_load"] == {"updates": 3, "global_steps": 3}
        assert result["used"] == pytest.approx([lr(4), lr(5)], rel=1e-12)
    rebuilt = "count 3 rebuilt from DeepSpeed's global_steps - skipped_steps (global_steps 3 - skipped_steps 0)"
    assert rebuilt in launch.output() and "the optimizer state (AdamW's per-parameter step) agrees" in launch.output()
    for result in job("optimizer_disagrees"):  # global_steps says 4, the optimizer's step 3
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "global_steps 4 - skipped_steps 0" in result["error"] and "at step 3" in result["error"]
    for result in job("tampered_checkpoint"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 7 applied" in result["error"] and "DeepSpeed counted 3" in result["error"]
        assert "load_checkpoint(" in result["error"]
    # an adopted foreign count passes the same check (issue 36.2): WarmupLR at 10, LambdaLR at 1, the engine at 3
    for name, count in (("warmup_ahead", 10), ("lambda_behind", 1)):
        for result in job(name):
            assert result["error_type"] == "CountMismatchError", (name, result.get("trace"))
            assert f"NoamLR counted {count} applied" in result["error"] and "DeepSpeed counted 3" in result["error"]
            assert "adopting a " in result["error"], result["error"]
            assert result["used"] == [], name  # refused before any update
    # malformed entries name the file and the key (issue 36.3)
    model_states = "/mp_rank_00_model_states.pt"
    for name, key in (
        ("negative_steps", "global_steps"),
        ("offset_str", "noam_plugin_count_offset"),
        ("bad_state", "updates"),
    ):
        for result in job(name):
            assert result["error_type"] == "StateError", (name, result.get("trace"))
            assert model_states in result["error"] and f"{key}: expected" in result["error"], (name, result["error"])
    assert "str '5'" in job("offset_str")[0]["error"] and "int -3" in job("negative_steps")[0]["error"]
