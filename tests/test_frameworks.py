"""noam_plugin/frameworks.py: one declaration per framework, tiers, the version window, refusal on every route.

The tier tests run real DeepSpeed (ZeRO-2, two param groups, one process on CPU) and Accelerate in a
fresh interpreter each, with a target added to the declaration that this DeepSpeed / Accelerate lacks
(what an untested release looks like), and compare the lr with the contract's formula written again.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from noam_plugin import frameworks
from noam_plugin.frameworks import FRAMEWORKS, Framework, RegistrationError, Target

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the declaration and the window


def requirements() -> dict[str, str]:
    """{distribution: specifier} from pyproject.toml's dependencies and extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for line in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", line)
        name = match.group(1).lower()
        if name != "noam-plugin":
            found[name] = match.group(3).replace(" ", "")
    return found


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.lower().split("==") for line in lines if line)


def test_pyproject_bounds_and_the_constraints_files_are_the_declared_window():
    """pyproject.toml: from the lowest tested release up (known-bad releases excluded), never one version;
    constraints-low.txt / constraints-high.txt: the two ends CI tests; constraints.txt (the main suite) inside."""
    bounds = requirements()
    lowest, newest, main = (
        pins(REPO / name) for name in ("constraints-low.txt", "constraints-high.txt", "constraints.txt")
    )
    for fw in FRAMEWORKS.values():
        assert bounds[fw.distribution] == fw.specifier(), fw.distribution
        assert not re.search(r"==|<", bounds[fw.distribution]), bounds[fw.distribution]
        assert lowest[fw.distribution] == fw.lowest, fw.distribution
        assert newest[fw.distribution] == fw.newest, fw.distribution
        assert frameworks.classify(fw, main[fw.distribution])[0] == frameworks.INSIDE, fw.distribution
    # apart from the frameworks, the three environments are the same
    others = [{k: v for k, v in pinned.items() if k not in FRAMEWORKS} for pinned in (lowest, newest, main)]
    assert others[0] == others[1] == others[2]


@pytest.mark.parametrize(
    "version, verdict",
    [("0.17.6", "inside"), ("0.19.8", "inside"), ("0.19.8+local", "inside"), ("0.17.6rc1", "inside")]
    + [("0.18.0", "known bad"), ("0.18.9", "known bad"), ("0.17.5", "below"), ("0.9.0", "below")]
    + [("0.19.9", "newer"), ("0.20.0", "newer"), ("1.0.0", "newer"), ("unknown", "unknown"), ("", "unknown")],
)
def test_classify_a_version_against_the_window_and_the_known_bad_releases(version, verdict):
    fw = Framework("x", "x", "0.17.6", "0.19.8", {}, known_bad=(("0.18", "it crashes"),))
    assert frameworks.classify(fw, version)[0] == verdict
    assert fw.window() == "0.17.6 - 0.19.8 except 0.18.x" and fw.specifier() == ">=0.17.6,!=0.18.*"


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"no '## {title}' section"
    return match.group(1)


def test_docs_state_the_window_and_every_target():
    versions = (REPO / "docs" / "versions.md").read_text()
    assert frameworks.versions_table() in versions
    assert frameworks.targets_table() in versions


def test_readme_versions_section_is_the_window_table():
    assert frameworks.versions_table() in section((REPO / "README.md").read_text(), "Versions")


@pytest.mark.parametrize(
    "version, inside",
    [("1.9.0", True), ("1.15.0", True), ("1.12.3", True), ("1.15.0+local", True), ("1.9.0rc1", True)]
    + [("1.8.9", False), ("1.15.1", False), ("1.16.0", False), ("unknown", False), ("", False)],
)
def test_in_window(version, inside):
    assert frameworks.in_window(Framework("x", "x", "1.9.0", "1.15.0", {}), version) is inside


def test_the_import_hook_waits_for_every_declared_trigger():
    from noam_plugin import _autoregister

    assert _autoregister.TRIGGER_PACKAGES == {module.partition(".")[0] for module in frameworks.TRIGGERS}
    assert set(_autoregister.post_import_hooks()) == set(frameworks.TRIGGERS)


