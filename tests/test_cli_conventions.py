"""What users expect of a command line: --version, --json everywhere, completion, one state directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher import state
from launcher.cli import app

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()

TINY = """
name: tiny
workload: {model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits,
           samples_per_epoch: 100000, epochs: 1, batch_size: 64, precision: fp32}
limits: {max_duration: 5m}
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def test_version_names_calibration_and_catalog_dates():
    from launcher.catalog import load_catalog
    from launcher.estimate.calibration import provenance

    res = cli.invoke(app, ["--version"])
    assert res.exit_code == 0
    cal = provenance()
    assert res.output.startswith("gpujob 0.1.0 ")
    assert cal["fitted_at"][:10] in res.output and f"{cal['points']} points" in res.output
    assert load_catalog().provenance.snapshot in res.output
    assert len(res.output.rstrip("\n")) <= 80  # one line at 80 columns: it broke inside the snapshot date


def test_validate_json_lists_each_spec():
    specs = [str(REPO / "jobs" / "vgg16.yaml"), str(REPO / "jobs" / "quickstart.yaml")]
    res = cli.invoke(app, ["validate", *specs, "--json"])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert [o["spec"] for o in out] == specs and all(o["ok"] for o in out)
    assert out[0]["workload"]["model"] == "vgg16" and out[1]["name"] == "quickstart-digits"


def test_validate_json_bad_spec_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkload: {model: nope}\n")
    res = cli.invoke(app, ["validate", str(bad), "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "nope" in res.stderr and "Traceback" not in res.stderr


def test_catalog_update_json(monkeypatch):
    from launcher import catalog
    from launcher.catalog.model import make_provenance

    monkeypatch.setattr(catalog, "update_catalog", lambda: make_provenance("downloaded: test", "2026-11-30"))
    res = cli.invoke(app, ["catalog", "update", "--json"])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert out["snapshot"] == "2026-11-30" and out["source"] == "downloaded: test"
    assert out["path"] == str(state.catalog_dir() / "offers.json.gz")


def test_down_json_ends_with_one_down_object(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    started = cli.invoke(app, ["run", str(spec), "--detach", "--json", "--no-baseline"])
    assert started.exit_code == 0, started.output
    run_id = [json.loads(line) for line in started.stdout.splitlines()][-1]["run_id"]
    res = cli.invoke(app, ["down", run_id, "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]  # every line is JSON
    assert lines[-1] == {"event": "down", "run_id": run_id, "released": True}


def test_shell_completion_completes_commands_and_options():
    env = {**os.environ, "_GPUJOB_COMPLETE": "complete_bash", "COMP_WORDS": "gpujob estimate --js", "COMP_CWORD": "2"}
    code = "import sys; sys.argv[0] = 'gpujob'; from launcher.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["--json"], out.stdout + out.stderr
    assert "--install-completion" in cli.invoke(app, ["--help"]).output


# --- one state directory -------------------------------------------------------------------


def test_everything_lives_under_gpujob_home(home):
    from launcher.catalog.store import user_catalog_path
    from launcher.estimate.paths import cache_dir
    from launcher.store import Store

    store = Store()
    assert store.path == home / "runs.db"
    assert cache_dir() == home / "cache" and user_catalog_path().parent == home / "catalog"
    assert store.run_dir("r1").parent.parent == home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.run_dir("r1").stat().st_mode) == 0o700


def test_default_home_is_platformdirs_state_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("GPUJOB_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state.home() == platformdirs.user_state_path("gpujob", appauthor=False)
    if sys.platform.startswith("linux"):
        assert state.home() == tmp_path / "xdg" / "gpujob"


def test_wide_home_and_db_are_tightened(home):
    from launcher.store import Store

    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "runs.db").touch()
    os.chmod(home / "runs.db", 0o644)
    Store()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "runs.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("argv, option", [
    (["cost", "--days", "abc"], "--days"),
    (["ls", "--limit", "abc"], "--limit"),
    (["gpus", "--max-price", "abc"], "--max-price"),
    (["ls", "--bogus"], "--bogus"),
])
def test_a_bad_option_value_is_one_error_line_not_a_box(argv, option):
    """`gpujob cost --days abc` drew a five-line box (click's usage panel) instead of one line."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    res = subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], res.stderr
    assert "--help" in lines[0] and "│" not in res.stderr and res.stdout == ""


@pytest.mark.parametrize("argv", [[], ["catalog"]], ids=["gpujob", "gpujob-catalog"])
def test_no_arguments_print_the_help_and_no_empty_error(argv):
    """A new user's bare `gpujob` (and `gpujob catalog`) printed the help, then
    "error:  (see `gpujob --help`)": an error with nothing in it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    res = subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2 and "Usage:" in res.stdout and "Commands" in res.stdout, res.stdout
    assert res.stderr == "", res.stderr


def test_an_error_on_an_80_column_terminal_wraps_between_words(monkeypatch, capsys):
    """`gpujob run jobs/unet.yaml` at 80 columns: the terminal cut the error mid-word ('max_du' /
    'ration'); a terminal now gets it wrapped between words, a pipe still gets one line."""
    from launcher.cli import _err

    text = ("error: training alone is estimated at 16.8 h on this machine, over limits.max_duration (2.0 h): "
            "the job would be stopped before it ends (on a GPU: `gpujob run jobs/unet.yaml --provider auto`)")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    _err().print(text, markup=False)
    shown = capsys.readouterr().err.splitlines()
    assert len(shown) > 1 and all(len(line) <= 80 for line in shown)
    assert " ".join(line.strip() for line in shown) == text  # every break falls between words
    monkeypatch.delenv("FORCE_COLOR")
    _err().print(text, markup=False)  # captured: not a terminal
    assert capsys.readouterr().err == text + "\n"


def test_every_commands_summary_in_help_is_one_paragraph():
    """`gpujob --help` at 80 columns broke gc's summary after "belong to no live" and went on with
    "run; with --yes ..." on a line of its own: its docstring's first paragraph spanned two source
    lines, and typer's rich help keeps that line break. Every command's first paragraph is one line."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in {**group.commands, **group.commands["catalog"].commands}.items():
        summary = (command.help or "").split("\n\n")[0]
        assert summary and "\n" not in summary, (name, summary)
