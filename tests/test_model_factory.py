"""A user's own model (workload.model = "file.py:fn" / "pkg.mod:fn"): spec, loading errors,
estimate, CPU probe and a few training steps, all through the real payload and real PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.errors import ModelError, SpecError
from launcher.estimate.baseline import measure_baseline
from launcher.estimate.flops import workload_cost
from launcher.spec import load_spec, parse_spec
from payloads.factory import FactoryError, build_factory_model

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    """A project directory holding the U-Net of jobs/models (as a user's project would)."""
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "jobs" / "models").mkdir(parents=True)
    shutil.copy(REPO / "jobs" / "models" / "unet.py", tmp_path / "jobs" / "models" / "unet.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _spec(model: str = "jobs/models/unet.py:build", **workload) -> str:
    w = {"model": model, "model_args": {"in_channels": 3, "num_classes": 4, "width": 4, "depth": 2},
         "input_shape": [3, 32, 32], "num_classes": 4, "batch_size": 4, "samples_per_epoch": 64,
         "precision": "fp32", **workload}
    return json.dumps({"name": "user-model", "workload": w})


def test_spec_takes_a_factory_its_arguments_and_input_shape():
    w = parse_spec(_spec()).workload
    assert w.is_factory and w.model_args["width"] == 4
    assert w.sample_shape == (3, 32, 32) and (w.in_channels, w.image_size) == (3, 32)
    assert parse_spec(_spec("mypkg.nets:build")).workload.is_factory
    # image_size / in_channels stay valid shorthand for built-ins
    w = parse_spec('{"name": "a", "workload": {"model": "resnet18", "image_size": 64}}').workload
    assert w.sample_shape == (3, 64, 64) and not w.is_factory


@pytest.mark.parametrize("workload, fragment", [
    ({"model": "resnet5"}, "did you mean 'resnet50'"),
    ({"model": "nets.py:"}, "not a model factory"),
    ({"model": "models/net.py"}, "write 'models/net.py:build' (the function's name after a colon)"),
    ({"model": "resnet18", "input_shape": [3, 32, 16]}, "square images"),
    ({"model": "resnet18", "model_args": {"a": 1}}, "model_args are for a model factory"),
    ({"input_shape": [3, 32, 32], "image_size": 64}, "disagrees with image_size"),
    ({"input_shape": [0, 2]}, "positive whole numbers"),
])
def test_spec_rejects_bad_models_in_one_line(workload, fragment):
    base = {"model": "jobs/models/unet.py:build"} if "model" not in workload else {}
    with pytest.raises(SpecError) as e:
        parse_spec(json.dumps({"name": "a", "workload": {**base, **workload}}), "job.yaml")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def _write(project: Path, name: str, text: str) -> None:
    (project / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("source, ref, fragment", [
    (None, "missing.py:build", "no file missing.py"),
    ("import torch\ndef build(:\n    pass\n", "bad.py:build", "bad.py:2: importing model 'bad.py:build': SyntaxError"),
    ("import torch\nx = 1\nraise RuntimeError('no GPU here')\n", "bad.py:build", "bad.py:3: importing model 'bad.py:build': RuntimeError: no GPU here"),
    ("import torch\n\ndef build(width):\n    return torch.nn.Linear(width, nope)\n", "bad.py:build",
     "bad.py:4: building model 'bad.py:build' with model_args {'width': 3}: NameError: name 'nope' is not defined"),
    ("def build():\n    return 42\n", "bad.py:build", "returned int, not a torch.nn.Module"),
    ("def other():\n    pass\n", "bad.py:build", "defines no 'build'"),
    (None, "no_such_pkg.nets:build", "no module named 'no_such_pkg'"),
    # model_args that do not fit the factory: the user's def, not gpujob's own call site
    ("import torch\n\ndef build(depth):\n    return torch.nn.Linear(3, depth)\n", "bad.py:build",
     "bad.py:3: building model 'bad.py:build' with model_args {}: TypeError: build() missing 1 required positional "
     "argument: 'depth'"),
])
def test_factory_errors_name_file_line_and_exception(project, source, ref, fragment):
    if source is not None:
        _write(project, "bad.py", source)
    with pytest.raises(FactoryError) as e:
        build_factory_model(ref, {"width": 3} if "width" in (source or "") else {}, str(project))
    assert fragment in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_dotted_module_factory_imports_from_the_project(project):
    (project / "mynets").mkdir()
    _write(project, "mynets/__init__.py", "")
    _write(project, "mynets/small.py", "import torch\ndef build(n=3):\n    return torch.nn.Linear(n, 2)\n")
    m = build_factory_model("mynets.small:build", {"n": 5}, str(project))
    assert m.in_features == 5


def test_estimate_cli_reports_a_broken_factory_in_one_line(project):
    _write(project, "bad.py", "import torch\n\ndef build(**kw):\n    return torch.nn.Conv2d(3, 4, 3, padding='wrong')\n")
    (project / "job.yaml").write_text(_spec("bad.py:build"), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert any(line.startswith("error: bad.py:4: building model 'bad.py:build'") and "ValueError: Invalid padding" in line
               for line in lines), res.output
    assert "Traceback" not in res.output


def test_user_model_is_estimated_probed_and_trained(project):
    spec = parse_spec(_spec())
    # 1. the estimate counts the factory's model (per-operation costs, cached)
    cost = workload_cost(spec.workload)
    assert cost.source == "computed" and cost.ops is not None
    assert cost.params == sum(p.numel() for p in build_factory_model(
        spec.workload.model, spec.workload.model_args).parameters())
    assert cost.train_flops_per_sample > 2.5 * cost.forward_flops_per_sample > 0
    assert workload_cost(spec.workload).source == "cache"
    (project / "job.yaml").write_text(_spec(), encoding="utf-8")
    out = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["candidates"]
    assert rows and all(r["samples_per_second"] > 0 for r in rows if r.get("samples_per_second") is not None)
    # 2. the CPU probe runs the same factory through the real payload
    base = measure_baseline(spec, probe_seconds=2.0)
    assert base.measured and base.samples_per_second > 0, base.note
    # 3. the payload trains it for a few steps (dense labels: one class per pixel)
    cfg = {**spec.workload.model_dump(mode="json"), "output_dir": str(project / "out")}
    (project / "job.json").write_text(json.dumps(cfg), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "payloads" / "train.py"), "--config", "job.json",
                           "--device", "cpu", "--max-steps", "3", "--log-every", "1"],
                          capture_output=True, text=True, timeout=300, cwd=project)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 3 and all(e["loss"] > 0 for e in steps), proc.stderr[-2000:]
    assert (project / "out" / "checkpoints" / "last.pt").exists()


def test_payload_reports_a_broken_factory_in_one_line(project):
    _write(project, "bad.py", "def build():\n    raise KeyError('width')\n")
    proc = subprocess.run([sys.executable, str(REPO / "payloads" / "train.py"), "--model", "bad.py:build",
                           "--device", "cpu", "--max-steps", "1"], capture_output=True, text=True, timeout=120,
                          cwd=project)
    assert proc.returncode == 2
    assert "bad.py:2: building model 'bad.py:build' with model_args {}: KeyError: 'width'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_jobs_unet_spec_names_a_file_that_exists():
    spec = load_spec(REPO / "jobs" / "unet.yaml")
    assert (REPO / spec.workload.model.rpartition(":")[0]).is_file()


def test_factory_needing_a_missing_shape_is_a_model_error(project):
    spec = parse_spec(_spec(input_shape=[3, 30, 30]))  # the U-Net pools twice: 30 -> 15 -> 7, skips mismatch
    with pytest.raises(ModelError) as e:
        workload_cost(spec.workload)
    assert "cannot train on input_shape [3, 30, 30]" in str(e.value)


_BROKEN = {  # a factory that fails to build, and one that builds but cannot train at the spec's input_shape
    "build": ("import torch\n\ndef build(**kw):\n    raise RuntimeError('boom')\n", {},
              "bad.py:4: building model 'bad.py:build' with model_args {'in_channels': 3, 'num_classes': 4, 'width': 4, "
              "'depth': 2}: RuntimeError: boom (fix the model factory or workload.model_args)"),
    "shape": (None, {"input_shape": [3, 30, 30]}, "cannot train on input_shape [3, 30, 30]"),
}


def _bracket_depth(text: str) -> int:
    """How deep the round brackets of ``text`` nest (1: none inside another)."""
    depth = deepest = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    return deepest


@pytest.mark.parametrize("command", [["validate"], ["estimate", "--no-baseline"], ["estimate"],
                                     ["run", "--dry-run"], ["run", "--provider", "local"]])
@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_a_broken_factory_is_bad_input_for_every_command(project, command, case):
    """Bad input exits 2 in one line from every command, before any probe or run record."""
    source, workload, fragment = _BROKEN[case]
    if source is not None:
        _write(project, "bad.py", source)
    model = "bad.py:build" if source is not None else "jobs/models/unet.py:build"
    (project / "job.yaml").write_text(_spec(model, **workload), encoding="utf-8")
    res = cli.invoke(app, [*command, "job.yaml"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.output
    assert _bracket_depth(errors[0]) == 1, errors[0]  # was "(fix the model factory (workload.model, ...))"
    assert "Traceback" not in res.output and "measuring this machine's CPU" not in res.output
    from launcher.store import Store

    assert Store().list_runs() == []  # refused before anything was recorded or created


def test_a_package_missing_here_is_refused_by_estimate_but_not_by_a_run(project):
    """'pkg.mod:fn' whose package is not installed here: the estimate cannot count it (exit 2,
    how to install it); validate and a run go on (the machine may install it with setup:) and
    the plan says why it has no estimate."""
    (project / "job.yaml").write_text(_spec("no_such_pkg.nets:build"), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code == 2 and "no module named 'no_such_pkg'" in res.output and "pip install" in res.output
    assert cli.invoke(app, ["validate", "job.yaml"]).exit_code == 0
    res = cli.invoke(app, ["run", "--dry-run", "--provider", "ssh", "--host", "gpu-box", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert "none: model 'no_such_pkg.nets:build': no module named 'no_such_pkg'" in " ".join(res.output.split())
    # a local run without setup: this machine is where the job runs, so it cannot find it either
    res = cli.invoke(app, ["run", "job.yaml"])
    assert res.exit_code == 2 and "no module named 'no_such_pkg'" in res.output
    from launcher.store import Store

    assert Store().list_runs() == []


def test_validate_says_when_it_could_not_build_the_model(project, monkeypatch):
    """Without PyTorch (a gpujob installed without the train extra) validate said a plain "ok" for
    a factory it never built; it now says the model was not built here and why."""
    from launcher.estimate import flops

    torch_here = flops._torch_available
    (project / "job.yaml").write_text(_spec(), encoding="utf-8")
    res = cli.invoke(app, ["validate", "job.yaml"])
    assert res.exit_code == 0 and "not built" not in res.output
    monkeypatch.setattr(flops, "_torch_available", lambda: False)
    res = cli.invoke(app, ["validate", "job.yaml"])
    assert res.exit_code == 0 and "model not built here: PyTorch is not installed here" in res.output
    (project / "pkg.yaml").write_text(_spec("no_such_pkg.nets:build"), encoding="utf-8")
    monkeypatch.setattr(flops, "_torch_available", torch_here)
    res = cli.invoke(app, ["validate", "pkg.yaml"])
    assert res.exit_code == 0 and "its package no_such_pkg is not installed here" in res.output


@pytest.mark.parametrize("ref", ["models/net.py:build", "models.net:build"])
def test_a_model_file_imports_the_project_s_other_modules(project, ref):
    # models/net.py importing models/blocks.py (from the project, or beside it as a script would)
    # failed with "No module named 'models'": a file factory was loaded with nothing on sys.path;
    # and the payload's own models.py took the name `models` from the user's package on the machine
    # ("no module named 'models.net'") after validate and estimate had passed it.
    (project / "models").mkdir()
    _write(project, "models/__init__.py", "")
    _write(project, "models/blocks.py", "import torch\n\ndef block(n):\n    return torch.nn.Linear(n, 2)\n")
    _write(project, "models/layers.py", "import torch\n\ndef act():\n    return torch.nn.ReLU()\n")
    sibling = "from layers import act" if ".py:" in ref else "from models.layers import act"
    _write(project, "models/net.py", f"import torch\nfrom models.blocks import block\n{sibling}\n\n"
                                     "def build(n=3):\n    return torch.nn.Sequential(act(), block(n))\n")
    m = build_factory_model(ref, {"n": 5}, str(project))
    assert m[1].in_features == 5
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")] + ["layers"]:
        sys.modules.pop(name, None)  # this project's modules, out of the test process
    # the payload (what the CPU probe and the GPU run) builds and trains it too
    spec = parse_spec(_spec(ref, model_args={"n": 5}, input_shape=[5], num_classes=2))
    cfg = {**spec.workload.model_dump(mode="json"), "output_dir": str(project / "out")}
    (project / "job.json").write_text(json.dumps(cfg), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "payloads" / "train.py"), "--config", "job.json",
                           "--device", "cpu", "--max-steps", "2", "--log-every", "1"],
                          capture_output=True, text=True, timeout=300, cwd=project)
    assert proc.returncode == 75 and "\"event\": \"step\"" in proc.stdout, proc.stderr[-2000:]  # stopped at --max-steps


@pytest.mark.parametrize("ref", ["net.py:build", "mynets.net:build"])
def test_editing_a_project_file_the_factory_imports_is_a_new_model(project, ref):
    # net.py builds from blocks.py: a count cached on net.py alone kept validate passing a model
    # that blocks.py had broken, and the estimate pricing the old FLOPs.
    from launcher.estimate import baseline, learned
    from payloads.factory import source_digest

    folder = project if ".py:" in ref else project / "mynets"  # a file, or a package: relative import
    folder.mkdir(exist_ok=True)
    _write(folder, "__init__.py", "")
    _write(folder, "net.py", f"import torch\nfrom {'' if folder == project else '.'}blocks import block\n\n"
                             "def build():\n"
                             "    return torch.nn.Sequential(torch.nn.Flatten(), block(), torch.nn.Linear(8, 4))\n")
    _write(folder, "blocks.py", "import torch\n\ndef block():\n    return torch.nn.Linear(3 * 32 * 32, 8)\n")
    spec = parse_spec(_spec(ref, model_args={}))
    before = (source_digest(ref), learned.signature(spec.workload), baseline._workload_key(spec.workload, 4))
    assert before[0] is not None and workload_cost(spec.workload).params == 3 * 32 * 32 * 8 + 8 + 8 * 4 + 4
    _write(folder, "blocks.py", "import torch\n\ndef block():\n    return torch.nn.Linear(3 * 32 * 32, 16)\n")
    for name in [n for n in sys.modules if n.startswith("mynets")] + ["blocks"]:
        sys.modules.pop(name, None)  # a new gpujob command is a new process: nothing imported yet
    after = (source_digest(ref), learned.signature(spec.workload), baseline._workload_key(spec.workload, 4))
    assert all(a != b for a, b in zip(before, after))
    with pytest.raises(ModelError, match="mat1 and mat2 shapes cannot be multiplied"):
        workload_cost(spec.workload)
    (project / "job.yaml").write_text(_spec(ref, model_args={}), encoding="utf-8")
    res = cli.invoke(app, ["validate", "job.yaml"])
    assert res.exit_code == 2 and "cannot train on input_shape" in res.output, res.output


def test_an_installed_package_is_digested_by_its_own_module_not_followed(tmp_path, monkeypatch):
    # Following imports through site-packages reads a release file by file (torch.nn:Linear:
    # 2.6 s for 200 files); an installed package's module stands for its release.
    from payloads.factory import source_digest

    pkg = tmp_path / "lib" / "site-packages" / "instpkg"
    pkg.mkdir(parents=True)
    _write(pkg, "__init__.py", "")
    _write(pkg, "nets.py", "from instpkg.blocks import block\ndef build():\n    return block()\n")
    _write(pkg, "blocks.py", "def block():\n    return 1\n")
    monkeypatch.syspath_prepend(str(pkg.parent))
    first = source_digest("instpkg.nets:build")
    _write(pkg, "blocks.py", "def block():\n    return 2\n")
    assert first is not None and source_digest("instpkg.nets:build") == first
    _write(pkg, "nets.py", "from instpkg.blocks import block\ndef build():\n    return block() + 1\n")
    assert source_digest("instpkg.nets:build") != first
    assert source_digest("no_such_pkg.nets:build") is None


def test_a_model_folder_does_not_shadow_the_standard_library(project):
    # The factory's own folder is searched after everything else: models/colorsys.py beside the
    # model must not replace the standard library's colorsys for the rest of the process.
    import importlib

    (project / "models").mkdir()
    _write(project, "models/colorsys.py", "SHADOW = True\n")
    _write(project, "models/helpers.py", "import torch\n\ndef head():\n    return torch.nn.Linear(3, 2)\n")
    _write(project, "models/net.py", "from helpers import head\n\ndef build():\n    return head()\n")
    sys.modules.pop("colorsys", None)
    assert build_factory_model("models/net.py:build", {}, str(project)).in_features == 3
    sys.modules.pop("colorsys", None)
    sys.modules.pop("helpers", None)
    assert not hasattr(importlib.import_module("colorsys"), "SHADOW")


def test_validate_of_several_specs_names_the_one_whose_model_is_broken(project):
    _write(project, "bad.py", "import torch\n\ndef build():\n    return torch.nn.Linear(7, 4)\n")
    (project / "good.yaml").write_text(_spec(), encoding="utf-8")
    (project / "bad.yaml").write_text(_spec("bad.py:build", model_args={}), encoding="utf-8")
    res = cli.invoke(app, ["validate", "good.yaml", "bad.yaml"])
    assert res.exit_code == 2 and res.output.startswith("error: bad.yaml: model 'bad.py:build' cannot train"), res.output


def test_a_factory_without_torch_here_says_to_install_the_cpu_build(project, monkeypatch):
    # 'pip install torch' (what it said) pulls the CUDA build, gigabytes, on Linux.
    from launcher.estimate import flops

    monkeypatch.setattr(flops, "_torch_available", lambda: False)
    (project / "job.yaml").write_text(_spec(), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code != 0 and "gpujob[train]" in res.output and "whl/cpu" in res.output, res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1


def test_a_misspelt_model_arg_names_the_arguments_the_factory_takes(project):
    _write(project, "bad.py", "import torch\n\ndef build(width=8, depth=2, *, dropout=0.0):\n"
                              "    return torch.nn.Linear(width, depth)\n")
    with pytest.raises(FactoryError) as e:
        build_factory_model("bad.py:build", {"widht": 8}, str(project))
    assert str(e.value).endswith("TypeError: build() got an unexpected keyword argument 'widht'; it takes width, "
                                 "depth, dropout (did you mean 'width'?)"), str(e.value)
