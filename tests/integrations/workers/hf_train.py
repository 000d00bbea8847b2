"""A Hugging Face Trainer run on a tiny GPT-2, started by test_transformers.py under torchrun (CPU, gloo).

--ds CONFIG.json: TrainingArguments(deepspeed=CONFIG): NoamLR is declared there, and this
script does not import noam_plugin (unless --pass-noam: it also passes
Trainer(optimizers=(AdamW, NoamLR)), which the Trainer drops with DeepSpeed).
--noam JSON: no DeepSpeed; Trainer(optimizers=(AdamW, NoamLR(**JSON))) under DDP.

Each rank writes OUT/rank{R}.json after every update: the lrs its innermost torch
optimizer had while applying update k (a step pre-hook; ZeRO steps it once per
param group), and after update k the param groups' lr and get_last_lr(); the
learning_rate the Trainer logs for step k (on_log, as report_to backends get it) and,
at the end, log_history's.
--hang-after-save K: after the Trainer saved checkpoint-K, write OUT/saved{R}
and wait to be SIGKILLed. --resume DIR: trainer.train(resume_from_checkpoint=DIR).
"""

import argparse
import json
import os
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments, set_seed

SEQ = 8


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def innermost(optimizer):
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


class Record(TrainerCallback):
    """What every update of this rank ran at, written after each update (a SIGKILL keeps what was written)."""

    def __init__(self, out, hang_after_save):
        self.rank = int(os.environ.get("RANK", "0"))
        self.path = os.path.join(out, f"rank{self.rank}.json")
        self.hang_after_save = hang_after_save
        self.trainer = None
        self.k = None
        self.data = {"used": {}, "after": {}, "last_lr": {}, "scheduler": None, "world": int(os.environ["WORLD_SIZE"])}
        self.data["logged"] = {}  # step -> the learning_rate the Trainer logs (what every report_to backend gets)

    def on_train_begin(self, args, state, control, **kwargs):
        inner = innermost(self.trainer.optimizer)
        inner.register_step_pre_hook(self.before_update)
        self.inner = inner
        engine = getattr(self.trainer, "deepspeed", None)
        scheduler = engine.lr_scheduler if engine is not None else self.trainer.lr_scheduler
        self.data["scheduler"] = type(scheduler).__name__
        self.data["start"] = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.k = state.global_step + 1

    def before_update(self, optimizer, args, kwargs):
        used = self.data["used"].setdefault(str(self.k), [])
        used.extend(float(g["lr"]) for g in optimizer.param_groups)

    def on_step_end(self, args, state, control, **kwargs):
        k = str(state.global_step)
        self.data["after"][k] = [float(g["lr"]) for g in self.inner.param_groups]
        self.data["last_lr"][k] = [float(x) for x in self.trainer.lr_scheduler.get_last_lr()]
        self.write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        """What a report_to backend's callback receives for this step."""
        if logs and "learning_rate" in logs:
            self.data["logged"][str(state.global_step)] = logs["learning_rate"]
            self.write()

    def on_train_end(self, args, state, control, **kwargs):
        """log_history (trainer_state.json): with a resume, the first run's entries too."""
        history = [e for e in state.log_history if "learning_rate" in e]
        self.data["history"] = {str(e["step"]): e["learning_rate"] for e in history}
        self.write()

    def write(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.data, f)
        os.replace(self.path + ".tmp", self.path)

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.hang_after_save:
            open(os.path.join(os.path.dirname(self.path), f"saved{self.rank}"), "w").close()
            while True:
                time.sleep(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ds", help="DeepSpeed config JSON file")
    parser.add_argument("--noam", help="NoamLR keyword arguments (JSON): Trainer(optimizers=...) without DeepSpeed")
    parser.add_argument("--pass-noam", action="store_true", help="with --ds: also pass optimizers=(AdamW, NoamLR)")
    parser.add_argument("--warmup-steps", type=float, default=0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=1000)
    parser.add_argument("--hang-after-save", type=int, default=-1)
    parser.add_argument("--resume")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)  # torchrun starts each worker in its own session: the test kills these too
    with open(os.path.join(args.out, f"pid{os.environ.get('RANK', '0')}"), "w") as f:
        f.write(str(os.getpid()))

    training_args = TrainingArguments(
        output_dir=os.path.join(args.out, "ckpt"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accum,
        learning_rate=args.lr,
        # a whole number as an int: transformers 4.x takes only an int (5.x also a float, the fraction of max_steps)
        warmup_steps=int(args.warmup_steps) if float(args.warmup_steps).is_integer() else args.warmup_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        deepspeed=args.ds,
        use_cpu=args.ds is None,
        ddp_backend=None if args.ds else "gloo",
    )
    set_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=SEQ))
    optimizers = (None, None)
    if args.noam or args.pass_noam:
        from noam_plugin import NoamLR  # this route builds the scheduler in Python

        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        optimizers = (optimizer, NoamLR(optimizer, **json.loads(args.noam or '{"warmup_num_steps": 2, "d_model": 8}')))
    record = Record(args.out, args.hang_after_save)
    trainer = Trainer(
        model=model, args=training_args, train_dataset=RandomTokens(256), optimizers=optimizers, callbacks=[record]
    )
    record.trainer = trainer
    trainer.train(resume_from_checkpoint=args.resume)
    print(f"rank {record.rank}: done at update {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
