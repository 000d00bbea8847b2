"""Hostile input, as an attacker would write it (issue 12): every way in answers with one bounded message naming
the file and the key, exit status 1, no traceback, in bounded time; no command ever runs pickled code.

Command-line cases run as real processes with a timeout, grouped (one `validate` takes every config file; one
driver process calls the real `main()` of each command once per checkpoint case) so the suite stays fast.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
LINE_BOUND = 700  # characters of one message line, whatever the input's size


def params(text: str) -> str:
    return "model: {layers: 2}\nscheduler:\n  type: NoamLR\n  params:\n" + "".join(
        f"    {line}\n" for line in text.splitlines()
    )


def alias_bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi"):
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text + "scheduler: {type: NoamLR, params: {d_model: 8, warmup_num_steps: 1}}\n"  # ~600 bytes, 9**9 strings


def merge_bomb() -> str:  # `<<` merges copy keys: nested merges grow like aliases
    text = "m0: &m0 {a: 1, b: 2, c: 3, d: 4}\n"
    text += "".join(
        f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: [*m{i - 1}, *m{i - 1}, *m{i - 1}, *m{i - 1}]}}\n"
        for i in range(1, 14)
    )
    return text + "scheduler: {type: NoamLR, params: {d_model: 8, warmup_num_steps: 1}}\n"


def alias_chain() -> str:  # shallow in the file, 300 levels deep once aliases are expanded
    return (
        "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 300)) + "scheduler: {type: NoamLR}\n"
    )


def json_params(**values) -> str:
    return json.dumps({"train_batch_size": 8, "scheduler": {"type": "NoamLR", "params": values}})


def fifo(path: Path) -> None:
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.mkdir()


def device_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


# name -> (file name, text or a function making the file, key named in the message, other pieces of the message)
CASES = {
    # YAML that explodes or recurses
    "alias_bomb": ("bomb.yaml", alias_bomb(), "i", ["once YAML aliases are expanded"]),
    "alias_bomb_as_params": (
        "bomb2.yaml",
        alias_bomb().replace("params: {d_model: 8, warmup_num_steps: 1}", "params: *i"),
        "i",
        ["once YAML aliases are expanded"],
    ),
    "merge_bomb": ("merge.yaml", merge_bomb(), "m7.k7", ["once YAML aliases are expanded"]),
    "recursive_alias": (
        "rec.yaml",
        "scheduler: &s {type: NoamLR, params: *s}\n",
        "scheduler.params",
        ["recursive alias"],
    ),
    "alias_chain": ("chain.yaml", alias_chain(), "a99", ["at most 100 levels of nesting"]),
    "deep_flow": (
        "deep.yaml",
        "scheduler: " + "[" * 3000 + "]" * 3000 + "\n",
        "line 1",
        ["nested deeper than 100 levels"],
    ),
    "deep_block": (
        "deepblock.yaml",
        "".join(" " * i + f"k{i}:\n" for i in range(400)) + " " * 400 + "v: 1\n",
        "line 100",
        ["nested deeper than 100 levels"],
    ),
    "deep_json": (
        "deep.json",
        '{"scheduler": ' + "[" * 3000 + "]" * 3000 + "}",
        "invalid JSON",
        ["nested deeper than 100"],
    ),
    "deep_json_500": (
        "deep500.json",
        '{"scheduler": ' + "[" * 500 + "]" * 500 + "}",
        "scheduler[0][0]",
        ["at most 100 levels"],
    ),
    # size and file type
    "huge_file": ("huge.yaml", "a: " + "x" * (300 << 10) + "\n", "larger than 256 KiB", ["not read further"]),
    "fifo": ("fifo.yaml", fifo, "is a FIFO", ["not read"]),
    "directory": ("dir.yaml", directory, "is a directory", []),
    "dev_zero": ("zero.yaml", device_link, "is a device", ["not read"]),
    "not_utf8": (
        "latin.yaml",
        b"scheduler: {type: NoamLR, params: {d_model: 8, warmup_num_steps: 1}} # \xe9\xff\n",
        "not UTF-8",
        [],
    ),
    "int_tag_on_mapping": ("inttag.yaml", "scheduler: !!int {type: NoamLR}\n", "line 1", ["expected a scalar node"]),
    "nul_bytes": ("nul.yaml", "scheduler:\x00\x00\n", "invalid YAML", []),
    # numbers YAML 1.1 (yaml.safe_load) and 1.2 read differently: refused with both readings
    "octal_leading_zero": (
        "oct.yaml",
        params("d_model: 512\nwarmup_num_steps: 04000"),
        "scheduler.params.warmup_num_steps",
        ["04000 on line 6", "YAML 1.1 (yaml.safe_load) reads as int 2048 and YAML 1.2 as int 4000"],
    ),
    "base_60": (
        "sexa.yaml",
        params("d_model: 512\nwarmup_num_steps: 1:30"),
        "scheduler.params.warmup_num_steps",
        ["1:30", "YAML 1.1 (yaml.safe_load) reads as int 90 and YAML 1.2 as a string"],
    ),
    "octal_0o": (
        "o.yaml",
        params("d_model: 512\nwarmup_num_steps: 0o17"),
        "scheduler.params.warmup_num_steps",
        ["reads as a string and YAML 1.2 as int 15"],
    ),
    "underscores": (
        "us.yaml",
        params("d_model: 512\nwarmup_num_steps: 1_000"),
        "scheduler.params.warmup_num_steps",
        ["reads as int 1000 and YAML 1.2 as a string"],
    ),
    "binary": (
        "bin.yaml",
        params("d_model: 0b1000000000\nwarmup_num_steps: 10"),
        "scheduler.params.d_model",
        ["int 512"],
    ),
    "leading_zero_nine": (
        "nine.yaml",
        params("d_model: 512\nwarmup_num_steps: 09"),
        "scheduler.params.warmup_num_steps",
        ["reads as a string and YAML 1.2 as int 9"],
    ),
    "user_key_octal": ("user.yaml", "seed: 0042\n" + params("d_model: 512\nwarmup_num_steps: 10"), "seed", ["int 34"]),
    "exponent_is_float": (
        "e3.yaml",
        params("d_model: 512\nwarmup_num_steps: 1e3"),
        "scheduler.params.warmup_num_steps",
        ["expected an int >= 1, found float 1000.0"],
    ),
    # huge numbers and strings: refused, shortened
    "int_400_digits": (
        "i400.yaml",
        params("d_model: 512\nwarmup_num_steps: " + "7" * 400),
        "scheduler.params.warmup_num_steps",
        ["at most 2**63 - 1", "(400 digits)"],
    ),
    "int_5000_digits": (
        "i5000.yaml",
        params("d_model: 512\nwarmup_num_steps: " + "7" * 5000),
        "scheduler.params.warmup_num_steps",
        ["at most 4000 digits", "5000 digits"],
    ),
    "json_int_5000": (
        "i5000.json",
        json_params(d_model=512, warmup_num_steps=int("7" * 4000)).replace("7" * 4000, "7" * 5000),
        "scheduler.params.warmup_num_steps",
        ["at most 4000 digits"],
    ),
    "json_int_400": (
        "i400.json",
        json_params(d_model=int("9" * 400), warmup_num_steps=10),
        "scheduler.params.d_model",
        ["(400 digits)"],
    ),
    "float_1e400": (
        "f.yaml",
        params("warmup_max_lr: 1.0e+400\nwarmup_num_steps: 10"),
        "scheduler.params.warmup_max_lr",
        ["finite number > 0", "float inf"],
    ),
    "long_string": (
        "s.yaml",
        params("d_model: 512\nwarmup_num_steps: 10\nwarmup_unit: " + "x" * 200000),
        "scheduler.params.warmup_unit",
        ["'xxxx", "..."],
    ),
    "long_key": (
        "k.yaml",
        params("d_model: 512\nwarmup_num_steps: 10\n? " + "y" * 100000 + "\n: 1"),
        "scheduler.params.yyyy",
        ["unknown key"],
    ),
    "many_keys": (
        "many.yaml",
        params("d_model: 512\nwarmup_num_steps: 10\n" + "".join(f"k{i}: 1\n" for i in range(5000))),
        "scheduler.params.k0",
        ["and 4980 more problems"],
    ),
    "json_nan": (
        "nan.json",
        json_params(warmup_max_lr=float("nan"), warmup_num_steps=10),
        "scheduler.params.warmup_max_lr",
        ["finite number > 0", "nan"],
    ),
    "json_infinity": (
        "inf.json",
        json_params(d_model=8, factor=float("inf"), warmup_num_steps=10),
        "scheduler.params.factor",
        ["finite number > 0"],
    ),
    "json_duplicates": (
        "dup.json",
        '{"scheduler": {"type": "NoamLR", "params": {"d_model": 8, "warmup_num_steps": 1, '
        + ", ".join(f'"x{i}": 1' for i in range(20000))
        + ', "d_model": 16}}}',
        "invalid JSON",
        ["duplicate key 'd_model'"],
    ),
    # values whose curve is degenerate in floating point
    "peak_underflows": (
        "zero.yaml2",
        params("warmup_max_lr: 1.0e-320\nwarmup_num_steps: 4000"),
        "scheduler.params.warmup_max_lr",
        ["above 0.0 and finite"],
    ),
    "factor_underflows": (
        "factor.yaml",
        params("d_model: 512\nfactor: 1.0e-320\nwarmup_num_steps: 4000"),
        "scheduler.params.factor",
        ["the first update's lr(1) = 0.0"],
    ),
    "huge_d_model": (
        "dm.yaml",
        params("d_model: 99999999999999999999\nwarmup_num_steps: 10"),
        "scheduler.params.d_model",
        ["at most 2**63 - 1"],
    ),
    # explicit tags get the same 1.1 / 1.2 guard as plain numbers
    "tagged_octal": (
        "tagoct.yaml",
        params("d_model: 512\nwarmup_num_steps: !!int 04000"),
        "scheduler.params.warmup_num_steps",
        ["!!int 04000 on line 6", "YAML 1.1 (yaml.safe_load) reads as int 2048 and YAML 1.2 as int 4000"],
    ),
    "tagged_base_60_float": (
        "tagsexa.yaml",
        params("warmup_max_lr: !!float 1:30\nwarmup_num_steps: 10"),
        "scheduler.params.warmup_max_lr",
        ["!!float 1:30 on line 5", "reads as float 90.0 and YAML 1.2 as an error"],
    ),
    "tagged_quoted": (
        "tagq.yaml",
        params('d_model: !!int "0b101"\nwarmup_num_steps: 10'),
        "scheduler.params.d_model",
        ["!!int 0b101", "reads as int 5 and YAML 1.2 as an error"],
    ),
    # what a terminal would hide or disguise
    "control_character": (
        "ctl.yaml",
        params("d_model: 512\nwarmup_num_steps: 40\x01"),
        "line 6, column 25",
        ["control character '\\x01' (U+0001)"],
    ),
    "cyrillic_key": (
        "cyr.yaml",
        params("d_model: 512\nw\u0430rmup_num_steps: 40"),
        "scheduler.params.w\\u0430rmup_num_steps",
        ["unknown key 'w\\u0430rmup_num_steps' (did you mean 'warmup_num_steps'?)"],
    ),
    "right_to_left_key": (
        "rtl.yaml",
        params('d_model: 512\nwarmup_num_steps: 40\n"x\u202ey": 1'),
        "scheduler.params.x\\u202ey",
        ["unknown key 'x\\u202ey'"],
    ),
    "nul_in_key": (
        "nulkey.yaml",
        params('d_model: 512\nwarmup_num_steps: 40\n"a\\0b": 1'),
        "scheduler.params.a\\x00b",
        ["unknown key 'a\\x00b'"],
    ),
    "factor_with_peak": (
        "factorpeak.yaml",
        params("warmup_max_lr: 1.0e-3\nwarmup_num_steps: 40\nfactor: 1.0"),
        "scheduler.params.factor",
        ["factor only together with d_model"],
    ),
    # an Accelerate config pointing at hostile places
    "accelerate_to_fifo": (
        "acc.yaml",
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: fifo.yaml\n",
        "is a FIFO",
        [],
    ),
    "accelerate_long_name": (
        "acc2.yaml",
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: " + "n" * 5000 + "\n",
        "deepspeed_config.deepspeed_config_file",
        ["no such file"],
    ),
}
ACCEPTED = {  # read as written: (file name, text, what the ok line says)
    "hex": ("hex.yaml", params("d_model: 512\nwarmup_num_steps: 0x10"), "warmup 16 updates"),
    "plain": (
        "plain.yaml",
        params("d_model: 512\nwarmup_num_steps: 4000\nfactor: 2.0e+0"),
        "d_model=512, factor=2, warmup 4000 updates",
    ),
    "anchors": (
        "anchors.yaml",
        "w: &w 4000\nscheduler: {type: NoamLR, params: {d_model: 512, warmup_num_steps: *w}}\n",
        "warmup 4000 updates",
    ),
    "tagged_alike": (
        "tagged.yaml",
        params("warmup_max_lr: !!float 1.0e-3\nwarmup_num_steps: !!int 4000"),
        "warmup_max_lr=0.001, warmup 4000 updates",
    ),
    "tiny_peak": (
        "tiny.yaml",
        params("warmup_max_lr: 1.0e-300\nwarmup_num_steps: 1000"),
        "warmup_max_lr=1e-300, warmup 1000",
    ),
}


def make(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_hostile_config_files_one_message_each(tmp_path):
    paths = {case: make(tmp_path, name, text) for case, (name, text, *_) in CASES.items()}
    good = {case: make(tmp_path, name, text) for case, (name, text, _) in ACCEPTED.items()}
    args = [sys.executable, "-m", "noam_plugin", "validate", *map(str, paths.values()), *map(str, good.values())]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ENV)
    out, err = result.stdout, result.stderr
    assert result.returncode == 1
    assert "Traceback" not in out + err, err[-3000:]
    assert len(out) + len(err) < 400 * (len(CASES) + 30)
    total = len(CASES) + len(ACCEPTED)
    assert f"{len(ACCEPTED)} of {total} valid" in err
    failed = []
    for case, path in paths.items():
        _, _, key, pieces = CASES[case]
        lines = [line for line in err.splitlines() if line.startswith(f"{path}: ") or f"(named in {path})" in line]
        message = "\n".join(lines)
        if (
            not lines
            or key not in lines[0]
            or any(p not in message for p in pieces)
            or max(map(len, lines)) > LINE_BOUND
        ):
            failed.append(f"{case}: {message[:1000] or 'no message'}")
        if any(line.startswith(f"ok  {path}  ") for line in out.splitlines()):
            failed.append(f"{case}: accepted")
    for case, path in good.items():
        line = next((line for line in out.splitlines() if line.startswith(f"ok  {path}  ")), "")
        if ACCEPTED[case][2] not in line:
            failed.append(f"{case} not accepted as written: {line or err[:500]}")
    assert not failed, "\n".join(failed)
    assert Path(tmp_path / "fifo.yaml").exists()  # left alone


def test_show_refuses_degenerate_curve_and_hostile_arguments(tmp_path):
    """`show` on a curve with peak lr 0.0 used to divide by zero; huge --steps, a FIFO as --plot target."""
    zero = make(tmp_path, "zero.yaml", params("warmup_max_lr: 1.0e-320\nwarmup_num_steps: 4000"))
    good = make(tmp_path, "good.yaml", params("d_model: 512\nwarmup_num_steps: 4000"))
    target = tmp_path / "plot.png"
    os.mkfifo(target)
    cases = [
        (["show", zero], 1, f"{zero}: scheduler.params.warmup_max_lr: expected values whose lr is above 0.0"),
        (["show", good, "--steps", "9" * 5000], 2, "--steps: expected an int of at most 2**63 - 1, found '99999"),
        (["show", good, "--steps", "x" * 5000], 2, "--steps: expected an int >= 1, found 'xxxx"),
        (["show", good, "--at", "1,-5"], 2, "expected an int >= 1, found -5"),
        (["show", good, "--plot", target], 1, "exists and is a FIFO (named pipe); not replaced"),
        (["show", good, "--plot", ""], 2, "--plot: expected the name of a PNG file to write, found an empty name"),
        (["show", good, "--at", ",,,"], 2, "--at: expected positions such as 1,100,4000, found ',,,'"),
        (["show", good, "--plot", tmp_path / "good.yaml" / "x.png"], 1, f"{tmp_path / 'good.yaml' / 'x.png'}: "),
        (
            ["show", good, "--unit", "samples", "--per-update", 2**62, "--plot", tmp_path / "big.png"],
            1,
            "past 2**63 - 1, which matplotlib cannot draw; pass --steps N",
        ),
    ]
    for args, status, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "noam_plugin", *map(str, args)], capture_output=True, text=True, timeout=60, env=ENV
        )
        assert result.returncode == status, (args, result.stderr[-2000:])
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(result.stdout) + len(result.stderr) < 5000
    assert target.is_fifo()


def test_show_into_closed_pipe_is_quiet():
    """`noam-plugin show ... | head -1`: the reader leaves; exit 0, no 'Broken pipe', no traceback."""
    at = ",".join(map(str, range(1, 20001)))  # a table far larger than a pipe's buffer
    proc = subprocess.Popen(
        [sys.executable, "-m", "noam_plugin", "show", str(ROOT / "configs/transformer_base.yaml"), "--at", at],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert first.startswith(str(ROOT / "configs/transformer_base.yaml").encode() + b": NoamLR")
    assert err == b""


def test_plot_is_written_whole_and_a_leftover_does_not_block(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "curve.png"
    target.write_bytes(b"old plot")
    (tmp_path / ".curve.png.x1y2z3.tmp").write_bytes(b"half a plot from a killed run")
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", "show", str(ROOT / "configs/peak_lr.yaml"), "--plot", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".curve.png.x1y2z3.tmp", "curve.png"]  # no new temporary left


# ----------------------------------------------------------------------------- checkpoints

# Each case calls the real main() of a command in one driver process (torch and DeepSpeed are imported once);
# a traceback escaping main() ends the driver and fails the test, a hang hits the timeout.
DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from noam_plugin.cli import main as noam_plugin
    from noam_plugin.integrations.deepspeed import main as deepspeed
    from noam_plugin.integrations.accelerate import main as accelerate
    results = []
    for command, args in json.load(open(sys.argv[1])):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = {"noam-plugin": noam_plugin, "deepspeed": deepspeed, "accelerate": accelerate}[command](args)
        results.append([status, out.getvalue(), err.getvalue()])
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def drive(tmp_path, calls, timeout=300):
    (tmp_path / "calls.json").write_text(json.dumps([[c, list(map(str, a))] for c, a in calls]))
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, tmp_path / "calls.json", tmp_path / "results.json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / "results.json").read_text())


NOAM = {
    "type": "NoamLR",
    "updates": 12,
    "samples": 96,
    "tokens": None,
    "samples_per_update": 8,
    "warmup_num_steps": 40,
    "d_model": 64,
    "factor": 0.5,
    "warmup_max_lr": None,
    "warmup_unit": "updates",
    "world_size": 2,
}


class _MakesMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this runs os.mkdir(MARKER)
        return (os.mkdir, (self.marker,))


def deepspeed_folder(base: Path, state, latest="global_step12", **extra) -> Path:
    """A DeepSpeed save_checkpoint folder as inspect reads it: `latest` and the tag's model-states file."""
    import torch

    tag = base / "global_step12"
    tag.mkdir(parents=True)
    torch.save(
        {"lr_scheduler": state, "global_steps": 12, "skipped_steps": 0, "dp_world_size": 1, **extra},
        tag / "mp_rank_00_model_states.pt",
    )
    if latest is not None:
        (base / "latest").write_text(latest)
    return base