def test_every_target_names_a_known_kind_and_tier():
    for fw in FRAMEWORKS.values():
        for target in fw.targets:
            assert target.kind in ("method", "attribute", "private", "patch", "guard"), target.where
            assert target.tier in (frameworks.CORRECTNESS, frameworks.CONVENIENCE), target.where
            assert target.why and ":" in target.where, target.where


def test_private_reads_in_the_integrations_go_through_read_private_and_are_declared():
    """No host's private attribute is read behind the declaration's back (the plugin's own `_noam_plugin*`
    attributes and NoamLR's are not a host's)."""
    for path in sorted((REPO / "noam_plugin" / "integrations").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            node.targets[0].id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                own = node.attr.startswith("_noam_plugin") or node.attr in ("_needs_prepare", "_prepared")
                assert own, f"{path.name}:{node.lineno}: .{node.attr} read directly; use frameworks.read_private"
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "read_private":
                where = node.args[1]
                where = where.value if isinstance(where, ast.Constant) else constants[where.id]
                frameworks.declared(where)  # UndeclaredTarget if not


CORRECT = frameworks.CORRECTNESS


def fake_framework(monkeypatch, name: str, target: Target) -> None:
    """A framework `name` 1.0 (that version installed) declaring one target, for this test only."""
    monkeypatch.setitem(FRAMEWORKS, name, Framework(name, name, "1.0", "1.0", {}, (target,)))


def test_read_private_tries_renamed_names_and_refuses_a_missing_correctness_read(monkeypatch):
    fake_framework(
        monkeypatch, "fakefw", Target("fakefw.engine:Engine._count", "private", CORRECT, "why", ("_count_v2",))
    )
    monkeypatch.setattr(frameworks, "REFUSED", {})
    monkeypatch.setattr(frameworks, "_REFUSED_PACKAGES", frozenset())

    class New:
        _count_v2 = 7

    assert frameworks.read_private(New(), "fakefw.engine:Engine._count") == 7
    assert frameworks.read_private(object(), "fakefw.engine:Engine._count", None) is None
    with pytest.raises(RegistrationError, match="refuses fakefw.*_count not found"):
        frameworks.read_private(object(), "fakefw.engine:Engine._count")
    with pytest.raises(frameworks.UndeclaredTarget):
        frameworks.read_private(New(), "fakefw.engine:Engine._other")


def test_install_uses_the_renamed_method_and_refuses_undeclared_ones(monkeypatch):
    import types

    from noam_plugin import integrations

    module = types.ModuleType("fakefw2.engine")

    class Engine:
        def step_v2(self):
            return "v2"

    module.Engine = Engine
    monkeypatch.setitem(sys.modules, "fakefw2.engine", module)
    fake_framework(monkeypatch, "fakefw2", Target("fakefw2.engine:Engine.step", "method", CORRECT, "why", ("step_v2",)))
    monkeypatch.setattr(frameworks, "installed_version", lambda framework: "1.0")
    seen = []

    def make(original):
        def wrapper(self):
            seen.append("wrapped")
            return original(self)

        return wrapper

    assert integrations.install("fakefw2", {"fakefw2.engine:Engine.step": make})
    assert Engine().step_v2() == "v2" and seen == ["wrapped"]
    with pytest.raises(frameworks.UndeclaredTarget):
        integrations.install("fakefw2", {"fakefw2.engine:Engine.other": make})


def test_check_routes_refuses_noamlr_built_or_stepped_under_a_refused_framework(monkeypatch):
    import torch

    from noam_plugin import NoamLR

    monkeypatch.setitem(frameworks.REFUSED, "fakefw3", "refused for the test")  # the dict NoamLR's hook reads
    monkeypatch.setattr(frameworks, "_REFUSED_PACKAGES", frozenset(frameworks.REFUSED))
    host = {"__name__": "fakefw3.engine"}
    exec("def build(make):\n    return make()\n", host)  # a function of the refused framework's code
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RegistrationError, match="refused for the test"):
        host["build"](lambda: NoamLR(optimizer, warmup_num_steps=3, d_model=4))
    scheduler = NoamLR(optimizer, warmup_num_steps=3, d_model=4)  # built outside it: fine
    model(torch.ones(1, 2)).sum().backward()
    with pytest.raises(RegistrationError, match="refused for the test"):
        host["build"](optimizer.step)  # ... but stepped by it: refused before it counts
    assert scheduler.updates == 0
    optimizer.step()  # stepped by the user's own code
    assert scheduler.updates == 1


