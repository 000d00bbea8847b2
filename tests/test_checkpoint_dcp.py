"""`noam-plugin inspect` on torch.distributed.checkpoint (DCP) folders, written here by a real dcp.save.

One process, no process group (DCP then saves as a single rank). The reader must find the NoamLR
state among DCP's non-tensor values, read no tensor, and refuse pickled code in the `.metadata`
pickle and in the values.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch

from noam_plugin import NoamLR
from noam_plugin.checkpoint import CheckpointError, read_checkpoint
from noam_plugin.cli import main

dcp = pytest.importorskip("torch.distributed.checkpoint")

SCHEDULE = {"warmup_num_steps": 4, "warmup_max_lr": 0.01}


def trained(updates: int = 3):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = NoamLR(optimizer, **SCHEDULE, samples_per_update=8)
    for _ in range(updates):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def save(state: dict, folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=str(folder))
    return folder


class Touch:
    """Unpickling this creates a file: the proof that pickled code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_noam_state_nested_in_an_app_state_without_reading_tensors(tmp_path, capsys):
    model, optimizer, scheduler = trained(3)
    app = {"model": model.state_dict(), "optim": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    folder = save({"app": app}, tmp_path / "ckpt")
    metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    for index, where in metadata.storage_data.items():  # spoil every tensor: a reader that loads one fails
        if isinstance(metadata.state_dict_metadata[index.fqn], dcp.metadata.TensorStorageMetadata):
            with open(folder / where.relative_path, "r+b") as f:
                f.seek(where.offset)
                f.write(b"\xff" * where.length)

    info = read_checkpoint(folder)
    assert info.is_noam and info.state["updates"] == 3 and info.state["samples"] == 24
    assert info.kind == "torch.distributed.checkpoint (DCP); scheduler state under 'app.scheduler'"
    assert main(["inspect", str(tmp_path)]) == 0  # a folder holding checkpoints
    shown = capsys.readouterr().out
    assert "k            3 optimizer updates applied" in shown
    assert f"next lr      {0.01 * min(4 / 4, (4 / 4) ** 0.5):.6g}  (lr(4)" in shown  # the peak form written again
    assert "processes    1 at save (1 rank wrote __RANK_*.distcp files)" in shown


def test_scheduler_as_a_stateful_and_a_partial_newer_checkpoint(tmp_path):
    model, optimizer, scheduler = trained(2)
    save({"model": model.state_dict(), "scheduler": scheduler}, tmp_path / "update_000002")  # NoamLR is a Stateful
    partial = save({"model": model.state_dict(), "scheduler": scheduler}, tmp_path / "update_000005")
    (partial / ".metadata").unlink()  # killed before DCP wrote its metadata

    info = read_checkpoint(tmp_path)
    assert info.path.name == "update_000002" and info.state["updates"] == 2
    assert "scheduler state under 'scheduler'" in info.kind
    partial_message = r"update_000005: partial torch.distributed.checkpoint: .distcp files but no .metadata"
    with pytest.raises(CheckpointError, match=partial_message):
        read_checkpoint(partial)


def test_pickled_code_in_a_value_is_refused(tmp_path, capsys):
    model, optimizer, scheduler = trained(1)
    marker = tmp_path / "ran"
    folder = save({"app": {"scheduler": {**scheduler.state_dict(), "extra": Touch(marker)}}}, tmp_path / "ckpt")
    assert main(["inspect", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "refused: 'app.scheduler.extra' holds Python objects other than tensors and plain values" in err
    assert "does not run pickled code" in err and ".distcp" in err
    assert not marker.exists()


def test_pickled_code_in_the_metadata_is_refused(tmp_path, capsys):
    model, optimizer, scheduler = trained(1)
    folder = save({"scheduler": scheduler}, tmp_path / "ckpt")
    marker = tmp_path / "ran"
    metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    metadata.storage_meta.modules = [Touch(marker)]
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    assert main(["inspect", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"{folder / '.metadata'}: refused: the pickle refers to code other than DCP's metadata classes" in err
    assert "'io.open' is not one of the classes DCP metadata is made of" in err
    assert not marker.exists()


def test_no_scheduler_state_saved(tmp_path, capsys):
    model, _, _ = trained(1)
    folder = save({"model": model.state_dict(), "step": 7}, tmp_path / "ckpt")
    assert main(["inspect", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "schedule     none saved" in out and "no scheduler state among the 1 non-tensor values" in out


def test_load_planner_gives_an_empty_state_where_none_was_saved(tmp_path):
    """Nothing saved under the scheduler's key: an empty state, which NoamLR takes as no scheduler state (the
    count its optimizer's loaded state proves, here none: one error; noam_plugin/rebuild.py)."""
    from noam_plugin.dcp import NoamLoadPlanner
    from noam_plugin.rebuild import NoSchedulerStateError

    model, optimizer, scheduler = trained(2)
    folder = save({"app": {"model": model.state_dict()}}, tmp_path / "ckpt")  # saved without the scheduler
    template = {"app": {"model": model.state_dict(), "scheduler": scheduler.state_dict()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(template, checkpoint_id=str(folder), planner=NoamLoadPlanner())
    assert template["app"]["scheduler"] == {}
    fresh = NoamLR(torch.optim.AdamW(torch.nn.Linear(4, 2).parameters()), **SCHEDULE)
    with pytest.raises(NoSchedulerStateError, match="nothing proves how many updates were applied"):
        fresh.load_state_dict(template["app"]["scheduler"])