def test_hostile_checkpoints_for_inspect(tmp_path):
    import torch

    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "code-ran"
    cases = {}  # name -> (path, pieces of the message)

    def state_file(name, pieces, **changes):
        state = {k: v for k, v in {**NOAM, **changes}.items() if v is not _DROP}
        torch.save(state, tmp_path / f"{name}.pt")
        cases[name] = (tmp_path / f"{name}.pt", pieces)

    state_file("updates_str", ["updates: expected an int >= 0, found str '12'"], updates="12")
    state_file("updates_float", ["updates: expected an int >= 0, found float 12.7"], updates=12.7)
    state_file("updates_bool", ["updates: expected an int >= 0, found bool True"], updates=True)
    state_file(
        "updates_missing",
        ["updates: expected an int >= 0 (required), found nothing"],
        updates=_DROP,
    )
    state_file(
        "updates_huge", ["updates: expected an int >= 0 and at most 2**63 - 2", "(400 digits)"], updates=int("9" * 400)
    )
    state_file("samples_str", ["samples: expected an int >= 0 or None, found str 'lots'"], samples="lots")
    state_file("batch_zero", ["samples_per_update: expected an int >= 1 or None, found int 0"], samples_per_update=0)
    state_file("world_negative", ["world_size: expected an int >= 1 or None, found int -2"], world_size=-2)
    state_file(
        "unknown_key", ["updtes: expected only the keys of NoamLR.state_dict()", "did you mean 'updates'?"], updtes=3
    )
    state_file(
        "bad_params",
        ["warmup_num_steps: expected an int >= 1, found int 0", "d_model / warmup_max_lr"],
        warmup_num_steps=0,
        warmup_max_lr=1e-3,
    )
    state_file("long_unit", ["warmup_unit: expected one of updates, samples, tokens", "..."], warmup_unit="u" * 100000)
    torch.save({"scheduler": {"last_batch_iteration": "5"}}, tmp_path / "foreign_ds.pt")
    cases["foreign_ds"] = (tmp_path / "foreign_ds.pt", ["last_batch_iteration: expected an int >= -1", "found str '5'"])
    torch.save({"last_epoch": -3}, tmp_path / "foreign_torch.pt")
    cases["foreign_torch"] = (tmp_path / "foreign_torch.pt", ["last_epoch: expected an int >= 0", "found int -3"])
    torch.save({"scheduler": _MakesMarker(marker)}, tmp_path / "pickle.pt")
    cases["pickled_code"] = (tmp_path / "pickle.pt", ["does not run pickled code"])

    # DeepSpeed folders whose `latest` or tag leads elsewhere, or is not a file
    def ds(name, pieces, **kwargs):
        cases[name] = (deepspeed_folder(tmp_path / name, NOAM, **kwargs), pieces)

    ds(
        "latest_dotdot",
        ["'latest' names '../outside' is not the name of a checkpoint folder inside it"],
        latest="../outside",
    )
    ds("latest_absolute", [f"'latest' names '{outside}' is not the name"], latest=str(outside))
    ds("latest_symlink_out", ["a symlink leading out of the checkpoint folder"], latest="escape")
    (tmp_path / "latest_symlink_out" / "escape").symlink_to(outside)
    ds("latest_5mb", ["'latest' holds one tag name (at most 512 bytes)"], latest=None)
    (tmp_path / "latest_5mb" / "latest").write_text("global_step12" + " " * (5 << 20))
    ds("latest_fifo", ["latest: not a regular file"], latest=None)
    os.mkfifo(tmp_path / "latest_fifo" / "latest")
    ds("latest_binary", ["latest: not UTF-8 text"], latest=None)
    (tmp_path / "latest_binary" / "latest").write_bytes(b"\xff\xfe\x00")
    ds("model_states_fifo", ["mp_rank_00_model_states.pt: not a regular file"])
    model_states = tmp_path / "model_states_fifo" / "global_step12" / "mp_rank_00_model_states.pt"
    model_states.unlink()
    os.mkfifo(model_states)
    ds(
        "ds_state_malformed",
        ["mp_rank_00_model_states.pt: updates: expected an int >= 0, found str 'x'"],
        global_steps="many",
    )
    torch.save(
        {
            "lr_scheduler": {**NOAM, "updates": "x"},
            "global_steps": "many",
            "ds_config": {"zero_optimization": {"stage": "z" * 9999}},
        },
        tmp_path / "ds_state_malformed" / "global_step12" / "mp_rank_00_model_states.pt",
    )
    # bombs: a pickle that inflates 64-fold past the cap, nesting no pickler writes, a state of 300,000 keys
    from test_safe_io import bomb_file, nested_list_pickle, torch_file_with_pickle

    bomb = bomb_file(tmp_path / "bomb.pt", 128 << 20)
    cases["torch_bomb"] = (bomb, ["is 134,217,740 bytes once inflated", "at most 16 MiB", "zip bomb"])
    deep = torch_file_with_pickle(tmp_path / "deep.pt", nested_list_pickle(50_000), compress=False)
    cases["torch_deep"] = (deep, ["deep.pt: values nested deeper than 100 levels"])
    torch.save({**NOAM, **{f"k{i}": 0 for i in range(300_000)}}, tmp_path / "keys.pt")
    cases["state_many_keys"] = (
        tmp_path / "keys.pt",
        ["the keys of NoamLR.state_dict() (at most 1000), found 300,011 keys"],
    )
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "checkpoints").symlink_to(loop)
    cases["symlink_loop"] = (loop, ["no checkpoint within 3 folder levels"])
    os.mkfifo(tmp_path / "ckpt.fifo")
    cases["path_is_fifo"] = (tmp_path / "ckpt.fifo", ["not a regular file or a folder"])

    results = drive(tmp_path, [("noam-plugin", ["inspect", path]) for path, _ in cases.values()])
    failed = []
    for (name, (_path, pieces)), (status, out, err) in zip(cases.items(), results):
        if (
            status != 1
            or "Traceback" in out + err
            or not err
            or any(p not in err for p in pieces)
            or len(out) + len(err) > 3000
            or max(map(len, err.splitlines())) > LINE_BOUND
        ):
            failed.append(f"{name}: status {status}\n{out[:800]}{err[:800]}")
    assert not failed, "\n".join(failed)
    assert not marker.exists()


