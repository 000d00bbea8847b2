"""What users write under Accelerate that a warmup in samples must count right (issue 35 item 3): the last
update of an epoch with drop_last=False holds fewer samples. In one process with a real Accelerator; every
update's lr is read by a step pre-hook on the real torch optimizer and compared with the contract's formula
at the samples really seen, written again here (reference.py)."""

from __future__ import annotations

import pytest
import torch
from needs import need
from reference import reference_lr

need("accelerate")

W, PEAK = 64, 0.01  # the warmup in samples


def train(samples, batch_size, accumulation, epochs=2, drop_last=False):
    from accelerate import Accelerator

    from noam_plugin import NoamLR

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = NoamLR(optimizer, warmup_num_steps=W, warmup_max_lr=PEAK, warmup_unit="samples")
    data = torch.utils.data.TensorDataset(torch.randn(samples, 4))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, drop_last=drop_last)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    seen = []
    optimizer.optimizer.register_step_pre_hook(lambda opt, a, k: seen.append(opt.param_groups[0]["lr"]))
    for _ in range(epochs):
        for (x,) in loader:
            with accelerator.accumulate(model):
                accelerator.backward(model(x).pow(2).sum())
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    return seen, scheduler.scheduler


@pytest.mark.parametrize(
    ("samples", "per_epoch"),
    [(56, [16, 16, 16, 8]), (60, [16, 16, 16, 12]), (64, [16, 16, 16, 16])],
    ids=["one-micro-batch-short", "a-short-batch", "even"],
)
def test_the_last_update_of_an_epoch_counts_the_samples_it_holds(samples, per_epoch):
    """DataLoader(batch 8, drop_last=False), accumulation 2: 56 samples make updates of 16, 16, 16 and 8."""
    seen, noam = train(samples, batch_size=8, accumulation=2)
    counts = [sum((per_epoch * 2)[: i + 1]) for i in range(2 * len(per_epoch))]
    assert seen == [pytest.approx(reference_lr(n, W, warmup_max_lr=PEAK), rel=1e-12) for n in counts]
    assert noam.samples == 2 * samples and noam.state_dict()["samples"] == 2 * samples
    assert noam.updates == 2 * len(per_epoch)


def test_drop_last_keeps_every_update_full():
    seen, noam = train(60, batch_size=8, accumulation=2, drop_last=True)  # 7 full batches: 16, 16, 16, 8
    counts = [16, 32, 48, 56, 72, 88, 104, 112]
    assert seen == [pytest.approx(reference_lr(n, W, warmup_max_lr=PEAK), rel=1e-12) for n in counts]
    assert noam.samples == 112
