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


def test_pyproject_bounds_and_both_constraints_files_are_the_declared_window():
    bounds, newest, lowest = requirements(), pins(REPO / "constraints.txt"), pins(REPO / "constraints-low.txt")
    for fw in FRAMEWORKS.values():
        assert bounds[fw.distribution] == fw.specifier(), fw.distribution
        assert newest[fw.distribution] == fw.newest, fw.distribution
        assert lowest[fw.distribution] == fw.lowest, fw.distribution
    # apart from the window, the two environments are the same
    assert {k: v for k, v in newest.items() if k not in FRAMEWORKS} == {
        k: v for k, v in lowest.items() if k not in FRAMEWORKS
    }


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
            assert target.kind in ("method", "attribute", "private", "patch"), target.where
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
        print("@", what, type(error).__name__, str(error)[:400])
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
def test_a_missing_correctness_target_refuses_config_and_object_routes():
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

        # 1. declared in the DeepSpeed config
        model, groups = model_and_groups()
        attempt("config", lambda: deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG))

        # 2. a NoamLR object given to deepspeed.initialize (ZeRO-2, two param groups)
        model, groups = model_and_groups()
        optimizer = torch.optim.AdamW(groups, lr=0.0)
        scheduler = NoamLR(optimizer, **PARAMS)
        config = {k: v for k, v in CONFIG.items() if k not in ("optimizer", "scheduler")}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        ran_at = []  # the lr of every inner optimizer step ZeRO makes (one per param group)
        optimizer.register_step_pre_hook(lambda o, args, kwargs: ran_at.extend(g["lr"] for g in o.param_groups))
        attempt("object", lambda: train(engine, 2))
        print("@ object count", scheduler.updates, len(ran_at) >= 1 and all(lr == expected(1) for lr in ran_at))

        # 3. a NoamLR object given to accelerator.prepare (Accelerate refused)
        from accelerate import Accelerator
        accelerator = Accelerator(cpu=True)
        model, groups = model_and_groups()
        optimizer = torch.optim.AdamW(groups, lr=0.0)
        scheduler = NoamLR(optimizer, **PARAMS)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        def accelerate_step():
            accelerator.backward(model(torch.randn(2, 4)).pow(2).sum())
            optimizer.step()
        attempt("prepare", accelerate_step)
        print("@ prepare count", scheduler.scheduler.updates)
    """
    )
    assert lines[0] == "refused ['accelerate', 'deepspeed']", lines
    for line, route in zip(lines[1:], ["config", "object"]):
        assert line.startswith(f"{route} RegistrationError noam-plugin refuses deepspeed "), line
        assert "_what_the_count_needs not found" in line and "every route into deepspeed refuses" in line, line
        assert f"Versions that work: deepspeed {FRAMEWORKS['deepspeed'].window()}" in line, line
    assert lines[3] == "object count 0 True", lines  # nothing counted, no step at a wrong lr
    assert lines[4].startswith("prepare RegistrationError noam-plugin refuses accelerate "), lines[4]
    assert lines[5] == "prepare count 0", lines


@pytest.mark.window
def test_a_version_outside_the_window_is_refused_naming_the_versions_that_work():
    lines = probe(
        """
        FRAMEWORKS["deepspeed"].lowest = FRAMEWORKS["deepspeed"].newest = "99.0.0"
        import deepspeed
        noam_plugin.register()
        model, groups = model_and_groups()
        attempt("config", lambda: deepspeed.initialize(model=model, model_parameters=groups, config=CONFIG))
        import deepspeed.runtime.engine as engine
        print("@ wrapped", hasattr(engine.DeepSpeedEngine._take_model_step, "__noam_plugin__"))
    """
    )
    assert re.match(r"config RegistrationError noam-plugin refuses deepspeed \S+: version \S+ is outside", lines[0])
    assert "Versions that work: deepspeed 99.0.0" in lines[0], lines[0]
    assert lines[1] == "wrapped False"
    assert sum("refuses deepspeed" in line for line in lines if line.startswith("stderr:")) == 1, lines


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
    """
    )
    assert lines[:2] == ["refused []", "undeclared []"], lines
    methods = sum(t.kind == "method" and fw.distribution != "torch" for fw in FRAMEWORKS.values() for t in fw.targets)
    patches = sum(t.kind == "patch" and t.module.startswith("torch.") for t in FRAMEWORKS["torch"].targets)
    assert lines[2] == f"used but not found [] {methods + patches}", lines  # + torch's scheduler __init__ patches
