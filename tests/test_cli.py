"""The `noam-plugin` command line, run as real processes; numbers against the formula written out here."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCRIPT = Path(sys.executable).parent / "noam-plugin"


def reference(k, W, d_model=None, factor=1.0, peak=None):
    if d_model is not None:
        return factor * d_model**-0.5 * min(k**-0.5, k * W**-1.5)
    return peak * min(k / W, (W / k) ** 0.5)


def run(*args, cwd=None, script=False):
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "noam_plugin"]
    result = subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def write(path, text):
    path.write_text(text)
    return path


def test_validate_shipped_configs_with_installed_script():
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT}"
    names = ["transformer_base.yaml", "transformer_big.yaml", "peak_lr.yaml"]
    result = run("validate", *(CONFIGS / n for n in names), script=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0] == f"ok  {CONFIGS / 'transformer_base.yaml'}  (NoamLR: d_model=512, warmup 4000 updates, "
        f"peak lr {reference(4000, 4000, 512):.2e} at update 4000)"
    )
    assert f"peak lr {reference(4000, 4000, 1024):.2e} at update 4000" in lines[1]
    assert lines[2].endswith("(NoamLR: warmup_max_lr=0.001, warmup 4000 updates, peak lr 1.00e-03 at update 4000)")
    assert "3 of 3 valid" in result.stdout


def test_validate_reports_each_bad_file_and_exits_1(tmp_path):
    good = CONFIGS / "transformer_base.yaml"
    typo = write(tmp_path / "typo.yaml", "scheduler: {type: NoamLR, params: {d_model: 512, warmup_steps: 4000}}\n")
    broken = write(tmp_path / "broken.json", '{"scheduler": {"type": "NoamLR",\n "params": {"d_model": 512,}}}')
    result = run("validate", good, typo, broken, tmp_path / "missing.yaml")
    assert result.returncode == 1
    assert result.stdout.startswith(f"ok  {good}  ")
    err = result.stderr
    assert f"{typo}: scheduler.params.warmup_steps: expected one of warmup_num_steps" in err
    assert "did you mean 'warmup_num_steps'?" in err
    assert f"{typo}: scheduler.params.warmup_num_steps: expected an int >= 1 (required), found nothing" in err
    assert f"{broken}: line 2, column 28: invalid JSON: Expecting property name" in err
    assert f"{tmp_path / 'missing.yaml'}: no such file" in err
    assert "1 of 4 valid" in err


def test_validate_auto_for_the_trainer_and_accelerate(tmp_path):
    scheduler = {"type": "NoamLR", "params": {"warmup_num_steps": "auto", "warmup_max_lr": "auto"}}
    write(tmp_path / "ds.json", json.dumps({"train_batch_size": "auto", "scheduler": scheduler}))
    write(tmp_path / "only.json", json.dumps({"train_batch_size": 8, "scheduler": scheduler}))
    write(tmp_path / "acc.yaml", "distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: ds.json\n")
    # "auto" only in the scheduler of a config DeepSpeed itself could read: an error saying why and what to run.
    result = run("validate", "only.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "only.json: scheduler.params.warmup_num_steps: expected an int >= 1, found str 'auto' (" in result.stderr
    assert 'the HF Trainer and Accelerate fill "auto"' in result.stderr and "--allow-auto" in result.stderr
    # "auto" elsewhere too (a file for the Trainer or Accelerate), or --allow-auto: valid, saying who fills what.
    for args in (["ds.json"], ["--allow-auto", "only.json"]):
        result = run("validate", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (
            '"auto" warmup_num_steps, warmup_max_lr: TrainingArguments(deepspeed=this file) fills them from '
            "warmup_steps (required), learning_rate; accelerate launch with this file, at prepare() from "
            "DummyScheduler(warmup_num_steps=...); the optimizer's lr" in result.stdout
        )
    # Named by an Accelerate config: Accelerate's words only.
    result = run("validate", "acc.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"auto" warmup_num_steps, warmup_max_lr: Accelerate fills them at prepare() from Dummy' in result.stdout


def test_validate_reads_lightning_cli_and_hydra_files(tmp_path):
    cli_yaml = "lr_scheduler:\n  class_path: noam_plugin.NoamLR\n  init_args: {warmup_num_steps: 10, d_modle: 8}\n"
    write(tmp_path / "cli.yaml", cli_yaml)
    write(tmp_path / "hydra.yaml", "scheduler:\n  _target_: noam_plugin.NoamLR\n  warmup_num_steps: 10\n  d_model: 8\n")
    write(tmp_path / "group.yaml", "_target_: noam_plugin.NoamLR\n_partial_: true\nwarmup_num_steps: 0\nd_model: 8\n")
    result = run("validate", "cli.yaml", "hydra.yaml", "group.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "cli.yaml: lr_scheduler.init_args.d_modle: " in result.stderr and "d_model" in result.stderr
    assert "hydra.yaml: scheduler._partial_: expected true (NoamLR needs the optimizer" in result.stderr
    assert "group.yaml: warmup_num_steps: expected an int >= 1, found int 0" in result.stderr


def parse_table(stdout):
    rows = re.findall(r"^\s+(\d+)\s+([0-9.]+e[-+]\d+)\s+([0-9.]+)%$", stdout, re.M)
    return [(int(k), float(lr), float(pct)) for k, lr, pct in rows]


def test_show_d_model_config_default_table():
    result = run("show", CONFIGS / "transformer_base.yaml")
    assert result.returncode == 0, result.stderr
    peak = reference(4000, 4000, 512)
    assert f"peak: update 4000, lr {peak:.4e}" in result.stdout
    table = parse_table(result.stdout)
    assert [k for k, _, _ in table] == [1, 1000, 2000, 4000, 8000, 16000, 40000]
    for k, lr, pct in table:
        assert lr == pytest.approx(reference(k, 4000, 512), rel=1e-4)
        assert pct == pytest.approx(100 * reference(k, 4000, 512) / peak, abs=0.05)
    assert "^ peak at update 4000" in result.stdout and "40000" in result.stdout  # the text curve


def test_show_peak_config_chosen_updates_with_installed_script():
    result = run("show", CONFIGS / "peak_lr.yaml", "--at", "1,37,4000,4001,123456", "--steps", "20000", script=True)
    assert result.returncode == 0, result.stderr
    assert "peak: update 4000, lr 1.0000e-03" in result.stdout
    table = parse_table(result.stdout)
    assert [k for k, _, _ in table] == [1, 37, 4000, 4001, 123456]
    for k, lr, _ in table:
        assert lr == pytest.approx(reference(k, 4000, peak=1e-3), rel=1e-4)


def test_show_plot_writes_png(tmp_path):
    out = tmp_path / "curve.png"
    result = run("show", CONFIGS / "transformer_big.yaml", "--steps", "12000", "--plot", out)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 400 and height > 300
    assert f"plot written to {out}" in result.stdout


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["show", "{tmp}/missing.yaml"], 1, "missing.yaml: no such file"),
        (["show", str(CONFIGS / "peak_lr.yaml"), "--plot", "{tmp}/no/such/dir/x.png"], 1, "No such file or directory"),
        (["show", str(CONFIGS / "peak_lr.yaml"), "--at", "1,0"], 2, "argument --at: expected an int >= 1, found 0"),
        (
            ["show", str(CONFIGS / "peak_lr.yaml"), "--steps", "ten"],
            2,
            "argument --steps: expected an int >= 1, found 'ten'",
        ),
        (["validate"], 2, "the following arguments are required: PATH"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_errors_are_one_message_without_traceback(tmp_path, args, status, message):
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == status
    assert message in result.stderr


def test_show_auto_needs_numbers(tmp_path):
    write(
        tmp_path / "ds.json",
        json.dumps({"scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": "auto", "warmup_max_lr": 1e-3}}}),
    )
    result = run("show", "ds.json", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "ds.json: scheduler.params.warmup_num_steps: expected an int >= 1, found str 'auto' "
        "(the HF Trainer or Accelerate fills it at run time; preview with show --set warmup_num_steps=VALUE)"
    )


def test_inspect_is_wired(tmp_path):
    # The checkpoint reader lives in noam_plugin.checkpoint; an empty folder is an error, not a traceback.
    result = run("inspect", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip()


# ----------------------------------------------------------------------------- warmup_unit (issue 6)

SAMPLES_YAML = (
    "scheduler:\n  type: NoamLR\n  params: {warmup_max_lr: 0.001, warmup_num_steps: 1024, warmup_unit: samples}\n"
)


def test_show_samples_config_in_its_own_unit(tmp_path):
    path = write(tmp_path / "samples.yaml", SAMPLES_YAML)
    result = run("show", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(
        f"{path}: NoamLR, warmup_max_lr=0.001, warmup 1024 samples, peak lr 1.00e-03 at sample 1024\n"
    )
    assert "peak: sample 1024, lr 1.0000e-03" in out
    assert re.search(r"^\s+sample\s+lr\s+of peak$", out, re.M)
    table = parse_table(out)
    assert [x for x, _, _ in table] == [1, 256, 512, 1024, 2048, 4096, 10240]
    for x, lr, pct in table:
        assert lr == pytest.approx(reference(x, 1024, peak=1e-3), rel=1e-4)
        assert pct == pytest.approx(100 * reference(x, 1024, peak=1e-3) / 1e-3, abs=0.05)
    assert "(samples seen)" in out and "^ peak at sample 1024" in out and "optimizer update" not in out
    result = run("validate", path)
    assert result.returncode == 0 and "warmup 1024 samples, peak lr 1.00e-03 at sample 1024)" in result.stdout


def test_show_samples_config_per_update(tmp_path):
    path = write(tmp_path / "samples.yaml", SAMPLES_YAML)
    result = run("show", path, "--unit", "updates", "--per-update", "32", "--at", "1,16,32,33,100")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "peak: update 32, lr 1.0000e-03" in out and "(optimizer update)" in out and "^ peak at update 32" in out
    assert re.search(r"^\s+update\s+lr\s+of peak$", out, re.M)
    table = parse_table(out)
    assert [k for k, _, _ in table] == [1, 16, 32, 33, 100]
    for k, lr, _ in table:
        assert lr == pytest.approx(reference(k * 32, 1024, peak=1e-3), rel=1e-4)  # update k has seen 32 k samples
        assert lr == pytest.approx(reference(k, 32, peak=1e-3), rel=1e-4)  # = updates with W = 1024 / 32
    # A batch that does not divide the warmup: the peak falls inside update ceil(1024 / 300) = 4.
    result = run("show", path, "--unit", "updates", "--per-update", "300")
    assert result.returncode == 0, result.stderr
    assert (
        f"peak: update 4 (warmup ends inside it, at 3.41 updates), lr {reference(1200, 1024, peak=1e-3):.4e}"
        in result.stdout
    )
    table = parse_table(result.stdout)
    assert table[-1][0] == 35  # 10 x 1024 samples end in update 35
    for k, lr, _ in table:
        assert lr == pytest.approx(reference(k * 300, 1024, peak=1e-3), rel=1e-4)


def test_show_updates_config_in_samples():
    result = run(
        "show",
        CONFIGS / "peak_lr.yaml",
        "--unit",
        "samples",
        "--per-update",
        "256",
        "--at",
        "1,256,257,512000,1024000,1024001,2048000",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "warmup 4000 updates, peak lr 1.00e-03 at update 4000" in out  # the config is still described in its unit
    assert "peak: sample 1024000, lr 1.0000e-03" in out and "(samples seen)" in out
    table = parse_table(out)
    assert [x for x, _, _ in table] == [1, 256, 257, 512000, 1024000, 1024001, 2048000]
    for x, lr, _ in table:
        assert lr == pytest.approx(
            reference(-(-x // 256), 4000, peak=1e-3), rel=1e-4
        )  # sample x is in update ceil(x/256)


def test_show_d_model_tokens_config_notes_the_unit(tmp_path):
    params = "{d_model: 512, warmup_num_steps: 8000, warmup_unit: tokens}"
    path = write(tmp_path / "tokens.yaml", f"scheduler: {{type: NoamLR, params: {params}}}\n")
    result = run("show", path)
    assert result.returncode == 0, result.stderr
    peak = 512**-0.5 * 8000**-0.5
    assert f"warmup 8000 tokens, peak lr {peak:.2e} at token 8000" in result.stdout
    notes = [line for line in result.stdout.splitlines() if "note:" in line]
    assert len(notes) == 1 and "W in tokens" in notes[0] and "warmup_max_lr" in notes[0]
    assert "note:" not in run("show", CONFIGS / "transformer_base.yaml").stdout


@pytest.mark.parametrize(
    "config, args, message",
    [
        ("samples", ["--unit", "tokens", "--per-update", "5"], "cannot convert samples to tokens"),
        ("samples", ["--unit", "updates"], "--unit updates needs --per-update N: the samples per optimizer update"),
        ("updates", ["--unit", "tokens"], "--unit tokens needs --per-update N: the tokens per optimizer update"),
        ("samples", ["--per-update", "256"], "add --unit updates"),
    ],
)
def test_show_unit_conversion_errors(tmp_path, config, args, message):
    path = write(tmp_path / "samples.yaml", SAMPLES_YAML) if config == "samples" else CONFIGS / "peak_lr.yaml"
    result = run("show", path, *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    if "tokens" in args and config == "samples":
        assert "--unit updates --per-update N" in result.stderr


def test_show_plot_samples_config(tmp_path):
    path = write(tmp_path / "samples.yaml", SAMPLES_YAML)
    for args in ([], ["--unit", "updates", "--per-update", "32"]):
        out = tmp_path / "curve.png"
        result = run("show", path, *args, "--plot", out)
        assert result.returncode == 0, result.stderr
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        out.unlink()


# ---------------------------------------------------------------- cooldown (issue 14)


def cooled_reference(k, W, T, C, kind="linear", m=0.0, **form):
    """docs/CONTRACT.md section 1 with the tail, written out again."""
    s = T - C
    if k <= s:
        return reference(k, W, **form)
    x = min(1, (k - s) / (C + 1))
    f = {"linear": 1 - x, "1-sqrt": 1 - x**0.5, "cosine": (1 + math.cos(math.pi * x)) / 2}[kind]
    return m + (reference(s, W, **form) - m) * f


def test_cooldown_command_prints_params_that_start_right_after_the_count(tmp_path):
    import torch
    import yaml

    state = {
        "type": "NoamLR",
        "updates": 250,
        "samples": 8000,
        "tokens": None,
        "samples_per_update": 32,
        "warmup_num_steps": 100,
        "d_model": 512,
        "factor": 2.0,
        "warmup_max_lr": None,
        "warmup_unit": "updates",
        "world_size": 2,
    }
    torch.save(state, tmp_path / "sched.pt")
    result = run(
        "cooldown",
        tmp_path / "sched.pt",
        "--over",
        "50",
        "--type",
        "cosine",
        "--min-lr",
        "1e-6",
        "--plot",
        tmp_path / "c.png",
    )
    assert result.returncode == 0, result.stderr
    block = yaml.safe_load(result.stdout.split("\n\n")[0])
    assert block == {
        "scheduler": {
            "type": "NoamLR",
            "params": {
                "warmup_num_steps": 100,
                "d_model": 512,
                "factor": 2.0,
                "total_num_steps": 300,
                "cooldown_num_steps": 50,
                "cooldown_type": "cosine",
                "cooldown_min_lr": 1e-6,
            },
        }
    }
    form = dict(d_model=512, factor=2.0)
    for k in (250, 251, 275, 300, 301):
        want = cooled_reference(k, 100, 300, 50, "cosine", 1e-6, **form)
        assert re.search(rf"^\s+{k}\s+{re.escape(f'{want:.4e}')}", result.stdout, re.M), (k, result.stdout)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the printed block is a valid config whose resume from this state is no parameter change
    config = write(tmp_path / "cooled.yaml", result.stdout.split("\n\n")[0])
    shown = run("inspect", tmp_path / "sched.pt", "--config", config)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "cosine cooldown over updates 251-300" in shown.stdout and "no parameter change" in shown.stdout

    # errors: one line, exit 1
    for args, message in [
        (["--over", "50", "--min-lr", "1"], "cooldown_min_lr: expected a value below the lr where the cooldown starts"),
        (["--over", "10", "--config", str(CONFIGS / "peak_lr.yaml")], "inside the warmup (warmup_num_steps 4000)"),
    ]:
        bad = run("cooldown", tmp_path / "sched.pt", *args)
        assert bad.returncode == 1 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert run("cooldown", tmp_path / "missing", "--over", "5").returncode == 1
    assert run("cooldown", tmp_path / "sched.pt", "--type", "sqrt", "--over", "5").returncode == 2  # argparse


def test_show_a_cooldown_config():
    result = run("show", CONFIGS / "transformer_base_cooldown.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cooldown: 1-sqrt cooldown over updates 80001-100000" in out
    assert "k > 80000: lr(k) = 0 + (lr(80000) - 0) * f(min(1, (k - 80000) / 20001)),  f(x) = 1 - sqrt(x)" in out
    for k in (80000, 80001, 90000, 100000, 100001):
        want = cooled_reference(k, 4000, 100000, 20000, "1-sqrt", d_model=512)
        assert re.search(rf"^\s+{k}\s+{re.escape(f'{want:.4e}')}", out, re.M), (k, out)


def test_validate_accepts_auto_total_num_steps_only_where_accelerate_fills_it(tmp_path):
    result = run("validate", CONFIGS / "accelerate" / "zero2_noam_cooldown.yaml")
    assert result.returncode == 0, result.stderr
    assert '"auto" warmup_num_steps, warmup_max_lr, total_num_steps' in result.stdout
    bad = write(
        tmp_path / "ds.json",
        json.dumps(
            {
                "scheduler": {
                    "type": "NoamLR",
                    "params": {
                        "warmup_num_steps": 10,
                        "warmup_max_lr": "auto",
                        "total_num_steps": "auto",
                        "cooldown_num_steps": 20,
                        "cooldown_type": "cosin",
                    },
                }
            }
        ),
    )
    result = run("validate", "--allow-auto", bad)
    assert result.returncode == 1
    assert "scheduler.params.cooldown_type: expected one of linear, 1-sqrt, cosine" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_write_atomically_keeps_the_old_file_when_the_write_fails(tmp_path):
    from noam_plugin.safe_io import write_atomically

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")

    def half_then_crash(out):
        out.write(b"half a plo")
        raise KeyboardInterrupt  # as if the run were stopped mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_crash)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    write_atomically(target, lambda out: out.write(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


@pytest.mark.parametrize("bad, key", [({"updates": "x"}, "updates"), ({"updates": 2**63 - 1}, "updates")])
def test_cooldown_and_inspect_refuse_the_same_malformed_states(tmp_path, bad, key):
    """One validation of a saved state (noam_plugin/resume.py): cooldown refuses what inspect refuses."""
    import torch

    state = {"type": "NoamLR", "updates": 250, "warmup_num_steps": 100, "warmup_max_lr": 0.01, **bad}
    torch.save(state, tmp_path / "sched.pt")
    for command in (["cooldown", tmp_path / "sched.pt", "--over", "50"], ["inspect", tmp_path / "sched.pt"]):
        result = run(*command)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{key}: expected an int >= 0" in result.stderr, result.stderr


# ----------------------------------------------------------------------------- the first hour (issue 30)


def test_version():
    from noam_plugin import __version__

    result = run("--version", script=True)
    assert result.returncode == 0 and result.stdout.strip() == f"noam-plugin {__version__}", result


def test_show_set_previews_the_file_init_trainer_writes(tmp_path):
    assert run("init", "trainer", cwd=tmp_path).returncode == 0
    plain = run("show", "trainer_deepspeed.json", cwd=tmp_path)
    assert plain.returncode == 1 and "preview with show --set warmup_num_steps=VALUE" in plain.stderr
    result = run(
        "show", "trainer_deepspeed.json", "--set", "warmup_num_steps=400", "--set", "warmup_max_lr=7e-4", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "peak: update 400, lr 7.0000e-04" in result.stdout
    assert 'preview with warmup_num_steps=400, warmup_max_lr=0.0007 for "auto"' in result.stdout
    for k in (1, 100, 4000):
        assert re.search(rf"^\s+{k}\s+{reference(k, 400, peak=7e-4):.4e}", result.stdout, re.M), (k, result.stdout)
    # --set fills "auto" only: a value the file gives, or a key that is never "auto", is refused, saying why
    write(
        tmp_path / "fixed.json",
        json.dumps({"scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": 9, "warmup_max_lr": "auto"}}}),
    )
    bad = run("show", "fixed.json", "--set", "warmup_num_steps=400", cwd=tmp_path)
    assert (
        bad.returncode == 1 and 'scheduler.params.warmup_num_steps is not "auto" in this file (found 9)' in bad.stderr
    )
    bad = run("show", "trainer_deepspeed.json", "--set", "d_model=512", cwd=tmp_path)
    assert bad.returncode == 1 and '--set fills only the "auto" keys' in bad.stderr
    for arg in ("warmup_num_steps", "warmup_max_lr=fast", "warmup_max_lr=nan"):
        assert run("show", "trainer_deepspeed.json", "--set", arg, cwd=tmp_path).returncode == 2  # argparse


def test_init_accelerate_writes_a_config_that_validates_and_previews(tmp_path):
    result = run("init", "accelerate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accelerate_deepspeed.yaml", "accelerate_ds_noam.json"]
    import yaml

    acc = yaml.safe_load((tmp_path / "accelerate_deepspeed.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED"
    assert acc["deepspeed_config"]["deepspeed_config_file"] == "accelerate_ds_noam.json"
    ds = json.loads((tmp_path / "accelerate_ds_noam.json").read_text())
    assert ds["scheduler"] == {"type": "NoamLR", "params": {"warmup_num_steps": "auto", "warmup_max_lr": "auto"}}
    ok = run("validate", tmp_path / "accelerate_deepspeed.yaml")  # from another folder: found next to the YAML
    assert ok.returncode == 0 and "Accelerate fills them at prepare()" in ok.stdout, ok.stderr
    shown = run(
        "show", "accelerate_deepspeed.yaml", "--set", "warmup_num_steps=10", "--set", "warmup_max_lr=1e-3", cwd=tmp_path
    )
    assert shown.returncode == 0 and "peak: update 10, lr 1.0000e-03" in shown.stdout, shown.stderr
    again = run("init", "accelerate", cwd=tmp_path)  # neither file is overwritten without --force
    assert again.returncode == 1 and "already exists; pass --force" in again.stderr
    unknown = run("init", "keras")
    assert unknown.returncode == 2 and "'accelerate'" in unknown.stderr and "'trainer'" in unknown.stderr


def test_each_subcommand_help_says_what_its_path_is():
    for command, name, words in [
        ("validate", "PATH", "a config file: project YAML, DeepSpeed JSON"),
        ("show", "PATH", "a config file: project YAML, DeepSpeed JSON"),
        ("inspect", "CHECKPOINT_DIR", "a DeepSpeed, Accelerate, DCP or HF Trainer checkpoint-N folder"),
        ("cooldown", "CHECKPOINT_DIR", "a DeepSpeed, Accelerate, DCP or HF Trainer checkpoint-N folder"),
        ("amend", "CHECKPOINT_DIR", "a DeepSpeed, Accelerate, DCP or HF Trainer checkpoint-N folder"),
        ("init", "PATH", "file to write, or a folder"),
    ]:
        out = run(command, "--help").stdout
        section = out[out.index("positional arguments:") :]
        line = " ".join(section[section.index(name) :].split("options:")[0].split())
        assert words in line, (command, line)


def _state(**extra):
    return {"type": "NoamLR", "updates": 250, "warmup_num_steps": 100, "warmup_max_lr": 0.01, **extra}


def test_cooldown_header_gives_the_next_lr_its_table_gives(tmp_path):
    import torch

    torch.save(_state(), tmp_path / "s.pt")
    result = run("cooldown", tmp_path / "s.pt", "--over", "50")
    assert result.returncode == 0, result.stderr
    want, without = cooled_reference(251, 100, 300, 50, peak=0.01), reference(251, 100, peak=0.01)
    assert f"next lr {want:.6g} with this cooldown (without it: {without:.6g})" in result.stdout.splitlines()[0]
    assert re.search(rf"^\s+251\s+{want:.4e}$", result.stdout, re.M), result.stdout


def test_cooldown_refusals_say_what_to_run_instead(tmp_path):
    import torch

    ended = _state(total_num_steps=200, cooldown_num_steps=50, cooldown_type="linear")
    running = _state(total_num_steps=300, cooldown_num_steps=80, cooldown_type="linear")
    torch.save(ended, tmp_path / "ended.pt")
    torch.save(running, tmp_path / "running.pt")
    result = run("cooldown", tmp_path / "ended.pt", "--over", "50")
    assert result.returncode == 1 and "already reached total_num_steps 200" in result.stderr
    instead = f"noam-plugin amend {tmp_path / 'ended.pt'} --total 300"
    assert instead in result.stderr, result.stderr
    # and what it names works: the amendment resumes the ended run with a new tail to update 300
    amended = run(*instead.split()[1:])
    assert amended.returncode == 0, amended.stderr
    assert "{at: 250, total_num_steps: 300}" in amended.stdout
    result = run("cooldown", tmp_path / "running.pt", "--over", "30", "--type", "cosine")
    assert result.returncode == 1 and "its cooldown already runs (updates 221-300)" in result.stderr
    instead = f"noam-plugin amend {tmp_path / 'running.pt'} --cooldown 30 --type cosine"
    assert instead in result.stderr, result.stderr
    assert run(*instead.split()[1:]).returncode == 0


TRAINER_RUN = """
import sys
sys.path.insert(0, sys.argv[2])
from tiny import tiny_trainer
tiny_trainer(sys.argv[1], {"warmup_num_steps": 4, "warmup_max_lr": 0.01}, max_steps=10, save_strategy="steps",
             save_steps=5).train()