# ---------------------------------------------------------------- real frameworks, one process each


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


PRELUDE = """
import math, warnings
warnings.simplefilter("always")
import torch
import noam_plugin
from noam_plugin import frameworks
from noam_plugin.frameworks import Target, FRAMEWORKS

ENGINE = "deepspeed.runtime.engine:DeepSpeedEngine."
W, PEAK = 3, 0.01
PARAMS = {"warmup_num_steps": W, "warmup_max_lr": PEAK}
CONFIG = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}, "gradient_clipping": 1.0,
          "zero_allow_untested_optimizer": True,
          "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "torch_adam": True}},
          "scheduler": {"type": "NoamLR", "params": PARAMS}}

def expected(k):  # docs/CONTRACT.md section 1 written again
    return PEAK * min(k / W, (W / k) ** 0.5)

def model_and_groups():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    first, second = list(model[0].parameters()), list(model[1].parameters())
    return model, [{"params": first}, {"params": second, "weight_decay": 0.0}]

def train(engine, updates):
    lrs = []
    for _ in range(updates):
        loss = engine(torch.randn(2, 4)).pow(2).sum()
        engine.backward(loss)
        engine.step()
        lrs.append([round(g["lr"], 12) for g in engine.optimizer.param_groups])
    return lrs

def add_target(framework, where, tier, wrappers):
    fw = FRAMEWORKS[framework]
    fw.targets = (*fw.targets, Target(where, "method", tier, "what a newer noam-plugin might need"))
    wrappers[where] = lambda original: original

def attempt(what, call):
    try:
        call()
        print("@", what, "ran")
    except Exception as error:
        print("@", what, type(error).__name__, " ".join(str(error).split()))
"""


