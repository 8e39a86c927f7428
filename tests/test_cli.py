"""The command line through typer's CliRunner and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app

REPO = Path(__file__).resolve().parent.parent
VGG = str(REPO / "jobs" / "vgg16.yaml")
cli = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_lists_commands():
    res = cli.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "estimate", "run", "ls", "logs", "show", "down", "gc", "catalog"):
        assert cmd in res.output


def test_help_imports_no_sdk_or_torch():
    code = ("import sys; from launcher.cli import app; from typer.testing import CliRunner; "
            "CliRunner().invoke(app, ['--help']); "
            "bad = [m for m in ('boto3', 'botocore', 'google.cloud', 'torch', 'paramiko') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_dash_m_launcher():
    proc = subprocess.run([sys.executable, "-m", "launcher", "--version"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "gpujob" in proc.stdout


def test_validate_ok_and_bad(home):
    assert cli.invoke(app, ["validate", VGG]).exit_code == 0
    bad = home / "bad.yaml"
    bad.write_text("name: x\nworkload:\n  batchsize: 3\n")
    res = cli.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "bad.yaml:3" in res.output and "did you mean 'batch_size'" in res.output
    assert "Traceback" not in res.output


def test_validate_refuses_a_factory_file_missing_from_the_project(home, monkeypatch):
    """`validate` said ok for `model: "models/nope.py:build"` although no such file exists; only
    `estimate`/`run` found out. It is now one line naming the spec's line, exit 2."""
    spec = home / "mine.yaml"
    spec.write_text("name: mine\nworkload:\n  model: \"models/nope.py:build\"\n  input_shape: [3, 32, 32]\n"
                    "  num_classes: 10\n")  # the model below has 10 outputs
    monkeypatch.chdir(home)
    res = cli.invoke(app, ["validate", str(spec)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "mine.yaml:3" in res.output and "no file models/nope.py in" in res.output
    (home / "models").mkdir()
    (home / "models" / "nope.py").write_text("import torch\n\ndef build(**kw):\n"
                                             "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))\n")
    assert cli.invoke(app, ["validate", str(spec)]).exit_code == 0
    monkeypatch.chdir(REPO)  # the repository's own example names jobs/models/unet.py from the project root
    assert cli.invoke(app, ["validate", str(Path(REPO) / "jobs" / "unet.yaml")]).exit_code == 0


@pytest.mark.parametrize("command", [["validate"], ["estimate", "--no-baseline"], ["estimate", "--json"], ["run"],
                                     ["run", "--dry-run"], ["run", "--provider", "aws", "--dry-run"]])
def test_a_missing_factory_file_is_the_same_line_from_every_command(home, monkeypatch, command):
    """Only `validate` named the spec's line for `model: "models/nope.py:build"`; `estimate` and
    `run` said "model 'models/nope.py:build': no file ... (...) (fix the model factory (...))" with no
    line. Every command now prints validate's one line: file and line, the field, the fix; exit 2."""
    spec = home / "mine.yaml"
    spec.write_text("name: mine\nworkload:\n  model: \"models/nope.py:build\"\n  input_shape: [3, 32, 32]\n")
    monkeypatch.chdir(home)
    res = cli.invoke(app, [*command, "mine.yaml"])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr == (
        f"error: mine.yaml:3: workload.model: no file models/nope.py in {home.resolve()} (paths are relative to the "
        "project directory, the one gpujob runs in and uploads: run gpujob from there or fix the path)\n")


@pytest.mark.parametrize("command", [["validate"], ["estimate"], ["run", "--dry-run"], ["run", "--dry-run", "--provider", "aws"]])
@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_a_factory_file_outside_the_project_is_refused_before_any_machine(home, monkeypatch, command, where):
    """'../lib/net.py:build' (or an absolute path) passed validate and a cloud dry run; the machine
    gets the project directory only, and a local run starts in its copy: 'no file ../lib/net.py in
    .../runs/RUN/work' after start-up, exit 8."""
    (home / "lib").mkdir()
    (home / "lib" / "net.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(3, 2)\n")
    (home / "proj").mkdir()
    ref = "../lib/net.py" if where == "parent" else str(home / "lib" / "net.py")
    (home / "proj" / "job.yaml").write_text(f"name: mine\nworkload:\n  model: \"{ref}:build\"\n  input_shape: [3]\n"
                                            "  num_classes: 2\nresources: {accelerators: T4:1}\n")
    monkeypatch.chdir(home / "proj")
    res = cli.invoke(app, [*command, "job.yaml"])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr.startswith(
        f"error: job.yaml:3: workload.model: {ref} is outside the project directory {(home / 'proj').resolve()}, "
        "which is what gpujob uploads"), res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_a_factory_file_the_upload_leaves_out_is_refused_before_any_machine(home, monkeypatch):
    """experiments/ in .gitignore: validate passed models in it, then the machine (and a local
    run's copy) had no such file."""
    (home / "experiments").mkdir()
    (home / "experiments" / "net.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(3, 2)\n")
    (home / ".gitignore").write_text("experiments/\n")
    (home / "job.yaml").write_text("name: mine\nworkload:\n  model: \"experiments/net.py:build\"\n"
                                   "  input_shape: [3]\n  num_classes: 2\n")
    monkeypatch.chdir(home)
    res = cli.invoke(app, ["validate", "job.yaml"])
    assert res.exit_code == 2 and res.stderr.startswith(
        "error: job.yaml:3: workload.model: experiments/net.py is not uploaded: the upload's ignore rules"), res.output
    (home / ".gpujobignore").write_text("!experiments/\n")  # what the error says to do
    assert cli.invoke(app, ["validate", "job.yaml"]).exit_code == 0


def test_bad_spec_as_a_process_is_one_line_exit_2(home):
    bad = home / "bad.yaml"
    bad.write_text("name: x\nlimits:\n  max_duration: forever\n")
    proc = subprocess.run([sys.executable, "-m", "launcher", "run", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.yaml:3" in lines[0] and "Traceback" not in proc.stderr


def test_estimate_json_contract():
    res = cli.invoke(app, ["estimate", VGG, "--json", "--no-baseline", "--all"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    assert est["job"]["name"] == "vgg16-imagenet-1epoch" and est["job"]["model"] == "vgg16"
    assert {"device", "samples_per_second", "seconds", "measured"} <= set(est["baseline"])
    assert est["baseline"]["measured"] is False
    assert {"source", "snapshot", "age_days"} <= set(est["catalog"])
    cands = est["candidates"]
    assert cands and {"aws", "gcp"} <= {c["provider"] for c in cands}
    keys = {"provider", "instance_type", "region", "gpu", "gpu_count", "spot", "price_per_hour",
            "samples_per_second", "train_seconds", "overhead_seconds", "total_seconds", "total_usd", "fits_memory"}
    for c in cands:
        assert keys <= set(c)
        assert isinstance(c["spot"], bool) and isinstance(c["fits_memory"], bool)
    for section in ("requested", "alternative"):
        priced = [c["total_usd"] for c in cands if c["total_usd"] is not None and c["fits_memory"]
                  and c["section"] == section]
        assert priced == sorted(priced)


def test_estimate_table_mentions_cpu_and_free_tiers():
    res = cli.invoke(app, ["estimate", VGG, "--no-baseline"])
    assert res.exit_code == 0, res.output
    assert "this machine" in res.output and "Colab" in res.output and "prices:" in res.output


def test_catalog_show_filters_and_json():
    res = cli.invoke(app, ["catalog", "show", "--gpu", "A100", "--provider", "gcp", "--json"])
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["offers"] and all(o["provider"] == "gcp" for o in data["offers"])
    assert {o["gpu"] for o in data["offers"]} == {"A100", "A100-80GB"}  # a GPU filter matches the family
    assert data["provenance"]["source"]
    res = cli.invoke(app, ["catalog", "show", "--gpu", "X999"])
    assert res.exit_code != 0 and "GPUs in the catalog" in res.output


def test_catalog_update_offline_is_one_clear_line(monkeypatch):
    import launcher.catalog as catalog

    def offline(*a, **k):
        from launcher.errors import CatalogError

        raise CatalogError("cannot reach the catalog; you are offline? the bundled snapshot stays in use")

    monkeypatch.setattr(catalog, "update_catalog", offline)
    res = cli.invoke(app, ["catalog", "update"])
    assert res.exit_code == 1 and "offline" in res.output


def test_run_dry_run_local():
    res = cli.invoke(app, ["run", str(REPO / "jobs" / "quickstart.yaml"), "--dry-run", "--no-baseline"])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output


def test_ssh_provider_needs_host():
    res = cli.invoke(app, ["run", VGG, "--provider", "ssh"])
    assert res.exit_code == 2 and "--host" in res.output


@pytest.mark.parametrize("args,flag", [(["--host", "gpu-box"], "--host"), (["--region", "us-east-1"], "--region"),
                                       (["--provider", "ssh", "--host", "h", "--ssh-cidr", "1.2.3.4/32"], "--ssh-cidr"),
                                       (["--provider", "aws", "--project", "p"], "--project")])
def test_an_option_of_another_provider_is_refused_not_ignored(args, flag, tmp_path, monkeypatch):
    """`gpujob run jobs/quickstart.yaml --host gpu-box` (the user forgot --provider ssh) trained on
    this machine: --host, --region and the like were ignored by providers they mean nothing to."""
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    res = cli.invoke(app, ["run", str(REPO / "jobs" / "quickstart.yaml"), *args, "--no-baseline"])
    assert res.exit_code == 2 and f"{flag} is for --provider" in res.output, res.output
    assert "add --provider" in res.output and not (tmp_path / "home" / "runs.db").exists()  # no run made


def test_bad_ssh_cidr():
    res = cli.invoke(app, ["run", VGG, "--provider", "aws", "--ssh-cidr", "nope", "--dry-run"])
    assert res.exit_code == 2 and "--ssh-cidr" in res.output


def test_unknown_run_id():
    res = cli.invoke(app, ["show", "rnothere"])
    assert res.exit_code == 1 and "gpujob ls" in res.output


def test_run_ls_show_logs_plot(home):
    spec = home / "tiny.yaml"
    spec.write_text("name: tiny\nworkload: {model: mlp, image_size: 8, num_classes: 10, in_channels: 1, "
                    "dataset: digits, samples_per_epoch: 256, epochs: 1, batch_size: 64, precision: fp32}\n")
    res = cli.invoke(app, ["run", str(spec), "--no-baseline", "--json"])
    assert res.exit_code == 0, res.output
    events = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith("{")]
    report = events[-1]
    assert report["event"] == "report" and report["state"] == "succeeded"
    run_id = report["run_id"]
    listed = json.loads(cli.invoke(app, ["ls", "--json"]).output)
    assert listed[0]["id"] == run_id and listed[0]["state"] == "succeeded"
    shown = json.loads(cli.invoke(app, ["show", run_id, "--json"]).output)
    assert shown["actual"]["samples"] >= 256
    assert '"event": "end"' in cli.invoke(app, ["logs", run_id]).output or "training ok" in cli.invoke(app, ["logs", run_id]).output
    png = home / "chart.png"
    assert cli.invoke(app, ["show", run_id, "--plot", str(png)]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_gc_without_sdk_credentials_reports_and_exits(monkeypatch):
    from launcher import gc as gc_mod

    class Nothing:
        name = "aws"

        def find(self, regions):
            return []

    monkeypatch.setattr(gc_mod, "get_provider", lambda name, **cfg: Nothing())
    res = cli.invoke(app, ["gc", "--provider", "aws"])
    assert res.exit_code == 0 and "nothing to collect" in res.output


def test_validate_names_a_non_image_input_shape(home, monkeypatch):
    """validate said "224px" for a factory taking input_shape [784] (a flat vector)."""
    monkeypatch.chdir(home)
    (home / "mlp.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(784, 10)\n")
    spec = home / "mlp.yaml"
    spec.write_text('name: m\nworkload: {model: "mlp.py:build", input_shape: [784], num_classes: 10}\n')
    res = cli.invoke(app, ["validate", str(spec)])
    assert res.exit_code == 0 and "input [784]" in res.output and "px" not in res.output


def test_estimate_refuses_an_unknown_provider_as_bad_input(home):
    """`estimate -p bogus` said "no GPU offers ... check resources.regions" and exited 1."""
    res = cli.invoke(app, ["estimate", str(Path(REPO) / "jobs" / "vgg16.yaml"), "-p", "bogus", "--no-baseline"])
    assert res.exit_code == 2 and "--provider bogus" in res.output and "aws, gcp" in res.output


def test_durations_of_years_read_in_years():
    """An 8B model on a laptop CPU read "9307.3d" and "9307.3 days"."""
    from launcher.estimate.table import human_duration
    from launcher.render import fmt_seconds

    assert fmt_seconds(9307.3 * 86400) == "25.5y" and human_duration(9307.3 * 86400) == "25.5 years"
    assert fmt_seconds(50.8 * 86400) == "50.8d" and human_duration(50.8 * 86400) == "50.8 days"
