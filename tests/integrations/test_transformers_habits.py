"""The HF Trainer route `Trainer(optimizers=(optimizer, NoamLR(optimizer, ...)))` with what users write
(issue 35): groups built with lrs of their own, and a warmup in samples whose last update of an epoch holds
fewer. One CPU process, a real Trainer; every update's lr is read by a step pre-hook on the real torch
optimizer and compared with the contract's formula written again (reference.py)."""

from __future__ import annotations

import pytest
import torch
from needs import need
from reference import reference_lr

need("transformers")


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.head(self.backbone(x)), labels)}


def trainer_for(tmp_path, model, optimizer, scheduler, samples, **args):
    from transformers import Trainer, TrainingArguments

    data = [{"x": torch.randn(4), "labels": torch.randn(1)} for _ in range(samples)]
    defaults = {"report_to": [], "use_cpu": True, "disable_tqdm": True, "save_strategy": "no"}
    arguments = TrainingArguments(output_dir=str(tmp_path), **{**defaults, **args})
    return Trainer(model=model, args=arguments, train_dataset=data, optimizers=(optimizer, scheduler))


def test_groups_with_their_own_lrs_are_refused_and_the_lines_given_keep_the_ratio_under_the_trainer(tmp_path):
    from noam_plugin import NoamLR
    from noam_plugin.errors import GroupLrError

    torch.manual_seed(0)
    model = TwoLayers()

    def optimizer():
        groups = [{"params": model.backbone.parameters(), "lr": 1e-5}, {"params": model.head.parameters(), "lr": 1e-3}]
        return torch.optim.AdamW(groups)

    with pytest.raises(GroupLrError, match=r"groups: \[\{index: 0, lr_scale: 0.01\}\]"):
        NoamLR(optimizer(), warmup_max_lr=1e-3, warmup_num_steps=4)
    opt = optimizer()
    noam = NoamLR(opt, warmup_max_lr=1e-3, warmup_num_steps=4, groups=[{"index": 0, "lr_scale": 0.01}])
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append([g["lr"] for g in o.param_groups]))
    trainer_for(tmp_path, model, opt, noam, samples=16, per_device_train_batch_size=2, max_steps=6).train()
    peak = [reference_lr(k, 4, warmup_max_lr=1e-3) for k in range(1, 7)]
    assert seen == [pytest.approx([lr * 0.01, lr], rel=1e-12) for lr in peak]  # the 1:100 survives


def test_samples_warmup_counts_the_short_last_update_of_each_epoch(tmp_path):
    """56 samples, batch 8, accumulation 2, dataloader_drop_last=False: updates of 16, 16, 16 and 8 samples."""
    from noam_plugin import NoamLR

    torch.manual_seed(0)
    model = TwoLayers()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    noam = NoamLR(opt, warmup_num_steps=64, warmup_max_lr=0.01, warmup_unit="samples")
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    trainer = trainer_for(
        tmp_path,
        model,
        opt,
        noam,
        samples=56,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
    )
    trainer.train()
    counts = [16, 32, 48, 56, 72, 88, 104, 112]
    assert seen == [pytest.approx(reference_lr(n, 64, warmup_max_lr=0.01), rel=1e-12) for n in counts]
    assert noam.samples == 112 and noam.updates == trainer.state.global_step == 8


def test_hf_inverse_sqrt_is_noam_one_update_behind_as_docs_trainer_says():
    """docs/trainer.md's one line, measured by the code that draws its picture (real optimizers, a pre-hook)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "img" / "make_figures.py"
    spec = importlib.util.spec_from_file_location("make_figures", path)
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    params = figures.FIGURES["hf_inverse_sqrt.png"]["params"]
    W, lr = params["warmup_num_steps"], params["warmup_max_lr"]
    hf, noam = figures.hf_inverse_sqrt_lrs(params, 30), figures.noam_lrs(params, 30)
    assert hf[0] == 0.0 and hf[1:] == pytest.approx([reference_lr(k - 1, W, warmup_max_lr=lr) for k in range(2, 31)])
    assert noam == pytest.approx([reference_lr(k, W, warmup_max_lr=lr) for k in range(1, 31)], rel=1e-12)


def test_samples_warmup_over_an_iterable_dataset_counts_what_each_update_holds(tmp_path):
    """An IterableDataset of 20 samples, batch 8, accumulation 2, over several epochs: the Trainer takes what is
    left at an epoch's end. The samples are counted independently, by the model's forward: each update runs at
    the curve at the samples the model has seen up to and including its own."""
    from transformers import Trainer, TrainingArguments

    from noam_plugin import NoamLR

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for _ in range(20):
                yield {"x": torch.randn(4), "labels": torch.randn(1)}

    torch.manual_seed(0)
    model = TwoLayers()
    fed = [0]
    model.backbone.register_forward_hook(lambda m, inputs, out: fed.__setitem__(0, fed[0] + inputs[0].shape[0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    noam = NoamLR(opt, warmup_num_steps=64, warmup_max_lr=0.01, warmup_unit="samples")
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append((fed[0], o.param_groups[0]["lr"])))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=6,
    )
    Trainer(model=model, args=args, train_dataset=Stream(), optimizers=(opt, noam)).train()
    assert len(seen) == 6 and len({b - a for (a, _), (b, _) in zip([(0, 0)] + seen, seen)}) > 1  # uneven updates
    assert [lr for _, lr in seen] == [
        pytest.approx(reference_lr(n, 64, warmup_max_lr=0.01), rel=1e-12) for n, _ in seen
    ]
    assert noam.samples == fed[0]
