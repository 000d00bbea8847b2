"""NoamLR built by Hydra (docs/CONTRACT.md section 3): `_target_: noam_plugin.NoamLR` with `_partial_: true`."""

from __future__ import annotations

import pytest
import torch
from needs import need  # a framework that does not import is a failure, not a skip

need("hydra")

from hydra.utils import instantiate  # noqa: E402
from launches import REPO  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

pytestmark = pytest.mark.window  # in-process and quick: all of it on both ends of the window

EXAMPLE = REPO / "noam_plugin" / "examples" / "hydra.yaml"  # what `noam-plugin init hydra` writes


def train(scheduler_factory, updates: int) -> list[float]:
    """The lr each of `updates` optimizer updates ran at (read from the param groups at step time)."""
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=123.0)
    scheduler = scheduler_factory(optimizer)
    used = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    for _ in range(updates):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return used


def test_partial_target_from_yaml_builds_a_working_noamlr():
    cfg = OmegaConf.create("""
scheduler:
  _target_: noam_plugin.NoamLR
  _partial_: true
  warmup_num_steps: 3
  warmup_max_lr: 2e-3
""")
    factory = instantiate(cfg.scheduler)
    assert train(factory, 6) == pytest.approx([reference_lr(k, 3, warmup_max_lr=2e-3) for k in range(1, 7)], rel=1e-12)


def test_shipped_example_is_a_d_model_schedule():
    factory = instantiate(OmegaConf.load(EXAMPLE).scheduler)
    assert train(factory, 3) == pytest.approx([reference_lr(k, 4000, d_model=512) for k in range(1, 4)], rel=1e-12)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"warmup_num_steps": 0, "d_model": 512}, "warmup_num_steps: expected an int >= 1, found int 0"),
        (
            {"warmup_num_steps": 10, "d_model": 512, "warmup_max_lr": 0.1},
            "d_model / warmup_max_lr: expected exactly one",
        ),
        ({"warmup_num_steps": "10", "d_model": 512}, "warmup_num_steps: expected an int >= 1, found str '10'"),
    ],
)
def test_bad_params_give_one_clear_config_error(bad, message):
    from noam_plugin import ConfigError

    factory = instantiate({"_target_": "noam_plugin.NoamLR", "_partial_": True, **bad})
    with pytest.raises(ConfigError, match=message):
        factory(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))


def test_misspelled_key_is_named():
    factory = instantiate({"_target_": "noam_plugin.NoamLR", "_partial_": True, "warmup_steps": 10, "d_model": 512})
    with pytest.raises(TypeError, match="unexpected keyword argument 'warmup_steps'"):
        factory(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
