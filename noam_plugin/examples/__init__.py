"""Example configs shipped in the package, one per way of reaching NoamLR; `noam-plugin init ROUTE` writes one.

The files sit next to this module (package data), so a user who only ran `pip install
noam-plugin` has them; the repository's tests train with them as written.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Example:
    file: str
    what: str
    use: str  # how to use the written file; {path} is where it was written
    companion: str | None = None  # a second file the first one names, written next to it


ROUTES = {
    "yaml": Example(
        "noam.yaml",
        "project YAML: the scheduler block (for noam-plugin validate/show, noam_plugin.load_config)",
        "noam-plugin show {path}",
    ),
    "deepspeed": Example(
        "deepspeed.json",
        "DeepSpeed config, ZeRO-2, NoamLR with explicit params (deepspeed.initialize, deepspeed launcher)",
        "deepspeed.initialize(model=model, model_parameters=model.parameters(), config='{path}')",
    ),
    "trainer": Example(
        "trainer_deepspeed.json",
        'Hugging Face Trainer + DeepSpeed, NoamLR params "auto" (also Accelerate + DummyScheduler)',
        "TrainingArguments(deepspeed='{path}', warmup_steps=W, learning_rate=PEAK_LR, ...): "
        '"auto" takes warmup_num_steps from warmup_steps (required) and warmup_max_lr from learning_rate; '
        "preview: noam-plugin show {path} --set warmup_num_steps=W --set warmup_max_lr=PEAK_LR",
    ),
    "accelerate": Example(
        "accelerate_deepspeed.yaml",
        'Accelerate config (DeepSpeed ZeRO-2) + the DeepSpeed JSON it names, NoamLR params "auto" (DummyScheduler)',
        "accelerate launch --config_file {path} train.py   (from this folder; train.py passes "
        "DummyScheduler(optimizer, warmup_num_steps=W)); preview: noam-plugin show {path} "
        "--set warmup_num_steps=W --set warmup_max_lr=LR",
        companion="accelerate_ds_noam.json",
    ),
    "lightning-cli": Example(
        "lightning_cli.yaml",
        "LightningCLI: lr_scheduler class_path noam_plugin.NoamLR",
        "python train.py fit --config {path}   (train.py calls LightningCLI(YourModule, YourDataModule))",
    ),
    "lightning-deepspeed": Example(
        "lightning_deepspeed.json",
        "Lightning DeepSpeedStrategy: NoamLR in its DeepSpeed config (CUDA GPUs)",
        "Trainer(strategy=DeepSpeedStrategy(config='{path}'), ...); configure_optimizers returns the optimizer only",
    ),
    "hydra": Example(
        "hydra.yaml",
        "Hydra: _target_ noam_plugin.NoamLR with _partial_: true",
        "scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer)",
    ),
}


def example_text(route: str, file: str | None = None) -> str:
    return resources.files(__name__).joinpath(file or ROUTES[route].file).read_text(encoding="utf-8")


def write_example(route: str, path: str | None = None, force: bool = False) -> Path:
    """Write ROUTE's example to PATH (a file, or a folder to put it in; default: the current folder)."""
    from noam_plugin.safe_io import write_atomically

    example = ROUTES[route]
    target = Path(path) if path else Path(example.file)
    if target.is_dir():
        target = target / example.file
    elif path and path.endswith(("/", os.sep)):  # meant as a folder: never a file named like it
        raise FileNotFoundError(f"{path}: no such folder; create it first, or give a file name")
    files = [(target, example.file)]
    if example.companion:  # the file the first one names, next to it
        files.append((target.parent / example.companion, example.companion))
    for file, _ in files:  # nothing written unless every file can be
        if os.path.lexists(file) and not force:
            raise FileExistsError(f"{file}: already exists; pass --force to overwrite it")
    for file, name in files:
        text = example_text(route, name).encode("utf-8")
        write_atomically(file, lambda out, text=text: out.write(text))  # refuses a FIFO or a device, never blocks
    return target


def cmd_init(args: argparse.Namespace) -> int:
    target = write_example(args.route, args.path, args.force)
    print(f"wrote {target}: {ROUTES[args.route].what}")
    if ROUTES[args.route].companion:
        print(f"wrote {target.parent / ROUTES[args.route].companion}: the DeepSpeed config {target.name} names")
    print("use:  " + ROUTES[args.route].use.format(path=target))
    return 0


def add_init_parser(sub) -> None:
    """`noam-plugin init ROUTE [PATH]` (sub: the subparsers of the noam-plugin command)."""
    routes = "\n".join(f"  {name:<20} {example.file:<25} {example.what}" for name, example in ROUTES.items())
    p = sub.add_parser(
        "init",
        help="write a ready example config for one way of training with NoamLR",
        description=f"Write the example config of ROUTE.\n\nroutes:\n{routes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("route", choices=list(ROUTES), metavar="ROUTE", help="one of: " + ", ".join(ROUTES))
    p.add_argument("path", nargs="?", metavar="PATH", help="file to write, or a folder (default: ./FILE as listed)")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(handler=cmd_init)
