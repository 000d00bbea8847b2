"""Config files: every bad input gets one message naming file, key, expected and found;
the shipped configs give the contract's curve (formula written out again here)."""

import json
from pathlib import Path

import pytest

from noam_plugin import ConfigError, NoamConfig, load_config
from noam_plugin.config import check_with_auto, read_config_file, read_scheduler_block

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def reference(k, W, d_model=None, factor=1.0, peak=None):
    if d_model is not None:
        return factor * d_model**-0.5 * min(k**-0.5, k * W**-1.5)
    return peak * min(k / W, (W / k) ** 0.5)


def yaml_params(params: str) -> str:
    return "model: {layers: 2}\nscheduler:\n  type: NoamLR\n  params:\n" + "".join(
        f"    {line}\n" for line in params.splitlines()
    )


# (file name, file text, pieces the message must contain besides the file name)
BAD = {
    "typo": (
        "c.yaml",
        yaml_params("d_model: 512\nwarmup_num_step: 4000"),
        ["scheduler.params.warmup_num_step:", "expected one of warmup_num_steps", "did you mean 'warmup_num_steps'?"],
    ),
    "neither": (
        "c.yaml",
        yaml_params("warmup_num_steps: 4000"),
        ["scheduler.params.d_model / warmup_max_lr:", "expected exactly one of them", "found neither"],
    ),
    "both": (
        "c.yaml",
        yaml_params("d_model: 512\nwarmup_max_lr: 1.0e-3\nwarmup_num_steps: 4000"),
        ["scheduler.params.d_model / warmup_max_lr:", "expected exactly one of them", "found both"],
    ),
    "string_int": (
        "c.yaml",
        yaml_params('d_model: 512\nwarmup_num_steps: "4000"'),
        ["scheduler.params.warmup_num_steps:", "expected an int >= 1", "found str '4000'"],
    ),
    "float_int": (
        "c.yaml",
        yaml_params("d_model: 512\nwarmup_num_steps: 4000.5"),
        ["scheduler.params.warmup_num_steps:", "expected an int >= 1", "found float 4000.5"],
    ),
    "bool": (
        "c.yaml",
        yaml_params("d_model: true\nwarmup_num_steps: 4000"),
        ["scheduler.params.d_model:", "expected an int >= 1", "found bool True"],
    ),
    "zero": (
        "c.yaml",
        yaml_params("d_model: 512\nwarmup_num_steps: 0"),
        ["scheduler.params.warmup_num_steps:", "expected an int >= 1", "found int 0"],
    ),
    "negative": (
        "c.yaml",
        yaml_params("d_model: -1\nwarmup_num_steps: 10"),
        ["scheduler.params.d_model:", "expected an int >= 1", "found int -1"],
    ),
    "negative_peak": (
        "c.yaml",
        yaml_params("warmup_max_lr: -1.0e-3\nwarmup_num_steps: 10"),
        ["scheduler.params.warmup_max_lr:", "expected a finite number > 0", "found float -0.001"],
    ),
    "factor_with_peak": (
        "c.yaml",
        yaml_params("warmup_max_lr: 1.0e-3\nfactor: 2.0\nwarmup_num_steps: 10"),
        ["scheduler.params.factor:", "only together with d_model", "found float 2.0"],
    ),
    "yaml_syntax": (
        "c.yaml",
        "scheduler:\n  type: NoamLR\n  params: {d_model: 512,\n  warmup_num_steps: 4000\n",
        [
            "line 5, column 1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow "
            "mapping started on line 3)"
        ],
    ),
    "yaml_indent": (
        "c.yaml",
        "scheduler:\n  type: NoamLR\n  params:\n    d_model: 512\n   warmup_num_steps: 4000\n",
        ["line 5, column 4: invalid YAML", "(while parsing a block mapping started on line 2)"],
    ),
    "yaml_duplicate": (
        "c.yaml",
        yaml_params("d_model: 512\nwarmup_num_steps: 10\nd_model: 256"),
        ["line 7, column 5", "duplicate key 'd_model' (first on line 5)"],
    ),
    "json_syntax": (
        "ds.json",
        '{\n  "scheduler": {\n    "type": "NoamLR",\n    "params": {"d_model": 512 "warmup_num_steps": 4000}\n  }\n}\n',
        ["line 4, column 31", "invalid JSON", "Expecting ',' delimiter"],
    ),
    "no_block": (
        "c.yaml",
        "model: {layers: 2}\noptimizer: {type: Adam}\n",
        ["scheduler:", "expected a block such as scheduler: {type: NoamLR", "found no 'scheduler' key"],
    ),
    "no_block_json": (
        "ds.json",
        '{"train_batch_size": 8}',
        ["scheduler:", 'expected a block such as "scheduler": {"type": "NoamLR"', "found no 'scheduler' key"],
    ),
    "block_typo": ("c.yaml", "schedular:\n  type: NoamLR\n", ["scheduler:", "did you mean 'schedular'?"]),
    "wrong_type": (
        "ds.json",
        json.dumps({"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}}),
        ["scheduler.type:", "expected 'NoamLR'", "found str 'WarmupLR'"],
    ),
    "case_type": (
        "c.yaml",
        "scheduler: {type: noamlr, params: {d_model: 8, warmup_num_steps: 1}}\n",
        ["scheduler.type:", "expected 'NoamLR'", "found str 'noamlr' (names are case-sensitive)"],
    ),
    "no_type": (
        "c.yaml",
        "scheduler: {params: {d_model: 8, warmup_num_steps: 1}}\n",
        ["scheduler.type:", "expected 'NoamLR'", "found nothing"],
    ),
    "block_key_typo": (
        "c.yaml",
        "scheduler: {type: NoamLR, param: {d_model: 8, warmup_num_steps: 1}}\n",
        ["scheduler.param:", "expected only 'type' and 'params'", "did you mean 'params'?"],
    ),
    "params_not_mapping": (
        "c.yaml",
        "scheduler: {type: NoamLR, params: [512, 4000]}\n",
        ["scheduler.params:", "expected a mapping", "found list [512, 4000]"],
    ),
    "top_level_list": ("c.yaml", "- scheduler\n- NoamLR\n", ["(top level):", "expected a mapping", "found list"]),
    "empty": ("c.yaml", "", ["(top level):", "expected a mapping", "found an empty file"]),
    "unit_typo": (
        "c.yaml",
        yaml_params("warmup_max_lr: 1.0e-3\nwarmup_num_steps: 10\nwarmup_unit: sample"),
        [
            "scheduler.params.warmup_unit:",
            "expected one of updates, samples, tokens",
            "found str 'sample' (did you mean 'samples'?)",
        ],
    ),
    "unit_type": (
        "ds.json",
        json.dumps(
            {"scheduler": {"type": "NoamLR", "params": {"d_model": 8, "warmup_num_steps": 1, "warmup_unit": 5}}}
        ),
        ["scheduler.params.warmup_unit:", "expected one of updates, samples, tokens", "found int 5"],
    ),
    "auto": (
        "ds.json",
        json.dumps({"scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": "auto", "warmup_max_lr": 1e-3}}}),
        ["scheduler.params.warmup_num_steps:", "expected an int >= 1", "found str 'auto'", "Accelerate"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_key_expected_found(case, tmp_path):
    name, text, pieces = BAD[case]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), line
    for piece in pieces:
        assert piece in message, f"{piece!r} not in:\n{message}"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_all_problems_in_one_message(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_params('d_modle: 512\nwarmup_num_steps: "4000"\nfactor: 0'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert any("d_modle" in line and "did you mean 'd_model'" in line for line in lines)
    assert any("warmup_num_steps" in line and "str '4000'" in line for line in lines)
    assert any("factor" in line and "int 0" in line for line in lines)


# --- Accelerate config YAML that names a DeepSpeed JSON -------------------------------------------

ACCELERATE = (
    "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\nnum_processes: 2\n"
    "deepspeed_config:\n  deepspeed_config_file: {}\n"
)


def ds_json(params):
    return json.dumps({"train_micro_batch_size_per_gpu": 4, "scheduler": {"type": "NoamLR", "params": params}})


def test_accelerate_yaml_follows_deepspeed_file_next_to_it(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ds.json").write_text(ds_json({"d_model": 256, "warmup_num_steps": 100}))
    (tmp_path / "cfg" / "acc.yaml").write_text(ACCELERATE.format("ds.json"))
    monkeypatch.chdir(tmp_path)  # no ds.json here: found next to the YAML
    config = load_config("cfg/acc.yaml")
    assert (config.d_model, config.warmup_num_steps) == (256, 100)
    assert config.lr(7) == reference(7, 100, d_model=256)


def test_accelerate_yaml_prefers_current_directory_like_accelerate(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ds.json").write_text(ds_json({"d_model": 256, "warmup_num_steps": 100}))
    (tmp_path / "ds.json").write_text(ds_json({"warmup_max_lr": 2e-3, "warmup_num_steps": 50}))
    (tmp_path / "cfg" / "acc.yaml").write_text(ACCELERATE.format("ds.json"))
    monkeypatch.chdir(tmp_path)
    config = load_config("cfg/acc.yaml")
    assert (config.warmup_max_lr, config.warmup_num_steps) == (2e-3, 50)


def test_accelerate_yaml_bad_deepspeed_params_name_both_files(tmp_path, monkeypatch):
    (tmp_path / "ds.json").write_text(ds_json({"d_model": 256, "warmup_steps": 100}))
    (tmp_path / "acc.yaml").write_text(ACCELERATE.format("ds.json"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("acc.yaml")
    message = str(info.value)
    assert "ds.json (named in acc.yaml): scheduler.params.warmup_steps:" in message
    assert "did you mean 'warmup_num_steps'?" in message


def test_accelerate_yaml_missing_file_lists_both_places(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "acc.yaml").write_text(ACCELERATE.format("missing.json"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("cfg/acc.yaml")
    message = str(info.value)
    assert message.startswith(
        "cfg/acc.yaml: deepspeed_config.deepspeed_config_file: expected an existing DeepSpeed config JSON"
    )
    assert f"tried {tmp_path / 'missing.json'} and {Path('cfg') / 'missing.json'}" in message


def test_accelerate_yaml_reads_deepspeed_file_as_json(tmp_path, monkeypatch):
    # Accelerate reads the named file with json.load, so YAML there is an error here too.
    (tmp_path / "ds.yaml").write_text("scheduler: {type: NoamLR, params: {d_model: 8, warmup_num_steps: 1}}\n")
    (tmp_path / "acc.yaml").write_text(ACCELERATE.format("ds.yaml"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"ds\.yaml \(named in acc\.yaml\): line 1, column 1: invalid JSON"):
        load_config("acc.yaml")


def test_accelerate_yaml_without_deepspeed_file(tmp_path):
    path = tmp_path / "acc.yaml"
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 2}\n"
    )
    with pytest.raises(
        ConfigError, match=r"deepspeed_config\.deepspeed_config_file: expected the DeepSpeed config JSON"
    ):
        load_config(path)


# --- "auto": what Accelerate fills ----------------------------------------------------------------


def test_auto_accepted_only_where_accelerate_fills_it(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(ds_json({"warmup_num_steps": "auto", "warmup_max_lr": "auto"}))
    assert check_with_auto(read_scheduler_block(path)) == ("warmup_num_steps", "warmup_max_lr")

    path.write_text(ds_json({"warmup_num_steps": "auto", "d_model": "auto"}))
    with pytest.raises(
        ConfigError, match=r"scheduler\.params\.d_model: expected a value \(Accelerate fills \"auto\" only in"
    ):
        check_with_auto(read_scheduler_block(path))

    path.write_text(ds_json({"warmup_num_steps": 10, "d_model": 512, "warmup_max_lr": "auto"}))
    with pytest.raises(ConfigError, match=r"warmup_max_lr: expected no warmup_max_lr next to d_model"):
        check_with_auto(read_scheduler_block(path))

    path.write_text(ds_json({"warmup_num_steps": "auto", "warmup_max_lr": "auto", "factor": 2.0}))
    with pytest.raises(ConfigError, match=r"factor: expected factor only together with d_model"):
        check_with_auto(read_scheduler_block(path))


def test_auto_counts_in_tokens_need_auto_tokens_per_update(tmp_path):
    """The fillers write update counts; in tokens that needs a tokens-per-update figure (integrations/auto_counts)."""
    path = tmp_path / "ds.json"
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "tokens"}
    path.write_text(ds_json(params))
    with pytest.raises(ConfigError) as error:
        check_with_auto(read_scheduler_block(path))
    assert f"{path}: scheduler.params.warmup_num_steps: expected a count of tokens" in str(error.value)
    assert "scheduler.params.auto_tokens_per_update: N" in str(error.value)
    path.write_text(ds_json({**params, "auto_tokens_per_update": 4096}))
    assert check_with_auto(read_scheduler_block(path)) == ("warmup_num_steps", "warmup_max_lr")
    path.write_text(ds_json({"warmup_num_steps": 10, "warmup_max_lr": 0.1, "auto_tokens_per_update": 4096}))
    with pytest.raises(ConfigError, match=r"auto_tokens_per_update: expected only with warmup_unit tokens"):
        check_with_auto(read_scheduler_block(path))
    path.write_text(ds_json({**params, "auto_tokens_per_update": 0}))
    with pytest.raises(ConfigError, match=r"auto_tokens_per_update: expected an int >= 1"):
        check_with_auto(read_scheduler_block(path))


# --- good inputs ----------------------------------------------------------------------------------

SHIPPED = {
    "transformer_base.yaml": dict(W=4000, d_model=512),
    "transformer_big.yaml": dict(W=4000, d_model=1024),
    "peak_lr.yaml": dict(W=4000, peak=1e-3),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_give_the_formula(name):
    want = SHIPPED[name]
    config = load_config(CONFIGS / name)
    assert isinstance(config, NoamConfig)
    assert (config.warmup_num_steps, config.d_model, config.warmup_max_lr) == (
        want["W"],
        want.get("d_model"),
        want.get("peak"),
    )
    for k in [1, 2, 1000, 3999, 4000, 4001, 8000, 40000, 100000]:
        assert config.lr(k) == pytest.approx(
            reference(k, want["W"], want.get("d_model"), 1.0, want.get("peak")), rel=1e-12
        )
    assert max(range(1, 20001), key=config.lr) == 4000


def test_paper_base_in_tokens_has_the_papers_peak_after_100m_tokens():
    config = load_config(CONFIGS / "transformer_base_tokens.yaml")
    assert (config.warmup_unit, config.warmup_num_steps) == ("tokens", 4000 * 25000)
    # 25,000 tokens per update: update k runs at lr(25000 k), the paper's lr(k) at the same peak
    for k in (1, 100, 4000, 8000):
        assert config.lr(25000 * k) == pytest.approx(reference(k, 4000, 512, 1.0, None), rel=1e-4)


def test_paper_base_with_cooldown_config_and_its_auto_twin():
    """configs/transformer_base_cooldown.yaml: the paper's curve to 80000, then 1-sqrt to 0 at 100000."""
    config = load_config(CONFIGS / "transformer_base_cooldown.yaml")
    assert (config.total_num_steps, config.cooldown_num_steps, config.cooldown_type, config.cooldown_min_lr) == (
        100000,
        20000,
        "1-sqrt",
        0.0,
    )
    for k in (1, 4000, 80000):
        assert config.lr(k) == reference(k, 4000, 512, 1.0, None)
    s = reference(80000, 4000, 512, 1.0, None)
    for k in (80001, 90000, 100000):
        assert config.lr(k) == pytest.approx(s * (1 - ((k - 80000) / 20001) ** 0.5), rel=1e-12)
    assert config.lr(100001) == 0.0
    ds = read_scheduler_block(CONFIGS / "accelerate" / "zero2_noam_cooldown.yaml")
    assert check_with_auto(ds) == ("warmup_num_steps", "warmup_max_lr", "total_num_steps")


def test_paper_base_peak():
    assert load_config(CONFIGS / "transformer_base.yaml").peak_lr == pytest.approx(512**-0.5 * 4000**-0.5, rel=1e-12)


def test_other_keys_are_left_alone_and_exponents_are_floats():
    data = read_config_file(CONFIGS / "transformer_base.yaml")
    assert data["optimizer"] == {"type": "Adam", "params": {"betas": [0.9, 0.98], "eps": 1e-9}}
    assert set(data) >= {"model", "optimizer", "train", "scheduler"}


def test_yaml_1e_minus_3_is_a_float(tmp_path):
    # PyYAML alone reads `1e-3` as a string; lr values are commonly written that way.
    path = tmp_path / "c.yaml"
    path.write_text(yaml_params("warmup_max_lr: 1e-3\nwarmup_num_steps: 10"))
    assert load_config(path).warmup_max_lr == 1e-3
    assert read_config_file(path)["model"] == {"layers": 2}


def test_deepspeed_json_and_unknown_suffix(tmp_path):
    ds = tmp_path / "ds_config.json"
    ds.write_text(
        json.dumps(
            {
                "train_batch_size": 8,
                "optimizer": {"type": "Adam"},
                "scheduler": {"type": "NoamLR", "params": {"d_model": 64, "factor": 2.0, "warmup_num_steps": 10}},
            }
        )
    )
    config = load_config(ds)
    assert config.lr(3) == reference(3, 10, d_model=64, factor=2.0)
    other = tmp_path / "noam.cfg"  # unknown suffix: read as YAML, which also reads JSON
    other.write_text(ds.read_text())
    assert load_config(other) == config


# ----------------------------------------------------------------------------- hostile input (issue 12)


def test_numbers_read_as_yaml_1_2_and_ambiguous_ones_refused_anywhere(tmp_path):
    """The user's own keys too: read_config_file is how training scripts read them."""
    good = tmp_path / "good.yaml"
    good.write_text(
        "a: 0x10\nb: 1.0e-3\nc: 4000\nd: -7\ne: 1e3\nf: .inf\ng: '04000'\nh: 0\n"
        + yaml_params("d_model: 8\nwarmup_num_steps: 1")
    )
    data = read_config_file(good)
    assert [data[k] for k in "abcdegh"] == [16, 0.001, 4000, -7, 1000.0, "04000", 0]
    assert data["f"] == float("inf") and type(data["c"]) is int
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "seed: 0042\nmodel:\n  dims: [1_024, 12]\n  t: 1:30:00\n" + yaml_params("d_model: 8\nwarmup_num_steps: 1")
    )
    with pytest.raises(ConfigError) as info:
        read_config_file(bad)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"{bad}: seed: expected a number that YAML 1.1 and YAML 1.2 read alike: plain decimal (4000), 0x hex, "
        "1.0e-3, or quotes for a string, found 0042 on line 1, which YAML 1.1 (yaml.safe_load) reads as int 34 "
        "and YAML 1.2 as int 42"
    )
    assert (
        lines[1].startswith(f"{bad}: model.dims[0]: ")
        and "YAML 1.1 (yaml.safe_load) reads as int 1024 and YAML 1.2 as a string" in lines[1]
    )
    assert lines[2].startswith(f"{bad}: model.t: ") and "reads as int 5400 and YAML 1.2 as a string" in lines[2]
    assert len(lines) == 3


def test_aliases_depth_and_size_are_bounded(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {d_model: 8, warmup_num_steps: 4}\nscheduler: {type: NoamLR, params: *b}\n")
    assert load_config(ok).warmup_num_steps == 4  # ordinary anchors still work
    cases = {
        "bomb.yaml": (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n" for p, n in zip("abcdef", "bcdefg")),
            "f: expected at most 2,000,000",
        ),  # f: 10**6 strings, over the limit; e: 10**5, under it
        "cycle.yaml": (
            "a: &a [1, *a]\n",
            "a[1]: expected no alias inside the value it names, found a recursive alias on line 1",
        ),
        "deep.json": ('{"a": ' + "[" * 101 + "]" * 101 + "}", "expected at most 100 levels of nesting"),
        "big.yaml": ("x" * (257 << 10), "larger than 256 KiB"),
    }
    for name, (text, piece) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=None) as info:
            read_config_file(path)
        assert piece in str(info.value) and str(info.value).startswith(f"{path}: "), str(info.value)[:500]


def test_messages_stay_short_and_few(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml_params("d_model: 8\nwarmup_num_steps: " + "9" * 300 + "\n" + "".join(f"x{i}: 1\n" for i in range(100)))
    )
    message = str(pytest.raises(ConfigError, load_config, path).value)
    lines = message.splitlines()
    assert len(lines) == 21 and lines[-1] == f"{path}: ... and 81 more problems"
    assert max(map(len, lines)) < 400
    path.write_text(yaml_params("d_model: 8\nwarmup_num_steps: " + "9" * 300))
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert (
        message == f"{path}: scheduler.params.warmup_num_steps: expected an int >= 1 and at most 2**63 - 1, "
        "found int 99999999...9999 (300 digits)"
    )