"""


def test_inspect_cooldown_amend_read_a_trainer_checkpoint_folder(tmp_path):
    """A real HF Trainer run (no DeepSpeed) saves checkpoint-5/ and checkpoint-10/ (scheduler.pt, model.safetensors,
    trainer_state.json, ...): each command reads the folder, and the Trainer's output folder (the newest)."""
    integrations = Path(__file__).resolve().parent / "integrations"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", TRAINER_RUN, out, integrations], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoint-10" / "scheduler.pt").is_file() and (out / "checkpoint-10" / "model.safetensors").exists()
    for path, k in ((out / "checkpoint-5", 5), (out / "checkpoint-10", 10), (out, 10)):
        shown = run("inspect", path)
        assert shown.returncode == 0, shown.stderr
        assert "HF Trainer checkpoint" in shown.stdout and f"trainer_state.json: global_step {k}" in shown.stdout
        assert f"{reference(k + 1, 4, peak=0.01):.6g}" in shown.stdout, shown.stdout
    cooled = run("cooldown", out / "checkpoint-10", "--over", "6")
    assert cooled.returncode == 0, cooled.stderr
    assert f"next lr {cooled_reference(11, 4, 16, 6, peak=0.01):.6g} with this cooldown" in cooled.stdout
    amended = run("amend", out / "checkpoint-5", "--scale", "0.5")
    assert amended.returncode == 0 and "{at: 5, scale: 0.5}" in amended.stdout, amended.stderr