_DROP = object()


# ----------------------------------------------------------------------------- conversions (real DeepSpeed checkpoints)

DS_RUN = textwrap.dedent(
    """
    import sys, torch, deepspeed
    import noam_plugin  # noqa: F401
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    config = {"train_batch_size": 2, "zero_optimization": {"stage": 2},
              "scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": 10, "d_model": 16}}}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    for _ in range(3):
        engine.backward(engine(torch.randn(2, 4)).pow(2).sum())
        engine.step()
    engine.save_checkpoint(sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def zero2(tmp_path_factory):
    """A real one-process DeepSpeed ZeRO-2 checkpoint with NoamLR at update 3."""
    import socket

    from procs import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    base = tmp_path_factory.mktemp("zero2")
    code, out = run(
        [sys.executable, "-c", DS_RUN, base / "ckpt"],
        env={
            "DS_ACCELERATOR": "cpu",
            "OMP_NUM_THREADS": "1",
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        },
        timeout=240,
    )
    assert code == 0, out[-3000:]
    return base / "ckpt"


def copy_checkpoint(zero2: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(zero2, where, symlinks=True)
    return where


def poison(tag_dir: Path, marker: Path) -> None:
    """Add to the ZeRO optimizer file an object whose unpickling runs os.mkdir(marker)."""
    import torch

    optim = tag_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = torch.load(optim, weights_only=False)
    state["extra"] = _MakesMarker(marker)
    torch.save(state, optim)


def test_conversions_refuse_pickled_code_and_paths_leading_out(zero2, tmp_path):
    marker = tmp_path / "code-ran"
    evil = copy_checkpoint(zero2, tmp_path / "evil")
    poison(evil / "global_step3", marker)
    escape = copy_checkpoint(zero2, tmp_path / "escape")
    (escape / "latest").write_text("../evil/global_step3")
    tagged = copy_checkpoint(zero2, tmp_path / "tagged")
    linked = copy_checkpoint(zero2, tmp_path / "linked")
    (linked / "global_step3" / "mp_rank_01_model_states.pt").symlink_to(
        evil / "global_step3" / "mp_rank_00_model_states.pt"
    )
    saved = (
        tmp_path / "saved"
    )  # an accelerator.save_state folder of a DeepSpeed run: the engine's files under pytorch_model
    saved.mkdir()
    (copy_checkpoint(zero2, tmp_path / "engine") / "global_step3").rename(saved / "pytorch_model")
    (saved / "latest").write_text("pytorch_model")
    (saved / "random_states_0.pkl").write_bytes(b"not unpickled")
    evil_saved = tmp_path / "evil_saved"
    copy_checkpoint(saved, evil_saved)
    poison(evil_saved / "pytorch_model", marker)
    leaky_saved = copy_checkpoint(saved, tmp_path / "leaky_saved")
    (leaky_saved / "notes").symlink_to(tmp_path / "evil" / "latest")
    (tmp_path / "out_leftover").mkdir()
    leftover = tmp_path / ".out.tmp-killed"  # what a killed to-universal run leaves: must not block
    leftover.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = [
        ("deepspeed", ["convert-universal", evil]),
        ("deepspeed", ["convert-universal", escape]),
        ("deepspeed", ["convert-universal", tagged, "--tag", "../evil/global_step3"]),
        ("deepspeed", ["convert-universal", linked]),
        ("accelerate", ["to-universal", evil_saved, tmp_path / "out_evil"]),
        ("accelerate", ["to-universal", leaky_saved, tmp_path / "out_leaky"]),
        ("accelerate", ["to-universal", saved, tmp_path / "out_leftover"]),
        ("accelerate", ["to-universal", saved, tmp_path / "out"]),
        ("noam-plugin", ["inspect", tmp_path / "out"]),
    ]
    results = drive(tmp_path, calls)
    expected = [
        (1, "holds Python objects that torch.load(weights_only=True) refuses"),
        (1, "'latest' names '../evil/global_step3' is not the name of a checkpoint folder inside it"),
        (1, "--tag '../evil/global_step3' is not the name of a checkpoint folder inside it"),
        (1, "mp_rank_01_model_states.pt: a symlink leading out of"),
        (1, "holds Python objects that torch.load(weights_only=True) refuses"),
        (1, "notes: a symlink leading out of"),
        (1, "out_leftover: already exists"),
        (0, "out: universal; resume with"),
        (0, "DeepSpeed universal checkpoint"),
    ]
    for (_command, args), (status, out, err), (want, piece) in zip(calls, results, expected):
        assert status == want and piece in out + err and "Traceback" not in out + err, (args, out[-1500:], err[-1500:])
    assert not marker.exists()
    assert "k            3 optimizer updates applied" in results[-1][1]
    # the killed run's leftover did not block, and the run removed it (its owner is gone: issue 36.4)
    assert not leftover.exists()
    after = sorted([name for name in before if name != leftover.name] + ["calls.json", "out", "results.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == after
    for folder in (evil, escape, tagged, linked):  # nothing written into a refused checkpoint
        assert not (folder / "latest_universal").exists() and not list(folder.glob("*universal*"))
        assert not list(folder.glob(".*tmp*"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "latest",
        "latest_universal",
        "pytorch_model",
        "random_states_0.pkl",
    ]
    # Control: DeepSpeed's converter itself runs the poisoned file's code (so the refusal above is what protects).
    control = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, argparse\nfrom deepspeed.checkpoint import ds_to_universal\n"
            "ds_to_universal.main(argparse.Namespace(input_folder=sys.argv[1], output_folder=sys.argv[2], "
            "num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True, "
            "inject_missing_state=True))",
            evil / "global_step3",
            tmp_path / "control" / "x",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert marker.exists(), control.stderr[-2000:]


def test_convert_killed_midway_leaves_the_old_conversion_and_a_rerun_works(zero2, tmp_path):
    """SIGKILL inside DeepSpeed's converter: the earlier conversion and latest_universal stay whole;
    a rerun replaces them."""
    ckpt = copy_checkpoint(zero2, tmp_path / "ckpt")
    command = [sys.executable, "-u", "-m", "noam_plugin.integrations.deepspeed", "convert-universal", str(ckpt)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    old = ckpt / "global_step3_universal"
    (old / "old-conversion").write_text("")
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True
    )
    seen = ""
    for line in proc.stdout:
        seen += line
        if "Extracting ZeRO fragments" in line:  # inside ds_to_universal, writing its output
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen[-3000:]
    assert (old / "old-conversion").exists() and (ckpt / "latest_universal").read_text() == "global_step3_universal"
    leftovers = list(ckpt.glob(".global_step3_universal.tmp-*"))
    assert len(leftovers) == 1  # the killed run's work, hidden, removed by the next run
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(NoamLR at update 3)" in again.stdout
    assert not (old / "old-conversion").exists() and (old / "mp_rank_00_model_states.pt").exists()
    assert (ckpt / "latest_universal").read_text() == "global_step3_universal"
    assert list(ckpt.glob(".global_step3_universal.tmp-*")) == []  # the rerun removed the killed run's work


# ----------------------------------------------------------------------------- crafted DCP metadata


def test_crafted_dcp_metadata(tmp_path):
    """A `.metadata` re-pickled with DCP's own (allowed) classes but hostile values: wrong types, lengths and
    offsets past the file, a 20 MB name, nesting no pickler writes, 20,000 listed values, shards that are
    symlinks out of the folder or missing. One bounded message each (or a bounded report), never exit 0 on a
    checkpoint that cannot be resumed."""
    import pickle
    import shutil

    from test_checkpoint_dcp import dcp, save, trained
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    _, optimizer, scheduler = trained(3)
    base = save({"scheduler": scheduler.state_dict(), "optim": optimizer.state_dict()}, tmp_path / "base")
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {}  # name -> (folder, pieces of the message, expected status)

    def crafted(name, change, pieces, status=1, raw=None):
        folder = tmp_path / name
        shutil.copytree(base, folder, symlinks=True)
        metadata = dcp.FileSystemReader(str(folder)).read_metadata()
        type_index = next(i for i in metadata.storage_data if i.fqn == "scheduler.type")
        change(folder, metadata, type_index)
        data = pickle.dumps(metadata, protocol=4)
        if raw is not None:
            data = raw(data)
        (folder / ".metadata").write_bytes(data)
        cases[name] = (folder, pieces, status)

    def storage(metadata, index, **changes):
        where = metadata.storage_data[index]
        fields = {"relative_path": where.relative_path, "offset": where.offset, "length": where.length, **changes}
        metadata.storage_data[index] = _StorageInfo(**fields)

    crafted(
        "planner_type",
        lambda f, m, i: m.planner_data.__setitem__("scheduler.type", 5),
        ["planner_data['scheduler.type']: expected a tuple of str or int", "found int 5"],
    )
    crafted(
        "huge_length",
        lambda f, m, i: storage(m, i, length=10**12),
        ["'scheduler.type' at bytes", "past the file's end", "truncated or crafted"],
    )
    crafted(
        "huge_offset",
        lambda f, m, i: storage(m, i, offset=2**64),
        ["'scheduler.type' at bytes 18446744073709551616", "past the file's end"],
    )
    crafted(
        "long_name",
        lambda f, m, i: storage(m, i, relative_path="x" * (20 << 20)),
        ["'scheduler.type' points at 'xxxx", f"not at a file in {tmp_path / 'long_name'}"],
    )
    marker = b"PLACEHOLDER_NEST"
    crafted(
        "deep",
        lambda f, m, i: m.planner_data.__setitem__("scheduler.type", marker.decode()),
        ["values nested deeper than 100 levels; refused"],
        raw=lambda data: data.replace(b"\x8c" + bytes([len(marker)]) + marker, b")" + b"\x85" * 100_000),
    )

    def many(folder, metadata, index):
        for n in range(20_000):  # each one more NoamLR state, all pointing at the one saved 'type' value
            metadata.storage_data[MetadataIndex(f"s{n}.type")] = metadata.storage_data[index]
            metadata.state_dict_metadata[f"s{n}.type"] = BytesStorageMetadata()

    crafted("many_states", many, ["more than 20 scheduler states", "which one NoamLR resumes from is not guessed"])

    def value_bomb(folder, metadata, index):  # the 'type' value replaced by a torch.save zip that inflates 4x the cap
        from test_safe_io import bomb_file

        shard = folder / metadata.storage_data[index].relative_path
        bomb = bomb_file(tmp_path / "value_bomb.pt", 64 << 20).read_bytes()
        offset = shard.stat().st_size
        with shard.open("ab") as f:
            f.write(bomb)
        storage(metadata, index, offset=offset, length=len(bomb))

    crafted("value_bomb", value_bomb, ["'scheduler.type' at offset", "bytes once inflated", "zip bomb"])

    def symlinked(folder, metadata, index):
        shard = folder / metadata.storage_data[index].relative_path
        shutil.move(shard, outside / shard.name)
        shard.symlink_to(outside / shard.name)

    crafted("shard_symlink_out", symlinked, ["a symlink leading out of the checkpoint folder; not followed"])

    def missing(folder, metadata, index):
        tensor = next(i for i, m in metadata.state_dict_metadata.items() if not isinstance(m, BytesStorageMetadata))
        chunk = next(i for i in metadata.storage_data if i.fqn == tensor)
        storage(metadata, chunk, relative_path="__1_0.distcp")  # a second rank's shard, never copied

    crafted("missing_shard", missing, ["__1_0.distcp: missing: .metadata lists it, the folder does not have it"])

    start = time.perf_counter()
    results = drive(tmp_path, [("noam-plugin", ["inspect", folder]) for folder, _, _ in cases.values()])
    assert time.perf_counter() - start < 60  # the listing alone took 80 s before
    failed = []
    for (name, (_folder, pieces, status)), (got, out, err) in zip(cases.items(), results):
        text = out + err
        if got != status or "Traceback" in text or any(p not in text for p in pieces) or len(text) > 4000:
            failed.append(f"{name}: status {got}\n{text[:1500]}")
    assert not failed, "\n".join(failed)


# ----------------------------------------------------------------------------- the command line's edges


def noam_plugin(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**ENV, **kwargs.pop("env", {})}
    command = [sys.executable, "-m", "noam_plugin", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, **kwargs)


def test_closed_stdout_is_one_line():
    """`noam-plugin validate x >&-`: Python starts with sys.stdout None; every print would raise."""
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", "validate", str(ROOT / "configs/transformer_base.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env=ENV,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 1 and result.stderr == (
        "noam-plugin: standard output is closed (>&-); nothing can be written\n"
    )


def test_ctrl_c_is_one_line_and_status_130():
    """A real SIGINT while the command is writing into a pipe nobody reads (so it is surely inside main)."""
    at = ",".join(map(str, range(1, 20001)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "noam_plugin", "show", str(ROOT / "configs/transformer_base.yaml"), "--at", at],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout.read(100)  # it has printed: main is running; the pipe fills up and it blocks
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == b"noam-plugin: interrupted\n"


def test_init_refuses_a_fifo_and_a_missing_folder(tmp_path):
    fifo = tmp_path / "noam.yaml"
    os.mkfifo(fifo)
    result = noam_plugin("init", "yaml", fifo, "--force")  # a plain open() for writing blocks until a reader comes
    assert result.returncode == 1 and "noam.yaml: exists and is a FIFO (named pipe); not replaced" in result.stderr
    result = noam_plugin("init", "yaml", "newdir/", cwd=tmp_path)
    assert result.returncode == 1 and "newdir/: no such folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noam.yaml"] and fifo.is_fifo()


def test_paths_the_terminal_cannot_encode(tmp_path):
    folder = tmp_path / "ünï"
    folder.mkdir()
    good = make(folder, "ök.yaml", params("d_model: 512\nwarmup_num_steps: 4000"))
    result = noam_plugin("validate", good, folder / "nö.yaml", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "\\xfcn\\xef/\\xf6k.yaml  (NoamLR: d_model=512" in result.stdout
    assert "\\xfcn\\xef/n\\xf6.yaml: no such file" in result.stderr


def test_auto_is_blamed_by_its_key(tmp_path):
    cooldown = make(
        tmp_path,
        "c.yaml",
        params("warmup_max_lr: 1.0e-3\nwarmup_num_steps: auto\ntotal_num_steps: 5\ncooldown_num_steps: 10"),
    )
    result = noam_plugin("validate", "--allow-auto", cooldown)
    assert result.returncode == 1
    assert (
        "cooldown_num_steps: expected at most total_num_steps - warmup_num_steps (the cooldown starts after the "
        'warmup), whatever value Accelerate fills warmup_num_steps "auto" with, found int 10' in result.stderr
    )
    assert "= 5 - 1" not in result.stderr  # the stand-in used for the check is not shown as if it were the file's
    peak = make(  # any lr may come from the optimizer: a cooldown_min_lr is not judged against a stand-in
        tmp_path,
        "p.yaml",
        params(
            "warmup_max_lr: auto\nwarmup_num_steps: 10\ntotal_num_steps: 100\ncooldown_num_steps: 10\n"
            "cooldown_min_lr: 5.0"
        ),
    )
    assert noam_plugin("validate", "--allow-auto", peak).returncode == 0


def test_counts_past_int64_are_refused():
    from noam_plugin import noam_lr

    with pytest.raises(ValueError, match=r"step: expected an int >= 1 \(the first update is step 1\) and at most "):
        noam_lr(10**400, warmup_num_steps=10, d_model=8)
    assert noam_lr(2**63 - 1, warmup_num_steps=10, d_model=8) > 0


DS_PARAMS = textwrap.dedent(
    """
    import json, sys, torch, deepspeed
    import noam_plugin  # noqa: F401
    found = []
    for params in ("missing", None, [1, 2]):
        block = {"type": "NoamLR"} if params == "missing" else {"type": "NoamLR", "params": params}
        model = torch.nn.Linear(2, 2)
        try:
            deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                 config={"train_batch_size": 1, "scheduler": block})
            found.append("accepted")
        except Exception as error:
            found.append(f"{type(error).__name__}: {error}")
    print(json.dumps(found))
    """
)


def test_deepspeed_params_that_are_not_a_mapping():
    """DeepSpeed calls NoamLR(optimizer, **params): a list, null or missing `params` was a TypeError naming nothing."""
    import socket

    from procs import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    code, out = run([sys.executable, "-c", DS_PARAMS], env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
    assert code == 0, out[-3000:]
    found = json.loads(out.strip().splitlines()[-1])
    expected = 'ConfigError: DeepSpeed config: scheduler.params: expected a mapping such as {"d_model": 512, '
    assert [line.split("found ")[-1] for line in found] == ["nothing", "NoneType None", "list [1, 2]"], found
    assert all(line.startswith(expected) for line in found), found
