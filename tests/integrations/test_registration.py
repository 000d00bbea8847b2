"""Registration with the real DeepSpeed and Accelerate: whole or not at all, explicit, and an off switch.

No version is written here: the tests run on both ends of the window (scripts/run-tests-low.sh)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest
from needs import need  # a framework that does not import is a failure, not a skip

need("deepspeed")
need("accelerate")

from noam_plugin.frameworks import FRAMEWORKS  # noqa: E402

pytestmark = pytest.mark.window


def marked(stdout: str) -> list[str]:
    """The lines the probe printed itself (DeepSpeed logs to stdout too)."""
    return [line[2:] for line in stdout.splitlines() if line.startswith("@ ")]


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "NOAM_PLUGIN_NO_AUTOREGISTER"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, **env},
    )


def test_off_switch_imports_nothing_and_register_turns_it_on():
    run = python(
        """
        import sys
        print("@", sorted(m for m in sys.modules if m.startswith("noam_plugin")))
        import deepspeed.runtime.engine as engine
        from deepspeed.runtime import lr_schedules
        wrapped = lambda: hasattr(engine.DeepSpeedEngine._take_model_step, "__noam_plugin__")
        print("@", "NoamLR" in lr_schedules.VALID_LR_SCHEDULES, wrapped())
        import noam_plugin
        noam_plugin.register()  # deepspeed is already imported: patched now
        print("@", "NoamLR" in lr_schedules.VALID_LR_SCHEDULES, wrapped())
        import accelerate.accelerator  # imported after register(): patched on import
        print("@", hasattr(accelerate.accelerator.Accelerator.prepare, "__noam_plugin__"))
    """,
        NOAM_PLUGIN_NO_AUTOREGISTER="1",
    )
    assert run.returncode == 0, run.stderr
    assert marked(run.stdout) == ["[]", "False False", "True True", "True"]


def test_a_missing_target_wraps_nothing_and_noamlr_from_config_says_why():
    """A DeepSpeed without one of the wrapped methods (as a future release might be) gets no wrapper at all."""
    run = python(
        """
        import torch, deepspeed
        import deepspeed.runtime.engine as engine
        del engine.DeepSpeedEngine._take_model_step  # what a DeepSpeed that renamed it would look like
        import noam_plugin
        noam_plugin.register()
        print("@", hasattr(engine.DeepSpeedEngine._configure_lr_scheduler, "__noam_plugin__"),
              hasattr(engine.DeepSpeedEngine.save_checkpoint, "__noam_plugin__"))
        model = torch.nn.Linear(4, 4)
        config = {"train_micro_batch_size_per_gpu": 1,
                  "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "torch_adam": True}},
                  "scheduler": {"type": "NoamLR", "params": {"d_model": 8, "warmup_num_steps": 3}}}
        try:
            deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        except Exception as error:
            print("@", type(error).__name__, error)
    """,
        NOAM_PLUGIN_NO_AUTOREGISTER="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29533",
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = marked(run.stdout)
    assert lines[0] == "False False", run.stdout  # none of the other wrappers went in
    installed = importlib.metadata.version("deepspeed")
    assert lines[-1].startswith(
        f"RegistrationError noam-plugin refuses deepspeed {installed} (DeepSpeedEngine._take_model_step not found"
    ), lines[-1]
    deepspeed = FRAMEWORKS["deepspeed"]
    assert f"Tested: deepspeed {deepspeed.window()}. Choices: a release inside that window" in lines[-1]
    assert f'pip install "deepspeed{deepspeed.specifier()}"' in lines[-1]
    assert "noam-plugin refuses deepspeed" in run.stderr  # the warning at registration


def test_deepspeed_scheduler_contract_tensor_lr_and_step_arguments():
    """What DeepSpeed's own suite (tests/unit/runtime/test_lr_schedulers.py) asks of every scheduler, plus
    engine.step(lr_kwargs=...): the engine calls lr_scheduler.step(**lr_kwargs), then step(train_batch_size())
    if that raised. Neither may crash nor move the count away from the applied updates."""
    run = python(
        """
        import warnings
        import torch, deepspeed
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        lr = torch.tensor(0.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 0},
                  "scheduler": {"type": "NoamLR", "params": {"d_model": 16, "warmup_num_steps": 3}}}
        engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        group = engine.optimizer.param_groups[0]
        f32 = lambda values: [torch.tensor(float(v)).item() for v in values]  # a tensor lr holds float32
        groups = engine.optimizer.param_groups
        print("@", type(scheduler).__name__, f32(scheduler.get_lr()) == f32(g["lr"] for g in groups))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(1, 5):
                loss = engine(torch.randn(2, 4)).pow(2).sum()
                engine.backward(loss)
                engine.step(lr_kwargs={"last_batch_iteration": 100 * k})
                print("@", k, scheduler.last_epoch, group["lr"] is lr, tuple(lr.shape), lr.dtype, repr(lr.item()),
                      f32(scheduler.get_lr()) == f32(engine.get_lr()))
        print("@", sum("ignored" in str(w.message) for w in caught))
    """,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29534",
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = marked(run.stdout)
    assert lines[0] == "NoamLR True"
    for k, line in enumerate(lines[1:5], start=1):
        want = torch_float32(16**-0.5 * min((k + 1) ** -0.5, (k + 1) * 3**-1.5))
        assert line == f"{k} {k} True () torch.float32 {want!r} True", line
    assert lines[5] == "1"  # one warning, however many calls


def torch_float32(x: float) -> float:
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]
