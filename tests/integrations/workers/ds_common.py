"""Shared by the ds_* workers: a tiny model, DeepSpeed configs, and a recorded training loop.

Workers never import noam_plugin: NoamLR must come from the DeepSpeed config
through the plugin's automatic registration. Each rank writes what it saw to
JSON; the test compares it with the formula.
"""

import json
import os
import sys

# Checked before anything heavy is imported: the .pth hook must not have loaded these.
PRELOADED = sorted(m for m in ("torch", "deepspeed", "noam_plugin.scheduler") if m in sys.modules)

import deepspeed  # noqa: E402
import torch  # noqa: E402
from deepspeed.runtime import lr_schedules  # noqa: E402, F401 - the workers read VALID_LR_SCHEDULES through it

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))


def unwrap(optimizer):
    """The torch optimizer inside DeepSpeed's wrappers (written here again, not taken from the plugin)."""
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


# "named": three param groups with a "name" key each, as per-group schedules select them (docs/groups.md)
GROUP_NAMES = ("embeddings", "norms", "head")


def param_groups(model, groups):
    """One group, or decay (weights) / no-decay (biases) groups as in transformer recipes, or three named ones."""
    if groups == 1:
        return list(model.parameters())
    if groups == "named":
        first, second = model[0], model[2]
        params = ([first.weight], [first.bias], [second.weight, second.bias])
        return [{"params": p, "name": n, "weight_decay": 0.01 * i} for i, (n, p) in enumerate(zip(GROUP_NAMES, params))]
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]


def ds_config(case):
    """A DeepSpeed config dict for one case (keys: stage, dtype, ga, offload, scheduler, ...)."""
    offload = case.get("offload", False)
    zero = {"stage": case["stage"]}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    if case["stage"] == 3:
        zero["stage3_param_persistence_threshold"] = 0
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": case.get("ga", 1),
        # torch's AdamW without offload (no op to build); DeepSpeedCPUAdam with offload
        "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "weight_decay": 0.01, "torch_adam": not offload}},
        "zero_optimization": zero,
        "bf16": {"enabled": case.get("dtype") == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if case.get("grad_accum_dtype"):
        config["data_types"] = {"grad_accum_dtype": case["grad_accum_dtype"]}
    if case.get("scheduler") is not None:
        config["scheduler"] = case["scheduler"]
    if case.get("load_universal"):
        config["checkpoint"] = {"load_universal": True}
    return config


def build(case, config=None, **kwargs):
    model = make_model()
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, case.get("groups", 1)),
        config=config if config is not None else ds_config(case),
        **kwargs,
    )
    return engine


def tokens_of(step, rank, micro):
    """Tokens a micro-batch reports: different on every rank, micro-batch and update (like real padding)."""
    return 5 + 3 * rank + 2 * micro + 7 * (step % 4)


class Recorder:
    """Runs updates on an engine and records what the contract talks about, per boundary."""

    def __init__(self, engine, case):
        self.engine = engine
        self.case = case
        self.scheduler = engine.lr_scheduler  # kept: Lightning takes it out of the engine to step it itself
        self.inner = unwrap(engine.optimizer)
        self.inner_lrs = []  # lr of every inner torch optimizer.step() call (ZeRO: one per group)
        self.inner_names = []  # and the "name" key of the groups it stepped
        self.inner.register_step_pre_hook(
            lambda opt, a, k: self.inner_lrs.append([float(g["lr"]) for g in opt.param_groups])
        )
        self.inner.register_step_pre_hook(
            lambda opt, a, k: self.inner_names.append([g.get("name") for g in opt.param_groups])
        )
        self.attempts = []
        self.dtype = torch.bfloat16 if case.get("dtype") == "bf16" else torch.float32

    def snapshot(self):
        engine, scheduler = self.engine, self.scheduler
        return {
            "global_steps": engine.global_steps,
            "skipped_steps": engine.skipped_steps,
            "last_epoch": getattr(scheduler, "last_epoch", None),
            "last_lr": [float(x) for x in scheduler.get_last_lr()] if scheduler is not None else None,
            "group_lrs": [float(g["lr"]) for g in self.inner.param_groups],
            "group_names": [g.get("name") for g in self.inner.param_groups],
            "engine_lrs": [float(x) for x in engine.get_lr()],
            "global_samples": engine.global_samples,
            "train_batch_size": engine.train_batch_size(),
            # NoamLR's data counters (None for other schedulers)
            "samples": getattr(scheduler, "samples", None),
            "tokens": getattr(scheduler, "tokens", None),
            "samples_per_update": getattr(scheduler, "samples_per_update", None),
        }

    def attempt(self, inject_inf=False):
        """One optimizer update attempt: `ga` micro-batches, then the boundary."""
        engine = self.engine
        n_calls = len(self.inner_lrs)
        used = [float(g["lr"]) for g in self.inner.param_groups]  # what this update will use
        generator = torch.Generator().manual_seed(1000 * engine.global_steps + RANK)
        reported = []
        for micro in range(self.case.get("ga", 1)):
            x = torch.randn(2, 8, generator=generator).to(self.dtype)
            if self.case.get("tokens"):  # a different count on each rank, micro-batch and update
                reported.append(tokens_of(engine.global_steps, RANK, micro))
                self.scheduler.add_tokens(reported[-1])
            loss = engine(x).float().pow(2).mean()
            if inject_inf and micro == 0:
                loss = loss * float("inf")
            engine.backward(loss)
            engine.step()
            if self.case.get("detach") and engine.is_gradient_accumulation_boundary():
                self.scheduler.step()  # what Lightning does with interval "step"
        record = {
            "lr_before": used,
            "inject_inf": inject_inf,
            "inner_calls": self.inner_lrs[n_calls:],
            "inner_names": self.inner_names[n_calls:],
            "tokens_reported": reported,
            **self.snapshot(),
        }
        self.attempts.append(record)
        return record

    def run(self, updates, inject_at=()):
        """Attempt until `updates` more updates were applied; attempt numbers in inject_at get inf gradients."""
        target = self.engine.global_steps - self.engine.skipped_steps + updates
        number = 0
        while self.engine.global_steps - self.engine.skipped_steps < target:
            number += 1
            self.attempt(inject_inf=number in inject_at)
            if number > updates + len(inject_at) + 2:
                raise RuntimeError(f"no progress: {self.attempts[-1]}")


def argv():
    """Positional arguments (the deepspeed launcher adds --local_rank=N)."""
    return [a for a in sys.argv[1:] if not a.startswith("--local_rank")]


def finish():
    """Leave without interpreter teardown, all results being on disk.

    With many engines (CPU offload among them) built in one process, DeepSpeed on CPU
    sometimes aborts during teardown ("terminate called without an active exception");
    gloo's own teardown (destroy_process_group) does too, now and then, so it is skipped.
    """
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def write(out_dir, name, data):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.rank{RANK}.json"), "w") as fd:
        json.dump(data, fd, indent=1)


def describe_scheduler(engine, scheduler=None):
    scheduler = scheduler if scheduler is not None else engine.lr_scheduler
    return {
        "type": type(scheduler).__name__,
        "module": type(scheduler).__module__,
        "wrapper": type(engine.optimizer).__name__,
        "inner": type(unwrap(engine.optimizer)).__name__,
    }