def probe(code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOAM_PLUGIN_NO_AUTOREGISTER"}
    env.update(
        NOAM_PLUGIN_NO_AUTOREGISTER="1",  # the probe registers by hand, after changing the declaration
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=free_port(),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    run = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return [line[2:] for line in run.stdout.splitlines() if line.startswith("@ ")] + [
        "stderr: " + line for line in run.stderr.splitlines() if "noam-plugin" in line and "Warning" in line
    ]


@pytest.mark.window
def test_a_missing_convenience_costs_only_it_with_one_warning_and_zero2_counts_right():
    lines = probe(
        """
        from noam_plugin.integrations import deepspeed as ds_integration
        add_target("deepspeed", ENGINE + "_a_better_message", "convenience", ds_integration.ENGINE_WRAPPERS)
        import deepspeed
        noam_plugin.register()
        noam_plugin.register()  # twice: still one warning
        print("@ refused", sorted(frameworks.REFUSED))
        from noam_plugin.scheduler import NoamLR
        boundaries = []
        original = NoamLR.update_boundary
        NoamLR.update_boundary = lambda self, *a, **k: boundaries.append(1) or original(self, *a, **k)
        model, groups = model_and_groups()
        engine, _, _, scheduler = deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG)
        lrs = train(engine, 5)
        print("@ lrs", lrs == [[round(expected(k + 1), 12)] * 2 for k in range(1, 6)], lrs)
        print("@ count", scheduler.last_epoch, engine.global_steps, "boundaries", len(boundaries))
    """
    )
    assert lines[0] == "refused []"
    assert lines[1].startswith("lrs True"), lines[1]
    assert lines[2] == "count 5 5 boundaries 5"  # one update boundary per ZeRO update, not two nested
    warned = [line for line in lines if line.startswith("stderr:") and "_a_better_message" in line]
    assert len(warned) == 1 and "only this convenience is off" in warned[0], lines


@pytest.mark.window
def test_a_missing_correctness_target_refuses_config_and_object_routes_before_anything_is_built():
    lines = probe(
        """
        from noam_plugin.integrations import deepspeed as ds_integration
        from noam_plugin.integrations import accelerate as acc_integration
        add_target("deepspeed", ENGINE + "_what_the_count_needs", "correctness", ds_integration.ENGINE_WRAPPERS)
        add_target("accelerate", "accelerate.accelerator:Accelerator._what_the_count_needs", "correctness",
                   acc_integration.ACCELERATOR_WRAPPERS)
        import deepspeed, accelerate
        from noam_plugin import NoamLR
        noam_plugin.register()
        print("@ refused", sorted(frameworks.REFUSED))
        import deepspeed.runtime.engine as ds_engine
        built = []  # an engine that got as far as building its optimizer
        original = ds_engine.DeepSpeedEngine._configure_optimizer
        def configure(self, *args, **kwargs):
            built.append(1)
            return original(self, *args, **kwargs)
        ds_engine.DeepSpeedEngine._configure_optimizer = configure

        # 1. declared in the DeepSpeed config
        model, groups = model_and_groups()
        attempt("config", lambda: deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG))

        # 2. a NoamLR object given to deepspeed.initialize (ZeRO-2, two param groups): refused there
        model, groups = model_and_groups()
        optimizer = torch.optim.AdamW(groups, lr=0.0)
        scheduler = NoamLR(optimizer, **PARAMS)
        config = {k: v for k, v in CONFIG.items() if k not in ("optimizer", "scheduler")}
        attempt("object", lambda: deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                       config=config))
        print("@ object built", len(built), "count", scheduler.updates)

        # 3. a NoamLR object given to accelerator.prepare (Accelerate refused): refused there
        from accelerate import Accelerator
        accelerator = Accelerator(cpu=True)
        model, groups = model_and_groups()
        optimizer = torch.optim.AdamW(groups, lr=0.0)
        scheduler = NoamLR(optimizer, **PARAMS)
        attempt("prepare", lambda: accelerator.prepare(model, optimizer, scheduler))
        print("@ prepare count", scheduler.updates, "prepared", len(accelerator._models))
    """
    )
    assert lines[0] == "refused ['accelerate', 'deepspeed']", lines
    for line, route in zip(lines[1:3], ["config", "object"]):
        assert line.startswith(f"{route} RegistrationError noam-plugin refuses deepspeed "), line
        assert "_what_the_count_needs not found" in line, line
    for line in (lines[1], lines[2], lines[4]):  # one message names every refused framework, windows and choices
        assert "every route into " in line and "deepspeed" in line and "accelerate" in line, line
        assert f"deepspeed {FRAMEWORKS['deepspeed'].window()}" in line, line
        assert f'"deepspeed{FRAMEWORKS["deepspeed"].specifier()}"' in line, line
    assert lines[3] == "object built 0 count 0", lines  # refused before the engine built its optimizer
    assert lines[4].startswith("prepare RegistrationError noam-plugin refuses accelerate "), lines[4]
    assert "Refused at accelerator.prepare(NoamLR)" in lines[4], lines[4]
    assert lines[5] == "prepare count 0 prepared 0", lines


@pytest.mark.window
def test_below_the_floor_or_a_known_bad_release_is_refused_at_import_and_on_every_route():
    lines = probe(
        """
        import importlib.metadata
        ds, acc = importlib.metadata.version("deepspeed"), importlib.metadata.version("accelerate")
        FRAMEWORKS["deepspeed"].lowest = FRAMEWORKS["deepspeed"].newest = "99.0.0"  # the installed one: below it
        major_minor = ".".join(acc.split(".")[:2])
        FRAMEWORKS["accelerate"].known_bad = ((major_minor, "a defect found in this release line"),)
        import deepspeed, accelerate.accelerator
        noam_plugin.register()
        print("@ refused", sorted(frameworks.REFUSED))
        from noam_plugin import NoamLR
        model, groups = model_and_groups()
        attempt("config", lambda: deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG))
        optimizer = torch.optim.AdamW(groups, lr=0.0)
        scheduler = NoamLR(optimizer, **PARAMS)  # plain torch: fine
        config = {k: v for k, v in CONFIG.items() if k not in ("optimizer", "scheduler")}
        attempt("object", lambda: deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                       config=config))
        attempt("prepare", lambda: accelerate.Accelerator(cpu=True).prepare(model, optimizer, scheduler))
        import deepspeed.runtime.engine as engine
        print("@ wrapped", hasattr(engine.DeepSpeedEngine._take_model_step, "__noam_plugin__"))
        print("@ versions", ds, major_minor)
    """
    )
    assert lines[0] == "refused ['accelerate', 'deepspeed']", lines
    ds, major_minor = lines[5].split()[1:]
    for line in lines[1:4]:
        assert "RegistrationError noam-plugin refuses" in line, line
        assert f"deepspeed {ds} (below the lowest tested release, 99.0.0)" in line, line
        assert f"(a release known to be wrong: {major_minor}.x: a defect found in this release line)" in line, line
        assert "Choices: a release inside that window" in line and "exactly" not in line, line
        assert (
            '"deepspeed>=99.0.0,' in line
            and f'"accelerate>={FRAMEWORKS["accelerate"].lowest},!={major_minor}.*"' in line
        )
    assert lines[4] == "wrapped False"
    warned = [line for line in lines if line.startswith("stderr:") and "noam-plugin refuses" in line]
    assert len(warned) == 2, lines  # one warning per refused framework, at its import


@pytest.mark.window
def test_newer_than_tested_runs_with_one_warning_and_the_count_cross_checked_at_every_update():
    lines = probe(
        """
        tested = FRAMEWORKS["deepspeed"].lowest, FRAMEWORKS["deepspeed"].newest, FRAMEWORKS["deepspeed"].known_bad
        FRAMEWORKS["deepspeed"].lowest = FRAMEWORKS["deepspeed"].newest = "0.0.1"  # the installed one is newer
        FRAMEWORKS["deepspeed"].known_bad = ()
        import deepspeed
        noam_plugin.register()
        noam_plugin.register()
        print("@ refused", sorted(frameworks.REFUSED), "untested", sorted(frameworks.UNTESTED))
        model, groups = model_and_groups()
        engine, _, _, scheduler = deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG)
        lrs = train(engine, 3)
        print("@ lrs", lrs == [[round(expected(k + 1), 12)] * 2 for k in range(1, 4)])
        engine.skipped_steps += 1  # a drift: the engine's count of applied updates and NoamLR's part
        attempt("drift", lambda: train(engine, 1))

        # the same drift inside the tested window: seen only at the next save
        FRAMEWORKS["deepspeed"].lowest, FRAMEWORKS["deepspeed"].newest, FRAMEWORKS["deepspeed"].known_bad = tested
        frameworks.UNTESTED.clear()
        model, groups = model_and_groups()
        engine, _, _, scheduler = deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG)
        train(engine, 3)
        engine.skipped_steps += 1
        attempt("tested", lambda: train(engine, 1))
    """
    )
    assert lines[0] == "refused [] untested ['deepspeed']", lines
    assert lines[1] == "lrs True", lines
    assert lines[2].startswith("drift CountMismatchError NoamLR counted 4 applied optimizer updates, DeepSpeed "), lines
    assert "counted 3 (global_steps 4 - skipped_steps 1)" in lines[2], lines
    assert lines[3] == "tested ran", lines
    warned = [line for line in lines if line.startswith("stderr:") and "outside the versions" in line]
    assert len(warned) == 1, lines
    assert "deepspeed " in warned[0] and "(0.0.1)" in warned[0] and "NOAM_PLUGIN_STRICT_VERSIONS=1" in warned[0]


@pytest.mark.window
def test_strict_versions_refuses_a_newer_release_naming_the_way_back():
    lines = probe(
        """
        import os
        os.environ["NOAM_PLUGIN_STRICT_VERSIONS"] = "1"
        FRAMEWORKS["deepspeed"].lowest = FRAMEWORKS["deepspeed"].newest = "0.0.1"
        FRAMEWORKS["deepspeed"].known_bad = ()
        import deepspeed
        noam_plugin.register()
        model, groups = model_and_groups()
        attempt("config", lambda: deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG))
    """
    )
    assert lines[0].startswith("config RegistrationError noam-plugin refuses deepspeed "), lines
    assert "newer than the newest tested release, 0.0.1 and NOAM_PLUGIN_STRICT_VERSIONS=1" in lines[0], lines
    assert "unset NOAM_PLUGIN_STRICT_VERSIONS" in lines[0], lines


@pytest.mark.window
def test_the_trainer_refuses_at_construction_naming_every_refused_framework_and_cross_checks_when_untested():
    lines = probe(
        """
        import os
        from noam_plugin import NoamLR
        from transformers import Trainer, TrainingArguments, TrainerCallback
        FRAMEWORKS["transformers"].lowest = FRAMEWORKS["transformers"].newest = "99.0.0"
        FRAMEWORKS["accelerate"].lowest = FRAMEWORKS["accelerate"].newest = "99.0.0"
        noam_plugin.register()

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)
            def forward(self, x, labels=None):
                loss = (self.layer(x).squeeze(-1) - labels).pow(2).mean()
                return {"loss": loss}

        data = [{"x": torch.randn(4), "labels": torch.tensor(0.0)} for _ in range(16)]
        def make(output):
            model = Model()
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
            scheduler = NoamLR(optimizer, **PARAMS)
            args = TrainingArguments(output, max_steps=4, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                                     save_strategy="no", logging_steps=1, disable_tqdm=True)
            return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, scheduler))
        attempt("refused", lambda: make("out-refused"))
        print("@ refused", sorted(frameworks.REFUSED))
    """
    )
    assert lines[0].startswith("refused RegistrationError noam-plugin refuses transformers "), lines
    assert "accelerate" in lines[0] and "Refused at the Trainer's construction" in lines[0], lines
    assert lines[1] == "refused ['accelerate', 'transformers']", lines


@pytest.mark.window
def test_the_trainer_newer_than_tested_cross_checks_global_step_at_every_update():
    lines = probe(
        """
        from noam_plugin import NoamLR
        from transformers import Trainer, TrainingArguments, TrainerCallback
        tested = FRAMEWORKS["transformers"].lowest, FRAMEWORKS["transformers"].newest
        FRAMEWORKS["transformers"].lowest = FRAMEWORKS["transformers"].newest = "0.0.1"
        noam_plugin.register()
        print("@ untested", sorted(frameworks.UNTESTED))

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)
            def forward(self, x, labels=None):
                return {"loss": (self.layer(x).squeeze(-1) - labels).pow(2).mean()}

        class Drift(TrainerCallback):  # the Trainer's global_step parts from the applied updates at update 2
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    state.global_step += 1

        data = [{"x": torch.randn(4), "labels": torch.tensor(0.0)} for _ in range(16)]
        def run(output):
            model = Model()
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
            scheduler = NoamLR(optimizer, **PARAMS)
            args = TrainingArguments(output, max_steps=5, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                                     save_strategy="no", disable_tqdm=True)
            Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, scheduler),
                    callbacks=[Drift()]).train()
            return scheduler
        attempt("untested", lambda: run("out-untested"))
        FRAMEWORKS["transformers"].lowest, FRAMEWORKS["transformers"].newest = tested
        frameworks.UNTESTED.clear()
        attempt("tested", lambda: run("out-tested"))  # inside the window: no save, no check, no error
    """
    )
    assert lines[0] == "untested ['transformers']", lines
    assert lines[1].startswith("untested CountMismatchError NoamLR counted 2 applied optimizer updates, the HF "), lines
    assert "counted 3 (state.global_step)" in lines[1] and "update 3" in lines[1], lines
    assert lines[2] == "tested ran", lines


def torch_probe(code: str, **env: str) -> list[str]:
    """A fresh interpreter with torch and noam_plugin only (no framework)."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env}
    run = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return [line[2:] for line in run.stdout.splitlines() if line.startswith("@ ")] + [
        "stderr: " + line for line in run.stderr.splitlines() if "noam-plugin" in line
    ]


TORCH_RUN = """
from noam_plugin import NoamLR
model, groups = model_and_groups()
optimizer = torch.optim.AdamW(groups, lr=0.0)
ran_at = []
optimizer.register_step_pre_hook(lambda o, a, k: ran_at.append([g["lr"] for g in o.param_groups]))
def run():
    scheduler = NoamLR(optimizer, **PARAMS)
    for _ in range(4):
        model(torch.randn(2, 4)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    print("@ lrs", ran_at == [[expected(k)] * 2 for k in range(1, 5)], "count", scheduler.updates)
attempt("plain", run)
print("@ refused", sorted(frameworks.REFUSED), "untested", sorted(frameworks.UNTESTED))
"""


@pytest.mark.window
@pytest.mark.parametrize("where", ["newer", "below"])
def test_plain_torch_is_never_refused_for_its_version(where):
    window = '"0.0.1"' if where == "newer" else '"99.0.0"'
    lines = torch_probe(
        f'FRAMEWORKS["torch"].lowest = FRAMEWORKS["torch"].newest = {window}\n' + TORCH_RUN,
        NOAM_PLUGIN_STRICT_VERSIONS="1",  # not for torch either
    )
    assert lines[:3] == ["lrs True count 4", "plain ran", "refused [] untested ['torch']"], lines
    warned = [line for line in lines if line.startswith("stderr:") and "outside the versions" in line]
    assert len(warned) == 1 and "Plain torch is never refused for its version" in warned[0], lines


@pytest.mark.window
def test_plain_torch_without_the_step_hooks_the_count_needs_is_refused():
    lines = torch_probe("del torch.optim.Optimizer.register_step_post_hook\n" + TORCH_RUN)
    assert lines[0].startswith("plain RegistrationError noam-plugin refuses torch "), lines
    assert "Optimizer.register_step_post_hook not found" in lines[0], lines


@pytest.mark.window
def test_every_wrapper_in_a_registered_process_is_declared():
    """Every callable marked as a noam-plugin wrapper in the frameworks' modules is a declared target."""
    lines = probe(
        """
        import importlib, sys
        for name in ["deepspeed", "deepspeed.runtime.engine", "accelerate", "accelerate.accelerator",
                     "transformers.trainer", "transformers.integrations.deepspeed", "lightning", "hydra.utils",
                     "jsonargparse"]:
            importlib.import_module(name)
        from noam_plugin import NoamLR  # its torch patch (LRScheduler.__init__)
        noam_plugin.register()
        print("@ refused", sorted(frameworks.REFUSED))
        found = set()
        for module_name, module in list(sys.modules.items()):
            if module is None or module_name.partition(".")[0] not in ("deepspeed", "accelerate", "transformers",
                                                                        "lightning", "hydra", "jsonargparse", "torch"):
                continue
            for name, value in list(vars(module).items()):
                if callable(value) and getattr(value, "__dict__", {}).get("__noam_plugin__"):
                    found.add(f"{module_name}:{name}")
                if isinstance(value, type) and value.__module__ == module_name:
                    for attr, member in vars(value).items():
                        if getattr(member, "__dict__", {}).get("__noam_plugin__"):
                            found.add(f"{module_name}:{value.__name__}.{attr}")
        declared = {t.where for fw in FRAMEWORKS.values() for t in fw.targets}
        print("@ undeclared", sorted(found - declared))
        wrapped = {where for where in frameworks.USED if frameworks.declared(where).kind == "method"}
        print("@ used but not found", sorted(wrapped - found), len(found))
        from noam_plugin.integrations import resolve
        absent = [t for fw in FRAMEWORKS.values() for t in fw.targets if t.kind == "method" and resolve(t)[1] is None]
        print("@ absent here", len(absent), sorted({t.tier for t in absent}))
    """
    )
    assert lines[:2] == ["refused []", "undeclared []"], lines
    methods = sum(t.kind == "method" and fw.distribution != "torch" for fw in FRAMEWORKS.values() for t in fw.targets)
    patches = sum(t.kind == "patch" and t.module.startswith("torch.") for t in FRAMEWORKS["torch"].targets)
    # every declared method this release has is wrapped (+ torch's scheduler __init__ patches); one it lacks is a
    # convenience (a correctness one would have refused the framework above)
    absent = int(lines[3].split()[2])
    assert lines[2] == f"used but not found [] {methods + patches - absent}", lines
    assert lines[3] in ("absent here 0 []", f"absent here {absent} ['convenience']"), lines
