"""Lightning: `NoamCountCheck`, the opt-in count cross-check (docs/CONTRACT.md section 2).

    trainer = lightning.pytorch.Trainer(..., callbacks=[NoamCountCheck()])

compares each NoamLR's count of applied updates with `trainer.global_step` (Lightning's count of
optimizer steps) at train start (after `ckpt_path`: the restored counts), after the first two
updates and at every checkpoint save; a mismatch raises `CountMismatchError` naming both. With
16-bit AMP a GradScaler may skip an update that Lightning still counts: there NoamLR's count must
only not be larger. Under DeepSpeedStrategy the engine's own check runs as well.
Nothing else of Lightning is touched; this module imports Lightning, so it is imported only by you.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from noam_plugin.integrations.cross_check import check_counts

FIRST_CHECKS = 2


def _noams(trainer: Any) -> list[Any]:
    from noam_plugin.scheduler import NoamLR, scheduler_of

    found = [config.scheduler for config in trainer.lr_scheduler_configs if isinstance(config.scheduler, NoamLR)]
    found += [s for s in map(scheduler_of, trainer.optimizers) if s is not None and s not in found]
    return found


class NoamCountCheck(pl.Callback):
    """Raise CountMismatchError when a NoamLR's count differs from `trainer.global_step`."""

    def __init__(self) -> None:
        self.checks_left = FIRST_CHECKS
        self.last_step = -1

    def check(self, trainer: Any, route: str) -> None:
        if len(trainer.optimizers) != 1:  # global_step counts the steps of every optimizer together
            return
        amp = str(getattr(trainer, "precision", "")).startswith("16")
        for noam in _noams(trainer):
            check_counts(
                noam,
                trainer.global_step,
                framework="Lightning",
                counter="trainer.global_step",
                route=route,
                at_most=amp,
            )

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from noam_plugin.rebuild import Source, needs_rebuild, rebuild_from_host

        if len(trainer.optimizers) == 1:  # a checkpoint whose scheduler state was not restored: rebuilt
            amp = str(getattr(trainer, "precision", "")).startswith("16")
            n = trainer.global_step
            for noam in _noams(trainer):
                if needs_rebuild(noam, n):
                    detail = (
                        f"{n}, which under 16-bit AMP also counts the updates a GradScaler skipped" if amp else str(n)
                    )
                    host = Source("Lightning's trainer.global_step", None if amp else n, detail)
                    rebuild_from_host(noam, host, "the Lightning checkpoint")
        self.checks_left, self.last_step = FIRST_CHECKS, trainer.global_step
        self.check(trainer, f"train start (step {trainer.global_step})")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.checks_left and trainer.global_step != self.last_step:  # an update, not an accumulation step
            self.checks_left -= 1
            self.last_step = trainer.global_step
            self.check(trainer, f"update {trainer.global_step}")

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        self.check(trainer, f"the checkpoint save at step {trainer.global_step}")
