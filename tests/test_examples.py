"""`noam-plugin init ROUTE [PATH]` writes the shipped example configs (noam_plugin/examples/)."""

from __future__ import annotations

import json

import pytest
import yaml

from noam_plugin import cli
from noam_plugin.examples import ROUTES, example_text


def test_every_route_writes_its_example_and_the_schedule_ones_validate(tmp_path, capsys):
    for route, example in ROUTES.items():
        assert cli.main(["init", route, str(tmp_path)]) == 0
        written = tmp_path / example.file
        assert written.read_text() == example_text(route)
        if example.companion:  # the file it names, next to it
            assert (tmp_path / example.companion).read_text() == example_text(route, example.companion)
        out = capsys.readouterr().out
        assert f"wrote {written}: " in out and "use:  " in out
        data = json.loads(written.read_text()) if written.suffix == ".json" else yaml.safe_load(written.read_text())
        assert isinstance(data, dict), route
    # every file `init` writes passes `validate` as written, and the summary names its route
    assert cli.main(["validate", *(str(tmp_path / example.file) for example in ROUTES.values())]) == 0
    out = capsys.readouterr().out
    assert f"{len(ROUTES)} of {len(ROUTES)} valid" in out
    assert "(NoamLR (LightningCLI lr_scheduler): d_model=512" in out and "(NoamLR (Hydra _target_, _partial_): " in out
    assert 'trainer_deepspeed.json  (NoamLR; "auto" warmup_num_steps, warmup_max_lr: TrainingArguments(' in out
    lightning = yaml.safe_load((tmp_path / "lightning_cli.yaml").read_text())
    assert lightning["lr_scheduler"]["class_path"] == "noam_plugin.NoamLR"
    hydra = yaml.safe_load((tmp_path / "hydra.yaml").read_text())["scheduler"]
    assert hydra["_target_"] == "noam_plugin.NoamLR" and hydra["_partial_"] is True


def test_init_to_a_file_path_refuses_to_overwrite_without_force(tmp_path, capsys):
    target = tmp_path / "my_ds.json"
    target.write_text("{}")
    assert cli.main(["init", "deepspeed", str(target)]) == 1
    assert f"{target}: already exists; pass --force to overwrite it" in capsys.readouterr().err
    assert target.read_text() == "{}"
    assert cli.main(["init", "deepspeed", str(target), "--force"]) == 0
    assert json.loads(target.read_text())["scheduler"]["type"] == "NoamLR"


def test_unknown_route_lists_the_routes(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["init", "keras"])
    assert exit_.value.code == 2
    assert "lightning-cli" in capsys.readouterr().err
