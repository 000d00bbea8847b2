"""A Lightning run with NoamLR, started by test_lightning.py (CPU; 2 processes through Lightning's DDP launcher).

Routes (--route):
- module: `configure_optimizers` returns NoamLR with `interval` --interval (this route imports noam_plugin).
- cli (`pl_train.py fit --config CONFIG.yaml --model.out=OUT ...`): LightningCLI with a YAML holding
  `lr_scheduler: {class_path: noam_plugin.NoamLR, ...}`;
  LightningCLI steps it once per epoch. This script does not import noam_plugin.
- deepspeed: DeepSpeedStrategy whose DeepSpeed config declares NoamLR (needs CUDA: Lightning refuses
  DeepSpeedStrategy on CPU). No noam_plugin import either.

Each rank records, after every update, in OUT/rank{R}.json: the lrs the innermost torch optimizer
had while applying update k (a step pre-hook), and after it the groups' lr and the scheduler's
get_last_lr(); with --monitor, what a LearningRateMonitor logged at each step.
--hang-after K: once checkpoint step=K is on disk, write OUT/saved{R} and wait to be
SIGKILLed. --resume CKPT: fit(ckpt_path=CKPT).
"""

import argparse
import json
import os
import sys
import time

import lightning.pytorch as pl
import torch

MONITOR = {}  # step -> lrs a LearningRateMonitor logged at that step (--monitor), through RecordingLogger


class RecordingLogger(pl.loggers.Logger):
    """What a LearningRateMonitor sends to a logger: its lr metric and the step it logs it for."""

    name, version = "record", 0

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            if key.startswith("lr-") and "momentum" not in key and "weight_decay" not in key:
                MONITOR.setdefault(str(step), []).append(float(value))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


SAMPLES = 32  # 8 batches of 2 per rank and epoch with 2 processes: 4 updates per epoch with accumulation 2


def innermost(optimizer):
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(SAMPLES, 8, generator=g), torch.randn(SAMPLES, 1, generator=g)
        data = torch.utils.data.TensorDataset(x, y)
        return torch.utils.data.DataLoader(data, batch_size=2)


class Recorder(pl.LightningModule):
    """A small MLP that records the lr of every update it makes. The cli route's model as is."""

    def __init__(self, out: str = "", hang_after: int = -1):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        self.out, self.hang_after = out, hang_after
        self.data = {"used": {}, "after": {}, "last_lr": {}}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_start(self):
        self.inner = innermost(self.trainer.optimizers[0])
        self.inner.register_step_pre_hook(self._before_update)
        configs = self.trainer.lr_scheduler_configs
        self.data.update(
            start=self.trainer.global_step,
            world=self.trainer.world_size,
            scheduler=type(configs[0].scheduler).__name__ if configs else None,
            interval=configs[0].interval if configs else None,
        )
        self.recorded = self.trainer.global_step

    def _before_update(self, optimizer, args, kwargs):
        used = self.data["used"].setdefault(str(self.trainer.global_step + 1), [])
        used.extend(float(g["lr"]) for g in optimizer.param_groups)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        k = self.trainer.global_step
        if k == self.recorded:
            return  # an accumulation micro-batch
        self.recorded = k
        self.data["after"][str(k)] = [float(g["lr"]) for g in self.inner.param_groups]
        self.data["last_lr"][str(k)] = [float(x) for x in self.trainer.lr_scheduler_configs[0].scheduler.get_last_lr()]
        self.data["monitor"] = MONITOR
        path = os.path.join(self.out, f"rank{self.global_rank}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.data, f)
        os.replace(path + ".tmp", path)
        if k == self.hang_after:  # the ModelCheckpoint callback ran before this hook
            self.trainer.strategy.barrier()
            open(os.path.join(self.out, f"saved{self.global_rank}"), "w").close()
            while True:
                time.sleep(1)


class ModuleRoute(Recorder):
    def __init__(self, out, hang_after, noam, interval):
        super().__init__(out, hang_after)
        self.noam, self.interval = noam, interval

    def configure_optimizers(self):
        from noam_plugin import NoamLR

        optimizer = torch.optim.AdamW(self.parameters(), lr=0.01)
        scheduler = NoamLR(optimizer, **json.loads(self.noam))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


class DeepSpeedRoute(Recorder):
    """The optimizer comes from configure_optimizers, the scheduler from the DeepSpeed config."""

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01)


def write_pid(out):
    os.makedirs(out, exist_ok=True)
    rank = os.environ.get("LOCAL_RANK", "0")  # Lightning's launcher sets it for the processes it starts
    with open(os.path.join(out, f"pid{rank}"), "w") as f:
        f.write(str(os.getpid()))


def main():
    if sys.argv[1:2] == ["fit"]:  # the cli route: pl_train.py fit --config CONFIG.yaml --model.out=OUT ...
        from lightning.pytorch.cli import LightningCLI

        out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--model.out="))
        write_pid(out)
        LightningCLI(Recorder, Data, save_config_callback=None)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--route", choices=["module", "deepspeed"], default="module")
    parser.add_argument("--noam", default='{"warmup_num_steps": 3, "warmup_max_lr": 0.01}')
    parser.add_argument("--interval", default="step")
    parser.add_argument("--ds-config", help="DeepSpeed config JSON file (route deepspeed)")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--hang-after", type=int, default=-1)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--resume")
    parser.add_argument("--monitor", action="store_true", help="a LearningRateMonitor logging every step")
    args = parser.parse_args()
    write_pid(args.out)
    if args.route == "deepspeed":
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategy, accelerator = DeepSpeedStrategy(config=args.ds_config), "cuda"
        model = DeepSpeedRoute(args.out, args.hang_after)
    else:
        strategy, accelerator = "ddp", "cpu"
        model = ModuleRoute(args.out, args.hang_after, args.noam, args.interval)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=os.path.join(args.out, "ckpt"), save_top_k=-1, filename="{step}", every_n_train_steps=args.save_every
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=args.devices,
        strategy=strategy,
        max_steps=args.max_steps,
        accumulate_grad_batches=2,
        callbacks=[checkpoint] + ([pl.callbacks.LearningRateMonitor(logging_interval="step")] if args.monitor else []),
        logger=RecordingLogger() if args.monitor else False,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=True,
    )
    trainer.fit(model, datamodule=Data(), ckpt_path=args.resume)


if __name__ == "__main__":
    main()
