"""A one-process HF Trainer on a tiny regression model, for in-process checks (test_transformers, test_cross_check)."""

from __future__ import annotations

import torch

from noam_plugin import NoamLR


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.lin(x), labels)}


def tiny_trainer(output_dir, params: dict, noam_state=None, optimizer_class=None, **training_args):
    """Trainer(optimizers=(SGD, NoamLR(**params))) on CPU; `noam_state` is loaded into the NoamLR first;
    `optimizer_class` replaces SGD (lr 0.1)."""
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    data = [{"x": torch.randn(4), "labels": torch.randn(1)} for _ in range(16)]
    model = Tiny()
    optimizer = (optimizer_class or torch.optim.SGD)(model.parameters(), lr=0.1)
    noam = NoamLR(optimizer, **params)
    if noam_state is not None:
        noam.load_state_dict(noam_state)
    defaults = {"per_device_train_batch_size": 2, "report_to": [], "use_cpu": True, "disable_tqdm": True}
    args = TrainingArguments(output_dir=str(output_dir), **{**defaults, **training_args})
    return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, noam))
